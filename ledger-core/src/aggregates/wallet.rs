//! Wallet (owner x currency): available and pending balances, never below zero.
//!
//! Most wallet events are mirrors: the engine derives them from the postings that other aggregates' entries
//! make to `Liabilities:Users:<user>:{Available,Pending}`, so every movement of a user's money passes the
//! wallet's guard and takes the wallet stream's expected version (the concurrency point for that user only).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Ctx, require_positive};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;
use crate::journal::{Account, EntryBuilder, JournalEntry};
use crate::money::{Currency, Money};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Available,
    Pending,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletState {
    pub available_minor: i64,
    pub pending_minor: i64,
    /// The projects holding escrow this wallet funded, in first-funding order (what a lost chargeback
    /// claws back from, oldest first). A project leaves when it holds none of it any more
    /// (`EscrowProjectSettled`), so later projects can never push an older one out.
    #[serde(default)]
    pub escrow_projects: Vec<Uuid>,
}

/// Bound on the projects one wallet may hold escrow in at once (per currency): funding a further project is
/// refused until one settles. It bounds the wallet's state, not a chargeback's reach (which walks this index
/// oldest first, `CHARGEBACK_PROJECTS_MAX` projects per command).
pub const ESCROW_PROJECTS_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub enum WalletCommand {
    /// Mirror of postings made by another aggregate's entry (engine-internal).
    /// `escrow_project`: the project whose escrow the debited money went into, if any.
    Apply {
        user: Uuid,
        currency: Currency,
        available_delta: i64,
        pending_delta: i64,
        escrow_project: Option<Uuid>,
    },
    /// Pending proceeds become available (a timer, or an operator).
    MaturePending { user: Uuid, amount: Money },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WalletEvent {
    Credited {
        bucket: Bucket,
        amount: Money,
    },
    Debited {
        bucket: Bucket,
        amount: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escrow_project: Option<Uuid>,
    },
    PendingMatured {
        amount: Money,
        entry: JournalEntry,
    },
    /// A project this wallet funded holds none of its escrow any more (released, refunded, resolved,
    /// cancelled or charged back): it leaves the chargeback index. No money moves.
    EscrowProjectSettled {
        project: Uuid,
    },
}

pub struct Wallet;

impl Wallet {
    fn apply(
        user: Uuid,
        currency: Currency,
        (available, pending): (i64, i64),
        escrow_project: Option<Uuid>,
        state: &WalletState,
    ) -> Result<Vec<WalletEvent>, Rejection> {
        if let Some(project) = escrow_project
            && available < 0
            && !state.escrow_projects.contains(&project)
            && state.escrow_projects.len() >= ESCROW_PROJECTS_MAX
        {
            return Err(Rejection::InvalidCommand(format!(
                "this wallet holds escrow in {ESCROW_PROJECTS_MAX} projects in {currency}: settle one before funding another"
            )));
        }
        let mut events = Vec::with_capacity(2);
        for (bucket, delta, balance) in [
            (Bucket::Available, available, state.available_minor),
            (Bucket::Pending, pending, state.pending_minor),
        ] {
            let after = balance.checked_add(delta).ok_or(Rejection::Overflow)?;
            if delta > 0 {
                super::require_within_ceiling("a wallet balance", i128::from(after), currency)?;
            }
            if after < 0 {
                let account = if bucket == Bucket::Available {
                    Account::UserAvailable { user }
                } else {
                    Account::UserPending { user }
                };
                return Err(Rejection::InsufficientFunds {
                    account: account.to_string(),
                    available: Money::from_minor(balance, currency).to_string(),
                    requested: Money::from_minor(-delta, currency).to_string(),
                });
            }
            let amount = Money::from_minor(delta.abs(), currency);
            match delta.signum() {
                1 => events.push(WalletEvent::Credited { bucket, amount }),
                -1 => events.push(WalletEvent::Debited {
                    bucket,
                    amount,
                    escrow_project,
                }),
                _ => {}
            }
        }
        Ok(events)
    }
}

impl Decider for Wallet {
    type Command = Ctx<WalletCommand>;
    type Event = WalletEvent;
    type State = WalletState;
    type Error = Rejection;

    fn decide(
        cmd: &Ctx<WalletCommand>,
        state: &WalletState,
    ) -> Result<Vec<WalletEvent>, Rejection> {
        match &cmd.body {
            WalletCommand::Apply {
                user,
                currency,
                available_delta,
                pending_delta,
                escrow_project,
            } => Wallet::apply(
                *user,
                *currency,
                (*available_delta, *pending_delta),
                *escrow_project,
                state,
            ),
            WalletCommand::MaturePending { user, amount } => {
                if !matches!(cmd.actor, Actor::System | Actor::Admin(_)) {
                    return Err(Rejection::not_party(
                        &cmd.actor,
                        "mature pending funds",
                        "only timers or operators",
                    ));
                }
                require_positive(*amount)?;
                if amount.minor() > state.pending_minor {
                    return Err(Rejection::InsufficientFunds {
                        account: Account::UserPending { user: *user }.to_string(),
                        available: Money::from_minor(state.pending_minor, amount.currency())
                            .to_string(),
                        requested: amount.to_string(),
                    });
                }
                super::require_within_ceiling(
                    "a wallet balance",
                    i128::from(state.available_minor) + i128::from(amount.minor()),
                    amount.currency(),
                )?;
                let entry = EntryBuilder::new(amount.currency())
                    .debit(Account::UserPending { user: *user }, *amount)
                    .credit(Account::UserAvailable { user: *user }, *amount)
                    .build(cmd.at, cmd.at)?;
                Ok(vec![WalletEvent::PendingMatured {
                    amount: *amount,
                    entry,
                }])
            }
        }
    }

    fn evolve(mut state: WalletState, event: &WalletEvent) -> WalletState {
        match event {
            WalletEvent::Credited { bucket, amount } => {
                let slot = match bucket {
                    Bucket::Available => &mut state.available_minor,
                    Bucket::Pending => &mut state.pending_minor,
                };
                *slot += amount.minor();
                #[cfg(test)]
                if crate::testing::planted_bug() {
                    // Planted bug (tests only): the credit is applied twice.
                    *slot += amount.minor();
                }
            }
            WalletEvent::Debited {
                bucket,
                amount,
                escrow_project,
            } => {
                match bucket {
                    Bucket::Available => state.available_minor -= amount.minor(),
                    Bucket::Pending => state.pending_minor -= amount.minor(),
                }
                // First funding first: funding another milestone of a project keeps its place (a lost
                // chargeback walks the index oldest first). The decider refuses a new project past the bound.
                if let Some(project) = escrow_project
                    && !state.escrow_projects.contains(project)
                {
                    state.escrow_projects.push(*project);
                }
            }
            WalletEvent::EscrowProjectSettled { project } => {
                state.escrow_projects.retain(|p| p != project);
            }
            WalletEvent::PendingMatured { amount, .. } => {
                state.pending_minor -= amount.minor();
                state.available_minor += amount.minor();
            }
        }
        state
    }
}
