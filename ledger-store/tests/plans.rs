//! The write path stays a set of key lookups however the ledger grows.
//!
//! A writer's session caches its plans (sqlx prepares every statement; PL/pgSQL caches the plans of
//! `ledger.sequence`). After five runs PostgreSQL may switch a prepared statement to a generic plan made
//! with the statistics of that moment. Planned while a new ledger is tiny, `ledger_id = $1` looks like one
//! row, so any index that starts with `ledger_id` looks as good as the full key: `bench append` found
//! plans that read the whole ledger per call (91,176 index entries to find 542 positions; 8 times slower
//! than the previous release). These tests warm one session on a small ledger, grow the ledger from
//! another session, and count the index entries the warmed session reads for one more append.

mod common;

use common::{LEDGER, append};
use ledger_store::testdb::TestDb;
use ledger_store::{EventStore, ExpectedVersion, PgEventStore};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Events the ledger grows by between warming and measuring.
const GROWTH: i64 = 60_000;
/// Index entries one small append may read: its own keys, the chain head, foreign-key checks. A plan that
/// scans the ledger reads about `GROWTH`.
const INDEX_READS_MAX: i64 = 2_000;

/// Index entries read on `ledger.events` and `ledger.sequence` by every session (flushed statistics).
/// Not `ledger.unsequenced`: the queue is small, but its index keeps the entries of a large batch until
/// vacuum, and the next scan steps over them once (bounded by the queue's churn, not the ledger's size).
async fn index_entries_read(admin: &PgPool) -> i64 {
    let mut conn = admin.acquire().await.unwrap();
    sqlx::query("select pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "select coalesce(sum(idx_tup_read), 0)::bigint from pg_stat_user_indexes
          where schemaname = 'ledger' and relname in ('events', 'sequence')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// Makes a one-connection pool's session publish its statistics now (else it may wait a while).
async fn flush_statistics(writer: &PgPool) {
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(writer)
        .await
        .unwrap();
    sqlx::query("select 1").execute(writer).await.unwrap();
}

/// Grows the ledger by `GROWTH` committed events (600 streams) from another session and sequences them.
async fn grow(db: &TestDb) {
    let other = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap();
    let pool = &other;
    sqlx::query(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata)
         select 'default', 'grown-' || (n % 600), n / 600 + 1, gen_random_uuid(), 'Tested', 1,
                jsonb_build_object('n', n), '{}'
           from generate_series(0, $1::bigint - 1) as n",
    )
    .bind(GROWTH)
    .execute(pool)
    .await
    .unwrap();
    let sequenced: i64 = sqlx::query_scalar("select ledger.sequence('default', 100000)")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(sequenced, GROWTH);
    // Its own reads are counted before the measurement starts.
    flush_statistics(pool).await;
}

#[tokio::test]
async fn plans_cached_on_a_small_ledger_stay_key_lookups_when_it_grows() {
    let db = TestDb::new().await;
    // One connection: every statement of the writer runs, and caches its plan, on the same backend.
    let writer = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap();
    let store = PgEventStore::new(writer.clone());
    for i in 0..12 {
        let stream = format!("warm-{i}");
        store
            .append(
                LEDGER,
                vec![append(&stream, ExpectedVersion::NoStream, 20)],
                None,
            )
            .await
            .unwrap();
        let batch = vec![(
            vec![append(
                &format!("{stream}-b"),
                ExpectedVersion::NoStream,
                20,
            )],
            None,
        )];
        store.append_batch(LEDGER, batch).await.unwrap();
    }
    grow(&db).await;

    flush_statistics(&writer).await;
    let before = index_entries_read(&db.pool).await;
    let one = store
        .append(
            LEDGER,
            vec![append("grown-7", ExpectedVersion::Any, 2)],
            None,
        )
        .await
        .unwrap();
    let batch = vec![
        (vec![append("grown-8", ExpectedVersion::Any, 2)], None),
        (
            vec![append("new-stream", ExpectedVersion::NoStream, 2)],
            None,
        ),
    ];
    let many = store.append_batch(LEDGER, batch).await.unwrap();
    flush_statistics(&writer).await;
    let read = index_entries_read(&db.pool).await - before;

    assert!(one.events.iter().all(|e| e.position > GROWTH));
    for outcome in many {
        assert!(outcome.unwrap().events.iter().all(|e| e.position > GROWTH));
    }
    assert!(
        read < INDEX_READS_MAX,
        "two appends on a warmed session read {read} index entries (a ledger of {GROWTH} events): \
         a cached plan scans the ledger instead of looking up keys"
    );
}
