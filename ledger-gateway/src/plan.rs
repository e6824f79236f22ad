//! What the ledger does with one authentic callback, given the payment it names. Pure.
//!
//! - The dedupe key is per payment and outcome (`callback:{gateway}:{reference}:{kind}`); a deposit success
//!   adds the movement it reports (`:{transaction id}:{amount}`), so Stripe's `payment_intent.succeeded` and
//!   `charge.succeeded` for one payment intent collapse into one money effect, while a second, different
//!   success for the same deposit is never taken for a duplicate.
//! - A callback acts only on a payment of its own gateway: naming another gateway's payment, it is money with
//!   an unknown reference for its gateway (incoming: suspense on its clearing; outgoing: an anomaly), with the
//!   payment it pointed at named in the detail.
//! - A deposit already completed (or reversed) that is reported successful again by another movement is held
//!   in suspense (Dr Clearing, Cr Suspense) for a person to assign: never dropped, never credited twice.
//! - Money that came in and cannot be matched (unknown reference, currency mismatch, more digits than the
//!   currency has) becomes `RecordSuspense` with an id derived from the dedupe key: idempotent.
//! - Outgoing outcomes that cannot be matched, and reports without usable money, move nothing: they are
//!   recorded in the inbox as anomalies for a person.

use chrono::{DateTime, Utc};
use ledger_core::aggregates::payment::{PaymentKind, PaymentState, PaymentStatus};
use ledger_core::{Command, Gateway, Money};
use uuid::Uuid;

use crate::model::{AmountProblem, CallbackKind, NormalizedCallback};

/// Namespace of suspense and chargeback ids derived from callbacks.
pub const CALLBACK_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_3c2a_9b84_4e07_a5d2_18c7_e93b_40f6);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Run the command against the payment.
    Apply,
    /// Run the command: it records unmatched incoming money in `Liabilities:Suspense`.
    Suspense,
    /// Nothing to post; a person must look (unmatched outgoing outcome, no usable amount).
    Anomaly,
    /// An authentic event of a type the ledger does not handle.
    Ignored,
}

impl Disposition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Apply => "applied",
            Disposition::Suspense => "suspense",
            Disposition::Anomaly => "anomaly",
            Disposition::Ignored => "ignored",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub dedupe_key: String,
    pub disposition: Disposition,
    pub command: Option<Command>,
    pub detail: String,
}

/// The ledger payment id a callback names, if its reference is one.
pub fn payment_id(callback: &NormalizedCallback) -> Option<Uuid> {
    callback
        .reference
        .as_deref()
        .and_then(|r| Uuid::parse_str(r.trim()).ok())
}

/// The dedupe key of a callback (see the module docs).
pub fn dedupe_key(callback: &NormalizedCallback) -> String {
    let reference = match (payment_id(callback), &callback.reference) {
        (Some(id), _) => id.to_string(),
        (None, Some(r)) => r.clone(),
        (None, None) => "-".to_string(),
    };
    let outcome = match callback.kind {
        Some(CallbackKind::DepositSucceeded) => format!(
            "deposit_succeeded:{}:{}",
            callback.transaction_id.as_deref().unwrap_or("-"),
            callback.amount.as_ref().map_or_else(
                || "-".to_string(),
                |a| a
                    .to_money()
                    .map_or_else(|_| a.describe(), |m| m.to_string())
            )
        ),
        Some(kind) => kind.as_str().to_string(),
        None => format!("ignored:{}", callback.event_id),
    };
    match (&callback.dispute_id, callback.kind) {
        (Some(dispute), Some(k)) if k.as_str().starts_with("chargeback") => {
            format!(
                "callback:{}:{reference}:{outcome}:{dispute}",
                callback.gateway
            )
        }
        _ => format!("callback:{}:{reference}:{outcome}", callback.gateway),
    }
}

fn derived(purpose: &str, key: &str) -> Uuid {
    Uuid::new_v5(&CALLBACK_NAMESPACE, format!("{purpose}:{key}").as_bytes())
}

/// Decides what to do with `callback`; `payment` is the state of the stream its reference names (`None` when
/// the reference is not a payment id or the payment does not exist).
pub fn plan(
    callback: &NormalizedCallback,
    payment: Option<&PaymentState>,
    recover_from_user: bool,
) -> Plan {
    let key = dedupe_key(callback);
    let payment = payment.filter(|p| p.exists());
    if let Some(defect) = &callback.defect {
        return outcome(key, Disposition::Anomaly, None, defect.clone());
    }
    let Some(kind) = callback.kind else {
        return outcome(
            key,
            Disposition::Ignored,
            None,
            format!("event type {} is not handled", callback.event_type),
        );
    };
    if kind == CallbackKind::SettlementPaid {
        return settlement(callback, key);
    }
    let expected_kind = match kind {
        CallbackKind::DepositSucceeded
        | CallbackKind::DepositFailed
        | CallbackKind::ChargebackOpened
        | CallbackKind::ChargebackWon
        | CallbackKind::ChargebackLost => PaymentKind::Deposit,
        CallbackKind::RefundProcessed | CallbackKind::RefundFailed => PaymentKind::CardRefund,
        _ => PaymentKind::Payout,
    };
    match payment {
        None if kind.is_inbound() => suspense(callback, key, "unknown payment reference"),
        None => outcome(
            key,
            Disposition::Anomaly,
            None,
            format!("{} for an unknown payment reference", kind.as_str()),
        ),
        Some(p) if p.gateway != Some(callback.gateway) => {
            let detail = format!(
                "{} from {} names payment {} of gateway {}",
                kind.as_str(),
                callback.gateway,
                p.id,
                p.gateway.map_or_else(|| "-".to_string(), |g| g.to_string())
            );
            if kind.is_inbound() {
                suspense(callback, key, &detail)
            } else {
                outcome(key, Disposition::Anomaly, None, detail)
            }
        }
        Some(p)
            if kind == CallbackKind::DepositSucceeded
                && matches!(p.status, PaymentStatus::Completed | PaymentStatus::Reversed) =>
        {
            let detail = format!(
                "another success for deposit {} already completed (transaction {})",
                p.id,
                callback.transaction_id.as_deref().unwrap_or("-")
            );
            suspense(callback, key, &detail)
        }
        Some(p) if p.kind != Some(expected_kind) => {
            let detail = format!(
                "{} names a {:?} payment",
                kind.as_str(),
                p.kind.expect("exists")
            );
            if kind.is_inbound() {
                suspense(callback, key, &detail)
            } else {
                outcome(key, Disposition::Anomaly, None, detail)
            }
        }
        Some(p) => apply(callback, key, p, kind, recover_from_user),
    }
}

/// The gateway paid the platform's bank: `RecordSettlement` on the bank account named after the gateway
/// (`Assets:Bank:<gateway>`), booked once per settlement id.
fn settlement(callback: &NormalizedCallback, key: String) -> Plan {
    let id = callback.reference.clone().unwrap_or_default();
    let money = callback.amount.as_ref().map(|a| a.to_money());
    let (Some(Ok(amount)), Some(occurred_at)) = (money, callback.occurred_at) else {
        let detail = format!("settlement {id} without a usable amount or time");
        return outcome(key, Disposition::Anomaly, None, detail);
    };
    let bank_account = ledger_core::BankName::new(&callback.gateway.to_string())
        .expect("gateway names are valid bank account names");
    let command = Command::RecordSettlement {
        gateway: callback.gateway,
        settlement_id: id.clone(),
        bank_account,
        amount,
        fee: None,
        occurred_at,
    };
    let detail = format!("settlement {id} of {amount} to the platform's bank");
    outcome(key, Disposition::Apply, Some(command), detail)
}

fn outcome(
    key: String,
    disposition: Disposition,
    command: Option<Command>,
    detail: String,
) -> Plan {
    Plan {
        dedupe_key: key,
        disposition,
        command,
        detail,
    }
}

/// Incoming money that cannot be matched: Dr Clearing, Cr Suspense, with what was reported.
fn suspense(callback: &NormalizedCallback, key: String, why: &str) -> Plan {
    let Some(reported) = &callback.amount else {
        return outcome(
            key,
            Disposition::Anomaly,
            None,
            format!("{why}; no amount reported"),
        );
    };
    let (amount, detail) = match reported.to_money() {
        Ok(m) => (m, format!("{why}: {m}")),
        Err(AmountProblem::NotRepresentable { held, reported }) => (
            held,
            format!(
                "{why}; reported {reported} is not representable: {held} held, the rest unposted"
            ),
        ),
        Err(AmountProblem::UnknownCurrency(code)) => {
            return outcome(
                key,
                Disposition::Anomaly,
                None,
                format!("{why}; unknown currency {code:?}"),
            );
        }
        Err(AmountProblem::Invalid(e)) => {
            return outcome(key, Disposition::Anomaly, None, format!("{why}; {e}"));
        }
    };
    if !amount.is_positive() {
        return outcome(
            key,
            Disposition::Anomaly,
            None,
            format!("{why}; nothing positive to hold ({amount})"),
        );
    }
    let command = Command::RecordSuspense {
        suspense_id: derived("suspense", &key),
        gateway: callback.gateway,
        amount,
        reference: callback.reference.clone().unwrap_or_default(),
        reason: detail.clone(),
    };
    outcome(key, Disposition::Suspense, Some(command), detail)
}

fn fee_of(
    callback: &NormalizedCallback,
    payment: &PaymentState,
    cap: Option<Money>,
) -> Option<Money> {
    let fee = callback.fee.as_ref()?.to_money().ok()?;
    let fits = Some(fee.currency()) == payment.currency
        && fee.minor() >= 0
        && cap.is_none_or(|c| fee.currency() == c.currency() && fee.minor() <= c.minor());
    fits.then_some(fee)
}

fn apply(
    callback: &NormalizedCallback,
    key: String,
    p: &PaymentState,
    kind: CallbackKind,
    recover_from_user: bool,
) -> Plan {
    let payment_id = p.id;
    let occurred_at: Option<DateTime<Utc>> = callback.occurred_at;
    let reason = callback
        .reason
        .clone()
        .unwrap_or_else(|| callback.event_type.clone());
    let chargeback_id = derived(
        "chargeback",
        &format!(
            "{}:{}",
            callback.gateway,
            callback
                .dispute_id
                .as_deref()
                .unwrap_or(&payment_id.to_string())
        ),
    );
    use CallbackKind as K;
    let command = match kind {
        K::DepositSucceeded => {
            let amount = match callback.amount.as_ref().map(|a| a.to_money()) {
                Some(Ok(m)) if Some(m.currency()) == p.currency && m.is_positive() => m,
                Some(Ok(m)) if Some(m.currency()) != p.currency => {
                    return suspense(
                        callback,
                        key,
                        &format!(
                            "currency mismatch: payment in {:?}, reported {m}",
                            p.currency.map(|c| c.to_string())
                        ),
                    );
                }
                Some(Err(AmountProblem::NotRepresentable { .. })) => {
                    return suspense(callback, key, "amount not representable in its currency");
                }
                _ => {
                    return outcome(
                        key,
                        Disposition::Anomaly,
                        None,
                        "deposit success without a usable amount".into(),
                    );
                }
            };
            Command::ConfirmDeposit {
                payment_id,
                amount,
                gateway_fee: fee_of(callback, p, Some(amount)),
                occurred_at,
            }
        }
        K::DepositFailed => Command::FailDeposit { payment_id, reason },
        K::PayoutSucceeded | K::RefundProcessed => {
            if let Some(Ok(m)) = callback.amount.as_ref().map(|a| a.to_money())
                && Some(m.currency()) != p.currency
            {
                return outcome(
                    key,
                    Disposition::Anomaly,
                    None,
                    format!("currency mismatch: reported {m}"),
                );
            }
            Command::ConfirmTransfer {
                payment_id,
                gateway_fee: fee_of(callback, p, None),
                occurred_at,
            }
        }
        K::PayoutFailed | K::RefundFailed => Command::FailTransfer { payment_id, reason },
        K::PayoutReversed => Command::ReversePayout {
            payment_id,
            occurred_at,
        },
        K::ChargebackOpened => match callback.amount.as_ref().map(|a| a.to_money()) {
            Some(Ok(amount)) if Some(amount.currency()) == p.currency && amount.is_positive() => {
                Command::OpenChargeback {
                    payment_id,
                    chargeback_id,
                    amount,
                    fee: None,
                    occurred_at,
                }
            }
            _ => {
                return outcome(
                    key,
                    Disposition::Anomaly,
                    None,
                    "chargeback without a usable amount".into(),
                );
            }
        },
        K::ChargebackWon => Command::WinChargeback {
            payment_id,
            chargeback_id,
        },
        K::ChargebackLost => Command::LoseChargeback {
            payment_id,
            chargeback_id,
            recover_from_user,
        },
        K::SettlementPaid => return settlement(callback, key),
    };
    outcome(
        key,
        Disposition::Apply,
        Some(command),
        format!("{} for payment {payment_id}", kind.as_str()),
    )
}

/// The actor a verified callback acts as.
pub fn actor(gateway: Gateway) -> ledger_core::Actor {
    ledger_core::Actor::Gateway(gateway)
}
