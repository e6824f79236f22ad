//! One contract, two implementations: every test here runs against `PgEventStore` (a fresh
//! database each) and `InMemoryEventStore`.

mod common;

use common::{AppendRequest, LEDGER, append, event, keyed};
use ledger_store::outcome_log::{delivery_append, delivery_stamp};
use ledger_store::testdb::TestDb;
use ledger_store::{
    EventStore, ExpectedVersion, INBOX_BODY_MAX, InMemoryEventStore, InboxRow, Snapshot,
    StoreError, StreamAppend,
};
use serde_json::json;

async fn appends_get_versions_and_gapless_positions(store: &dyn EventStore) {
    let first = store
        .append(
            LEDGER,
            vec![append("a", ExpectedVersion::NoStream, 2)],
            None,
        )
        .await;
    let first = first.expect("first append");
    let second = store
        .append(LEDGER, vec![append("b", ExpectedVersion::Any, 1)], None)
        .await;
    let second = second.expect("second append");
    let positions: Vec<i64> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert_eq!(
        first
            .events
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    let log = store.read_log(LEDGER, 0, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position.unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(log[0].event_id, first.events[0].event_id);
    assert_eq!(log[0].payload["note"], json!("é \"quoted\"\n"));
    assert_eq!(
        store.read_log(LEDGER, 1, 1).await.unwrap()[0].position,
        Some(2)
    );
    let stream = store.read_stream(LEDGER, "a", 1, 100).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].stream_version, 2);
    assert_eq!(store.head_position(LEDGER).await.unwrap(), 3);
}

fn is_conflict(
    result: &Result<ledger_store::AppendOutcome, StoreError>,
    actual: Option<i64>,
) -> bool {
    matches!(result, Err(StoreError::ConcurrencyConflict { actual: a, .. }) if *a == actual)
}

async fn expected_version_is_exact(store: &dyn EventStore) {
    store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::NoStream, 2)],
            None,
        )
        .await
        .unwrap();
    let cases = [
        (ExpectedVersion::NoStream, false),
        (ExpectedVersion::Exact(1), false), // behind
        (ExpectedVersion::Exact(3), false), // ahead
        (ExpectedVersion::Exact(2), true),
    ];
    for (expected, succeeds) in cases {
        let result = store
            .append(LEDGER, vec![append("s", expected, 1)], None)
            .await;
        if succeeds {
            assert!(result.is_ok(), "{expected:?}: {result:?}");
        } else {
            assert!(is_conflict(&result, Some(2)), "{expected:?}: {result:?}");
        }
    }
    let result = store
        .append(
            LEDGER,
            vec![append("new", ExpectedVersion::Exact(0), 1)],
            None,
        )
        .await;
    assert!(is_conflict(&result, None), "{result:?}");
    let result = store
        .append(LEDGER, vec![append("s", ExpectedVersion::Any, 1)], None)
        .await;
    assert_eq!(result.unwrap().events[0].stream_version, 4);
}

async fn multi_stream_append_is_all_or_nothing(store: &dyn EventStore) {
    store
        .append(
            LEDGER,
            vec![append("wallet", ExpectedVersion::NoStream, 1)],
            None,
        )
        .await
        .unwrap();
    let both = vec![
        append("escrow", ExpectedVersion::NoStream, 1),
        append("wallet", ExpectedVersion::Exact(7), 1),
    ];
    let result = store.append_request(LEDGER, keyed(both, "k-atomic")).await;
    assert!(
        matches!(&result, Err(StoreError::ConcurrencyConflict { stream_id, .. }) if stream_id == "wallet")
    );
    assert!(
        store
            .read_stream(LEDGER, "escrow", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.head_position(LEDGER).await.unwrap(), 1);
    assert!(
        store
            .get_idempotency(LEDGER, "k-atomic")
            .await
            .unwrap()
            .is_none()
    );
    let both = vec![
        append("escrow", ExpectedVersion::NoStream, 1),
        append("wallet", ExpectedVersion::Exact(1), 2),
    ];
    let outcome = store.append(LEDGER, both, None).await.unwrap();
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

async fn idempotency_key_is_recorded_once(store: &dyn EventStore) {
    let (appends, rec) = keyed(vec![append("i", ExpectedVersion::Any, 1)], "k1");
    store.append(LEDGER, appends, rec.clone()).await.unwrap();
    assert_eq!(store.get_idempotency(LEDGER, "k1").await.unwrap(), rec);
    let again = store
        .append_request(
            LEDGER,
            keyed(vec![append("i2", ExpectedVersion::Any, 1)], "k1"),
        )
        .await;
    assert!(
        matches!(&again, Err(StoreError::DuplicateIdempotencyKey { key }) if key == "k1"),
        "{again:?}"
    );
    assert!(
        store
            .read_stream(LEDGER, "i2", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_idempotency(LEDGER, "other")
            .await
            .unwrap()
            .is_none()
    );
}

async fn event_ids_are_unique(store: &dyn EventStore) {
    let first = append("e", ExpectedVersion::Any, 1);
    let mut copy = append("e2", ExpectedVersion::Any, 1);
    copy.events[0].event_id = first.events[0].event_id;
    store.append(LEDGER, vec![first], None).await.unwrap();
    let result = store.append(LEDGER, vec![copy], None).await;
    assert!(
        matches!(result, Err(StoreError::DuplicateEventId { .. })),
        "{result:?}"
    );
}

async fn invalid_appends_are_rejected(store: &dyn EventStore) {
    let empty = StreamAppend {
        stream_id: "x".into(),
        expected: ExpectedVersion::Any,
        events: vec![],
    };
    let result = store.append(LEDGER, vec![empty], None).await;
    assert!(matches!(result, Err(StoreError::InvalidAppend { .. })));
    let mut wrong = append("x", ExpectedVersion::Any, 1);
    wrong.events.push(event("y", 2));
    let result = store.append(LEDGER, vec![wrong], None).await;
    assert!(matches!(result, Err(StoreError::InvalidAppend { .. })));
}

async fn batch_isolates_failing_requests(store: &dyn EventStore) {
    store
        .append_request(
            LEDGER,
            keyed(vec![append("taken", ExpectedVersion::NoStream, 1)], "used"),
        )
        .await
        .unwrap();
    let requests = vec![
        keyed(vec![append("b1", ExpectedVersion::NoStream, 2)], "r1"),
        (vec![append("taken", ExpectedVersion::NoStream, 1)], None),
        (vec![append("b1", ExpectedVersion::Exact(2), 1)], None),
        keyed(vec![append("b2", ExpectedVersion::Any, 1)], "used"),
        keyed(vec![append("b3", ExpectedVersion::Any, 1)], "r1"),
        (vec![append("b4", ExpectedVersion::Any, 1)], None),
    ];
    let results = store
        .append_batch(LEDGER, requests.into_iter().map(Into::into).collect())
        .await
        .unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(
        results[0]
            .as_ref()
            .unwrap()
            .events
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(is_conflict(&results[1], Some(1)), "{:?}", results[1]);
    assert_eq!(results[2].as_ref().unwrap().events[0].stream_version, 3);
    assert!(
        matches!(results[3], Err(StoreError::DuplicateIdempotencyKey { .. })),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Err(StoreError::DuplicateIdempotencyKey { .. })),
        "{:?}",
        results[4]
    );
    assert_eq!(results[5].as_ref().unwrap().events[0].position, 5);
    let log = store.read_log(LEDGER, 0, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position.unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(
        store
            .read_stream(LEDGER, "b2", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.verify_chain(LEDGER, None).await.unwrap().is_intact());
}

async fn snapshots_are_replaceable(store: &dyn EventStore) {
    assert!(store.load_snapshot(LEDGER, "s", 1).await.unwrap().is_none());
    // A snapshot is only of a version the stream has reached (PostgreSQL refuses any other).
    store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::NoStream, 9)],
            None,
        )
        .await
        .unwrap();
    let mut snapshot = Snapshot {
        stream_id: "s".into(),
        stream_version: 3,
        fold_version: 1,
        state: json!({"balance": 10}),
        taken_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap(),
    };
    store.save_snapshot(LEDGER, &snapshot).await.unwrap();
    snapshot.stream_version = 9;
    store.save_snapshot(LEDGER, &snapshot).await.unwrap();
    assert_eq!(
        store.load_snapshot(LEDGER, "s", 1).await.unwrap(),
        Some(snapshot)
    );
    assert!(store.load_snapshot(LEDGER, "s", 2).await.unwrap().is_none());
}

async fn ledgers_are_independent(store: &dyn EventStore) {
    store.create_ledger("second").await.unwrap();
    assert!(matches!(
        store.create_ledger("second").await,
        Err(StoreError::LedgerExists { .. })
    ));
    assert_eq!(
        store.list_ledgers().await.unwrap(),
        vec!["default".to_owned(), "second".to_owned()]
    );
    store
        .append(LEDGER, vec![append("s", ExpectedVersion::Any, 2)], None)
        .await
        .unwrap();
    let other = store
        .append_request(
            "second",
            keyed(vec![append("s", ExpectedVersion::NoStream, 1)], "k"),
        )
        .await;
    assert_eq!(other.unwrap().events[0].position, 1);
    store
        .append_request(
            LEDGER,
            keyed(vec![append("t", ExpectedVersion::Any, 1)], "k"),
        )
        .await
        .unwrap();
    let unknown = store
        .append("nope", vec![append("s", ExpectedVersion::Any, 1)], None)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownLedger { .. })),
        "{unknown:?}"
    );
    let unknown = store
        .append_request(
            "nope",
            keyed(vec![append("s", ExpectedVersion::Any, 1)], "z"),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownLedger { .. })),
        "{unknown:?}"
    );
    assert!(
        store
            .verify_chain("second", None)
            .await
            .unwrap()
            .is_intact()
    );
}

async fn chain_verifies_and_seals(store: &dyn EventStore) {
    let empty = store.seal(LEDGER).await.unwrap();
    assert_eq!(
        (empty.position, empty.hash_hex.as_str()),
        (0, "0".repeat(64).as_str())
    );
    for n in 0..5 {
        store
            .append(
                LEDGER,
                vec![append(&format!("c{n}"), ExpectedVersion::Any, 2)],
                None,
            )
            .await
            .unwrap();
    }
    let seal = store.seal(LEDGER).await.unwrap();
    assert_eq!(seal.position, 10);
    let report = store
        .verify_chain(LEDGER, Some(seal.clone()))
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.events_verified, report.seal_matches),
        (10, Some(true))
    );
    assert_eq!(report.head_hash_hex, seal.hash_hex);
    let mut forged = seal.clone();
    forged.hash_hex = "ab".repeat(32);
    let report = store.verify_chain(LEDGER, Some(forged)).await.unwrap();
    assert_eq!(report.seal_matches, Some(false));
    assert!(!report.is_intact());
    let old = store.verify_chain(LEDGER, Some(empty)).await.unwrap();
    assert!(old.is_intact(), "{old:?}");
}

async fn time_maps_to_positions(store: &dyn EventStore) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    store
        .append(LEDGER, vec![append("t", ExpectedVersion::Any, 3)], None)
        .await
        .unwrap();
    assert_eq!(
        store.position_at_or_before(LEDGER, before).await.unwrap(),
        0
    );
    let log = store.read_log(LEDGER, 0, 10).await.unwrap();
    let at = log[2].sequenced_at.unwrap();
    assert_eq!(store.position_at_or_before(LEDGER, at).await.unwrap(), 3);
    assert!(
        log.windows(2)
            .all(|w| w[0].sequenced_at <= w[1].sequenced_at)
    );
}

async fn subscription_tails_the_log(store: &dyn EventStore) {
    store
        .append(LEDGER, vec![append("sub", ExpectedVersion::Any, 2)], None)
        .await
        .unwrap();
    let mut subscription = store.subscribe(LEDGER, 1).await.unwrap();
    let batch = subscription.next_batch().await.unwrap();
    assert_eq!(
        batch
            .iter()
            .map(|e| e.position.unwrap())
            .collect::<Vec<_>>(),
        vec![2]
    );
    let waiting = tokio::spawn(async move {
        let batch = subscription.next_batch().await.unwrap();
        (batch, subscription.position())
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    store
        .append(LEDGER, vec![append("sub", ExpectedVersion::Any, 1)], None)
        .await
        .unwrap();
    let (batch, position) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("subscriber woke up")
        .unwrap();
    assert_eq!(batch[0].position, Some(3));
    assert_eq!(position, 3);
}

fn inbox_row(dedupe_key: &str, event_id: &str, body: &[u8]) -> InboxRow {
    InboxRow {
        delivery_id: uuid::Uuid::new_v4(),
        gateway: "stripe".into(),
        gateway_event_id: event_id.into(),
        event_type: "charge.succeeded".into(),
        dedupe_key: dedupe_key.into(),
        payment_reference: Some("ref\0x".into()),
        disposition: "applied".into(),
        detail: "deposit confirmed".into(),
        command_id: Some(uuid::Uuid::new_v4()),
        correlation_id: None,
        raw_body: body.to_vec(),
        received_at: chrono::DateTime::from_timestamp_micros(1_780_000_000_000_000).unwrap(),
        signature: Some("stripe-signature: t=1,v1=00".into()),
    }
}

/// The inbox row commits with the events or not at all; NUL in text is escaped, the body kept byte-exact.
async fn inbox_rows_commit_with_their_append(store: &dyn EventStore) {
    let body = b"{\"id\":\"evt\\u0000\"}\0\xff".to_vec();
    let row = inbox_row("dk-1", "evt\0nul", &body);
    let (mut appends, record) = keyed(vec![append("p", ExpectedVersion::NoStream, 1)], "k-inbox");
    appends.push(delivery_append(&row));
    store
        .append_with_inbox(LEDGER, appends, record, Some(row.clone()))
        .await
        .expect("append with its inbox row");
    let stored = store.read_inbox(LEDGER, "dk-1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].gateway_event_id, "evt\\u0000nul");
    assert_eq!(stored[0].payment_reference.as_deref(), Some("ref\\u0000x"));
    assert_eq!(stored[0].raw_body, body);
    assert_eq!(stored[0].delivery_id, row.delivery_id);
    assert_eq!(stored[0].received_at, row.received_at);
    // A conflicting append takes its inbox row (and its key) down with it.
    let lost = inbox_row("dk-2", "e2", b"{}");
    let (mut appends, record) = keyed(vec![append("p", ExpectedVersion::NoStream, 1)], "k-lost");
    appends.push(delivery_append(&lost));
    let failed = store
        .append_with_inbox(LEDGER, appends, record, Some(lost))
        .await;
    assert!(is_conflict(&failed, Some(1)), "{failed:?}");
    assert!(store.read_inbox(LEDGER, "dk-2").await.unwrap().is_empty());
    assert!(
        store
            .get_idempotency(LEDGER, "k-lost")
            .await
            .unwrap()
            .is_none()
    );
    // A delivery that runs no command: one row alone; the same delivery twice is refused.
    let alone = inbox_row("dk\0-3", "e3", b"{}");
    let record_alone = |row: InboxRow| {
        let appends = vec![delivery_append(&row)];
        store.append_with_inbox(LEDGER, appends, None, Some(row))
    };
    record_alone(alone.clone()).await.unwrap();
    let again = record_alone(alone).await;
    assert!(
        matches!(again, Err(StoreError::DuplicateDelivery)),
        "{again:?}"
    );
    assert_eq!(store.read_inbox(LEDGER, "dk\0-3").await.unwrap().len(), 1);
    let huge = inbox_row("dk-4", "e4", &vec![b'x'; INBOX_BODY_MAX + 1]);
    let refused = record_alone(huge).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidAppend { .. })),
        "{refused:?}"
    );
}

/// Every recorded outcome is in the chain (issue 19, finding 2): an idempotency row or an inbox row whose
/// log entry is missing or records another outcome is refused, and nothing of its request is written. Not in
/// the `contract!` list: on Citus the commit-time trigger does not exist (a shard trigger cannot read the log
/// safely), and there `verify` names such rows instead (`unbacked_outcome_rows_are_named_row_by_row`).
async fn outcomes_without_their_log_entry_are_refused(store: &dyn EventStore) {
    let (appends, genuine) = keyed(vec![append("o", ExpectedVersion::NoStream, 1)], "k-genuine");
    store
        .append(LEDGER, appends, genuine.clone())
        .await
        .unwrap();
    let genuine = genuine.unwrap();
    // A "rejected" outcome under a future key, with no log entry at all.
    let forged = ledger_store::IdempotencyRecord {
        key: "callback:paystack:future".into(),
        request: json!({}),
        outcome: json!({"status": "rejected", "command_id": uuid::Uuid::new_v4(),
                        "rejection": {"code": "invalid_transition", "message": "deposit is not pending"}}),
    };
    // The genuine row's log entry does not back another key or another outcome either.
    let mut reused = genuine.clone();
    reused.key = "callback:paystack:other".into();
    let mut rejected = genuine.clone();
    rejected.key = "k-rejected".into();
    rejected.outcome["status"] = json!("rejected");
    rejected.outcome["rejection"] = json!({"code": "invalid_transition", "message": "x"});
    for record in [forged, reused, rejected] {
        let key = record.key.clone();
        let result = store
            .append(
                LEDGER,
                vec![append("o2", ExpectedVersion::Any, 1)],
                Some(record),
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::OutcomeNotLogged { .. })),
            "{key}: {result:?}"
        );
        assert!(
            store.get_idempotency(LEDGER, &key).await.unwrap().is_none(),
            "{key}"
        );
    }
    // An inbox row without its `DeliveryRecorded`, or with one that says another disposition or body.
    let row = inbox_row("dk-forged", "e9", b"{}");
    let mut other = row.clone();
    other.disposition = "rejected".into();
    let mut other_body = row.clone();
    other_body.raw_body = b"{\"amount\":1}".to_vec();
    for (appends, row) in [
        (vec![], row.clone()),
        (vec![delivery_append(&row)], other),
        (vec![delivery_append(&row)], other_body),
    ] {
        let result = store
            .append_with_inbox(LEDGER, appends, None, Some(row))
            .await;
        assert!(
            matches!(result, Err(StoreError::OutcomeNotLogged { .. })),
            "{result:?}"
        );
    }
    assert!(
        store
            .read_inbox(LEDGER, "dk-forged")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(LEDGER, "o2", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A delivery whose command appended events is backed by the event its idempotency record names first
/// (`metadata.delivery`, migration 20261209000101), with no `DeliveryRecorded` of its own; a row that this
/// event does not name exactly (another delivery, body, disposition or command, or a stamp on another
/// event) is refused like any unbacked row. Not in the `contract!` list, for the reason given at
/// `outcomes_without_their_log_entry_are_refused`.
async fn a_delivery_is_carried_by_its_commands_first_event(store: &dyn EventStore) {
    // A command of two events under `key` (its idempotency record names the first), whose event `stamped_at`
    // carries the delivery `stamped`, and the inbox row `row`; both take the command's id.
    let request = |key: &str, stamped: &InboxRow, stamped_at: usize, row: &InboxRow| {
        let (mut appends, record) = keyed(vec![append(key, ExpectedVersion::NoStream, 2)], key);
        let record = record.expect("keyed");
        let command: uuid::Uuid = record.outcome["command_id"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .expect("its command");
        let (mut stamped, mut row) = (stamped.clone(), row.clone());
        stamped.command_id = Some(command);
        row.command_id = Some(command);
        appends[0].events[stamped_at].metadata.delivery = Some(delivery_stamp(&stamped));
        (appends, record, row)
    };
    let genuine = inbox_row("k-carried", "e1", b"{\"id\":1}");
    let (appends, record, row) = request("k-carried", &genuine, 0, &genuine);
    store
        .append_with_inbox(LEDGER, appends, Some(record), Some(row))
        .await
        .expect("carried by its command's first event");
    assert_eq!(
        store.read_inbox(LEDGER, "k-carried").await.unwrap().len(),
        1
    );
    // Each forged row differs from what its request's event says in one thing only.
    // (what differs, how the row is changed, which event of the request carries the stamp)
    type Forgery = (&'static str, fn(&mut InboxRow), usize);
    let cases: [Forgery; 5] = [
        ("another body", |r| r.raw_body = b"{\"id\":2}".to_vec(), 0),
        (
            "another disposition",
            |r| r.disposition = "anomaly".into(),
            0,
        ),
        (
            "another delivery",
            |r| r.delivery_id = uuid::Uuid::new_v4(),
            0,
        ),
        (
            "another dedupe key",
            |r| r.dedupe_key = "k-elsewhere".into(),
            0,
        ),
        ("the stamp on the second event", |_| {}, 1),
    ];
    for (n, (name, change, stamped_at)) in cases.into_iter().enumerate() {
        let key = format!("k-forged-{n}");
        let stamped = inbox_row(&key, "e2", b"{\"id\":1}");
        let mut row = stamped.clone();
        change(&mut row);
        let (appends, record, row) = request(&key, &stamped, stamped_at, &row);
        let result = store
            .append_with_inbox(LEDGER, appends, Some(record), Some(row))
            .await;
        assert!(
            matches!(result, Err(StoreError::OutcomeNotLogged { .. })),
            "{name}: {result:?}"
        );
        assert!(
            store
                .read_stream(LEDGER, &key, 0, 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}: nothing of the request is written"
        );
    }
    // A second row for the genuine delivery's key and command, resting on the genuine event: refused.
    let mut again = store.read_inbox(LEDGER, "k-carried").await.unwrap()[0].clone();
    again.delivery_id = uuid::Uuid::new_v4();
    let result = store
        .append_with_inbox(LEDGER, vec![], None, Some(again))
        .await;
    assert!(
        matches!(result, Err(StoreError::OutcomeNotLogged { .. })),
        "{result:?}"
    );
    assert_eq!(
        store.read_inbox(LEDGER, "k-carried").await.unwrap().len(),
        1
    );
}

/// A stream given without events is a version check: it guards the request and writes nothing.
async fn read_checks_guard_a_request(store: &dyn EventStore) {
    store
        .append(
            LEDGER,
            vec![append("r", ExpectedVersion::NoStream, 1)],
            None,
        )
        .await
        .unwrap();
    let check = |expected| StreamAppend {
        stream_id: "r".into(),
        expected,
        events: vec![],
    };
    store
        .append_request(
            LEDGER,
            keyed(
                vec![
                    check(ExpectedVersion::Exact(1)),
                    append("w", ExpectedVersion::NoStream, 1),
                ],
                "k-checked",
            ),
        )
        .await
        .expect("the stream read is current");
    store
        .append(
            LEDGER,
            vec![append("r", ExpectedVersion::Exact(1), 1)],
            None,
        )
        .await
        .unwrap();
    let stale = store
        .append_request(
            LEDGER,
            keyed(vec![check(ExpectedVersion::Exact(1))], "k-stale"),
        )
        .await;
    assert!(is_conflict(&stale, Some(2)), "{stale:?}");
    assert!(
        store
            .get_idempotency(LEDGER, "k-stale")
            .await
            .unwrap()
            .is_none()
    );
    let requests = vec![
        keyed(vec![check(ExpectedVersion::Exact(1))], "k-b1"),
        keyed(vec![check(ExpectedVersion::Exact(2))], "k-b2"),
    ];
    let results = store
        .append_batch(LEDGER, requests.into_iter().map(Into::into).collect())
        .await
        .unwrap();
    assert!(matches!(
        results[0],
        Err(StoreError::ConcurrencyConflict { .. })
    ));
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert_eq!(
        store.read_stream(LEDGER, "r", 0, 10).await.unwrap().len(),
        2
    );
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::new().await;
                    super::$name(&db.store()).await;
                }
            )*
        }
        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::InMemoryEventStore::new()).await;
                }
            )*
        }
    };
}

contract!(
    appends_get_versions_and_gapless_positions,
    expected_version_is_exact,
    multi_stream_append_is_all_or_nothing,
    idempotency_key_is_recorded_once,
    event_ids_are_unique,
    invalid_appends_are_rejected,
    batch_isolates_failing_requests,
    snapshots_are_replaceable,
    ledgers_are_independent,
    chain_verifies_and_seals,
    time_maps_to_positions,
    subscription_tails_the_log,
    inbox_rows_commit_with_their_append,
    read_checks_guard_a_request,
);

#[tokio::test]
async fn a_delivery_is_carried_by_its_commands_first_event_in_memory() {
    a_delivery_is_carried_by_its_commands_first_event(&InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn a_delivery_is_carried_by_its_commands_first_event_in_postgres() {
    if ledger_store::testdb::citus_requested() {
        return; // see `outcomes_without_their_log_entry_are_refused`
    }
    let db = TestDb::new().await;
    a_delivery_is_carried_by_its_commands_first_event(&db.store()).await;
}

#[tokio::test]
async fn outcomes_without_their_log_entry_are_refused_in_memory() {
    outcomes_without_their_log_entry_are_refused(&InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn outcomes_without_their_log_entry_are_refused_in_postgres() {
    if ledger_store::testdb::citus_requested() {
        return; // see `outcomes_without_their_log_entry_are_refused`
    }
    let db = TestDb::new().await;
    outcomes_without_their_log_entry_are_refused(&db.store()).await;
}

/// `verify`'s row-by-row check (`ledger_store::unlogged_outcomes`) names rows planted behind the trigger (as an
/// owner could, or on Citus where there is none), and not the genuine ones.
#[tokio::test]
async fn unbacked_outcome_rows_are_named_row_by_row() {
    let db = TestDb::new().await;
    let store = db.store();
    let (appends, genuine) = keyed(vec![append("g", ExpectedVersion::NoStream, 1)], "k-genuine");
    store.append(LEDGER, appends, genuine).await.unwrap();
    let delivered = inbox_row("dk-genuine", "e1", b"{}");
    store
        .append_with_inbox(
            LEDGER,
            vec![delivery_append(&delivered)],
            None,
            Some(delivered),
        )
        .await
        .unwrap();
    // A delivery carried by its command's first event (no `DeliveryRecorded`).
    let (mut appends, record) = keyed(
        vec![append("c", ExpectedVersion::NoStream, 1)],
        "dk-carried",
    );
    let record = record.unwrap();
    let mut carried = inbox_row("dk-carried", "e3", b"{}");
    carried.command_id = record.outcome["command_id"]
        .as_str()
        .and_then(|c| c.parse().ok());
    appends[0].events[0].metadata.delivery = Some(delivery_stamp(&carried));
    store
        .append_with_inbox(LEDGER, appends, Some(record), Some(carried.clone()))
        .await
        .unwrap();
    let pool = ledger_store::connect(db.url()).await.unwrap();
    assert_eq!(
        ledger_store::unlogged_outcomes(&pool, LEDGER)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let (planted, again) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut tamper = db.tampering().await.unwrap();
    for sql in [
        "insert into ledger.idempotency (ledger_id, idempotency_key, request, outcome) values ('default',
           'callback:stripe:future', '{}', '{\"status\": \"rejected\", \"command_id\": \"00000000-0000-4000-8000-000000000001\",
           \"rejection\": {\"code\": \"invalid_transition\", \"message\": \"x\"}}')".to_string(),
        format!("insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type, dedupe_key,
           disposition, detail, raw_body, received_at) values ('default', '{planted}', 'stripe', 'e2', 'charge.succeeded',
           'dk-planted', 'rejected', '', '\\x7b7d', now())"),
        // The carried delivery's key and command under another delivery id: its event names another.
        format!("insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type, dedupe_key,
           disposition, detail, command_id, raw_body, received_at) values ('default', '{again}', 'stripe', 'e3',
           'charge.succeeded', 'dk-carried', 'applied', '', '{command}', '\\x7b7d', now())",
           command = carried.command_id.unwrap()),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(tamper.conn()).await.unwrap();
    }
    tamper.finish().await.unwrap();
    let named = ledger_store::unlogged_outcomes(&pool, LEDGER)
        .await
        .unwrap();
    assert_eq!(named.len(), 3, "{named:#?}");
    assert!(
        named.iter().any(|n| n.contains(&again.to_string())),
        "{named:#?}"
    );
    assert!(
        named.iter().any(|n| n.contains("callback:stripe:future")),
        "{named:#?}"
    );
    assert!(
        named.iter().any(|n| n.contains(&planted.to_string())),
        "{named:#?}"
    );
}
