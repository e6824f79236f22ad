//! The public event model: what leaves the ledger. Versioned (`schema_version`), money as exact decimal
//! strings with their currency, and every journal entry with each touched account's balance after it, so a
//! consumer never has to query back. Internal fields never leave: no metadata (command envelopes, actors'
//! keys), no callback bodies or dedupe keys (an outcome stream's events carry no data).

use chrono::{DateTime, Utc};
use ledger_core::engine::StreamId;
use ledger_core::{Account, Balances, Event, JournalEntry, Money, Side};
use ledger_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Error;

/// Version of the public model; a consumer refuses a version it does not know.
pub const SCHEMA_VERSION: u32 = 1;

/// One event of the log, as consumers see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicEvent {
    pub schema_version: u32,
    /// The log's id of the event: stable across redeliveries (deduplicate on it).
    pub event_id: Uuid,
    pub ledger: String,
    /// The ledger's global, gapless order.
    pub position: i64,
    pub stream: String,
    /// The kind of stream (`payment`, `project`, `wallet`...): the third token of a NATS subject.
    pub stream_kind: String,
    pub stream_version: i64,
    /// `<stream kind>.<event>`, e.g. `payment.deposit_succeeded`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the money moved (the entry's effective time), else when the ledger recorded it.
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The event's own fields (amounts as `{"amount": "12.50", "currency": "USD"}`), without its entry.
    pub data: Value,
    /// Its journal entry, when it moves money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<PublicEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicEntry {
    pub entry_id: Uuid,
    pub currency: String,
    pub effective_at: DateTime<Utc>,
    pub postings: Vec<PublicPosting>,
}

/// One posting, with the account's balance right after this entry (on the account's normal side: a
/// liability's credit balance and an asset's debit balance are both positive).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicPosting {
    pub account: String,
    pub side: String,
    pub amount: String,
    pub currency: String,
    pub balance_after: String,
}

/// The stream kind of a stream (`payment-<uuid>` is `payment`).
pub fn stream_kind(stream: &StreamId) -> &'static str {
    match stream {
        StreamId::ServiceRequest(_) => "request",
        StreamId::Quote(_) => "quote",
        StreamId::Booking(_) => "booking",
        StreamId::Project(_) => "project",
        StreamId::Payment(_) => "payment",
        StreamId::Wallet { .. } => "wallet",
        StreamId::Dispute(_) => "dispute",
        StreamId::Suspense(_) => "suspense",
        StreamId::LedgerPolicy => "policy",
        StreamId::Settlement(_) => "settlement",
        StreamId::Reconciliation(_) => "reconciliation",
        StreamId::Periods => "periods",
        StreamId::Outcome(_) => "outcome",
    }
}

/// `DepositSucceeded` into `deposit_succeeded`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Maps one sequenced event of the log into the public model, applying its entry to `balances` (the
/// ledger's balances just before this event) for the balances after it.
pub fn public_event(record: &RecordedEvent, balances: &mut Balances) -> Result<PublicEvent, Error> {
    let position = record
        .position
        .ok_or_else(|| Error::Invalid(format!("event {} is not sequenced", record.event_id)))?;
    let stream: StreamId = record
        .stream_id
        .parse()
        .map_err(|e: ledger_core::engine::BadStreamId| Error::Decode(e.to_string()))?;
    let event = Event::from_stored(
        &stream,
        &record.event_type,
        record.schema_version,
        record.payload.clone(),
    )
    .map_err(|e| Error::Decode(e.to_string()))?;
    let entry = event.entry().map(|entry| {
        balances.apply(entry);
        public_entry(entry, balances)
    });
    let kind = stream_kind(&stream);
    Ok(PublicEvent {
        schema_version: SCHEMA_VERSION,
        event_id: record.event_id,
        ledger: record.ledger_id.clone(),
        position,
        stream: record.stream_id.clone(),
        stream_kind: kind.to_string(),
        stream_version: record.stream_version,
        event_type: format!("{kind}.{}", snake(&record.event_type)),
        occurred_at: entry
            .as_ref()
            .map_or(record.recorded_at, |e| e.effective_at),
        recorded_at: record.recorded_at,
        data: public_data(&stream, &record.payload),
        entry,
    })
}

/// The event's own fields: its stored payload without the type tag and the entry (shown apart); none for an
/// outcome stream (delivery bookkeeping: dedupe keys and body digests are the ledger's own).
fn public_data(stream: &StreamId, payload: &Value) -> Value {
    if matches!(stream, StreamId::Outcome(_)) {
        return Value::Object(serde_json::Map::new());
    }
    match payload {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "type" && k.as_str() != "entry")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn public_entry(entry: &JournalEntry, balances: &Balances) -> PublicEntry {
    let currency = entry.currency();
    let postings = entry
        .postings()
        .iter()
        .map(|p| PublicPosting {
            account: p.account.to_string(),
            side: match p.side {
                Side::Debit => "debit".into(),
                Side::Credit => "credit".into(),
            },
            amount: p.amount.to_decimal().to_string(),
            currency: currency.code().to_string(),
            balance_after: balance_text(balances, &p.account, currency),
        })
        .collect();
    PublicEntry {
        entry_id: entry.id(),
        currency: currency.code().to_string(),
        effective_at: entry.effective_at(),
        postings,
    }
}

/// An account's normal-side balance as an exact decimal string.
pub fn balance_text(
    balances: &Balances,
    account: &Account,
    currency: ledger_core::Currency,
) -> String {
    let minor = balances.balance(account, currency);
    match i64::try_from(minor) {
        Ok(m) => Money::from_minor(m, currency).to_decimal().to_string(),
        // Beyond i64 minor units no real balance goes; still exact.
        Err(_) => {
            let scale = u32::from(currency.exponent());
            rust_decimal::Decimal::from_i128_with_scale(minor, scale).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_become_snake_case() {
        assert_eq!(snake("DepositSucceeded"), "deposit_succeeded");
        assert_eq!(snake("Credited"), "credited");
        assert_eq!(
            snake("ChargebackOutcomeConflict"),
            "chargeback_outcome_conflict"
        );
    }
}
