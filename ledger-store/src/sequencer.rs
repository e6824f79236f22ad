//! The background sequencer (PostgreSQL only): gives positions to committed events that no writer
//! sequenced, on every ledger, with no appends arriving.
//!
//! Writers still call `ledger.sequence` right after their commit (the fast path). A writer that dies
//! between its commit and that call (or whose call fails) leaves its events in `ledger.unsequenced`,
//! where the executor sees them but the log, projections, reports, seals and `verify` do not. This loop
//! closes that gap: it polls every [`POLL_INTERVAL_DEFAULT`] for ledgers with a non-empty queue and runs
//! the sequencer on each, in bounded batches, so such events get positions within about one poll interval
//! (well under a second) of their commit.
//!
//! Why polling and not NOTIFY: a wake-up on commit would need every append to `NOTIFY`, and PostgreSQL
//! serializes the commits of notifying transactions on one queue lock, a cost on the hot path for a case
//! (a dead writer) that polling every 200 ms covers. The poll is one indexed probe per ledger.
//!
//! `serve`, `projections run` and `escrow-ledger sequencer run` each run one loop; several loops (and the
//! writers) may run at once: the per-ledger advisory lock inside `ledger.sequence` serializes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Result, StoreError};

/// How often the loop looks for unsequenced events.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(200);
/// Most events one sequencer call takes (it may finish the last transaction of the batch beyond this).
pub const BATCH_EVENTS_MAX: i32 = 5_000;
/// Sequencer calls per ledger per poll; the rest of a large backlog waits for the next poll, so one
/// ledger cannot starve the others.
pub const ROUNDS_PER_POLL_MAX: usize = 20;
/// An unsequenced event older than this is a `verify` finding (nothing is sequencing).
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// Longest pause after a failed poll (the pause doubles from the poll interval up to this).
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Ledgers whose queue is not empty (one index probe per ledger). An uncorrelated `in`, not `exists`: on
/// Citus `ledger.ledgers` is a reference table, and Citus plans no correlated sub-query over one.
const LEDGERS_WITH_BACKLOG: &str = "
    select l.ledger_id from ledger.ledgers l
     where l.ledger_id in (select u.ledger_id from ledger.unsequenced u)
     order by l.ledger_id";

/// One poll: sequences every ledger's backlog (bounded per ledger). Returns how many events it sequenced.
pub async fn sequence_all(pool: &PgPool) -> Result<i64> {
    let ledgers: Vec<String> = sqlx::query_scalar(LEDGERS_WITH_BACKLOG)
        .fetch_all(pool)
        .await?;
    let mut total = 0;
    for ledger in ledgers {
        for _ in 0..ROUNDS_PER_POLL_MAX {
            let sequenced: i64 = sqlx::query_scalar("select ledger.sequence($1, $2)")
                .bind(&ledger)
                .bind(BATCH_EVENTS_MAX)
                .fetch_one(pool)
                .await?;
            total += sequenced;
            if sequenced < i64::from(BATCH_EVENTS_MAX) {
                break;
            }
        }
    }
    Ok(total)
}

/// Runs polls until `stop` turns true (or its sender is dropped). A failed poll is logged and retried
/// with a bounded backoff: the loop outlives database restarts.
pub async fn run(pool: PgPool, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut pause = interval;
    loop {
        match sequence_all(&pool).await {
            Ok(sequenced) => {
                if sequenced > 0 {
                    tracing::debug!(sequenced, "background sequencer");
                }
                pause = interval;
            }
            Err(error) => {
                tracing::warn!(%error, "background sequencer poll failed; retrying");
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// A background sequencer task; [`Background::stop`] ends it after its current poll.
pub struct Background {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Background {
    /// Spawns the loop on the current runtime with the default poll interval.
    pub fn spawn(pool: PgPool) -> Self {
        Self::spawn_with_interval(pool, POLL_INTERVAL_DEFAULT)
    }

    pub fn spawn_with_interval(pool: PgPool, interval: Duration) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(pool, interval, stopped));
        Self { stop, task }
    }

    /// Asks the loop to stop and waits for it (a poll in progress finishes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "background sequencer ended abnormally");
        }
    }
}

/// The unsequenced backlog of one ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub ledger_id: String,
    pub events: i64,
    /// Events recorded more than [`STALE_AFTER`] ago.
    pub stale_events: i64,
    pub oldest_recorded_at: Option<DateTime<Utc>>,
    /// Age of the oldest event by the database's clock, in milliseconds.
    pub oldest_age_ms: i64,
}

/// The backlog of every ledger that has one (reads the whole queue: for status and `verify`, not the hot
/// path; the queue is empty or tiny whenever a sequencer runs).
pub async fn backlog(pool: &PgPool) -> Result<Vec<Backlog>> {
    let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        // A queue row holds one inserting statement's events (`local_ids`; a row without them queues its
        // `local_id` alone); an id queued twice is one event waiting.
        "select q.ledger_id, count(*) as events,
                count(*) filter (where e.recorded_at < clock_timestamp() - $1 * interval '1 ms')
                    as stale_events,
                min(e.recorded_at) as oldest,
                coalesce((extract(epoch from clock_timestamp() - min(e.recorded_at)) * 1000)::bigint, 0)
                    as oldest_age_ms
           from (select distinct u.ledger_id, i.local_id
                   from ledger.unsequenced u
                  cross join lateral unnest(coalesce(u.local_ids, array[u.local_id])) as i(local_id)) q
           join ledger.events e on e.ledger_id = q.ledger_id and e.local_id = q.local_id
          group by q.ledger_id
          order by q.ledger_id",
    )
    .bind(stale_ms)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Backlog {
                ledger_id: row.try_get("ledger_id")?,
                events: row.try_get("events")?,
                stale_events: row.try_get("stale_events")?,
                oldest_recorded_at: row.try_get("oldest")?,
                oldest_age_ms: row.try_get("oldest_age_ms")?,
            })
        })
        .collect::<Result<_, StoreError>>()
}
