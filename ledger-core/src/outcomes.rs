//! Recorded outcomes in the log (issue 19): what a keyed command or a gateway delivery was answered, when that
//! answer is not already told by money events. An idempotency row or an inbox row exists only together with a
//! log entry that records the same outcome, hashed in the chain like any other event, so that a row written
//! beside the engine (a "rejected" outcome under a future callback's key) is refused at commit and named by
//! `verify`, and `verify --deep` can decide a recorded rejection again.
//!
//! Each outcome is its own stream (`outcome-<id>`, the command's or the delivery's id): recording one never
//! conflicts with another command, and an id can be recorded once.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::CommandEnvelope;
use crate::error::RejectionReport;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OutcomeEvent {
    /// A keyed command whose outcome wrote no other event: refused (`rejection`) or accepted with nothing to
    /// change. The envelope is kept whole so that the decision can be re-run.
    CommandOutcomeRecorded {
        command: CommandEnvelope,
        idempotency_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rejection: Option<RejectionReport>,
    },
    /// One gateway delivery as the inbox records it: its disposition, the command it ran (if any) and the
    /// SHA-256 of its raw body (the body itself stays in the inbox, outside the public log). Not written for
    /// a delivery whose command appended events under its dedupe key: the first of those events carries the
    /// same facts in its metadata (`ledger_store::DeliveryStamp`), nor for a replayed duplicate.
    DeliveryRecorded {
        delivery_id: Uuid,
        gateway: String,
        dedupe_key: String,
        disposition: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<Uuid>,
        body_sha256: String,
    },
}

/// An outcome stream holds one event; its state says only whether it was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeState {
    pub recorded: bool,
}

impl OutcomeState {
    pub fn evolve(_state: OutcomeState, _event: &OutcomeEvent) -> OutcomeState {
        OutcomeState { recorded: true }
    }
}

/// The id of the event recording `id`'s outcome (a command's or a delivery's id): derived, so that recording
/// the same outcome twice is refused by the log's unique event ids.
pub fn outcome_event_id(id: Uuid) -> Uuid {
    crate::ids::derived_id(id, "recorded-outcome")
}
