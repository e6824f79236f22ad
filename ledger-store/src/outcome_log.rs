//! Every recorded outcome is in the chain (issue 19): an idempotency row or an inbox row is accepted only
//! together with a log entry that records the same outcome (migration 20261205000102 checks it in
//! PostgreSQL at commit; [`idempotency_backed`] and [`inbox_backed`] are the same rule for the in-memory
//! store). The executor builds those log entries here:
//!   * an accepted outcome with events is backed by its first event (same command id and key in metadata);
//!   * any other keyed outcome by `CommandOutcomeRecorded` in `outcome-<command id>`;
//!   * an inbox row by the first event of the command it ran, when that command appended events under the
//!     delivery's own dedupe key (`metadata.delivery`, see [`back_delivery`]), else by `DeliveryRecorded`
//!     in `outcome-<delivery id>` (both with its body's SHA-256).

use ledger_core::engine::{self, CommandEnvelope, StreamId};
use ledger_core::outcomes::{OutcomeEvent, outcome_event_id};
use serde_json::Value;
use uuid::Uuid;

use crate::executor::CommandOutcome;
use crate::types::{
    DeliveryStamp, EventMetadata, ExpectedVersion, IdempotencyRecord, InboxRow, NewEvent,
    StreamAppend,
};

/// The log entry of a recorded outcome that wrote no other event (a rejection, an accepted no-op): an
/// idempotency row is only ever backed by the log (migration 20261205000102 checks it at commit).
pub fn outcome_append(
    env: &CommandEnvelope,
    key: Option<&str>,
    outcome: &CommandOutcome,
    recorded: bool,
) -> Option<StreamAppend> {
    let rejection = match outcome {
        CommandOutcome::Accepted { events, .. } if events.is_empty() => None,
        CommandOutcome::Rejected { rejection, .. } => Some(rejection.clone()),
        CommandOutcome::Accepted { .. } => return None,
    };
    let key = key.filter(|_| recorded)?;
    let event = ledger_core::Event::Outcome(OutcomeEvent::CommandOutcomeRecorded {
        command: env.clone(),
        idempotency_key: key.to_string(),
        rejection,
    });
    Some(outcome_stream_append(env.command_id, event, env, Some(key)))
}

/// Backs a delivery's inbox row in the log. When the delivery ran a command that appended events under
/// its own dedupe key, the first of those events (the one its idempotency record names) carries the
/// delivery (`metadata.delivery`): the row then needs no event of its own, which is a quarter of a deposit
/// callback's events (issue 23). Any other row gets its `DeliveryRecorded`.
pub fn back_delivery(
    appends: &mut Vec<StreamAppend>,
    row: &InboxRow,
    key: Option<&str>,
    outcome: &CommandOutcome,
) {
    let first = match outcome {
        CommandOutcome::Accepted {
            command_id, events, ..
        } if row.command_id == Some(*command_id)
            && key.is_some_and(|k| crate::types::escape_nul(&row.dedupe_key) == k) =>
        {
            events.first().map(|e| e.event_id)
        }
        _ => None,
    };
    let carrier = first.and_then(|id| {
        appends
            .iter_mut()
            .flat_map(|a| a.events.iter_mut())
            .find(|e| e.event_id == id)
    });
    match carrier {
        Some(event) => event.metadata.delivery = Some(delivery_stamp(row)),
        None => appends.push(delivery_append(row)),
    }
}

/// What the log keeps of a delivery: its row's fields as stored (NUL escaped) and its body's SHA-256.
pub fn delivery_stamp(row: &InboxRow) -> DeliveryStamp {
    use sha2::Digest as _;
    DeliveryStamp {
        delivery_id: row.delivery_id,
        disposition: crate::types::escape_nul(&row.disposition),
        dedupe_key: crate::types::escape_nul(&row.dedupe_key),
        body_sha256: hex::encode(sha2::Sha256::digest(&row.raw_body)),
    }
}

/// The log entry of an inbox row: what it says of the delivery (its stamp's facts), and its gateway.
pub fn delivery_append(row: &InboxRow) -> StreamAppend {
    let stamp = delivery_stamp(row);
    let event = ledger_core::Event::Outcome(OutcomeEvent::DeliveryRecorded {
        delivery_id: stamp.delivery_id,
        gateway: crate::types::escape_nul(&row.gateway),
        dedupe_key: stamp.dedupe_key,
        disposition: stamp.disposition,
        command_id: row.command_id,
        body_sha256: stamp.body_sha256,
    });
    let (event_type, payload) = event.to_stored();
    StreamAppend {
        stream_id: StreamId::Outcome(row.delivery_id).to_string(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_id: outcome_event_id(row.delivery_id),
            stream_id: StreamId::Outcome(row.delivery_id).to_string(),
            event_type,
            schema_version: engine::SCHEMA_VERSION,
            payload,
            metadata: EventMetadata {
                causation_id: row.command_id,
                correlation_id: row.correlation_id,
                actor: Some(format!("gateway:{}", row.gateway)),
                idempotency_key: None,
                command: None,
                delivery: None,
            },
        }],
    }
}

fn outcome_stream_append(
    id: Uuid,
    event: ledger_core::Event,
    env: &CommandEnvelope,
    key: Option<&str>,
) -> StreamAppend {
    let (event_type, payload) = event.to_stored();
    StreamAppend {
        stream_id: StreamId::Outcome(id).to_string(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_id: outcome_event_id(id),
            stream_id: StreamId::Outcome(id).to_string(),
            event_type,
            schema_version: engine::SCHEMA_VERSION,
            payload,
            metadata: EventMetadata {
                causation_id: Some(env.command_id),
                correlation_id: Some(env.command_id),
                actor: Some(env.actor.to_string()),
                idempotency_key: key.map(str::to_string),
                command: None,
                delivery: None,
            },
        }],
    }
}

/// One event as the backing rule sees it (a logged one, or one of the request being checked).
pub struct EventView<'a> {
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a EventMetadata,
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_str)
}

/// Whether `record` is backed by one of `events` (`ledger.idempotency_is_logged`).
pub fn idempotency_backed<'a>(
    record: &IdempotencyRecord,
    mut events: impl Iterator<Item = EventView<'a>>,
) -> bool {
    let outcome = &record.outcome;
    let command = text(outcome, &["command_id"]);
    match (text(outcome, &["status"]), first_event_id(outcome)) {
        (Some("accepted"), Some(first)) => events.any(|e| {
            e.event_id == first
                && e.metadata.correlation_id.map(|c| c.to_string()).as_deref() == command
                && e.metadata.idempotency_key.as_deref() == Some(record.key.as_str())
        }),
        _ => {
            let Some(command) = command else { return false };
            let stream = format!("outcome-{command}");
            events.any(|e| {
                e.stream_id == stream
                    && e.stream_version == 1
                    && e.event_type == "CommandOutcomeRecorded"
                    && text(e.payload, &["idempotency_key"]) == Some(record.key.as_str())
                    && text(e.payload, &["command", "command_id"]) == Some(command)
                    && text(e.payload, &["rejection", "code"])
                        == text(outcome, &["rejection", "code"])
            })
        }
    }
}

/// A delivery answered with the outcome recorded under its own dedupe key: its row is backed by that outcome
/// (in the chain already), so it appends nothing (`ledger.inbox_is_logged`, second case).
pub fn is_replayed_duplicate(row: &InboxRow, key: &str, command_id: Uuid) -> bool {
    row.disposition == "duplicate"
        && row.command_id == Some(command_id)
        && crate::types::escape_nul(&row.dedupe_key) == key
}

/// Whether the stored (escaped) inbox `row` is backed by one of `events` (`ledger.inbox_is_logged`): by its
/// `DeliveryRecorded`, by the first event of the command it ran (`recorded`: the record under its dedupe
/// key, which names that event), or, for a replayed duplicate, by the record it repeats.
pub fn inbox_backed_or_duplicate<'a, I: Iterator<Item = EventView<'a>>>(
    row: &InboxRow,
    recorded: Option<&IdempotencyRecord>,
    events: impl Fn() -> I,
) -> bool {
    let repeats = recorded.is_some_and(|r| {
        row.command_id.is_some_and(|c| {
            is_replayed_duplicate(row, &r.key, c)
                && text(&r.outcome, &["command_id"]) == Some(c.to_string().as_str())
        })
    });
    repeats || stamped_by_its_command(row, recorded, events()) || inbox_backed(row, events())
}

/// Whether the stored inbox `row` is carried by the first event of the command it ran: the record under its
/// dedupe key accepted that command with events, and the first of them names this delivery, disposition
/// and body (`metadata.delivery`).
fn stamped_by_its_command<'a>(
    row: &InboxRow,
    recorded: Option<&IdempotencyRecord>,
    mut events: impl Iterator<Item = EventView<'a>>,
) -> bool {
    let (Some(record), Some(command)) = (recorded, row.command_id) else {
        return false;
    };
    let outcome = &record.outcome;
    let accepted_here = record.key == row.dedupe_key
        && text(outcome, &["status"]) == Some("accepted")
        && text(outcome, &["command_id"]) == Some(command.to_string().as_str());
    let Some(first) = first_event_id(outcome).filter(|_| accepted_here) else {
        return false;
    };
    let stamp = delivery_stamp(row);
    events.any(|e| {
        e.event_id == first
            && e.metadata.correlation_id == Some(command)
            && e.metadata.delivery.as_ref() == Some(&stamp)
    })
}

/// The first event an idempotency record's outcome names (`events[0].event_id`), if any.
fn first_event_id(outcome: &Value) -> Option<Uuid> {
    outcome
        .get("events")
        .and_then(|e| e.get(0))
        .and_then(|e| text(e, &["event_id"]))
        .and_then(|id| id.parse::<Uuid>().ok())
}

/// Whether the stored (escaped) inbox `row` is backed by one of `events`.
pub fn inbox_backed<'a>(row: &InboxRow, mut events: impl Iterator<Item = EventView<'a>>) -> bool {
    use sha2::Digest as _;
    let stream = StreamId::Outcome(row.delivery_id).to_string();
    let body = hex::encode(sha2::Sha256::digest(&row.raw_body));
    let command = row.command_id.map(|c| c.to_string());
    events.any(|e| {
        e.stream_id == stream
            && e.stream_version == 1
            && e.event_type == "DeliveryRecorded"
            && text(e.payload, &["disposition"]) == Some(row.disposition.as_str())
            && text(e.payload, &["dedupe_key"]) == Some(row.dedupe_key.as_str())
            && text(e.payload, &["command_id"]) == command.as_deref()
            && text(e.payload, &["body_sha256"]) == Some(body.as_str())
    })
}
