//! `migrate` on one server and on Citus (issue 13). Every test runs in both modes: on one server (the
//! default) it shows that nothing changes; with `ESCROW_TEST_CITUS=1` (a local coordinator and two
//! workers started by the harness) it shows the distribution by ledger and that a worker refuses what one
//! server refuses.

mod common;

use common::{LEDGER, append};
use ledger_store::citus::{Deployment, deployment, local_tables};
use ledger_store::testdb::{TestDb, citus_nodes, citus_requested, url_with_database};
use ledger_store::{EventStore, ExpectedVersion, StoreError};
use sqlx::{Connection, PgConnection};

async fn strings(db: &TestDb, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(&db.pool).await.unwrap()
}

#[tokio::test]
async fn migrate_distributes_every_table_by_ledger_only_on_citus() {
    let db = TestDb::new().await;
    assert!(local_tables(&db.pool).await.unwrap().is_empty());
    let queue_triggers = strings(
        &db,
        "select tgname::text from pg_trigger
          where tgrelid = 'ledger.events'::regclass and tgname like 'events_queue%' order by 1",
    )
    .await;
    let reader_policy: String = sqlx::query_scalar(
        "select pg_get_expr(polqual, polrelid) from pg_policy
          where polrelid = 'escrow.projects'::regclass and polname = 'reader_select'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    if !citus_requested() {
        assert_eq!(deployment(&db.pool).await.unwrap(), Deployment::Single);
        assert_eq!(queue_triggers, ["events_queue"]);
        assert!(
            reader_policy.contains("SELECT escrow.uid()"),
            "{reader_policy}"
        );
        return;
    }
    assert_eq!(
        deployment(&db.pool).await.unwrap(),
        Deployment::Citus { workers: 2 }
    );
    assert_eq!(queue_triggers, ["events_queue_row"]);
    assert!(!reader_policy.contains("SELECT"), "{reader_policy}");
    let tables: Vec<(String, String, String, i32)> = sqlx::query_as(
        "select c.oid::regclass::text, t.citus_table_type, t.distribution_column, t.colocation_id
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           join citus_tables t on t.table_name = c.oid
          where n.nspname in ('ledger', 'escrow') and c.relkind = 'r' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables.len(), 23, "{tables:?}");
    let reference: Vec<&str> = tables
        .iter()
        .filter(|t| t.1 == "reference")
        .map(|t| t.0.as_str())
        .collect();
    assert_eq!(reference, ["ledger.ledgers"]);
    let distributed: Vec<_> = tables.iter().filter(|t| t.1 == "distributed").collect();
    assert_eq!(distributed.len(), 22);
    assert!(distributed.iter().all(|t| t.2 == "ledger_id"), "{tables:?}");
    assert!(
        distributed.iter().all(|t| t.3 == distributed[0].3),
        "{tables:?}"
    );
    let functions = strings(
        &db,
        "select objid::regprocedure::text from pg_dist_object
          where distribution_argument_index = 0 and colocationid = (
                select colocationid from pg_dist_partition where logicalrelid = 'ledger.events'::regclass)
          order by 1",
    )
    .await;
    assert_eq!(functions.len(), 5, "{functions:?}");
    // A second migrate finds nothing to do.
    ledger_store::migrate(&db.pool).await.unwrap();
    assert!(local_tables(&db.pool).await.unwrap().is_empty());
}

/// Runs `statement` as `escrow_writer` on `conn` and returns its SQLSTATE.
async fn refused_as_writer(conn: &mut PgConnection, statement: &'static str) -> String {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local role escrow_writer")
        .execute(&mut *tx)
        .await
        .unwrap();
    let error = sqlx::query(statement).execute(&mut *tx).await.unwrap_err();
    error
        .as_database_error()
        .and_then(|e| e.code())
        .unwrap()
        .into_owned()
}

const OTHER_LEDGER_WRITES: [&str; 5] = [
    "update ledger.events set payload = '{}' where ledger_id = 'other'",
    "delete from ledger.events where ledger_id = 'other'",
    "delete from ledger.idempotency where ledger_id = 'other'",
    "insert into ledger.sequence (ledger_id, position, local_id, hash, sequenced_at)
     select ledger_id, 99, local_id, sha256(''::bytea), now() from ledger.events where ledger_id = 'other'",
    "delete from ledger.unsequenced where ledger_id = 'other'",
];

/// A writer connected to the node that holds a ledger (a worker on Citus, the server otherwise) cannot
/// rewrite that ledger's history, exactly as through the coordinator: the same SQLSTATEs.
#[tokio::test]
async fn a_write_to_another_ledgers_rows_through_a_worker_is_refused_as_on_one_server() {
    let db = TestDb::new().await;
    let store = db.store();
    store.create_ledger("other").await.unwrap();
    for ledger in [LEDGER, "other"] {
        store
            .append(
                ledger,
                vec![append("s", ExpectedVersion::Any, 2)],
                Some(common::record("k")),
            )
            .await
            .unwrap();
    }
    let mut coordinator = db.pool.acquire().await.unwrap();
    let mut expected = Vec::new();
    for statement in OTHER_LEDGER_WRITES {
        expected.push(refused_as_writer(&mut coordinator, statement).await);
    }
    assert!(
        expected.iter().all(|c| c == "42501" || c == "EL001"),
        "{expected:?}"
    );
    let node_url = if citus_requested() {
        // The worker that holds ledger `other`'s shard of ledger.events.
        let port: i32 = sqlx::query_scalar(
            "select nodeport from citus_shards
              where shardid = get_shard_id_for_distribution_column('ledger.events', 'other')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let nodes = citus_nodes().await.unwrap();
        assert!(nodes.workers.contains(&u16::try_from(port).unwrap()));
        url_with_database(
            &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            db.name(),
        )
    } else {
        db.url().to_string()
    };
    let mut node = PgConnection::connect(&node_url).await.unwrap();
    for (statement, code) in OTHER_LEDGER_WRITES.iter().zip(&expected) {
        assert_eq!(
            &refused_as_writer(&mut node, statement).await,
            code,
            "{statement}"
        );
    }
    for ledger in [LEDGER, "other"] {
        assert_eq!(store.head_position(ledger).await.unwrap(), 2);
    }
}

/// The owner's UPDATE, DELETE and TRUNCATE of the log are refused by the triggers, which on Citus run on
/// every shard (`citus.enable_unsafe_triggers` at distribution time).
#[tokio::test]
async fn the_log_stays_append_only_for_the_owner() {
    let db = TestDb::new().await;
    db.store()
        .append(LEDGER, vec![append("s", ExpectedVersion::Any, 2)], None)
        .await
        .unwrap();
    for statement in [
        "update ledger.events set payload = '{}'",
        "delete from ledger.events",
        "truncate ledger.events cascade",
        "delete from ledger.sequence",
        "truncate ledger.sequence",
    ] {
        let error = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        let error = StoreError::from(error);
        assert!(
            matches!(&error, StoreError::AppendOnlyViolation { .. }),
            "{statement}: {error:?}"
        );
    }
    assert_eq!(db.store().head_position(LEDGER).await.unwrap(), 2);
}

/// Every CLI command migrates first: many processes starting at once on one database must all get
/// through (on Citus the post-migration step used to alter a function each time and failed with "tuple
/// concurrently updated" for some of 8 `bench append` processes).
#[tokio::test]
async fn concurrent_migrates_of_one_database_all_succeed() {
    let db = TestDb::new().await;
    let mut runs = Vec::new();
    for _ in 0..6 {
        let pool = db.pool.clone();
        runs.push(tokio::spawn(
            async move { ledger_store::migrate(&pool).await },
        ));
    }
    for run in runs {
        run.await.unwrap().unwrap();
    }
    assert!(local_tables(&db.pool).await.unwrap().is_empty());
}

/// Operations: a ledger's shards move to the other worker while a writer appends to it. Nothing is lost or
/// reordered: every acknowledged append is in the log once, stream versions are gapless, the chain
/// verifies, and the ledger now lives on the other worker. On one server there is nothing to move: the
/// same appends and checks run without a move.
#[tokio::test]
async fn appends_during_a_shard_move_lose_or_reorder_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    store.create_ledger("acme").await.unwrap();
    let writer = {
        let store = db.store();
        tokio::spawn(async move {
            let mut acknowledged = 0_i64;
            for n in 0..120 {
                let stream = format!("s{}", n % 4);
                let outcome = store
                    .append("acme", vec![append(&stream, ExpectedVersion::Any, 1)], None)
                    .await;
                match outcome {
                    Ok(_) => acknowledged += 1,
                    Err(error) => panic!("append {n} failed during the move: {error:?}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            acknowledged
        })
    };
    let moved_to = if citus_requested() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (shard, from): (i64, i32) = sqlx::query_as(
            "select shardid, nodeport from citus_shards
              where shardid = get_shard_id_for_distribution_column('ledger.events', 'acme')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let nodes = citus_nodes().await.unwrap();
        let to = i32::from(
            *nodes
                .workers
                .iter()
                .find(|w| i32::from(**w) != from)
                .unwrap(),
        );
        sqlx::query(
            "select citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3,
                                               shard_transfer_mode => 'block_writes')",
        )
        .bind(shard)
        .bind(from)
        .bind(to)
        .execute(&db.pool)
        .await
        .unwrap();
        Some(to)
    } else {
        None
    };
    let acknowledged = writer.await.unwrap();
    assert_eq!(acknowledged, 120);
    store.sequence_pending("acme").await.unwrap();
    assert_eq!(store.head_position("acme").await.unwrap(), 120);
    let report = store.verify_chain("acme", None).await.unwrap();
    assert!(report.first_break.is_none(), "{report:?}");
    assert_eq!(report.events_verified, 120);
    let versions: Vec<(String, i64, i64)> = sqlx::query_as(
        "select stream_id, count(*), max(stream_version) from ledger.events
          where ledger_id = 'acme' group by 1 order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(versions.iter().all(|(_, n, max)| n == max), "{versions:?}");
    assert_eq!(versions.iter().map(|v| v.1).sum::<i64>(), 120);
    if let Some(to) = moved_to {
        let port: i32 = sqlx::query_scalar(
            "select nodeport from citus_shards
              where shardid = get_shard_id_for_distribution_column('ledger.events', 'acme')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(port, to);
    }
}
