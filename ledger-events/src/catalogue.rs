//! Every public event type the ledger can emit, read from the core's own event definitions (so this list
//! cannot drift from the code): `<stream kind>.<event>` for each stream kind's events, `<kind>.deadline_closed`
//! for the streams with clocks, and the relay's own `monitor.triggered` / `monitor.cleared`; and `docs/events.md`,
//! one real example of each, collected from a database the engine wrote.

use std::collections::BTreeMap;

use ledger_core::deadlines::DeadlineKind;
use ledger_core::engine::StreamId;
use ledger_core::{Balances, Currency, Event};
use ledger_store::{EventStore, PgEventStore};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use crate::model::{public_event, snake, stream_kind};
use crate::monitor::{Monitor, Watch};
use crate::{Error, PublicEvent, running};

/// One stream of each kind (ids do not matter: only the kind decides how an event decodes).
fn one_stream_of_each_kind() -> Vec<StreamId> {
    let id = Uuid::nil();
    vec![
        StreamId::ServiceRequest(id),
        StreamId::Quote(id),
        StreamId::Booking(id),
        StreamId::Project(id),
        StreamId::Payment(id),
        StreamId::Wallet {
            user: id,
            currency: Currency::USD,
        },
        StreamId::Dispute(id),
        StreamId::Suspense(id),
        StreamId::LedgerPolicy,
        StreamId::Settlement(id),
        StreamId::Reconciliation(id),
        StreamId::Periods,
        StreamId::Outcome(id),
    ]
}

/// The stored event types of a stream kind: its event enum's variants, as serde names them when refusing
/// an unknown tag ("unknown variant `x`, expected one of `A`, `B`", "expected `A` or `B`", "expected `A`").
fn stored_types(stream: &StreamId) -> Vec<String> {
    const PROBE: &str = "__no_such_event__";
    let refusal = Event::from_stored(
        stream,
        PROBE,
        ledger_core::engine::SCHEMA_VERSION,
        serde_json::json!({ "type": PROBE }),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    let Some((_, expected)) = refusal.split_once("expected ") else {
        return Vec::new();
    };
    // The names are the odd pieces between backticks.
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The stream kind whose streams a deadline of `kind` runs on (and so may close with `deadline_closed`).
fn deadline_stream_kind(kind: DeadlineKind) -> &'static str {
    match kind {
        DeadlineKind::AutoApproveMilestone | DeadlineKind::MatureRelease => "project",
        DeadlineKind::AutoAcceptBooking => "booking",
        DeadlineKind::ExpireQuote => "quote",
        DeadlineKind::ExpireServiceRequest => "request",
        DeadlineKind::TimeOutDispute => "dispute",
        DeadlineKind::ExpireDeposit => "payment",
    }
}

/// Every public type, sorted.
pub fn public_types() -> Vec<String> {
    let mut types: Vec<String> = one_stream_of_each_kind()
        .iter()
        .flat_map(|stream| {
            let kind = stream_kind(stream);
            stored_types(stream)
                .into_iter()
                .map(move |name| format!("{kind}.{}", snake(&name)))
        })
        .collect();
    types.extend(
        DeadlineKind::ALL
            .iter()
            .map(|k| format!("{}.deadline_closed", deadline_stream_kind(*k))),
    );
    types.push("monitor.triggered".into());
    types.push("monitor.cleared".into());
    types.sort();
    types.dedup();
    types
}

/// Events read per ledger while collecting examples.
const EVENTS_PER_LEDGER: i64 = 20_000;
const PAGE: i64 = 2_000;

/// The first example of each public type in the database's ledgers (each mapped by the code the relay and
/// the pull feed use), into `examples`. Monitor events come from a monitor (`<account> > 0 <currency>`) on
/// the first account an entry touches, run over the same log.
pub async fn collect(
    pool: &PgPool,
    examples: &mut BTreeMap<String, PublicEvent>,
) -> Result<(), Error> {
    let ledgers: Vec<String> = sqlx::query_scalar("select ledger_id from ledger.ledgers")
        .fetch_all(pool)
        .await?;
    let store = PgEventStore::new(pool.clone());
    for ledger in ledgers {
        let head = store.head_position(&ledger).await?.min(EVENTS_PER_LEDGER);
        let mut balances: Balances = running::balances_at(pool, &store, &ledger, 0).await?;
        let mut watch: Option<Watch> = None;
        let mut position = 0;
        while position < head {
            let page = store.read_log(&ledger, position, PAGE).await?;
            let Some(last) = page.last().and_then(|e| e.position) else {
                break;
            };
            for record in &page {
                // The store's own tests write streams the engine does not know: not examples.
                let Ok(event) = public_event(record, &mut balances) else {
                    continue;
                };
                if watch.is_none()
                    && let Some(entry) = &event.entry
                {
                    let mut w = Watch::default();
                    let first = &entry.postings[0];
                    w.refresh(
                        vec![Monitor {
                            monitor_id: uuid::Uuid::new_v4(),
                            name: "example".into(),
                            account: first.account.clone(),
                            currency: first.currency.clone(),
                            op: ">".into(),
                            threshold: Decimal::ZERO,
                            since_position: 0,
                        }],
                        &Balances::default(),
                    );
                    watch = Some(w);
                }
                let edges = watch
                    .as_mut()
                    .map(|w| w.observe(&event, &balances, event.recorded_at))
                    .unwrap_or_default();
                for e in std::iter::once(event).chain(edges) {
                    examples.entry(e.event_type.clone()).or_insert(e);
                }
            }
            position = last;
        }
    }
    Ok(())
}

/// `docs/events.md`: a section per public type with its example (or "No example yet.").
pub fn render(wanted: &[String], examples: &BTreeMap<String, PublicEvent>) -> String {
    let mut out = String::from(
        "# Public events: one example of each type\n\n\
         Generated by `UPDATE_EVENT_CATALOGUE=1 cargo test -p ledger-cli --test event_catalogue` from one \
         scenario that makes every type (the demo, then every other path); that test fails when the scenario \
         misses a type, and `ledger-events/tests/catalogue_doc.rs` when a type has no example here or an \
         example no longer decodes as its type. The envelope and the guarantees are in the README \
         (\"Events out\").\n\n\
         Each example is one message as NATS, a webhook and the pull feed deliver it (`schema_version` 1). \
         `data` holds the event's own fields (money as `{\"amount\": \"12.50\", \"currency\": \"USD\"}`); \
         `entry`, on the events that move money, holds the postings with each account's balance after them.\n\n",
    );
    let mut kind = "";
    for t in wanted {
        let this_kind = t.split('.').next().unwrap_or_default();
        if this_kind != kind {
            kind = this_kind;
            out.push_str(&format!("## `{kind}`\n\n"));
        }
        out.push_str(&format!("### `{t}`\n\n"));
        match examples.get(t) {
            Some(e) => {
                let json = serde_json::to_string_pretty(e).expect("events serialize");
                out.push_str(&format!("```json\n{json}\n```\n\n"));
            }
            None => out.push_str("No example yet.\n\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_stream_kind_has_types() {
        let types = super::public_types();
        println!("{} types:\n{}", types.len(), types.join("\n"));
        assert!(types.contains(&"payment.deposit_succeeded".to_string()));
        for t in [
            "project.milestone_released",
            "policy.fee_policy_set",
            "reconciliation.reconciliation_recorded",
            "settlement.settlement_recorded",
            "outcome.command_outcome_recorded",
            "periods.periods_closed",
            "payment.deadline_closed",
            "monitor.cleared",
        ] {
            assert!(types.contains(&t.to_string()), "{t} missing");
        }
    }
}
