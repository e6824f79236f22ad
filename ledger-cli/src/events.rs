//! `escrow-ledger events`: the relay (`events run`) and its webhooks' endpoints and deliveries.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use ledger_events::nats::{NatsSink, StreamLimits};
use ledger_events::relay::{self, RelayConfig, Sink};
use ledger_events::webhook::{self, RetrySchedule};
use ledger_store::PgEventStore;
use ledger_store::roles::RunRole;
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Relay the log to every sink (NATS JetStream when a URL is given, the webhooks' endpoints always),
    /// each from its durable cursor; until SIGINT/SIGTERM, or with --once until the backlog is delivered.
    Run(RunArgs),
    /// Signed webhooks' endpoints.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Webhook deliveries, newest first (with --dead: only those whose retries are spent).
    Deliveries {
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Makes a delivery due again now (a dead one included), or every delivery of positions FROM..=TO.
    Redeliver {
        /// A delivery id (the webhook-id header), as `events deliveries` lists it.
        #[arg(value_parser = crate::exit::uuid_arg)]
        id: Option<Uuid>,
        #[arg(long, requires = "to")]
        from: Option<i64>,
        #[arg(long, requires = "from")]
        to: Option<i64>,
    },
    /// Monitors: `monitor.triggered` / `monitor.cleared` events when a condition on a balance or on the
    /// escrows' age starts or stops holding (edge-triggered).
    #[command(subcommand)]
    Monitors(MonitorsCommand),
    /// Each sink's cursor, the log's head, the backlog and the lag (age of the oldest undelivered event).
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MonitorsCommand {
    /// Adds a monitor, e.g. --when "Assets:Gateway:Paystack:Clearing < 1000.00 NGN" (the balance on the
    /// account's normal side; operators < <= > >= = !=; edges start after the log's head now) or --when
    /// "escrow older than 30 days" (each escrow account holding money for that long; days, hours, minutes or
    /// seconds; cleared when the escrow is emptied).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        when: String,
    },
    /// Lists the monitors with their conditions and where their edges start.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// NATS server (JetStream enabled), e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "ESCROW_LEDGER_NATS_URL")]
    pub nats: Option<String>,
    /// JetStream stream to publish to (created with subjects `escrow.>` when missing).
    #[arg(long, default_value = ledger_events::nats::STREAM_DEFAULT)]
    pub stream: String,
    /// When the relay creates the stream: drop messages older than this many seconds (0: keep them).
    #[arg(long, default_value_t = 0)]
    pub stream_max_age_seconds: u64,
    /// When the relay creates the stream: keep at most this many bytes (-1: no limit).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub stream_max_bytes: i64,
    /// Deliver the backlog to every sink, then exit 0.
    #[arg(long)]
    pub once: bool,
    /// Events per batch.
    #[arg(long, default_value_t = relay::BATCH_DEFAULT)]
    pub batch: i64,
    /// Waits between a webhook delivery's attempts (default: 5s,5m,30m,2h,5h,10h,14h,20h,20h: 3 days).
    #[arg(long, env = "ESCROW_LEDGER_WEBHOOK_RETRY_SCHEDULE")]
    pub retry_schedule: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// Registers an endpoint: every event (or only --types) is POSTed to it, signed with --secret.
    Add {
        #[arg(long)]
        url: String,
        /// `whsec_<base64>` (Standard Webhooks) or any text of 16 characters or more.
        #[arg(long)]
        secret: String,
        /// Comma-separated public types (`payment.deposit_succeeded`) or kinds (`payment.*`).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
    },
    /// Lists the endpoints (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Rotation: --secret signs alongside the current secret (both signatures are sent) until `retire`.
    Rotate {
        #[arg(value_parser = crate::exit::uuid_arg)]
        endpoint: Uuid,
        #[arg(long)]
        secret: String,
    },
    /// Ends a rotation: only the newest secret signs.
    Retire {
        #[arg(value_parser = crate::exit::uuid_arg)]
        endpoint: Uuid,
    },
}

pub async fn run(global: &Global, command: EventsCommand) -> Result<ExitCode, CliError> {
    let (pool, _) = global.executor_as(RunRole::Writer).await?;
    let ledger = global.ledger.clone();
    match command {
        EventsCommand::Run(args) => run_relay(pool, ledger, args).await,
        EventsCommand::Endpoints(EndpointsCommand::Add { url, secret, types }) => {
            let id = webhook::add_endpoint(&pool, &ledger, &url, &secret, &types)
                .await
                .map_err(invalid)?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Endpoints(EndpointsCommand::List { json }) => {
            let endpoints = webhook::list_endpoints(&pool, &ledger)
                .await
                .context("cannot list endpoints")?;
            for e in &endpoints {
                if json {
                    println!("{}", serde_json::to_string(e).expect("endpoints serialize"));
                } else {
                    let types = if e.types.is_empty() {
                        "all".to_string()
                    } else {
                        e.types.join(",")
                    };
                    println!(
                        "{} {} types={types} secrets={}",
                        e.endpoint_id, e.url, e.secrets
                    );
                }
            }
            if !json {
                println!("{} endpoints", endpoints.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Endpoints(EndpointsCommand::Rotate { endpoint, secret }) => {
            webhook::rotate_secret(&pool, &ledger, endpoint, &secret)
                .await
                .map_err(invalid)?;
            println!("endpoint {endpoint}: the new secret signs alongside the current one");
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Endpoints(EndpointsCommand::Retire { endpoint }) => {
            webhook::retire_old_secret(&pool, &ledger, endpoint)
                .await
                .context("cannot retire the old secret")?;
            println!("endpoint {endpoint}: only the newest secret signs");
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Deliveries { dead, limit, json } => {
            let deliveries = webhook::list_deliveries(&pool, &ledger, dead, limit)
                .await
                .context("cannot list deliveries")?;
            for d in &deliveries {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(d).expect("deliveries serialize")
                    );
                } else {
                    println!(
                        "{} {} position {} {} {} attempts={} last={}{}",
                        d.delivery_id,
                        d.endpoint_id,
                        d.position,
                        d.event_type,
                        d.status,
                        d.attempts,
                        d.last_status.map_or("-".into(), |s| s.to_string()),
                        d.last_error
                            .as_deref()
                            .map_or(String::new(), |e| format!(" ({e})"))
                    );
                }
            }
            if !json {
                println!("{} deliveries", deliveries.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Redeliver { id, from, to } => {
            let range = from.zip(to);
            if id.is_none() && range.is_none() {
                return Err(CliError::environment(
                    "name a delivery id (see `events deliveries`) or a range --from P --to Q",
                ));
            }
            let n = webhook::redeliver(&pool, &ledger, id, range)
                .await
                .context("cannot schedule the redelivery")?;
            println!("{n} deliveries due again; `events run` sends them");
            Ok(if n == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        EventsCommand::Monitors(MonitorsCommand::Add { name, when }) => {
            let store = PgEventStore::new(pool.clone());
            let head = ledger_store::EventStore::head_position(&store, &ledger)
                .await
                .context("cannot read the head")?;
            let id = ledger_events::monitor::add(&pool, &ledger, &name, &when, head)
                .await
                .map_err(invalid)?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Monitors(MonitorsCommand::List { json }) => {
            let monitors = ledger_events::monitor::list(&pool, &ledger)
                .await
                .context("cannot list monitors")?;
            for m in &monitors {
                if json {
                    println!("{}", serde_json::to_string(m).expect("monitors serialize"));
                } else {
                    println!(
                        "{} {}: {} (since position {})",
                        m.monitor_id,
                        m.name,
                        m.condition(),
                        m.since_position
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Status { json } => {
            let sinks = ledger_events::cursor::status(&pool)
                .await
                .context("cannot read the sinks' cursors")?;
            for s in sinks.iter().filter(|s| s.ledger == ledger) {
                if json {
                    println!("{}", serde_json::to_string(s).expect("status serializes"));
                } else {
                    println!(
                        "{} {} position {} of {} (backlog {}, lag {:.1}s), {} delivered, lease {}",
                        s.ledger,
                        s.sink,
                        s.position,
                        s.head,
                        s.backlog,
                        s.lag_seconds,
                        s.delivered,
                        s.leased_by.as_deref().unwrap_or("free")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn invalid(e: ledger_events::Error) -> CliError {
    match e {
        ledger_events::Error::Invalid(message) => CliError::environment(message),
        other => CliError::environment(other.to_string()),
    }
}

/// This process's name in the sinks' leases.
pub fn owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &Uuid::new_v4().to_string()[..8]
    )
}

/// The sinks of `events run` (and of `serve`): NATS when a URL is given, the webhooks always.
pub async fn sinks(
    nats: Option<&str>,
    limits: StreamLimits,
    retry_schedule: Option<&str>,
) -> Result<Vec<(String, Sink)>, CliError> {
    let stream = limits.name.clone();
    let schedule = match retry_schedule {
        Some(text) => RetrySchedule::parse(text).map_err(CliError::environment)?,
        None => RetrySchedule::default(),
    };
    let http = reqwest::Client::builder()
        .timeout(webhook::REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let mut sinks = Vec::new();
    if let Some(url) = nats {
        let sink = NatsSink::connect(url, &limits).await.map_err(|e| {
            CliError::environment(format!("{e} (is nats-server running with -js?)"))
        })?;
        let s = Sink::Nats(sink);
        sinks.push((s.name(&stream), s));
    }
    let s = Sink::Webhooks { http, schedule };
    sinks.push((s.name(&stream), s));
    Ok(sinks)
}

async fn run_relay(
    pool: sqlx::PgPool,
    ledger: String,
    args: RunArgs,
) -> Result<ExitCode, CliError> {
    let limits = StreamLimits {
        name: args.stream.clone(),
        max_age: std::time::Duration::from_secs(args.stream_max_age_seconds),
        max_bytes: args.stream_max_bytes,
        ..StreamLimits::default()
    };
    let sinks = sinks(args.nats.as_deref(), limits, args.retry_schedule.as_deref()).await?;
    let store = Arc::new(PgEventStore::new(pool.clone()));
    let config = RelayConfig {
        owner: owner(),
        batch: args.batch.clamp(1, 10_000),
        once: args.once,
        poll: None,
    };
    // `--once` ends by itself; a signal stops either at the end of the batch in flight.
    let stop: watch::Receiver<bool> = crate::shutdown::watch_requested();
    let runs = sinks.into_iter().map(|(name, sink)| {
        relay::run_sink(
            pool.clone(),
            store.clone(),
            ledger.clone(),
            name,
            sink,
            config.clone(),
            stop.clone(),
        )
    });
    let reports = futures::future::try_join_all(runs)
        .await
        .map_err(|e| CliError::environment(format!("relay: {e}")))?;
    for r in &reports {
        eprintln!(
            "{}: {} events delivered, cursor at {}{}",
            r.sink,
            r.events,
            r.position,
            if r.sink == "webhooks" {
                format!(
                    "; webhooks {} delivered, {} to retry, {} dead",
                    r.webhooks_delivered, r.webhooks_failed, r.webhooks_dead
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
