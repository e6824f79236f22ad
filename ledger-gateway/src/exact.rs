//! Exact decimal text from JSON: a number (read as its raw text, never as `f64`) or a string holding one.

use serde::de::{Deserialize, Deserializer, Error};
use serde_json::value::RawValue;

/// A decimal exactly as the gateway wrote it: `-?digits(.digits)?`. Exponent forms (`1e3`) are refused
/// rather than converted, so nothing is ever rounded on the way in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExactDecimal(pub String);

/// Bound on the digits of an amount.
pub const DIGITS_MAX: usize = 30;

impl ExactDecimal {
    pub fn parse_text(text: &str) -> Result<ExactDecimal, String> {
        let t = text.trim();
        let unsigned = t.strip_prefix('-').unwrap_or(t);
        let (int, frac) = match unsigned.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (unsigned, None),
        };
        let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok(int) || !frac.is_none_or(digits_ok) || unsigned.len() > DIGITS_MAX {
            return Err(format!("{text:?} is not a plain decimal amount"));
        }
        Ok(ExactDecimal(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ExactDecimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &RawValue = <&RawValue>::deserialize(d)?;
        let text = raw.get();
        let inner = if text.starts_with('"') {
            serde_json::from_str::<String>(text).map_err(D::Error::custom)?
        } else {
            text.to_string()
        };
        ExactDecimal::parse_text(&inner).map_err(D::Error::custom)
    }
}

/// An identifier that gateways send as a number or a string (Paystack's `data.id`), kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdText(pub String);

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &RawValue = <&RawValue>::deserialize(d)?;
        let text = raw.get();
        let inner = if text.starts_with('"') {
            serde_json::from_str::<String>(text).map_err(D::Error::custom)?
        } else if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            text.to_string()
        } else {
            return Err(D::Error::custom(format!("{text} is not an identifier")));
        };
        if inner.is_empty() {
            return Err(D::Error::custom("identifier is empty"));
        }
        Ok(IdText(inner))
    }
}
