//! `migrate` on one server and on Citus (issue 13). Every test runs in both modes: on one server (the
//! default) it shows that nothing changes; with `ESCROW_TEST_CITUS=1` (a local coordinator and two
//! workers started by the harness) it shows the distribution by ledger and that a worker refuses what one
//! server refuses.

mod common;

use common::{AppendRequest, LEDGER, append, keyed};
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money};
use ledger_store::citus::{Deployment, deployment, local_tables};
use ledger_store::testdb::{TestDb, citus_nodes, citus_requested, url_with_database};
use ledger_store::{
    EventStore, Executor, ExecutorConfig, ExpectedVersion, PgEventStore, StoreError,
};
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    // 23, and since issue 21 the relay's cursors, webhook endpoints and deliveries, and monitors.
    assert_eq!(tables.len(), 27, "{tables:?}");
    for events_out in [
        "ledger.event_cursors",
        "ledger.event_monitors",
        "ledger.webhook_deliveries",
        "ledger.webhook_endpoints",
    ] {
        assert!(
            tables
                .iter()
                .any(|t| t.0 == events_out && t.1 == "distributed" && t.2 == "ledger_id"),
            "{events_out} is not distributed by ledger_id: {tables:?}"
        );
    }
    let reference: Vec<&str> = tables
        .iter()
        .filter(|t| t.1 == "reference")
        .map(|t| t.0.as_str())
        .collect();
    assert_eq!(reference, ["ledger.ledgers"]);
    let distributed: Vec<_> = tables.iter().filter(|t| t.1 == "distributed").collect();
    assert_eq!(distributed.len(), 26);
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
            .append_request(
                ledger,
                keyed(vec![append("s", ExpectedVersion::Any, 2)], "k"),
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

/// When one append was sent and when it was acknowledged.
#[derive(Clone, Copy, Debug)]
struct Acknowledged {
    sent: Instant,
    acknowledged: Instant,
}

/// How the writer writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// `EventStore::append` of one event (four streams, any version); a refused append fails the test.
    Store,
    /// The engine: `Executor::execute` of a new deposit (its own payment stream) per command, so the
    /// executor's own retries are what keeps the writer going; a command that fails fails the test.
    Engine,
}

const BUYER: uuid::Uuid = uuid::Uuid::from_u128(0xB0B);

/// One write of `writer` number `n`.
async fn write_once(
    writer: Writer,
    store: &PgEventStore,
    executor: &Executor,
    ledger: &str,
    n: usize,
) -> Result<(), String> {
    match writer {
        Writer::Store => store
            .append(
                ledger,
                vec![append(&format!("s{}", n % 4), ExpectedVersion::Any, 1)],
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        Writer::Engine => {
            let command = CommandEnvelope {
                command_id: uuid::Uuid::new_v4(),
                actor: Actor::User(BUYER),
                at: chrono::Utc::now(),
                command: Command::InitiateDeposit {
                    payment_id: uuid::Uuid::new_v4(),
                    amount: Money::from_minor(1_000, Currency::USD),
                    gateway: Gateway::Stripe,
                    fund: None,
                },
            };
            match executor.execute(&command, None).await {
                Ok(outcome) if outcome.is_accepted() => Ok(()),
                Ok(outcome) => Err(format!("refused: {outcome:?}")),
                Err(error) => Err(format!("{error:?}")),
            }
        }
    }
}

/// Writes to `ledger` every 10 ms until `stop` turns true, failing the test on the first write that fails.
/// At most `WRITES_MAX` (a limit on a runaway test).
fn spawn_writer(
    store: PgEventStore,
    ledger: &'static str,
    writer: Writer,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Acknowledged>>>,
) -> tokio::task::JoinHandle<()> {
    const WRITES_MAX: usize = 5_000;
    let executor = Executor::new(Arc::new(store.clone()), ledger, ExecutorConfig::default());
    tokio::spawn(async move {
        for n in 0..WRITES_MAX {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let sent = Instant::now();
            if let Err(error) = write_once(writer, &store, &executor, ledger, n).await {
                panic!("write {n} to {ledger} failed during the operation: {error}");
            }
            log.lock().unwrap().push(Acknowledged {
                sent,
                acknowledged: Instant::now(),
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn wait_for_appends(log: &Mutex<Vec<Acknowledged>>, at_least: usize) {
    let started = Instant::now();
    while log.lock().unwrap().len() < at_least {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the writer stalled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `operation` while a writer writes to `ledger`: 30 writes acknowledged before it starts, 30 after it
/// ends. Returns every acknowledged write and the operation's start and end. Then checks that nothing was
/// lost or reordered: every acknowledged write is in the log once (one event per store append; one payment
/// stream per engine command), positions are gapless, stream versions are gapless, the chain verifies.
async fn appends_during<T, F: std::future::Future<Output = T>>(
    db: &TestDb,
    ledger: &'static str,
    writer: Writer,
    operation: impl FnOnce() -> F,
) -> (T, Vec<Acknowledged>, Instant, Instant) {
    let store = db.store();
    store.create_ledger(ledger).await.unwrap();
    preload(db, ledger).await;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let writing = spawn_writer(db.store(), ledger, writer, stop.clone(), log.clone());
    wait_for_appends(&log, 30).await;
    let started = Instant::now();
    let result = operation().await;
    let ended = Instant::now();
    let before_end = log.lock().unwrap().len();
    wait_for_appends(&log, before_end + 30).await;
    stop.store(true, Ordering::SeqCst);
    writing.await.unwrap();
    let acknowledged = log.lock().unwrap().clone();
    let writes = i64::try_from(acknowledged.len()).unwrap();

    store.sequence_pending(ledger).await.unwrap();
    let (events, written): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct stream_id) filter (where stream_id like 'payment-%')
           from ledger.events where ledger_id = $1",
    )
    .bind(ledger)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    match writer {
        Writer::Store => assert_eq!(events, PRELOADED_EVENTS + writes),
        Writer::Engine => assert_eq!(written, writes, "payment streams vs acknowledged commands"),
    }
    assert_eq!(store.head_position(ledger).await.unwrap(), events);
    let report = store.verify_chain(ledger, None).await.unwrap();
    assert!(report.first_break.is_none(), "{report:?}");
    assert_eq!(report.events_verified, events);
    let positions: Vec<i64> = sqlx::query_scalar(
        "select position from ledger.sequence where ledger_id = $1 order by position",
    )
    .bind(ledger)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(positions, (1..=events).collect::<Vec<_>>());
    let versions: Vec<(String, i64, i64)> = sqlx::query_as(
        "select stream_id, count(*), max(stream_version) from ledger.events
          where ledger_id = $1 group by 1 order by 1",
    )
    .bind(ledger)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(versions.iter().all(|(_, n, max)| n == max), "{versions:?}");
    (result, acknowledged, started, ended)
}

/// The writes sent and acknowledged while the operation ran (`started < sent`, `acknowledged < ended`): a
/// write the operation blocked until its end is not counted.
fn inside(acknowledged: &[Acknowledged], started: Instant, ended: Instant) -> usize {
    acknowledged
        .iter()
        .filter(|a| a.sent > started && a.acknowledged < ended)
        .count()
}

/// Writes a move that does not block writers lets through (one every 10 ms while it copies): a move that
/// blocked them would let through only those before its lock.
const INSIDE_MIN: usize = 10;

/// Events written to `ledger` before a test's writer starts, so that copying its shards takes a while.
const PRELOADED_EVENTS: i64 = 20_000;

/// Writes `PRELOADED_EVENTS` events to one stream of `ledger` in one statement, and sequences them.
async fn preload(db: &TestDb, ledger: &str) {
    sqlx::query(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                    schema_version, payload, metadata)
         select $1, 'preloaded', n, gen_random_uuid(), 'Tested', 1, jsonb_build_object('n', n), '{}'
           from generate_series(1, $2::bigint) as n",
    )
    .bind(ledger)
    .bind(PRELOADED_EVENTS)
    .execute(&db.pool)
    .await
    .unwrap();
    db.store().sequence_pending(ledger).await.unwrap();
}

/// The worker holding `ledger`'s shard of `ledger.events` (its port) and that shard.
async fn placement_of(db: &TestDb, ledger: &str) -> (i64, i32) {
    sqlx::query_as(
        "select shardid, nodeport from citus_shards
          where table_name = 'ledger.events'::regclass
            and shardid = get_shard_id_for_distribution_column('ledger.events', $1)",
    )
    .bind(ledger)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// A ledger id (`neighbour-<n>`) whose shard of `ledger.events` is the one `ledger` hashes to.
async fn neighbour_of(db: &TestDb, ledger: &str) -> String {
    sqlx::query_scalar(
        "select 'neighbour-' || n from generate_series(1, 10000) as n
          where get_shard_id_for_distribution_column('ledger.events', 'neighbour-' || n)
              = get_shard_id_for_distribution_column('ledger.events', $1)
          order by n limit 1",
    )
    .bind(ledger)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn other_worker(from: i32) -> i32 {
    let nodes = citus_nodes().await.unwrap();
    i32::from(
        *nodes
            .workers
            .iter()
            .find(|w| i32::from(**w) != from)
            .unwrap(),
    )
}

/// One shard transfer at a time on the tests' cluster: a transfer without blocking writes creates a logical
/// replication slot, which waits for every transaction running on the node, another test's transfer
/// included (two at once waited for each other until a timeout).
static SHARD_TRANSFERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A connection for a shard transfer: the store's statement timeout is for commands, not for copying a
/// ledger.
///
/// Replication slots are per node and Citus names them by ids that every test database numbers alike: slots
/// an earlier, interrupted transfer left behind (inactive) are dropped first.
async fn operator_connection(db: &TestDb) -> PgConnection {
    for worker in &citus_nodes().await.unwrap().workers {
        let mut admin = PgConnection::connect(&url_with_database(
            &ledger_store::citus_cluster::CitusNodes::admin_url(*worker),
            "postgres",
        ))
        .await
        .unwrap();
        sqlx::query(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots
              where not active and slot_name like 'citus%'",
        )
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("set statement_timeout = '5min'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Moves `shard` (and its colocated shards) to the worker on port `to`, without blocking writes (logical
/// replication; writes wait only for the final switch-over).
async fn move_shard(conn: &mut PgConnection, shard: i64, from: i32, to: i32) {
    sqlx::query(
        "select citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3,
                                           shard_transfer_mode => 'force_logical')",
    )
    .bind(shard)
    .bind(from)
    .bind(to)
    .execute(conn)
    .await
    .unwrap();
}

/// Operations: a ledger's shards move to the other worker while a writer appends to it. Nothing is lost or
/// reordered (see [`appends_during`]), appends were acknowledged while the move ran, and the ledger now
/// lives on the other worker. On one server there is nothing to move: the same appends and checks run
/// around an empty operation.
#[tokio::test]
async fn appends_during_a_shard_move_lose_or_reorder_nothing() {
    let db = TestDb::new().await;
    if !citus_requested() {
        appends_during(&db, "acme", Writer::Store, || async {}).await;
        return;
    }
    let transfers = SHARD_TRANSFERS.lock().await;
    let mut operator = operator_connection(&db).await;
    let (to, acknowledged, started, ended) = appends_during(&db, "acme", Writer::Store, || async {
        let (shard, from) = placement_of(&db, "acme").await;
        let to = other_worker(from).await;
        move_shard(&mut operator, shard, from, to).await;
        to
    })
    .await;
    drop(transfers);
    let during = inside(&acknowledged, started, ended);
    eprintln!(
        "shard move took {:?}; {} appends acknowledged, {during} of them sent and acknowledged during it",
        ended - started,
        acknowledged.len()
    );
    assert!(
        during >= INSIDE_MIN,
        "{during} appends were sent and acknowledged while the move ran"
    );
    assert_eq!(placement_of(&db, "acme").await.1, to);
}

/// Operations: a hot ledger gets shards of its own (`isolate_tenant_to_new_shard`, every colocated table)
/// while a writer appends to it, and those shards then move to the other worker. Nothing is lost or
/// reordered; the new shards hold that ledger alone; the ledger that shared its old shard is untouched.
/// The writer is the engine (`Executor`): a command whose append was planned on the old shard is refused
/// at the split's switch-over (`StoreError::PlacementChanged`, rolled back) and the executor decides and
/// appends it again, so no command fails. The split blocks writes while it copies (`block_writes`; with
/// `force_logical` under writes the split's subscription cannot apply the sequencer's deletes from the queue
/// shard: ARCHITECTURE "On Citus"). The move after it does not block writes.
#[tokio::test]
async fn a_hot_ledger_isolated_to_its_own_shard_and_moved_while_appending_loses_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    // A neighbour: a ledger whose id hashes to the shard "hot" starts in, so the split must carve "hot" out
    // of a shard it shares (on one server any ledger).
    let neighbour = if citus_requested() {
        neighbour_of(&db, "hot").await
    } else {
        LEDGER.to_owned()
    };
    if neighbour != LEDGER {
        store.create_ledger(&neighbour).await.unwrap();
    }
    store
        .append(
            &neighbour,
            vec![append("neighbour", ExpectedVersion::NoStream, 3)],
            None,
        )
        .await
        .unwrap();
    if !citus_requested() {
        appends_during(&db, "hot", Writer::Engine, || async {}).await;
        return;
    }
    let transfers = SHARD_TRANSFERS.lock().await;
    let mut operator = operator_connection(&db).await;
    let ((isolated, to), acknowledged, started, ended) =
        appends_during(&db, "hot", Writer::Engine, || async {
            let isolated: i64 = sqlx::query_scalar(
                "select isolate_tenant_to_new_shard('ledger.events', 'hot', 'CASCADE',
                                                shard_transfer_mode => 'block_writes')",
            )
            .fetch_one(&mut operator)
            .await
            .unwrap();
            let (shard, from) = placement_of(&db, "hot").await;
            assert_eq!(shard, isolated);
            let to = other_worker(from).await;
            move_shard(&mut operator, shard, from, to).await;
            (isolated, to)
        })
        .await;
    drop(transfers);
    let during = inside(&acknowledged, started, ended);
    eprintln!(
        "isolation and move took {:?}; {} commands acknowledged, {during} of them sent and acknowledged during it",
        ended - started,
        acknowledged.len()
    );
    assert!(
        during >= INSIDE_MIN,
        "{during} commands were sent and acknowledged while the isolation and move ran"
    );
    assert_eq!(placement_of(&db, "hot").await, (isolated, to));
    // Every table's shard for "hot" covers that one hash value, so no other ledger shares it.
    let shared: Vec<String> = sqlx::query_scalar(
        "select p.logicalrelid::regclass::text
           from pg_dist_partition p
           join pg_dist_shard s on s.logicalrelid = p.logicalrelid
          where p.partmethod = 'h'
            and s.shardid = get_shard_id_for_distribution_column(p.logicalrelid, 'hot')
            and s.shardminvalue <> s.shardmaxvalue
          order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        shared.is_empty(),
        "still shared with other ledgers: {shared:?}"
    );
    assert_ne!(
        placement_of(&db, &neighbour).await.0,
        isolated,
        "the neighbour shares the isolated shard"
    );
    let events = store
        .read_stream(&neighbour, "neighbour", 0, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        store
            .verify_chain(&neighbour, None)
            .await
            .unwrap()
            .first_break
            .is_none()
    );
}
