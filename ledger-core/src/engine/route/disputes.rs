//! Disputes: opening one marks its milestone disputed in the same append (the project decider checks the
//! milestone is disputable; actor rights were checked by the dispute).

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::super::deciders::{dispute_cmd, wrap};
use super::super::view::{policy_state, project_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::Ctx;
use crate::aggregates::dispute::{DisputeCommand, DisputedMilestone};
use crate::aggregates::project::{Project, ProjectCommand};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, MilestoneNo};
use crate::money::Money;

pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    use DisputeCommand as D;
    let (dispute_id, body) = match &env.command {
        C::OpenDispute {
            dispute_id,
            project_id,
            milestone,
            reason,
            proposed_release,
            respond_by,
        } => {
            return open_dispute(
                env,
                view,
                *dispute_id,
                *project_id,
                *milestone,
                reason,
                *proposed_release,
                *respond_by,
            );
        }
        C::AcceptDisputeProposal { dispute_id } => (dispute_id, D::AcceptProposal),
        C::ContestDispute { dispute_id } => (dispute_id, D::Contest),
        C::ResolveDispute {
            dispute_id,
            release,
        } => (dispute_id, D::Resolve { release: *release }),
        C::WithdrawDispute { dispute_id } => (dispute_id, D::Withdraw),
        C::TimeOutDispute { dispute_id } => (dispute_id, D::TimeOut),
        other => misrouted("dispute", other),
    };
    dispute_cmd(env, view, *dispute_id, body)
}

#[allow(clippy::too_many_arguments)]
fn open_dispute(
    env: &CommandEnvelope,
    view: &dyn StateView,
    dispute_id: Uuid,
    project_id: Uuid,
    milestone: MilestoneNo,
    reason: &str,
    proposed_release: Money,
    respond_by: DateTime<Utc>,
) -> Result<Vec<Change>, DecideError> {
    // With no answer, a dispute times out by `respond_by`, at most the policy's duration after it opens and
    // never before the policy's minimum answer window: a past or imminent `respond_by` would let the opener
    // manufacture the other side's silence.
    let policy = policy_state(view, StreamId::LedgerPolicy)?.deadline_policy();
    let earliest = env.at + Duration::hours(i64::from(policy.dispute_answer_window_hours()));
    if respond_by < earliest {
        return Err(Rejection::DeadlineTooSoon {
            what: "respond_by",
            stated: respond_by.to_rfc3339(),
            earliest: earliest.to_rfc3339(),
        }
        .into());
    }
    let latest = env.at + Duration::hours(i64::from(policy.dispute_response_hours.default));
    let respond_by = respond_by.min(latest);
    let p = project_state(view, StreamId::Project(project_id))?;
    if !p.exists() {
        return Err(Rejection::NotFound {
            aggregate: "project",
            id: project_id.to_string(),
        }
        .into());
    }
    let m = p.milestone(milestone)?;
    let target = DisputedMilestone {
        project_id,
        milestone,
        buyer: p.buyer,
        seller: p.seller,
        held: Money::from_minor(m.held_minor(), p.currency()),
    };
    let mut changes = dispute_cmd(
        env,
        view,
        dispute_id,
        DisputeCommand::Open {
            dispute_id,
            target,
            reason: reason.to_string(),
            proposed_release,
            respond_by,
        },
    )?;
    // The project decider checks the milestone is disputable; actor rights were checked by the dispute.
    let mark = Ctx {
        actor: Actor::System,
        at: env.at,
        body: ProjectCommand::MarkDisputed {
            milestone,
            dispute_id,
        },
    };
    let events = Project::decide(&mark, p)?;
    changes.extend(wrap(StreamId::Project(project_id), events, Event::Project));
    Ok(changes)
}
