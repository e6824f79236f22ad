//! Routing: every command to its aggregate's decider, one function per family of commands, and the rules
//! that span streams beside their family (accepting a quote books its request, opening a booking creates
//! its project, opening a dispute marks its milestone, a lost chargeback takes escrow back).

mod back_office;
mod chargeback;
mod deadlines;
mod disputes;
mod escrow;
mod marketplace;
mod month_end;
mod payments;

pub use chargeback::{CHARGEBACK_ESCROW_SOURCES_MAX, CHARGEBACK_PROJECTS_MAX};
pub(super) use month_end::out_of_closed_periods;

use super::{Change, Command, CommandEnvelope, DecideError, StateView};

/// The events of a command's own aggregate(s), before the wallet guard.
pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    match &env.command {
        C::OpenServiceRequest { .. }
        | C::CancelServiceRequest { .. }
        | C::ExpireServiceRequest { .. }
        | C::CreateQuote { .. }
        | C::SendQuote { .. }
        | C::AcceptQuote { .. }
        | C::DeclineQuote { .. }
        | C::WithdrawQuote { .. }
        | C::ExpireQuote { .. } => marketplace::route_request_or_quote(env, view),
        C::OpenBooking { .. }
        | C::ConfirmBooking { .. }
        | C::StartBooking { .. }
        | C::DeliverBooking { .. }
        | C::AcceptBooking { .. }
        | C::AutoAcceptBooking { .. }
        | C::SettleBooking { .. }
        | C::MarkBookingDisputed { .. }
        | C::CancelBooking { .. }
        | C::ApplyBookingCancellation { .. } => marketplace::route_booking(env, view),
        C::CreateProject { .. }
        | C::SubmitProjectForAgreement { .. }
        | C::AgreeToProject { .. }
        | C::FundMilestone { .. }
        | C::SubmitMilestone { .. }
        | C::RequestChanges { .. }
        | C::ApproveMilestone { .. }
        | C::AutoApproveMilestone { .. }
        | C::ReleaseMilestone { .. }
        | C::RefundMilestone { .. }
        | C::CancelMilestone { .. }
        | C::CancelProject { .. }
        | C::CloseProject { .. }
        | C::ApplyResolution { .. }
        | C::ClearMilestoneDispute { .. } => escrow::route(env, view),
        C::MatureRelease {
            project_id,
            milestone,
        } => escrow::mature_release(env, view, *project_id, *milestone),
        C::InitiateDeposit { .. }
        | C::MarkPaymentProcessing { .. }
        | C::ConfirmDeposit { .. }
        | C::FailDeposit { .. }
        | C::CancelDeposit { .. }
        | C::ExpireDeposit { .. } => payments::route_deposit(env, view),
        C::RequestPayout { .. }
        | C::RequestCardRefund { .. }
        | C::RecordGatewayRefund { .. }
        | C::RecordGatewayReference { .. }
        | C::ConfirmTransfer { .. }
        | C::FailTransfer { .. }
        | C::CancelPayout { .. }
        | C::ReversePayout { .. } => payments::route_transfer(env, view),
        C::OpenChargeback { .. } | C::WinChargeback { .. } | C::LoseChargeback { .. } => {
            chargeback::route(env, view)
        }
        C::OpenDispute { .. }
        | C::AcceptDisputeProposal { .. }
        | C::ContestDispute { .. }
        | C::ResolveDispute { .. }
        | C::WithdrawDispute { .. }
        | C::TimeOutDispute { .. } => disputes::route(env, view),
        C::MaturePending { .. }
        | C::RecordSuspense { .. }
        | C::AssignSuspense { .. }
        | C::ReturnSuspense { .. }
        | C::SetFeePolicy { .. }
        | C::SetDeadlinePolicy { .. } => back_office::route(env, view),
        C::RecordSettlement { .. }
        | C::RecordReconciliation { .. }
        | C::ClosePeriods { .. }
        | C::ReopenPeriods { .. } => month_end::route(env, view),
        C::CloseDeadline { .. } => deadlines::close(env, view),
    }
}

/// A family's router was handed a command of another family: a bug in `route`.
fn misrouted(family: &str, command: &Command) -> ! {
    unreachable!("{command:?} routed to the {family} family")
}
