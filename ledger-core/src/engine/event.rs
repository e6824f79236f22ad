//! `Event` (any aggregate's event) and `AggState` (any aggregate's state): how events are stored and
//! decoded (with upcasts), and `evolve`, the total fold of one event into its aggregate's state.

use serde::{Deserialize, Serialize};

use super::StreamId;
use crate::aggregates::booking::{Booking, BookingEvent, BookingState};
use crate::aggregates::closed_periods::{Periods, PeriodsEvent, PeriodsState};
use crate::aggregates::dispute::{Dispute, DisputeEvent, DisputeState};
use crate::aggregates::ledger_policy::{LedgerPolicy, LedgerPolicyEvent, LedgerPolicyState};
use crate::aggregates::payment::{Payment, PaymentEvent, PaymentState};
use crate::aggregates::project::{Project, ProjectEvent, ProjectState};
use crate::aggregates::quote::{Quote, QuoteEvent, QuoteState};
use crate::aggregates::reconciliation::{Reconciliation, ReconciliationEvent, ReconciliationState};
use crate::aggregates::service_request::{
    ServiceRequest, ServiceRequestEvent, ServiceRequestState,
};
use crate::aggregates::settlement::{Settlement, SettlementEvent, SettlementState};
use crate::aggregates::suspense::{Suspense, SuspenseEvent, SuspenseState};
use crate::aggregates::wallet::{Wallet, WalletEvent, WalletState};
use crate::deadlines::DeadlineEvent;
use crate::decider::Decider;
use crate::journal::JournalEntry;
use crate::outcomes::{OutcomeEvent, OutcomeState};

/// Current schema version of every event type. See `upcast` for how older versions are read.
pub const SCHEMA_VERSION: i32 = 1;

/// Any aggregate's event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Event {
    ServiceRequest(ServiceRequestEvent),
    Quote(QuoteEvent),
    Booking(BookingEvent),
    Project(ProjectEvent),
    Payment(PaymentEvent),
    Wallet(WalletEvent),
    Dispute(DisputeEvent),
    Suspense(SuspenseEvent),
    LedgerPolicy(LedgerPolicyEvent),
    Settlement(SettlementEvent),
    Reconciliation(ReconciliationEvent),
    Periods(PeriodsEvent),
    /// A recorded outcome (`outcomes`): no state but its own stream's, no money.
    Outcome(OutcomeEvent),
    /// A deadline of this stream closed after its firing was refused (`deadlines::DeadlineEvent`): the one
    /// event type any stream with clocks may hold. It changes no state.
    Deadline(DeadlineEvent),
}

/// The stored type of the one event any stream may hold.
const DEADLINE_CLOSED: &str = "DeadlineClosed";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event {event_type} v{version} of stream {stream}: {message}")]
    Payload {
        stream: String,
        event_type: String,
        version: i32,
        message: String,
    },
    #[error("event schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    FutureVersion(i32),
}

/// The one list of money-moving events: matches `$event` (by reference or by mutable reference; default
/// binding modes give `entry` the same kind of reference) and yields its journal entry.
macro_rules! entry_of {
    ($event:expr) => {{
        use PaymentEvent as P;
        use ProjectEvent as J;
        match $event {
            Event::Project(
                J::MilestoneFunded { entry, .. }
                | J::MilestoneReleased { entry, .. }
                | J::MilestoneRefunded { entry, .. }
                | J::MilestoneResolved { entry, .. },
            ) => Some(entry),
            Event::Payment(
                P::DepositSucceeded { entry, .. }
                | P::PayoutRequested { entry, .. }
                | P::PayoutCompleted { entry, .. }
                | P::PayoutFailed { entry, .. }
                | P::PayoutCancelled { entry }
                | P::PayoutReversed { entry }
                | P::PayoutReturned { entry }
                | P::CardRefundRequested { entry, .. }
                | P::CardRefundProcessed { entry, .. }
                | P::CardRefundFailed { entry, .. }
                | P::SuccessAfterFailure { entry, .. }
                | P::UnrequestedRefundHeld { entry, .. }
                | P::ChargebackOpened { entry, .. }
                | P::ChargebackWon { entry, .. }
                | P::ChargebackLost { entry, .. },
            ) => Some(entry),
            Event::Wallet(WalletEvent::PendingMatured { entry, .. }) => Some(entry),
            Event::Suspense(
                SuspenseEvent::SuspenseRecorded { entry, .. }
                | SuspenseEvent::SuspenseAssigned { entry, .. }
                | SuspenseEvent::SuspenseReturned { entry },
            ) => Some(entry),
            Event::Settlement(SettlementEvent::SettlementRecorded { entry, .. }) => Some(entry),
            _ => None,
        }
    }};
}

impl Event {
    /// The journal entry this event carries, if it moves money.
    pub fn entry(&self) -> Option<&JournalEntry> {
        entry_of!(self)
    }

    pub(super) fn entry_mut(&mut self) -> Option<&mut JournalEntry> {
        entry_of!(self)
    }

    /// `(event_type, payload)` as stored: the payload carries the same `type` tag.
    pub fn to_stored(&self) -> (String, serde_json::Value) {
        let payload = serde_json::to_value(self).expect("events always serialize");
        let event_type = payload
            .get("type")
            .and_then(|t| t.as_str())
            .expect("every event has a type tag")
            .to_string();
        (event_type, payload)
    }

    /// Decodes a stored event of `stream`, upcasting older schema versions first.
    pub fn from_stored(
        stream: &StreamId,
        event_type: &str,
        version: i32,
        payload: serde_json::Value,
    ) -> Result<Event, EventDecodeError> {
        let payload = upcast(event_type, version, payload)?;
        let err = |e: serde_json::Error| EventDecodeError::Payload {
            stream: stream.to_string(),
            event_type: event_type.to_string(),
            version,
            message: e.to_string(),
        };
        if event_type == DEADLINE_CLOSED {
            return Ok(Event::Deadline(
                serde_json::from_value(payload).map_err(err)?,
            ));
        }
        Ok(match stream {
            StreamId::ServiceRequest(_) => {
                Event::ServiceRequest(serde_json::from_value(payload).map_err(err)?)
            }
            StreamId::Quote(_) => Event::Quote(serde_json::from_value(payload).map_err(err)?),
            StreamId::Booking(_) => Event::Booking(serde_json::from_value(payload).map_err(err)?),
            StreamId::Project(_) => Event::Project(serde_json::from_value(payload).map_err(err)?),
            StreamId::Payment(_) => Event::Payment(serde_json::from_value(payload).map_err(err)?),
            StreamId::Wallet { .. } => Event::Wallet(serde_json::from_value(payload).map_err(err)?),
            StreamId::Dispute(_) => Event::Dispute(serde_json::from_value(payload).map_err(err)?),
            StreamId::Suspense(_) => Event::Suspense(serde_json::from_value(payload).map_err(err)?),
            StreamId::LedgerPolicy => {
                Event::LedgerPolicy(serde_json::from_value(payload).map_err(err)?)
            }
            StreamId::Settlement(_) => {
                Event::Settlement(serde_json::from_value(payload).map_err(err)?)
            }
            StreamId::Reconciliation(_) => {
                Event::Reconciliation(serde_json::from_value(payload).map_err(err)?)
            }
            StreamId::Periods => Event::Periods(serde_json::from_value(payload).map_err(err)?),
            StreamId::Outcome(_) => Event::Outcome(serde_json::from_value(payload).map_err(err)?),
        })
    }

    /// Decodes a stored event from its JSON text: straight into the typed event when it is of the current
    /// schema version (the replay hot path), through `from_stored` and its upcasts otherwise.
    pub fn from_stored_str(
        stream: &StreamId,
        event_type: &str,
        version: i32,
        payload: &str,
    ) -> Result<Event, EventDecodeError> {
        let err = |e: serde_json::Error| EventDecodeError::Payload {
            stream: stream.to_string(),
            event_type: event_type.to_string(),
            version,
            message: e.to_string(),
        };
        if version != SCHEMA_VERSION {
            let value = serde_json::from_str(payload).map_err(err)?;
            return Event::from_stored(stream, event_type, version, value);
        }
        if event_type == DEADLINE_CLOSED {
            return Ok(Event::Deadline(serde_json::from_str(payload).map_err(err)?));
        }
        Ok(match stream {
            StreamId::ServiceRequest(_) => {
                Event::ServiceRequest(serde_json::from_str(payload).map_err(err)?)
            }
            StreamId::Quote(_) => Event::Quote(serde_json::from_str(payload).map_err(err)?),
            StreamId::Booking(_) => Event::Booking(serde_json::from_str(payload).map_err(err)?),
            StreamId::Project(_) => Event::Project(serde_json::from_str(payload).map_err(err)?),
            StreamId::Payment(_) => Event::Payment(serde_json::from_str(payload).map_err(err)?),
            StreamId::Wallet { .. } => Event::Wallet(serde_json::from_str(payload).map_err(err)?),
            StreamId::Dispute(_) => Event::Dispute(serde_json::from_str(payload).map_err(err)?),
            StreamId::Suspense(_) => Event::Suspense(serde_json::from_str(payload).map_err(err)?),
            StreamId::LedgerPolicy => {
                Event::LedgerPolicy(serde_json::from_str(payload).map_err(err)?)
            }
            StreamId::Settlement(_) => {
                Event::Settlement(serde_json::from_str(payload).map_err(err)?)
            }
            StreamId::Reconciliation(_) => {
                Event::Reconciliation(serde_json::from_str(payload).map_err(err)?)
            }
            StreamId::Periods => Event::Periods(serde_json::from_str(payload).map_err(err)?),
            StreamId::Outcome(_) => Event::Outcome(serde_json::from_str(payload).map_err(err)?),
        })
    }
}

/// Reads an event stored under an older schema version as the current one.
///
/// Events are never rewritten in the store. When an event's shape changes, its `SCHEMA_VERSION` goes up and
/// a step `(event_type, old_version) -> payload of old_version + 1` is added here (for example, filling a new
/// field with the value the old semantics implied); steps chain until the current version. Version 1 is the
/// first, so today the function only refuses versions from the future.
pub fn upcast(
    _event_type: &str,
    version: i32,
    payload: serde_json::Value,
) -> Result<serde_json::Value, EventDecodeError> {
    if version > SCHEMA_VERSION {
        return Err(EventDecodeError::FutureVersion(version));
    }
    Ok(payload)
}

/// Any aggregate's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AggState {
    ServiceRequest(ServiceRequestState),
    Quote(QuoteState),
    Booking(BookingState),
    Project(ProjectState),
    Payment(PaymentState),
    Wallet(WalletState),
    Dispute(DisputeState),
    Suspense(SuspenseState),
    LedgerPolicy(LedgerPolicyState),
    Settlement(SettlementState),
    Reconciliation(ReconciliationState),
    Periods(PeriodsState),
    Outcome(OutcomeState),
}

impl AggState {
    /// The state of a stream with no events (ids filled so rejections can name them).
    pub fn initial(stream: &StreamId) -> AggState {
        match *stream {
            StreamId::ServiceRequest(id) => AggState::ServiceRequest(ServiceRequestState {
                id,
                ..Default::default()
            }),
            StreamId::Quote(id) => AggState::Quote(QuoteState {
                id,
                ..Default::default()
            }),
            StreamId::Booking(id) => AggState::Booking(BookingState {
                id,
                ..Default::default()
            }),
            StreamId::Project(id) => AggState::Project(ProjectState {
                id,
                ..Default::default()
            }),
            StreamId::Payment(id) => AggState::Payment(PaymentState {
                id,
                ..Default::default()
            }),
            StreamId::Wallet { .. } => AggState::Wallet(WalletState::default()),
            StreamId::Dispute(id) => AggState::Dispute(DisputeState {
                id,
                ..Default::default()
            }),
            StreamId::Suspense(id) => AggState::Suspense(SuspenseState {
                id,
                ..Default::default()
            }),
            StreamId::LedgerPolicy => AggState::LedgerPolicy(LedgerPolicyState::default()),
            StreamId::Settlement(_) => AggState::Settlement(SettlementState::default()),
            StreamId::Reconciliation(_) => AggState::Reconciliation(ReconciliationState::default()),
            StreamId::Periods => AggState::Periods(PeriodsState::default()),
            StreamId::Outcome(_) => AggState::Outcome(OutcomeState::default()),
        }
    }
}

/// Folds one event into its aggregate's state. Total: a mismatched pair is a programming error.
pub fn evolve(state: AggState, event: &Event) -> AggState {
    match (state, event) {
        (AggState::ServiceRequest(s), Event::ServiceRequest(e)) => {
            AggState::ServiceRequest(ServiceRequest::evolve(s, e))
        }
        (AggState::Quote(s), Event::Quote(e)) => AggState::Quote(Quote::evolve(s, e)),
        (AggState::Booking(s), Event::Booking(e)) => AggState::Booking(Booking::evolve(s, e)),
        (AggState::Project(s), Event::Project(e)) => AggState::Project(Project::evolve(s, e)),
        (AggState::Payment(s), Event::Payment(e)) => AggState::Payment(Payment::evolve(s, e)),
        (AggState::Wallet(s), Event::Wallet(e)) => AggState::Wallet(Wallet::evolve(s, e)),
        (AggState::Dispute(s), Event::Dispute(e)) => AggState::Dispute(Dispute::evolve(s, e)),
        (AggState::Suspense(s), Event::Suspense(e)) => AggState::Suspense(Suspense::evolve(s, e)),
        (AggState::LedgerPolicy(s), Event::LedgerPolicy(e)) => {
            AggState::LedgerPolicy(LedgerPolicy::evolve(s, e))
        }
        (AggState::Settlement(s), Event::Settlement(e)) => {
            AggState::Settlement(Settlement::evolve(s, e))
        }
        (AggState::Reconciliation(s), Event::Reconciliation(e)) => {
            AggState::Reconciliation(Reconciliation::evolve(s, e))
        }
        (AggState::Periods(s), Event::Periods(e)) => AggState::Periods(Periods::evolve(s, e)),
        (AggState::Outcome(s), Event::Outcome(e)) => AggState::Outcome(OutcomeState::evolve(s, e)),
        (s, Event::Deadline(_)) => s,
        (s, e) => panic!("event {e:?} does not belong to state {s:?}"),
    }
}
