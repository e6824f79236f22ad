//! One adapter per gateway: the documented payload into a [`NormalizedCallback`]. Pure; amounts stay exact.
//!
//! Where OUR payment reference (the ledger payment id the worker gave the gateway) is read from:
//! - Stripe: `data.object.metadata.payment_reference` (payment intents, charges, refunds, payouts, disputes);
//! - Paystack: `data.reference` (charges, transfers); `data.transaction_reference` (refunds: the refunded
//!   transaction); `data.transaction.reference` (disputes);
//! - Flutterwave: `data.tx_ref` (v3 charges), else `data.reference` (transfers, v4 payloads);
//! - Fincra: payouts `data.customerReference` ("the reference supplied by your application"); collections and
//!   charges `data.merchantReference`, else `data.reference` (the checkout's reference we passed), posting
//!   `amountReceived` (fee: `amountCharged - amountReceived` where both are given, else `fee`);
//! - normalized: `payment_reference`.
//!
//! Settlements (the gateway paying the platform's own bank): Stripe's `payout.paid` without our
//! `payment_reference` is one (`SettlementPaid`, named by the payout's `id`). Paystack's webhook events
//! ("Webhooks", <https://paystack.com/docs/payments/webhooks/>: charge, dispute, customer identification,
//! dedicated account, invoice, payment request, refund, subscription and transfer events) include no settlement
//! event, so its settlements come from its Settlements API through `escrow-ledger reconcile` and an operator's
//! `record_settlement`.
//!
//! Identifiers holding a NUL (which no text column can store) are escaped and the delivery is marked
//! `defect`: the plan makes it an anomaly rather than letting the database refuse it.

use std::collections::HashMap;

use ledger_core::Gateway;
use serde::Deserialize;
use serde_json::Value;

use crate::exact::{ExactDecimal, IdText};
use crate::model::{
    AmountUnit, CallbackKind, NormalizedCallback, NormalizedWire, ReportedAmount, from_rfc3339,
    from_unix,
};

/// Parses an (already authenticated) body of `gateway`. The error is a one-line reason (answered 422).
pub fn parse(gateway: Gateway, body: &[u8]) -> Result<NormalizedCallback, String> {
    let mut callback = match gateway {
        Gateway::Stripe => stripe(body),
        Gateway::Paystack => paystack(body),
        Gateway::Flutterwave => flutterwave(body),
        Gateway::Fincra => fincra(body),
        Gateway::Cmi => crate::cmi::parse(body),
        Gateway::Tap => crate::tap::parse(body),
        Gateway::Normalized => normalized(body),
    }?;
    mark_unstorable(&mut callback);
    for text in [
        Some(&callback.event_id),
        callback.reference.as_ref(),
        callback.dispute_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        // A long identifier is kept (raw, in the inbox) and hashed wherever it enters a key
        // (`crate::bounded`); only an empty one, which names nothing, is refused.
        if text.is_empty() {
            return Err("empty identifier".into());
        }
    }
    callback.raw_body = body.to_vec();
    Ok(callback)
}

/// Escapes NULs (`\\u0000` as text) in every text taken from the payload; a NUL in an identifier makes the
/// delivery a `defect` (its meaning is unclear), in free text (`reason`) it is only escaped.
fn mark_unstorable(c: &mut NormalizedCallback) {
    fn escape(text: &mut String) -> bool {
        let found = text.contains('\0');
        if found {
            *text = text.replace('\0', "\\u0000");
        }
        found
    }
    let mut fields = Vec::new();
    if escape(&mut c.event_id) {
        fields.push("event id");
    }
    if escape(&mut c.event_type) {
        fields.push("event type");
    }
    for (name, value) in [
        ("reference", &mut c.reference),
        ("transaction id", &mut c.transaction_id),
        ("dispute id", &mut c.dispute_id),
    ] {
        if value.as_mut().is_some_and(escape) {
            fields.push(name);
        }
    }
    if let Some(reason) = c.reason.as_mut() {
        escape(reason);
    }
    for amount in [c.amount.as_mut(), c.fee.as_mut()].into_iter().flatten() {
        if escape(&mut amount.currency_code) {
            fields.push("currency");
        }
    }
    if !fields.is_empty() {
        c.defect = Some(format!("NUL character in {}", fields.join(", ")));
    }
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

pub(crate) fn amount(
    value: Option<ExactDecimal>,
    unit: AmountUnit,
    currency: &Option<String>,
) -> Option<ReportedAmount> {
    match (value, currency) {
        (Some(value), Some(code)) => Some(ReportedAmount {
            value,
            unit,
            currency_code: code.to_ascii_uppercase(),
        }),
        _ => None,
    }
}

pub(crate) fn empty(gateway: Gateway, event_id: String, event_type: String) -> NormalizedCallback {
    NormalizedCallback {
        gateway,
        event_id,
        event_type,
        reference: None,
        transaction_id: None,
        kind: None,
        amount: None,
        fee: None,
        occurred_at: None,
        dispute_id: None,
        reason: None,
        raw_body: Vec::new(),
        defect: None,
        hold: None,
    }
}

#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: Option<i64>,
    data: StripeData,
}

#[derive(Deserialize)]
struct StripeData {
    object: StripeObject,
}

#[derive(Deserialize)]
struct StripeObject {
    id: Option<String>,
    amount: Option<ExactDecimal>,
    amount_received: Option<ExactDecimal>,
    amount_captured: Option<ExactDecimal>,
    currency: Option<String>,
    status: Option<String>,
    metadata: Option<HashMap<String, Value>>,
    /// On charges: the payment intent they belong to (an id, or the object when expanded).
    payment_intent: Option<Value>,
    failure_message: Option<String>,
    last_payment_error: Option<Value>,
    reason: Option<String>,
}

fn stripe(body: &[u8]) -> Result<NormalizedCallback, String> {
    let event: StripeEvent = json(body)?;
    let o = event.data.object;
    let mut c = empty(Gateway::Stripe, event.id, event.event_type.clone());
    c.occurred_at = event.created.and_then(from_unix);
    c.reference = o
        .metadata
        .as_ref()
        .and_then(|m| m.get("payment_reference"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let status = o.status.as_deref().unwrap_or("");
    use CallbackKind as K;
    let (kind, value) = match (event.event_type.as_str(), status) {
        ("payment_intent.succeeded", _) => {
            (Some(K::DepositSucceeded), o.amount_received.or(o.amount))
        }
        ("charge.succeeded", _) => (Some(K::DepositSucceeded), o.amount_captured.or(o.amount)),
        ("payment_intent.payment_failed" | "charge.failed", _) => {
            (Some(K::DepositFailed), o.amount)
        }
        ("refund.created" | "refund.updated", "succeeded") => (Some(K::RefundProcessed), o.amount),
        ("refund.failed", _) | ("refund.updated", "failed") => (Some(K::RefundFailed), o.amount),
        // A payout without our payment reference is Stripe paying the platform's own bank: a settlement,
        // named by the payout's id (`po_...`).
        ("payout.paid", _) if c.reference.is_none() => {
            c.reference = o.id.clone();
            (Some(K::SettlementPaid), o.amount)
        }
        ("payout.paid", _) => (Some(K::PayoutSucceeded), o.amount),
        ("payout.failed", _) => (Some(K::PayoutFailed), o.amount),
        ("charge.dispute.created", _) => (Some(K::ChargebackOpened), o.amount),
        ("charge.dispute.closed", "won") => (Some(K::ChargebackWon), o.amount),
        ("charge.dispute.closed", "lost") => (Some(K::ChargebackLost), o.amount),
        _ => (None, None),
    };
    c.kind = kind;
    c.amount = amount(value, AmountUnit::Minor, &o.currency);
    // One payment intent is one movement, whichever of its events (intent or charge) reports it.
    let intent = match &o.payment_intent {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(object)) => object
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        _ => None,
    };
    c.transaction_id = intent.or_else(|| o.id.clone());
    if event.event_type.starts_with("charge.dispute.") {
        c.dispute_id = o.id;
    }
    c.reason = o
        .failure_message
        .or_else(|| {
            o.last_payment_error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .or(o.reason);
    Ok(c)
}

#[derive(Deserialize)]
struct PaystackEvent {
    event: String,
    data: PaystackData,
}

#[derive(Deserialize)]
struct PaystackData {
    id: Option<IdText>,
    reference: Option<String>,
    transaction_reference: Option<String>,
    refund_reference: Option<String>,
    amount: Option<ExactDecimal>,
    refund_amount: Option<ExactDecimal>,
    currency: Option<String>,
    status: Option<String>,
    fees: Option<ExactDecimal>,
    fee_charged: Option<ExactDecimal>,
    paid_at: Option<String>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
    created_at: Option<String>,
    reason: Option<String>,
    gateway_response: Option<String>,
    resolution: Option<String>,
    transaction: Option<PaystackTransaction>,
}

#[derive(Deserialize)]
struct PaystackTransaction {
    reference: Option<String>,
}

fn paystack(body: &[u8]) -> Result<NormalizedCallback, String> {
    let event: PaystackEvent = json(body)?;
    let d = event.data;
    let status = d.status.clone().unwrap_or_default();
    // No envelope id (domain.md): the event type, the object id and its status identify one event.
    let object =
        d.id.as_ref()
            .map(|i| i.0.clone())
            .or_else(|| d.refund_reference.clone())
            .or_else(|| d.transaction_reference.clone())
            .ok_or("Paystack event without data.id")?;
    let mut c = empty(
        Gateway::Paystack,
        format!("{}:{object}:{status}", event.event),
        event.event.clone(),
    );
    c.occurred_at = [&d.paid_at, &d.updated_at, &d.created_at]
        .into_iter()
        .flatten()
        .find_map(|t| from_rfc3339(t));
    use CallbackKind as K;
    let (kind, reference, value, fee) = match event.event.as_str() {
        "charge.success" => (
            Some(K::DepositSucceeded),
            d.reference.clone(),
            d.amount,
            d.fees,
        ),
        "transfer.success" => (
            Some(K::PayoutSucceeded),
            d.reference.clone(),
            d.amount,
            d.fee_charged,
        ),
        "transfer.failed" => (Some(K::PayoutFailed), d.reference.clone(), d.amount, None),
        "transfer.reversed" => (Some(K::PayoutReversed), d.reference.clone(), d.amount, None),
        "refund.processed" => (
            Some(K::RefundProcessed),
            d.transaction_reference.clone(),
            d.amount,
            None,
        ),
        "refund.failed" => (
            Some(K::RefundFailed),
            d.transaction_reference.clone(),
            d.amount,
            None,
        ),
        "charge.dispute.create" | "charge.dispute.resolve" => {
            let reference = d.transaction.as_ref().and_then(|t| t.reference.clone());
            let kind = match (event.event.as_str(), d.resolution.as_deref()) {
                ("charge.dispute.create", _) => Some(K::ChargebackOpened),
                (_, Some("declined")) => Some(K::ChargebackWon),
                (_, Some(_)) => Some(K::ChargebackLost),
                _ => None,
            };
            c.dispute_id = d.id.as_ref().map(|i| i.0.clone());
            (kind, reference, d.refund_amount, None)
        }
        _ => (None, d.reference.clone(), None, None),
    };
    c.kind = kind;
    c.reference = reference;
    // A refund notice names the charge it refunds (`transaction_reference`, our deposit id); the refund
    // itself is `data.id`, else Paystack's `refund_reference`.
    c.transaction_id = match kind {
        Some(K::RefundProcessed | K::RefundFailed) => {
            d.id.as_ref()
                .map(|i| i.0.clone())
                .or(d.refund_reference.clone())
        }
        _ => d.id.as_ref().map(|i| i.0.clone()),
    };
    c.amount = amount(value, AmountUnit::Minor, &d.currency);
    c.fee = amount(fee, AmountUnit::Minor, &d.currency);
    c.reason = d.reason.or(d.gateway_response);
    Ok(c)
}

#[derive(Deserialize)]
struct FlutterwaveEvent {
    event: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    data: FlutterwaveData,
}

#[derive(Deserialize)]
struct FlutterwaveData {
    id: Option<IdText>,
    tx_ref: Option<String>,
    reference: Option<String>,
    amount: Option<ExactDecimal>,
    currency: Option<String>,
    status: Option<String>,
    app_fee: Option<ExactDecimal>,
    fee: Option<ExactDecimal>,
    created_at: Option<String>,
    /// v4: an RFC 3339 text or a number (Unix seconds, maybe with a fraction, or milliseconds when it is
    /// that large), read as its exact text.
    created_datetime: Option<Box<serde_json::value::RawValue>>,
    complete_message: Option<String>,
    processor_response: Option<Value>,
}

fn flutterwave(body: &[u8]) -> Result<NormalizedCallback, String> {
    let event: FlutterwaveEvent = json(body)?;
    let name = event
        .event
        .or(event.event_type)
        .ok_or("Flutterwave event without event/type")?;
    let d = event.data;
    let status = d.status.clone().unwrap_or_default().to_ascii_lowercase();
    let id =
        d.id.as_ref()
            .map(|i| i.0.clone())
            .ok_or("Flutterwave event without data.id")?;
    let mut c = empty(
        Gateway::Flutterwave,
        format!("{name}:{id}:{status}"),
        name.clone(),
    );
    c.occurred_at = d
        .created_at
        .as_deref()
        .and_then(from_rfc3339)
        .or_else(|| d.created_datetime.as_deref().and_then(time_value));
    c.reference = d.tx_ref.clone().or(d.reference.clone());
    c.transaction_id = Some(id.clone());
    use CallbackKind as K;
    let success = matches!(status.as_str(), "successful" | "succeeded" | "success");
    let failed = matches!(status.as_str(), "failed" | "failure");
    c.kind = match name.as_str() {
        "charge.completed" if success => Some(K::DepositSucceeded),
        "charge.completed" | "charge.failed" if failed => Some(K::DepositFailed),
        "transfer.completed" if success => Some(K::PayoutSucceeded),
        "transfer.completed" | "transfer.failed" if failed => Some(K::PayoutFailed),
        "refund.completed" if success || status.is_empty() => Some(K::RefundProcessed),
        "refund.failed" => Some(K::RefundFailed),
        _ => None,
    };
    c.amount = amount(d.amount, AmountUnit::Major, &d.currency);
    c.fee = amount(d.app_fee.or(d.fee), AmountUnit::Major, &d.currency);
    c.reason = d.complete_message.or_else(|| {
        d.processor_response
            .as_ref()
            .and_then(|p| p.as_str().map(str::to_string))
    });
    Ok(c)
}

/// A time as text (RFC 3339) or as a number of Unix seconds (with a fraction: `1735116842.116`) or
/// milliseconds, read from the number's exact text (never through `f64`).
fn time_value(value: &serde_json::value::RawValue) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = value.get();
    if text.starts_with('"') {
        return from_rfc3339(&serde_json::from_str::<String>(text).ok()?);
    }
    epoch_text(text)
}

/// Unix seconds (optionally with up to 9 fraction digits), or milliseconds when larger than any second count
/// up to the year 5138, exactly.
pub(crate) fn epoch_text(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    /// Above this many seconds (year 5138) a number is taken as milliseconds.
    const SECONDS_MAX: i64 = 100_000_000_000;
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = whole.parse().ok()?;
    if n.abs() > SECONDS_MAX {
        return if fraction.trim_end_matches('0').is_empty() {
            chrono::DateTime::from_timestamp_millis(n)
        } else {
            None
        };
    }
    let nanos: u32 = format!("{fraction:0<9}").parse().ok()?;
    if n < 0 && nanos > 0 {
        return None;
    }
    chrono::DateTime::from_timestamp(n, nanos)
}

#[derive(Deserialize)]
struct FincraEvent {
    event: String,
    data: FincraData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FincraData {
    id: Option<IdText>,
    session_id: Option<String>,
    customer_reference: Option<String>,
    merchant_reference: Option<String>,
    reference: Option<String>,
    amount_charged: Option<ExactDecimal>,
    amount_received: Option<ExactDecimal>,
    amount_to_settle: Option<ExactDecimal>,
    amount: Option<ExactDecimal>,
    source_amount: Option<ExactDecimal>,
    destination_amount: Option<ExactDecimal>,
    fee: Option<ExactDecimal>,
    source_currency: Option<String>,
    destination_currency: Option<String>,
    currency: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    updated_at: Option<String>,
    created_at: Option<String>,
}

/// Fincra: what the customer paid (gross), what Fincra settles to us (net), and the fee between them.
///
/// Collections (`collection.successful`: `sourceAmount`/`destinationAmount` paid, `amountReceived` net of
/// `fee`) and checkout charges (`charge.successful`: `amount` paid, `amountToSettle` net, `amountReceived`
/// the amount paid): gross = `amountCharged`, else `destinationAmount`, else `amount`, else `sourceAmount`;
/// net = `amountToSettle`, else `amountReceived`; fee = gross - net. A stated `fee` that disagrees holds the
/// net in suspense ([`NormalizedCallback::hold`]). Dedupe on Fincra's own ids: `data.id`, else `sessionId`
/// (bank collections), else the digest of the exact body (so a different collection is never a duplicate).
/// Payouts: `amountReceived` is what the recipient got (it must equal our payout), `amountCharged -
/// amountReceived` Fincra's fee (same currency); a stated `fee` that disagrees makes it an anomaly. Across
/// currencies (`sourceCurrency` other than `destinationCurrency`): `amountCharged - fee`, in the source
/// currency, is what left (it must equal our payout), `fee` the fee.
fn fincra(body: &[u8]) -> Result<NormalizedCallback, String> {
    let event: FincraEvent = json(body)?;
    let d = event.data;
    let status = d.status.clone().unwrap_or_default();
    let movement =
        d.id.as_ref()
            .map(|i| i.0.clone())
            .or_else(|| d.session_id.clone().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("body-sha256:{}", crate::bounded::digest_hex(body)));
    let mut c = empty(
        Gateway::Fincra,
        format!("{}:{movement}:{status}", event.event),
        event.event.clone(),
    );
    c.occurred_at = [&d.updated_at, &d.created_at]
        .into_iter()
        .flatten()
        .find_map(|t| from_rfc3339(t));
    c.transaction_id = Some(movement);
    let inbound = matches!(
        event.event.as_str(),
        "charge.successful" | "collection.successful" | "charge.failed" | "collection.failed"
    );
    if inbound {
        fincra_collection(&mut c, event.event.as_str(), d);
    } else {
        fincra_payout(&mut c, event.event.as_str(), d);
    }
    Ok(c)
}

/// A collection or checkout charge: gross, net and fee (see [`fincra`]), against the reference we gave.
fn fincra_collection(c: &mut NormalizedCallback, event: &str, d: FincraData) {
    c.reference = d.merchant_reference.clone().or(d.reference.clone());
    c.kind = Some(if event.ends_with(".successful") {
        CallbackKind::DepositSucceeded
    } else {
        CallbackKind::DepositFailed
    });
    c.reason = d.reason.clone();
    let currency = d
        .currency
        .clone()
        .or(d.destination_currency.clone())
        .or(d.source_currency.clone());
    let gross = d
        .amount_charged
        .clone()
        .or(d.destination_amount.clone())
        .or(d.amount.clone())
        .or(d.source_amount.clone());
    let net = d.amount_to_settle.clone().or(d.amount_received.clone());
    let Some(gross) = gross.or(net.clone()) else {
        return;
    };
    let computed = net.as_ref().map(|n| difference(&gross, n));
    match (computed, &d.fee) {
        // Received more than was paid, or a stated fee other than paid less received: hold what Fincra
        // settles, and say why.
        (Some(None), _) => {
            c.hold = Some(format!(
                "Fincra reports {} received of {} paid",
                text(&net),
                gross.as_str()
            ));
            c.amount = amount(net, AmountUnit::Major, &currency);
        }
        (Some(Some(fee)), Some(stated)) if !same_decimal(&fee, stated) => {
            c.hold = Some(format!(
                "Fincra's stated fee {} disagrees with {} paid less {} received ({})",
                stated.as_str(),
                gross.as_str(),
                text(&net),
                fee.as_str()
            ));
            c.amount = amount(net, AmountUnit::Major, &currency);
        }
        (Some(Some(fee)), _) => {
            c.amount = amount(Some(gross), AmountUnit::Major, &currency);
            c.fee = amount(Some(fee), AmountUnit::Major, &currency);
        }
        (None, stated) => {
            c.amount = amount(Some(gross), AmountUnit::Major, &currency);
            c.fee = amount(stated.clone(), AmountUnit::Major, &currency);
        }
    }
}

/// A payout: what the recipient received, and Fincra's fee (see [`fincra`]).
fn fincra_payout(c: &mut NormalizedCallback, event: &str, d: FincraData) {
    use CallbackKind as K;
    // `reference` on a payout is Fincra's own; ours is `customerReference`.
    c.reference = d.customer_reference.clone();
    c.kind = match event {
        "payout.successful" => Some(K::PayoutSucceeded),
        "payout.failed" => Some(K::PayoutFailed),
        _ => None,
    };
    c.reason = d.reason.clone();
    let received_in = d
        .destination_currency
        .clone()
        .or(d.currency.clone())
        .or(d.source_currency.clone());
    let charged_in = d
        .source_currency
        .clone()
        .or(d.currency.clone())
        .or(d.destination_currency.clone());
    let received = d.amount_received.clone().or(d.amount.clone());
    c.amount = amount(received.clone(), AmountUnit::Major, &received_in);
    if c.kind != Some(K::PayoutSucceeded) {
        return;
    }
    let same_currency =
        matches!((&received_in, &charged_in), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
    let computed = match (&d.amount_charged, &received) {
        (Some(charged), Some(received)) if same_currency => Some(difference(charged, received)),
        _ => None,
    };
    match (computed, &d.fee) {
        (Some(None), _) => {
            c.defect = Some(format!(
                "Fincra reports {} charged for {} received",
                text(&d.amount_charged),
                text(&received)
            ))
        }
        (Some(Some(fee)), Some(stated)) if !same_decimal(&fee, stated) => {
            c.defect = Some(format!(
                "Fincra's stated fee {} disagrees with {} charged less {} received ({})",
                stated.as_str(),
                text(&d.amount_charged),
                text(&received),
                fee.as_str()
            ))
        }
        (Some(Some(fee)), _) => c.fee = amount(Some(fee), AmountUnit::Major, &charged_in),
        // Another currency reached the recipient (NGN sent, GBP received): what left in the payout's
        // currency is what was charged less the fee, both in the source currency.
        (None, stated) if !same_currency => {
            let fee = stated.clone();
            let sent = match (&d.amount_charged, &fee) {
                (Some(charged), Some(fee)) => difference(charged, fee),
                (Some(charged), None) => Some(charged.clone()),
                _ => None,
            };
            c.amount = amount(sent, AmountUnit::Major, &charged_in);
            c.fee = amount(fee, AmountUnit::Major, &charged_in);
        }
        (None, stated) => c.fee = amount(stated.clone(), AmountUnit::Major, &charged_in),
    }
}

fn text(value: &Option<ExactDecimal>) -> &str {
    value.as_ref().map_or("-", |v| v.as_str())
}

fn same_decimal(a: &ExactDecimal, b: &ExactDecimal) -> bool {
    let parse = |x: &ExactDecimal| rust_decimal::Decimal::from_str_exact(x.as_str()).ok();
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

/// `a - b` exactly, when not negative.
fn difference(a: &ExactDecimal, b: &ExactDecimal) -> Option<ExactDecimal> {
    let a = rust_decimal::Decimal::from_str_exact(a.as_str()).ok()?;
    let b = rust_decimal::Decimal::from_str_exact(b.as_str()).ok()?;
    let d = a.checked_sub(b)?;
    if d.is_sign_negative() {
        return None;
    }
    ExactDecimal::parse_text(&d.to_string()).ok()
}

fn normalized(body: &[u8]) -> Result<NormalizedCallback, String> {
    let wire: NormalizedWire = json(body)?;
    let kind = CallbackKind::from_name(&wire.kind)
        .ok_or_else(|| format!("unknown kind {:?}", wire.kind))?;
    let transaction_id = wire
        .transaction_id
        .clone()
        .unwrap_or_else(|| wire.event_id.clone());
    let mut c = empty(Gateway::Normalized, wire.event_id, wire.kind.clone());
    c.kind = Some(kind);
    c.transaction_id = Some(transaction_id);
    c.reference = Some(wire.payment_reference);
    c.amount = amount(wire.amount, AmountUnit::Major, &wire.currency);
    c.fee = amount(wire.fee, AmountUnit::Major, &wire.currency);
    c.occurred_at = wire.occurred_at;
    c.dispute_id = wire.dispute_id;
    c.reason = wire.reason;
    Ok(c)
}
