//! Concurrency: writers whose commits land out of order, live readers, racing idempotency keys,
//! and a writer killed mid-transaction.

mod common;

use common::{AppendRequest, LEDGER, append, keyed};
use ledger_store::testdb::TestDb;
use ledger_store::{EventStore, ExpectedVersion, PgEventStore, StoreError};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 12;
const READERS: usize = 2;

/// Each writer appends single requests and small group commits, sleeping a random time inside
/// its transaction before commit, so commit order differs from insert (identity) order.
async fn write(store: PgEventStore, writer: usize) -> Vec<(Uuid, i64)> {
    let mut written = Vec::new();
    for n in 0..APPENDS_PER_WRITER {
        let stream = format!("writer-{writer}");
        if n % 3 == 2 {
            let requests: Vec<(
                Vec<ledger_store::StreamAppend>,
                Option<ledger_store::IdempotencyRecord>,
            )> = (0..2)
                .map(|i| {
                    (
                        vec![append(
                            &format!("{stream}-b{n}-{i}"),
                            ExpectedVersion::NoStream,
                            2,
                        )],
                        None,
                    )
                })
                .collect();
            for result in store
                .append_batch(LEDGER, requests.into_iter().map(Into::into).collect())
                .await
                .unwrap()
            {
                written.extend(
                    result
                        .unwrap()
                        .events
                        .iter()
                        .map(|e| (e.event_id, e.position)),
                );
            }
        } else {
            let outcome = store
                .append(LEDGER, vec![append(&stream, ExpectedVersion::Any, 1)], None)
                .await;
            written.extend(
                outcome
                    .unwrap()
                    .events
                    .iter()
                    .map(|e| (e.event_id, e.position)),
            );
        }
    }
    written
}

async fn read_until(store: PgEventStore, total: usize) -> Vec<(Uuid, i64)> {
    let mut subscription = store.subscribe(LEDGER, 0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < total {
        let batch = subscription.next_batch().await.unwrap();
        seen.extend(batch.iter().map(|e| (e.event_id, e.position.unwrap())));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_reader_sees_every_event_once_in_one_order() {
    let db = TestDb::new().await;
    let store = db.store().with_pre_commit_delay_ms(40);
    let total = WRITERS * (APPENDS_PER_WRITER / 3 * 2 + APPENDS_PER_WRITER / 3 * 4);
    let readers: Vec<_> = (0..READERS)
        .map(|_| tokio::spawn(read_until(store.clone(), total)))
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(store.clone(), w)))
        .collect();
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    assert_eq!(written.len(), total);
    let log = store.read_log(LEDGER, 0, 10_000).await.unwrap();
    let log: Vec<(Uuid, i64)> = log
        .iter()
        .map(|e| (e.event_id, e.position.unwrap()))
        .collect();
    let positions: Vec<i64> = log.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        positions,
        (1..=i64::try_from(total).unwrap()).collect::<Vec<_>>()
    );
    for reader in readers {
        let seen = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen, log,
            "a reader saw a different sequence than the final log"
        );
    }
    written.sort_by_key(|(_, p)| *p);
    assert_eq!(
        written, log,
        "writers were told other positions than the log holds"
    );
    assert!(store.verify_chain(LEDGER, None).await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_with_one_key_succeed_once() {
    const RACERS: usize = 8;
    let db = TestDb::new().await;
    let store = db.store().with_pre_commit_delay_ms(20);
    let racers: Vec<_> = (0..RACERS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = format!("racer-{n}");
                store
                    .append_request(
                        LEDGER,
                        keyed(vec![append(&stream, ExpectedVersion::NoStream, 1)], "same"),
                    )
                    .await
            })
        })
        .collect();
    let mut successes = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => successes += 1,
            Err(StoreError::DuplicateIdempotencyKey { key }) => assert_eq!(key, "same"),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(successes, 1);
    assert_eq!(store.head_position(LEDGER).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_one_stream_conflict_cleanly() {
    let db = TestDb::new().await;
    let store = db.store().with_pre_commit_delay_ms(20);
    store
        .append(
            LEDGER,
            vec![append("hot", ExpectedVersion::NoStream, 1)],
            None,
        )
        .await
        .unwrap();
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        LEDGER,
                        vec![append("hot", ExpectedVersion::Exact(1), 1)],
                        None,
                    )
                    .await
            })
        })
        .collect();
    let mut successes = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => successes += 1,
            Err(StoreError::ConcurrencyConflict {
                stream_id, actual, ..
            }) => {
                assert_eq!((stream_id.as_str(), actual), ("hot", Some(2)));
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(successes, 1);
}

#[tokio::test]
async fn a_killed_writer_leaves_no_partial_rows() {
    let db = TestDb::new().await;
    // Sent over stdin, statement by statement, and never committed: the client dies while its
    // transaction is open (idle in transaction), as a crashed writer would.
    let script = "begin;
        insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                   schema_version, payload, metadata)
        values ('default', 'crash', 1, gen_random_uuid(), 'T', 1, '{}', '{}'),
               ('default', 'crash', 2, gen_random_uuid(), 'T', 1, '{}', '{}');
";
    let psql = ledger_store::cluster::server_bin_dir()
        .unwrap()
        .join("psql");
    let mut child = std::process::Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.url()])
        .env("PGAPPNAME", "crash-test")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
    std::io::Write::flush(&mut stdin).unwrap();
    wait_for_backend(&db, true).await;
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    wait_for_backend(&db, false).await;
    let events: i64 = sqlx::query_scalar("select count(*) from ledger.events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let queued: i64 = sqlx::query_scalar("select count(*) from ledger.unsequenced")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((events, queued), (0, 0));
    let store = db.store();
    let outcome = store
        .append(
            LEDGER,
            vec![append("crash", ExpectedVersion::NoStream, 1)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome.events[0].position, 1);
    let seen: HashSet<i64> = store
        .read_log(LEDGER, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(seen, HashSet::from([1]));
}

/// Waits until the crash-test backend is (or is no longer) inside its transaction.
async fn wait_for_backend(db: &TestDb, in_transaction: bool) {
    for _ in 0..200 {
        let active: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_stat_activity
                             where application_name = 'crash-test' and xact_start is not null
                               and backend_xid is not null)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if active == in_transaction {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("crash-test backend never reached in_transaction = {in_transaction}");
}
