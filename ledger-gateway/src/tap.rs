//! Tap Payments: JSON webhooks (the API v2 charge object, posted to the charge's `post.url`) authenticated by
//! the `hashstring` header.
//!
//! Tap's "Webhook" guide (developers.tap.company/docs/webhook, "Validate the webhook (hashstring)"):
//! `hashstring` = lowercase hex HMAC-SHA256, keyed with the merchant's secret API key, of
//!
//! `x_id{id}x_amount{amount}x_currency{currency}x_gateway_reference{reference.gateway}`
//! `x_payment_reference{reference.payment}x_status{status}x_created{transaction.created}`
//!
//! where the amount is "rounded with the standard decimal value" of its currency (KWD, BHD, OMR, JOD: 3
//! decimals, `7.5` is `7.500`; JPY 0; the ledger's ISO 4217 table for any other currency it knows, 2 for a
//! currency it does not). The amount is formatted from its exact JSON text (never through `f64`); an amount
//! with more significant decimals than its currency has cannot be what Tap signed, and is refused (`Mismatch`),
//! as is a body that is not a charge-shaped JSON object. A field absent from the body counts as the empty
//! text. The header is decoded from hex (either case) and compared in constant time; a header over
//! [`HASHSTRING_BYTES_MAX`] bytes or not hex is malformed.
//!
//! **What the hashstring does not cover**: everything but the seven fields above. In particular OUR payment id
//! (`reference.transaction`, `metadata`) is not signed: whoever holds one authentic delivery can re-post it
//! with another payment id and the same header. The charge `id` is signed, and is this adapter's
//! `transaction_id`: a second payment claiming an already-seen Tap charge is the signal of such a replay.
//!
//! Parsing (after authentication):
//! - only charges are handled: `object == "charge"`, or no `object` and an `id` starting `chg_`; other
//!   objects (authorizes, refunds, invoices) are authentic but ignored (`kind: None`);
//! - OUR payment id: `reference.transaction`, else `metadata.payment_reference`, else `metadata.payment_id`
//!   (the first non-empty text);
//! - `status`: `CAPTURED` is `DepositSucceeded`; `FAILED`, `DECLINED`, `RESTRICTED`, `CANCELLED`,
//!   `ABANDONED`, `VOID`, `TIMEDOUT` are `DepositFailed` (reason: `response.message` and `response.code`);
//!   `INITIATED`, `IN_PROGRESS`, `AUTHORIZED`, `UNKNOWN` and any other status are not outcomes yet: ignored
//!   (`kind: None`). (Tap's charges reference lists `UNKNOWN` among the failures; the ledger does not fail a
//!   deposit on a status that says it does not know.)
//! - `transaction_id` is the charge `id`; `event_id` `{id}:{status}`; `event_type` `charge.{status}` (lower
//!   case); the amount in major units, exact, currency as sent; `occurred_at` from `transaction.created`
//!   (Unix milliseconds, as text or number); no fee (the webhook reports none).

use hmac::{Hmac, Mac};
use ledger_core::{Currency, Gateway};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::adapters::{amount, empty};
use crate::exact::ExactDecimal;
use crate::model::{AmountUnit, CallbackKind, NormalizedCallback};
use crate::verify::AuthError;

/// Bound on the `hashstring` header (a SHA-256 hex is 64 characters).
pub const HASHSTRING_BYTES_MAX: usize = 256;

/// Checks Tap's `hashstring` header against the charge in `body`.
pub fn verify(hashstring: &str, body: &[u8], secret: &str) -> Result<(), AuthError> {
    if hashstring.len() > HASHSTRING_BYTES_MAX {
        return Err(AuthError::MalformedHeader("hashstring"));
    }
    let given =
        hex::decode(hashstring.trim()).map_err(|_| AuthError::MalformedHeader("hashstring"))?;
    // A body whose signed text cannot be formed cannot carry a valid hashstring.
    let message = signed_text(body).map_err(|_| AuthError::Mismatch)?;
    let expected = mac(secret, &message);
    if bool::from(given.as_slice().ct_eq(&expected[..])) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The `hashstring` of a charge body (lowercase hex): for tests and replay tools.
pub fn sign(body: &[u8], secret: &str) -> Result<String, String> {
    Ok(hex::encode(mac(secret, &signed_text(body)?)))
}

/// Parses an (already authenticated) Tap charge webhook.
pub fn parse(body: &[u8]) -> Result<NormalizedCallback, String> {
    let charge: Charge = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let id = present(charge.id.clone()).ok_or("Tap webhook without id")?;
    let status = charge.status.clone().map(|s| s.0).unwrap_or_default();
    let object = charge.object.as_ref().map(|o| o.0.as_str());
    let is_charge = match object {
        Some(o) => o.eq_ignore_ascii_case("charge"),
        None => id.starts_with("chg_"),
    };
    let noun = if is_charge {
        "charge"
    } else {
        object.unwrap_or("object")
    };
    let mut c = empty(
        Gateway::Tap,
        format!("{id}:{status}"),
        format!("{noun}.{}", status.to_ascii_lowercase()),
    );
    c.transaction_id = Some(id);
    let reference = charge.reference.as_ref();
    let from_metadata = |key: &str| {
        charge
            .metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    c.reference = present(reference.and_then(|r| r.transaction.clone()))
        .or_else(|| from_metadata("payment_reference"))
        .or_else(|| from_metadata("payment_id"));
    let currency = charge.currency.clone().map(|c| c.0);
    c.amount = amount(charge.amount.clone(), AmountUnit::Major, &currency);
    c.occurred_at = charge
        .transaction
        .as_ref()
        .and_then(|t| t.created.as_ref())
        .and_then(|t| t.0.trim().parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis);
    if !is_charge {
        return Ok(c);
    }
    c.kind = match status.to_ascii_uppercase().as_str() {
        "CAPTURED" => Some(CallbackKind::DepositSucceeded),
        "FAILED" | "DECLINED" | "RESTRICTED" | "CANCELLED" | "ABANDONED" | "VOID" | "TIMEDOUT" => {
            Some(CallbackKind::DepositFailed)
        }
        _ => None,
    };
    if c.kind == Some(CallbackKind::DepositFailed) {
        let response = charge.response.as_ref();
        let message = present(response.and_then(|r| r.message.clone()));
        let code = present(response.and_then(|r| r.code.clone()));
        c.reason = Some(match (message, code) {
            (Some(m), Some(code)) => format!("{m} (response code {code})"),
            (Some(m), None) => m,
            (None, Some(code)) => format!("response code {code}"),
            (None, None) => format!("charge {status}"),
        });
    }
    Ok(c)
}

/// The fields of a charge this adapter reads (the others are ignored). A field given twice is refused.
#[derive(Deserialize)]
struct Charge {
    id: Option<Text>,
    object: Option<Text>,
    status: Option<Text>,
    amount: Option<ExactDecimal>,
    currency: Option<Text>,
    reference: Option<Reference>,
    transaction: Option<Transaction>,
    metadata: Option<Map<String, Value>>,
    response: Option<Response>,
}

#[derive(Deserialize)]
struct Reference {
    gateway: Option<Text>,
    payment: Option<Text>,
    transaction: Option<Text>,
}

#[derive(Deserialize)]
struct Transaction {
    created: Option<Text>,
}

#[derive(Deserialize)]
struct Response {
    code: Option<Text>,
    message: Option<Text>,
}

/// A scalar as text: a string's content, or a number's (or boolean's) JSON text exactly as sent.
#[derive(Clone)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &RawValue = <&RawValue>::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('"') {
            serde_json::from_str::<String>(text)
                .map(Text)
                .map_err(D::Error::custom)
        } else if text.starts_with('{') || text.starts_with('[') {
            Err(D::Error::custom("expected a string or a number"))
        } else {
            Ok(Text(text.to_string()))
        }
    }
}

fn present(text: Option<Text>) -> Option<String> {
    text.map(|t| t.0).filter(|t| !t.is_empty())
}

/// The text Tap signs for a charge body.
fn signed_text(body: &[u8]) -> Result<String, String> {
    let charge: Charge = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let text = |t: &Option<Text>| t.as_ref().map(|t| t.0.clone()).unwrap_or_default();
    let currency = text(&charge.currency);
    let amount = match &charge.amount {
        Some(value) => formatted_amount(value, &currency)?,
        None => String::new(),
    };
    let reference = charge.reference.as_ref();
    Ok(format!(
        "x_id{}x_amount{amount}x_currency{currency}x_gateway_reference{}x_payment_reference{}x_status{}x_created{}",
        text(&charge.id),
        reference.map(|r| text(&r.gateway)).unwrap_or_default(),
        reference.map(|r| text(&r.payment)).unwrap_or_default(),
        text(&charge.status),
        charge
            .transaction
            .as_ref()
            .map(|t| text(&t.created))
            .unwrap_or_default(),
    ))
}

/// The amount with exactly its currency's decimals (`7.5` KWD is `7.500`), exactly; more significant
/// decimals than the currency has is an error.
fn formatted_amount(value: &ExactDecimal, currency: &str) -> Result<String, String> {
    let decimals = Currency::from_code(&currency.to_ascii_uppercase())
        .map(|c| u32::from(c.exponent()))
        .unwrap_or(2);
    let exact = Decimal::from_str_exact(value.as_str())
        .map_err(|e| format!("{}: {e}", value.as_str()))?
        .normalize();
    if exact.scale() > decimals {
        return Err(format!(
            "{} {currency} has more than {decimals} decimals",
            value.as_str()
        ));
    }
    let mut rescaled = exact;
    rescaled.rescale(decimals);
    // `rescale` rounds when the digits do not fit: never accept a changed value.
    if rescaled != exact || rescaled.scale() != decimals {
        return Err(format!(
            "{} {currency} cannot be written exactly",
            value.as_str()
        ));
    }
    Ok(rescaled.to_string())
}

fn mac(secret: &str, message: &str) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}
