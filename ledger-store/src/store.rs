//! The `EventStore` contract, implemented by `PgEventStore` and `InMemoryEventStore`.

use crate::error::Result;
use crate::types::{
    AppendOutcome, AppendedEvent, ChainReport, INBOX_BODY_MAX, IdempotencyRecord, InboxRow,
    RecordedEvent, Seal, Snapshot, StreamAppend,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Largest batch any read returns, whatever the caller asks: every read is bounded.
pub const READ_LIMIT_MAX: i64 = 10_000;
/// Most events one append request may carry.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// Most requests one group commit may carry.
pub const BATCH_REQUESTS_MAX: usize = 1_000;

/// What `ledger.inbox.disposition` may say (its check constraint lists the same).
pub const INBOX_DISPOSITIONS: [&str; 6] = [
    "applied",
    "duplicate",
    "suspense",
    "anomaly",
    "ignored",
    "rejected",
];

/// One request of a group commit: the streams to append to, its idempotency record, and the inbox rows of
/// the deliveries it answers (a callback's own row, and the rows of exact duplicates of it that arrived in
/// the same batch, or of a replayed duplicate alone). All of it commits together or not at all.
#[derive(Clone, Debug, Default)]
pub struct BatchRequest {
    pub appends: Vec<StreamAppend>,
    pub idempotency: Option<IdempotencyRecord>,
    pub inbox: Vec<InboxRow>,
}

impl From<(Vec<StreamAppend>, Option<IdempotencyRecord>)> for BatchRequest {
    fn from((appends, idempotency): (Vec<StreamAppend>, Option<IdempotencyRecord>)) -> Self {
        BatchRequest::new(appends, idempotency)
    }
}

impl BatchRequest {
    pub fn new(appends: Vec<StreamAppend>, idempotency: Option<IdempotencyRecord>) -> BatchRequest {
        BatchRequest {
            appends,
            idempotency,
            inbox: Vec::new(),
        }
    }

    /// Whether the request records something besides events (an outcome under a key, a delivery).
    pub(crate) fn records_outcome(&self) -> bool {
        self.idempotency.is_some() || !self.inbox.is_empty()
    }
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends to all streams atomically, each guarded by its own expected version, and records
    /// `idempotency` in the same transaction. A `StreamAppend` without events is a version check only
    /// (a stream the decision read): it fails the request like any other conflict and writes nothing.
    /// Once the transaction has committed the append succeeds: an event the sequencer has not reached
    /// yet comes back with position 0 (the background sequencer gives it one later).
    async fn append(
        &self,
        ledger_id: &str,
        appends: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AppendOutcome> {
        self.append_with_inbox(ledger_id, appends, idempotency, None)
            .await
    }

    /// `append`, and the delivery's inbox row in the same transaction (text columns NUL-escaped).
    async fn append_with_inbox(
        &self,
        ledger_id: &str,
        appends: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
        inbox: Option<InboxRow>,
    ) -> Result<AppendOutcome>;

    /// The inbox rows recorded under a dedupe key, oldest first, at most `READ_LIMIT_MAX`.
    async fn read_inbox(&self, ledger_id: &str, dedupe_key: &str) -> Result<Vec<InboxRow>>;

    /// Group commit: every request in one transaction. A request that conflicts fails alone
    /// (its slot holds the error); the outer error is for failures of the whole batch.
    async fn append_batch(
        &self,
        ledger_id: &str,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<Result<AppendOutcome>>>;

    async fn get_idempotency(
        &self,
        ledger_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>>;

    /// Events of several streams (each from its first), ordered by stream id then version, at most
    /// `limit` (clamped to `READ_LIMIT_MAX`) in all: a caller that gets `limit` events cannot tell which
    /// streams were cut. Committed events not sequenced yet are included (`position` None).
    async fn read_streams(
        &self,
        ledger_id: &str,
        stream_ids: &[String],
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        let mut sorted: Vec<&String> = stream_ids.iter().collect();
        sorted.sort();
        sorted.dedup();
        let limit = clamp_limit(limit);
        let mut events = Vec::new();
        for stream_id in sorted {
            let left = limit - events.len() as i64;
            if left <= 0 {
                break;
            }
            events.extend(self.read_stream(ledger_id, stream_id, 0, left).await?);
        }
        Ok(events)
    }

    /// Where each of `events` is in the log: `Some(position)` when the event with that id is at that stream
    /// and version (0 while it waits for the sequencer), `None` when it is not there. At most
    /// `READ_LIMIT_MAX` events.
    async fn positions_of(
        &self,
        ledger_id: &str,
        events: &[AppendedEvent],
    ) -> Result<Vec<Option<i64>>> {
        let mut found = Vec::with_capacity(events.len());
        for event in events {
            let read = self
                .read_stream(ledger_id, &event.stream_id, event.stream_version - 1, 1)
                .await?;
            found.push(
                read.first()
                    .filter(|r| r.event_id == event.event_id)
                    .map(|r| r.position.unwrap_or(0)),
            );
        }
        Ok(found)
    }

    /// The records of several keys at once (a group commit looks up its whole batch in one query); absent
    /// keys are absent from the answer. At most `BATCH_REQUESTS_MAX` keys.
    async fn get_idempotency_many(
        &self,
        ledger_id: &str,
        keys: &[String],
    ) -> Result<Vec<IdempotencyRecord>> {
        validate_batch_size(keys.len())?;
        let mut found = Vec::new();
        for key in keys {
            found.extend(self.get_idempotency(ledger_id, key).await?);
        }
        Ok(found)
    }

    /// Events of one stream with `stream_version > from_version_exclusive`, in version order,
    /// including committed events that are not sequenced yet (their `position` is `None`).
    async fn read_stream(
        &self,
        ledger_id: &str,
        stream_id: &str,
        from_version_exclusive: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>>;

    /// Sequenced events with `position > after_position`, in position order, at most `limit`.
    async fn read_log(
        &self,
        ledger_id: &str,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>>;

    /// The last assigned position (0 for an empty ledger).
    async fn head_position(&self, ledger_id: &str) -> Result<i64>;

    /// Debits minus credits of one account (its text name) in one currency over the journal entries of every
    /// committed event, in minor units of `exponent`, when the store can sum them itself; `None` (the
    /// default) makes the executor replay the log. Only settlements ask (a gateway's clearing balance).
    async fn account_debits_minus_credits(
        &self,
        _ledger_id: &str,
        _account: &str,
        _currency: &str,
        _exponent: u8,
    ) -> Result<Option<i128>> {
        Ok(None)
    }

    /// The highest position sequenced at or before `time` (0 when none).
    async fn position_at_or_before(&self, ledger_id: &str, time: DateTime<Utc>) -> Result<i64>;

    /// A live tail of the log from `after_position`.
    async fn subscribe(
        &self,
        ledger_id: &str,
        after_position: i64,
    ) -> Result<Box<dyn Subscription>>;

    async fn load_snapshot(
        &self,
        ledger_id: &str,
        stream_id: &str,
        fold_version: i32,
    ) -> Result<Option<Snapshot>>;

    /// Inserts or replaces the snapshot of (stream, fold version).
    async fn save_snapshot(&self, ledger_id: &str, snapshot: &Snapshot) -> Result<()>;

    async fn create_ledger(&self, ledger_id: &str) -> Result<()>;

    async fn list_ledgers(&self) -> Result<Vec<String>>;

    /// Recomputes the hash chain and compares it with the stored links and with `seal`.
    async fn verify_chain(&self, ledger_id: &str, seal: Option<Seal>) -> Result<ChainReport>;

    /// The current chain head, to be written somewhere the database's operators cannot edit.
    async fn seal(&self, ledger_id: &str) -> Result<Seal>;

    /// Gives positions to every committed event still waiting for one (a writer that died between its
    /// commit and its sequencer call leaves such events). Returns how many were sequenced.
    async fn sequence_pending(&self, ledger_id: &str) -> Result<i64>;
}

/// A reader's cursor over the log. `next_batch` waits until there is at least one event after
/// the cursor and returns the next events in position order; it never skips or repeats one.
#[async_trait]
pub trait Subscription: Send {
    async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>>;

    /// Position of the last event returned (the starting position before the first batch).
    fn position(&self) -> i64;
}

/// The subscription as a `futures::Stream` of batches.
pub fn subscription_stream(
    subscription: Box<dyn Subscription>,
) -> impl futures::Stream<Item = Result<Vec<RecordedEvent>>> + Send {
    futures::stream::unfold(subscription, |mut subscription| async move {
        let batch = subscription.next_batch().await;
        Some((batch, subscription))
    })
}

/// Clamps a caller's read limit to `1..=READ_LIMIT_MAX`.
pub(crate) fn clamp_limit(limit: i64) -> i64 {
    limit.clamp(1, READ_LIMIT_MAX)
}

/// Pre-flight checks shared by both stores: bounded, events in the right stream, and non-empty unless
/// the request records an idempotency outcome alone (a rejected command keeps its rejection under its key).
pub(crate) fn validate_appends(appends: &[StreamAppend], records_outcome: bool) -> Result<()> {
    use crate::error::StoreError;
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    let invalid = |reason: String| Err(StoreError::InvalidAppend { reason });
    if total == 0 && !records_outcome {
        return invalid("an append needs at least one event or an idempotency record".into());
    }
    if total > APPEND_EVENTS_MAX {
        return invalid(format!(
            "{total} events exceed the limit {APPEND_EVENTS_MAX}"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for append in appends {
        if !seen.insert(append.stream_id.as_str()) {
            return invalid(format!("stream {} appears twice", append.stream_id));
        }
        if append
            .events
            .iter()
            .any(|e| e.stream_id != append.stream_id)
        {
            return invalid(format!("an event is not in stream {}", append.stream_id));
        }
    }
    Ok(())
}

/// Sorts a request's streams into the one order every append path writes in (by stream id), so that
/// two transactions touching the same streams take their row locks in the same order and cannot
/// deadlock. Events inside a stream keep their order.
pub(crate) fn canonical_order(appends: &mut [StreamAppend]) {
    appends.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
}

/// Exact expected-version semantics: returns the stream's current version (0 when it has none)
/// or the conflict. `Exact(v)` with the stream at any other version conflicts, behind included.
pub(crate) fn check_expected(
    stream_id: &str,
    expected: crate::types::ExpectedVersion,
    actual: Option<i64>,
) -> Result<i64> {
    use crate::types::ExpectedVersion;
    let matches = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual.is_none(),
        ExpectedVersion::Exact(version) => actual == Some(version),
    };
    if matches {
        Ok(actual.unwrap_or(0))
    } else {
        Err(crate::error::StoreError::ConcurrencyConflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual,
        })
    }
}

/// An inbox row the table would refuse, refused before touching the database.
pub(crate) fn validate_inbox(row: &InboxRow) -> Result<()> {
    if !INBOX_DISPOSITIONS.contains(&row.disposition.as_str()) {
        return Err(crate::error::StoreError::InvalidAppend {
            reason: format!("unknown inbox disposition {:?}", row.disposition),
        });
    }
    if row.raw_body.len() > INBOX_BODY_MAX {
        return Err(crate::error::StoreError::InvalidAppend {
            reason: format!(
                "an inbox body of {} bytes exceeds the limit {INBOX_BODY_MAX}",
                row.raw_body.len()
            ),
        });
    }
    Ok(())
}

/// Rejects an oversized group commit before touching the database.
pub(crate) fn validate_batch_size(requests: usize) -> Result<()> {
    if requests > BATCH_REQUESTS_MAX {
        return Err(crate::error::StoreError::InvalidAppend {
            reason: format!("{requests} requests exceed the batch limit {BATCH_REQUESTS_MAX}"),
        });
    }
    Ok(())
}
