//! A sink's durable cursor (`ledger.event_cursors`) and its lease: one relay at a time delivers to a sink;
//! another one waits for the lease to expire (a relay killed mid-batch resumes, at least once, from the last
//! position it advanced to).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::Error;

/// How long a lease lasts without renewal (each batch renews it).
pub const LEASE_SECONDS: i64 = 30;

/// Where a sink's cursor stands: its position and the escrows' holds saved with it (`None` for a cursor from
/// before escrow-age monitors, or one that never advanced).
#[derive(Clone, Debug)]
pub struct Claimed {
    pub position: i64,
    pub escrow_holds: Option<serde_json::Value>,
}

/// Takes (or renews) the lease of `sink` for `owner`; where the cursor stands when taken, `None` when another
/// relay holds it.
pub async fn claim(
    pool: &PgPool,
    ledger: &str,
    sink: &str,
    owner: &str,
) -> Result<Option<Claimed>, Error> {
    sqlx::query(
        "insert into ledger.event_cursors (ledger_id, sink) values ($1, $2)
         on conflict (ledger_id, sink) do nothing",
    )
    .bind(ledger)
    .bind(sink)
    .execute(pool)
    .await?;
    let row: Option<(i64, Option<serde_json::Value>)> = sqlx::query_as(
        "update ledger.event_cursors
            set leased_by = $3, lease_until = now() + make_interval(secs => $4), updated_at = now()
          where ledger_id = $1 and sink = $2
            and (leased_by is null or leased_by = $3 or lease_until < now())
          returning position, escrow_holds",
    )
    .bind(ledger)
    .bind(sink)
    .bind(owner)
    .bind(LEASE_SECONDS as f64)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(position, escrow_holds)| Claimed {
        position,
        escrow_holds,
    }))
}

/// Advances the cursor to `position` (and renews the lease) if `owner` still holds it, saving the escrows'
/// holds there when they changed; `false` when the lease was lost (another relay took it: this one must stop
/// delivering).
pub async fn advance(
    executor: impl sqlx::PgExecutor<'_>,
    ledger: &str,
    sink: &str,
    owner: &str,
    position: i64,
    delivered: i64,
    escrow_holds: Option<&serde_json::Value>,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "update ledger.event_cursors
            set position = greatest(position, $4), delivered = delivered + $5,
                escrow_holds = coalesce($7, escrow_holds),
                lease_until = now() + make_interval(secs => $6), updated_at = now()
          where ledger_id = $1 and sink = $2 and leased_by = $3",
    )
    .bind(ledger)
    .bind(sink)
    .bind(owner)
    .bind(position)
    .bind(delivered)
    .bind(LEASE_SECONDS as f64)
    .bind(escrow_holds)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease up (a relay stopping cleanly): the next relay need not wait for it to expire.
pub async fn release(pool: &PgPool, ledger: &str, sink: &str, owner: &str) -> Result<(), Error> {
    sqlx::query(
        "update ledger.event_cursors set leased_by = null, lease_until = null
          where ledger_id = $1 and sink = $2 and leased_by = $3",
    )
    .bind(ledger)
    .bind(sink)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// One sink's progress (`db status`, `/metrics`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SinkStatus {
    pub ledger: String,
    pub sink: String,
    pub position: i64,
    pub head: i64,
    pub backlog: i64,
    /// Seconds since the oldest event not yet delivered was sequenced (0 when none waits).
    pub lag_seconds: f64,
    pub delivered: i64,
    pub leased_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Every sink's cursor with the ledger's head and backlog.
pub async fn status(pool: &PgPool) -> Result<Vec<SinkStatus>, Error> {
    type Row = (
        String,
        String,
        i64,
        i64,
        f64,
        i64,
        Option<String>,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select c.ledger_id, c.sink, c.position,
                coalesce((select max(s.position) from ledger.sequence s where s.ledger_id = c.ledger_id), 0),
                coalesce((select extract(epoch from now() - s.sequenced_at)::float8 from ledger.sequence s
                           where s.ledger_id = c.ledger_id and s.position = c.position + 1), 0),
                c.delivered, c.leased_by, c.updated_at
           from ledger.event_cursors c order by c.ledger_id, c.sink",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(ledger, sink, position, head, lag, delivered, leased_by, updated_at)| SinkStatus {
                ledger,
                sink,
                position,
                head,
                backlog: (head - position).max(0),
                lag_seconds: lag.max(0.0),
                delivered,
                leased_by,
                updated_at,
            },
        )
        .collect())
}
