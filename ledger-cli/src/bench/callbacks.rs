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
pub const RATE_MAX: u32 = 100_000;
/// Open loop: most callbacks outstanding at once; past it the schedule waits (and latencies show it).
const OUTSTANDING_MAX: usize = 8_192;

#[derive(Args, Debug)]
pub struct CallbacksArgs {
    /// Concurrent HTTP senders.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Deposits to confirm (a quarter of their callbacks are delivered twice).
    #[arg(long, default_value_t = 4000)]
    pub payments: usize,
    /// Open loop: send at this fixed rate (callbacks/s) whatever the answers, and measure each latency from
    /// the moment the callback was due (so a slow server is not hidden by senders that waited for it).
    /// Without it, `--senders` closed-loop senders each send the next callback when one is answered.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Group commit: most callbacks in one transaction (serve's `group_commit_batch_max`).
    #[arg(long, default_value_t = crate::serve::config::GROUP_COMMIT_BATCH_MAX_DEFAULT)]
    pub batch_size: usize,
    /// Group commit: how long a batch waits for more while another commits, in ms (`group_commit_linger_ms`).
    #[arg(long, default_value_t = crate::serve::config::GROUP_COMMIT_LINGER_MS_DEFAULT)]
    pub linger_ms: u64,
    /// Group commit: batches committing at once (`group_commit_committers`).
    #[arg(long, default_value_t = crate::serve::config::GROUP_COMMIT_COMMITTERS_DEFAULT)]
    pub committers: usize,
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
    if args.batch_size == 0
        || args.batch_size > ledger_store::BATCH_REQUESTS_MAX
        || args.committers == 0
        || args.committers > 16
        || args.linger_ms > 100
    {
        return Err(CliError::environment(format!(
            "--batch-size in 1..={}, --committers in 1..=16, --linger-ms in 0..=100",
            ledger_store::BATCH_REQUESTS_MAX
        )));
    }
    if args.rate.is_some_and(|r| r == 0 || r > RATE_MAX) {
        return Err(CliError::environment(format!(
            "--rate in 1..={RATE_MAX} callbacks/s"
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
        LedgerContext::new(
            executor,
            ledger_store::GroupCommitConfig {
                batch_size_max: args.batch_size,
                linger: Duration::from_millis(args.linger_ms),
                committers: args.committers,
                ..ledger_store::GroupCommitConfig::default()
            },
            Secrets {
                callback: Some(secret.clone()),
                ..Secrets::default()
            },
            crate::serve::keys::ApiKeys::default(),
            true,
        ),
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
    let url = format!("http://{address}/v1/ledgers/{ledger}/callbacks/normalized");
    let cpu_before = super::cpu::CpuSample::now();
    let started = Instant::now();
    let (senders, rate) = (args.senders, args.rate);
    let load = load_generator(move || async move {
        match rate {
            None => closed_loop(senders, bodies, url, secret).await,
            Some(rate) => open_loop(rate, bodies, url, secret).await,
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .zip(super::cpu::CpuSample::now())
        .map(|(a, b)| a.until(&b).with_client(load.cpu_s));
    let (mut latencies, failures) = load.sent;
    let _ = stop.send(());
    server.await.context("server task")??;
    latencies.sort();
    if latencies.is_empty() {
        return Err(CliError::environment("no callback was sent"));
    }
    let pct = |p: usize| {
        latencies[(latencies.len() * p / 100).min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let mut report = serde_json::json!({
        "callbacks": latencies.len(), "unique_events": args.payments, "senders": args.senders,
        "offered_rate": args.rate,
        "seconds": elapsed.as_secs_f64(), "callbacks_per_second": rate,
        "p50_ms": pct(50), "p99_ms": pct(99), "non_2xx": failures, "ledger": ledger,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let callbacks = latencies.len() as u64;
    if let Some(cpu) = cpu {
        super::cpu::merge(&mut report, cpu.json(callbacks, "callback"));
    }
    if args.json {
        println!("{report}");
    } else {
        let load = match args.rate {
            None => format!("{} senders", args.senders),
            Some(rate) => format!("an offered {rate}/s (open loop)"),
        };
        println!(
            "{callbacks} callbacks from {load} in {:.2}s: {rate:.0} callbacks/s, p50 {:.1} ms, p99 {:.1} ms, {failures} non-2xx",
            elapsed.as_secs_f64(),
            pct(50),
            pct(99)
        );
        if let Some(cpu) = cpu {
            println!("{}", cpu.line(callbacks, "callback"));
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::EXIT_FINDINGS)
    })
}

type Sent = (Vec<Duration>, u64);

/// What the load generator sent, and the CPU its thread used (`None` where `/proc` cannot tell).
struct Load {
    sent: Sent,
    cpu_s: Option<f64>,
}

/// Runs the senders (the gateway's side) on a thread and runtime of their own, so that their CPU is
/// measured apart from the server's: in production the gateway's HTTP client is another machine. The
/// machine-wide figure still counts them; `cpu_client_share` says how much of it they are.
async fn load_generator<F, Fut>(senders: F) -> Result<Load, CliError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Sent, CliError>>,
{
    let (done, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the load generator's runtime")
                .and_then(|runtime| {
                    let before = super::cpu::this_thread_seconds();
                    let sent = runtime.block_on(senders())?;
                    let cpu_s = before
                        .zip(super::cpu::this_thread_seconds())
                        .map(|(a, b)| (b - a).max(0.0));
                    Ok(Load { sent, cpu_s })
                });
            let _ = done.send(result);
        })
        .context("cannot start the load generator's thread")?;
    answer
        .await
        .map_err(|_| CliError::environment("the load generator's thread ended without an answer"))?
}

/// Failures reported on stderr (the rest are counted only).
const FAILURES_SHOWN_MAX: usize = 5;
static FAILURES_SHOWN: AtomicUsize = AtomicUsize::new(0);

/// One signed POST; whether it was answered 2xx. The first failures are shown with their answer.
async fn send(client: &reqwest::Client, url: &str, secret: &str, body: &[u8]) -> bool {
    let signature = ledger_gateway::verify::sign_timestamped(secret, Utc::now().timestamp(), body);
    let failure = match client
        .post(url)
        .header("x-escrow-signature", signature)
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(answer) if answer.status().is_success() => return true,
        Ok(answer) => format!(
            "answered {}: {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        ),
        Err(error) => format!("not answered: {error}"),
    };
    if FAILURES_SHOWN.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN_MAX {
        eprintln!("callback {}: {failure}", String::from_utf8_lossy(body));
    }
    false
}

/// `senders` tasks, each sending the next body once its previous one is answered.
async fn closed_loop(
    senders: usize,
    bodies: Arc<Vec<Vec<u8>>>,
    url: String,
    secret: String,
) -> Result<Sent, CliError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (bodies, next, url, secret) =
            (bodies.clone(), next.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut failures = 0_u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                let ok = send(&client, &url, &secret, body).await;
                latencies.push(t.elapsed());
                failures += u64::from(!ok);
            }
            (latencies, failures)
        }));
    }
    gather(tasks).await
}

/// Every body at its due time (`i / rate` after the start), whatever the answers; latency counts from the
/// due time. At most `OUTSTANDING_MAX` in flight: past it the schedule slips, and the latencies say so.
async fn open_loop(
    rate: u32,
    bodies: Arc<Vec<Vec<u8>>>,
    url: String,
    secret: String,
) -> Result<Sent, CliError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(OUTSTANDING_MAX)
        .build()
        .context("cannot build the HTTP client")?;
    let outstanding = Arc::new(tokio::sync::Semaphore::new(OUTSTANDING_MAX));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for i in 0..bodies.len() {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        tokio::time::sleep_until(due).await;
        let permit = outstanding
            .clone()
            .acquire_owned()
            .await
            .context("the open loop's semaphore closed")?;
        let (client, bodies, url, secret) =
            (client.clone(), bodies.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let ok = send(&client, &url, &secret, &bodies[i]).await;
            drop(permit);
            (vec![due.elapsed()], u64::from(!ok))
        }));
    }
    gather(tasks).await
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Sent>>) -> Result<Sent, CliError> {
    let mut all = (Vec::new(), 0);
    for task in tasks {
        let (latencies, failures) = task.await.context("a sender failed")?;
        all.0.extend(latencies);
        all.1 += failures;
    }
    Ok(all)
}
