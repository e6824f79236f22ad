//! Chargebacks on a deposit: opened, won, lost. A lost one takes, in domain.md's order, the buyer's wallet,
//! then escrow still held for that buyer (mirrored into each project it took from), then a receivable or a
//! loss.

use uuid::Uuid;

use super::super::deciders::{payment_cmd, wrap};
use super::super::overlay::Overlay;
use super::super::view::{payment_state, project_state, wallet_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::Ctx;
use crate::aggregates::payment::{EscrowSource, EscrowTaken, PaymentCommand, PaymentEvent};
use crate::aggregates::project::{Project, ProjectCommand};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, MilestoneNo};
use crate::money::{Currency, Money};

pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    match &env.command {
        Command::OpenChargeback {
            payment_id,
            chargeback_id,
            amount,
            fee,
            occurred_at,
        } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::OpenChargeback {
                chargeback_id: *chargeback_id,
                amount: *amount,
                fee: fee.unwrap_or(Money::zero(amount.currency())),
                occurred_at: occurred_at.unwrap_or(env.at),
            },
        ),
        Command::WinChargeback {
            payment_id,
            chargeback_id,
        } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::WinChargeback {
                chargeback_id: *chargeback_id,
            },
        ),
        Command::LoseChargeback {
            payment_id,
            chargeback_id,
            recover_from_user,
        } => lose_chargeback(env, view, *payment_id, *chargeback_id, *recover_from_user),
        other => misrouted("chargeback", other),
    }
}

fn lose_chargeback(
    env: &CommandEnvelope,
    view: &dyn StateView,
    payment_id: Uuid,
    chargeback_id: Uuid,
    recover_from_user: bool,
) -> Result<Vec<Change>, DecideError> {
    let p = payment_state(view, StreamId::Payment(payment_id))?;
    let currency = p.currency.ok_or(Rejection::NotFound {
        aggregate: "payment",
        id: payment_id.to_string(),
    })?;
    let wallet = wallet_state(
        view,
        StreamId::Wallet {
            user: p.user,
            currency,
        },
    )?;
    // What the wallet does not cover is looked for in escrow (a chargeback not open is refused below).
    let amount_minor = p
        .chargebacks
        .iter()
        .find(|c| c.id == chargeback_id)
        .map_or(0, |c| c.amount_minor);
    let needed_minor = amount_minor - wallet.available_minor.clamp(0, amount_minor);
    let escrow_sources = escrow_sources(
        view,
        p.user,
        currency,
        &wallet.escrow_projects,
        needed_minor,
    )?;
    let mut changes = payment_cmd(
        env,
        view,
        payment_id,
        PaymentCommand::LoseChargeback {
            chargeback_id,
            recover_from_user,
            buyer_available_minor: wallet.available_minor,
            escrow_sources,
        },
    )?;
    charge_back_projects(env, view, &mut changes)?;
    Ok(changes)
}

/// Bound on the milestones a lost chargeback may take escrow from (each adds two postings to its entry:
/// 24 sources and the wallet, receivable, loss and chargeback postings stay within
/// `journal::POSTINGS_PER_ENTRY_MAX`).
pub const CHARGEBACK_ESCROW_SOURCES_MAX: usize = 24;
const _: () =
    assert!(2 * CHARGEBACK_ESCROW_SOURCES_MAX + 4 <= crate::journal::POSTINGS_PER_ENTRY_MAX);

/// Bound on the projects a lost chargeback loads to find escrow still held for the buyer: the oldest ones in
/// the buyer wallet's index of projects holding its escrow (`WalletState::escrow_projects`, first funding
/// first, settled projects removed). Each is one stream to load, so the command's work is bounded however
/// many projects a buyer funded, and projects funded later can never hide the escrow that an older deposit
/// funded. What the wallet and these projects do not cover becomes a receivable or a loss, in domain.md's
/// order; an operator can refund or resolve further milestones and recover from the wallet.
pub const CHARGEBACK_PROJECTS_MAX: usize = 8;

/// The open escrow a user funded as buyer, oldest project first, until `needed_minor` is covered, within
/// `CHARGEBACK_PROJECTS_MAX` projects and `CHARGEBACK_ESCROW_SOURCES_MAX` milestones.
fn escrow_sources(
    view: &dyn StateView,
    user: Uuid,
    currency: Currency,
    projects: &[Uuid],
    needed_minor: i64,
) -> Result<Vec<EscrowSource>, DecideError> {
    let mut sources = Vec::new();
    let mut covered = 0_i64;
    for project_id in projects.iter().take(CHARGEBACK_PROJECTS_MAX) {
        if covered >= needed_minor || sources.len() == CHARGEBACK_ESCROW_SOURCES_MAX {
            break;
        }
        let p = project_state(view, StreamId::Project(*project_id))?;
        if p.buyer != user || p.currency != Some(currency) {
            continue;
        }
        for (i, m) in p.milestones.iter().enumerate() {
            if m.status.is_held_open()
                && m.held_minor() > 0
                && covered < needed_minor
                && sources.len() < CHARGEBACK_ESCROW_SOURCES_MAX
            {
                covered = covered.saturating_add(m.held_minor() + m.buyer_fee_minor);
                sources.push(EscrowSource {
                    project_id: *project_id,
                    milestone: (i + 1) as MilestoneNo,
                    held_minor: m.held_minor(),
                    buyer_fee_minor: m.buyer_fee_minor,
                });
            }
        }
    }
    Ok(sources)
}

/// Mirrors a lost chargeback's escrow postings into each project it took from.
fn charge_back_projects(
    env: &CommandEnvelope,
    view: &dyn StateView,
    changes: &mut Vec<Change>,
) -> Result<(), DecideError> {
    let taken: Vec<(EscrowTaken, Uuid)> = changes
        .iter()
        .filter_map(|c| match &c.event {
            Event::Payment(PaymentEvent::ChargebackLost {
                from_escrow,
                chargeback_id,
                ..
            }) => Some(
                from_escrow
                    .iter()
                    .map(|t| (*t, *chargeback_id))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    let mut overlay = Overlay::new(view);
    for (t, chargeback_id) in taken {
        let stream = StreamId::Project(t.project_id);
        let body = ProjectCommand::ChargeBack {
            milestone: t.milestone,
            escrow: t.escrow,
            buyer_fee: t.buyer_fee,
            chargeback_id,
        };
        let cmd = Ctx {
            actor: Actor::System,
            at: env.at,
            body,
        };
        let events = Project::decide(&cmd, project_state(&overlay, stream)?)?;
        let new = wrap(stream, events, Event::Project);
        new.iter().for_each(|c| overlay.apply(c));
        changes.extend(new);
    }
    Ok(())
}
