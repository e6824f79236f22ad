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
    let escrow_sources = escrow_sources(view, p.user, currency, &wallet.escrow_projects)?;
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

/// Bound on the milestones a lost chargeback may take escrow from (each adds two postings to its entry).
pub const CHARGEBACK_ESCROW_SOURCES_MAX: usize = 6;

/// Bound on the projects a lost chargeback looks into for escrow still held for the buyer: the newest ones
/// the buyer's wallet remembers funding (`WalletState::escrow_projects`). Each is one stream to load, so this
/// keeps the command's work bounded however many projects a buyer ever funded; escrow held in older projects
/// is not clawed back, and what the wallet and these projects do not cover becomes a receivable or a loss,
/// in domain.md's order. An operator can still refund or resolve an older milestone first.
pub const CHARGEBACK_PROJECTS_MAX: usize = 8;

/// The open escrow a user funded as buyer in the newest `CHARGEBACK_PROJECTS_MAX` projects the wallet
/// remembers, oldest of those first, within `CHARGEBACK_ESCROW_SOURCES_MAX` milestones.
fn escrow_sources(
    view: &dyn StateView,
    user: Uuid,
    currency: Currency,
    projects: &[Uuid],
) -> Result<Vec<EscrowSource>, DecideError> {
    let newest = &projects[projects.len().saturating_sub(CHARGEBACK_PROJECTS_MAX)..];
    let mut sources = Vec::new();
    for project_id in newest {
        let p = project_state(view, StreamId::Project(*project_id))?;
        if p.buyer != user || p.currency != Some(currency) {
            continue;
        }
        for (i, m) in p.milestones.iter().enumerate() {
            if m.status.is_held_open()
                && m.held_minor() > 0
                && sources.len() < CHARGEBACK_ESCROW_SOURCES_MAX
            {
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
