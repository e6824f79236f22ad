//! Payload-agnostic value types shared by every `EventStore` implementation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Name of the ledger that the first migration creates.
pub const DEFAULT_LEDGER: &str = "default";

/// Who caused an event and why; stored as JSON next to the payload and covered by the chain hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub actor: Option<String>,
    pub idempotency_key: Option<String>,
    /// The command envelope that produced the event (on the first event of each command): what
    /// `verify --deep` decides again. Absent on follow-ups' events and on events written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Value>,
    /// The gateway delivery that ran the command, on the event its idempotency record names first: it backs
    /// the delivery's inbox row in the log (`ledger_store::outcome_log::back_delivery`), so the delivery
    /// needs no `DeliveryRecorded` of its own. Absent on every other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStamp>,
}

/// What the log keeps of a delivery whose command appended events (`EventMetadata::delivery`): the fields
/// of its inbox row a later answer rests on, as stored (NUL escaped), and its raw body's SHA-256 (hex). The
/// same facts as a `DeliveryRecorded` payload; the command is the event's `correlation_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStamp {
    pub delivery_id: Uuid,
    pub disposition: String,
    pub dedupe_key: String,
    pub body_sha256: String,
}

/// An event as a writer hands it in; the store assigns the stream version and position.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: EventMetadata,
}

/// Optimistic concurrency guard for one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (a stream that is behind conflicts too).
    Exact(i64),
    /// No check: append after whatever is there.
    Any,
}

/// Events for one stream, all appended after the stream's current end.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// An event as stored. `position` and `sequenced_at` are `None` while the event is committed but
/// not yet sequenced (only `read_stream` can return such events; the log never does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub ledger_id: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
    pub position: Option<i64>,
    pub sequenced_at: Option<DateTime<Utc>>,
}

/// Where one appended event landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
    pub position: i64,
}

/// Result of one successful append, events in the order they were given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    pub events: Vec<AppendedEvent>,
}

/// A command's idempotency key with the request it answered and the outcome to replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request: Value,
    pub outcome: Value,
}

/// A cached fold of one stream up to `stream_version`, valid only for `fold_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub stream_id: String,
    pub stream_version: i64,
    pub fold_version: i32,
    pub state: Value,
    pub taken_at: DateTime<Utc>,
}

/// The chain head at a position, exported to be kept outside the database. A later
/// `verify_chain` against it catches a history that was edited and re-hashed in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub ledger_id: String,
    pub position: i64,
    pub hash_hex: String,
    pub sealed_at: DateTime<Utc>,
}

/// The first place where the stored chain disagrees with a recomputation (or with a seal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    pub position: i64,
    pub event_id: Option<Uuid>,
    pub reason: String,
}

/// Result of `verify_chain`. `first_break` is `None` when the chain is intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    pub ledger_id: String,
    pub events_verified: i64,
    pub head_position: i64,
    pub head_hash_hex: String,
    pub first_break: Option<ChainBreak>,
    /// `Some(true)` when a seal was given and the recomputed chain matches it.
    pub seal_matches: Option<bool>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none() && self.seal_matches != Some(false)
    }
}

/// Most bytes of a delivery's raw body (the `ledger.inbox` check constraint says the same).
pub const INBOX_BODY_MAX: usize = 1_048_576;

/// One callback delivery as `ledger.inbox` keeps it: what arrived (`raw_body`, byte-exact), what it was
/// about and what became of it. Text columns cannot hold NUL: the store writes them through
/// [`escape_nul`], so the raw body is the one byte-exact copy of what the gateway sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRow {
    pub delivery_id: Uuid,
    pub gateway: String,
    pub gateway_event_id: String,
    pub event_type: String,
    pub dedupe_key: String,
    pub payment_reference: Option<String>,
    pub disposition: String,
    pub detail: String,
    pub command_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub raw_body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// The signature header(s) the delivery was authenticated with (`name: value` lines), kept so that
    /// `verify --deep --gateway-config` can check the signature again; absent for rows recorded before.
    #[serde(default)]
    pub signature: Option<String>,
}

impl InboxRow {
    /// The row as stored: every text column with NUL escaped (see [`escape_nul`]).
    pub fn escaped(mut self) -> InboxRow {
        for text in [
            &mut self.gateway,
            &mut self.gateway_event_id,
            &mut self.event_type,
            &mut self.dedupe_key,
            &mut self.disposition,
            &mut self.detail,
        ] {
            *text = escape_nul(text);
        }
        self.payment_reference = self.payment_reference.as_deref().map(escape_nul);
        self.signature = self.signature.as_deref().map(escape_nul);
        self
    }
}

/// PostgreSQL text (and jsonb) cannot hold U+0000: it is written as the six characters `\u0000`, the
/// way JSON spells it. Text is for search and display; where bytes matter the raw body keeps them.
pub fn escape_nul(text: &str) -> String {
    text.replace('\0', "\\u0000")
}
