//! Appends: one request per transaction (`append`) or many (`append_batch`, group commit), then
//! the post-commit sequencer call that gives the events their positions.

use super::PgEventStore;
use crate::error::{DbFailure, Result, StoreError, classify};
use crate::store::{BatchRequest, canonical_order, check_expected, validate_appends};
use crate::types::{
    AppendOutcome, AppendedEvent, IdempotencyRecord, InboxRow, NewEvent, StreamAppend,
};
use sqlx::{Connection, PgConnection, Row};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Most events one sequencer call takes from the queue (bounds its transaction).
pub(super) const SEQUENCE_BATCH_MAX: i32 = 5_000;
/// Sequencer rounds a writer runs before it gives up waiting for its own positions.
pub(super) const SEQUENCE_ROUNDS_MAX: usize = 1_000;

/// An inserted event that is waiting for its position.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    local_id: i64,
}

/// A request's failure before its context (stream, key) is attached.
pub(super) enum AppendFailure {
    Store(StoreError),
    Db(DbFailure),
}

impl From<StoreError> for AppendFailure {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<sqlx::Error> for AppendFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(classify(error))
    }
}

/// A fully checked event row with its assigned stream version, borrowed from its request: a group commit
/// plans and writes the batch without copying it (the batch is kept for the per-request retry).
struct Row_<'a> {
    event: &'a NewEvent,
    stream_version: i64,
}

const INSERT_EVENTS: &str = "
    with inserted as (
        insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                   schema_version, payload, metadata)
        select $1, * from unnest($2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::int[],
                                 $7::jsonb[], $8::jsonb[])
        returning ledger_id, local_id, event_id, stream_id, stream_version
    )
    select local_id, event_id, stream_id, stream_version from inserted";

/// Inserts all rows with one multi-row statement (arrays + UNNEST). The trigger `events_queue` queues
/// them for the sequencer (the writer has no right on the queue itself).
async fn insert_events(
    conn: &mut PgConnection,
    ledger_id: &str,
    rows: Vec<Row_<'_>>,
) -> Result<Vec<Pending>, AppendFailure> {
    if rows.is_empty() {
        return Ok(Vec::new()); // a request that only checks versions and records an outcome
    }
    let mut streams = Vec::with_capacity(rows.len());
    let mut versions = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    let mut schemas = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut metadata = Vec::with_capacity(rows.len());
    for row in rows {
        streams.push(row.event.stream_id.as_str());
        versions.push(row.stream_version);
        ids.push(row.event.event_id);
        types.push(row.event.event_type.as_str());
        schemas.push(row.event.schema_version);
        payloads.push(&row.event.payload);
        metadata.push(sqlx::types::Json(&row.event.metadata));
    }
    let inserted = sqlx::query(INSERT_EVENTS)
        .bind(ledger_id)
        .bind(streams)
        .bind(versions)
        .bind(ids)
        .bind(types)
        .bind(schemas)
        .bind(payloads)
        .bind(metadata)
        .fetch_all(&mut *conn)
        .await?;
    let mut pending: Vec<Pending> = inserted
        .iter()
        .map(pending_from_row)
        .collect::<Result<_>>()?;
    // RETURNING order is not guaranteed, but identities follow the UNNEST (input) order.
    pending.sort_by_key(|p| p.local_id);
    Ok(pending)
}

fn pending_from_row(row: &sqlx::postgres::PgRow) -> Result<Pending> {
    Ok(Pending {
        local_id: row.try_get("local_id")?,
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
    })
}

const INSERT_IDEMPOTENCY: &str = "
    insert into ledger.idempotency (ledger_id, idempotency_key, request, outcome)
    select $1, * from unnest($2::text[], $3::jsonb[], $4::jsonb[])";

/// Plain INSERT (never ON CONFLICT DO NOTHING): a reused key must fail the request.
async fn insert_idempotency(
    conn: &mut PgConnection,
    ledger_id: &str,
    records: Vec<&IdempotencyRecord>,
) -> Result<(), AppendFailure> {
    if records.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let requests: Vec<&serde_json::Value> = records.iter().map(|r| &r.request).collect();
    let outcomes: Vec<&serde_json::Value> = records.iter().map(|r| &r.outcome).collect();
    sqlx::query(INSERT_IDEMPOTENCY)
        .bind(ledger_id)
        .bind(keys)
        .bind(requests)
        .bind(outcomes)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

const INSERT_INBOX: &str = "
    insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type, dedupe_key,
                              payment_reference, disposition, detail, command_id, correlation_id,
                              raw_body, received_at, signature)
    select $1, * from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::uuid[], $11::uuid[], $12::bytea[],
                             $13::timestamptz[], $14::text[])";

/// Deliveries' rows in one statement (arrays + UNNEST, like the events), text NUL-escaped (PostgreSQL text
/// cannot hold NUL), bodies byte-exact.
pub(super) async fn insert_inbox(
    conn: &mut PgConnection,
    ledger_id: &str,
    rows: Vec<&InboxRow>,
) -> Result<(), AppendFailure> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut ids, mut gateways, mut event_ids, mut types, mut keys, mut references) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut dispositions, mut details, mut commands, mut correlations, mut bodies) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut received, mut signatures) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for row in rows {
        let row = row.clone().escaped();
        ids.push(row.delivery_id);
        gateways.push(row.gateway);
        event_ids.push(row.gateway_event_id);
        types.push(row.event_type);
        keys.push(row.dedupe_key);
        references.push(row.payment_reference);
        dispositions.push(row.disposition);
        details.push(row.detail);
        commands.push(row.command_id);
        correlations.push(row.correlation_id);
        bodies.push(row.raw_body);
        received.push(row.received_at);
        signatures.push(row.signature);
    }
    sqlx::query(INSERT_INBOX)
        .bind(ledger_id)
        .bind(ids)
        .bind(gateways)
        .bind(event_ids)
        .bind(types)
        .bind(keys)
        .bind(references)
        .bind(dispositions)
        .bind(details)
        .bind(commands)
        .bind(correlations)
        .bind(bodies)
        .bind(received)
        .bind(signatures)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One backward probe of the primary key per stream. Not a join with `max()`: a plan cached while the
/// ledger was tiny took `ledger_id` alone as the index condition and sorted the whole ledger per call
/// (see tests/plans.rs); `order by ... desc limit 1` has one cheap plan, the key read backwards.
const STREAM_VERSIONS: &str = "
    select s.stream_id,
           (select e.stream_version from ledger.events e
             where e.ledger_id = $1 and e.stream_id = s.stream_id
             order by e.stream_version desc
             limit 1) as version
      from unnest($2::text[]) as s(stream_id)";

/// Current version of each stream (absent when the stream has no event).
pub(super) async fn stream_versions(
    conn: &mut PgConnection,
    ledger_id: &str,
    stream_ids: Vec<String>,
) -> Result<HashMap<String, i64>> {
    let rows = sqlx::query(STREAM_VERSIONS)
        .bind(ledger_id)
        .bind(stream_ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut versions = HashMap::with_capacity(rows.len());
    for row in rows {
        let version: Option<i64> = row.try_get("version")?;
        if let Some(version) = version {
            versions.insert(row.try_get("stream_id")?, version);
        }
    }
    Ok(versions)
}

/// Takes the transaction's stream locks (migration 20261205000101): exclusive on every stream some request
/// writes, shared on one that is only read (a version check). Called before any version is read, so that a
/// concurrent uncommitted writer of a stream a decision only read is waited for, then seen. Also sets
/// `plan_cache_mode` for the rest of the transaction (see the statement).
async fn lock_streams<'a>(
    conn: &mut PgConnection,
    ledger_id: &str,
    appends: impl IntoIterator<Item = &'a StreamAppend>,
) -> Result<(), AppendFailure> {
    let mut modes: HashMap<&str, bool> = HashMap::new();
    for append in appends {
        *modes.entry(append.stream_id.as_str()).or_default() |= !append.events.is_empty();
    }
    if modes.is_empty() {
        return Ok(());
    }
    let (streams, exclusive): (Vec<&str>, Vec<bool>) = modes.into_iter().unzip();
    // The rest of the transaction plans its statements generically (migration 20261210000101): their
    // parameters are keys and arrays of keys, and a custom plan for each batch's arrays cost more to make
    // than to run (80 us per batch for the versions read alone). One round trip with the locks. Not under
    // Citus, which cannot make a distributed plan from a generic one with parameters.
    sqlx::query(
        "select ledger.lock_streams($1, $2, $3),
                case when to_regclass('pg_catalog.pg_dist_partition') is null
                     then set_config('plan_cache_mode', 'force_generic_plan', true) end",
    )
    .bind(ledger_id)
    .bind(streams)
    .bind(exclusive)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Checks expected versions against `versions` (updated as if the request succeeded) and gives
/// each event its stream version. Pure, so the batch fast path can run it for many requests.
fn assign_versions<'a>(
    appends: &'a [StreamAppend],
    versions: &mut HashMap<String, i64>,
) -> Result<Vec<Row_<'a>>> {
    // Only this request's streams change, and only if all of its checks pass: collect the new versions
    // first instead of cloning the whole batch's map per request (that made a group commit quadratic).
    // A request names each stream once (validated), so the checks read the versions before the request.
    let mut updates = Vec::with_capacity(appends.len());
    let mut rows = Vec::new();
    for append in appends {
        let actual = versions.get(&append.stream_id).copied();
        let mut version = check_expected(&append.stream_id, append.expected, actual)?;
        for event in &append.events {
            version += 1;
            rows.push(Row_ {
                event,
                stream_version: version,
            });
        }
        if version > 0 {
            updates.push((append.stream_id.clone(), version));
        }
    }
    versions.extend(updates);
    Ok(rows)
}

fn stream_ids(appends: &[StreamAppend]) -> Vec<String> {
    appends.iter().map(|a| a.stream_id.clone()).collect()
}

/// One request inside an open transaction. The idempotency key is inserted first so that racing
/// duplicates of one command fail on the key, not on the stream version. Streams are written in their
/// canonical (sorted) order, so two requests touching the same streams cannot wait on each other in a
/// cycle. The inbox row commits with the events or not at all.
pub(super) async fn append_in_tx(
    conn: &mut PgConnection,
    ledger_id: &str,
    mut appends: Vec<StreamAppend>,
    idempotency: Option<IdempotencyRecord>,
    inbox: Vec<InboxRow>,
) -> Result<Vec<Pending>, AppendFailure> {
    validate_appends(&appends, idempotency.is_some() || !inbox.is_empty())?;
    for row in &inbox {
        crate::store::validate_inbox(row)?;
    }
    canonical_order(&mut appends);
    lock_streams(conn, ledger_id, &appends).await?;
    insert_idempotency(conn, ledger_id, idempotency.iter().collect()).await?;
    // Before the events, so that a delivery recorded twice fails as such, not on its outcome stream (the
    // check that the row is backed by the log waits for COMMIT).
    insert_inbox(conn, ledger_id, inbox.iter().collect()).await?;
    let mut versions = stream_versions(conn, ledger_id, stream_ids(&appends)).await?;
    let rows = assign_versions(&appends, &mut versions)?;
    insert_events(conn, ledger_id, rows).await
}

/// Attaches context to a failed request. A stream-version race is re-diagnosed with a fresh
/// read, because the unique violation does not say which stream of a multi-stream append lost.
pub(super) async fn resolve_failure(
    conn: &mut PgConnection,
    ledger_id: &str,
    appends: &[StreamAppend],
    idempotency_key: Option<&str>,
    failure: AppendFailure,
) -> StoreError {
    let failure = match failure {
        AppendFailure::Store(error) => return error,
        AppendFailure::Db(failure) => failure,
    };
    match failure {
        DbFailure::IdempotencyKeyTaken => StoreError::DuplicateIdempotencyKey {
            key: idempotency_key.unwrap_or_default().to_owned(),
        },
        DbFailure::UnknownLedger => StoreError::UnknownLedger {
            ledger_id: ledger_id.to_owned(),
        },
        DbFailure::EventIdTaken => StoreError::DuplicateEventId { event_id: None },
        DbFailure::StreamVersionTaken => diagnose_conflict(conn, ledger_id, appends).await,
        DbFailure::Serialization => StoreError::Serialization,
        DbFailure::Deadlock => StoreError::Deadlock,
        DbFailure::PlacementChanged(message) => StoreError::PlacementChanged { message },
        DbFailure::AppendOnly(message) => StoreError::AppendOnlyViolation { message },
        DbFailure::OutcomeNotLogged(message) => StoreError::OutcomeNotLogged { message },
        DbFailure::LedgerTaken => StoreError::LedgerExists {
            ledger_id: ledger_id.to_owned(),
        },
        DbFailure::DeliveryTaken => StoreError::DuplicateDelivery,
        DbFailure::Other(error) => StoreError::Database(error),
    }
}

async fn diagnose_conflict(
    conn: &mut PgConnection,
    ledger_id: &str,
    appends: &[StreamAppend],
) -> StoreError {
    let versions = match stream_versions(conn, ledger_id, stream_ids(appends)).await {
        Ok(versions) => versions,
        Err(error) => return error,
    };
    for append in appends {
        let actual = versions.get(&append.stream_id).copied();
        if let Err(conflict) = check_expected(&append.stream_id, append.expected, actual) {
            return conflict;
        }
    }
    // Only `Any` appends lost the race: report the first stream as it is now.
    let Some(first) = appends.first() else {
        return StoreError::Corrupt {
            reason: "a stream version was taken by a request without streams".into(),
        };
    };
    StoreError::ConcurrencyConflict {
        stream_id: first.stream_id.clone(),
        expected: first.expected,
        actual: versions.get(&first.stream_id).copied(),
    }
}

impl PgEventStore {
    /// Test hook: sleeps a random 0..=max ms inside the append transaction, before commit.
    async fn pre_commit_delay(&self, conn: &mut PgConnection) -> Result<()> {
        if self.pre_commit_delay_max_ms == 0 {
            return Ok(());
        }
        let delay_ms =
            rand::random_range(self.pre_commit_delay_min_ms..=self.pre_commit_delay_max_ms);
        sqlx::query("select pg_sleep($1::bigint / 1000.0)")
            .bind(i64::try_from(delay_ms).unwrap_or(0))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub(super) async fn append_one(
        &self,
        ledger_id: &str,
        appends: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
        inbox: Option<InboxRow>,
    ) -> Result<AppendOutcome> {
        let key = idempotency.as_ref().map(|r| r.key.clone());
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let inbox = inbox.into_iter().collect();
        match append_in_tx(&mut tx, ledger_id, appends.clone(), idempotency, inbox).await {
            Ok(pending) => {
                self.pre_commit_delay(&mut tx).await?;
                commit(tx).await?;
                drop(conn);
                let positions = self.positions_after_commit(ledger_id, &pending).await;
                Ok(in_input_order(outcome(&pending, &positions), &appends))
            }
            Err(failure) => {
                tx.rollback().await?;
                Err(resolve_failure(&mut conn, ledger_id, &appends, key.as_deref(), failure).await)
            }
        }
    }

    /// Committed means accepted: a sequencer that fails or times out after the commit is logged, never
    /// returned (the caller would retry a command that is already in the log). Events it did not reach
    /// get position 0; the background sequencer (or the next append) positions them.
    pub(super) async fn positions_after_commit(
        &self,
        ledger_id: &str,
        pending: &[Pending],
    ) -> HashMap<i64, i64> {
        match self.sequence_until_positioned(ledger_id, pending).await {
            Ok(positions) => positions,
            Err(error) => {
                tracing::warn!(%error, ledger_id, events = pending.len(),
                    "committed events not sequenced yet; the background sequencer will");
                HashMap::new()
            }
        }
    }

    /// Runs the sequencer until every one of `pending` has a position. Another writer's
    /// sequencer may have taken them; the advisory lock makes this call wait for it to commit.
    pub(super) async fn sequence_until_positioned(
        &self,
        ledger_id: &str,
        pending: &[Pending],
    ) -> Result<HashMap<i64, i64>> {
        let local_ids: Vec<i64> = pending.iter().map(|p| p.local_id).collect();
        if local_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut positions = HashMap::with_capacity(local_ids.len());
        for _ in 0..SEQUENCE_ROUNDS_MAX {
            // One round trip: sequence a batch, then the positions of our events (key probes; see
            // migration 20261130000502 for why not `local_id = any($3)`).
            let rows = sqlx::query(
                "select local_id, event_position as position from ledger.sequence_positions($1, $2, $3)",
            )
            .bind(ledger_id)
            .bind(SEQUENCE_BATCH_MAX)
            .bind(&local_ids)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                positions.insert(row.try_get("local_id")?, row.try_get("position")?);
            }
            if positions.len() == local_ids.len() {
                self.take_due_balance_snapshots(ledger_id, &positions).await;
                return Ok(positions);
            }
        }
        Err(StoreError::SequencerStalled)
    }
}

impl PgEventStore {
    /// The writer whose event got a position that is a multiple of `balances::snapshot_every()` has the
    /// ledger take the balance snapshot there (computed by the database from the log, never by us). Best
    /// effort: a snapshot is a cache, so a failure is logged and the append stands.
    async fn take_due_balance_snapshots(&self, ledger_id: &str, positions: &HashMap<i64, i64>) {
        let every = crate::balances::snapshot_every();
        for position in positions.values().filter(|p| **p > 0 && *p % every == 0) {
            if let Err(error) = crate::balances::take(&self.pool, ledger_id, *position).await {
                tracing::warn!(ledger_id, position, %error, "could not take a balance snapshot");
            }
        }
    }
}

/// COMMIT itself failing leaves the outcome unknown (the server may have committed before the
/// connection broke): the caller must look before it re-runs anything.
/// A row the deferred outcome check refuses (SQLSTATE EL003) is a definite answer: nothing committed.
async fn commit(tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<()> {
    tx.commit().await.map_err(|error| match classify(error) {
        DbFailure::OutcomeNotLogged(message) => StoreError::OutcomeNotLogged { message },
        other => StoreError::CommitOutcomeUnknown {
            reason: match other {
                DbFailure::Other(error) => error.to_string(),
                known => format!("{known:?}"),
            },
        },
    })
}

fn outcome(pending: &[Pending], positions: &HashMap<i64, i64>) -> AppendOutcome {
    AppendOutcome {
        events: pending
            .iter()
            .map(|p| AppendedEvent {
                event_id: p.event_id,
                stream_id: p.stream_id.clone(),
                stream_version: p.stream_version,
                position: positions.get(&p.local_id).copied().unwrap_or(0),
            })
            .collect(),
    }
}

/// The outcome's events in the order the caller gave them (they were written in canonical order).
fn in_input_order(mut outcome: AppendOutcome, appends: &[StreamAppend]) -> AppendOutcome {
    let index: HashMap<Uuid, usize> = appends
        .iter()
        .flat_map(|a| &a.events)
        .enumerate()
        .map(|(i, e)| (e.event_id, i))
        .collect();
    outcome
        .events
        .sort_by_key(|e| index.get(&e.event_id).copied().unwrap_or(usize::MAX));
    outcome
}

/// What the batch fast path decided for each request before touching the events table.
enum Planned<'a> {
    Rejected(StoreError),
    Accepted {
        rows: Vec<Row_<'a>>,
        idempotency: Option<&'a IdempotencyRecord>,
        inbox: &'a [InboxRow],
    },
}

/// Checks every request of a batch against the current versions and against the requests
/// before it in the same batch (a stream may be appended by several requests in order).
fn plan_batch(requests: &[BatchRequest], mut versions: HashMap<String, i64>) -> Vec<Planned<'_>> {
    let mut keys = HashSet::new();
    let mut event_ids = HashSet::new();
    let mut planned = Vec::with_capacity(requests.len());
    for request in requests {
        planned.push(plan_request(
            request,
            &mut versions,
            &mut keys,
            &mut event_ids,
        ));
    }
    planned
}

fn plan_request<'a>(
    request: &'a BatchRequest,
    versions: &mut HashMap<String, i64>,
    keys: &mut HashSet<&'a str>,
    event_ids: &mut HashSet<Uuid>,
) -> Planned<'a> {
    let records_outcome = request.records_outcome();
    let BatchRequest {
        appends,
        idempotency,
        inbox,
    } = request;
    if let Err(error) = validate_appends(appends, records_outcome) {
        return Planned::Rejected(error);
    }
    if let Some(error) = inbox
        .iter()
        .find_map(|row| crate::store::validate_inbox(row).err())
    {
        return Planned::Rejected(error);
    }
    if let Some(record) = idempotency
        && keys.contains(record.key.as_str())
    {
        return Planned::Rejected(StoreError::DuplicateIdempotencyKey {
            key: record.key.clone(),
        });
    }
    let mut request_ids = HashSet::new();
    for id in appends.iter().flat_map(|a| &a.events).map(|e| e.event_id) {
        if event_ids.contains(&id) || !request_ids.insert(id) {
            return Planned::Rejected(StoreError::DuplicateEventId { event_id: Some(id) });
        }
    }
    match assign_versions(appends, versions) {
        Err(error) => Planned::Rejected(error),
        Ok(rows) => {
            keys.extend(idempotency.iter().map(|r| r.key.as_str()));
            event_ids.extend(request_ids);
            Planned::Accepted {
                rows,
                idempotency: idempotency.as_ref(),
                inbox,
            }
        }
    }
}

impl PgEventStore {
    pub(super) async fn append_many(
        &self,
        ledger_id: &str,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<Result<AppendOutcome>>> {
        crate::store::validate_batch_size(requests.len())?;
        let started = std::time::Instant::now();
        let count = requests.len();
        let orders: Vec<Vec<Uuid>> = requests
            .iter()
            .map(|request| {
                request
                    .appends
                    .iter()
                    .flat_map(|a| &a.events)
                    .map(|e| e.event_id)
                    .collect()
            })
            .collect();
        let results = match self.batch_fast_path(ledger_id, &requests).await? {
            Some(results) => results,
            None => self.batch_isolated(ledger_id, requests).await?,
        };
        let pending: Vec<Pending> = results.iter().flatten().flatten().cloned().collect();
        let committed = started.elapsed();
        let positions = self.positions_after_commit(ledger_id, &pending).await;
        tracing::debug!(
            requests = count,
            events = pending.len(),
            commit_ms = committed.as_millis() as u64,
            sequence_ms = (started.elapsed() - committed).as_millis() as u64,
            "group commit"
        );
        Ok(results
            .into_iter()
            .zip(orders)
            .map(|(r, order)| r.map(|p| outcome(&sorted_like(p, &order), &positions)))
            .collect())
    }

    /// All accepted requests in one transaction with one INSERT for all events. `None` when a
    /// request conflicted inside the database: the caller retries with per-request savepoints.
    async fn batch_fast_path(
        &self,
        ledger_id: &str,
        requests: &[BatchRequest],
    ) -> Result<Option<Vec<Result<Vec<Pending>>>>> {
        let all_streams: HashSet<String> = requests
            .iter()
            .flat_map(|r| stream_ids(&r.appends))
            .collect();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        if let Err(failure) =
            lock_streams(&mut tx, ledger_id, requests.iter().flat_map(|r| &r.appends)).await
        {
            tx.rollback().await?;
            return Err(append_failure_error(failure));
        }
        let versions =
            stream_versions(&mut tx, ledger_id, all_streams.into_iter().collect()).await?;
        let planned = plan_batch(requests, versions);
        let (mut rows, records, inbox, shape) = flatten_plan(planned);
        // One canonical order for the whole batch (see `append_in_tx`): no cycle with another writer.
        rows.sort_by(|a, b| {
            (&a.event.stream_id, a.stream_version).cmp(&(&b.event.stream_id, b.stream_version))
        });
        let inserted = async {
            insert_idempotency(&mut tx, ledger_id, records).await?;
            insert_inbox(&mut tx, ledger_id, inbox).await?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            insert_events(&mut tx, ledger_id, rows).await
        }
        .await;
        match inserted {
            Ok(pending) => {
                self.pre_commit_delay(&mut tx).await?;
                commit(tx).await?;
                Ok(Some(unflatten(shape, pending)))
            }
            Err(AppendFailure::Db(failure)) if failure.is_request_specific() => {
                tx.rollback().await?;
                Ok(None)
            }
            Err(failure) => Err(append_failure_error(failure)),
        }
    }

    /// The slow path: each request in its own savepoint, so only conflicting requests fail.
    async fn batch_isolated(
        &self,
        ledger_id: &str,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<Result<Vec<Pending>>>> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // All of the batch's locks at once, in key order (each savepoint taking its own could wait in a cycle).
        if let Err(failure) =
            lock_streams(&mut tx, ledger_id, requests.iter().flat_map(|r| &r.appends)).await
        {
            tx.rollback().await?;
            return Err(append_failure_error(failure));
        }
        let mut results = Vec::with_capacity(requests.len());
        for BatchRequest {
            appends,
            idempotency,
            inbox,
        } in requests
        {
            let key = idempotency.as_ref().map(|r| r.key.clone());
            let mut savepoint = tx.begin().await?;
            match append_in_tx(
                &mut savepoint,
                ledger_id,
                appends.clone(),
                idempotency,
                inbox,
            )
            .await
            {
                Ok(pending) => {
                    savepoint.commit().await?;
                    results.push(Ok(pending));
                }
                Err(failure) => {
                    savepoint.rollback().await?;
                    let error =
                        resolve_failure(&mut tx, ledger_id, &appends, key.as_deref(), failure)
                            .await;
                    results.push(Err(error));
                }
            }
        }
        self.pre_commit_delay(&mut tx).await?;
        commit(tx).await?;
        Ok(results)
    }
}

fn append_failure_error(failure: AppendFailure) -> StoreError {
    match failure {
        AppendFailure::Db(failure) => db_failure_error(failure),
        AppendFailure::Store(error) => error,
    }
}

fn db_failure_error(failure: DbFailure) -> StoreError {
    match failure {
        DbFailure::Other(error) => StoreError::Database(error),
        DbFailure::Serialization => StoreError::Serialization,
        DbFailure::Deadlock => StoreError::Deadlock,
        DbFailure::AppendOnly(message) => StoreError::AppendOnlyViolation { message },
        DbFailure::OutcomeNotLogged(message) => StoreError::OutcomeNotLogged { message },
        other => StoreError::Database(sqlx::Error::Protocol(format!("{other:?}"))),
    }
}

/// Per request: `Err` for a rejected one, or the ids of the events it contributed, in its own order.
type Shape = Vec<Result<Vec<Uuid>>>;

/// What one batch writes: its event rows, idempotency records and inbox rows, and each request's shape.
type Flat<'a> = (
    Vec<Row_<'a>>,
    Vec<&'a IdempotencyRecord>,
    Vec<&'a InboxRow>,
    Shape,
);

fn flatten_plan(planned: Vec<Planned<'_>>) -> Flat<'_> {
    let mut rows = Vec::new();
    let mut records = Vec::new();
    let mut inbox = Vec::new();
    let mut shape = Vec::with_capacity(planned.len());
    for plan in planned {
        match plan {
            Planned::Rejected(error) => shape.push(Err(error)),
            Planned::Accepted {
                rows: request_rows,
                idempotency,
                inbox: request_inbox,
            } => {
                shape.push(Ok(request_rows.iter().map(|r| r.event.event_id).collect()));
                rows.extend(request_rows);
                records.extend(idempotency);
                inbox.extend(request_inbox.iter());
            }
        }
    }
    (rows, records, inbox, shape)
}

fn unflatten(shape: Shape, pending: Vec<Pending>) -> Vec<Result<Vec<Pending>>> {
    let mut by_id: HashMap<Uuid, Pending> = pending.into_iter().map(|p| (p.event_id, p)).collect();
    shape
        .into_iter()
        .map(|slot| slot.map(|ids| ids.iter().filter_map(|id| by_id.remove(id)).collect()))
        .collect()
}

/// `pending` in the order of `order` (a request's events as the caller gave them).
fn sorted_like(mut pending: Vec<Pending>, order: &[Uuid]) -> Vec<Pending> {
    let index: HashMap<&Uuid, usize> = order.iter().enumerate().map(|(i, id)| (id, i)).collect();
    pending.sort_by_key(|p| index.get(&p.event_id).copied().unwrap_or(usize::MAX));
    pending
}
