//! Payment gateway callbacks, pure: no I/O, no clock (the caller passes `now`), no async.
//!
//! - [`verify`]: authenticity on the raw request bytes (Stripe `Stripe-Signature`, Paystack
//!   `x-paystack-signature`, Flutterwave `verif-hash`, Fincra `signature`, in-house `X-Escrow-Signature`),
//!   constant-time comparisons, HMAC from the `hmac`/`sha2` crates.
//! - [`adapters`]: each gateway's JSON into one [`NormalizedCallback`]; amounts are kept as the exact text the
//!   gateway sent (JSON numbers read through `RawValue`, never through `f64`).
//! - [`plan`]: what the ledger does with a callback given the payment it names: the command to run, the
//!   dedupe key (per payment and outcome, not per gateway event id), or a suspense entry.

pub mod adapters;
pub mod bounded;
pub mod cmi;
pub mod exact;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod statement;
pub mod tap;
pub mod verify;

pub use adapters::parse;
pub use model::{AmountUnit, CallbackKind, NormalizedCallback, ReportedAmount};
pub use plan::{Disposition, Plan, plan};
pub use verify::{AuthError, Secrets, authenticate};

/// Largest callback body accepted anywhere (the server may configure a smaller one).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Stripe's and our own signature tolerance.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a callback cannot be used. `Unauthorized` answers 401; `Unparseable` answers 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] AuthError),
    #[error("unparseable payload: {0}")]
    Unparseable(String),
}

/// Verifies then parses one delivery. `header` looks a request header up by lower-case name.
pub fn authenticate_and_parse(
    gateway: ledger_core::Gateway,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    secrets: &Secrets,
    now_unix: i64,
) -> Result<NormalizedCallback, CallbackError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(CallbackError::Unparseable(format!(
            "body of {} bytes is over {BODY_BYTES_MAX}",
            body.len()
        )));
    }
    authenticate(gateway, header, body, secrets, now_unix)?;
    parse(gateway, body).map_err(CallbackError::Unparseable)
}

/// The route segment of a gateway (`/callbacks/{segment}`).
pub fn gateway_from_segment(segment: &str) -> Option<ledger_core::Gateway> {
    use ledger_core::Gateway as G;
    match segment {
        "stripe" => Some(G::Stripe),
        "paystack" => Some(G::Paystack),
        "flutterwave" => Some(G::Flutterwave),
        "fincra" => Some(G::Fincra),
        "cmi" => Some(G::Cmi),
        "tap" => Some(G::Tap),
        "normalized" => Some(G::Normalized),
        _ => None,
    }
}
