//! Payments: deposits (a series of attempts), payouts and card refunds (transfers). A deposit may be
//! earmarked only for a milestone its payer is the buyer of.

use chrono::Duration;
use uuid::Uuid;

use super::super::deciders::payment_cmd;
use super::super::view::{payment_state, policy_state, project_state, wallet_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::payment::{FundTarget, PaymentCommand, PaymentEvent};
use crate::error::Rejection;
use crate::ids::Gateway;
use crate::money::Money;

pub(super) fn route_deposit(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    use PaymentCommand as P;
    let (payment_id, body) = match &env.command {
        C::InitiateDeposit {
            payment_id,
            amount,
            gateway,
            fund,
        } => {
            if let Some(target) = fund {
                check_fund_target(env, view, target)?;
            }
            let policy = policy_state(view, StreamId::LedgerPolicy)?.deadline_policy();
            let hours = policy.deposit_expiry_hours.default;
            let body = P::InitiateDeposit {
                payment_id: *payment_id,
                amount: *amount,
                gateway: *gateway,
                fund: *fund,
                expires_at: Some(env.at + Duration::hours(i64::from(hours))),
            };
            (payment_id, body)
        }
        C::MarkPaymentProcessing { payment_id } => (payment_id, P::MarkProcessing),
        C::ConfirmDeposit {
            payment_id,
            amount,
            gateway_fee,
            occurred_at,
            fee_in_suspense,
        } => {
            let body = P::DepositSucceeded {
                amount: *amount,
                gateway_fee: gateway_fee.unwrap_or(Money::zero(amount.currency())),
                fee_in_suspense: fee_in_suspense.unwrap_or(Money::zero(amount.currency())),
                occurred_at: occurred_at.unwrap_or(env.at),
            };
            (payment_id, body)
        }
        C::FailDeposit { payment_id, reason } => (
            payment_id,
            P::DepositFailed {
                reason: reason.clone(),
            },
        ),
        C::CancelDeposit { payment_id } => (payment_id, P::CancelDeposit),
        C::ExpireDeposit { payment_id } => (payment_id, P::ExpireDeposit),
        other => misrouted("deposit", other),
    };
    payment_cmd(env, view, *payment_id, body)
}

pub(super) fn route_transfer(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    use PaymentCommand as P;
    let (payment_id, body) = match &env.command {
        C::RequestPayout {
            payout_id,
            amount,
            fee,
            gateway,
        } => {
            let fee = policy_state(view, StreamId::LedgerPolicy)?.payout_fee(*amount, *fee)?;
            let body = P::RequestPayout {
                payout_id: *payout_id,
                amount: *amount,
                fee,
                gateway: *gateway,
            };
            (payout_id, body)
        }
        C::RequestCardRefund {
            refund_id,
            deposit_id,
            amount,
            gateway,
        } => return request_card_refund(env, view, *refund_id, *deposit_id, *amount, *gateway),
        C::RecordGatewayRefund {
            refund_id,
            deposit_id,
            amount,
            gateway_fee,
            occurred_at,
            gateway_reference,
        } => {
            let reported = Reported {
                amount: *amount,
                gateway_fee: *gateway_fee,
                occurred_at: occurred_at.unwrap_or(env.at),
                reference: gateway_reference.clone(),
            };
            return record_gateway_refund(env, view, *refund_id, *deposit_id, reported);
        }
        C::RecordGatewayReference {
            payment_id,
            gateway_reference,
        } => (
            payment_id,
            P::RecordReference {
                reference: gateway_reference.clone(),
            },
        ),
        C::ConfirmTransfer {
            payment_id,
            gateway_fee,
            occurred_at,
            fee_in_suspense,
        } => {
            let currency = payment_currency(view, *payment_id)?;
            let body = P::Succeeded {
                gateway_fee: gateway_fee.unwrap_or(Money::zero(currency)),
                fee_in_suspense: fee_in_suspense.unwrap_or(Money::zero(currency)),
                occurred_at: occurred_at.unwrap_or(env.at),
            };
            (payment_id, body)
        }
        C::FailTransfer { payment_id, reason } => {
            let body = P::Failed {
                reason: reason.clone(),
            };
            let mut changes = payment_cmd(env, view, *payment_id, body)?;
            release_refund(env, view, *payment_id, &mut changes)?;
            return Ok(changes);
        }
        C::CancelPayout { payment_id } => {
            let mut changes = payment_cmd(env, view, *payment_id, P::CancelPayout)?;
            release_refund(env, view, *payment_id, &mut changes)?;
            return Ok(changes);
        }
        C::ReversePayout {
            payment_id,
            occurred_at,
        } => (
            payment_id,
            P::PayoutReversed {
                occurred_at: occurred_at.unwrap_or(env.at),
            },
        ),
        other => misrouted("transfer", other),
    };
    payment_cmd(env, view, *payment_id, body)
}

/// A card refund reserves its amount on the deposit it names, then takes it out of the payer's wallet.
fn request_card_refund(
    env: &CommandEnvelope,
    view: &dyn StateView,
    refund_id: Uuid,
    deposit_id: Uuid,
    amount: Money,
    gateway: Gateway,
) -> Result<Vec<Change>, DecideError> {
    let reserve = PaymentCommand::ReserveRefund {
        refund_id,
        amount,
        gateway,
    };
    let body = PaymentCommand::RequestCardRefund {
        refund_id,
        amount,
        gateway,
        deposit_id,
    };
    if deposit_id == refund_id {
        return Err(Rejection::InvalidCommand(
            "a card refund's id must differ from its deposit's".into(),
        )
        .into());
    }
    let deposit = payment_state(view, StreamId::Payment(deposit_id))?;
    if !deposit.exists() {
        return Err(Rejection::NotFound {
            aggregate: "deposit",
            id: deposit_id.to_string(),
        }
        .into());
    }
    let mut changes = payment_cmd(env, view, deposit_id, reserve)?;
    changes.extend(payment_cmd(env, view, refund_id, body)?);
    Ok(changes)
}

/// What a gateway reported of a refund it made unasked.
struct Reported {
    amount: Money,
    gateway_fee: Option<Money>,
    occurred_at: chrono::DateTime<chrono::Utc>,
    reference: Option<String>,
}

/// A refund the deposit's gateway made unasked: reserved on the deposit like any card refund of it, then
/// recorded from the payer's wallet when it still holds the money; else (the wallet does not hold it, or the
/// deposit cannot take it: not completed, more than it may still give back, too many refunds) the money that
/// left is held in suspense, an anomaly, never refused (it left the clearing account all the same).
fn record_gateway_refund(
    env: &CommandEnvelope,
    view: &dyn StateView,
    refund_id: Uuid,
    deposit_id: Uuid,
    reported: Reported,
) -> Result<Vec<Change>, DecideError> {
    if deposit_id == refund_id {
        return Err(Rejection::InvalidCommand(
            "a card refund's id must differ from its deposit's".into(),
        )
        .into());
    }
    let deposit = payment_state(view, StreamId::Payment(deposit_id))?;
    let (Some(gateway), Some(currency)) = (deposit.gateway, deposit.currency) else {
        return Err(Rejection::NotFound {
            aggregate: "deposit",
            id: deposit_id.to_string(),
        }
        .into());
    };
    let wallet = wallet_state(
        view,
        StreamId::Wallet {
            user: deposit.user,
            currency,
        },
    )?;
    let takes = deposit.status == crate::aggregates::payment::PaymentStatus::Completed
        && reported.amount.currency() == currency
        && reported.amount.minor() <= deposit.refundable_minor()
        && deposit.refunds.len() < crate::aggregates::payment::REFUNDS_PER_DEPOSIT_MAX;
    let record = PaymentCommand::RecordRefund {
        refund_id,
        deposit_id,
        user: deposit.user,
        amount: reported.amount,
        gateway,
        gateway_fee: reported.gateway_fee.unwrap_or(Money::zero(currency)),
        occurred_at: reported.occurred_at,
        from_wallet: takes && wallet.available_minor >= reported.amount.minor(),
        reference: reported.reference,
    };
    let mut changes = Vec::new();
    if takes {
        let reserve = PaymentCommand::ReserveRefund {
            refund_id,
            amount: reported.amount,
            gateway,
        };
        changes.extend(payment_cmd(env, view, deposit_id, reserve)?);
    }
    changes.extend(payment_cmd(env, view, refund_id, record)?);
    Ok(changes)
}

/// A failed or cancelled card refund gives its deposit's reservation back (the money returned to the
/// wallet), so the deposit may be refunded again.
fn release_refund(
    env: &CommandEnvelope,
    view: &dyn StateView,
    refund_id: Uuid,
    changes: &mut Vec<Change>,
) -> Result<(), DecideError> {
    let failed = changes.iter().any(|c| {
        matches!(
            c.event,
            Event::Payment(
                PaymentEvent::CardRefundFailed { .. } | PaymentEvent::PayoutCancelled { .. }
            )
        )
    });
    let refund = payment_state(view, StreamId::Payment(refund_id))?;
    let (true, Some(deposit_id)) = (failed, refund.refund_of) else {
        return Ok(());
    };
    let body = PaymentCommand::ReleaseRefund {
        refund_id,
        amount: Money::from_minor(refund.amount_minor, payment_currency(view, refund_id)?),
    };
    let process = CommandEnvelope {
        actor: crate::ids::Actor::System,
        ..env.clone()
    };
    changes.extend(payment_cmd(&process, view, deposit_id, body)?);
    Ok(())
}

/// The currency of an existing payment (not found otherwise).
pub(super) fn payment_currency(
    view: &dyn StateView,
    payment_id: Uuid,
) -> Result<crate::money::Currency, DecideError> {
    let p = payment_state(view, StreamId::Payment(payment_id))?;
    Ok(p.currency.ok_or(Rejection::NotFound {
        aggregate: "payment",
        id: payment_id.to_string(),
    })?)
}

/// A deposit may only be earmarked for a milestone its payer is the buyer of: otherwise confirming it would
/// spend the buyer's wallet on the payer's say-so.
fn check_fund_target(
    env: &CommandEnvelope,
    view: &dyn StateView,
    target: &FundTarget,
) -> Result<(), DecideError> {
    let p = project_state(view, StreamId::Project(target.project_id))?;
    if !p.exists() {
        return Err(Rejection::NotFound {
            aggregate: "project",
            id: target.project_id.to_string(),
        }
        .into());
    }
    p.milestone(target.milestone)?;
    if !env.actor.is(p.buyer) {
        return Err(Rejection::not_party(
            &env.actor,
            "earmark a deposit for a milestone",
            "only its buyer",
        )
        .into());
    }
    Ok(())
}
