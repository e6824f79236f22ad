//! Rebuild from zero: every ledger's log is folded in memory and written with COPY into unindexed shadow
//! tables (`<table>__rb`, invisible to readers: no grants, no policies yet); the shadows are indexed like
//! the live tables; then one short transaction swaps each shadow in with the live table's grants, RLS
//! flags, policies and dependent views (`escrow.swap_shadow`) and sets the checkpoints to the positions the
//! fold reached. Readers see the old model until that commit and the new one after it, never a half-built
//! one. Workers that are running notice the moved checkpoint and continue from it.
//!
//! The read tables hold every ledger, so a rebuild covers every ledger of the database.
//!
//! On Citus the swap cannot rename and drop distributed tables: the checkpoints are locked as the projector
//! and the DDL runs as the owner, two roles and so two connections to the same colocated placements, and
//! Citus refuses DDL on a placement read over several connections. There the shadows are distributed
//! tables colocated with the live ones, and the swap replaces the live tables' rows instead (`delete`, then
//! `insert ... select` from the shadow, pushed down to each worker), all as the projector in the one
//! transaction that also moves the checkpoints. The live tables, their grants, policies, RLS flags and views
//! are never touched; readers keep reading the old rows until the commit (no exclusive lock either).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledger_store::citus::Deployment;
use ledger_store::{EventStore, PgEventStore, RecordedEvent};
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;
use tokio::sync::mpsc;

use crate::fold::{Folder, RowSink, decode_owned};
use crate::sql::{copy_line, copy_sql};
use crate::table::{Merge, Projection, Row, TABLES};
use crate::{Error, Result};

/// Events per read of the log.
const READ_PAGE_EVENTS: i64 = 10_000;
/// Pages read ahead of the fold.
const READ_AHEAD_PAGES: usize = 4;
/// A table's COPY buffer is sent once it holds this many bytes.
const COPY_FLUSH_BYTES: usize = 4 << 20;
/// Attempts at the swap when readers hold the tables (each waits at most `SWAP_LOCK_TIMEOUT`).
const SWAP_ATTEMPTS_MAX: u32 = 5;
const SWAP_LOCK_TIMEOUT: &str = "5s";
const REBUILD_LOCK_KEY: &str = "escrow-ledger.projections.rebuild";
/// Statement timeout of the index builds and of a swap that copies rows (Citus).
const LONG_STATEMENT_TIMEOUT: &str = "15min";

/// How the rebuilt tables replace the live ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SwapMethod {
    /// One server: the indexed shadow is renamed into place with the live table's security (DDL).
    Rename,
    /// Citus: the live rows are replaced by the distributed shadow's, as the projector (no DDL).
    CopyRows,
}

impl SwapMethod {
    async fn of(pool: &PgPool) -> Result<SwapMethod> {
        Ok(match ledger_store::citus::deployment(pool).await? {
            Deployment::Single => SwapMethod::Rename,
            Deployment::Citus { .. } => SwapMethod::CopyRows,
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RebuildReport {
    pub projections: Vec<String>,
    /// (ledger, position the rebuilt tables reflect).
    pub ledgers: Vec<(String, i64)>,
    pub events: u64,
    /// (table, rows written).
    pub rows: Vec<(String, u64)>,
    pub fold_and_copy: Duration,
    pub index: Duration,
    pub swap: Duration,
    pub total: Duration,
}

struct CopySink {
    buffers: Vec<String>,
    merged: Vec<BTreeMap<Row, Row>>,
    rows: Vec<u64>,
}

impl CopySink {
    fn new() -> CopySink {
        CopySink {
            buffers: TABLES.iter().map(|_| String::new()).collect(),
            merged: TABLES.iter().map(|_| BTreeMap::new()).collect(),
            rows: vec![0; TABLES.len()],
        }
    }

    /// Moves the merged tables (accounts, balances) into the COPY buffers.
    fn finish_merged(&mut self) {
        for (index, map) in self.merged.iter_mut().enumerate() {
            for row in std::mem::take(map).into_values() {
                copy_line(&mut self.buffers[index], &row);
                self.rows[index] += 1;
            }
        }
    }
}

impl RowSink for CopySink {
    fn put(&mut self, table: usize, row: Row) {
        let spec = &TABLES[table];
        if spec.merge == Merge::Replace {
            // Facts are emitted once and entity rows only at the final drain: keys are unique here.
            copy_line(&mut self.buffers[table], &row);
            self.rows[table] += 1;
            return;
        }
        let key = spec.key_of(&row).to_vec();
        match self.merged[table].entry(key) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(row);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                spec.merge_into(slot.get_mut(), row)
            }
        }
    }
}

/// Sends every COPY buffer holding at least `threshold` bytes, one short COPY statement per buffer (the
/// store's connections carry a statement timeout, and a COPY spanning the whole fold would outlive it).
async fn flush(pool: &PgPool, sink: &mut CopySink, threshold: usize) -> Result<()> {
    let mut sends = Vec::new();
    for (index, buffer) in sink.buffers.iter_mut().enumerate() {
        if buffer.is_empty() || buffer.len() < threshold {
            continue;
        }
        let data = std::mem::take(buffer).into_bytes();
        sends.push(async move {
            let mut copy = pool.copy_in_raw(&copy_sql(&TABLES[index], "__rb")).await?;
            copy.send(data).await?;
            copy.finish().await?;
            Ok::<_, Error>(())
        });
    }
    futures::future::try_join_all(sends).await?;
    Ok(())
}

/// Rebuilds `projections` from zero on every ledger and swaps the results in.
pub async fn rebuild(pool: &PgPool, projections: &[Projection]) -> Result<RebuildReport> {
    let started = Instant::now();
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(REBUILD_LOCK_KEY)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Err(Error::RebuildBusy);
    }
    let result = match SwapMethod::of(pool).await {
        Ok(method) => rebuild_locked(pool, projections, method, started).await,
        Err(error) => Err(error),
    };
    // Renamed shadows are the live tables now; anything else left behind goes (a failed rebuild's, or
    // the copied-from shadows on Citus).
    drop_shadows(pool, projections).await;
    let _ = sqlx::query("select pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(REBUILD_LOCK_KEY)
        .execute(&mut *lock)
        .await;
    result
}

async fn drop_shadows(pool: &PgPool, projections: &[Projection]) {
    for spec in TABLES
        .iter()
        .filter(|t| projections.contains(&t.projection))
    {
        let drop = format!("drop table if exists escrow.{}__rb", spec.name);
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(pool).await {
            // A shadow left behind holds a full copy of every ledger's rows (readable by the projector):
            // say so; the next rebuild drops it first (`escrow.make_shadow`).
            tracing::warn!(table = spec.name, %error, "could not drop a rebuild's shadow table");
        }
    }
}

async fn rebuild_locked(
    pool: &PgPool,
    projections: &[Projection],
    method: SwapMethod,
    started: Instant,
) -> Result<RebuildReport> {
    let tables: Vec<usize> = (0..TABLES.len())
        .filter(|i| projections.contains(&TABLES[*i].projection))
        .collect();
    for &index in &tables {
        make_shadow(pool, TABLES[index].name, method).await?;
    }
    let store = PgEventStore::new(pool.clone());
    let mut sink = CopySink::new();
    let mut ledgers = Vec::new();
    let mut events = 0_u64;
    for ledger in store.list_ledgers().await? {
        let head = store.head_position(&ledger).await?;
        events += fold_ledger(pool, &store, &ledger, head, projections, &mut sink).await?;
        ledgers.push((ledger, head));
    }
    flush(pool, &mut sink, 0).await?;
    let folded = started.elapsed();
    if method == SwapMethod::Rename {
        index_shadows(pool, &tables).await?;
    }
    let indexed = started.elapsed();
    swap(pool, projections, &tables, &ledgers, method).await?;
    // The live tables now hold everything at once: their statistics, before the first reader plans on
    // defaults (best effort: the rebuild itself is done).
    for &index in &tables {
        let analyze = format!("analyze escrow.{}", TABLES[index].name);
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(analyze))
            .execute(pool)
            .await
        {
            tracing::warn!(table = TABLES[index].name, %error, "could not analyze a rebuilt table");
        }
    }
    let total = started.elapsed();
    Ok(RebuildReport {
        projections: projections.iter().map(|p| p.name().to_string()).collect(),
        ledgers,
        events,
        rows: tables
            .iter()
            .map(|&i| (TABLES[i].name.to_string(), sink.rows[i]))
            .collect(),
        fold_and_copy: folded,
        index: indexed - folded,
        swap: total - indexed,
        total,
    })
}

/// An empty shadow of `table`; on Citus distributed and colocated with the live tables, and readable by
/// the projector, who copies it into the live table at the swap.
async fn make_shadow(pool: &PgPool, table: &str, method: SwapMethod) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("select escrow.make_shadow($1)")
        .bind(table)
        .execute(&mut *tx)
        .await?;
    if method == SwapMethod::CopyRows {
        sqlx::query(
            "select create_distributed_table(format('escrow.%I', $1 || '__rb'), 'ledger_id',
                                              colocate_with => $2)",
        )
        .bind(table)
        .bind(ledger_store::citus::COLOCATION_TABLE)
        .execute(&mut *tx)
        .await?;
        // A table name from `TABLES`, never from outside.
        let grant = format!("grant select on escrow.{table}__rb to escrow_projector");
        sqlx::raw_sql(sqlx::AssertSqlSafe(grant))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Indexes the shadows like the live tables. Index builds run longer than the store's statement timeout
/// on large ledgers; they lock only the shadow tables, which nobody reads yet.
async fn index_shadows(pool: &PgPool, tables: &[usize]) -> Result<()> {
    let indexes = tables.iter().map(|&index| async move {
        let mut tx = pool.begin().await?;
        set_long_statement_timeout(&mut tx).await?;
        sqlx::query("select escrow.index_shadow($1)")
            .bind(TABLES[index].name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    });
    futures::future::try_join_all(indexes).await?;
    Ok(())
}

async fn set_long_statement_timeout(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    let set = format!("set local statement_timeout = '{LONG_STATEMENT_TIMEOUT}'");
    sqlx::raw_sql(sqlx::AssertSqlSafe(set))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Folds events 1..=`head` of `ledger` into the COPY buffers; returns the number of events.
async fn fold_ledger(
    pool: &PgPool,
    store: &PgEventStore,
    ledger: &str,
    head: i64,
    projections: &[Projection],
    sink: &mut CopySink,
) -> Result<u64> {
    let (pages_tx, mut pages) = mpsc::channel::<Result<Vec<RecordedEvent>>>(READ_AHEAD_PAGES);
    let reader_store = store.clone();
    let reader_ledger = ledger.to_owned();
    let reader = tokio::spawn(async move {
        let mut after = 0;
        while after < head {
            let page = reader_store
                .read_log(&reader_ledger, after, READ_PAGE_EVENTS.min(head - after))
                .await
                .map_err(Error::from);
            let last = page.as_ref().ok().and_then(|p| p.last()?.position);
            let failed = page.is_err();
            if pages_tx.send(page).await.is_err() || failed {
                return;
            }
            match last {
                Some(last) => after = last,
                None => return,
            }
        }
    });
    let mut folder = Folder::new(ledger, projections);
    let mut events = 0_u64;
    while let Some(page) = pages.recv().await {
        for mut record in page? {
            let (stream, event) = decode_owned(&mut record)?;
            folder.apply(&stream, &record, &event, sink)?;
            events += 1;
        }
        flush(pool, sink, COPY_FLUSH_BYTES).await?;
    }
    reader
        .await
        .map_err(|e| Error::Invalid(format!("log reader failed: {e}")))?;
    if events != u64::try_from(head).unwrap_or(0) {
        return Err(Error::Invalid(format!(
            "ledger {ledger}: read {events} events, expected {head}"
        )));
    }
    folder.drain(sink);
    sink.finish_merged();
    Ok(events)
}

async fn swap(
    pool: &PgPool,
    projections: &[Projection],
    tables: &[usize],
    ledgers: &[(String, i64)],
    method: SwapMethod,
) -> Result<()> {
    let names: Vec<String> = projections.iter().map(|p| p.name().to_string()).collect();
    for attempt in 1..=SWAP_ATTEMPTS_MAX {
        match swap_once(pool, &names, tables, ledgers, method).await {
            Err(Error::Db(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("55P03") && attempt < SWAP_ATTEMPTS_MAX =>
            {
                tracing::warn!(
                    attempt,
                    "rebuild swap waited too long for readers; retrying"
                );
            }
            other => return other,
        }
    }
    Ok(())
}

async fn swap_once(
    pool: &PgPool,
    projections: &[String],
    tables: &[usize],
    ledgers: &[(String, i64)],
    method: SwapMethod,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let set_timeout = format!("set local lock_timeout = '{SWAP_LOCK_TIMEOUT}'");
    sqlx::raw_sql(sqlx::AssertSqlSafe(set_timeout))
        .execute(&mut *tx)
        .await?;
    // Checkpoints are read and written as the projector (RLS is forced on them, owner included). Workers
    // commit under these row locks: none is half-way through a batch while the tables change.
    sqlx::query("set local role escrow_projector")
        .execute(&mut *tx)
        .await?;
    // One ledger at a time: on Citus a row lock must name the distribution column.
    for (ledger, _) in ledgers {
        sqlx::query(
            "select 1 from escrow.projection_checkpoints
              where ledger_id = $1 and projection = any($2) for update",
        )
        .bind(ledger)
        .bind(projections)
        .fetch_all(&mut *tx)
        .await?;
    }
    match method {
        SwapMethod::Rename => {
            // The swap itself is DDL, done as the owner.
            sqlx::query("set local role none").execute(&mut *tx).await?;
            for &index in tables {
                sqlx::query("select escrow.swap_shadow($1)")
                    .bind(TABLES[index].name)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("set local role escrow_projector")
                .execute(&mut *tx)
                .await?;
            // A ledger created after the fold listed the ledgers has no rows in the swapped-in tables:
            // its checkpoints go, so its workers replay it from the start (they find their checkpoint
            // moved). Its rows in the old tables went with them.
            let folded: Vec<&str> = ledgers.iter().map(|(ledger, _)| ledger.as_str()).collect();
            sqlx::query(
                "delete from escrow.projection_checkpoints
                  where projection = any($1) and not (ledger_id = any($2))",
            )
            .bind(projections)
            .bind(&folded)
            .execute(&mut *tx)
            .await?;
        }
        SwapMethod::CopyRows => {
            let folded: Vec<&str> = ledgers.iter().map(|(ledger, _)| ledger.as_str()).collect();
            copy_rows(&mut tx, tables, &folded).await?
        }
    }
    for (ledger, head) in ledgers {
        sqlx::query(
            // `excluded.updated_at`, not `now()`: Citus allows only immutable functions in DO UPDATE.
            "insert into escrow.projection_checkpoints
                    (ledger_id, projection, position, events_applied, updated_at)
             select $1, p, $2, $2, now() from unnest($3::text[]) as p
             on conflict (ledger_id, projection)
             do update set position = excluded.position, events_applied = excluded.events_applied,
                           updated_at = excluded.updated_at",
        )
        .bind(ledger)
        .bind(head)
        .bind(projections)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Citus: the rows of the folded ledgers in each live table become its shadow's, as the projector (the
/// caller's role). A ledger created after the fold started keeps its rows and its checkpoint. Both tables are
/// colocated, so every statement runs on the workers shard by shard; nothing passes the coordinator.
async fn copy_rows(conn: &mut sqlx::PgConnection, tables: &[usize], folded: &[&str]) -> Result<()> {
    set_long_statement_timeout(conn).await?;
    for &index in tables {
        let spec = &TABLES[index];
        let columns: Vec<String> = spec
            .columns
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        let columns = columns.join(", ");
        // Table and column names come from `TABLES`, never from outside; the ledgers are bound.
        let delete = format!(
            "delete from escrow.{table} where ledger_id = any($1)",
            table = spec.name
        );
        sqlx::query(sqlx::AssertSqlSafe(delete))
            .bind(folded)
            .execute(&mut *conn)
            .await?;
        let insert = format!(
            "insert into escrow.{table} ({columns}) select {columns} from escrow.{table}__rb",
            table = spec.name
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(insert))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
