//! Balance snapshots (PostgreSQL only): the trial balance at a position, kept so that as-of queries replay
//! only the tail. The content is never a caller's: the definer function `ledger.take_balance_snapshot`
//! computes it from the log (its previous snapshot plus the journal entries after it) and stores a digest
//! bound to the chain hash at that position. A writer takes one when its own events reach a multiple of
//! `snapshot_every()` positions (`PgEventStore`, after sequencing); the reports only read them. A row whose
//! digest does not match (edited behind the function's back, or a re-hashed chain) is never used: the
//! loaders skip it and `verify` reports it. Each row is `[[account, currency, debits, credits], ...]` in
//! minor units.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::chain::balance_snapshot_digest;
use crate::error::Result;

/// A stored balance snapshot: `balances` as the caller serialized it.
#[derive(Clone, Debug, PartialEq)]
pub struct BalanceSnapshot {
    pub position: i64,
    pub balances: Value,
}

/// Most snapshot rows one loader looks at before giving up on a snapshot (doctored rows are skipped).
const CANDIDATES_MAX: i64 = 16;

/// Positions between two balance snapshots a writer takes (`ESCROW_LEDGER_BALANCE_SNAPSHOT_EVERY`
/// overrides it, for tests of the snapshot path).
pub const SNAPSHOT_EVERY_DEFAULT: i64 = 50_000;

/// Positions between two balance snapshots.
pub fn snapshot_every() -> i64 {
    std::env::var("ESCROW_LEDGER_BALANCE_SNAPSHOT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &i64| *v > 0)
        .unwrap_or(SNAPSHOT_EVERY_DEFAULT)
}

/// A row with the chain hash at its position (none when that position does not exist).
const ROW_COLUMNS: &str =
    "b.position, b.balances, b.balances::text as balances_text, b.digest, s.hash
       from ledger.balance_snapshots b
       left join ledger.sequence s on s.ledger_id = b.ledger_id and s.position = b.position";

/// Whether a row's stored digest matches its content and the chain hash at its position.
fn digest_matches(ledger_id: &str, row: &PgRow) -> Result<bool> {
    let position: i64 = row.try_get("position")?;
    let text: String = row.try_get("balances_text")?;
    let digest: Option<Vec<u8>> = row.try_get("digest")?;
    let Some(hash) = row.try_get::<Option<Vec<u8>>, _>("hash")? else {
        return Ok(false);
    };
    let expected = balance_snapshot_digest(ledger_id, position, &hash, &text);
    Ok(digest.as_deref() == Some(expected.as_slice()))
}

/// The latest snapshot at or before `position` whose digest matches, if any.
pub async fn load_at_or_before(
    pool: &PgPool,
    ledger_id: &str,
    position: i64,
) -> Result<Option<BalanceSnapshot>> {
    // One row at a time, newest first: a snapshot of a long ledger is large (every account), and the newest
    // one almost always checks (fetching CANDIDATES_MAX at once made an as-of report read them all).
    let mut below = position;
    for _ in 0..CANDIDATES_MAX {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {ROW_COLUMNS}
              where b.ledger_id = $1 and b.position <= $2 order by b.position desc limit 1"
        )))
        .bind(ledger_id)
        .bind(below)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let at: i64 = row.try_get("position")?;
        if digest_matches(ledger_id, &row)? {
            return Ok(Some(BalanceSnapshot {
                position: at,
                balances: row.try_get("balances")?,
            }));
        }
        tracing::warn!(
            ledger_id,
            position = at,
            "ignoring a balance snapshot whose digest does not match its content"
        );
        below = at - 1;
    }
    Ok(None)
}

/// Has the ledger take the snapshot at `position` (a sequenced position): the definer function computes
/// it from the log; nothing of its content comes from here.
pub async fn take(pool: &PgPool, ledger_id: &str, position: i64) -> Result<()> {
    sqlx::query("select ledger.take_balance_snapshot($1, $2)")
        .bind(ledger_id)
        .bind(position)
        .execute(pool)
        .await?;
    Ok(())
}

/// Positions of every snapshot of a ledger, ascending (for `verify`).
pub async fn positions(pool: &PgPool, ledger_id: &str) -> Result<Vec<i64>> {
    let rows = sqlx::query(
        "select position from ledger.balance_snapshots where ledger_id = $1 order by position",
    )
    .bind(ledger_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("position")?)).collect()
}

/// The snapshot at exactly `position` as stored, with whether its digest matches (for `verify`, which
/// reports a mismatch).
pub async fn load_exact(
    pool: &PgPool,
    ledger_id: &str,
    position: i64,
) -> Result<Option<(BalanceSnapshot, bool)>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {ROW_COLUMNS} where b.ledger_id = $1 and b.position = $2"
    )))
    .bind(ledger_id)
    .bind(position)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let matches = digest_matches(ledger_id, &row)?;
    let snapshot = BalanceSnapshot {
        position: row.try_get("position")?,
        balances: row.try_get("balances")?,
    };
    Ok(Some((snapshot, matches)))
}

/// A snapshot's rows (`[[account, currency, debits, credits], ...]`) as balances.
pub fn balances_from_json(value: &Value) -> std::result::Result<ledger_core::Balances, String> {
    use std::str::FromStr;
    let mut b = ledger_core::Balances::default();
    for row in value.as_array().ok_or("not an array")? {
        let cell = |i: usize| {
            row.get(i)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("bad row {row}"))
        };
        let account = ledger_core::Account::from_str(cell(0)?).map_err(|e| e.to_string())?;
        let currency = ledger_core::Currency::from_code(cell(1)?).map_err(|e| e.to_string())?;
        let debits: i128 = cell(2)?
            .parse()
            .map_err(|_| format!("bad debits in {row}"))?;
        let credits: i128 = cell(3)?
            .parse()
            .map_err(|_| format!("bad credits in {row}"))?;
        b.add_raw(account, currency, debits, credits);
    }
    Ok(b)
}
