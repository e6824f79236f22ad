//! Balance monitors: `Assets:Gateway:Paystack:Clearing < 1000.00 NGN`, `Liabilities:Suspense != 0 USD`.
//! Edge-triggered: the relay emits one `monitor.triggered` event when a condition becomes true and one
//! `monitor.cleared` when it stops being true, never one per posting. The state at a position is a function
//! of the balances there, so a relay restarted anywhere continues the same edges, and each edge's event id
//! derives from the monitor and the position that caused it (a resent batch repeats the same ids).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use ledger_core::{Account, Balances, Currency};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Error;
use crate::model::{PublicEvent, SCHEMA_VERSION, balance_text};

/// Namespace of the monitors' event ids (`uuid v5(monitor id ++ position)`).
const MONITOR_NAMESPACE: Uuid = Uuid::from_u128(0x3d58_0b1f_6c92_4e7a_8f04_b5c1_d9e2_7a36);
/// Monitors per ledger.
pub const MONITORS_MAX: i64 = 200;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Monitor {
    pub monitor_id: Uuid,
    pub name: String,
    pub account: String,
    pub currency: String,
    pub op: String,
    pub threshold: Decimal,
    pub since_position: i64,
}

/// A parsed `<account> <op> <amount> <currency>`.
pub fn parse_condition(text: &str) -> Result<(Account, String, Decimal, Currency), Error> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [account, op, amount, currency] = parts.as_slice() else {
        return Err(Error::Invalid(format!(
            "{text:?}: expected `<account> <op> <amount> <currency>`, e.g. `Liabilities:Suspense != 0 USD`"
        )));
    };
    let account =
        Account::from_str(account).map_err(|e| Error::Invalid(format!("{account}: {e}")))?;
    if !["<", "<=", ">", ">=", "=", "!="].contains(op) {
        return Err(Error::Invalid(format!(
            "{op:?}: the operator is one of < <= > >= = !="
        )));
    }
    let amount = Decimal::from_str_exact(amount)
        .map_err(|_| Error::Invalid(format!("{amount:?} is not an exact decimal amount")))?;
    let currency =
        Currency::from_code(currency).map_err(|e| Error::Invalid(format!("{currency}: {e}")))?;
    Ok((account, op.to_string(), amount, currency))
}

impl Monitor {
    fn holds(&self, balances: &Balances) -> bool {
        let (Ok(account), Ok(currency)) = (
            Account::from_str(&self.account),
            Currency::from_code(&self.currency),
        ) else {
            return false;
        };
        let balance = Decimal::from_str_exact(&balance_text(balances, &account, currency))
            .unwrap_or_default();
        match self.op.as_str() {
            "<" => balance < self.threshold,
            "<=" => balance <= self.threshold,
            ">" => balance > self.threshold,
            ">=" => balance >= self.threshold,
            "=" => balance == self.threshold,
            _ => balance != self.threshold,
        }
    }
}

pub async fn add(
    pool: &PgPool,
    ledger: &str,
    name: &str,
    condition: &str,
    head: i64,
) -> Result<Uuid, Error> {
    let (account, op, threshold, currency) = parse_condition(condition)?;
    let count: i64 =
        sqlx::query_scalar("select count(*) from ledger.event_monitors where ledger_id = $1")
            .bind(ledger)
            .fetch_one(pool)
            .await?;
    if count >= MONITORS_MAX {
        return Err(Error::Invalid(format!(
            "a ledger has at most {MONITORS_MAX} monitors"
        )));
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into ledger.event_monitors
                (ledger_id, monitor_id, name, account, currency, op, threshold, since_position)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(ledger)
    .bind(id)
    .bind(name)
    .bind(account.to_string())
    .bind(currency.code())
    .bind(op)
    .bind(threshold)
    .bind(head)
    .execute(pool)
    .await?;
    Ok(id)
}

pub async fn list(pool: &PgPool, ledger: &str) -> Result<Vec<Monitor>, Error> {
    type Row = (Uuid, String, String, String, String, Decimal, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "select monitor_id, name, account, currency, op, threshold, since_position
           from ledger.event_monitors where ledger_id = $1 order by created_at",
    )
    .bind(ledger)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(monitor_id, name, account, currency, op, threshold, since_position)| Monitor {
                monitor_id,
                name,
                account,
                currency,
                op,
                threshold,
                since_position,
            },
        )
        .collect())
}

/// The monitors of one relay and each one's state (whether its condition holds) at the relay's position.
#[derive(Default)]
pub struct Watch {
    monitors: Vec<Monitor>,
    state: std::collections::HashMap<Uuid, bool>,
}

impl Watch {
    /// Takes the ledger's monitors as they are now; a new one's state starts from `balances` (the relay's
    /// position), a known one keeps its state.
    pub fn refresh(&mut self, monitors: Vec<Monitor>, balances: &Balances) {
        for m in &monitors {
            self.state
                .entry(m.monitor_id)
                .or_insert_with(|| m.holds(balances));
        }
        self.monitors = monitors;
    }

    /// The edges `cause` makes (`balances`: just after it), as public events after it.
    pub fn observe(
        &mut self,
        cause: &PublicEvent,
        balances: &Balances,
        at: DateTime<Utc>,
    ) -> Vec<PublicEvent> {
        let Some(entry) = &cause.entry else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in &self.monitors {
            let touched = m.currency == entry.currency
                && entry.postings.iter().any(|p| p.account == m.account);
            if !touched {
                continue;
            }
            let is = m.holds(balances);
            let was = self.state.insert(m.monitor_id, is).unwrap_or(is);
            if was == is || cause.position <= m.since_position {
                continue;
            }
            let mut name = m.monitor_id.as_bytes().to_vec();
            name.extend_from_slice(&cause.position.to_be_bytes());
            let kind = if is { "triggered" } else { "cleared" };
            let balance = entry
                .postings
                .iter()
                .find(|p| p.account == m.account)
                .map(|p| p.balance_after.clone())
                .unwrap_or_default();
            out.push(PublicEvent {
                schema_version: SCHEMA_VERSION,
                event_id: Uuid::new_v5(&MONITOR_NAMESPACE, &name),
                ledger: cause.ledger.clone(),
                position: cause.position,
                stream: format!("monitor-{}", m.monitor_id),
                stream_kind: "monitor".into(),
                stream_version: 0,
                event_type: format!("monitor.{kind}"),
                occurred_at: cause.occurred_at,
                recorded_at: at,
                data: json!({
                    "monitor_id": m.monitor_id, "name": m.name,
                    "condition": format!("{} {} {} {}", m.account, m.op, m.threshold, m.currency),
                    "account": m.account, "currency": m.currency, "balance": balance,
                    "caused_by": cause.event_id,
                }),
                entry: None,
            });
        }
        out
    }
}
