//! Suspense: money that arrived but cannot be matched (unknown reference, currency mismatch). It is never
//! dropped and never rounded into a wallet: Dr Clearing, Cr `Liabilities:Suspense`, until an operator assigns
//! it to a wallet or returns it to the sender.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Ctx, require_positive};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, Gateway};
use crate::journal::{Account, EntryBuilder, JournalEntry};
use crate::money::Money;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SuspenseStatus {
    #[default]
    None,
    Held,
    Assigned,
    Returned,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspenseState {
    pub id: Uuid,
    pub status: SuspenseStatus,
    pub amount: Option<Money>,
    pub gateway: Option<Gateway>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SuspenseCommand {
    Record {
        suspense_id: Uuid,
        gateway: Gateway,
        amount: Money,
        reference: String,
        reason: String,
    },
    AssignToWallet {
        user: Uuid,
    },
    ReturnToSender,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SuspenseEvent {
    SuspenseRecorded {
        suspense_id: Uuid,
        gateway: Gateway,
        amount: Money,
        reference: String,
        reason: String,
        entry: JournalEntry,
    },
    SuspenseAssigned {
        user: Uuid,
        entry: JournalEntry,
    },
    SuspenseReturned {
        entry: JournalEntry,
    },
}

pub struct Suspense;

impl Suspense {
    /// Money nobody could match is held in suspense, off every wallet (once per suspense id).
    fn record(
        cmd: &Ctx<SuspenseCommand>,
        s: &SuspenseState,
    ) -> Result<Vec<SuspenseEvent>, Rejection> {
        let SuspenseCommand::Record {
            suspense_id,
            gateway,
            amount,
            reference,
            reason,
        } = &cmd.body
        else {
            unreachable!("record is only called for Record")
        };
        // A callback holds money only on its own gateway's clearing (operators and timers on any).
        if matches!(cmd.actor, Actor::Gateway(g) if g != *gateway) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "hold money in suspense",
                "a gateway holds money only on its own clearing",
            ));
        }
        if s.status != SuspenseStatus::None {
            return Ok(vec![]); // the same unmatched money reported again
        }
        require_positive(*amount)?;
        let entry = EntryBuilder::new(amount.currency())
            .debit(Account::GatewayClearing(*gateway), *amount)
            .credit(Account::Suspense, *amount)
            .build(cmd.at, cmd.at)?;
        Ok(vec![SuspenseEvent::SuspenseRecorded {
            suspense_id: *suspense_id,
            gateway: *gateway,
            amount: *amount,
            reference: reference.clone(),
            reason: reason.clone(),
            entry,
        }])
    }

    /// An operator resolves held money: assigned to a user's wallet or returned to the sender.
    fn resolve(
        cmd: &Ctx<SuspenseCommand>,
        s: &SuspenseState,
    ) -> Result<Vec<SuspenseEvent>, Rejection> {
        if !matches!(cmd.actor, Actor::Admin(_)) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "resolve suspense",
                "only an operator",
            ));
        }
        if s.status != SuspenseStatus::Held {
            return Err(Rejection::transition("suspense", s.status, "resolve"));
        }
        let amount = s.amount.expect("held suspense has an amount");
        let b = EntryBuilder::new(amount.currency()).debit(Account::Suspense, amount);
        Ok(vec![match &cmd.body {
            SuspenseCommand::AssignToWallet { user } => SuspenseEvent::SuspenseAssigned {
                user: *user,
                entry: b
                    .credit(Account::UserAvailable { user: *user }, amount)
                    .build(cmd.at, cmd.at)?,
            },
            _ => SuspenseEvent::SuspenseReturned {
                entry: b
                    .credit(
                        Account::GatewayClearing(s.gateway.expect("held suspense has a gateway")),
                        amount,
                    )
                    .build(cmd.at, cmd.at)?,
            },
        }])
    }
}

impl Decider for Suspense {
    type Command = Ctx<SuspenseCommand>;
    type Event = SuspenseEvent;
    type State = SuspenseState;
    type Error = Rejection;

    fn decide(
        cmd: &Ctx<SuspenseCommand>,
        s: &SuspenseState,
    ) -> Result<Vec<SuspenseEvent>, Rejection> {
        if !matches!(
            cmd.actor,
            Actor::Admin(_) | Actor::System | Actor::Gateway(_)
        ) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "handle suspense money",
                "only operators and gateways",
            ));
        }
        match &cmd.body {
            SuspenseCommand::Record { .. } => Suspense::record(cmd, s),
            SuspenseCommand::AssignToWallet { .. } | SuspenseCommand::ReturnToSender => {
                Suspense::resolve(cmd, s)
            }
        }
    }

    fn evolve(mut s: SuspenseState, event: &SuspenseEvent) -> SuspenseState {
        match event {
            SuspenseEvent::SuspenseRecorded {
                suspense_id,
                gateway,
                amount,
                ..
            } => {
                s = SuspenseState {
                    id: *suspense_id,
                    status: SuspenseStatus::Held,
                    amount: Some(*amount),
                    gateway: Some(*gateway),
                };
            }
            SuspenseEvent::SuspenseAssigned { .. } => s.status = SuspenseStatus::Assigned,
            SuspenseEvent::SuspenseReturned { .. } => s.status = SuspenseStatus::Returned,
        }
        s
    }
}
