//! Projects and their milestones: every command here acts on the one project stream it names.

use uuid::Uuid;

use chrono::Duration;

use super::super::deciders::{ctx, project_cmd, wrap};
use super::super::view::{booking_state, dispute_state, policy_state, project_state, wallet_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::booking::BookingStatus;
use crate::aggregates::dispute::{DisputeState, DisputeStatus};
use crate::aggregates::project::{MilestoneStatus, NewProject, ProjectCommand, ProjectEvent};
use crate::aggregates::wallet::{Wallet, WalletCommand};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::MilestoneNo;

pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    let (project_id, body) = match &env.command {
        Command::CreateProject {
            project_id,
            buyer,
            seller,
            currency,
            milestones,
            fees,
        } => {
            let fees = policy_state(view, StreamId::LedgerPolicy)?.resolve_terms(fees)?;
            let project = NewProject {
                project_id: *project_id,
                buyer: *buyer,
                seller: *seller,
                currency: *currency,
                milestones: milestones.clone(),
                fees,
            };
            (*project_id, ProjectCommand::Create(project))
        }
        other => {
            check_process_step(env, view, other)?;
            project_body(other)
        }
    };
    let mut changes = project_cmd(env, view, project_id, body)?;
    stamp_maturity(env, view, &mut changes)?;
    Ok(changes)
}

/// The steps only a process may take on a milestone, checked against the stream whose end they react to:
/// clearing a dispute needs that dispute withdrawn, a disputed milestone's resolution needs its dispute
/// settled with the same split, and a booking's milestone is auto-approved only once its booking was
/// auto-accepted (on the booking's clock). Whoever sends them, they cannot run ahead of their cause.
fn check_process_step(
    env: &CommandEnvelope,
    view: &dyn StateView,
    command: &Command,
) -> Result<(), DecideError> {
    match *command {
        Command::ClearMilestoneDispute {
            project_id,
            milestone,
            dispute_id,
        } => {
            let d = dispute_of(view, dispute_id, project_id, milestone)?;
            if d.status != DisputeStatus::Withdrawn {
                return Err(
                    Rejection::transition("dispute", d.status, "clear its milestone").into(),
                );
            }
            Ok(())
        }
        Command::ApplyResolution {
            project_id,
            milestone,
            release,
            refund,
            cause,
        } => {
            let p = project_state(view, StreamId::Project(project_id))?;
            let disputed = p.exists()
                && p.milestone(milestone)
                    .is_ok_and(|m| m.status == MilestoneStatus::Disputed);
            if !disputed {
                return Ok(());
            }
            let d = dispute_of(view, cause, project_id, milestone)?;
            let settled = matches!(
                d.status,
                DisputeStatus::Accepted | DisputeStatus::Resolved | DisputeStatus::TimedOut
            );
            let split = d.settled_split();
            if !settled || split != Some((release.minor(), refund.minor())) {
                return Err(Rejection::not_party(
                    &env.actor,
                    "resolve a disputed milestone",
                    "only its dispute's own settlement, with the split it settled on",
                )
                .into());
            }
            Ok(())
        }
        Command::AutoApproveMilestone { project_id, .. } => {
            let p = project_state(view, StreamId::Project(project_id))?;
            let Some(booking_id) = p.booking else {
                return Ok(());
            };
            let b = booking_state(view, StreamId::Booking(booking_id))?;
            match (b.status, b.delivered_at) {
                (BookingStatus::AutoAccepted, _) => Ok(()),
                (BookingStatus::Delivered, Some(delivered)) => Err(Rejection::TooEarly {
                    what: "a booking's auto-approval (its auto-acceptance)",
                    due: (delivered + b.auto_accept_after()).to_rfc3339(),
                }
                .into()),
                (status, _) => Err(Rejection::transition("booking", status, "auto-approve").into()),
            }
        }
        _ => Ok(()),
    }
}

/// The dispute `dispute_id`, which must be about this milestone.
fn dispute_of(
    view: &dyn StateView,
    dispute_id: Uuid,
    project_id: Uuid,
    milestone: MilestoneNo,
) -> Result<&DisputeState, DecideError> {
    let d = dispute_state(view, StreamId::Dispute(dispute_id))?;
    if d.status == DisputeStatus::None || d.project_id != project_id || d.milestone != milestone {
        return Err(Rejection::NotFound {
            aggregate: "dispute of this milestone",
            id: dispute_id.to_string(),
        }
        .into());
    }
    Ok(d)
}

/// A release or resolution that credits the seller's pending balance carries when those proceeds mature:
/// its time plus the policy's maturation.
pub(super) fn stamp_maturity(
    env: &CommandEnvelope,
    view: &dyn StateView,
    changes: &mut [Change],
) -> Result<(), DecideError> {
    for change in changes.iter_mut() {
        let (StreamId::Project(id), Event::Project(event)) = (&change.stream, &mut change.event)
        else {
            continue;
        };
        let matures_at = match event {
            ProjectEvent::MilestoneReleased {
                seller_bucket_pending: true,
                matures_at,
                ..
            } => matures_at,
            ProjectEvent::MilestoneResolved {
                released,
                matures_at,
                ..
            } if released.is_positive()
                && project_state(view, StreamId::Project(*id))?
                    .fees
                    .release_to_pending =>
            {
                matures_at
            }
            _ => continue,
        };
        let policy = policy_state(view, StreamId::LedgerPolicy)?.deadline_policy();
        let hours = policy.pending_maturity_hours.default;
        *matures_at = Some(env.at + Duration::hours(i64::from(hours)));
    }
    Ok(())
}

/// The timer: a release's pending proceeds mature, at most what the seller's pending balance holds; the
/// project records it (once) and the wallet moves the money.
pub(super) fn mature_release(
    env: &CommandEnvelope,
    view: &dyn StateView,
    project_id: Uuid,
    milestone: MilestoneNo,
) -> Result<Vec<Change>, DecideError> {
    let p = project_state(view, StreamId::Project(project_id))?;
    if !p.exists() {
        return Err(Rejection::NotFound {
            aggregate: "project",
            id: project_id.to_string(),
        }
        .into());
    }
    let wallet = StreamId::Wallet {
        user: p.seller,
        currency: p.currency(),
    };
    let body = ProjectCommand::MatureProceeds {
        milestone,
        wallet_pending_minor: wallet_state(view, wallet)?.pending_minor,
    };
    let mut changes = project_cmd(env, view, project_id, body)?;
    let amount = changes.iter().find_map(|c| match &c.event {
        Event::Project(ProjectEvent::MilestoneProceedsMatured { amount, .. }) => Some(*amount),
        _ => None,
    });
    let amount = amount.expect("an accepted maturation names its amount");
    let body = WalletCommand::MaturePending {
        user: p.seller,
        amount,
    };
    let events = Wallet::decide(&ctx(env, body), wallet_state(view, wallet)?)?;
    changes.extend(wrap(wallet, events, Event::Wallet));
    Ok(changes)
}

/// The project command a command other than `CreateProject` carries, with its project.
fn project_body(command: &Command) -> (Uuid, ProjectCommand) {
    use Command as C;
    use ProjectCommand as P;
    match *command {
        C::SubmitProjectForAgreement { project_id } => (project_id, P::SubmitForAgreement),
        C::AgreeToProject { project_id } => (project_id, P::Agree),
        C::FundMilestone {
            project_id,
            milestone,
        } => (project_id, P::Fund { milestone }),
        C::SubmitMilestone {
            project_id,
            milestone,
        } => (project_id, P::Submit { milestone }),
        C::RequestChanges {
            project_id,
            milestone,
        } => (project_id, P::RequestChanges { milestone }),
        C::ApproveMilestone {
            project_id,
            milestone,
        } => (project_id, P::Approve { milestone }),
        C::AutoApproveMilestone {
            project_id,
            milestone,
        } => (project_id, P::AutoApprove { milestone }),
        C::ReleaseMilestone {
            project_id,
            milestone,
        } => (project_id, P::Release { milestone }),
        C::RefundMilestone {
            project_id,
            milestone,
        } => (project_id, P::Refund { milestone }),
        C::CancelMilestone {
            project_id,
            milestone,
        } => (project_id, P::CancelMilestone { milestone }),
        C::CancelProject { project_id } => (project_id, P::Cancel),
        C::CloseProject { project_id } => (project_id, P::Close),
        C::ApplyResolution {
            project_id,
            milestone,
            release,
            refund,
            cause,
        } => (
            project_id,
            P::Resolve {
                milestone,
                release,
                refund,
                cause,
            },
        ),
        C::ClearMilestoneDispute {
            project_id,
            milestone,
            dispute_id,
        } => (
            project_id,
            P::WithdrawDispute {
                milestone,
                dispute_id,
            },
        ),
        ref other => misrouted("project", other),
    }
}
