//! Balance snapshots (PostgreSQL only): the trial balance at a position, kept so that as-of queries replay
//! only the tail. Payload-agnostic: the caller (the CLI) decides what a balance is; the store keeps rows.

use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::error::Result;

/// A stored balance snapshot: `balances` as the caller serialized it.
#[derive(Clone, Debug, PartialEq)]
pub struct BalanceSnapshot {
    pub position: i64,
    pub balances: Value,
}

/// The latest snapshot at or before `position`, if any.
pub async fn load_at_or_before(
    pool: &PgPool,
    ledger_id: &str,
    position: i64,
) -> Result<Option<BalanceSnapshot>> {
    let row = sqlx::query(
        "select position, balances from ledger.balance_snapshots
          where ledger_id = $1 and position <= $2 order by position desc limit 1",
    )
    .bind(ledger_id)
    .bind(position)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(row) => Some(BalanceSnapshot {
            position: row.try_get("position")?,
            balances: row.try_get("balances")?,
        }),
        None => None,
    })
}

/// Inserts or replaces the snapshot at `position`.
pub async fn save(pool: &PgPool, ledger_id: &str, snapshot: &BalanceSnapshot) -> Result<()> {
    sqlx::query(
        "insert into ledger.balance_snapshots (ledger_id, position, balances) values ($1, $2, $3)
         on conflict (ledger_id, position) do update set balances = excluded.balances, taken_at = now()",
    )
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

/// The snapshot at exactly `position`.
pub async fn load_exact(
    pool: &PgPool,
    ledger_id: &str,
    position: i64,
) -> Result<Option<BalanceSnapshot>> {
    Ok(load_at_or_before(pool, ledger_id, position)
        .await?
        .filter(|s| s.position == position))
}
