//! CMI (Centre Monétique Interbancaire, Morocco): form-urlencoded callbacks hashed with `hashAlgorithm=ver3`.
//! TODO(helper): implement.

use crate::model::NormalizedCallback;
use crate::verify::AuthError;

/// Checks the `HASH` of a form-urlencoded CMI callback with the store key.
pub fn verify(_body: &[u8], _store_key: &str) -> Result<(), AuthError> {
    Err(AuthError::Mismatch)
}

/// Parses an (already authenticated) CMI callback.
pub fn parse(_body: &[u8]) -> Result<NormalizedCallback, String> {
    Err("CMI is not implemented yet".into())
}
