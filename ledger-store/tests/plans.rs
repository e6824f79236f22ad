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

/// A pool of one connection: every statement runs, and caches its plan, on the same backend.
async fn one_connection(db: &TestDb) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap()
}

/// Grows the ledger by `GROWTH` committed events (600 streams, versions from `first / 600 + 1`) from another
/// session and sequences them.
async fn grow(db: &TestDb, first: i64) {
    let other = one_connection(db).await;
    let pool = &other;
    sqlx::query(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata)
         select 'default', 'grown-' || (n % 600), n / 600 + 1, gen_random_uuid(), 'Tested', 1,
                jsonb_build_object('n', n), '{}'
           from generate_series($2::bigint, $2::bigint + $1::bigint - 1) as n",
    )
    .bind(GROWTH)
    .bind(first)
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
    let writer = one_connection(&db).await;
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
        store
            .append_batch(LEDGER, batch.into_iter().map(Into::into).collect())
            .await
            .unwrap();
    }
    grow(&db, 0).await;

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
    let many = store
        .append_batch(LEDGER, batch.into_iter().map(Into::into).collect())
        .await
        .unwrap();
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

/// A writer's transaction plans its statements once per session, and so do the sequencer's functions
/// (migration 20261210000101): PostgreSQL chose a fresh custom plan for each batch's arrays at every call
/// (`pg_stat_statements` with `track_planning`: 1,645 plans in 2,508 calls of the versions read, 1,669 in
/// 2,487 of the sequencer's rendering), which cost more than running them.
#[tokio::test]
async fn the_writers_transaction_and_the_sequencer_plan_once() {
    let db = TestDb::new().await;
    let writer = one_connection(&db).await;
    let store = PgEventStore::new(writer.clone());
    for i in 0..20 {
        let batch = (0..=i % 3)
            .map(|j| {
                (
                    vec![append(&format!("s-{i}-{j}"), ExpectedVersion::NoStream, 1)],
                    None,
                )
            })
            .map(Into::into)
            .collect();
        for outcome in store.append_batch(LEDGER, batch).await.unwrap() {
            outcome.unwrap();
        }
    }
    // The one connection's prepared statements: the versions read runs inside the transaction.
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "select generic_plans, custom_plans from pg_prepared_statements
          where statement like '%select e.stream_version from ledger.events e%'",
    )
    .fetch_one(&writer)
    .await
    .unwrap();
    assert_eq!(
        custom, 0,
        "the versions read was planned {custom} times for its arguments (generic plans: {generic})"
    );
    assert!(generic >= 1, "the versions read ran without a plan?");
    for function in [
        "ledger.sequence(text,int)",
        "ledger.sequence_positions(text,int,bigint[])",
    ] {
        let generic: bool = sqlx::query_scalar(
            "select coalesce('plan_cache_mode=force_generic_plan' = any(proconfig), false)
               from pg_proc where oid = $1::regprocedure",
        )
        .bind(function)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(generic, "{function} plans its statements at every call");
    }
}

/// A reader's page of the log reads its own rows whatever the statistics. Without any (a freshly loaded log
/// nothing analyzed yet), the open-ended page (`position > after ... limit N`) was planned from the default
/// selectivities as a bitmap scan of everything after `after` and a sort: a relay or `projections rebuild`
/// over a freshly loaded log read it all again for every page (25 s for one page of 10,000 after `bench
/// seed` on a new cluster; the relay's benchmark ran at half speed with pages of 1,000).
#[tokio::test]
async fn a_page_of_the_log_reads_its_own_rows_however_stale_the_statistics() {
    let db = TestDb::new().await;
    // A freshly loaded log that nothing analyzed yet (a new cluster, a restore, a bulk import before
    // autovacuum came by): the planner has no statistics but its defaults.
    for table in ["ledger.sequence", "ledger.events"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter table {table} set (autovacuum_enabled = false)"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    grow(&db, 0).await;
    grow(&db, GROWTH).await;
    let reader = one_connection(&db).await;
    let store = PgEventStore::new(reader.clone());
    let before = index_entries_read(&db.pool).await;
    let page = store.read_log(LEDGER, GROWTH + 1_000, 1_000).await.unwrap();
    flush_statistics(&reader).await;
    let read = index_entries_read(&db.pool).await - before;
    let positions: Vec<i64> = page.iter().filter_map(|e| e.position).collect();
    assert_eq!(
        positions,
        (GROWTH + 1_001..=GROWTH + 2_000).collect::<Vec<_>>()
    );
    assert!(
        read < 2 * 1_000 + 500,
        "one page of 1,000 read {read} index entries on a ledger of {} events: it scans what follows",
        2 * GROWTH
    );
    // The head: a short page completed by the open-ended form, nothing missed.
    let head = store.head_position(LEDGER).await.unwrap();
    let tail = store.read_log(LEDGER, head - 10, 1_000).await.unwrap();
    assert_eq!(tail.len(), 10);
}
