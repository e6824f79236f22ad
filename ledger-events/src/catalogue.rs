//! Every public event type the ledger can emit, read from the core's own event definitions (so this list
//! cannot drift from the code): `<stream kind>.<event>` for each stream kind's events, `<kind>.deadline_closed`
//! for the streams with clocks, and the relay's own `monitor.triggered` / `monitor.cleared`.

use ledger_core::deadlines::DeadlineKind;
use ledger_core::engine::StreamId;
use ledger_core::{Currency, Event};
use uuid::Uuid;

use crate::model::{snake, stream_kind};

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
