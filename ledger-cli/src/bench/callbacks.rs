//! `bench callbacks`: signed normalized callbacks (deposit successes, a quarter of them delivered twice)
//! through the real HTTP server, from concurrent senders, into a fresh ledger of this database.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money};
use ledger_gateway::Secrets;
use ledger_store::{EventStore, Executor, ExecutorConfig, PgEventStore};
use rand::seq::SliceRandom;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::serve::pipeline::LedgerContext;
use crate::serve::{AppState, Limits, metrics::Metrics};

pub const SENDERS_MAX: usize = 256;
pub const PAYMENTS_MAX: usize = 200_000;

#[derive(Args, Debug)]
pub struct CallbacksArgs {
    /// Concurrent HTTP senders.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Deposits to confirm (a quarter of their callbacks are delivered twice).
    #[arg(long, default_value_t = 4000)]
    pub payments: usize,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(global: &Global, args: CallbacksArgs) -> Result<ExitCode, CliError> {
    if args.senders == 0
        || args.senders > SENDERS_MAX
        || args.payments == 0
        || args.payments > PAYMENTS_MAX
    {
        return Err(CliError::environment(format!(
            "senders in 1..={SENDERS_MAX}, payments in 1..={PAYMENTS_MAX}"
        )));
    }
    let pool = global.pool().await?;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(pool.clone()));
    let ledger = format!("bench-callbacks-{}", Utc::now().timestamp_micros());
    store
        .create_ledger(&ledger)
        .await
        .context("cannot create the bench ledger")?;
    let executor = Arc::new(Executor::new(
        store.clone(),
        ledger.clone(),
        ExecutorConfig::default(),
    ));
    let payments: Vec<Uuid> = (0..args.payments).map(|_| Uuid::new_v4()).collect();
    for chunk in payments.chunks(256) {
        let items = chunk
            .iter()
            .map(|id| {
                let env = CommandEnvelope {
                    command_id: Uuid::new_v4(),
                    actor: Actor::User(Uuid::new_v4()),
                    at: Utc::now(),
                    command: Command::InitiateDeposit {
                        payment_id: *id,
                        amount: Money::from_minor(1000, Currency::USD),
                        gateway: Gateway::Normalized,
                        fund: None,
                    },
                };
                (env, None)
            })
            .collect();
        for result in executor.execute_batch(items).await {
            result.context("cannot seed deposits")?;
        }
    }
    let secret = Uuid::new_v4().simple().to_string();
    let mut ledgers = HashMap::new();
    ledgers.insert(
        ledger.clone(),
        LedgerContext {
            ledger_id: ledger.clone(),
            executor,
            secrets: Secrets {
                callback: Some(secret.clone()),
                ..Secrets::default()
            },
            keys: crate::serve::keys::ApiKeys::default(),
            recover_from_user: true,
        },
    );
    let state = Arc::new(AppState {
        pool,
        ledgers,
        metrics: Metrics::default(),
        in_flight: tokio::sync::Semaphore::new(crate::serve::IN_FLIGHT_MAX),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen")?;
    let address = listener.local_addr().context("no local address")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits {
        body_limit_bytes: 64 * 1024,
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let server = tokio::spawn(crate::serve::serve(listener, state, limits, async {
        let _ = stopped.await;
    }));

    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(args.payments * 5 / 4);
    for (i, id) in payments.iter().enumerate() {
        let body = format!(
            r#"{{"event_id":"bench-{i}","kind":"deposit_succeeded","payment_reference":"{id}","amount":"10.00","currency":"USD"}}"#
        );
        if i % 4 == 0 {
            bodies.push(body.clone().into_bytes());
        }
        bodies.push(body.into_bytes());
    }
    bodies.shuffle(&mut rand::rng());
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{address}/v1/ledgers/{ledger}/callbacks/normalized");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.senders {
        let (bodies, next, url, secret) =
            (bodies.clone(), next.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut failures = 0_u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let signature =
                    ledger_gateway::verify::sign_timestamped(&secret, Utc::now().timestamp(), body);
                let t = Instant::now();
                let ok = client
                    .post(&url)
                    .header("x-escrow-signature", signature)
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                latencies.push(t.elapsed());
                failures += u64::from(!ok);
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await.context("a sender failed")?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    server.await.context("server task")??;
    latencies.sort();
    let pct = |p: usize| {
        latencies[(latencies.len() * p / 100).min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let report = serde_json::json!({
        "callbacks": latencies.len(), "unique_events": args.payments, "senders": args.senders,
        "seconds": elapsed.as_secs_f64(), "callbacks_per_second": rate,
        "p50_ms": pct(50), "p99_ms": pct(99), "non_2xx": failures, "ledger": ledger,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} callbacks from {} senders in {:.2}s: {rate:.0} callbacks/s, p50 {:.1} ms, p99 {:.1} ms, {failures} non-2xx",
            latencies.len(),
            args.senders,
            elapsed.as_secs_f64(),
            pct(50),
            pct(99)
        );
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::EXIT_FINDINGS)
    })
}
