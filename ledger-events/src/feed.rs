//! The pull feed: the public events after a position, at most `limit`, for a consumer catching up or
//! rebuilding from any point (`GET /v1/ledgers/{ledger}/events?after=P&limit=N[&wait_ms=W]` on `serve`).
//! Balances after each entry are computed from the nearest balance snapshot, as the relay does. Balance
//! monitors' edges follow their cause (the same ids as the relay's); escrow-age monitors' edges need the
//! relay's saved holds and a clock, so they go to NATS and webhooks only.

use std::time::{Duration, Instant};

use ledger_store::{EventStore, PgEventStore};
use sqlx::PgPool;

use crate::model::{PublicEvent, public_event};
use crate::{Error, monitor, running};

pub const LIMIT_MAX: i64 = 1_000;
/// Below `serve`'s default request deadline (10 s), so a long poll ends with an answer, not a 503.
pub const WAIT_MS_MAX: u64 = 8_000;

/// One page: the events after `after`, and the position to ask after next (`after` when none).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Page {
    pub events: Vec<PublicEvent>,
    pub next_after: i64,
}

/// The page after `after` (long-polls up to `wait` while there is none).
pub async fn page(
    pool: &PgPool,
    store: &PgEventStore,
    ledger: &str,
    after: i64,
    limit: i64,
    wait: Duration,
) -> Result<Page, Error> {
    let after = after.max(0);
    let limit = limit.clamp(1, LIMIT_MAX);
    let deadline = Instant::now() + wait.min(Duration::from_millis(WAIT_MS_MAX));
    let batch = loop {
        let batch = store.read_log(ledger, after, limit).await?;
        if !batch.is_empty() || Instant::now() >= deadline {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut balances = running::balances_at(pool, store, ledger, after).await?;
    let mut watch = monitor::Watch::default();
    watch.refresh(monitor::list(pool, ledger).await?, &balances);
    let mut events: Vec<PublicEvent> = Vec::with_capacity(batch.len());
    for record in &batch {
        let event = public_event(record, &mut balances)?;
        // Stamped with the cause's time, so that reading a page again gives the same events.
        let edges = watch.observe(&event, &balances, event.recorded_at);
        events.push(event);
        events.extend(edges);
    }
    let next_after = batch.last().and_then(|e| e.position).unwrap_or(after);
    Ok(Page { events, next_after })
}
