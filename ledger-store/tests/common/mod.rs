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
            command: None,
            delivery: None,
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

/// A keyed request: `appends` and its idempotency row, backed as `ledger_store::outcome_log` requires: by
/// the request's first event (which gets the command id and key in its metadata), or, for a request without
/// events, by an outcome entry in `outcome-<command id>`.
pub fn keyed(
    mut appends: Vec<StreamAppend>,
    key: &str,
) -> (Vec<StreamAppend>, Option<IdempotencyRecord>) {
    let command_id = Uuid::new_v4();
    let first = appends.iter_mut().flat_map(|a| a.events.iter_mut()).next();
    let outcome = match first {
        Some(event) => {
            event.metadata.correlation_id = Some(command_id);
            event.metadata.idempotency_key = Some(key.to_owned());
            json!({"status": "accepted", "command_id": command_id,
                   "events": [{"event_id": event.event_id}]})
        }
        None => {
            let stream = format!("outcome-{command_id}");
            appends.push(StreamAppend {
                stream_id: stream.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: Uuid::new_v4(),
                    stream_id: stream,
                    event_type: "CommandOutcomeRecorded".to_owned(),
                    schema_version: 1,
                    payload: json!({"type": "CommandOutcomeRecorded", "idempotency_key": key,
                                    "command": {"command_id": command_id}}),
                    metadata: EventMetadata {
                        correlation_id: Some(command_id),
                        idempotency_key: Some(key.to_owned()),
                        ..EventMetadata::default()
                    },
                }],
            });
            json!({"status": "accepted", "command_id": command_id, "events": []})
        }
    };
    let record = IdempotencyRecord {
        key: key.to_owned(),
        request: json!({"command": "fund", "key": key}),
        outcome,
    };
    (appends, Some(record))
}

/// `EventStore::append` of a request as `keyed` builds it.
#[async_trait::async_trait]
pub trait AppendRequest {
    async fn append_request(
        &self,
        ledger: &str,
        request: (Vec<StreamAppend>, Option<IdempotencyRecord>),
    ) -> ledger_store::Result<ledger_store::AppendOutcome>;
}

#[async_trait::async_trait]
impl<T: ledger_store::EventStore + ?Sized> AppendRequest for T {
    async fn append_request(
        &self,
        ledger: &str,
        (appends, record): (Vec<StreamAppend>, Option<IdempotencyRecord>),
    ) -> ledger_store::Result<ledger_store::AppendOutcome> {
        self.append(ledger, appends, record).await
    }
}
