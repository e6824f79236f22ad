//! Builders shared by the integration tests.
#![allow(dead_code)]

use ledger_store::{EventMetadata, ExpectedVersion, IdempotencyRecord, NewEvent, StreamAppend};
use serde_json::json;
use uuid::Uuid;

pub const LEDGER: &str = ledger_store::DEFAULT_LEDGER;

pub fn event(stream_id: &str, n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        event_type: "Tested".to_owned(),
        schema_version: 1,
        payload: json!({"n": n, "note": "é \"quoted\"\n", "nested": {"b": [1, 2], "a": null}}),
        metadata: EventMetadata {
            causation_id: Some(Uuid::new_v4()),
            correlation_id: None,
            actor: Some("tester".to_owned()),
            idempotency_key: None,
        },
    }
}

pub fn append(stream_id: &str, expected: ExpectedVersion, count: i64) -> StreamAppend {
    StreamAppend {
        stream_id: stream_id.to_owned(),
        expected,
        events: (1..=count).map(|n| event(stream_id, n)).collect(),
    }
}

pub fn record(key: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.to_owned(),
        request: json!({"command": "fund", "key": key}),
        outcome: json!({"ok": true}),
    }
}
