//! Reconciliation runs: that a gateway statement was compared with the ledger, by whom, when, which statement
//! (its SHA-256) and what was found, kept in the log for an auditor (`reconciliation-<id>`). No money moves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, Gateway};

/// What one run found, in counts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationCounts {
    pub matched: u64,
    pub amount_mismatch: u64,
    pub only_at_gateway: u64,
    pub only_in_ledger: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationRun {
    pub gateway: Gateway,
    /// Lower-case hex SHA-256 of the statement file's bytes.
    pub statement_sha256: String,
    /// The statement's format (`generic`, `stripe`, `paystack`).
    pub format: String,
    /// The time range compared (inclusive), absent for an empty statement.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub counts: ReconciliationCounts,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationState {
    pub recorded: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ReconciliationEvent {
    ReconciliationRecorded { run: ReconciliationRun },
}

pub struct Reconciliation;

impl Decider for Reconciliation {
    type Command = Ctx<ReconciliationRun>;
    type Event = ReconciliationEvent;
    type State = ReconciliationState;
    type Error = Rejection;

    fn decide(
        cmd: &Ctx<ReconciliationRun>,
        s: &ReconciliationState,
    ) -> Result<Vec<ReconciliationEvent>, Rejection> {
        if !matches!(cmd.actor, Actor::Admin(_) | Actor::System) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "record a reconciliation",
                "only operators and timers",
            ));
        }
        let run = &cmd.body;
        if run.statement_sha256.len() != 64
            || !run
                .statement_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Rejection::InvalidCommand(
                "statement_sha256 must be 64 lower-case hex digits".into(),
            ));
        }
        if !["generic", "stripe", "paystack"].contains(&run.format.as_str()) {
            return Err(Rejection::InvalidCommand(format!(
                "unknown statement format {:?}",
                run.format
            )));
        }
        if s.recorded {
            return Ok(vec![]);
        }
        Ok(vec![ReconciliationEvent::ReconciliationRecorded {
            run: run.clone(),
        }])
    }

    fn evolve(mut s: ReconciliationState, e: &ReconciliationEvent) -> ReconciliationState {
        match e {
            ReconciliationEvent::ReconciliationRecorded { .. } => s.recorded = true,
        }
        s
    }
}
