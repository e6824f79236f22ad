//! Reads, snapshots, ledgers, and chain verification against PostgreSQL.

use crate::chain::{ChainInput, ChainVerifier, GENESIS_HASH};
use crate::error::{DbFailure, Result, StoreError, classify};
use crate::store::clamp_limit;
use crate::types::{
    ChainReport, EventMetadata, IdempotencyRecord, InboxRow, RecordedEvent, Seal, Snapshot,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row};

/// Rows checked per round trip by `verify_chain`.
const VERIFY_BATCH: i64 = 2_000;

fn event_from_row(row: &PgRow) -> Result<RecordedEvent> {
    let metadata: Json<EventMetadata> = row.try_get("metadata")?;
    Ok(RecordedEvent {
        ledger_id: row.try_get("ledger_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: row.try_get("payload")?,
        metadata: metadata.0,
        recorded_at: row.try_get("recorded_at")?,
        position: row.try_get("position")?,
        sequenced_at: row.try_get("sequenced_at")?,
    })
}

pub(super) async fn ensure_ledger(pool: &PgPool, ledger_id: &str) -> Result<()> {
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from ledger.ledgers where ledger_id = $1)")
            .bind(ledger_id)
            .fetch_one(pool)
            .await?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::UnknownLedger {
            ledger_id: ledger_id.to_owned(),
        })
    }
}

pub(super) async fn get_idempotency(
    pool: &PgPool,
    ledger_id: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>> {
    let row = sqlx::query(
        "select idempotency_key, request, outcome from ledger.idempotency
          where ledger_id = $1 and idempotency_key = $2",
    )
    .bind(ledger_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(IdempotencyRecord {
            key: row.try_get("idempotency_key")?,
            request: row.try_get("request")?,
            outcome: row.try_get("outcome")?,
        })
    })
    .transpose()
}

/// `EventStore::read_streams` in one query (each stream's key range read in order).
pub(super) async fn read_streams(
    pool: &PgPool,
    ledger_id: &str,
    stream_ids: &[String],
    limit: i64,
) -> Result<Vec<RecordedEvent>> {
    let rows = sqlx::query(
        "select e.*, s.position, s.sequenced_at
           from (select distinct unnest($2::text[]) as stream_id) k
           join ledger.events e on e.ledger_id = $1 and e.stream_id = k.stream_id
           left join ledger.sequence s on s.ledger_id = e.ledger_id and s.local_id = e.local_id
          order by e.stream_id, e.stream_version
          limit $3",
    )
    .bind(ledger_id)
    .bind(stream_ids)
    .bind(clamp_limit(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// `EventStore::positions_of` in one query (key probes of `(ledger_id, stream_id, stream_version)`).
pub(super) async fn positions_of(
    pool: &PgPool,
    ledger_id: &str,
    events: &[crate::types::AppendedEvent],
) -> Result<Vec<Option<i64>>> {
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
    let rows = sqlx::query(
        "select k.ord, e.event_id, s.position
           from unnest($2::text[], $3::bigint[]) with ordinality as k(stream_id, stream_version, ord)
           left join ledger.events e
             on e.ledger_id = $1 and e.stream_id = k.stream_id and e.stream_version = k.stream_version
           left join ledger.sequence s on s.ledger_id = e.ledger_id and s.local_id = e.local_id",
    )
    .bind(ledger_id)
    .bind(streams)
    .bind(versions)
    .fetch_all(pool)
    .await?;
    let mut found = vec![None; events.len()];
    for row in rows {
        let ord: i64 = row.try_get("ord")?;
        let event_id: Option<uuid::Uuid> = row.try_get("event_id")?;
        let position: Option<i64> = row.try_get("position")?;
        let Some(index) = usize::try_from(ord - 1).ok().filter(|i| *i < events.len()) else {
            continue;
        };
        if event_id == Some(events[index].event_id) {
            found[index] = Some(position.unwrap_or(0));
        }
    }
    Ok(found)
}

/// The records of many keys in one query (a group commit's whole batch).
pub(super) async fn get_idempotency_many(
    pool: &PgPool,
    ledger_id: &str,
    keys: &[String],
) -> Result<Vec<IdempotencyRecord>> {
    let rows = sqlx::query(
        // One probe of the primary key per key (LATERAL with LIMIT: a nested loop whatever plan the session
        // cached while the table was nearly empty, see tests/plans.rs). As a plain join this lookup took
        // 2.3 ms per batch in `bench callbacks --senders 64` (pg_stat_statements), more than the events
        // insert; as probes 0.2 ms.
        "select i.idempotency_key, i.request, i.outcome
           from unnest($2::text[]) as k(idempotency_key)
           cross join lateral (
               select r.idempotency_key, r.request, r.outcome
                 from ledger.idempotency r
                where r.ledger_id = $1 and r.idempotency_key = k.idempotency_key
                limit 1) i",
    )
    .bind(ledger_id)
    .bind(keys)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(IdempotencyRecord {
                key: row.try_get("idempotency_key")?,
                request: row.try_get("request")?,
                outcome: row.try_get("outcome")?,
            })
        })
        .collect()
}

/// The inbox rows of one dedupe key, oldest first (bounded like every read).
pub(super) async fn read_inbox(
    pool: &PgPool,
    ledger_id: &str,
    dedupe_key: &str,
) -> Result<Vec<InboxRow>> {
    let rows = sqlx::query(
        "select delivery_id, gateway, gateway_event_id, event_type, dedupe_key, payment_reference,
                disposition, detail, command_id, correlation_id, raw_body, received_at, signature
           from ledger.inbox
          where ledger_id = $1 and dedupe_key = $2
          order by recorded_at, delivery_id
          limit $3",
    )
    .bind(ledger_id)
    .bind(crate::types::escape_nul(dedupe_key))
    .bind(crate::store::READ_LIMIT_MAX)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(InboxRow {
                delivery_id: row.try_get("delivery_id")?,
                gateway: row.try_get("gateway")?,
                gateway_event_id: row.try_get("gateway_event_id")?,
                event_type: row.try_get("event_type")?,
                dedupe_key: row.try_get("dedupe_key")?,
                payment_reference: row.try_get("payment_reference")?,
                disposition: row.try_get("disposition")?,
                detail: row.try_get("detail")?,
                command_id: row.try_get("command_id")?,
                correlation_id: row.try_get("correlation_id")?,
                raw_body: row.try_get("raw_body")?,
                received_at: row.try_get("received_at")?,
                signature: row.try_get("signature")?,
            })
        })
        .collect()
}

/// Includes committed events that are not sequenced yet: deciding needs the whole stream.
pub(super) async fn read_stream(
    pool: &PgPool,
    ledger_id: &str,
    stream_id: &str,
    from_version_exclusive: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>> {
    let rows = sqlx::query(
        "select e.*, s.position, s.sequenced_at
           from ledger.events e
           left join ledger.sequence s on s.ledger_id = e.ledger_id and s.local_id = e.local_id
          where e.ledger_id = $1 and e.stream_id = $2 and e.stream_version > $3
          order by e.stream_version
          limit $4",
    )
    .bind(ledger_id)
    .bind(stream_id)
    .bind(from_version_exclusive)
    .bind(clamp_limit(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// Only sequenced events, in position order: the one order every reader sees.
///
/// Positions are gapless, so the next `limit` events are exactly the positions in `(after, after + limit]`:
/// the page is read as that range, whose plan is an index scan of its own rows whatever the statistics. The
/// open-ended form (`position > after ... limit N`) was planned from statistics that never know the newest
/// positions (`position` is the second column of its index, so PostgreSQL cannot look the real maximum up
/// beyond the histogram): it estimated a few rows and chose a bitmap scan of everything after `after` and a
/// sort, for every page (a relay or a rebuild over a freshly loaded log read it all again per page: 25 s for
/// one page of 10,000). A short range (the head, or a gap, which the chain's verification names) is
/// completed by the open-ended form, cheap there, so a reader sees exactly what it saw before.
pub(super) async fn read_log(
    pool: &PgPool,
    ledger_id: &str,
    after_position: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>> {
    let limit = clamp_limit(limit);
    let rows = sqlx::query(
        "select e.*, s.position, s.sequenced_at
           from ledger.sequence s
           join ledger.events e on e.ledger_id = s.ledger_id and e.local_id = s.local_id
          where s.ledger_id = $1 and s.position > $2 and s.position <= $2 + $3
          order by s.position",
    )
    .bind(ledger_id)
    .bind(after_position)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut events: Vec<RecordedEvent> = rows.iter().map(event_from_row).collect::<Result<_>>()?;
    // A full range is the whole page (its positions are distinct and within it).
    let rest = limit - i64::try_from(events.len()).unwrap_or(limit);
    if rest <= 0 {
        return Ok(events);
    }
    let after = events
        .last()
        .and_then(|e| e.position)
        .unwrap_or(after_position);
    let rows = sqlx::query(
        "select e.*, s.position, s.sequenced_at
           from ledger.sequence s
           join ledger.events e on e.ledger_id = s.ledger_id and e.local_id = s.local_id
          where s.ledger_id = $1 and s.position > $2
          order by s.position
          limit $3",
    )
    .bind(ledger_id)
    .bind(after)
    .bind(rest)
    .fetch_all(pool)
    .await?;
    for row in &rows {
        events.push(event_from_row(row)?);
    }
    Ok(events)
}

pub(super) async fn head_position(pool: &PgPool, ledger_id: &str) -> Result<i64> {
    ensure_ledger(pool, ledger_id).await?;
    let head: Option<i64> =
        sqlx::query_scalar("select max(position) from ledger.sequence where ledger_id = $1")
            .bind(ledger_id)
            .fetch_one(pool)
            .await?;
    Ok(head.unwrap_or(0))
}

/// `sequenced_at` never decreases along the log, so "as of a time" is a prefix of the log.
///
/// `ledger.position_at_or_before` takes the sequencer's per-ledger advisory lock (shared) before it reads:
/// the sequencer reads `sequenced_at` under that lock and commits before releasing it, so no sequencing
/// transaction is in flight any more whose `sequenced_at` is older than now, and a time in the past
/// resolves to the same position on every run (without the barrier, a batch stamped a few milliseconds
/// ago but not yet committed made the answer change between two runs). It is one statement outside a
/// transaction block so that on Citus the call is delegated to the worker holding the ledger, where the
/// sequencer takes the same lock (migration `20261201000302`).
pub(super) async fn position_at_or_before(
    pool: &PgPool,
    ledger_id: &str,
    time: DateTime<Utc>,
) -> Result<i64> {
    ensure_ledger(pool, ledger_id).await?;
    let position: i64 = sqlx::query_scalar("select ledger.position_at_or_before($1, $2)")
        .bind(ledger_id)
        .bind(time)
        .fetch_one(pool)
        .await?;
    Ok(position)
}

/// The text whose `hashtextextended(.., 0)` is the advisory lock key of a ledger's sequencer (the same
/// expression as in `ledger.sequence`).
pub fn sequencer_lock_key(ledger_id: &str) -> String {
    format!("escrow-ledger.sequence:{ledger_id}")
}

/// A stored snapshot is used only when its digest (written by `ledger.save_snapshot`) matches its
/// content: a row edited behind the function's back is ignored (the caller replays the stream) and
/// logged; `verify` reports it (see `snapshot_digest_mismatches`).
pub(super) async fn load_snapshot(
    pool: &PgPool,
    ledger_id: &str,
    stream_id: &str,
    fold_version: i32,
) -> Result<Option<Snapshot>> {
    let row = sqlx::query(
        "select stream_id, stream_version, fold_version, state, state::text as state_text, taken_at,
                digest
           from ledger.snapshots
          where ledger_id = $1 and stream_id = $2 and fold_version = $3",
    )
    .bind(ledger_id)
    .bind(stream_id)
    .bind(fold_version)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let snapshot = Snapshot {
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        fold_version: row.try_get("fold_version")?,
        state: row.try_get("state")?,
        taken_at: row.try_get("taken_at")?,
    };
    let state_text: String = row.try_get("state_text")?;
    let digest: Option<Vec<u8>> = row.try_get("digest")?;
    let expected = crate::chain::snapshot_digest(
        ledger_id,
        &snapshot.stream_id,
        snapshot.stream_version,
        snapshot.fold_version,
        &state_text,
    );
    if digest.as_deref() != Some(expected.as_slice()) {
        tracing::warn!(
            ledger_id,
            stream_id,
            "ignoring a snapshot whose digest does not match its content (replaying the stream)"
        );
        return Ok(None);
    }
    Ok(Some(snapshot))
}

/// Snapshots are a cache, so replacing one is an upsert, done by the definer function that also writes
/// the digest (the writer role has no right on the table itself).
pub(super) async fn save_snapshot(
    pool: &PgPool,
    ledger_id: &str,
    snapshot: &Snapshot,
) -> Result<()> {
    sqlx::query("select ledger.save_snapshot($1, $2, $3, $4, $5, $6)")
        .bind(ledger_id)
        .bind(&snapshot.stream_id)
        .bind(snapshot.stream_version)
        .bind(snapshot.fold_version)
        .bind(&snapshot.state)
        .bind(snapshot.taken_at)
        .execute(pool)
        .await
        .map_err(|e| with_ledger_context(e, ledger_id))?;
    Ok(())
}

/// Every stream snapshot of one fold version (stream, stream version, state), for `verify`, which
/// recomputes each from the log. Read in pages; the result grows with the number of snapshotted streams.
pub async fn stream_snapshots(
    pool: &PgPool,
    ledger_id: &str,
    fold_version: i32,
) -> Result<Vec<(String, i64, serde_json::Value)>> {
    let mut snapshots = Vec::new();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(
            "select stream_id, stream_version, state from ledger.snapshots
              where ledger_id = $1 and fold_version = $2 and stream_id > $3
              order by stream_id limit $4",
        )
        .bind(ledger_id)
        .bind(fold_version)
        .bind(&after)
        .bind(VERIFY_BATCH)
        .fetch_all(pool)
        .await?;
        let full = rows.len() as i64 == VERIFY_BATCH;
        if let Some(last) = rows.last() {
            after = last.0.clone();
        }
        snapshots.extend(rows);
        if !full {
            return Ok(snapshots);
        }
    }
}

/// Stream snapshots (stream, fold version) whose digest does not match their content, for `verify`.
pub async fn snapshot_digest_mismatches(
    pool: &PgPool,
    ledger_id: &str,
) -> Result<Vec<(String, i32)>> {
    let mut mismatches = Vec::new();
    let mut after = (String::new(), i32::MIN);
    loop {
        let rows = sqlx::query(
            "select stream_id, stream_version, fold_version, state::text as state_text, digest
               from ledger.snapshots
              where ledger_id = $1 and (stream_id, fold_version) > ($2, $3)
              order by stream_id, fold_version
              limit $4",
        )
        .bind(ledger_id)
        .bind(&after.0)
        .bind(after.1)
        .bind(VERIFY_BATCH)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let stream_id: String = row.try_get("stream_id")?;
            let fold_version: i32 = row.try_get("fold_version")?;
            let state_text: String = row.try_get("state_text")?;
            let digest: Option<Vec<u8>> = row.try_get("digest")?;
            let expected = crate::chain::snapshot_digest(
                ledger_id,
                &stream_id,
                row.try_get("stream_version")?,
                fold_version,
                &state_text,
            );
            if digest.as_deref() != Some(expected.as_slice()) {
                mismatches.push((stream_id.clone(), fold_version));
            }
            after = (stream_id, fold_version);
        }
        if (rows.len() as i64) < VERIFY_BATCH {
            return Ok(mismatches);
        }
    }
}

fn with_ledger_context(error: sqlx::Error, ledger_id: &str) -> StoreError {
    let ledger_id = ledger_id.to_owned();
    match classify(error) {
        DbFailure::UnknownLedger => StoreError::UnknownLedger { ledger_id },
        DbFailure::LedgerTaken => StoreError::LedgerExists { ledger_id },
        DbFailure::Other(error) => StoreError::Database(error),
        other => StoreError::Database(sqlx::Error::Protocol(format!("{other:?}"))),
    }
}

pub(super) async fn create_ledger(pool: &PgPool, ledger_id: &str) -> Result<()> {
    sqlx::query("insert into ledger.ledgers (ledger_id) values ($1)")
        .bind(ledger_id)
        .execute(pool)
        .await
        .map_err(|e| with_ledger_context(e, ledger_id))?;
    Ok(())
}

pub(super) async fn list_ledgers(pool: &PgPool) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("select ledger_id from ledger.ledgers order by ledger_id")
            .fetch_all(pool)
            .await?,
    )
}

pub(super) async fn seal(pool: &PgPool, ledger_id: &str) -> Result<Seal> {
    ensure_ledger(pool, ledger_id).await?;
    let head = sqlx::query(
        "select position, hash from ledger.sequence where ledger_id = $1
          order by position desc limit 1",
    )
    .bind(ledger_id)
    .fetch_optional(pool)
    .await?;
    let (position, hash) = match head {
        Some(row) => (row.try_get("position")?, row.try_get::<Vec<u8>, _>("hash")?),
        None => (0, GENESIS_HASH.to_vec()),
    };
    Ok(Seal {
        ledger_id: ledger_id.to_owned(),
        position,
        hash_hex: hex::encode(hash),
        sealed_at: Utc::now(),
    })
}

/// Stored links with the fields they cover; the JSON comes as PostgreSQL's `jsonb` text, which
/// is what the sequencer hashed. A left join, so that a deleted event row shows as a break.
const VERIFY_ROWS: &str = "
    select s.position, s.hash, s.chain_version, s.sequenced_at, e.stream_id, e.stream_version, e.event_id, e.event_type,
           e.schema_version, e.payload::text as payload_text, e.metadata::text as metadata_text,
           e.recorded_at
      from ledger.sequence s
      left join ledger.events e on e.ledger_id = s.ledger_id and e.local_id = s.local_id
     where s.ledger_id = $1 and s.position > $2 and s.position <= $2 + $3
     order by s.position";

pub(super) async fn verify_chain(
    pool: &PgPool,
    ledger_id: &str,
    seal: Option<Seal>,
) -> Result<ChainReport> {
    ensure_ledger(pool, ledger_id).await?;
    let mut verifier = ChainVerifier::new(ledger_id, seal);
    let head: Option<i64> =
        sqlx::query_scalar("select max(position) from ledger.sequence where ledger_id = $1")
            .bind(ledger_id)
            .fetch_one(pool)
            .await?;
    // Fixed position ranges (positions are gapless), so the planner reads by index whatever its
    // statistics, and a missing link shows up as a jump the verifier reports.
    let mut cursor = 0;
    while cursor < head.unwrap_or(0) {
        let rows = sqlx::query(VERIFY_ROWS)
            .bind(ledger_id)
            .bind(cursor)
            .bind(VERIFY_BATCH)
            .fetch_all(pool)
            .await?;
        for row in &rows {
            verify_row(&mut verifier, ledger_id, row)?;
        }
        cursor += VERIFY_BATCH;
    }
    Ok(verifier.finish())
}

/// One link of the chain with its event (absent when the event row is gone), for single-pass verifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    pub position: i64,
    pub hash: Vec<u8>,
    pub chain_version: i16,
    pub sequenced_at: DateTime<Utc>,
    pub event: Option<ChainEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEvent {
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload_text: String,
    pub metadata_text: String,
    pub recorded_at: DateTime<Utc>,
}

impl ChainRow {
    /// Feeds this link to a verifier (what `verify_chain` does row by row).
    pub fn push_to(&self, verifier: &mut ChainVerifier, ledger_id: &str) {
        match self.input(ledger_id) {
            Some(input) => verifier.push(&input, &self.hash),
            None => verifier.push_missing(self.position, &self.hash),
        }
    }

    /// What the chain covers of this link (none when its event is missing).
    pub fn input<'a>(&'a self, ledger_id: &'a str) -> Option<ChainInput<'a>> {
        let e = self.event.as_ref()?;
        Some(ChainInput {
            ledger_id,
            position: self.position,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_id: e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload_text: &e.payload_text,
            metadata_text: &e.metadata_text,
            recorded_at_micros: e.recorded_at.timestamp_micros(),
            chain_version: self.chain_version,
            sequenced_at_micros: self.sequenced_at.timestamp_micros(),
        })
    }
}

fn chain_row(row: &PgRow) -> Result<ChainRow> {
    let stream_id: Option<String> = row.try_get("stream_id")?;
    let event = match stream_id {
        None => None,
        Some(stream_id) => Some(ChainEvent {
            stream_id,
            stream_version: row.try_get("stream_version")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload_text: row.try_get("payload_text")?,
            metadata_text: row.try_get("metadata_text")?,
            recorded_at: row.try_get("recorded_at")?,
        }),
    };
    Ok(ChainRow {
        position: row.try_get("position")?,
        hash: row.try_get("hash")?,
        chain_version: row.try_get("chain_version")?,
        sequenced_at: row.try_get("sequenced_at")?,
        event,
    })
}

/// Links with `after < position <= after + limit`, in position order, with their events.
pub(super) async fn read_chain_rows(
    pool: &PgPool,
    ledger_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<ChainRow>> {
    let rows = sqlx::query(VERIFY_ROWS)
        .bind(ledger_id)
        .bind(after)
        .bind(limit.clamp(1, crate::store::READ_LIMIT_MAX))
        .fetch_all(pool)
        .await?;
    rows.iter().map(chain_row).collect()
}

fn verify_row(verifier: &mut ChainVerifier, ledger_id: &str, row: &PgRow) -> Result<()> {
    chain_row(row)?.push_to(verifier, ledger_id);
    Ok(())
}

/// Most unbacked outcome rows one `verify` names (each is a finding; the first ones locate the problem).
const UNLOGGED_OUTCOMES_MAX: i64 = 1_000;

/// Idempotency and inbox rows that no log entry backs (migration 20261205000102: written beside the engine),
/// each described for `verify`, in key order. Checked row by row with the predicates of the commit-time
/// trigger's functions (`ledger.idempotency_is_logged`, `ledger.inbox_is_logged`), written out here as
/// subqueries on the same ledger: Citus cannot run a SQL function with parameters inside a shard query, and
/// the trigger does not exist there (nor where an owner disabled it), so this is the check that always runs.
pub async fn unlogged_outcomes(pool: &PgPool, ledger_id: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "(select format('idempotency row %s (outcome %s of command %s) is not backed by a log entry recording it',
                        i.idempotency_key, i.outcome->>'status', i.outcome->>'command_id')
            from ledger.idempotency i
           where i.ledger_id = $1
             and not exists (
                 select 1 from ledger.events e
                  where e.ledger_id = $1
                    and i.outcome->>'status' = 'accepted'
                    and jsonb_array_length(coalesce(i.outcome->'events', '[]')) > 0
                    and e.event_id = (i.outcome->'events'->0->>'event_id')::uuid
                    and e.metadata->>'correlation_id' = i.outcome->>'command_id'
                    and e.metadata->>'idempotency_key' = i.idempotency_key)
             and not exists (
                 select 1 from ledger.events e
                  where e.ledger_id = $1
                    and not (i.outcome->>'status' = 'accepted'
                             and jsonb_array_length(coalesce(i.outcome->'events', '[]')) > 0)
                    and e.stream_id = 'outcome-' || (i.outcome->>'command_id')
                    and e.stream_version = 1
                    and e.event_type = 'CommandOutcomeRecorded'
                    and e.payload->>'idempotency_key' = i.idempotency_key
                    and e.payload->'command'->>'command_id' = i.outcome->>'command_id'
                    and (e.payload->'rejection'->>'code') is not distinct from (i.outcome->'rejection'->>'code'))
           order by i.idempotency_key
           limit $2)
         union all
         (select format('inbox row %s (%s, %s, reference %s) is not backed by a log entry recording it',
                        b.delivery_id, b.gateway, b.disposition, coalesce(b.payment_reference, '-'))
            from ledger.inbox b
           where b.ledger_id = $1
             and not (b.disposition = 'duplicate' and b.command_id is not null
                      and exists (select 1 from ledger.idempotency i
                                   where i.ledger_id = $1
                                     and i.idempotency_key = b.dedupe_key
                                     and i.outcome->>'command_id' = b.command_id::text))
             and not (b.command_id is not null
                      and exists (select 1 from ledger.idempotency i
                                   where i.ledger_id = $1
                                     and i.idempotency_key = b.dedupe_key
                                     and i.outcome->>'status' = 'accepted'
                                     and i.outcome->>'command_id' = b.command_id::text
                                     and exists (
                                         select 1 from ledger.events e
                                          where e.ledger_id = $1
                                            and e.event_id = (i.outcome->'events'->0->>'event_id')::uuid
                                            and e.metadata->>'correlation_id' = b.command_id::text
                                            and e.metadata->'delivery'->>'delivery_id' = b.delivery_id::text
                                            and e.metadata->'delivery'->>'disposition' = b.disposition
                                            and e.metadata->'delivery'->>'dedupe_key' = b.dedupe_key
                                            and e.metadata->'delivery'->>'body_sha256'
                                                = encode(sha256(b.raw_body), 'hex'))))
             and not exists (
                 select 1 from ledger.events e
                  where e.ledger_id = $1
                    and e.stream_id = 'outcome-' || b.delivery_id
                    and e.stream_version = 1
                    and e.event_type = 'DeliveryRecorded'
                    and e.payload->>'disposition' = b.disposition
                    and e.payload->>'dedupe_key' = b.dedupe_key
                    and (e.payload->>'command_id')::uuid is not distinct from b.command_id
                    and e.payload->>'body_sha256' = encode(sha256(b.raw_body), 'hex'))
           order by b.delivery_id
           limit $2)",
    )
    .bind(ledger_id)
    .bind(UNLOGGED_OUTCOMES_MAX)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(text,)| text).collect())
}
