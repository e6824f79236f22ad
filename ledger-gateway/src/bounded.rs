//! Identifiers from gateways enter keys and indexes only bounded: a long one is replaced by its SHA-256 (the
//! raw value stays in the inbox's raw body), so an authentic callback is never refused, nor answered 5xx, for
//! the length of an id (PostgreSQL refuses a btree key over ~2.7 kB).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Longest identifier kept as it is in a key; longer ones become `sha256:<64 hex>`.
pub const KEY_PART_BYTES_MAX: usize = 128;

/// Hex SHA-256 of `bytes`.
pub fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `text` itself when short, else `sha256:<hex>` of it (never longer than 71 bytes).
pub fn key_part(text: &str) -> Cow<'_, str> {
    if text.len() <= KEY_PART_BYTES_MAX {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("sha256:{}", digest_hex(text.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_parts_are_hashed_and_short_ones_kept() {
        assert_eq!(key_part("pi_123"), "pi_123");
        let long = "x".repeat(4000);
        let part = key_part(&long);
        assert!(part.starts_with("sha256:") && part.len() == 71);
        assert_eq!(part, key_part(&long), "deterministic");
        assert_ne!(part, key_part(&"y".repeat(4000)));
        let edge = "z".repeat(KEY_PART_BYTES_MAX);
        assert_eq!(key_part(&edge), edge.as_str());
    }
}
