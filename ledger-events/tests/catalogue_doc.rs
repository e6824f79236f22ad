//! `docs/events.md` against the code: every public type has an example there, no section names a type the
//! code does not emit, and every example decodes as the core's event of its type (its `data`, with its
//! entry turned back into the core's journal entry), so the documented fields cannot drift from the events.

use ledger_core::Event;
use ledger_core::engine::StreamId;
use ledger_events::PublicEvent;
use ledger_events::catalogue::public_types;
use serde_json::{Value, json};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
    std::fs::read_to_string(path).expect("docs/events.md exists")
}

/// `(type, example JSON or None)` per `### \`type\`` section.
fn sections(doc: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for part in doc.split("\n### `").skip(1) {
        let (name, body) = part
            .split_once('`')
            .expect("a section heading ends with a backtick");
        let json = body
            .split_once("```json\n")
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .map(|(json, _)| json.to_string());
        out.push((name.to_string(), json));
    }
    out
}

/// `deposit_succeeded` into `DepositSucceeded`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The stored payload the example was mapped from: `data` with its type tag and the core's entry.
fn stored_payload(event: &PublicEvent, stored_type: &str) -> Value {
    let mut payload = event.data.clone();
    let map = payload.as_object_mut().expect("data is an object");
    map.insert("type".into(), json!(stored_type));
    if let Some(entry) = &event.entry {
        let postings: Vec<Value> = entry
            .postings
            .iter()
            .map(|p| {
                json!({
                    "account": p.account, "side": p.side,
                    "amount": {"amount": p.amount, "currency": p.currency},
                })
            })
            .collect();
        map.insert(
            "entry".into(),
            json!({
                "id": entry.entry_id, "currency": entry.currency,
                "effective_at": entry.effective_at, "recorded_at": event.recorded_at,
                "postings": postings,
            }),
        );
    }
    payload
}

#[test]
fn every_public_type_has_an_example_that_decodes_as_its_type() {
    let doc = doc();
    let found = sections(&doc);
    let documented: Vec<&String> = found.iter().map(|(t, _)| t).collect();
    let types = public_types();
    for t in &types {
        assert!(
            documented.contains(&t),
            "docs/events.md has no section for {t}: regenerate it (ledger-events/examples/catalogue.rs)"
        );
    }
    for (t, json) in &found {
        assert!(
            types.contains(t),
            "docs/events.md documents {t}, which the code does not emit"
        );
        let json = json
            .as_ref()
            .unwrap_or_else(|| panic!("docs/events.md has no example of {t}"));
        let event: PublicEvent = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("the example of {t} is not a public event: {e}"));
        assert_eq!(
            &event.event_type, t,
            "the example under {t} is of another type"
        );
        assert_eq!(event.schema_version, ledger_events::SCHEMA_VERSION);
        if event.stream_kind == "monitor" {
            for field in ["monitor_id", "condition", "account", "balance", "caused_by"] {
                assert!(event.data.get(field).is_some(), "{t}: no {field}");
            }
            continue;
        }
        if event.stream_kind == "outcome" {
            // Delivery bookkeeping (dedupe keys, body digests, command envelopes) never leaves.
            assert_eq!(event.data, json!({}), "{t}: an outcome's data leaks");
            continue;
        }
        let stream: StreamId = event.stream.parse().expect("a stream id");
        let (_, snake) = t.split_once('.').expect("kind.event");
        let stored_type = camel(snake);
        let payload = stored_payload(&event, &stored_type);
        let decoded = Event::from_stored(&stream, &stored_type, 1, payload)
            .unwrap_or_else(|e| panic!("the example of {t} does not decode: {e}"));
        assert_eq!(
            decoded.entry().is_some(),
            event.entry.is_some(),
            "{t}: an entry where the event has none, or none where it has one"
        );
    }
}
