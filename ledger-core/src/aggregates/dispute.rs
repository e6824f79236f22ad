//! Dispute over one milestone's held escrow: Opened -> AwaitingResponse -> {Accepted, Mediation -> Resolved},
//! Withdrawn, TimedOut. The opener proposes a split; the counterparty accepts it or contests (mediation by an
//! operator); silence past the response deadline applies the proposal (TimedOut). Every resolution satisfies
//! `release + refund = held` exactly; the process logic hands it to the project as a `Resolve` command.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ctx;
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, MilestoneNo};
use crate::money::{Currency, Money};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DisputeStatus {
    #[default]
    None,
    Opened,
    AwaitingResponse,
    Accepted,
    Mediation,
    Resolved,
    Withdrawn,
    TimedOut,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeState {
    pub id: Uuid,
    pub status: DisputeStatus,
    pub project_id: Uuid,
    pub milestone: MilestoneNo,
    pub opened_by: Uuid,
    pub counterparty: Uuid,
    pub currency: Option<Currency>,
    pub held_minor: i64,
    pub proposed_release_minor: i64,
    pub respond_by: Option<DateTime<Utc>>,
    /// The split it settled on (release, refund), once settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<(i64, i64)>,
}

impl DisputeState {
    /// The split (release, refund) in minor units it settled on, if it did.
    pub fn settled_split(&self) -> Option<(i64, i64)> {
        self.settled
    }
}

/// What the engine knows of the project when a dispute opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisputedMilestone {
    pub project_id: Uuid,
    pub milestone: MilestoneNo,
    pub buyer: Uuid,
    pub seller: Uuid,
    pub held: Money,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DisputeCommand {
    Open {
        dispute_id: Uuid,
        target: DisputedMilestone,
        reason: String,
        proposed_release: Money,
        respond_by: DateTime<Utc>,
    },
    AcceptProposal,
    Contest,
    Resolve {
        release: Money,
    },
    Withdraw,
    TimeOut,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DisputeEvent {
    DisputeOpened {
        dispute_id: Uuid,
        project_id: Uuid,
        milestone: MilestoneNo,
        opened_by: Uuid,
        counterparty: Uuid,
        reason: String,
        held: Money,
        proposed_release: Money,
        respond_by: DateTime<Utc>,
    },
    DisputeResponseRequested,
    DisputeContested,
    /// Settled: by acceptance, mediation or timeout. `release + refund = held`.
    DisputeSettled {
        outcome: DisputeStatus,
        release: Money,
        refund: Money,
    },
    DisputeWithdrawn,
}

pub struct Dispute;

const AGG: &str = "dispute";

impl Dispute {
    fn settle(s: &DisputeState, outcome: DisputeStatus, release_minor: i64) -> Vec<DisputeEvent> {
        let currency = s.currency.expect("an open dispute has a currency");
        let release = Money::from_minor(release_minor, currency);
        let refund = Money::from_minor(s.held_minor - release_minor, currency);
        assert_eq!(
            release.minor() + refund.minor(),
            s.held_minor,
            "split must equal the held amount"
        );
        vec![DisputeEvent::DisputeSettled {
            outcome,
            release,
            refund,
        }]
    }

    fn open(cmd: &Ctx<DisputeCommand>, s: &DisputeState) -> Result<Vec<DisputeEvent>, Rejection> {
        let DisputeCommand::Open {
            dispute_id,
            target,
            reason,
            proposed_release,
            respond_by,
        } = &cmd.body
        else {
            unreachable!("open is only called for Open")
        };
        if s.status != DisputeStatus::None {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: dispute_id.to_string(),
            });
        }
        let opener = cmd
            .actor
            .user()
            .filter(|u| *u == target.buyer || *u == target.seller)
            .ok_or_else(|| {
                Rejection::not_party(&cmd.actor, "open a dispute", "only the buyer or the seller")
            })?;
        if proposed_release.currency() != target.held.currency() {
            return Err(Rejection::CurrencyMismatch {
                expected: target.held.currency(),
                found: proposed_release.currency(),
            });
        }
        if proposed_release.minor() < 0 || proposed_release.minor() > target.held.minor() {
            return Err(Rejection::SplitMismatch {
                release: proposed_release.to_string(),
                refund: "the rest".into(),
                held: target.held.to_string(),
            });
        }
        if reason.len() > 2000 {
            return Err(Rejection::InvalidCommand(
                "reason is longer than 2000 bytes".into(),
            ));
        }
        let counterparty = if opener == target.buyer {
            target.seller
        } else {
            target.buyer
        };
        Ok(vec![
            DisputeEvent::DisputeOpened {
                dispute_id: *dispute_id,
                project_id: target.project_id,
                milestone: target.milestone,
                opened_by: opener,
                counterparty,
                reason: reason.clone(),
                held: target.held,
                proposed_release: *proposed_release,
                respond_by: *respond_by,
            },
            DisputeEvent::DisputeResponseRequested,
        ])
    }

    /// The counterparty accepts the proposed split (settled) or contests it (mediation).
    fn answer(cmd: &Ctx<DisputeCommand>, s: &DisputeState) -> Result<Vec<DisputeEvent>, Rejection> {
        if !cmd.actor.is(s.counterparty) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "answer a dispute",
                "only the counterparty",
            ));
        }
        if s.status != DisputeStatus::AwaitingResponse {
            return Err(Rejection::transition(AGG, s.status, "answer"));
        }
        Ok(if cmd.body == DisputeCommand::Contest {
            vec![DisputeEvent::DisputeContested]
        } else {
            Dispute::settle(s, DisputeStatus::Accepted, s.proposed_release_minor)
        })
    }

    /// A mediator (operator) settles a contested dispute on a split of the held amount.
    fn mediate(
        cmd: &Ctx<DisputeCommand>,
        s: &DisputeState,
        release: Money,
    ) -> Result<Vec<DisputeEvent>, Rejection> {
        if !matches!(cmd.actor, Actor::Admin(_)) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "resolve a dispute",
                "only a mediator (operator)",
            ));
        }
        if s.status != DisputeStatus::Mediation {
            return Err(Rejection::transition(AGG, s.status, "resolve"));
        }
        let currency = s.currency.expect("an open dispute has a currency");
        if release.currency() != currency {
            return Err(Rejection::CurrencyMismatch {
                expected: currency,
                found: release.currency(),
            });
        }
        if release.minor() < 0 || release.minor() > s.held_minor {
            return Err(Rejection::SplitMismatch {
                release: release.to_string(),
                refund: Money::from_minor(s.held_minor - release.minor(), currency).to_string(),
                held: Money::from_minor(s.held_minor, currency).to_string(),
            });
        }
        Ok(Dispute::settle(s, DisputeStatus::Resolved, release.minor()))
    }

    /// Its opener withdraws a dispute not yet settled.
    fn withdraw(
        cmd: &Ctx<DisputeCommand>,
        s: &DisputeState,
    ) -> Result<Vec<DisputeEvent>, Rejection> {
        if !cmd.actor.is(s.opened_by) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "withdraw a dispute",
                "only its opener",
            ));
        }
        if !matches!(
            s.status,
            DisputeStatus::Opened | DisputeStatus::AwaitingResponse | DisputeStatus::Mediation
        ) {
            return Err(Rejection::transition(AGG, s.status, "withdraw"));
        }
        Ok(vec![DisputeEvent::DisputeWithdrawn])
    }

    /// The timer applies the proposal when the counterparty stays silent past the response deadline.
    fn time_out(
        cmd: &Ctx<DisputeCommand>,
        s: &DisputeState,
    ) -> Result<Vec<DisputeEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "time out a dispute",
                "only the timer",
            ));
        }
        if s.status != DisputeStatus::AwaitingResponse {
            return Err(Rejection::transition(AGG, s.status, "time out"));
        }
        let due = s.respond_by.expect("an open dispute has a deadline");
        if cmd.at < due {
            return Err(Rejection::TooEarly {
                what: "dispute timeout",
                due: due.to_rfc3339(),
            });
        }
        Ok(Dispute::settle(
            s,
            DisputeStatus::TimedOut,
            s.proposed_release_minor,
        ))
    }
}

impl Decider for Dispute {
    type Command = Ctx<DisputeCommand>;
    type Event = DisputeEvent;
    type State = DisputeState;
    type Error = Rejection;

    fn decide(cmd: &Ctx<DisputeCommand>, s: &DisputeState) -> Result<Vec<DisputeEvent>, Rejection> {
        use DisputeCommand as C;
        if !matches!(cmd.body, C::Open { .. }) && s.status == DisputeStatus::None {
            return Err(Rejection::NotFound {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        match &cmd.body {
            C::Open { .. } => Dispute::open(cmd, s),
            C::AcceptProposal | C::Contest => Dispute::answer(cmd, s),
            C::Resolve { release } => Dispute::mediate(cmd, s, *release),
            C::Withdraw => Dispute::withdraw(cmd, s),
            C::TimeOut => Dispute::time_out(cmd, s),
        }
    }

    fn evolve(mut s: DisputeState, event: &DisputeEvent) -> DisputeState {
        use DisputeEvent as E;
        match event {
            E::DisputeOpened {
                dispute_id,
                project_id,
                milestone,
                opened_by,
                counterparty,
                held,
                proposed_release,
                respond_by,
                ..
            } => {
                s = DisputeState {
                    id: *dispute_id,
                    status: DisputeStatus::Opened,
                    project_id: *project_id,
                    milestone: *milestone,
                    opened_by: *opened_by,
                    counterparty: *counterparty,
                    currency: Some(held.currency()),
                    held_minor: held.minor(),
                    proposed_release_minor: proposed_release.minor(),
                    respond_by: Some(*respond_by),
                    settled: None,
                };
            }
            E::DisputeResponseRequested => s.status = DisputeStatus::AwaitingResponse,
            E::DisputeContested => s.status = DisputeStatus::Mediation,
            E::DisputeSettled {
                outcome,
                release,
                refund,
            } => {
                s.status = *outcome;
                s.settled = Some((release.minor(), refund.minor()));
            }
            E::DisputeWithdrawn => s.status = DisputeStatus::Withdrawn,
        }
        s
    }

    fn is_terminal(s: &DisputeState) -> bool {
        matches!(
            s.status,
            DisputeStatus::Accepted
                | DisputeStatus::Resolved
                | DisputeStatus::Withdrawn
                | DisputeStatus::TimedOut
        )
    }
}
