//! Authenticity on the raw bytes. Every comparison of a secret-derived value is constant-time (`subtle`);
//! secrets are never formatted into errors or logs (`Secrets` has a redacting `Debug`).
//!
//! Flutterwave: `flutterwave-signature` = base64(HMAC-SHA256(secret hash, raw body)) (v4). The older
//! `verif-hash` header carries the secret hash itself, the same in every webhook: whoever sees one request can
//! forge any body, so it is accepted only when the ledger opts in (`flutterwave_accept_static_hash`).

use hmac::{Hmac, Mac};
use ledger_core::Gateway;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::TOLERANCE_SECONDS;

/// Bound on the signature header length and on the `v1` values considered.
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 4096;
pub const SIGNATURES_MAX: usize = 8;

/// One ledger's gateway secrets. Absent secret: that gateway's callbacks are refused (401).
#[derive(Clone, Default)]
pub struct Secrets {
    pub stripe: Option<String>,
    pub paystack: Option<String>,
    pub flutterwave_hash: Option<String>,
    /// Accept Flutterwave's static `verif-hash` header (weaker: see the module docs).
    pub flutterwave_accept_static_hash: bool,
    pub fincra: Option<String>,
    /// CMI's store key (`hashAlgorithm=ver3`, see [`crate::cmi`]).
    pub cmi_store_key: Option<String>,
    /// Tap's secret key (`hashstring`, see [`crate::tap`]).
    pub tap_secret: Option<String>,
    /// The in-house normalized format (`X-Escrow-Signature`).
    pub callback: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "set" } else { "unset" };
        f.debug_struct("Secrets")
            .field("stripe", &set(&self.stripe))
            .field("paystack", &set(&self.paystack))
            .field("flutterwave_hash", &set(&self.flutterwave_hash))
            .field(
                "flutterwave_accept_static_hash",
                &self.flutterwave_accept_static_hash,
            )
            .field("fincra", &set(&self.fincra))
            .field("cmi_store_key", &set(&self.cmi_store_key))
            .field("tap_secret", &set(&self.tap_secret))
            .field("callback", &set(&self.callback))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no secret is configured for {0}")]
    NoSecret(Gateway),
    #[error("missing signature header {0}")]
    MissingHeader(&'static str),
    #[error("malformed signature header {0}")]
    MalformedHeader(&'static str),
    #[error("signature does not match")]
    Mismatch,
    /// Flutterwave's static `verif-hash` (the secret itself, in every webhook) when the ledger has not opted
    /// in to it: the delivery carried no `flutterwave-signature`.
    #[error(
        "Flutterwave's static verif-hash header is not accepted (no flutterwave-signature; set flutterwave_accept_static_hash to accept it)"
    )]
    StaticHashRefused,
    #[error(
        "signature timestamp is {age_seconds} s away from now (tolerance {TOLERANCE_SECONDS} s)"
    )]
    Stale { age_seconds: i64 },
}

/// The signature headers `authenticate` reads for `gateway`, as `name: value` lines: what a delivery keeps so
/// that its signature can be checked again later (`verify --deep --gateway-config`). Flutterwave's static
/// `verif-hash` is never kept: it is the secret itself, not a signature.
pub fn signature_lines(
    gateway: Gateway,
    header: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let names: &[&str] = match gateway {
        Gateway::Stripe => &["stripe-signature"],
        Gateway::Normalized => &["x-escrow-signature"],
        Gateway::Paystack => &["x-paystack-signature"],
        Gateway::Fincra => &["signature"],
        Gateway::Flutterwave => &["flutterwave-signature"],
        // CMI's HASH travels in the signed form itself (kept with the raw body).
        Gateway::Cmi => &[],
        Gateway::Tap => &["hashstring"],
    };
    let lines: Vec<String> = names
        .iter()
        .filter_map(|name| header(name).map(|value| format!("{name}: {value}")))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// A header lookup over lines written by [`signature_lines`].
pub fn header_from_lines(lines: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        lines.lines().find_map(|line| {
            line.split_once(": ")
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.to_string())
        })
    }
}

/// Checks one delivery's authenticity for `gateway`.
pub fn authenticate(
    gateway: Gateway,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    secrets: &Secrets,
    now_unix: i64,
) -> Result<(), AuthError> {
    // A blank secret is no secret (configuration refuses it too): it never switches authentication off.
    let need = |s: &Option<String>| {
        s.clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or(AuthError::NoSecret(gateway))
    };
    match gateway {
        Gateway::Stripe => {
            let value =
                header("stripe-signature").ok_or(AuthError::MissingHeader("Stripe-Signature"))?;
            verify_timestamped(
                &value,
                "Stripe-Signature",
                body,
                &need(&secrets.stripe)?,
                now_unix,
            )
        }
        Gateway::Normalized => {
            let value = header("x-escrow-signature")
                .ok_or(AuthError::MissingHeader("X-Escrow-Signature"))?;
            verify_timestamped(
                &value,
                "X-Escrow-Signature",
                body,
                &need(&secrets.callback)?,
                now_unix,
            )
        }
        Gateway::Paystack => {
            let value = header("x-paystack-signature")
                .ok_or(AuthError::MissingHeader("x-paystack-signature"))?;
            verify_sha512_hex(
                &value,
                "x-paystack-signature",
                body,
                &need(&secrets.paystack)?,
            )
        }
        Gateway::Fincra => {
            let value = header("signature").ok_or(AuthError::MissingHeader("signature"))?;
            verify_sha512_hex(&value, "signature", body, &need(&secrets.fincra)?)
        }
        Gateway::Cmi => crate::cmi::verify(body, &need(&secrets.cmi_store_key)?),
        Gateway::Tap => {
            let value = header("hashstring").ok_or(AuthError::MissingHeader("hashstring"))?;
            crate::tap::verify(&value, body, &need(&secrets.tap_secret)?)
        }
        Gateway::Flutterwave => {
            let hash = need(&secrets.flutterwave_hash)?;
            if let Some(value) = header("flutterwave-signature") {
                return verify_sha256_base64(&value, "flutterwave-signature", body, &hash);
            }
            match header("verif-hash") {
                Some(value) if secrets.flutterwave_accept_static_hash => {
                    if same_secret(value.trim(), &hash) {
                        Ok(())
                    } else {
                        Err(AuthError::Mismatch)
                    }
                }
                Some(_) => Err(AuthError::StaticHashRefused),
                None => Err(AuthError::MissingHeader("flutterwave-signature")),
            }
        }
    }
}

/// `t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]`: HMAC-SHA256 over `"{t}.{body}"`; any `v1` may match (secret
/// rotation); other schemes are ignored (downgrade protection); `|now - t| <= 300 s`.
pub fn verify_timestamped(
    value: &str,
    name: &'static str,
    body: &[u8],
    secret: &str,
    now_unix: i64,
) -> Result<(), AuthError> {
    let (timestamp, signatures) = parse_timestamped(value, name)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let mut matched = subtle::Choice::from(0);
    for signature in &signatures {
        matched |= signature.as_slice().ct_eq(&expected[..]);
    }
    if !bool::from(matched) {
        return Err(AuthError::Mismatch);
    }
    // Checked after the MAC so that a forged header learns nothing about our clock.
    let age_seconds = now_unix.saturating_sub(timestamp);
    if age_seconds.abs() > crate::TOLERANCE_SECONDS {
        return Err(AuthError::Stale { age_seconds });
    }
    Ok(())
}

/// Splits a timestamped signature header into its timestamp and decoded `v1` signatures.
pub fn parse_timestamped(
    value: &str,
    name: &'static str,
) -> Result<(i64, Vec<Vec<u8>>), AuthError> {
    if value.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(AuthError::MalformedHeader(name));
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        let Some((key, val)) = part.trim().split_once('=') else {
            return Err(AuthError::MalformedHeader(name));
        };
        match key {
            "t" => {
                timestamp = Some(
                    val.parse::<i64>()
                        .map_err(|_| AuthError::MalformedHeader(name))?,
                )
            }
            "v1" if signatures.len() < SIGNATURES_MAX => {
                signatures.push(hex::decode(val).map_err(|_| AuthError::MalformedHeader(name))?)
            }
            _ => {}
        }
    }
    match timestamp {
        Some(t) if !signatures.is_empty() => Ok((t, signatures)),
        _ => Err(AuthError::MalformedHeader(name)),
    }
}

/// HMAC-SHA512 of the raw body, hex (Paystack, Fincra).
pub fn verify_sha512_hex(
    value: &str,
    name: &'static str,
    body: &[u8],
    secret: &str,
) -> Result<(), AuthError> {
    let given = hex::decode(value.trim()).map_err(|_| AuthError::MalformedHeader(name))?;
    let mut mac =
        Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(given.as_slice().ct_eq(&expected[..])) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// base64(HMAC-SHA256(secret, raw body)) (Flutterwave v4 `flutterwave-signature`).
pub fn verify_sha256_base64(
    value: &str,
    name: &'static str,
    body: &[u8],
    secret: &str,
) -> Result<(), AuthError> {
    use base64::Engine as _;
    if value.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(AuthError::MalformedHeader(name));
    }
    let given = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| AuthError::MalformedHeader(name))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(given.as_slice().ct_eq(&expected[..])) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// Constant time whatever the lengths: the SHA-256 digests are compared, never the texts (an early return on
/// a length mismatch would tell an attacker the secret's length).
pub fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::Digest;
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    bool::from(a[..].ct_eq(&b[..]))
}

/// base64(HMAC-SHA256) of a body (Flutterwave v4): for tests and replay tools.
pub fn sign_sha256_base64(secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Signs a body the way our `X-Escrow-Signature` (and Stripe) expect: for in-house workers, tests, benches.
pub fn sign_timestamped(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// HMAC-SHA512 hex of a body (Paystack, Fincra): for tests and replay tools.
pub fn sign_sha512_hex(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
