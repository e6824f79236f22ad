//! Projection workers. One `Worker` per (ledger, projection): it reads the log after its checkpoint, folds
//! a bounded batch, and writes the batch's rows and its new checkpoint in one transaction (effects exactly
//! once: a crash anywhere leaves either the whole batch or none of it). It catches up, then tails the log
//! through the store's subscription (LISTEN is only a wake-up; the cursor is always the checkpoint).
//! `run_all` runs each worker in its own task with its own connections, so a slow projection delays only
//! itself.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger_core::aggregates::project::ProjectEvent;
use ledger_core::engine::{Event, StreamId};
use ledger_store::{EventStore, PgEventStore, READ_LIMIT_MAX, RecordedEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::fold::{Folder, MapSink, Parties, decode};
use crate::sql::write_rows;
use crate::table::{Projection, TABLES};
use crate::{Error, Result};

/// Largest batch a worker folds into one transaction.
pub const BATCH_EVENTS_MAX: usize = 5_000;
/// Consecutive failed batches after which a worker gives up and reports the error.
pub const FAILURES_MAX: u32 = 8;
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Events per transaction (clamped to 1..=`BATCH_EVENTS_MAX`).
    pub batch_events_max: usize,
    /// Write as `escrow_projector` (`set local role`); off only for connections that cannot take it.
    pub set_role: bool,
    /// Entity states kept between batches; the cache is emptied when it grows past this.
    pub entity_cache_max: usize,
    /// Test hook: fail the transaction after this many table writes (a crash mid-batch).
    #[doc(hidden)]
    pub fail_after_writes: Option<usize>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch_events_max: 1_000,
            set_role: true,
            entity_cache_max: 100_000,
            fail_after_writes: None,
        }
    }
}

/// What one committed batch did; `lags_ms` is, per event, the time from its sequencing to this commit.
#[derive(Clone, Debug)]
pub struct BatchReport {
    pub projection: Projection,
    pub ledger: String,
    pub events: usize,
    pub position: i64,
    pub lags_ms: Vec<i64>,
}

pub struct Worker {
    pool: PgPool,
    store: PgEventStore,
    ledger: String,
    projection: Projection,
    folder: Folder,
    position: i64,
    config: RunnerConfig,
}

/// Creates the checkpoint row of (ledger, projection) if missing and returns its position.
pub async fn ensure_checkpoint(
    pool: &PgPool,
    ledger: &str,
    projection: Projection,
    set_role: bool,
) -> Result<i64> {
    let mut tx = pool.begin().await?;
    if set_role {
        sqlx::query("set local role escrow_projector")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "insert into escrow.projection_checkpoints (ledger_id, projection, position)
         values ($1, $2, 0) on conflict (ledger_id, projection) do nothing",
    )
    .bind(ledger)
    .bind(projection.name())
    .execute(&mut *tx)
    .await?;
    let position: i64 = sqlx::query_scalar(
        "select position from escrow.projection_checkpoints where ledger_id = $1 and projection = $2",
    )
    .bind(ledger)
    .bind(projection.name())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(position)
}

impl Worker {
    pub async fn start(
        pool: PgPool,
        ledger: &str,
        projection: Projection,
        config: RunnerConfig,
    ) -> Result<Worker> {
        let store = PgEventStore::new(pool.clone());
        // Fails with UnknownLedger for a ledger that does not exist.
        store.head_position(ledger).await?;
        let position = ensure_checkpoint(&pool, ledger, projection, config.set_role).await?;
        Ok(Worker {
            pool,
            store,
            ledger: ledger.to_owned(),
            projection,
            folder: Folder::new(ledger, &[projection]),
            position,
            config,
        })
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    pub fn projection(&self) -> Projection {
        self.projection
    }

    fn batch_max(&self) -> usize {
        self.config.batch_events_max.clamp(1, BATCH_EVENTS_MAX)
    }

    /// Applies the log up to its current head; returns the new position.
    pub async fn catch_up(&mut self) -> Result<i64> {
        loop {
            let events = self
                .store
                .read_log(&self.ledger, self.position, self.batch_max() as i64)
                .await?;
            if events.is_empty() {
                return Ok(self.position);
            }
            self.apply(&events).await?;
        }
    }

    /// Folds `events` (the next ones after the checkpoint, at most one batch) and commits their rows with
    /// the new checkpoint in one transaction.
    pub async fn apply(&mut self, events: &[RecordedEvent]) -> Result<BatchReport> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(Error::Invalid("an empty batch".into()));
        };
        if events.len() > self.batch_max() || first.position != Some(self.position + 1) {
            return Err(Error::Invalid(format!(
                "batch of {} events starting at {:?} does not follow checkpoint {}",
                events.len(),
                first.position,
                self.position
            )));
        }
        let end = last.position.unwrap_or(self.position);
        let result = self.fold_and_commit(events, end).await;
        match &result {
            Ok(_) if self.folder.entity_count() > self.config.entity_cache_max => {
                self.folder.clear()
            }
            Ok(_) => {}
            // The fold ran ahead of what was committed: forget it, the log is the truth.
            Err(error) => {
                self.folder.clear();
                if let Error::CheckpointMoved { found, .. } = error {
                    self.position = *found;
                }
            }
        }
        result
    }

    async fn fold_and_commit(&mut self, events: &[RecordedEvent], end: i64) -> Result<BatchReport> {
        let decoded: Vec<(StreamId, Event)> = events.iter().map(decode).collect::<Result<_>>()?;
        self.prepare(events, &decoded).await?;
        let mut sink = MapSink::new();
        for (record, (stream, event)) in events.iter().zip(&decoded) {
            self.folder.apply(stream, record, event, &mut sink)?;
        }
        self.folder.drain(&mut sink);
        self.commit(sink, events.len(), end).await?;
        let now = Utc::now();
        let lags_ms = events
            .iter()
            .filter_map(|e| e.sequenced_at)
            .map(|at: DateTime<Utc>| (now - at).num_milliseconds())
            .collect();
        Ok(BatchReport {
            projection: self.projection,
            ledger: self.ledger.clone(),
            events: events.len(),
            position: end,
            lags_ms,
        })
    }

    async fn commit(&mut self, sink: MapSink, events: usize, end: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if self.config.set_role {
            sqlx::query("set local role escrow_projector")
                .execute(&mut *tx)
                .await?;
        }
        let found: i64 = sqlx::query_scalar(
            "select position from escrow.projection_checkpoints
              where ledger_id = $1 and projection = $2 for update",
        )
        .bind(&self.ledger)
        .bind(self.projection.name())
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(0);
        if found != self.position {
            return Err(Error::CheckpointMoved {
                projection: self.projection.name().into(),
                ledger: self.ledger.clone(),
                expected: self.position,
                found,
            });
        }
        let mut writes = 0;
        for (index, rows) in sink.tables.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            if self.config.fail_after_writes == Some(writes) {
                return Err(Error::Injected(writes));
            }
            let rows: Vec<_> = rows.into_values().collect();
            write_rows(&mut tx, &TABLES[index], &rows).await?;
            writes += 1;
        }
        sqlx::query(
            "update escrow.projection_checkpoints
                set position = $3, events_applied = events_applied + $4, updated_at = now()
              where ledger_id = $1 and projection = $2",
        )
        .bind(&self.ledger)
        .bind(self.projection.name())
        .bind(end)
        .bind(events as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.position = end;
        Ok(())
    }

    /// Loads what the fold needs and has not seen since this worker started: the earlier events of each
    /// entity in the batch, and the parties of the projects the batch refers to.
    async fn prepare(
        &mut self,
        events: &[RecordedEvent],
        decoded: &[(StreamId, Event)],
    ) -> Result<()> {
        let mut seen = HashSet::new();
        for (record, (stream, _)) in events.iter().zip(decoded) {
            if !self.folder.tracks(stream) || !seen.insert(*stream) {
                continue;
            }
            let before = record.stream_version - 1;
            if self.folder.version(stream) != before {
                let history = self.read_history(stream, before).await?;
                self.folder.seed(stream, &history)?;
            }
        }
        if !self.folder.needs_parties() {
            return Ok(());
        }
        for (stream, event) in decoded {
            if let Some(project) = self.folder.project_of(stream, event)
                && !self.folder.knows_parties(&project)
            {
                self.load_parties(project).await?;
            }
        }
        Ok(())
    }

    /// Events 1..=`upto` of `stream`.
    async fn read_history(
        &self,
        stream: &StreamId,
        upto: i64,
    ) -> Result<Vec<(RecordedEvent, Event)>> {
        let mut history = Vec::new();
        let mut after = 0;
        while after < upto {
            let limit = (upto - after).min(READ_LIMIT_MAX);
            let page = self
                .store
                .read_stream(&self.ledger, &stream.to_string(), after, limit)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.stream_version;
            for record in page {
                if record.stream_version <= upto {
                    let (_, event) = decode(&record)?;
                    history.push((record, event));
                }
            }
        }
        Ok(history)
    }

    async fn load_parties(&mut self, project: uuid::Uuid) -> Result<()> {
        let stream = StreamId::Project(project).to_string();
        let first = self.store.read_stream(&self.ledger, &stream, 0, 1).await?;
        let Some(record) = first.into_iter().next() else {
            return Ok(());
        };
        let Some(position) = record.position else {
            return Ok(());
        };
        if let (
            _,
            Event::Project(ProjectEvent::ProjectCreated {
                creator,
                buyer,
                seller,
                ..
            }),
        ) = decode(&record)?
        {
            self.folder.seed_parties(
                project,
                Parties {
                    creator,
                    buyer,
                    seller,
                    position,
                },
            );
        }
        Ok(())
    }

    /// Catch-up then live tail until `stop` turns true. Transient failures are retried with backoff (at
    /// most `FAILURES_MAX` in a row); a moved checkpoint (a rebuild swapped the tables) restarts the tail
    /// from the stored checkpoint.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        reports: Option<mpsc::Sender<BatchReport>>,
    ) -> Result<()> {
        let mut failures = 0_u32;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let outcome = self.tail(&mut stop, reports.as_ref()).await;
            match outcome {
                Ok(()) => return Ok(()),
                Err(Error::CheckpointMoved { .. }) => failures = 0,
                Err(error) => {
                    failures += 1;
                    if failures >= FAILURES_MAX {
                        return Err(error);
                    }
                    tracing::warn!(projection = %self.projection, ledger = %self.ledger, %error, "batch failed; retrying");
                    let backoff = Duration::from_millis(100 << failures.min(6)).min(BACKOFF_MAX);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                    // Re-read the checkpoint: the failed transaction may or may not have committed.
                    self.position = ensure_checkpoint(
                        &self.pool,
                        &self.ledger,
                        self.projection,
                        self.config.set_role,
                    )
                    .await
                    .unwrap_or(self.position);
                }
            }
        }
    }

    async fn tail(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        reports: Option<&mpsc::Sender<BatchReport>>,
    ) -> Result<()> {
        let mut subscription = self.store.subscribe(&self.ledger, self.position).await?;
        loop {
            let batch = tokio::select! {
                batch = subscription.next_batch() => batch?,
                _ = stop.changed() => return Ok(()),
            };
            let batch_max = self.batch_max();
            for chunk in batch.chunks(batch_max) {
                let report = self.apply(chunk).await?;
                if let Some(reports) = reports {
                    // Reports are best effort: a full channel drops one rather than slowing the worker.
                    let _ = reports.try_send(report);
                }
            }
        }
    }
}

/// Runs every (ledger, projection) worker in its own task until `stop` turns true or one fails for good.
pub async fn run_all(
    pool: PgPool,
    ledgers: Vec<String>,
    projections: Vec<Projection>,
    config: RunnerConfig,
    stop: watch::Receiver<bool>,
    reports: Option<mpsc::Sender<BatchReport>>,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for ledger in &ledgers {
        for projection in &projections {
            let worker = Worker::start(pool.clone(), ledger, *projection, config.clone()).await?;
            tasks.spawn(worker.run(stop.clone(), reports.clone()));
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(panic) => return Err(Error::Invalid(format!("a worker panicked: {panic}"))),
        }
    }
    Ok(())
}

/// Brings every listed projection of `ledger` up to the log's head (concurrently); returns positions.
pub async fn catch_up_all(
    pool: &PgPool,
    ledger: &str,
    projections: &[Projection],
    config: &RunnerConfig,
) -> Result<Vec<(Projection, i64)>> {
    let runs = projections.iter().map(|projection| {
        let (pool, config) = (pool.clone(), config.clone());
        async move {
            let mut worker = Worker::start(pool, ledger, *projection, config).await?;
            let position = worker.catch_up().await?;
            Ok::<_, Error>((*projection, position))
        }
    });
    futures::future::try_join_all(runs).await
}

/// One row of `projections status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckpointStatus {
    pub ledger: String,
    pub projection: String,
    pub position: i64,
    pub head: i64,
    pub events_applied: i64,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Checkpoints of every projection on every ledger (a missing one shows position 0).
pub async fn status(pool: &PgPool) -> Result<Vec<CheckpointStatus>> {
    // Read as the projector: RLS is forced on the checkpoints, for their owner too.
    let mut tx = pool.begin().await?;
    sqlx::query("set local role escrow_projector")
        .execute(&mut *tx)
        .await?;
    type StatusRow = (String, String, i64, i64, i64, Option<DateTime<Utc>>);
    let rows: Vec<StatusRow> = sqlx::query_as(
        "select l.ledger_id, p.projection, coalesce(c.position, 0), 
                coalesce((select max(s.position) from ledger.sequence s where s.ledger_id = l.ledger_id), 0),
                coalesce(c.events_applied, 0), c.updated_at
           from ledger.ledgers l
          cross join unnest($1::text[]) as p(projection)
           left join escrow.projection_checkpoints c
                  on c.ledger_id = l.ledger_id and c.projection = p.projection
          order by l.ledger_id, array_position($1::text[], p.projection)",
    )
    .bind(
        Projection::ALL
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(
            |(ledger, projection, position, head, events_applied, updated_at)| CheckpointStatus {
                ledger,
                projection,
                position,
                head,
                events_applied,
                updated_at,
            },
        )
        .collect())
}
