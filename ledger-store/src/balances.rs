//! Balance snapshots (PostgreSQL only): the trial balance at a position, kept so that as-of queries replay
//! only the tail. Payload-agnostic: the caller (the CLI) decides what a balance is; the store keeps rows.
//!
//! Rows are written only by the definer function `ledger.save_balance_snapshot`, which stores a digest of
//! the content; a row whose digest does not match (edited behind the function's back) is never used: the
//! loaders skip it and `verify` reports it.

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

/// Whether a row's stored digest matches its content.
fn digest_matches(ledger_id: &str, row: &PgRow) -> Result<bool> {
    let position: i64 = row.try_get("position")?;
    let text: String = row.try_get("balances_text")?;
    let digest: Option<Vec<u8>> = row.try_get("digest")?;
    let expected = balance_snapshot_digest(ledger_id, position, &text);
    Ok(digest.as_deref() == Some(expected.as_slice()))
}

/// The latest snapshot at or before `position` whose digest matches, if any.
pub async fn load_at_or_before(
    pool: &PgPool,
    ledger_id: &str,
    position: i64,
) -> Result<Option<BalanceSnapshot>> {
    let rows = sqlx::query(
        "select position, balances, balances::text as balances_text, digest
           from ledger.balance_snapshots
          where ledger_id = $1 and position <= $2 order by position desc limit $3",
    )
    .bind(ledger_id)
    .bind(position)
    .bind(CANDIDATES_MAX)
    .fetch_all(pool)
    .await?;
    for row in &rows {
        if digest_matches(ledger_id, row)? {
            return Ok(Some(BalanceSnapshot {
                position: row.try_get("position")?,
                balances: row.try_get("balances")?,
            }));
        }
        tracing::warn!(
            ledger_id,
            position = row.try_get::<i64, _>("position")?,
            "ignoring a balance snapshot whose digest does not match its content"
        );
    }
    Ok(None)
}

/// Inserts or replaces the snapshot at `position` (through the definer function, which writes the digest).
pub async fn save(pool: &PgPool, ledger_id: &str, snapshot: &BalanceSnapshot) -> Result<()> {
    sqlx::query("select ledger.save_balance_snapshot($1, $2, $3)")
        .bind(ledger_id)
        .bind(snapshot.position)
        .bind(&snapshot.balances)
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
    let row = sqlx::query(
        "select position, balances, balances::text as balances_text, digest
           from ledger.balance_snapshots where ledger_id = $1 and position = $2",
    )
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
