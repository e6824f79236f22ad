//! The relay: reads one ledger's log in global order behind the sequencer (the store's subscription, the
//! same never-skip guarantee as the projections) and delivers it to one sink from that sink's durable
//! cursor. At least once: a batch is delivered, then the cursor advances; a relay killed in between sends
//! the batch again (JetStream drops repeated message ids; a webhook delivery's id is its primary key). Two
//! relays for one sink take turns through the cursor's lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::Balances;
use ledger_store::{EventStore, PgEventStore, RecordedEvent};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::model::{PublicEvent, public_event};
use crate::nats::NatsSink;
use crate::webhook::{self, RetrySchedule};
use crate::{Error, cursor, monitor, running};

/// What a relay keeps as it goes: the balances at its position and its monitors' states there.
pub struct State {
    pub balances: Balances,
    pub watch: monitor::Watch,
}

/// Events read and delivered per batch.
pub const BATCH_DEFAULT: i64 = 1_000;
/// How long `--once` waits for a lease another relay holds.
const ONCE_LEASE_WAIT: Duration = Duration::from_secs(2 * cursor::LEASE_SECONDS as u64);

/// Where events go.
pub enum Sink {
    Nats(NatsSink),
    Webhooks {
        http: reqwest::Client,
        schedule: RetrySchedule,
    },
}

impl Sink {
    /// The cursor's name (`nats:<stream>`, `webhooks`).
    pub fn name(&self, nats_stream: &str) -> String {
        match self {
            Sink::Nats(_) => format!("nats:{nats_stream}"),
            Sink::Webhooks { .. } => "webhooks".to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// This relay's name in leases (host and process).
    pub owner: String,
    pub batch: i64,
    /// Deliver the backlog, then return.
    pub once: bool,
    /// Live: read the log every this often instead of holding a LISTEN connection (for many relays in one
    /// process, e.g. `serve` with many ledgers: a connection each would exhaust its pool).
    pub poll: Option<Duration>,
}

/// What one sink's run delivered.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkReport {
    pub sink: String,
    pub events: u64,
    pub position: i64,
    pub webhooks_delivered: u64,
    pub webhooks_failed: u64,
    pub webhooks_dead: u64,
}

/// A sink's relay loop for one ledger (see the module docs). Returns when `stop` turns true, or (`once`)
/// when the log's head at the start is delivered and, for webhooks, every due delivery was tried once.
pub async fn run_sink(
    pool: PgPool,
    store: Arc<PgEventStore>,
    ledger: String,
    sink_name: String,
    sink: Sink,
    config: RelayConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<SinkReport, Error> {
    let mut report = SinkReport {
        sink: sink_name.clone(),
        ..SinkReport::default()
    };
    let started = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(claimed) = cursor::claim(&pool, &ledger, &sink_name, &config.owner).await? else {
            // Another relay delivers this sink; wait for its lease to end (or for stop).
            if config.once && started.elapsed() > ONCE_LEASE_WAIT {
                return Err(Error::Sink(format!(
                    "sink {sink_name} of ledger {ledger} is held by another relay"
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let position = claimed.position;
        report.position = position;
        let balances = running::balances_at(&pool, &store, &ledger, position).await?;
        let holds = match claimed.escrow_holds {
            Some(saved) => serde_json::from_value(saved)
                .map_err(|e| Error::Decode(format!("the cursor's escrow holds: {e}")))?,
            // A cursor from before escrow-age monitors: its holds from the log, once.
            None if position > 0 => running::holds_at(&store, &ledger, position).await?,
            None => monitor::Holds::default(),
        };
        let mut watch = monitor::Watch::with_holds(holds);
        watch.refresh(monitor::list(&pool, &ledger).await?, &balances);
        let mut state = State { balances, watch };
        let target = Target {
            pool: &pool,
            store: &store,
            ledger: &ledger,
            sink_name: &sink_name,
            sink: &sink,
            config: &config,
        };
        let outcome = if config.once {
            match deliver_backlog(&target, &mut state, &mut report).await {
                Ok(()) => deliver_overdue(&target, &mut state, &mut report).await,
                Err(e) => Err(e),
            }
        } else {
            deliver_live(&target, &mut state, &mut report, &mut stop).await
        };
        match outcome {
            Ok(()) => break,
            Err(Error::LeaseLost) => {
                tracing::warn!(
                    ledger,
                    sink = sink_name,
                    "lease lost to another relay; waiting to take it again"
                );
                continue;
            }
            Err(e) if !config.once => {
                tracing::warn!(ledger, sink = sink_name, error = %e, "delivery failed; retrying from the cursor");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    if let (Sink::Webhooks { http, schedule }, true) = (&sink, config.once) {
        // Every delivery due now is tried once before `--once` returns (a retry waits for its time).
        let round = webhook::dispatch(&pool, http, &ledger, schedule, chrono::Utc::now()).await?;
        report.webhooks_delivered += round.delivered;
        report.webhooks_failed += round.failed;
        report.webhooks_dead += round.dead;
    }
    cursor::release(&pool, &ledger, &sink_name, &config.owner).await?;
    Ok(report)
}

/// What every step of one sink's delivery works with.
struct Target<'a> {
    pool: &'a PgPool,
    store: &'a PgEventStore,
    ledger: &'a str,
    sink_name: &'a str,
    sink: &'a Sink,
    config: &'a RelayConfig,
}

/// Maps and delivers one batch, then advances the cursor past it.
async fn deliver(
    t: &Target<'_>,
    state: &mut State,
    batch: &[RecordedEvent],
    report: &mut SinkReport,
) -> Result<(), Error> {
    let Some(last) = batch.last().and_then(|e| e.position) else {
        return Ok(());
    };
    // Monitors added meanwhile join with the state at this batch's start.
    state
        .watch
        .refresh(monitor::list(t.pool, t.ledger).await?, &state.balances);
    let now = chrono::Utc::now();
    let mut events: Vec<PublicEvent> = Vec::with_capacity(batch.len());
    for record in batch {
        let event = public_event(record, &mut state.balances)?;
        let edges = state.watch.observe(&event, &state.balances, now);
        events.push(event);
        events.extend(edges);
    }
    events.extend(state.watch.overdue(t.ledger, last, &state.balances, now));
    send(t, state, &events, last, report).await
}

/// Escrow-age monitors' edges due now (no new event in the log): delivered at the relay's position.
async fn deliver_overdue(
    t: &Target<'_>,
    state: &mut State,
    report: &mut SinkReport,
) -> Result<(), Error> {
    let position = report.position;
    state
        .watch
        .refresh(monitor::list(t.pool, t.ledger).await?, &state.balances);
    let edges = state
        .watch
        .overdue(t.ledger, position, &state.balances, chrono::Utc::now());
    send(t, state, &edges, position, report).await
}

/// Delivers `events` to the sink, then advances the cursor to `last` with the escrows' holds if they changed
/// (for webhooks: enqueued and advanced in one transaction).
async fn send(
    t: &Target<'_>,
    state: &mut State,
    events: &[PublicEvent],
    last: i64,
    report: &mut SinkReport,
) -> Result<(), Error> {
    let holds = state.watch.take_changed_holds();
    if events.is_empty() && holds.is_none() && last <= report.position {
        return Ok(());
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let (pool, ledger, sink_name, owner) = (t.pool, t.ledger, t.sink_name, &t.config.owner);
    let held = match t.sink {
        Sink::Nats(nats) => {
            nats.publish(events).await?;
            cursor::advance(pool, ledger, sink_name, owner, last, count, holds.as_ref()).await?
        }
        Sink::Webhooks { .. } => {
            let mut tx = pool.begin().await?;
            webhook::enqueue(&mut tx, ledger, events).await?;
            let held = cursor::advance(
                &mut *tx,
                ledger,
                sink_name,
                owner,
                last,
                count,
                holds.as_ref(),
            )
            .await?;
            if held {
                tx.commit().await?;
            }
            held
        }
    };
    if !held {
        return Err(Error::LeaseLost);
    }
    report.events += events.len() as u64;
    report.position = last;
    Ok(())
}

/// `--once`: pages through the log from the cursor up to the head as it was at the start.
async fn deliver_backlog(
    t: &Target<'_>,
    state: &mut State,
    report: &mut SinkReport,
) -> Result<(), Error> {
    let (store, ledger) = (t.store, t.ledger);
    let head = store.head_position(ledger).await?;
    let page = |after: i64| t.config.batch.min(head - after);
    let mut position = report.position;
    let mut next = if position < head {
        store.read_log(ledger, position, page(position)).await?
    } else {
        Vec::new()
    };
    // Each page is read while the one before it is delivered.
    while position < head && !next.is_empty() {
        let batch = std::mem::take(&mut next);
        let last = batch.last().and_then(|e| e.position).unwrap_or(position);
        let read_ahead = async {
            if last < head {
                store.read_log(ledger, last, page(last)).await
            } else {
                Ok(Vec::new())
            }
        };
        let (delivered, ahead) = tokio::join!(deliver(t, state, &batch, report), read_ahead);
        delivered?;
        next = ahead?;
        position = report.position;
    }
    Ok(())
}

/// Live: the store's subscription from the cursor until `stop`; webhooks are dispatched between batches
/// and every second.
async fn deliver_live(
    t: &Target<'_>,
    state: &mut State,
    report: &mut SinkReport,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let (pool, store, ledger, config) = (t.pool, t.store, t.ledger, t.config);
    let mut subscription = match config.poll {
        Some(_) => None,
        None => Some(store.subscribe(ledger, report.position).await?),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let busy: Arc<std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>> = Arc::default();
    loop {
        tokio::select! {
            batch = next_batch(store, ledger, report.position, config, subscription.as_mut()) => {
                let batch = batch?;
                let limit = usize::try_from(config.batch).unwrap_or(1_000).max(1);
                for chunk in batch.chunks(limit) {
                    deliver(t, state, chunk, report).await?;
                }
            }
            _ = tick.tick() => {
                if !cursor::advance(pool, ledger, t.sink_name, &config.owner, report.position, 0, None).await? {
                    return Err(Error::LeaseLost);
                }
                deliver_overdue(t, state, report).await?;
                if let Sink::Webhooks { http, schedule } = t.sink {
                    // Each endpoint with deliveries due in its own task, one at a time per endpoint: a slow
                    // or dead endpoint holds up only itself.
                    for endpoint in webhook::endpoints_due(pool, ledger, chrono::Utc::now()).await? {
                        if !busy.lock().expect("busy set").insert(endpoint) {
                            continue;
                        }
                        let (pool, http, ledger, schedule, busy) =
                            (pool.clone(), http.clone(), ledger.to_string(), schedule.clone(), busy.clone());
                        tokio::spawn(async move {
                            let done = webhook::dispatch_endpoint(
                                &pool, &http, &ledger, endpoint, &schedule, chrono::Utc::now(),
                            )
                            .await;
                            if let Err(e) = done {
                                tracing::warn!(%endpoint, error = %e, "webhook dispatch failed; retried next tick");
                            }
                            busy.lock().expect("busy set").remove(&endpoint);
                        });
                    }
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// The next events after `position`: from the subscription, or (polling) one read after a pause when the
/// last read found nothing new.
async fn next_batch(
    store: &PgEventStore,
    ledger: &str,
    position: i64,
    config: &RelayConfig,
    subscription: Option<&mut Box<dyn ledger_store::Subscription>>,
) -> Result<Vec<RecordedEvent>, Error> {
    if let Some(subscription) = subscription {
        return Ok(subscription.next_batch().await?);
    }
    let pause = config.poll.unwrap_or(Duration::from_millis(250));
    loop {
        let batch = store.read_log(ledger, position, config.batch).await?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        tokio::time::sleep(pause).await;
    }
}
