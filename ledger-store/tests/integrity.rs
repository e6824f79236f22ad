//! PostgreSQL-only guarantees: the SQL and Rust chains agree, the log is append-only, tampering
//! is detected (with and without re-hashing), dumps restore with positions intact.

mod common;

use common::{AppendRequest, LEDGER, append, keyed};
use ledger_store::chain::{ChainInput, GENESIS_HASH, jsonb_text, next_hash};
use ledger_store::testdb::TestDb;
use ledger_store::{EventStore, ExpectedVersion, StoreError};
use serde_json::json;
use sqlx::Connection;

async fn fill(store: &dyn EventStore, events: i64) {
    for n in 0..events {
        let stream = format!("stream-{}", n % 3);
        store
            .append(LEDGER, vec![append(&stream, ExpectedVersion::Any, 1)], None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn jsonb_text_matches_postgres() {
    let db = TestDb::new().await;
    let values = [
        json!({"zz": 1, "a": {"ccc": [true, false, null], "bb": -12}, "é": "ü\u{1}\t\\\"/"}),
        json!([]),
        json!({}),
        json!("plain"),
        json!({"amount_minor": 123456789012_i64, "rate": 0.25, "list": [{"k": "v"}, 3]}),
    ];
    for value in values {
        let text: String = sqlx::query_scalar("select $1::jsonb::text")
            .bind(&value)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(jsonb_text(&value), text);
    }
}

#[tokio::test]
async fn sql_sequencer_and_rust_chain_agree() {
    let db = TestDb::new().await;
    let store = db.store();
    fill(&store, 7).await;
    let log = store.read_log(LEDGER, 0, 100).await.unwrap();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar(
        "select hash from ledger.sequence where ledger_id = $1 order by position",
    )
    .bind(LEDGER)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut previous = GENESIS_HASH;
    for (event, stored_hash) in log.iter().zip(&stored) {
        let payload = jsonb_text(&event.payload);
        let metadata = jsonb_text(&serde_json::to_value(&event.metadata).unwrap());
        let input = ChainInput {
            ledger_id: &event.ledger_id,
            position: event.position.unwrap(),
            stream_id: &event.stream_id,
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload_text: &payload,
            metadata_text: &metadata,
            recorded_at_micros: event.recorded_at.timestamp_micros(),
            chain_version: ledger_store::chain::CHAIN_VERSION_CURRENT,
            sequenced_at_micros: event.sequenced_at.unwrap().timestamp_micros(),
        };
        previous = next_hash(&previous, &input);
        assert_eq!(
            &previous[..],
            &stored_hash[..],
            "position {:?}",
            event.position
        );
    }
    assert_eq!(stored.len(), 7);
}

const MUTATIONS: [&str; 9] = [
    "update ledger.events set payload = '{}'",
    "delete from ledger.events",
    "truncate ledger.events cascade",
    "update ledger.sequence set hash = hash",
    "delete from ledger.sequence",
    "truncate ledger.sequence",
    "update ledger.idempotency set outcome = '{}'",
    "delete from ledger.idempotency",
    "truncate ledger.idempotency",
];

#[tokio::test]
async fn the_log_is_append_only_for_owner_and_writer() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append_request(
            LEDGER,
            keyed(vec![append("s", ExpectedVersion::Any, 2)], "k"),
        )
        .await
        .unwrap();
    for statement in MUTATIONS {
        // As the owner (a superuser here): the triggers refuse.
        let error = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        let error = StoreError::from(error);
        assert!(
            matches!(&error, StoreError::AppendOnlyViolation { message } if message.contains("is append-only")),
            "{statement}: {error:?}"
        );
        // As the writer role: no privilege in the first place.
        let mut conn = db.pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("set local role escrow_writer")
            .execute(&mut *tx)
            .await
            .unwrap();
        let error = sqlx::query(statement).execute(&mut *tx).await.unwrap_err();
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap()
            .into_owned();
        assert!(code == "42501" || code == "EL001", "{statement}: {error}");
    }
    assert_eq!(store.head_position(LEDGER).await.unwrap(), 2);
}

/// Edits an event behind the triggers' back, as a superuser would.
async fn tamper_payload(db: &TestDb, position: i64) {
    let mut tampering = db.tampering().await.unwrap();
    sqlx::query(
        "update ledger.events e set payload = '{\"amount_minor\": 1}'
           from ledger.sequence s
          where s.ledger_id = e.ledger_id and s.local_id = e.local_id and s.position = $1",
    )
    .bind(position)
    .execute(tampering.conn())
    .await
    .unwrap();
    tampering.finish().await.unwrap();
}

#[tokio::test]
async fn an_edited_event_is_named_by_verify() {
    let db = TestDb::new().await;
    let store = db.store();
    fill(&store, 8).await;
    let victim = store.read_log(LEDGER, 4, 1).await.unwrap().remove(0);
    tamper_payload(&db, 5).await;
    let report = store.verify_chain(LEDGER, None).await.unwrap();
    let broken = report.first_break.expect("tampering detected");
    assert_eq!(broken.position, 5);
    assert_eq!(broken.event_id, Some(victim.event_id));
}

#[tokio::test]
async fn an_edited_and_rehashed_chain_is_caught_by_an_earlier_seal() {
    let db = TestDb::new().await;
    let store = db.store();
    fill(&store, 6).await;
    let seal = store.seal(LEDGER).await.unwrap();
    let seal = serde_json::from_str(&serde_json::to_string(&seal).unwrap()).unwrap();
    fill(&store, 3).await;
    tamper_payload(&db, 2).await;
    db.rehash_chain_from(LEDGER, 2).await.unwrap();
    let without_seal = store.verify_chain(LEDGER, None).await.unwrap();
    assert!(
        without_seal.is_intact(),
        "a re-hashed chain is self-consistent: {without_seal:?}"
    );
    let report = store.verify_chain(LEDGER, Some(seal)).await.unwrap();
    assert_eq!(report.seal_matches, Some(false));
    assert!(!report.is_intact());
    assert_eq!(report.first_break.unwrap().position, 6);
}

#[tokio::test]
async fn a_deleted_event_breaks_the_chain() {
    let db = TestDb::new().await;
    let store = db.store();
    fill(&store, 5).await;
    db.tamper("delete from ledger.sequence where ledger_id = 'default' and position = 3")
        .await
        .unwrap();
    let report = store.verify_chain(LEDGER, None).await.unwrap();
    assert_eq!(report.first_break.unwrap().position, 4);
}

fn run(program: &str, args: &[&str]) {
    let bin = ledger_store::cluster::server_bin_dir()
        .unwrap()
        .join(program);
    let output = std::process::Command::new(&bin)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_dump_restores_with_positions_and_chain_intact() {
    let source = TestDb::new().await;
    let store = source.store();
    fill(&store, 10).await;
    let log_before = store.read_log(LEDGER, 0, 100).await.unwrap();
    let seal = store.seal(LEDGER).await.unwrap();
    let dump = std::env::temp_dir().join(format!("{}.dump", source.name()));
    let dump_path = dump.to_str().unwrap();
    run("pg_dump", &["-Fc", "-f", dump_path, "-d", source.url()]);
    let target = TestDb::empty().await;
    run(
        "pg_restore",
        &["--exit-on-error", "-d", target.url(), dump_path],
    );
    std::fs::remove_file(&dump).unwrap();
    ledger_store::migrate(&target.pool)
        .await
        .expect("restored schema is current");
    let restored = target.store();
    assert_eq!(restored.read_log(LEDGER, 0, 100).await.unwrap(), log_before);
    assert!(
        restored
            .verify_chain(LEDGER, Some(seal.clone()))
            .await
            .unwrap()
            .is_intact()
    );
    let outcome = restored
        .append(
            LEDGER,
            vec![append("after", ExpectedVersion::NoStream, 2)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![11, 12]
    );
    let report = restored.verify_chain(LEDGER, Some(seal)).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.head_position, 12);
}
