//! `InMemoryEventStore`: the same contract as `PgEventStore` without a database, for fast tests
//! of the layers above. Every append is sequenced at once (positions are still gapless and the
//! chain is computed exactly as PostgreSQL computes it).

use crate::chain::{
    CHAIN_VERSION_CURRENT, ChainInput, ChainVerifier, GENESIS_HASH, jsonb_text, next_hash,
};
use crate::error::{Result, StoreError};
use crate::outcome_log::{EventView, idempotency_backed, inbox_backed_or_duplicate};
use crate::store::{
    BatchRequest, EventStore, READ_LIMIT_MAX, Subscription, canonical_order, check_expected,
    clamp_limit, validate_appends, validate_inbox,
};
use crate::types::{
    AppendOutcome, AppendedEvent, ChainReport, DEFAULT_LEDGER, IdempotencyRecord, InboxRow,
    RecordedEvent, Seal, Snapshot, StreamAppend,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a subscriber sleeps without a wake-up before it looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Default)]
struct LedgerState {
    /// Sequenced events; `log[i]` has position `i + 1`.
    log: Vec<RecordedEvent>,
    hashes: Vec<[u8; 32]>,
    stream_versions: HashMap<String, i64>,
    event_ids: HashSet<uuid::Uuid>,
    idempotency: HashMap<String, IdempotencyRecord>,
    snapshots: HashMap<(String, i32), Snapshot>,
    inbox: Vec<InboxRow>,
}

#[derive(Clone)]
pub struct InMemoryEventStore {
    ledgers: Arc<Mutex<BTreeMap<String, LedgerState>>>,
    appended: Arc<Notify>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// A store with the `default` ledger, like a freshly migrated database.
    pub fn new() -> Self {
        let mut ledgers = BTreeMap::new();
        ledgers.insert(DEFAULT_LEDGER.to_owned(), LedgerState::default());
        Self {
            ledgers: Arc::new(Mutex::new(ledgers)),
            appended: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LedgerState>> {
        // A poisoned lock means a panic mid-append: the state may be half-written, so stop.
        self.ledgers.lock().expect("in-memory store poisoned")
    }

    fn with_ledger<T>(
        &self,
        ledger_id: &str,
        f: impl FnOnce(&mut LedgerState) -> Result<T>,
    ) -> Result<T> {
        let mut ledgers = self.lock();
        let state = ledgers
            .get_mut(ledger_id)
            .ok_or_else(|| StoreError::UnknownLedger {
                ledger_id: ledger_id.to_owned(),
            })?;
        f(state)
    }
}

/// Checks a whole request before changing anything, so that a failed request leaves no trace.
fn check_request(
    state: &LedgerState,
    appends: &[StreamAppend],
    idempotency: Option<&IdempotencyRecord>,
    inbox: &[InboxRow],
) -> Result<()> {
    validate_appends(appends, idempotency.is_some() || !inbox.is_empty())?;
    let mut deliveries = HashSet::new();
    for row in inbox {
        check_inbox(state, row)?;
        if !deliveries.insert(row.delivery_id) {
            return Err(StoreError::DuplicateDelivery);
        }
    }
    if let Some(record) = idempotency
        && state.idempotency.contains_key(&record.key)
    {
        return Err(StoreError::DuplicateIdempotencyKey {
            key: record.key.clone(),
        });
    }
    for append in appends {
        let actual = state.stream_versions.get(&append.stream_id).copied();
        check_expected(&append.stream_id, append.expected, actual)?;
    }
    let mut ids = HashSet::new();
    for event in appends.iter().flat_map(|a| &a.events) {
        if state.event_ids.contains(&event.event_id) || !ids.insert(event.event_id) {
            return Err(StoreError::DuplicateEventId {
                event_id: Some(event.event_id),
            });
        }
    }
    check_outcomes_logged(state, appends, idempotency, inbox)
}

/// The rule PostgreSQL checks at commit (migration 20261205000102): each row backed by a log entry, this
/// request's events first (where the engine puts them), then the log.
fn check_outcomes_logged(
    state: &LedgerState,
    appends: &[StreamAppend],
    idempotency: Option<&IdempotencyRecord>,
    inbox: &[InboxRow],
) -> Result<()> {
    let events = || {
        let requested = appends.iter().flat_map(|a| {
            let base = state
                .stream_versions
                .get(&a.stream_id)
                .copied()
                .unwrap_or(0);
            a.events.iter().zip(1..).map(move |(e, n)| EventView {
                stream_id: &a.stream_id,
                stream_version: base + n,
                event_id: e.event_id,
                event_type: &e.event_type,
                payload: &e.payload,
                metadata: &e.metadata,
            })
        });
        let logged = state.log.iter().map(|e| EventView {
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_id: e.event_id,
            event_type: &e.event_type,
            payload: &e.payload,
            metadata: &e.metadata,
        });
        requested.chain(logged)
    };
    if let Some(record) = idempotency
        && !idempotency_backed(record, events())
    {
        return Err(StoreError::OutcomeNotLogged {
            message: format!(
                "idempotency row {} is not backed by a log entry recording the same outcome",
                record.key
            ),
        });
    }
    for row in inbox {
        let stored = row.clone().escaped();
        // A duplicate is backed by the record it repeats: already kept, or recorded by this same request
        // (an exact duplicate that arrived in the same group commit as its original).
        let recorded = state
            .idempotency
            .get(&stored.dedupe_key)
            .or(idempotency.filter(|r| r.key == stored.dedupe_key));
        if inbox_backed_or_duplicate(&stored, recorded, events) {
            continue;
        }
        return Err(StoreError::OutcomeNotLogged {
            message: format!(
                "inbox row {} is not backed by a log entry recording the same outcome",
                row.delivery_id
            ),
        });
    }
    Ok(())
}

fn check_inbox(state: &LedgerState, row: &InboxRow) -> Result<()> {
    validate_inbox(row)?;
    if state.inbox.iter().any(|r| r.delivery_id == row.delivery_id) {
        return Err(StoreError::DuplicateDelivery);
    }
    Ok(())
}

fn now_micros() -> DateTime<Utc> {
    // PostgreSQL keeps microseconds; keep the same so that both stores hash the same bytes.
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("clock in range")
}

fn apply_request(
    ledger_id: &str,
    state: &mut LedgerState,
    mut appends: Vec<StreamAppend>,
    idempotency: Option<IdempotencyRecord>,
    inbox: Vec<InboxRow>,
) -> Result<AppendOutcome> {
    check_request(state, &appends, idempotency.as_ref(), &inbox)?;
    // Same log order as PostgreSQL (canonical), same answer order (the caller's).
    let order: HashMap<uuid::Uuid, usize> = appends
        .iter()
        .flat_map(|a| &a.events)
        .enumerate()
        .map(|(i, e)| (e.event_id, i))
        .collect();
    canonical_order(&mut appends);
    let recorded_at = now_micros();
    let sequenced_at = state
        .log
        .last()
        .and_then(|e| e.sequenced_at)
        .map_or(recorded_at, |last| last.max(recorded_at));
    let mut outcome = AppendOutcome::default();
    for append in appends {
        let mut version = state
            .stream_versions
            .get(&append.stream_id)
            .copied()
            .unwrap_or(0);
        for event in append.events {
            version += 1;
            let position = i64::try_from(state.log.len()).expect("log fits i64") + 1;
            let recorded = RecordedEvent {
                ledger_id: ledger_id.to_owned(),
                stream_id: event.stream_id,
                stream_version: version,
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at,
                position: Some(position),
                sequenced_at: Some(sequenced_at),
            };
            push_sequenced(state, recorded, &mut outcome);
        }
        if version > 0 {
            state.stream_versions.insert(append.stream_id, version);
        }
    }
    if let Some(record) = idempotency {
        state.idempotency.insert(record.key.clone(), record);
    }
    state.inbox.extend(inbox.into_iter().map(InboxRow::escaped));
    outcome
        .events
        .sort_by_key(|e| order.get(&e.event_id).copied().unwrap_or(usize::MAX));
    Ok(outcome)
}

fn push_sequenced(state: &mut LedgerState, event: RecordedEvent, outcome: &mut AppendOutcome) {
    let previous = state.hashes.last().copied().unwrap_or(GENESIS_HASH);
    let payload_text = jsonb_text(&event.payload);
    let metadata_text = jsonb_text(&serde_json::to_value(&event.metadata).expect("metadata"));
    let hash = next_hash(
        &previous,
        &chain_input(&event, &payload_text, &metadata_text),
    );
    outcome.events.push(AppendedEvent {
        event_id: event.event_id,
        stream_id: event.stream_id.clone(),
        stream_version: event.stream_version,
        position: event.position.expect("sequenced"),
    });
    state.event_ids.insert(event.event_id);
    state.hashes.push(hash);
    state.log.push(event);
}

fn chain_input<'a>(
    event: &'a RecordedEvent,
    payload: &'a str,
    metadata: &'a str,
) -> ChainInput<'a> {
    ChainInput {
        ledger_id: &event.ledger_id,
        position: event.position.unwrap_or(0),
        stream_id: &event.stream_id,
        stream_version: event.stream_version,
        event_id: event.event_id,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload_text: payload,
        metadata_text: metadata,
        recorded_at_micros: event.recorded_at.timestamp_micros(),
        chain_version: CHAIN_VERSION_CURRENT,
        sequenced_at_micros: event.sequenced_at.map_or(0, |at| at.timestamp_micros()),
    }
}

fn slice_log(state: &LedgerState, after_position: i64, limit: i64) -> Vec<RecordedEvent> {
    let start = usize::try_from(after_position.max(0)).unwrap_or(usize::MAX);
    let count = usize::try_from(clamp_limit(limit)).unwrap_or(1);
    state.log.iter().skip(start).take(count).cloned().collect()
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append_with_inbox(
        &self,
        ledger_id: &str,
        appends: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
        inbox: Option<InboxRow>,
    ) -> Result<AppendOutcome> {
        let outcome = self.with_ledger(ledger_id, |s| {
            apply_request(
                ledger_id,
                s,
                appends,
                idempotency,
                inbox.into_iter().collect(),
            )
        })?;
        self.appended.notify_waiters();
        Ok(outcome)
    }

    async fn read_inbox(&self, ledger_id: &str, dedupe_key: &str) -> Result<Vec<InboxRow>> {
        let key = crate::types::escape_nul(dedupe_key);
        let limit = usize::try_from(READ_LIMIT_MAX).unwrap_or(usize::MAX);
        self.with_ledger(ledger_id, |s| {
            Ok(s.inbox
                .iter()
                .filter(|r| r.dedupe_key == key)
                .take(limit)
                .cloned()
                .collect())
        })
    }

    async fn append_batch(
        &self,
        ledger_id: &str,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<Result<AppendOutcome>>> {
        crate::store::validate_batch_size(requests.len())?;
        let results = self.with_ledger(ledger_id, |state| {
            Ok(requests
                .into_iter()
                .map(|r| apply_request(ledger_id, state, r.appends, r.idempotency, r.inbox))
                .collect())
        })?;
        self.appended.notify_waiters();
        Ok(results)
    }

    async fn get_idempotency(
        &self,
        ledger_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        self.with_ledger(ledger_id, |s| Ok(s.idempotency.get(key).cloned()))
    }

    async fn read_stream(
        &self,
        ledger_id: &str,
        stream_id: &str,
        from_version_exclusive: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        let count = usize::try_from(clamp_limit(limit)).unwrap_or(1);
        self.with_ledger(ledger_id, |s| {
            Ok(s.log
                .iter()
                .filter(|e| e.stream_id == stream_id && e.stream_version > from_version_exclusive)
                .take(count)
                .cloned()
                .collect())
        })
    }

    async fn read_log(
        &self,
        ledger_id: &str,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        self.with_ledger(ledger_id, |s| Ok(slice_log(s, after_position, limit)))
    }

    async fn head_position(&self, ledger_id: &str) -> Result<i64> {
        self.with_ledger(ledger_id, |s| Ok(i64::try_from(s.log.len()).expect("fits")))
    }

    async fn position_at_or_before(&self, ledger_id: &str, time: DateTime<Utc>) -> Result<i64> {
        self.with_ledger(ledger_id, |s| {
            Ok(s.log
                .iter()
                .take_while(|e| e.sequenced_at.is_some_and(|at| at <= time))
                .last()
                .and_then(|e| e.position)
                .unwrap_or(0))
        })
    }

    async fn subscribe(
        &self,
        ledger_id: &str,
        after_position: i64,
    ) -> Result<Box<dyn Subscription>> {
        self.with_ledger(ledger_id, |_| Ok(()))?;
        Ok(Box::new(MemorySubscription {
            store: self.clone(),
            ledger_id: ledger_id.to_owned(),
            position: after_position,
        }))
    }

    async fn load_snapshot(
        &self,
        ledger_id: &str,
        stream_id: &str,
        fold_version: i32,
    ) -> Result<Option<Snapshot>> {
        let key = (stream_id.to_owned(), fold_version);
        self.with_ledger(ledger_id, |s| Ok(s.snapshots.get(&key).cloned()))
    }

    async fn save_snapshot(&self, ledger_id: &str, snapshot: &Snapshot) -> Result<()> {
        let key = (snapshot.stream_id.clone(), snapshot.fold_version);
        self.with_ledger(ledger_id, |s| {
            s.snapshots.insert(key, snapshot.clone());
            Ok(())
        })
    }

    async fn create_ledger(&self, ledger_id: &str) -> Result<()> {
        let mut ledgers = self.lock();
        if ledgers.contains_key(ledger_id) {
            return Err(StoreError::LedgerExists {
                ledger_id: ledger_id.to_owned(),
            });
        }
        ledgers.insert(ledger_id.to_owned(), LedgerState::default());
        Ok(())
    }

    async fn list_ledgers(&self) -> Result<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }

    async fn verify_chain(&self, ledger_id: &str, seal: Option<Seal>) -> Result<ChainReport> {
        self.with_ledger(ledger_id, |s| {
            let mut verifier = ChainVerifier::new(ledger_id, seal);
            for (event, hash) in s.log.iter().zip(&s.hashes) {
                let payload_text = jsonb_text(&event.payload);
                let metadata = serde_json::to_value(&event.metadata).expect("metadata");
                let metadata_text = jsonb_text(&metadata);
                verifier.push(&chain_input(event, &payload_text, &metadata_text), hash);
            }
            Ok(verifier.finish())
        })
    }

    /// The in-memory store sequences inside `append`: nothing ever waits.
    async fn sequence_pending(&self, _ledger_id: &str) -> Result<i64> {
        Ok(0)
    }

    async fn seal(&self, ledger_id: &str) -> Result<Seal> {
        self.with_ledger(ledger_id, |s| {
            Ok(Seal {
                ledger_id: ledger_id.to_owned(),
                position: i64::try_from(s.log.len()).expect("fits"),
                hash_hex: hex::encode(s.hashes.last().copied().unwrap_or(GENESIS_HASH)),
                sealed_at: Utc::now(),
            })
        })
    }
}

struct MemorySubscription {
    store: InMemoryEventStore,
    ledger_id: String,
    position: i64,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        loop {
            let notified = self.store.appended.notified();
            let batch = self
                .store
                .read_log(&self.ledger_id, self.position, 1_000)
                .await?;
            if let Some(last) = batch.last() {
                self.position = last.position.expect("log events are sequenced");
                return Ok(batch);
            }
            // A wake-up lost between the read and here costs at most one poll interval.
            let _ = tokio::time::timeout(POLL_INTERVAL, notified).await;
        }
    }

    fn position(&self) -> i64 {
        self.position
    }
}
