//! Reading history for accountants: the log, decoded through ledger-core, up to a position; as-of
//! resolution; trial balances from the nearest balance snapshot plus the tail.
//!
//! "As of T" means the highest position sequenced at or before T (recorded order), so the same command gives
//! the same numbers forever. Memory stays flat in the log's length: events are streamed in bounded batches
//! and only what the report needs is kept.

use std::io::IsTerminal;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use ledger_core::{Balances, Event, StreamId};
use ledger_store::{EventStore, PgEventStore, balances};
use sqlx::PgPool;
use uuid::Uuid;

use crate::exit::{CliError, Context};

/// Events per read from the store.
pub const READ_BATCH: i64 = 10_000;

/// One event of the log, decoded.
pub struct Decoded {
    pub position: i64,
    pub event_id: Uuid,
    pub stream: StreamId,
    pub event_type: String,
    pub event: Event,
}

/// Which prefix of the log a report covers.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AsOf {
    /// Up to and including this log position.
    #[arg(long, conflicts_with = "as_of")]
    pub position: Option<i64>,
    /// Up to the highest position sequenced at or before this time (RFC 3339).
    #[arg(long)]
    pub as_of: Option<DateTime<Utc>>,
    /// Only entries whose effective time (when money moved) is at or before this time (RFC 3339).
    #[arg(long)]
    pub effective_as_of: Option<DateTime<Utc>>,
    /// A month (`2026-01`) or a range of months (`2026-01..2026-03`), UTC: balances at its end; activity
    /// reports (income statement, journal, register) show only entries effective inside it.
    #[arg(long)]
    pub period: Option<ledger_core::MonthRange>,
    /// Set by activity reports: `--period` also bounds entries from below.
    #[arg(skip)]
    pub activity: bool,
}

impl AsOf {
    /// The position this prefix ends at.
    pub async fn resolve(&self, store: &PgEventStore, ledger: &str) -> Result<i64, CliError> {
        let head = store
            .head_position(ledger)
            .await
            .context("cannot read the ledger head")?;
        match (self.position, self.as_of) {
            (Some(p), _) if p < 0 || p > head => Err(CliError::environment(format!(
                "position {p} is outside the log (0..={head})"
            ))),
            (Some(p), _) => Ok(p),
            (None, Some(t)) => {
                let position = store
                    .position_at_or_before(ledger, t)
                    .await
                    .context("cannot resolve --as-of")?;
                if position == 0 && head > 0 {
                    // Imported history: its business times are before the time the ledger recorded it.
                    let first = store
                        .read_log(ledger, 0, 1)
                        .await
                        .context("cannot read the log")?
                        .first()
                        .and_then(|e| e.sequenced_at);
                    eprintln!(
                        "escrow-ledger: nothing was recorded by {} (the ledger's first event was recorded at {}): \
                         --as-of is the time the ledger recorded events; for the time money moved (an \
                         imported history's dates) use --effective-as-of or --period",
                        t.to_rfc3339(),
                        first.map_or_else(|| "?".to_string(), |f| f.to_rfc3339())
                    );
                }
                Ok(position)
            }
            (None, None) => Ok(head),
        }
    }

    /// Whether an entry effective at `at` belongs to this view.
    pub fn includes_effective(&self, at: DateTime<Utc>) -> bool {
        self.effective_as_of.is_none_or(|limit| at <= limit)
            && self
                .period
                .is_none_or(|p| at < p.end() && (!self.activity || at >= p.start()))
    }

    /// Whether balance snapshots (which hold every entry) can serve this view.
    pub fn uses_snapshots(&self) -> bool {
        self.effective_as_of.is_none() && self.period.is_none()
    }
}

pub fn progress(total: i64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < READ_BATCH {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Calls `f` for every event with `after < position <= until`, in position order. The next batch is read
/// while the current one is decoded (the database and the decoder work side by side).
pub async fn scan(
    store: &PgEventStore,
    ledger: &str,
    after: i64,
    until: i64,
    bar: &ProgressBar,
    mut f: impl FnMut(Decoded) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let fetch = |from: i64| {
        let (store, ledger) = (store.clone(), ledger.to_string());
        let limit = READ_BATCH.min(until - from);
        tokio::spawn(async move {
            if limit <= 0 {
                Ok(Vec::new())
            } else {
                store.read_log_raw(&ledger, from, limit).await
            }
        })
    };
    let mut cursor = after;
    let mut next = fetch(cursor);
    while cursor < until {
        let batch = next
            .await
            .map_err(|e| CliError::environment(format!("a log reader failed: {e}")))?
            .context("cannot read the log")?;
        let Some(last) = batch.last() else { break };
        let batch_end = last.position;
        next = fetch(batch_end);
        for raw in batch {
            let position = raw.position;
            let stream = StreamId::from_str(&raw.stream_id).map_err(|e| {
                CliError::findings(format!(
                    "event {} at position {position}: {e}",
                    raw.event_id
                ))
            })?;
            let event =
                Event::from_stored_str(&stream, &raw.event_type, raw.schema_version, &raw.payload)
                    .map_err(|e| {
                        CliError::findings(format!(
                            "event {} at position {position}: {e}",
                            raw.event_id
                        ))
                    })?;
            f(Decoded {
                position,
                event_id: raw.event_id,
                stream,
                event_type: raw.event_type,
                event,
            })?;
        }
        cursor = batch_end;
        bar.set_position((cursor - after).max(0) as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

pub use ledger_store::balances::balances_from_json;

/// The trial balance at `position`: from the nearest balance snapshot plus the tail (or a full replay with
/// an effective-date filter, which snapshots cannot serve). Reports only read snapshots: the ledger takes
/// them (`ledger.take_balance_snapshot`, from the writers), so no report's role writes anything.
pub async fn balances_at(
    pool: &PgPool,
    store: &PgEventStore,
    ledger: &str,
    position: i64,
    view: &AsOf,
) -> Result<Balances, CliError> {
    let mut start = 0;
    let mut b = Balances::default();
    if view.uses_snapshots()
        && let Some(snapshot) = balances::load_at_or_before(pool, ledger, position)
            .await
            .context("cannot read balance snapshots")?
    {
        b = balances_from_json(&snapshot.balances).map_err(|e| {
            CliError::findings(format!(
                "balance snapshot at {} is corrupt: {e}",
                snapshot.position
            ))
        })?;
        start = snapshot.position;
    }
    let bar = progress(position - start, "replaying");
    scan(store, ledger, start, position, &bar, |d| {
        if let Some(entry) = d.event.entry()
            && view.includes_effective(entry.effective_at())
        {
            b.apply(entry);
        }
        Ok(())
    })
    .await?;
    Ok(b)
}
