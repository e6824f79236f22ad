//! The wallet guard: for every journal entry a command produced, the postings to
//! `Liabilities:Users:<u>:{Available, Pending}` are netted per wallet and passed through the wallet decider,
//! which refuses to go below zero and appends a mirror event to the wallet's stream.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::deciders::wrap;
use super::view::wallet_state;
use super::{AggState, Change, CommandEnvelope, DecideError, Event, StateView, StreamId};
use crate::aggregates::Ctx;
use crate::aggregates::project::{Project, ProjectEvent, ProjectState};
use crate::aggregates::wallet::{Wallet, WalletCommand, WalletEvent};
use crate::decider::Decider;
use crate::ids::Actor;
use crate::journal::Account;
use crate::money::Currency;

/// Nets every entry's postings to user wallets and passes them through each wallet's guard.
pub(super) fn guard_wallets(
    env: &CommandEnvelope,
    view: &dyn StateView,
    changes: &mut Vec<Change>,
) -> Result<(), DecideError> {
    let mut deltas: BTreeMap<(Uuid, Currency), (i64, i64)> = BTreeMap::new();
    let mut escrow_of: BTreeMap<(Uuid, Currency), Uuid> = BTreeMap::new();
    for change in changes
        .iter()
        .filter(|c| !matches!(c.stream, StreamId::Wallet { .. }))
    {
        let Some(entry) = change.event.entry() else {
            continue;
        };
        // Funding: the wallet remembers the project its money went into (a lost chargeback looks there).
        if let Event::Project(ProjectEvent::MilestoneFunded { .. }) = &change.event
            && let Some(AggState::Project(ProjectState { id, buyer, .. })) =
                view.state(&change.stream)
        {
            escrow_of.insert((*buyer, entry.currency()), *id);
        }
        for p in entry.postings() {
            let Some(user) = p.account.wallet_owner() else {
                continue;
            };
            let signed = if p.side == p.account.normal_side() {
                p.amount.minor()
            } else {
                -p.amount.minor()
            };
            let slot = deltas.entry((user, entry.currency())).or_insert((0, 0));
            match p.account {
                Account::UserAvailable { .. } => slot.0 += signed,
                _ => slot.1 += signed,
            }
        }
    }
    for ((user, currency), (available_delta, pending_delta)) in deltas {
        let stream = StreamId::Wallet { user, currency };
        let state = wallet_state(view, stream)?;
        let cmd = Ctx {
            actor: Actor::System,
            at: env.at,
            body: WalletCommand::Apply {
                user,
                currency,
                available_delta,
                pending_delta,
                escrow_project: escrow_of.get(&(user, currency)).copied(),
            },
        };
        let events = Wallet::decide(&cmd, state)?;
        changes.extend(wrap(stream, events, Event::Wallet));
    }
    Ok(())
}

/// Keeps each buyer's chargeback index exact: a project whose held escrow this decision takes to zero
/// leaves its buyer wallet's `escrow_projects` (`EscrowProjectSettled`, no money), so the index holds only
/// projects still holding escrow and a lost chargeback walks it oldest first without stale entries.
pub(super) fn track_settled_escrow(
    view: &dyn StateView,
    changes: &mut Vec<Change>,
) -> Result<(), DecideError> {
    let mut after: BTreeMap<StreamId, ProjectState> = BTreeMap::new();
    for change in changes.iter() {
        let (StreamId::Project(_), Event::Project(e)) = (&change.stream, &change.event) else {
            continue;
        };
        let state = match after.remove(&change.stream) {
            Some(s) => s,
            None => match view.state(&change.stream) {
                Some(AggState::Project(p)) => p.clone(),
                _ => continue,
            },
        };
        after.insert(change.stream, Project::evolve(state, e));
    }
    for (stream, now) in after {
        let Some(AggState::Project(before)) = view.state(&stream) else {
            continue;
        };
        if before.held_minor() == 0 || now.held_minor() != 0 || !before.exists() {
            continue;
        }
        let wallet = StreamId::Wallet {
            user: before.buyer,
            currency: before.currency(),
        };
        wallet_state(view, wallet)?;
        changes.extend(wrap(
            wallet,
            vec![WalletEvent::EscrowProjectSettled { project: before.id }],
            Event::Wallet,
        ));
    }
    Ok(())
}
