//! `PgEventStore`: the PostgreSQL implementation of `EventStore` (schema in `migrations/`).

mod append;
pub(crate) mod read;
mod subscription;

use crate::error::{Result, StoreError};
use crate::store::{BatchRequest, EventStore, Subscription};
use crate::types::{
    AppendOutcome, ChainReport, IdempotencyRecord, InboxRow, RecordedEvent, Seal, Snapshot,
    StreamAppend,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Bounds every statement, so that a stuck append cannot hold back the sequencer for long.
pub const STATEMENT_TIMEOUT: &str = "30s";
/// Ends sessions that sit in an open transaction (a crashed client holding locks).
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";
/// Pool size: writers, the sequencer calls after commit, and one LISTEN per subscriber.
pub const POOL_CONNECTIONS_MAX: u32 = 24;

/// Opens a pool with the store's session limits (statement and idle-in-transaction timeouts).
pub async fn connect(url: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.options([
        ("statement_timeout", STATEMENT_TIMEOUT),
        (
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        ),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(POOL_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Gathers the planner's statistics of the log (`ANALYZE ledger.events, ledger.sequence, ...`) after a bulk
/// load (`bench seed`, a large `apply`, a restore): until autovacuum comes by, a freshly loaded table has none
/// and every plan is made from default selectivities. Needs the tables' owner (the user that migrated).
pub async fn analyze_log(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql("analyze ledger.events, ledger.sequence, ledger.idempotency, ledger.inbox")
        .execute(pool)
        .await?;
    Ok(())
}

/// A sequenced event with its payload as JSON text (see `PgEventStore::read_log_raw`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub position: i64,
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
}

/// The PostgreSQL event store. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct PgEventStore {
    pool: PgPool,
    pre_commit_delay_min_ms: u64,
    pre_commit_delay_max_ms: u64,
}

impl PgEventStore {
    /// Wraps a migrated database's pool (see `crate::migrate` and `connect`).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            pre_commit_delay_min_ms: 0,
            pre_commit_delay_max_ms: 0,
        }
    }

    /// Test hook: every append sleeps a random 0..=`max_ms` inside its transaction before
    /// committing, so that commit order differs from insert order (ordering tests).
    #[doc(hidden)]
    pub fn with_pre_commit_delay_ms(mut self, max_ms: u64) -> Self {
        self.pre_commit_delay_max_ms = max_ms.min(5_000);
        self
    }

    /// Test hook: every append holds its transaction open exactly `ms` before committing (an uncommitted
    /// write that a concurrent test can race deterministically).
    #[doc(hidden)]
    pub fn with_pre_commit_hold_ms(mut self, ms: u64) -> Self {
        self.pre_commit_delay_max_ms = ms.min(5_000);
        self.pre_commit_delay_min_ms = self.pre_commit_delay_max_ms;
        self
    }

    /// The log as text, for fast replays (PostgreSQL only): sequenced events with `position > after`, in
    /// position order, at most `limit`, with the payload as its JSON text (no intermediate JSON tree).
    pub async fn read_log_raw(
        &self,
        ledger_id: &str,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>> {
        let rows = sqlx::query_as::<_, (i64, uuid::Uuid, String, String, i32, String)>(
            "select s.position, e.event_id, e.stream_id, e.event_type, e.schema_version, e.payload::text
               from ledger.sequence s
               join ledger.events e on e.ledger_id = s.ledger_id and e.local_id = s.local_id
              where s.ledger_id = $1 and s.position > $2 and s.position <= $2 + $3
              order by s.position",
        )
        .bind(ledger_id)
        .bind(after_position)
        // Positions are gapless, so the range is exactly the next `limit` events whatever the statistics.
        .bind(limit.clamp(1, crate::store::READ_LIMIT_MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(position, event_id, stream_id, event_type, schema_version, payload)| RawEvent {
                    position,
                    event_id,
                    stream_id,
                    event_type,
                    schema_version,
                    payload,
                },
            )
            .collect())
    }

    /// The chain's links with their events as text, by position range (PostgreSQL only): lets `verify` check
    /// the chain and replay the events in one pass over the log.
    pub async fn read_chain_rows(
        &self,
        ledger_id: &str,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<read::ChainRow>> {
        read::read_chain_rows(&self.pool, ledger_id, after_position, limit).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append_with_inbox(
        &self,
        ledger_id: &str,
        appends: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
        inbox: Option<InboxRow>,
    ) -> Result<AppendOutcome> {
        self.append_one(ledger_id, appends, idempotency, inbox)
            .await
    }

    async fn read_inbox(&self, ledger_id: &str, dedupe_key: &str) -> Result<Vec<InboxRow>> {
        read::read_inbox(&self.pool, ledger_id, dedupe_key).await
    }

    async fn append_batch(
        &self,
        ledger_id: &str,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<Result<AppendOutcome>>> {
        self.append_many(ledger_id, requests).await
    }

    async fn get_idempotency(
        &self,
        ledger_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        read::get_idempotency(&self.pool, ledger_id, key).await
    }

    async fn read_streams(
        &self,
        ledger_id: &str,
        stream_ids: &[String],
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        read::read_streams(&self.pool, ledger_id, stream_ids, limit).await
    }

    async fn positions_of(
        &self,
        ledger_id: &str,
        events: &[crate::types::AppendedEvent],
    ) -> Result<Vec<Option<i64>>> {
        if events.len() > crate::store::READ_LIMIT_MAX as usize {
            return Err(StoreError::InvalidAppend {
                reason: format!("{} events exceed the read limit", events.len()),
            });
        }
        read::positions_of(&self.pool, ledger_id, events).await
    }

    async fn get_idempotency_many(
        &self,
        ledger_id: &str,
        keys: &[String],
    ) -> Result<Vec<IdempotencyRecord>> {
        crate::store::validate_batch_size(keys.len())?;
        read::get_idempotency_many(&self.pool, ledger_id, keys).await
    }

    async fn read_stream(
        &self,
        ledger_id: &str,
        stream_id: &str,
        from_version_exclusive: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        read::read_stream(
            &self.pool,
            ledger_id,
            stream_id,
            from_version_exclusive,
            limit,
        )
        .await
    }

    async fn read_log(
        &self,
        ledger_id: &str,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        read::read_log(&self.pool, ledger_id, after_position, limit).await
    }

    async fn head_position(&self, ledger_id: &str) -> Result<i64> {
        read::head_position(&self.pool, ledger_id).await
    }

    async fn account_debits_minus_credits(
        &self,
        ledger_id: &str,
        account: &str,
        currency: &str,
        exponent: u8,
    ) -> Result<Option<i128>> {
        // One pass over the entries' postings in SQL (amounts are exact decimal strings at the currency's
        // exponent, so the scaled sum is an integer): about 0.2 s for 200,000 events.
        let total: String = sqlx::query_scalar(
            "select (coalesce(sum(case p->>'side' when 'debit' then 1 else -1 end
                                  * (p->'amount'->>'amount')::numeric), 0)
                     * (10::numeric ^ $4))::numeric(40, 0)::text
               from ledger.events e
               cross join lateral jsonb_array_elements(e.payload->'entry'->'postings') p
              where e.ledger_id = $1 and e.payload ? 'entry'
                and e.payload->'entry'->>'currency' = $3 and p->>'account' = $2",
        )
        .bind(ledger_id)
        .bind(account)
        .bind(currency)
        .bind(i32::from(exponent))
        .fetch_one(&self.pool)
        .await?;
        total
            .parse::<i128>()
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                reason: format!("balance of {account} is {total:?}: {e}"),
            })
    }

    async fn position_at_or_before(&self, ledger_id: &str, time: DateTime<Utc>) -> Result<i64> {
        read::position_at_or_before(&self.pool, ledger_id, time).await
    }

    async fn subscribe(
        &self,
        ledger_id: &str,
        after_position: i64,
    ) -> Result<Box<dyn Subscription>> {
        read::ensure_ledger(&self.pool, ledger_id).await?;
        let subscription =
            subscription::PgSubscription::new(self.pool.clone(), ledger_id, after_position);
        Ok(Box::new(subscription))
    }

    async fn load_snapshot(
        &self,
        ledger_id: &str,
        stream_id: &str,
        fold_version: i32,
    ) -> Result<Option<Snapshot>> {
        read::load_snapshot(&self.pool, ledger_id, stream_id, fold_version).await
    }

    async fn save_snapshot(&self, ledger_id: &str, snapshot: &Snapshot) -> Result<()> {
        read::save_snapshot(&self.pool, ledger_id, snapshot).await
    }

    async fn create_ledger(&self, ledger_id: &str) -> Result<()> {
        read::create_ledger(&self.pool, ledger_id).await
    }

    async fn list_ledgers(&self) -> Result<Vec<String>> {
        read::list_ledgers(&self.pool).await
    }

    async fn verify_chain(&self, ledger_id: &str, seal: Option<Seal>) -> Result<ChainReport> {
        read::verify_chain(&self.pool, ledger_id, seal).await
    }

    async fn seal(&self, ledger_id: &str) -> Result<Seal> {
        read::seal(&self.pool, ledger_id).await
    }

    async fn sequence_pending(&self, ledger_id: &str) -> Result<i64> {
        let mut total = 0_i64;
        for _ in 0..append::SEQUENCE_ROUNDS_MAX {
            let sequenced: i64 = sqlx::query_scalar("select ledger.sequence($1, $2)")
                .bind(ledger_id)
                .bind(append::SEQUENCE_BATCH_MAX)
                .fetch_one(&self.pool)
                .await?;
            total += sequenced;
            if sequenced < i64::from(append::SEQUENCE_BATCH_MAX) {
                return Ok(total);
            }
        }
        Err(StoreError::SequencerStalled)
    }
}
