//! `escrow-ledger serve --listen ADDR`: the payment workers' HTTP API.
//!
//! Routes (per ledger): `POST /v1/ledgers/{ledger}/callbacks/{gateway}`, `POST /v1/ledgers/{ledger}/commands`,
//! `GET /v1/ledgers/{ledger}/outbox`, `POST /v1/ledgers/{ledger}/outbox/claim`; `GET /healthz`, `GET /metrics`.
//! Bounded bodies (413), a request deadline that covers the wait for an in-flight slot (503 with
//! `Retry-After` when it passes), a bound on in-flight requests (taken only once the body has arrived, so slow
//! senders hold no slot; `/healthz` and `/metrics` take none), a cap on open connections with header-read and
//! idle timeouts (`listener`), graceful shutdown on SIGINT or SIGTERM that finishes in-flight requests, one
//! tracing span per request with its correlation id (`X-Correlation-Id`, generated when absent, echoed).

pub mod config;
mod http;
pub mod keys;
mod listener;
pub mod metrics;
pub mod openapi;
pub mod pipeline;

use ledger_store::roles::RunRole;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ledger_store::{EventStore, Executor, ExecutorConfig, PgEventStore};
use sqlx::PgPool;

use crate::db::Global;
use crate::exit::{CliError, Context};
use pipeline::LedgerContext;

/// Requests handled at once; more wait (back-pressure) rather than pile onto the database.
pub const IN_FLIGHT_MAX: usize = 512;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Secrets and API keys per ledger (TOML; see README "Payment workers").
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not fire deadlines here (run `escrow-ledger timers run` elsewhere, or nowhere).
    #[arg(long)]
    pub no_timers: bool,
    /// Do not relay events here (run `escrow-ledger events run` elsewhere, or nowhere).
    #[arg(long)]
    pub no_events: bool,
    /// NATS server for the relay (JetStream); without it only the webhooks' endpoints get events.
    #[arg(long, env = "ESCROW_LEDGER_NATS_URL")]
    pub nats: Option<String>,
}

pub struct AppState {
    pub pool: PgPool,
    pub ledgers: HashMap<String, LedgerContext>,
    pub metrics: metrics::Metrics,
    pub in_flight: tokio::sync::Semaphore,
}

pub struct Limits {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_limit_bytes: config::BODY_LIMIT_BYTES_DEFAULT,
            request_timeout: Duration::from_millis(config::REQUEST_TIMEOUT_MS_DEFAULT),
            header_read_timeout: Duration::from_millis(config::HEADER_READ_TIMEOUT_MS_DEFAULT),
            idle_timeout: Duration::from_millis(config::IDLE_TIMEOUT_MS_DEFAULT),
            connections_max: config::CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// Builds the state for every configured ledger that exists in the database.
pub async fn build_state(
    global: &Global,
    config_path: Option<&std::path::Path>,
) -> Result<(Arc<AppState>, Limits), CliError> {
    let config = config::load(config_path, &global.ledger)?;
    let pool = global.pool_as(RunRole::Writer).await?;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(pool.clone()));
    let known = store.list_ledgers().await.context("cannot list ledgers")?;
    let mut ledgers = HashMap::new();
    for (ledger_id, secrets) in &config.ledgers {
        if !known.contains(ledger_id) {
            if ledger_id == &global.ledger && config_path.is_none() {
                continue; // only environment defaults for a ledger that does not exist: nothing to serve
            }
            return Err(CliError::environment(format!(
                "configured ledger {ledger_id:?} does not exist (known: {}): create it with \
                 `escrow-ledger ledgers create {ledger_id}`, or fix [ledgers.{ledger_id}] in the configuration",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let executor = Arc::new(Executor::new(
            store.clone(),
            ledger_id.clone(),
            ExecutorConfig::default(),
        ));
        ledgers.insert(
            ledger_id.clone(),
            LedgerContext::new(
                executor,
                config.group_commit(),
                secrets.gateway_secrets(),
                keys::ApiKeys::new(
                    secrets.api_key.as_deref(),
                    secrets.payout_worker_key.as_deref(),
                ),
                config.chargeback_recover_from_user.unwrap_or(true),
            ),
        );
    }
    let defaults = Limits::default();
    let millis =
        |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
    let limits = Limits {
        body_limit_bytes: config.body_limit_bytes.unwrap_or(defaults.body_limit_bytes),
        request_timeout: millis(config.request_timeout_ms, defaults.request_timeout),
        header_read_timeout: millis(config.header_read_timeout_ms, defaults.header_read_timeout),
        idle_timeout: millis(config.idle_timeout_ms, defaults.idle_timeout),
        connections_max: config.connections_max.unwrap_or(defaults.connections_max),
    };
    let state = AppState {
        pool,
        ledgers,
        metrics: metrics::Metrics::default(),
        in_flight: tokio::sync::Semaphore::new(IN_FLIGHT_MAX),
    };
    Ok((Arc::new(state), limits))
}

pub async fn run(global: &Global, args: ServeArgs) -> Result<ExitCode, CliError> {
    let (state, mut limits) = build_state(global, args.config.as_deref()).await?;
    limits.connections_max = listener::raise_open_files_limit(limits.connections_max);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .context(format!("cannot listen on {}", args.listen))?;
    let names: Vec<&String> = state.ledgers.keys().collect();
    tracing::info!(listen = %args.listen, ledgers = ?names, "serving");
    eprintln!(
        "escrow-ledger: serving {} ledger(s) on http://{}",
        names.len(),
        args.listen
    );
    // Events a dead writer (any process) left unsequenced get positions within a second.
    let sequencer = ledger_store::sequencer::Background::spawn(state.pool.clone());
    // The deadlines of every served ledger fire here unless `--no-timers` (see `timers`).
    let (stop_timers, stop) = tokio::sync::watch::channel(false);
    let mut timers = tokio::task::JoinSet::new();
    if !args.no_timers {
        for context in state.ledgers.values() {
            let (pool, executor, stop) =
                (state.pool.clone(), context.executor.clone(), stop.clone());
            let interval = Duration::from_millis(crate::timers::INTERVAL_MS_DEFAULT);
            timers.spawn(async move {
                let mut report = |h: &crate::timers::Handled| {
                    tracing::info!(deadline = %h.json(), "deadline handled");
                };
                crate::timers::run_loop(pool, executor, interval, stop, &mut report).await
            });
        }
    }
    // Events out unless `--no-events`: to NATS when a URL is given, and to the webhooks of a ledger that has
    // endpoints when serve starts (`events run` serves the others). The relays here poll the log instead of
    // holding a LISTEN connection each: many ledgers must not exhaust the pool the callbacks need.
    if !args.no_events {
        for context in state.ledgers.values() {
            let endpoints = ledger_events::webhook::list_endpoints(&state.pool, &context.ledger_id)
                .await
                .map(|e| e.len())
                .unwrap_or(0);
            if args.nats.is_none() && endpoints == 0 {
                continue;
            }
            let sinks = crate::events::sinks(
                args.nats.as_deref(),
                ledger_events::nats::StreamLimits::default(),
                None,
            )
            .await?;
            let store = Arc::new(ledger_store::PgEventStore::new(state.pool.clone()));
            let config = ledger_events::relay::RelayConfig {
                owner: crate::events::owner(),
                batch: ledger_events::relay::BATCH_DEFAULT,
                once: false,
                poll: Some(Duration::from_millis(250)),
            };
            for (name, sink) in sinks {
                if matches!(sink, ledger_events::relay::Sink::Webhooks { .. }) && endpoints == 0 {
                    continue;
                }
                let run = ledger_events::relay::run_sink(
                    state.pool.clone(),
                    store.clone(),
                    context.ledger_id.clone(),
                    name,
                    sink,
                    config.clone(),
                    stop.clone(),
                );
                timers.spawn(async move {
                    run.await
                        .map(|_| ())
                        .map_err(|e| CliError::environment(format!("events relay: {e}")))
                });
            }
        }
    }
    let served = serve(listener, state, limits, crate::shutdown::requested()).await;
    let _ = stop_timers.send(true);
    while let Some(joined) = timers.join_next().await {
        if let Ok(Err(e)) = joined {
            tracing::warn!(error = %e.message, "timers stopped with an error");
        }
    }
    sequencer.stop().await;
    served?;
    eprintln!("escrow-ledger: stopped after finishing in-flight requests");
    Ok(ExitCode::SUCCESS)
}

/// Serves until `shutdown` resolves, then stops accepting and waits for in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let app = http::router(state, &limits);
    let connections = listener::ConnectionLimits {
        connections_max: limits.connections_max,
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
    };
    listener::accept_loop(listener, app, connections, shutdown).await;
    Ok(())
}
