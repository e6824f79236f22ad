//! The sequencer, chain v2 and the writer's rights (issue 10, items 4-6), against real PostgreSQL.
//!
//! Events are inserted with plain SQL where a test needs them committed but not sequenced (a writer that
//! died after its commit); the explicit queue insert is `on conflict do nothing` because the schema queues
//! them itself (trigger `events_queue`).

mod common;

use std::time::Duration;

use common::{LEDGER, append};
use ledger_store::testdb::TestDb;
use ledger_store::{EventStore, ExpectedVersion, Snapshot};
use sqlx::{Acquire, PgConnection};

/// Inserts `count` events into `stream` in one transaction, committed and queued but not sequenced.
async fn insert_unsequenced(conn: &mut PgConnection, stream: &str, count: i64) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "with e as (
             insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                        schema_version, payload, metadata)
             select 'default', $1, coalesce((select max(stream_version) from ledger.events
                                              where ledger_id = 'default' and stream_id = $1), 0) + n,
                    gen_random_uuid(), 'Tested', 1, jsonb_build_object('n', n), '{}'
               from generate_series(1, $2::bigint) as n
             returning ledger_id, local_id)
         insert into ledger.unsequenced (ledger_id, local_id) select * from e
             on conflict do nothing",
    )
    .bind(stream)
    .bind(count)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn sqlstate(error: &sqlx::Error) -> String {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

/// Runs `statement` as `escrow_writer` in its own transaction (rolled back) and returns its error.
async fn as_writer(db: &TestDb, statement: &str) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local role escrow_writer")
        .execute(&mut *tx)
        .await
        .unwrap();
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut *tx)
        .await
        .map(|_| ());
    tx.rollback().await.unwrap();
    result
}

#[tokio::test]
async fn a_batch_never_ends_inside_one_transaction() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    insert_unsequenced(&mut conn, "first", 2).await;
    insert_unsequenced(&mut conn, "second", 5).await;
    let sequenced: i64 = sqlx::query_scalar("select ledger.sequence('default', 4)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // The first 4 queued events belong to both transactions: the batch takes both of them whole.
    assert_eq!(sequenced, 7, "a batch of 4 split the second transaction");
    let left: i64 = sqlx::query_scalar("select count(*) from ledger.unsequenced")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn an_as_of_time_in_the_past_resolves_the_same_on_every_run() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut writer = db.pool.acquire().await.unwrap();
    insert_unsequenced(&mut writer, "s", 3).await;
    // A sequencer stamps its batch and is slow to commit (the lock is held until then). It runs where the
    // engine's calls of `ledger.sequence` run: on Citus, on the worker holding the ledger.
    let mut sequencer =
        <PgConnection as sqlx::Connection>::connect(&db.ledger_node_url(LEDGER).await.unwrap())
            .await
            .unwrap();
    let mut batch = sequencer.begin().await.unwrap();
    let sequenced: i64 = sqlx::query_scalar("select ledger.sequence('default', 100)")
        .fetch_one(&mut *batch)
        .await
        .unwrap();
    assert_eq!(sequenced, 3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let as_of = chrono::Utc::now();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.position_at_or_before(LEDGER, as_of).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    batch.commit().await.unwrap();
    let first = first.await.unwrap();
    let second = store.position_at_or_before(LEDGER, as_of).await.unwrap();
    assert_eq!(
        first, second,
        "as of {as_of}: the first run saw {first}, the second {second}"
    );
    assert_eq!(second, 3);
}

#[tokio::test]
async fn sequenced_at_is_monotone_and_covered_by_the_chain() {
    let db = TestDb::new().await;
    let store = db.store();
    for n in 0..3 {
        store
            .append(
                LEDGER,
                vec![append(&format!("s{n}"), ExpectedVersion::Any, 2)],
                None,
            )
            .await
            .unwrap();
    }
    let stamps: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "select sequenced_at from ledger.sequence where ledger_id = 'default' order by position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    let seal = store.seal(LEDGER).await.unwrap();
    // An operator moves an event earlier in time (behind the append-only trigger): `--as-of` changes.
    // The new time is computed here: Citus plans no STABLE function of a column in an UPDATE.
    let mut tampering = db.tampering().await.unwrap();
    sqlx::query(
        "update ledger.sequence set sequenced_at = $1 where ledger_id = 'default' and position = 1",
    )
    .bind(stamps[0] - chrono::Duration::hours(1))
    .execute(tampering.conn())
    .await
    .unwrap();
    tampering.finish().await.unwrap();
    let report = store.verify_chain(LEDGER, Some(seal)).await.unwrap();
    assert!(
        !report.is_intact(),
        "an edited sequenced_at passed verify with the seal: {report:?}"
    );
}

#[tokio::test]
async fn the_writer_cannot_insert_a_sequence_row() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    insert_unsequenced(&mut conn, "s", 1).await;
    let result = as_writer(
        &db,
        "insert into ledger.sequence (ledger_id, position, local_id, hash, sequenced_at)
         select 'default', 1, local_id, sha256(''), now() from ledger.events",
    )
    .await;
    let error = result.expect_err("the writer inserted a sequence row");
    assert_eq!(sqlstate(&error), "42501", "{error}");
}

/// Issue 19 (finding 6): the database stamps `recorded_at`, whatever the writer's INSERT states (a forged
/// value 30 days ahead hid an unsequenced event from `verify`'s staleness finding).
#[tokio::test]
async fn the_writer_cannot_state_when_an_event_was_recorded() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local role escrow_writer")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata, recorded_at)
         values ('default', 'payment-00000000-0000-0000-0000-0000000000f1', 1, gen_random_uuid(),
                 'DepositCancelled', 1, '{}', '{}', now() + interval '30 days')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let ahead: i64 = sqlx::query_scalar(
        "select extract(epoch from max(recorded_at) - now())::bigint from ledger.events",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        ahead < 60,
        "the stored recorded_at is {ahead} s ahead of now"
    );
}

#[tokio::test]
async fn the_writer_cannot_requeue_a_sequenced_event() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::NoStream, 1)],
            None,
        )
        .await
        .unwrap();
    let result = as_writer(
        &db,
        "insert into ledger.unsequenced (ledger_id, local_id)
         select ledger_id, local_id from ledger.sequence",
    )
    .await;
    let error = result.expect_err("the writer re-queued a sequenced event");
    assert_eq!(sqlstate(&error), "42501", "{error}");
}

#[tokio::test]
async fn a_requeued_sequenced_event_does_not_stop_the_sequencer() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::NoStream, 1)],
            None,
        )
        .await
        .unwrap();
    // Whoever can still write the queue (the owner) re-queues a sequenced event.
    sqlx::query(
        "insert into ledger.unsequenced (ledger_id, local_id)
         select ledger_id, local_id from ledger.sequence",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let outcome = store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::Exact(1), 1)],
            None,
        )
        .await
        .expect("appends keep being sequenced");
    assert_eq!(outcome.events[0].position, 2);
}

fn snapshot(stream: &str, version: i64, state: serde_json::Value) -> Snapshot {
    Snapshot {
        stream_id: stream.to_owned(),
        stream_version: version,
        fold_version: 1,
        state,
        taken_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn the_writer_cannot_update_or_insert_a_snapshot() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::NoStream, 2)],
            None,
        )
        .await
        .unwrap();
    store
        .save_snapshot(LEDGER, &snapshot("s", 2, serde_json::json!({"balance": 5})))
        .await
        .unwrap();
    for statement in [
        "update ledger.snapshots set state = '{\"balance\": 1000000}'",
        "insert into ledger.snapshots (ledger_id, stream_id, stream_version, fold_version, state)
         values ('default', 'other', 1, 1, '{}')",
        "insert into ledger.balance_snapshots (ledger_id, position, balances)
         values ('default', 1, '[]')",
    ] {
        let error = as_writer(&db, statement)
            .await
            .expect_err(&format!("the writer could run: {statement}"));
        assert_eq!(sqlstate(&error), "42501", "{statement}: {error}");
    }
}

#[tokio::test]
async fn a_doctored_snapshot_is_ignored() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append(
            LEDGER,
            vec![append("s", ExpectedVersion::NoStream, 2)],
            None,
        )
        .await
        .unwrap();
    let honest = snapshot("s", 2, serde_json::json!({"balance": 5}));
    store.save_snapshot(LEDGER, &honest).await.unwrap();
    let loaded = store.load_snapshot(LEDGER, "s", 1).await.unwrap();
    assert_eq!(loaded.map(|s| s.state), Some(honest.state));
    // Edited behind the definer function's back (as the table's owner could).
    sqlx::query("update ledger.snapshots set state = '{\"balance\": 1000000}'")
        .execute(&db.pool)
        .await
        .unwrap();
    let loaded = store.load_snapshot(LEDGER, "s", 1).await.unwrap();
    assert_eq!(loaded, None, "a doctored snapshot was trusted");
}

#[tokio::test]
async fn the_writer_role_appends_sequences_and_snapshots_through_the_functions() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local role escrow_writer")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata)
         values ('default', 's', 1, gen_random_uuid(), 'T', 1, '{}', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Sequenced after the commit, as the engine does (on Citus a transaction cannot read, as the
    // functions' definer, the placements it wrote as the writer).
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local role escrow_writer")
        .execute(&mut *tx)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("select ledger.sequence('default', 10)")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count, 1);
    sqlx::query("select ledger.save_snapshot('default', 's', 1, 1, '{}', now())")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("select ledger.take_balance_snapshot('default', 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Only at a position of the log (position 0 has nothing to snapshot, 9 does not exist yet).
    for position in [0, 9] {
        let mut sp = tx.begin().await.unwrap();
        let error = sqlx::query("select ledger.take_balance_snapshot('default', $1)")
            .bind(position)
            .execute(&mut *sp)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error), "22023", "{error}");
        sp.rollback().await.unwrap();
    }
    // A snapshot of a version the stream has not reached is refused.
    let error = sqlx::query("select ledger.save_snapshot('default', 's', 9, 1, '{}', now())")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "22023", "{error}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn links_hashed_before_chain_v2_stay_verifiable() {
    let db = TestDb::empty().await;
    // The schema as it was before chain v2, with two links hashed by the old sequencer.
    ledger_store::MIGRATOR
        .run_to(20251202000001, &db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    insert_unsequenced(&mut conn, "old", 2).await;
    let sequenced: i64 = sqlx::query_scalar("select ledger.sequence('default', 10)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(sequenced, 2);
    let store = db.store();
    let seal = store.seal(LEDGER).await.unwrap();
    ledger_store::migrate(&db.pool).await.unwrap();
    store
        .append(
            LEDGER,
            vec![append("new", ExpectedVersion::NoStream, 2)],
            None,
        )
        .await
        .unwrap();
    let versions: Vec<i16> = sqlx::query_scalar(
        "select chain_version from ledger.sequence where ledger_id = 'default' order by position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(versions, vec![1, 1, 2, 2]);
    let report = store.verify_chain(LEDGER, Some(seal)).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_verified, 4);
}

#[tokio::test]
async fn the_background_sequencer_picks_up_what_a_dead_writer_left() {
    let db = TestDb::new().await;
    let store = db.store();
    store.create_ledger("second").await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    insert_unsequenced(&mut conn, "s", 3).await;
    let background = ledger_store::sequencer::Background::spawn(db.pool.clone());
    let started = std::time::Instant::now();
    while store.head_position(LEDGER).await.unwrap() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not sequenced within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backlog = ledger_store::sequencer::backlog(&db.pool).await.unwrap();
    assert!(backlog.is_empty(), "{backlog:?}");
    background.stop().await;
}

#[tokio::test]
async fn the_backlog_names_stale_unsequenced_events() {
    let db = TestDb::new().await;
    // Backdated behind the trigger that stamps `recorded_at`, as only the owner could.
    db.tamper(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata, recorded_at)
         values ('default', 's', 1, gen_random_uuid(), 'T', 1, '{}', '{}', now() - interval '1 minute'),
                ('default', 't', 1, gen_random_uuid(), 'T', 1, '{}', '{}', now())",
    )
    .await
    .unwrap();
    let backlog = ledger_store::sequencer::backlog(&db.pool).await.unwrap();
    assert_eq!(backlog.len(), 1);
    assert_eq!((backlog[0].events, backlog[0].stale_events), (2, 1));
    assert!(backlog[0].oldest_age_ms >= 59_000, "{backlog:?}");
}

/// Queue rows and positions of the ledger (for the queue's shape tests).
async fn queue_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from ledger.unsequenced")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The backlog counts the `events` queued (not the queue's rows), one sequencer call with `p_max` 100 takes
/// them all (a batch never ends inside a transaction, whatever `p_max`), each gets one position, the queue is
/// left empty and the chain holds them.
async fn sequence_the_queue_at_once(db: &TestDb, events: i64) {
    let backlog = ledger_store::sequencer::backlog(&db.pool).await.unwrap();
    assert_eq!(backlog[0].events, events, "{backlog:?}");
    let sequenced: i64 = sqlx::query_scalar("select ledger.sequence('default', 100)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(sequenced, events);
    assert_eq!(queue_rows(db).await, 0);
    let report = db.store().verify_chain(LEDGER, None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_verified, events);
}

/// Queue rows one inserting statement of `events` leaves: one on one server (the statement trigger), one per
/// event on Citus (its row trigger, migration 20261201000301).
fn rows_for_statement(events: i64) -> i64 {
    if ledger_store::testdb::citus_requested() {
        events
    } else {
        1
    }
}

/// One queue row per inserting statement, not one per event (a group commit's batch is one row to insert
/// and one to delete), and every event of it is sequenced once, in order.
#[tokio::test]
async fn one_inserting_statement_is_one_queue_row() {
    const COUNT: i64 = 500;
    let db = TestDb::new().await;
    db.tamper(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata)
         select 'default', 'batch-' || (n % 7), n / 7 + 1, gen_random_uuid(), 'T', 1, '{}', '{}'
           from generate_series(0, 499) as n",
    )
    .await
    .unwrap();
    assert_eq!(queue_rows(&db).await, rows_for_statement(COUNT));
    sequence_the_queue_at_once(&db, COUNT).await;
    let in_order: bool = sqlx::query_scalar(
        "select bool_and(ordered) from (
             select s.local_id > lag(s.local_id, 1, 0::bigint) over (order by s.position) as ordered
               from ledger.sequence s where s.ledger_id = 'default') o",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(in_order, "positions follow the events' order");
}

/// An event named by two queue rows (its statement's, and one an owner added) gets one position, and the
/// sequencer goes on.
#[tokio::test]
async fn an_event_queued_twice_gets_one_position() {
    const COUNT: i64 = 3;
    let db = TestDb::new().await;
    db.tamper(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata)
         select 'default', 'twice', n, gen_random_uuid(), 'T', 1, '{}', '{}'
           from generate_series(1, 3) as n;
         insert into ledger.unsequenced (ledger_id, local_id, tx_id)
         select ledger_id, local_id, tx_id from ledger.events where stream_version = 2
         on conflict do nothing;",
    )
    .await
    .unwrap();
    // On Citus each event has its own row already, so the owner's row adds nothing.
    assert_eq!(queue_rows(&db).await, rows_for_statement(COUNT).max(2));
    sequence_the_queue_at_once(&db, COUNT).await;
}
