//! CMI (Centre Monétique Interbancaire, Morocco): `application/x-www-form-urlencoded` callbacks posted to the
//! merchant's `callbackUrl`, authenticated by their `HASH` parameter with `hashAlgorithm=ver3`.
//!
//! The scheme is the one of CMI's merchant kit callback script (PHP, copied in many public integrations, e.g.
//! the `natcasesort($postParams)` callback handlers; CMI publishes no test vector). CMI runs on Asseco's NestPay
//! platform (`/fim/est3Dgate`), whose "Hash ver3" is the same computation:
//!
//! 1. every posted parameter except `hash` and `encoding` (names compared case-insensitively: CMI posts
//!    `HASH`), each value percent-decoded (`+` is a space);
//! 2. sorted by name, case-insensitively (ASCII lower case, byte order);
//! 3. each value escaped, `\` into `\\` then `|` into `\|`, and followed by `|`; then the escaped store key;
//! 4. SHA-512 of those bytes, base64 (standard alphabet, padded) of the 64-byte digest.
//!
//! `tests/cmi_tap.rs` checks this against an independent Python implementation, itself checked against a
//! HASH a NestPay bank computed for a real return (`tests/fixtures/SOURCES.md`).
//!
//! The posted `HASH` is decoded and compared in constant time. Refused before hashing: a form that is not
//! well formed (a `%` not followed by two hex digits, a name that is not UTF-8, more than
//! [`PARAMETERS_MAX`] parameters), two parameters whose names are equal ignoring case (their order in the
//! sort would be ambiguous), and a `hashAlgorithm` other than `ver3`. A form without `hashAlgorithm` is still
//! checked as ver3: the digest alone decides. Values are hashed as the bytes they decode to (UTF-8 when CMI
//! posts `encoding=UTF-8`), so a value in another encoding does not make an authentic callback fail.
//!
//! Not reproduced from the kit's PHP: `natcasesort` is a *natural* order (`BillToStreet10` after
//! `BillToStreet2`; PHP may fold `_` differently against letters), and some copies `trim` and
//! `html_entity_decode` each value first. No published callback sample has names where the orders differ nor
//! values those functions would change; should CMI post one and hash it the kit's way, the callback is refused
//! (`Mismatch`), never misread.
//!
//! Parsing (after authentication):
//! - `oid` is OUR payment id (the ledger payment the worker sent to CMI): `reference`;
//! - `amount` in major units (`120.50`), kept as exact text; `currency` is the ISO 4217 *numeric* code
//!   (`504` MAD, `978` EUR, `840` USD, `826` GBP); any other code is kept as sent, so that the ledger reports
//!   an unknown currency rather than guessing;
//! - `ProcReturnCode` `00` with `Response` `Approved` is a success (`DepositSucceeded`); `00` with any other
//!   `Response` is inconsistent (an anomaly, nothing booked); any other code a failure (`DepositFailed`, the
//!   reason from `ErrMsg`, else `Response`, with the code); without `ProcReturnCode` the post reports no
//!   outcome (a 3-D return: ignored);
//! - `transaction_id`: the `oid` (one CMI payment per order: every success for it is one movement);
//!   `event_id`: `{oid}:{TransId or -}:{code}`;
//!   `event_type`: the posted `TranType`/`trantype` (`PreAuth`, `Auth`), else `callback`;
//! - `occurred_at` stays empty: `EXTRA.TRXDATE` (`20261205 21:10:00`) carries no time zone;
//! - no fee: CMI reports none in the callback.
//!
//! Several callbacks for one `oid` (failed attempts, then a success) are normal: each is its own event.
//!
//! **The HASH signs values, not names.** Renaming parameters so that their sorted order is kept leaves it
//! valid (the buyer sees the signed form: CMI posts it to `okUrl` through the browser), so a value may be
//! read under another field's name. Hence: a success needs both `ProcReturnCode` `00` and `Response`
//! `Approved` (a declined form holds no `Approved` to rename); the movement is the `oid` alone (a renamed
//! `TransId` is not another payment); and the plan books a CMI success only for the exact amount and currency
//! of the deposit its `oid` names (`plan::values_bound_to_names`), never into suspense.

use base64::Engine as _;
use ledger_core::Gateway;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::adapters::{amount, empty};
use crate::exact::ExactDecimal;
use crate::model::{AmountUnit, CallbackKind, NormalizedCallback};
use crate::verify::AuthError;

/// Bound on the number of posted parameters.
pub const PARAMETERS_MAX: usize = 256;
/// Bound on the posted `HASH` text (a ver3 hash is 88 base64 characters).
const HASH_TEXT_MAX: usize = 256;

/// One decoded parameter: its name (UTF-8) and its value's bytes.
struct Param {
    name: String,
    value: Vec<u8>,
}

/// Checks the `HASH` of a form-urlencoded CMI callback with the store key.
pub fn verify(body: &[u8], store_key: &str) -> Result<(), AuthError> {
    let params = decode_form(body).map_err(|_| AuthError::MalformedHeader("form"))?;
    let posted = find(&params, "hash").ok_or(AuthError::MissingHeader("HASH"))?;
    if let Some(algorithm) = find(&params, "hashAlgorithm")
        && !algorithm.eq_ignore_ascii_case(b"ver3")
    {
        return Err(AuthError::MalformedHeader("hashAlgorithm"));
    }
    if posted.len() > HASH_TEXT_MAX {
        return Err(AuthError::MalformedHeader("HASH"));
    }
    let given = base64::engine::general_purpose::STANDARD
        .decode(posted)
        .map_err(|_| AuthError::MalformedHeader("HASH"))?;
    let expected = digest(
        params.iter().map(|p| (p.name.as_str(), p.value.as_slice())),
        store_key.as_bytes(),
    );
    // The digest length (64) is public; `ct_eq` compares the bytes in constant time.
    if bool::from(given.as_slice().ct_eq(&expected[..])) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The ver3 `HASH` of `params` (any `hash`/`encoding` among them is left out): for tests and replay tools.
pub fn sign(params: &[(&str, &str)], store_key: &str) -> String {
    let digest = digest(
        params.iter().map(|(n, v)| (*n, v.as_bytes())),
        store_key.as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A form-urlencoded callback body of `params` followed by its `HASH` (any `hash` already among `params` is
/// dropped): what CMI posts, for tests and replay tools.
pub fn form_body(params: &[(&str, &str)], store_key: &str) -> Vec<u8> {
    let kept: Vec<(&str, &str)> = params
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("hash"))
        .copied()
        .collect();
    let hash = sign(&kept, store_key);
    let mut body = Vec::new();
    for (name, value) in kept.iter().copied().chain([("HASH", hash.as_str())]) {
        if !body.is_empty() {
            body.push(b'&');
        }
        encode_component(name.as_bytes(), &mut body);
        body.push(b'=');
        encode_component(value.as_bytes(), &mut body);
    }
    body
}

/// Parses an (already authenticated) CMI callback.
pub fn parse(body: &[u8]) -> Result<NormalizedCallback, String> {
    let params = decode_form(body).map_err(|e| format!("CMI callback: {e}"))?;
    let text = |name: &str| -> Result<Option<String>, String> {
        find(&params, name)
            .map(|v| String::from_utf8(v.to_vec()).map_err(|_| format!("CMI {name} is not UTF-8")))
            .transpose()
    };
    let present = |value: Option<String>| value.filter(|v| !v.is_empty());
    let oid = present(text("oid")?).ok_or("CMI callback without oid")?;
    // Without ProcReturnCode the post reports no payment outcome (a 3-D authentication return): authentic,
    // recorded, ignored.
    let Some(code) = text("ProcReturnCode")? else {
        let mut c = empty(Gateway::Cmi, format!("{oid}:3d-return"), "3d-return".into());
        c.reference = Some(oid);
        return Ok(c);
    };
    let trans_id = present(text("TransId")?);
    let event_type = present(text("TranType")?).unwrap_or_else(|| "callback".into());
    let mut c = empty(
        Gateway::Cmi,
        format!("{oid}:{}:{code}", trans_id.as_deref().unwrap_or("-")),
        event_type,
    );
    // Not TransId: its name is not signed (see the module docs); one order is one movement.
    let _ = trans_id;
    c.transaction_id = Some(oid.clone());
    c.reference = Some(oid);
    let value = present(text("amount")?)
        .map(|a| ExactDecimal::parse_text(&a))
        .transpose()?;
    let currency = present(text("currency")?).map(|code| currency_code(&code));
    c.amount = amount(value, AmountUnit::Major, &currency);
    let approved = present(text("Response")?).is_some_and(|r| r.eq_ignore_ascii_case("approved"));
    if code == "00" && approved {
        c.kind = Some(CallbackKind::DepositSucceeded);
    } else if code == "00" {
        c.kind = Some(CallbackKind::DepositSucceeded);
        c.defect = Some(
            "CMI ProcReturnCode 00 without Response Approved: inconsistent, nothing booked".into(),
        );
    } else {
        c.kind = Some(CallbackKind::DepositFailed);
        // Free text: kept even when not UTF-8 (replacement characters), never a reason to refuse.
        let message = ["ErrMsg", "Response"]
            .into_iter()
            .filter_map(|name| find(&params, name))
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .find(|m| !m.is_empty());
        c.reason = Some(match message {
            Some(m) => format!("{m} (ProcReturnCode {code})"),
            None => format!("ProcReturnCode {code}"),
        });
    }
    Ok(c)
}

/// ISO 4217 numeric code into the alphabetic one; an unknown code is kept as sent.
fn currency_code(numeric: &str) -> String {
    match numeric.trim() {
        "504" => "MAD",
        "978" => "EUR",
        "840" => "USD",
        "826" => "GBP",
        other => other,
    }
    .to_string()
}

/// The ver3 digest of `(name, value)` pairs and the store key.
fn digest<'a>(params: impl Iterator<Item = (&'a str, &'a [u8])>, store_key: &[u8]) -> [u8; 64] {
    let mut kept: Vec<(String, &[u8])> = params
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("hash") && !name.eq_ignore_ascii_case("encoding")
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    // Stable: names equal ignoring case (refused by `verify`) keep their posted order.
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha512::new();
    for (_, value) in kept {
        hasher.update(escape(value));
        hasher.update(b"|");
    }
    hasher.update(escape(store_key));
    hasher.finalize().into()
}

/// `\` into `\\`, then `|` into `\|` (one pass gives the same bytes: the added `\` are not doubled).
fn escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'|' => out.extend_from_slice(b"\\|"),
            _ => out.push(b),
        }
    }
    out
}

/// The first parameter named `name` (ignoring case; `decode_form` refuses two such).
fn find<'a>(params: &'a [Param], name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_slice())
}

/// Splits and percent-decodes a form body; refuses malformed escapes, names that are empty or not UTF-8,
/// more than [`PARAMETERS_MAX`] parameters, and names equal ignoring case.
fn decode_form(body: &[u8]) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if params.len() == PARAMETERS_MAX {
            return Err(format!("more than {PARAMETERS_MAX} parameters"));
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let name = String::from_utf8(percent_decode(name)?)
            .map_err(|_| "a parameter name is not UTF-8".to_string())?;
        if name.is_empty() {
            return Err("a parameter without a name".into());
        }
        params.push(Param {
            name,
            value: percent_decode(value)?,
        });
    }
    let mut names: Vec<String> = params.iter().map(|p| p.name.to_ascii_lowercase()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("parameter {:?} posted twice", pair[0]));
    }
    Ok(params)
}

/// `+` is a space, `%XX` a byte; a `%` without two hex digits is refused.
fn percent_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = text
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("a malformed percent escape")?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// application/x-www-form-urlencoded: alphanumerics and `*-._` as they are, space as `+`, the rest `%XX`.
fn encode_component(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
}
