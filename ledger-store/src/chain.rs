//! The hash chain, computed the same way as `ledger.sequence()` in the migrations.
//!
//! The bytes of one event are length-prefixed so that no two field lists share an encoding:
//! `field(s) = u32_be(len(utf8(s))) || utf8(s)`, and
//! `canonical_v1 = field(ledger_id) || i64_be(position) || field(stream_id) || i64_be(stream_version)
//! || event_id (16 bytes) || field(event_type) || i32_be(schema_version) || field(payload text)
//! || field(metadata text) || i64_be(recorded_at in microseconds since the Unix epoch)`.
//! Chain version 2 (every link sequenced since migration 20261130000201) also holds what `--as-of`
//! resolves with: `canonical_v2 = canonical_v1 || i64_be(sequenced_at in microseconds)`. Each link stores
//! its version, so links hashed before the migration stay verifiable; along the log the version never
//! goes back from 2 to 1 and `sequenced_at` never decreases ([`ChainVerifier`] reports either).
//! `hash(p) = sha256(hash(p - 1) || canonical(p))`, with `hash(0)` = 32 zero bytes ([`GENESIS_HASH`]).
//! The JSON texts are PostgreSQL's `jsonb` output, which [`jsonb_text`] reproduces for the
//! in-memory store. Recomputing in Rust (not trusting SQL) is what makes `verify_chain` an
//! independent check.

use crate::types::{ChainBreak, ChainReport, Seal};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The link before the first event of every ledger.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The chain version the sequencer writes today (see the module docs).
pub const CHAIN_VERSION_CURRENT: i16 = 2;

/// The fields of one sequenced event that the chain covers.
#[derive(Clone, Debug)]
pub struct ChainInput<'a> {
    pub ledger_id: &'a str,
    pub position: i64,
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub payload_text: &'a str,
    pub metadata_text: &'a str,
    pub recorded_at_micros: i64,
    /// 1: links hashed before `sequenced_at` was covered; 2: today's links.
    pub chain_version: i16,
    pub sequenced_at_micros: i64,
}

fn push_field(out: &mut Vec<u8>, text: &str) {
    let length = u32::try_from(text.len()).expect("chain field longer than 4 GiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The canonical bytes of one event (see the module docs).
pub fn canonical_bytes(input: &ChainInput<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + input.payload_text.len() + input.metadata_text.len());
    push_field(&mut out, input.ledger_id);
    out.extend_from_slice(&input.position.to_be_bytes());
    push_field(&mut out, input.stream_id);
    out.extend_from_slice(&input.stream_version.to_be_bytes());
    out.extend_from_slice(input.event_id.as_bytes());
    push_field(&mut out, input.event_type);
    out.extend_from_slice(&input.schema_version.to_be_bytes());
    push_field(&mut out, input.payload_text);
    push_field(&mut out, input.metadata_text);
    out.extend_from_slice(&input.recorded_at_micros.to_be_bytes());
    if input.chain_version >= 2 {
        out.extend_from_slice(&input.sequenced_at_micros.to_be_bytes());
    }
    out
}

/// The chain link after `previous` for this event.
pub fn next_hash(previous: &[u8; 32], input: &ChainInput<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical_bytes(input));
    hasher.finalize().into()
}

/// The digest `ledger.save_snapshot` stores with a stream snapshot: `sha256(field(ledger) ||
/// field(stream) || i64_be(stream_version) || i32_be(fold_version) || field(state jsonb text))`.
pub fn snapshot_digest(
    ledger_id: &str,
    stream_id: &str,
    stream_version: i64,
    fold_version: i32,
    state_text: &str,
) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(64 + state_text.len());
    push_field(&mut bytes, ledger_id);
    push_field(&mut bytes, stream_id);
    bytes.extend_from_slice(&stream_version.to_be_bytes());
    bytes.extend_from_slice(&fold_version.to_be_bytes());
    push_field(&mut bytes, state_text);
    Sha256::digest(&bytes).into()
}

/// The digest `ledger.take_balance_snapshot` stores: `sha256(field(ledger) || i64_be(position) ||
/// chain hash at position || field(balances jsonb text))`: bound to the chain as well as to its content.
pub fn balance_snapshot_digest(
    ledger_id: &str,
    position: i64,
    chain_hash: &[u8],
    balances_text: &str,
) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(96 + balances_text.len());
    push_field(&mut bytes, ledger_id);
    bytes.extend_from_slice(&position.to_be_bytes());
    bytes.extend_from_slice(chain_hash);
    push_field(&mut bytes, balances_text);
    Sha256::digest(&bytes).into()
}

/// PostgreSQL's `jsonb::text` rendering of a JSON value: `", "` and `": "` separators, object
/// keys ordered by byte length then bytes, and PostgreSQL's string escapes. Numbers are written
/// as serde_json writes them, which equals PostgreSQL's output for integers and plain decimals
/// (amounts in this ledger are integers or decimal strings; exponent floats may differ).
pub fn jsonb_text(value: &Value) -> String {
    let mut out = String::new();
    write_jsonb(&mut out, value);
    out
}

fn write_jsonb(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_jsonb_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_jsonb(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_jsonb_string(out, key);
                out.push_str(": ");
                write_jsonb(out, item);
            }
            out.push('}');
        }
    }
}

/// PostgreSQL's `escape_json`.
fn write_jsonb_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Walks a ledger's sequenced events in position order, recomputing every link.
#[derive(Debug)]
pub struct ChainVerifier {
    ledger_id: String,
    seal: Option<Seal>,
    previous: [u8; 32],
    position_next: i64,
    events_verified: i64,
    first_break: Option<ChainBreak>,
    hash_at_seal: Option<[u8; 32]>,
    /// Highest chain version and latest `sequenced_at` seen so far (neither may go back).
    version_seen: i16,
    sequenced_at_seen: i64,
}

impl ChainVerifier {
    pub fn new(ledger_id: &str, seal: Option<Seal>) -> Self {
        let hash_at_seal = match &seal {
            Some(s) if s.position == 0 => Some(GENESIS_HASH),
            _ => None,
        };
        Self {
            ledger_id: ledger_id.to_owned(),
            seal,
            previous: GENESIS_HASH,
            position_next: 1,
            events_verified: 0,
            first_break: None,
            hash_at_seal,
            version_seen: 1,
            sequenced_at_seen: i64::MIN,
        }
    }

    /// The position the verifier expects next (the cursor for reading the next batch).
    pub fn position_after(&self) -> i64 {
        self.position_next - 1
    }

    /// Checks one stored link. Keeps going after a break so that the report covers the whole log.
    pub fn push(&mut self, input: &ChainInput<'_>, stored_hash: &[u8]) {
        if input.position != self.position_next {
            self.record_break(input, format!("expected position {}", self.position_next));
        }
        if !(1..=CHAIN_VERSION_CURRENT).contains(&input.chain_version) {
            self.record_break(
                input,
                format!("unknown chain version {}", input.chain_version),
            );
        } else if input.chain_version < self.version_seen {
            self.record_break(input, "chain version goes back to 1 after version 2".into());
        }
        if input.sequenced_at_micros < self.sequenced_at_seen {
            self.record_break(input, "sequenced_at goes back in time along the log".into());
        }
        self.version_seen = self.version_seen.max(input.chain_version);
        self.sequenced_at_seen = self.sequenced_at_seen.max(input.sequenced_at_micros);
        let computed = next_hash(&self.previous, input);
        if stored_hash != computed {
            self.record_break(
                input,
                "stored hash differs from the recomputed chain".into(),
            );
        }
        if self
            .seal
            .as_ref()
            .is_some_and(|s| s.position == input.position)
        {
            self.hash_at_seal = Some(computed);
        }
        self.previous = computed;
        self.position_next = input.position + 1;
        self.events_verified += 1;
    }

    /// A link whose event row is gone: a break; the chain continues from the stored link.
    pub fn push_missing(&mut self, position: i64, stored_hash: &[u8]) {
        if self.first_break.is_none() {
            self.first_break = Some(ChainBreak {
                position,
                event_id: None,
                reason: "the event of this position is missing".into(),
            });
        }
        self.previous = stored_hash.try_into().unwrap_or(GENESIS_HASH);
        self.position_next = position + 1;
        self.events_verified += 1;
    }

    fn record_break(&mut self, input: &ChainInput<'_>, reason: String) {
        if self.first_break.is_none() {
            self.first_break = Some(ChainBreak {
                position: input.position,
                event_id: Some(input.event_id),
                reason,
            });
        }
    }

    /// The report; a seal that the recomputed chain does not reach or match is a break too.
    pub fn finish(mut self) -> ChainReport {
        let seal_matches = self.seal.as_ref().map(|seal| {
            self.hash_at_seal
                .is_some_and(|h| hex::encode(h).eq_ignore_ascii_case(&seal.hash_hex))
        });
        if seal_matches == Some(false) && self.first_break.is_none() {
            let position = self.seal.as_ref().map_or(0, |s| s.position);
            self.first_break = Some(ChainBreak {
                position,
                event_id: None,
                reason: "history up to the seal differs from the seal (edited and re-hashed, \
                         or truncated)"
                    .into(),
            });
        }
        ChainReport {
            ledger_id: self.ledger_id,
            events_verified: self.events_verified,
            head_position: self.position_next - 1,
            head_hash_hex: hex::encode(self.previous),
            first_break: self.first_break,
            seal_matches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonb_text_orders_keys_by_length_then_bytes() {
        let value = json!({"bb": 1, "a": [1, "x\n\"y"], "c": {"z": null, "yy": true}});
        assert_eq!(
            jsonb_text(&value),
            r#"{"a": [1, "x\n\"y"], "c": {"z": null, "yy": true}, "bb": 1}"#
        );
    }

    #[test]
    fn genesis_is_zero_and_links_differ_by_position() {
        let input = ChainInput {
            ledger_id: "default",
            position: 1,
            stream_id: "s",
            stream_version: 1,
            event_id: Uuid::nil(),
            event_type: "T",
            schema_version: 1,
            payload_text: "{}",
            metadata_text: "{}",
            recorded_at_micros: 0,
            chain_version: 2,
            sequenced_at_micros: 0,
        };
        let first = next_hash(&GENESIS_HASH, &input);
        let second = next_hash(
            &GENESIS_HASH,
            &ChainInput {
                position: 2,
                ..input.clone()
            },
        );
        assert_ne!(first, second);
        let version_1 = next_hash(
            &GENESIS_HASH,
            &ChainInput {
                chain_version: 1,
                ..input.clone()
            },
        );
        assert_ne!(first, version_1);
        let later = next_hash(
            &GENESIS_HASH,
            &ChainInput {
                sequenced_at_micros: 1,
                ..input
            },
        );
        assert_ne!(first, later, "version 2 covers sequenced_at");
    }
}
