//! Projects and their milestones: every command here acts on the one project stream it names.

use uuid::Uuid;

use super::super::deciders::project_cmd;
use super::super::view::policy_state;
use super::super::{Change, Command, CommandEnvelope, DecideError, StateView, StreamId};
use super::misrouted;
use crate::aggregates::project::{NewProject, ProjectCommand};

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
        other => project_body(other),
    };
    project_cmd(env, view, project_id, body)
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
