//! What operators and the platform do outside the marketplace flow: maturing a seller's pending money,
//! suspense (money that matched nothing), and the ledger's fee policy.

use super::super::deciders::{decide_on, suspense_cmd};
use super::super::view::policy_state;
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::ledger_policy::{FeeSchedule, LedgerPolicy, LedgerPolicyCommand};
use crate::aggregates::suspense::SuspenseCommand;
use crate::error::Rejection;

pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    match &env.command {
        // Pending money has no due time of its own: each release's proceeds mature when that release's
        // maturation is due (`mature_release`, sent by the timer). An amount matured on anyone's say-so
        // would skip the hold the policy promises, so the old wallet-wide command is refused for everyone.
        C::MaturePending { .. } => Err(Rejection::InvalidCommand(
            "mature_pending is retired: each release's proceeds mature when due (the timer sends \
             mature_release for the project's milestone)"
                .into(),
        )
        .into()),
        C::RecordSuspense {
            suspense_id,
            gateway,
            amount,
            reference,
            reason,
        } => suspense_cmd(
            env,
            view,
            *suspense_id,
            SuspenseCommand::Record {
                suspense_id: *suspense_id,
                gateway: *gateway,
                amount: *amount,
                reference: reference.clone(),
                reason: reason.clone(),
            },
        ),
        C::AssignSuspense { suspense_id, user } => suspense_cmd(
            env,
            view,
            *suspense_id,
            SuspenseCommand::AssignToWallet { user: *user },
        ),
        C::ReturnSuspense { suspense_id } => {
            suspense_cmd(env, view, *suspense_id, SuspenseCommand::ReturnToSender)
        }
        C::SetFeePolicy {
            commission,
            buyer_fee,
            payout_fee,
            overrides_allowed,
            payout_fee_min,
        } => {
            let schedule = FeeSchedule {
                commission: *commission,
                buyer_fee: *buyer_fee,
                payout_fee: *payout_fee,
                overrides_allowed: *overrides_allowed,
                payout_fee_min: payout_fee_min.clone(),
            };
            let stream = StreamId::LedgerPolicy;
            decide_on::<LedgerPolicy, _>(
                env,
                policy_state(view, stream)?,
                stream,
                LedgerPolicyCommand::SetFees(schedule),
                Event::LedgerPolicy,
            )
        }
        C::SetDeadlinePolicy { deadlines } => {
            let stream = StreamId::LedgerPolicy;
            decide_on::<LedgerPolicy, _>(
                env,
                policy_state(view, stream)?,
                stream,
                LedgerPolicyCommand::SetDeadlines(*deadlines),
                Event::LedgerPolicy,
            )
        }
        other => misrouted("back-office", other),
    }
}
