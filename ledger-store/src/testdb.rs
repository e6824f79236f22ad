//! Databases for tests and first runs: every test gets a fresh, migrated database.
//!
//! [`admin_url`] is `DATABASE_URL` when set; else the local server on 127.0.0.1:5432 when one
//! answers; else a private cluster (see [`crate::cluster`]) under the temp directory, started
//! once and shared by concurrent test processes (a lock file serializes the start). Tests never
//! skip themselves: without PostgreSQL they fail with a one-line cause.
//!
//! Citus mode (`ESCROW_TEST_CITUS=1`): the harness starts a local Citus cluster instead (a coordinator and
//! two workers, [`crate::citus_cluster`]); every test database is created on all three nodes with the
//! `citus` extension and the workers registered, so [`crate::migrate`] distributes it by ledger. The
//! same tests then run on Citus unchanged.

use crate::citus_cluster::CitusNodes;
use crate::cluster::{ClusterStatus, PrivateCluster, postmaster_port};
use crate::error::{Result, StoreError};
use crate::postgres::PgEventStore;
use sqlx::{Connection, PgConnection, PgPool};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::OnceCell;

const LOCAL_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();
static CITUS_NODES: OnceCell<CitusNodes> = OnceCell::const_new();

/// Whether the tests run on the local Citus cluster (`ESCROW_TEST_CITUS=1`).
pub fn citus_requested() -> bool {
    std::env::var("ESCROW_TEST_CITUS").is_ok_and(|v| v == "1")
}

/// The Citus nodes, started on first use (Citus mode only).
pub async fn citus_nodes() -> Result<&'static CitusNodes> {
    CITUS_NODES
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(crate::citus_cluster::ensure)
                .await
                .map_err(|e| StoreError::Cluster {
                    reason: format!("citus cluster start panicked: {e}"),
                })?
        })
        .await
}

/// URL of a database where the harness may create and drop databases.
pub async fn admin_url() -> Result<String> {
    ADMIN_URL.get_or_try_init(resolve_admin_url).await.cloned()
}

async fn resolve_admin_url() -> Result<String> {
    if citus_requested() {
        let nodes = citus_nodes().await?;
        return Ok(CitusNodes::admin_url(nodes.coordinator));
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    if answers(LOCAL_SERVER_URL).await {
        return Ok(LOCAL_SERVER_URL.to_owned());
    }
    tokio::task::spawn_blocking(ensure_test_cluster)
        .await
        .map_err(|e| StoreError::Cluster {
            reason: format!("cluster start panicked: {e}"),
        })?
}

async fn answers(url: &str) -> bool {
    match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(connection)) => connection.close().await.is_ok(),
        _ => false,
    }
}

/// Where the tests' private cluster lives (reachable by the `postgres` OS user).
pub fn test_cluster_root() -> PathBuf {
    std::env::temp_dir().join("escrow-ledger-test-pg")
}

/// Starts (or reuses) the tests' private cluster under a lock file, and returns its URL.
fn ensure_test_cluster() -> Result<String> {
    let root = test_cluster_root();
    let cluster_error = |reason: String| StoreError::Cluster { reason };
    std::fs::create_dir_all(&root)
        .map_err(|e| cluster_error(format!("{}: {e}", root.display())))?;
    let lock = std::fs::File::create(root.join("lock"))
        .map_err(|e| cluster_error(format!("lock file: {e}")))?;
    lock.lock()
        .map_err(|e| cluster_error(format!("lock file: {e}")))?;
    let data_dir = root.join("data");
    let port = postmaster_port(&data_dir).map_or_else(free_port, Ok)?;
    let cluster = PrivateCluster::new(data_dir, port);
    let port = match cluster.status()? {
        ClusterStatus::Running { port } => port,
        _ => {
            let cluster = PrivateCluster::new(&cluster.data_dir, free_port()?);
            cluster.start()?;
            cluster.port
        }
    };
    Ok(PrivateCluster::new(&cluster.data_dir, port).url())
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| StoreError::Cluster {
        reason: format!("no free port: {e}"),
    })?;
    Ok(listener
        .local_addr()
        .map_err(|e| StoreError::Cluster {
            reason: e.to_string(),
        })?
        .port())
}

/// `url` with its database name replaced.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A fresh database, migrated, dropped when the test ends without panicking (kept for
/// inspection when it failed).
pub struct TestDb {
    pub pool: PgPool,
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// A fresh migrated database. Panics with the cause when PostgreSQL cannot be reached.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        crate::migrate(&db.pool)
            .await
            .expect("migrating the test database");
        db
    }

    /// A fresh database without the schema (for example as the target of a restore).
    pub async fn empty() -> Self {
        Self::try_empty()
            .await
            .unwrap_or_else(|e| panic!("test database: {e}"))
    }

    async fn try_empty() -> Result<Self> {
        let admin_url = admin_url().await?;
        let name = format!("escrow_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await?;
        // An identifier cannot be a bind parameter; `name` is generated above from hex digits.
        let create = format!("create database \"{name}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = url_with_database(&admin_url, &name);
        if citus_requested() {
            prepare_citus_database(citus_nodes().await?, &name).await?;
        }
        let pool = crate::postgres::connect(&url).await?;
        Ok(Self {
            pool,
            name,
            url,
            admin_url,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn store(&self) -> PgEventStore {
        PgEventStore::new(self.pool.clone())
    }

    /// The URL of this database on the node that holds `ledger`'s rows: the worker on Citus (a transaction
    /// opened there runs where the engine's per-ledger functions run), else the database's own URL.
    pub async fn ledger_node_url(&self, ledger: &str) -> sqlx::Result<String> {
        if !citus_requested() {
            return Ok(self.url.clone());
        }
        let port: i32 = sqlx::query_scalar(
            "select n.nodeport from pg_dist_placement p join pg_dist_node n on n.groupid = p.groupid
              where p.shardid = get_shard_id_for_distribution_column('ledger.events', $1)",
        )
        .bind(ledger)
        .fetch_one(&self.pool)
        .await?;
        let port = u16::try_from(port).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(url_with_database(&CitusNodes::admin_url(port), &self.name))
    }

    /// Runs `sql` (one or more statements) with the log's append-only triggers out of the way, as a
    /// superuser rewriting history would: the tests of `verify` need a tampered log.
    pub async fn tamper(&self, sql: &str) -> sqlx::Result<()> {
        let mut tampering = self.tampering().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(tampering.conn())
            .await?;
        tampering.finish().await
    }

    /// A careful forger: recomputes and rewrites every stored link of `ledger` from `from_position` on, so
    /// that the stored chain is self-consistent again after an edit (only a seal taken earlier tells).
    /// The links are computed here, as `verify` computes them, and written behind the triggers.
    pub async fn rehash_chain_from(&self, ledger: &str, from_position: i64) -> sqlx::Result<()> {
        let store = self.store();
        let failed = |e: StoreError| sqlx::Error::Protocol(e.to_string());
        let mut previous = crate::chain::GENESIS_HASH;
        if from_position > 1 {
            let before = store
                .read_chain_rows(ledger, from_position - 2, 1)
                .await
                .map_err(failed)?;
            if let Some(link) = before.first() {
                previous = link.hash.as_slice().try_into().map_err(|_| {
                    sqlx::Error::Protocol(format!("link {} is not 32 bytes", link.position))
                })?;
            }
        }
        let mut tampering = self.tampering().await?;
        let mut after = from_position - 1;
        loop {
            let rows = store
                .read_chain_rows(ledger, after, 1_000)
                .await
                .map_err(failed)?;
            let Some(last) = rows.last() else { break };
            after = last.position;
            for row in &rows {
                // A link whose event is gone keeps its stored hash, and the next link chains from it
                // (as `ChainVerifier::push_missing` reads it).
                let Some(input) = row.input(ledger) else {
                    previous = row.hash.as_slice().try_into().map_err(|_| {
                        sqlx::Error::Protocol(format!("link {} is not 32 bytes", row.position))
                    })?;
                    continue;
                };
                previous = crate::chain::next_hash(&previous, &input);
                sqlx::query(
                    "update ledger.sequence set hash = $1 where ledger_id = $2 and position = $3",
                )
                .bind(previous.as_slice())
                .bind(ledger)
                .bind(row.position)
                .execute(tampering.conn())
                .await?;
            }
        }
        tampering.finish().await
    }

    /// A transaction in which the log's append-only triggers do not fire (see [`Tampering`]).
    pub async fn tampering(&self) -> sqlx::Result<Tampering> {
        let mut tx = self.pool.begin().await?;
        // Citus checks this when a trigger of a distributed table is altered (an unused placeholder on
        // one server).
        sqlx::raw_sql("set local citus.enable_unsafe_triggers = on")
            .execute(&mut *tx)
            .await?;
        // The append-only triggers, the one that stamps `recorded_at` (a tampering test may backdate) and
        // the commit-time check that outcome rows are backed by the log (a test may plant an unbacked row).
        let triggers: Vec<(String, String)> = sqlx::query_as(
            "select tgrelid::regclass::text, quote_ident(tgname) from pg_trigger
              where tgfoid::regproc::text in ('ledger.forbid_mutation', 'ledger.stamp_recorded_at',
                                              'ledger.outcome_is_logged')
              order by 1, 2",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (table, trigger) in &triggers {
            // Table and trigger names come from the catalog, quoted there.
            let disable = format!("alter table {table} disable trigger {trigger}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(disable))
                .execute(&mut *tx)
                .await?;
        }
        Ok(Tampering { tx, triggers })
    }
}

/// A transaction that may rewrite the log behind the append-only triggers, as a superuser could: the
/// `forbid_mutation` triggers (and `events_recorded_now`, so that a test may backdate) are disabled inside it (DDL, which Citus carries to every shard) and enabled
/// again by [`Tampering::finish`] before the commit; every other trigger and constraint (foreign keys, the
/// queue) still applies, the same on one server and on Citus (`session_replication_role` would skip them
/// all on one server and does not reach Citus' workers). Dropped without `finish`, it rolls back.
pub struct Tampering {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    triggers: Vec<(String, String)>,
}

impl Tampering {
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Puts the triggers back and commits.
    pub async fn finish(mut self) -> sqlx::Result<()> {
        for (table, trigger) in &self.triggers {
            let enable = format!("alter table {table} enable trigger {trigger}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(enable))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // `ESCROW_TEST_KEEP_DATABASES=1` keeps every test's database (to look at what a passing test wrote).
        let keep = std::env::var("ESCROW_TEST_KEEP_DATABASES").is_ok_and(|v| v == "1");
        if std::thread::panicking() || keep {
            eprintln!(
                "keeping test database {} for inspection: {}",
                self.name, self.url
            );
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let dropped = std::thread::spawn(move || drop_database(&admin_url, &name)).join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// A database of the same name on every worker, the `citus` extension in all of them, the workers
/// registered with the coordinator's database.
async fn prepare_citus_database(nodes: &CitusNodes, name: &str) -> Result<()> {
    // `name` is generated by `try_empty` from hex digits: safe to format into the statements.
    for worker in &nodes.workers {
        let mut admin = PgConnection::connect(&CitusNodes::admin_url(*worker)).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = url_with_database(&CitusNodes::admin_url(*worker), name);
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::raw_sql("create extension citus")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
    }
    let url = url_with_database(&CitusNodes::admin_url(nodes.coordinator), name);
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql("create extension citus")
        .execute(&mut conn)
        .await?;
    sqlx::query("select citus_set_coordinator_host('127.0.0.1', $1)")
        .bind(i32::from(nodes.coordinator))
        .execute(&mut conn)
        .await?;
    for worker in &nodes.workers {
        sqlx::query("select citus_add_node('127.0.0.1', $1)")
            .bind(i32::from(*worker))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Cluster {
            reason: e.to_string(),
        })?;
    runtime.block_on(async {
        let mut admin = PgConnection::connect(admin_url).await?;
        let drop = format!("drop database if exists \"{name}\" with (force)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop.clone()))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        if let Some(nodes) = CITUS_NODES.get() {
            for worker in &nodes.workers {
                let mut admin = PgConnection::connect(&CitusNodes::admin_url(*worker)).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop.clone()))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
            }
        }
        Ok(())
    })
}
