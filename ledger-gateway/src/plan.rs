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

/// The dedupe key of a callback (see the module docs). Every identifier in it is bounded
/// ([`crate::bounded::key_part`]): a long one is hashed, so the key always fits the index.
pub fn dedupe_key(callback: &NormalizedCallback) -> String {
    use crate::bounded::key_part;
    let reference = match (payment_id(callback), &callback.reference) {
        // Tap's `hashstring` signs the charge, not the reference we gave it: a captured webhook re-posted
        // with another payment's reference still verifies. Keyed by the charge alone, one charge has one
        // money effect whichever payment a copy names.
        _ if !reference_is_signed(callback.gateway) => format!(
            "charge:{}",
            key_part(
                callback
                    .transaction_id
                    .as_deref()
                    .unwrap_or(&callback.event_id)
            )
        ),
        (Some(id), _) => id.to_string(),
        (None, Some(r)) => key_part(r).into_owned(),
        (None, None) => "-".to_string(),
    };
    let movement = || key_part(callback.transaction_id.as_deref().unwrap_or("-")).into_owned();
    let outcome = match callback.kind {
        Some(CallbackKind::DepositSucceeded) => format!(
            "deposit_succeeded:{}:{}",
            movement(),
            callback.amount.as_ref().map_or_else(
                || "-".to_string(),
                |a| a
                    .to_money()
                    .map_or_else(|_| key_part(&a.describe()).into_owned(), |m| m.to_string())
            )
        ),
        // A refund notice may name the deposit it refunds (Paystack): the gateway's refund id tells two
        // refunds of one deposit apart.
        Some(kind @ (CallbackKind::RefundProcessed | CallbackKind::RefundFailed))
            if callback.transaction_id.is_some() =>
        {
            format!("{}:{}", kind.as_str(), movement())
        }
        Some(kind) => kind.as_str().to_string(),
        None => format!("ignored:{}", key_part(&callback.event_id)),
    };
    match (&callback.dispute_id, callback.kind) {
        (Some(dispute), Some(k)) if k.as_str().starts_with("chargeback") => {
            format!(
                "callback:{}:{reference}:{outcome}:{}",
                callback.gateway,
                key_part(dispute)
            )
        }
        _ => format!("callback:{}:{reference}:{outcome}", callback.gateway),
    }
}

/// A refund notice whose reference names a deposit (Paystack's `refund.*` carry the refunded charge's
/// reference, our deposit id): the card refunds of that deposit, to load and pass to [`choose_refund`].
pub fn refunds_to_resolve(
    callback: &NormalizedCallback,
    named: Option<&PaymentState>,
) -> Option<Vec<Uuid>> {
    match (callback.kind, named) {
        (Some(CallbackKind::RefundProcessed | CallbackKind::RefundFailed), Some(p))
            if p.kind == Some(PaymentKind::Deposit) =>
        {
            Some(p.refunds.clone())
        }
        _ => None,
    }
}

/// The card refund a refund notice naming its deposit answers, among that deposit's refunds (oldest first):
/// the one whose gateway reference (recorded by the payout worker) is the notice's refund id; else the
/// oldest still in transit for the amount reported, else one of that amount already closed (a late or
/// repeated notice, which the core treats as such); without an amount, the only one in transit.
pub fn choose_refund<'a>(
    callback: &NormalizedCallback,
    refunds: &'a [PaymentState],
) -> Option<&'a PaymentState> {
    let in_transit =
        |p: &&PaymentState| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Processing);
    let ours = || {
        refunds.iter().filter(|p| {
            p.kind == Some(PaymentKind::CardRefund) && p.gateway == Some(callback.gateway)
        })
    };
    if let Some(by_id) = callback
        .transaction_id
        .as_deref()
        .and_then(|id| ours().find(|p| p.gateway_reference.as_deref() == Some(id)))
    {
        return Some(by_id);
    }
    let Some(Ok(m)) = callback.amount.as_ref().map(|a| a.to_money()) else {
        // Without an amount: the only one in transit.
        let mut open = ours().filter(in_transit);
        return match (open.next(), open.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
    };
    let same = |p: &&PaymentState| p.currency == Some(m.currency()) && p.amount_minor == m.minor();
    // In transit for that amount, one with no gateway id kept first (a kept id that differs may be the same
    // refund under another of the gateway's ids: its API's and its notices' need not agree).
    ours()
        .filter(same)
        .filter(in_transit)
        .min_by_key(|p| p.gateway_reference.is_some())
        // A notice without a refund id of its own: a late or repeated one for a closed refund.
        .or_else(|| {
            callback
                .transaction_id
                .is_none()
                .then(|| ours().rfind(same))
                .flatten()
        })
}

/// Whether the gateway's signature binds each value to its field's name (all but CMI's ver3 HASH, which signs
/// the values in name order: a renamed form stays valid, see `crate::cmi`). Where it does not, money comes in
/// only as the exact amount and currency of the deposit named, never into suspense.
pub fn values_bound_to_names(gateway: Gateway) -> bool {
    gateway != Gateway::Cmi
}

/// Whether the gateway's signature covers the payment reference a callback names (all but Tap's
/// `hashstring`, which covers the charge id, amount, currency, its own references, status and time).
pub fn reference_is_signed(gateway: Gateway) -> bool {
    gateway != Gateway::Tap
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
    if let Some(why) = &callback.hold {
        return match callback.kind {
            Some(kind) if kind.is_inbound() => suspense(callback, key, why),
            _ => outcome(key, Disposition::Anomaly, None, why.clone()),
        };
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
    if kind.is_inbound() && !values_bound_to_names(callback.gateway) {
        return unbound_deposit(callback, key, payment);
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
            let detail = if p.kind == Some(PaymentKind::Deposit)
                && expected_kind == PaymentKind::CardRefund
            {
                format!(
                    "{} of deposit {} matches no card refund the ledger requested of it (gateway refund {}, {})",
                    kind.as_str(),
                    p.id,
                    callback
                        .transaction_id
                        .as_deref()
                        .map_or("-".into(), |t| crate::bounded::key_part(t).into_owned()),
                    callback
                        .amount
                        .as_ref()
                        .map_or_else(|| "no amount".to_string(), |a| a.describe())
                )
            } else {
                format!(
                    "{} names a {:?} payment",
                    kind.as_str(),
                    p.kind.expect("exists")
                )
            };
            if kind.is_inbound() {
                suspense(callback, key, &detail)
            } else if kind == CallbackKind::RefundProcessed && p.kind == Some(PaymentKind::Deposit)
            {
                unrequested_refund(callback, key, p, detail)
            } else {
                outcome(key, Disposition::Anomaly, None, detail)
            }
        }
        Some(p) => apply(callback, key, p, kind, recover_from_user),
    }
}

/// A success from a gateway whose signature does not bind values to names (CMI): booked only as the exact
/// amount and currency of the deposit of that gateway its reference names (again when already completed: the
/// core makes that a no-op and the dedupe key answers it as the first delivery was answered). Anything else
/// is an anomaly with nothing booked: its figures may have been read under another field's name.
fn unbound_deposit(
    callback: &NormalizedCallback,
    key: String,
    payment: Option<&PaymentState>,
) -> Plan {
    let reported = callback.amount.as_ref().map(|a| a.to_money());
    let matches = |p: &&PaymentState| {
        p.gateway == Some(callback.gateway)
            && p.kind == Some(PaymentKind::Deposit)
            && matches!(&reported, Some(Ok(m)) if Some(m.currency()) == p.currency && m.minor() == p.amount_minor)
    };
    match (payment.filter(matches), &reported) {
        (Some(p), Some(Ok(amount))) => {
            let command = Command::ConfirmDeposit {
                payment_id: p.id,
                amount: *amount,
                gateway_fee: None,
                occurred_at: callback.occurred_at,
                fee_in_suspense: None,
            };
            let detail = format!("deposit_succeeded for payment {}", p.id);
            outcome(key, Disposition::Apply, Some(command), detail)
        }
        _ => {
            let detail = format!(
                "{} success for {} of {} does not match a {} deposit of exactly that amount: nothing booked (its signature does not bind values to field names)",
                callback.gateway,
                callback
                    .reference
                    .as_deref()
                    .map_or("-".into(), |r| crate::bounded::key_part(r).into_owned()),
                callback.amount.as_ref().map_or_else(
                    || "no amount".into(),
                    |a| crate::bounded::key_part(&a.describe()).into_owned()
                ),
                callback.gateway
            );
            outcome(key, Disposition::Anomaly, None, detail)
        }
    }
}

/// A refund the gateway made of deposit `p` that the ledger never requested (issued from its dashboard): a
/// recorded card refund of that deposit, from the payer's wallet when it still holds the money, else held in
/// suspense by the core (an anomaly either way is for the core to say: the wallet is its to read).
fn unrequested_refund(
    callback: &NormalizedCallback,
    key: String,
    p: &PaymentState,
    detail: String,
) -> Plan {
    let amount = match callback.amount.as_ref().map(|a| a.to_money()) {
        Some(Ok(m)) if Some(m.currency()) == p.currency && m.is_positive() => m,
        _ => {
            let why = format!("{detail}; no usable amount in the deposit's currency");
            return outcome(key, Disposition::Anomaly, None, why);
        }
    };
    let fees = fee_of(callback, p, Some(amount));
    // The refund records no fee held in suspense: a fee it cannot book is named, not posted.
    let note = match (fees.in_suspense, fees.note) {
        (Some(held), _) => Some(format!(
            "fee {} has more digits than {} allows: not booked",
            callback
                .fee
                .as_ref()
                .map_or_else(String::new, |f| f.describe()),
            held.currency()
        )),
        (None, note) => note,
    };
    let command = Command::RecordGatewayRefund {
        refund_id: derived("unrequested-refund", &key),
        deposit_id: p.id,
        amount,
        gateway_fee: fees.booked,
        occurred_at: callback.occurred_at,
        gateway_reference: callback
            .transaction_id
            .as_deref()
            .map(|t| crate::bounded::key_part(t).into_owned()),
    };
    let detail = format!("{detail}: recorded as a refund the gateway made");
    match note {
        Some(note) => outcome(
            key,
            Disposition::Anomaly,
            Some(command),
            format!("{detail}; {note}"),
        ),
        None => outcome(key, Disposition::Apply, Some(command), detail),
    }
}

/// The gateway paid the platform's bank: `RecordSettlement` on the bank account named after the gateway
/// (`Assets:Bank:<gateway>`), booked once per settlement id.
fn settlement(callback: &NormalizedCallback, key: String) -> Plan {
    let id =
        crate::bounded::key_part(callback.reference.as_deref().unwrap_or_default()).into_owned();
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
        // What reached the clearing account is what is held: the gross less a bookable fee (Fincra's net).
        Ok(m) => match callback.fee.as_ref().map(|f| f.to_money()) {
            Some(Ok(fee))
                if fee.currency() == m.currency()
                    && fee.is_positive()
                    && fee.minor() < m.minor() =>
            {
                let net = Money::from_minor(m.minor() - fee.minor(), m.currency());
                (
                    net,
                    format!("{why}: {m} less the gateway's fee {fee}: {net} held"),
                )
            }
            _ => (m, format!("{why}: {m}{}", undeducted(callback))),
        },
        Err(AmountProblem::NotRepresentable { held, reported }) => (
            held,
            format!(
                "{why}; reported {reported} is not representable: {held} held, the rest unposted{}",
                undeducted(callback)
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
        reference: callback
            .reference
            .as_deref()
            .map(|r| crate::bounded::key_part(r).into_owned())
            .unwrap_or_default(),
        reason: detail.clone(),
    };
    outcome(key, Disposition::Suspense, Some(command), detail)
}

/// What a reported fee becomes: booked to fees, or (more digits than the currency has) held in suspense at
/// the nearest representable amount with the rest named, never dropped.
#[derive(Debug, Default)]
struct FeeBooking {
    booked: Option<Money>,
    in_suspense: Option<Money>,
    /// Why part of the fee is not booked as reported (the delivery is then an anomaly).
    note: Option<String>,
}

/// The words for a reported fee that the amount held in suspense does not deduct (not in the amount's
/// currency, not representable, or not below the amount): named, so a person sees it.
fn undeducted(callback: &NormalizedCallback) -> String {
    let zero = |fee: &&crate::model::ReportedAmount| fee.to_money().is_ok_and(|f| f.is_zero());
    callback
        .fee
        .as_ref()
        .filter(|f| !zero(f))
        .map_or_else(String::new, |fee| {
            format!(
                " (the gateway's fee {} was not deducted: it cannot be booked as reported)",
                crate::bounded::key_part(&fee.describe())
            )
        })
}

fn fee_of(callback: &NormalizedCallback, payment: &PaymentState, cap: Option<Money>) -> FeeBooking {
    let Some(reported) = callback.fee.as_ref() else {
        return FeeBooking::default();
    };
    let fits = |fee: Money| {
        Some(fee.currency()) == payment.currency
            && fee.minor() >= 0
            && cap.is_none_or(|c| fee.currency() == c.currency() && fee.minor() <= c.minor())
    };
    let unbookable = |why: String| FeeBooking {
        note: Some(format!("fee {} not booked: {why}", reported.describe())),
        ..FeeBooking::default()
    };
    match reported.to_money() {
        Ok(fee) if fits(fee) => FeeBooking {
            booked: Some(fee),
            ..FeeBooking::default()
        },
        Ok(fee) => unbookable(format!(
            "not in the payment's currency, negative, or over the amount ({fee})"
        )),
        Err(AmountProblem::NotRepresentable { .. }) => match nearest(reported) {
            Some((near, exact)) if fits(near) => {
                let rest = exact - near.to_decimal();
                FeeBooking {
                    in_suspense: Some(near),
                    note: Some(format!(
                        "fee {} has more digits than {} allows: {near} held in Liabilities:Suspense for a person to book, the remainder {rest} {} not posted",
                        reported.describe(),
                        near.currency(),
                        near.currency()
                    )),
                    ..FeeBooking::default()
                }
            }
            _ => unbookable("more digits than its currency and no bookable nearest amount".into()),
        },
        Err(AmountProblem::UnknownCurrency(code)) => {
            unbookable(format!("unknown currency {code:?}"))
        }
        Err(AmountProblem::Invalid(e)) => unbookable(e),
    }
}

/// A reported amount rounded to its currency's exponent (half to even), as ledger money, with the exact
/// amount in major units.
fn nearest(reported: &crate::model::ReportedAmount) -> Option<(Money, rust_decimal::Decimal)> {
    let currency = reported.currency().ok()?;
    let exact = rust_decimal::Decimal::from_str_exact(reported.value.as_str()).ok()?;
    let major = match reported.unit {
        crate::model::AmountUnit::Major => exact,
        crate::model::AmountUnit::Minor => exact.checked_div(rust_decimal::Decimal::from(
            10_i64.pow(u32::from(currency.exponent())),
        ))?,
    };
    let rounded = major.round_dp_with_strategy(
        u32::from(currency.exponent()),
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    );
    Some((Money::from_decimal(rounded, currency).ok()?, major))
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
    let mut note = None;
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
            let fees = fee_of(callback, p, Some(amount));
            note = fees.note;
            Command::ConfirmDeposit {
                payment_id,
                amount,
                gateway_fee: fees.booked,
                fee_in_suspense: fees.in_suspense,
                occurred_at,
            }
        }
        K::DepositFailed => Command::FailDeposit { payment_id, reason },
        K::PayoutSucceeded | K::RefundProcessed => {
            if let Some(why) = transfer_mismatch(callback, p) {
                return outcome(key, Disposition::Anomaly, None, why);
            }
            let fees = fee_of(callback, p, None);
            note = fees.note;
            Command::ConfirmTransfer {
                payment_id,
                gateway_fee: fees.booked,
                occurred_at,
                fee_in_suspense: fees.in_suspense,
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
    let done = format!("{} for payment {payment_id}", kind.as_str());
    match note {
        // The movement is booked; the fee that could not be is for a person.
        Some(note) => outcome(
            key,
            Disposition::Anomaly,
            Some(command),
            format!("{done}; {note}"),
        ),
        None => outcome(key, Disposition::Apply, Some(command), done),
    }
}

/// Why a payout's or card refund's success cannot be booked as reported: another currency, or another amount
/// than the one sent (what reached the recipient must be what left the wallet).
fn transfer_mismatch(callback: &NormalizedCallback, p: &PaymentState) -> Option<String> {
    match callback.amount.as_ref().map(|a| a.to_money()) {
        Some(Ok(m)) if Some(m.currency()) != p.currency => {
            Some(format!("currency mismatch: reported {m}"))
        }
        Some(Ok(m)) if m.minor() != p.amount_minor => Some(format!(
            "amount mismatch: reported {m}, the {} is {}",
            if p.kind == Some(PaymentKind::CardRefund) {
                "card refund"
            } else {
                "payout"
            },
            Money::from_minor(p.amount_minor, m.currency())
        )),
        _ => None,
    }
}

/// The actor a verified callback acts as.
pub fn actor(gateway: Gateway) -> ledger_core::Actor {
    ledger_core::Actor::Gateway(gateway)
}
