//! Tap Payments: JSON charge webhooks authenticated by the `hashstring` header.
//! TODO(helper): implement.

use crate::model::NormalizedCallback;
use crate::verify::AuthError;

/// Checks Tap's `hashstring` header against the charge in `body`.
pub fn verify(_hashstring: &str, _body: &[u8], _secret: &str) -> Result<(), AuthError> {
    Err(AuthError::Mismatch)
}

/// Parses an (already authenticated) Tap charge webhook.
pub fn parse(_body: &[u8]) -> Result<NormalizedCallback, String> {
    Err("Tap is not implemented yet".into())
}
