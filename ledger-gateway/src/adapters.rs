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

use crate::IDENTIFIER_BYTES_MAX;
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
        if text.is_empty() || text.len() > IDENTIFIER_BYTES_MAX {
            return Err(format!(
                "identifier of {} bytes (1..={IDENTIFIER_BYTES_MAX} allowed)",
                text.len()
            ));
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
    c.transaction_id = d.id.as_ref().map(|i| i.0.clone());
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
    /// v4: an RFC 3339 text or a number (Unix seconds, or milliseconds when it is that large).
    created_datetime: Option<Value>,
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
        .or_else(|| d.created_datetime.as_ref().and_then(time_value));
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

/// A time as text (RFC 3339) or as a number of Unix seconds or milliseconds.
fn time_value(value: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    /// Above this many seconds (year 5138) a number is taken as milliseconds.
    const SECONDS_MAX: i64 = 100_000_000_000;
    match value {
        Value::String(text) => from_rfc3339(text),
        Value::Number(n) => {
            let n = n.as_i64()?;
            if n.abs() > SECONDS_MAX {
                chrono::DateTime::from_timestamp_millis(n)
            } else {
                from_unix(n)
            }
        }
        _ => None,
    }
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
    customer_reference: Option<String>,
    merchant_reference: Option<String>,
    reference: Option<String>,
    amount_charged: Option<ExactDecimal>,
    amount_received: Option<ExactDecimal>,
    amount: Option<ExactDecimal>,
    source_amount: Option<ExactDecimal>,
    fee: Option<ExactDecimal>,
    source_currency: Option<String>,
    destination_currency: Option<String>,
    currency: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    updated_at: Option<String>,
    created_at: Option<String>,
}

fn fincra(body: &[u8]) -> Result<NormalizedCallback, String> {
    let event: FincraEvent = json(body)?;
    let d = event.data;
    let status = d.status.clone().unwrap_or_default();
    let object =
        d.id.as_ref()
            .map(|i| i.0.clone())
            .or_else(|| d.reference.clone())
            .ok_or("Fincra event without data.id")?;
    let mut c = empty(
        Gateway::Fincra,
        format!("{}:{object}:{status}", event.event),
        event.event.clone(),
    );
    c.occurred_at = [&d.updated_at, &d.created_at]
        .into_iter()
        .flatten()
        .find_map(|t| from_rfc3339(t));
    c.transaction_id = d.id.as_ref().map(|i| i.0.clone());
    use CallbackKind as K;
    let inbound = matches!(
        event.event.as_str(),
        "charge.successful" | "collection.successful" | "charge.failed" | "collection.failed"
    );
    if inbound {
        fincra_collection(&mut c, event.event.as_str(), d);
        return Ok(c);
    }
    c.reference = d.customer_reference.clone();
    let currency = d.source_currency.clone().or(d.currency.clone());
    let (kind, value) = match event.event.as_str() {
        "payout.successful" => (Some(K::PayoutSucceeded), d.amount_charged),
        "payout.failed" => (Some(K::PayoutFailed), d.amount_charged),
        _ => (None, None),
    };
    c.kind = kind;
    c.amount = amount(value, AmountUnit::Major, &currency);
    c.fee = amount(d.fee, AmountUnit::Major, &currency);
    c.reason = d.reason;
    Ok(c)
}

/// A collection or checkout charge: what was received, against the reference we gave.
fn fincra_collection(c: &mut NormalizedCallback, event: &str, d: FincraData) {
    c.reference = d.merchant_reference.clone().or(d.reference.clone());
    c.kind = Some(if event.ends_with(".successful") {
        CallbackKind::DepositSucceeded
    } else {
        CallbackKind::DepositFailed
    });
    let currency = d
        .currency
        .clone()
        .or(d.destination_currency.clone())
        .or(d.source_currency.clone());
    let fee = match (&d.amount_charged, &d.amount_received) {
        (Some(charged), Some(received)) => difference(charged, received),
        _ => d.fee.clone(),
    };
    let received = d.amount_received.or(d.amount).or(d.source_amount);
    c.amount = amount(received, AmountUnit::Major, &currency);
    c.fee = amount(fee, AmountUnit::Major, &currency);
    c.reason = d.reason;
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
