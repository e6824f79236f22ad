//! What operators and the platform do outside the marketplace flow: maturing a seller's pending money,
//! suspense (money that matched nothing), and the ledger's fee policy.

use super::super::deciders::{ctx, decide_on, suspense_cmd, wrap};
use super::super::view::{policy_state, wallet_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::ledger_policy::{FeeSchedule, LedgerPolicy, LedgerPolicyCommand};
use crate::aggregates::suspense::SuspenseCommand;
use crate::aggregates::wallet::{Wallet, WalletCommand};
use crate::decider::Decider;

pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    match &env.command {
        C::MaturePending { user, amount } => {
            let stream = StreamId::Wallet {
                user: *user,
                currency: amount.currency(),
            };
            let body = WalletCommand::MaturePending {
                user: *user,
                amount: *amount,
            };
            let events = Wallet::decide(&ctx(env, body), wallet_state(view, stream)?)?;
            Ok(wrap(stream, events, Event::Wallet))
        }
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
        } => {
            let schedule = FeeSchedule {
                commission: *commission,
                buyer_fee: *buyer_fee,
                payout_fee: *payout_fee,
                overrides_allowed: *overrides_allowed,
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
