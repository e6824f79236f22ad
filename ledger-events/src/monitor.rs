//! Monitors: `Assets:Gateway:Paystack:Clearing < 1000.00 NGN`, `Liabilities:Suspense != 0 USD` (a balance),
//! and `escrow older than 30 days` (any escrow account holding money for that long).
//! Edge-triggered: the relay emits one `monitor.triggered` event when a condition becomes true and one
//! `monitor.cleared` when it stops being true, never one per posting.
//!
//! A balance monitor's state at a position is a function of the balances there, so a relay restarted
//! anywhere continues the same edges; each edge's event id derives from the monitor and the position that
//! caused it (a resent batch repeats the same ids). An escrow's age is not in the balances: the relay keeps
//! each escrow account that holds money and since when ([`Holds`], saved with the sink's cursor), triggers
//! when the relay observes (after a batch, and every second when live) that one is older than the monitor's
//! age, and clears when the escrow is emptied; those ids derive from the monitor, the escrow account and
//! the position where it started holding.

use std::collections::BTreeMap;
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

/// The operator of an escrow-age monitor (its threshold is the age in seconds, its account the escrow prefix).
pub const OLDER_THAN: &str = "older_than";
/// What an escrow-age monitor watches: every escrow account (`Liabilities:Escrow:<project>:<milestone>`).
pub const ESCROW_PREFIX: &str = "Liabilities:Escrow";
/// Any currency (escrow-age monitors).
pub const ANY_CURRENCY: &str = "*";
/// The longest age a monitor may wait for: ten years.
const AGE_MAX_SECONDS: i64 = 10 * 366 * 24 * 3600;

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `<account> <op> <amount> <currency>`.
    Balance {
        account: Account,
        op: String,
        threshold: Decimal,
        currency: Currency,
    },
    /// `escrow older than <n> <days|hours|minutes|seconds>`.
    EscrowOlderThan { seconds: i64 },
}

/// Parses `<account> <op> <amount> <currency>` or `escrow older than <n> <unit>`.
pub fn parse_condition(text: &str) -> Result<Condition, Error> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    if let ["escrow", "older", "than", n, unit] = parts.as_slice() {
        let n: i64 =
            n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::Invalid(format!("{n:?}: the age is a whole number above 0"))
            })?;
        let per = match unit.trim_end_matches('s') {
            "day" => 86_400,
            "hour" => 3_600,
            "minute" => 60,
            "second" => 1,
            _ => {
                return Err(Error::Invalid(format!(
                    "{unit:?}: the age is in days, hours, minutes or seconds"
                )));
            }
        };
        let seconds = n.saturating_mul(per);
        if seconds > AGE_MAX_SECONDS {
            return Err(Error::Invalid(format!(
                "{text:?}: an age of at most ten years"
            )));
        }
        return Ok(Condition::EscrowOlderThan { seconds });
    }
    let [account, op, amount, currency] = parts.as_slice() else {
        return Err(Error::Invalid(format!(
            "{text:?}: expected `<account> <op> <amount> <currency>` (e.g. `Liabilities:Suspense != 0 USD`) \
             or `escrow older than <n> days`"
        )));
    };
    let account =
        Account::from_str(account).map_err(|e| Error::Invalid(format!("{account}: {e}")))?;
    if !["<", "<=", ">", ">=", "=", "!="].contains(op) {
        return Err(Error::Invalid(format!(
            "{op:?}: the operator is one of < <= > >= = !="
        )));
    }
    let threshold = Decimal::from_str_exact(amount)
        .map_err(|_| Error::Invalid(format!("{amount:?} is not an exact decimal amount")))?;
    let currency =
        Currency::from_code(currency).map_err(|e| Error::Invalid(format!("{currency}: {e}")))?;
    Ok(Condition::Balance {
        account,
        op: op.to_string(),
        threshold,
        currency,
    })
}

impl Monitor {
    fn is_escrow_age(&self) -> bool {
        self.op == OLDER_THAN
    }

    /// The condition as an operator writes it.
    pub fn condition(&self) -> String {
        if self.is_escrow_age() {
            format!("escrow older than {} seconds", self.threshold)
        } else {
            format!(
                "{} {} {} {}",
                self.account, self.op, self.threshold, self.currency
            )
        }
    }

    fn holds(&self, balances: &Balances) -> bool {
        if self.is_escrow_age() {
            return false;
        }
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
    let (account, op, threshold, currency) = match parse_condition(condition)? {
        Condition::Balance {
            account,
            op,
            threshold,
            currency,
        } => (
            account.to_string(),
            op,
            threshold,
            currency.code().to_string(),
        ),
        Condition::EscrowOlderThan { seconds } => (
            ESCROW_PREFIX.to_string(),
            OLDER_THAN.to_string(),
            Decimal::from(seconds),
            ANY_CURRENCY.to_string(),
        ),
    };
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
    .bind(account)
    .bind(currency)
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

/// An escrow account holding money, since when, and the escrow-age monitors it has triggered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    pub since_position: i64,
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggered: Vec<Uuid>,
}

/// Every escrow account holding money, keyed `<account> <currency>`: what escrow-age monitors need that the
/// balances do not say. Saved with the sink's cursor (`event_cursors.escrow_holds`).
pub type Holds = BTreeMap<String, Hold>;

/// The monitors of one relay, each balance monitor's state (whether its condition holds) at the relay's
/// position, and the escrows' holds there.
#[derive(Default)]
pub struct Watch {
    monitors: Vec<Monitor>,
    state: std::collections::HashMap<Uuid, bool>,
    holds: Holds,
    holds_changed: bool,
}

impl Watch {
    /// A watch that continues from saved holds.
    pub fn with_holds(holds: Holds) -> Watch {
        Watch {
            holds,
            ..Watch::default()
        }
    }

    pub fn holds(&self) -> &Holds {
        &self.holds
    }

    /// The holds to save with the cursor, if they changed since the last call.
    pub fn take_changed_holds(&mut self) -> Option<serde_json::Value> {
        if !std::mem::take(&mut self.holds_changed) {
            return None;
        }
        Some(serde_json::to_value(&self.holds).expect("holds serialize"))
    }

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
        let mut out = self.track_holds(cause, entry, at);
        for m in self.monitors.iter().filter(|m| !m.is_escrow_age()) {
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
            let balance = entry
                .postings
                .iter()
                .find(|p| p.account == m.account)
                .map(|p| p.balance_after.clone())
                .unwrap_or_default();
            out.push(edge(
                m,
                Uuid::new_v5(&MONITOR_NAMESPACE, &name),
                is,
                cause.position,
                cause.occurred_at,
                at,
                json!({
                    "account": m.account, "currency": m.currency, "balance": balance,
                    "caused_by": cause.event_id,
                }),
                &cause.ledger,
            ));
        }
        out
    }

    /// Starts a hold where an escrow account starts holding money, ends it (clearing what it triggered)
    /// where it is emptied.
    fn track_holds(
        &mut self,
        cause: &PublicEvent,
        entry: &crate::model::PublicEntry,
        at: DateTime<Utc>,
    ) -> Vec<PublicEvent> {
        let mut out = Vec::new();
        for p in &entry.postings {
            if !p.account.starts_with(ESCROW_PREFIX) {
                continue;
            }
            let key = format!("{} {}", p.account, p.currency);
            let empty = Decimal::from_str_exact(&p.balance_after).is_ok_and(|b| b.is_zero());
            if !empty {
                if let std::collections::btree_map::Entry::Vacant(vacant) = self.holds.entry(key) {
                    vacant.insert(Hold {
                        since_position: cause.position,
                        since: cause.occurred_at,
                        triggered: Vec::new(),
                    });
                    self.holds_changed = true;
                }
                continue;
            }
            let Some(hold) = self.holds.remove(&key) else {
                continue;
            };
            self.holds_changed = true;
            for m in self
                .monitors
                .iter()
                .filter(|m| hold.triggered.contains(&m.monitor_id))
            {
                out.push(age_edge(
                    m,
                    &key,
                    &hold,
                    false,
                    cause.position,
                    cause.occurred_at,
                    at,
                    &p.balance_after,
                    Some(cause.event_id),
                    &cause.ledger,
                ));
            }
        }
        out
    }

    /// `monitor.triggered` for every escrow older than an escrow-age monitor's age at `now` that has not
    /// triggered it yet, observed at the relay's `position`.
    pub fn overdue(
        &mut self,
        ledger: &str,
        position: i64,
        balances: &Balances,
        now: DateTime<Utc>,
    ) -> Vec<PublicEvent> {
        let mut out = Vec::new();
        for m in self.monitors.iter().filter(|m| m.is_escrow_age()) {
            if position < m.since_position {
                continue;
            }
            let age =
                chrono::Duration::seconds(m.threshold.to_string().parse().unwrap_or(i64::MAX));
            for (key, hold) in self.holds.iter_mut() {
                if hold.triggered.contains(&m.monitor_id) || now - hold.since < age {
                    continue;
                }
                hold.triggered.push(m.monitor_id);
                self.holds_changed = true;
                let balance = key
                    .split_once(' ')
                    .and_then(|(account, currency)| {
                        Some(balance_text(
                            balances,
                            &Account::from_str(account).ok()?,
                            Currency::from_code(currency).ok()?,
                        ))
                    })
                    .unwrap_or_default();
                out.push(age_edge(
                    m,
                    key,
                    hold,
                    true,
                    position,
                    hold.since + age,
                    now,
                    &balance,
                    None,
                    ledger,
                ));
            }
        }
        out
    }
}

/// An escrow-age monitor's edge for one escrow account.
#[allow(clippy::too_many_arguments)]
fn age_edge(
    m: &Monitor,
    key: &str,
    hold: &Hold,
    triggered: bool,
    position: i64,
    occurred_at: DateTime<Utc>,
    at: DateTime<Utc>,
    balance: &str,
    caused_by: Option<Uuid>,
    ledger: &str,
) -> PublicEvent {
    let (account, currency) = key.split_once(' ').unwrap_or((key, ""));
    let mut name = m.monitor_id.as_bytes().to_vec();
    name.extend_from_slice(key.as_bytes());
    name.extend_from_slice(&hold.since_position.to_be_bytes());
    name.push(u8::from(triggered));
    edge(
        m,
        Uuid::new_v5(&MONITOR_NAMESPACE, &name),
        triggered,
        position,
        occurred_at,
        at,
        json!({
            "account": account, "currency": currency, "balance": balance,
            "held_since": hold.since, "caused_by": caused_by,
        }),
        ledger,
    )
}

/// A monitor's edge as a public event; `fields` join the monitor's own.
#[allow(clippy::too_many_arguments)]
fn edge(
    m: &Monitor,
    event_id: Uuid,
    triggered: bool,
    position: i64,
    occurred_at: DateTime<Utc>,
    at: DateTime<Utc>,
    fields: serde_json::Value,
    ledger: &str,
) -> PublicEvent {
    let mut data = json!({
        "monitor_id": m.monitor_id, "name": m.name, "condition": m.condition(),
    });
    if let (Some(data), serde_json::Value::Object(fields)) = (data.as_object_mut(), fields) {
        data.extend(fields);
    }
    let kind = if triggered { "triggered" } else { "cleared" };
    PublicEvent {
        schema_version: SCHEMA_VERSION,
        event_id,
        ledger: ledger.to_string(),
        position,
        stream: format!("monitor-{}", m.monitor_id),
        stream_kind: "monitor".into(),
        stream_version: 0,
        event_type: format!("monitor.{kind}"),
        occurred_at,
        recorded_at: at,
        data,
        entry: None,
    }
}
