//! `bench events`: (1) the relay's throughput to JetStream: the selected ledger's whole log (seed one with
//! `bench seed`) published from position 0 to a stream of the benchmark's own (deleted afterwards), in
//! events/s, every publish acknowledged; (2) the added latency from commit to publish: the relay tails the
//! log while deposits are initiated and confirmed at `--rate` commands/s, and a NATS subscriber timestamps
//! each message against the event's `recorded_at` (the commit's time; same machine, same clock).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use futures::StreamExt;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money};
use ledger_events::nats::{NatsSink, StreamLimits};
use ledger_events::relay::{RelayConfig, Sink, run_sink};
use ledger_store::{EventStore, PgEventStore};
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// NATS server with JetStream.
    #[arg(
        long,
        env = "ESCROW_LEDGER_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// Commands per second offered during the latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Length of the latency phase, in seconds (0 skips it).
    #[arg(long, default_value_t = 10)]
    load_seconds: u64,
    /// Events per relay batch.
    #[arg(long, default_value_t = ledger_events::relay::BATCH_DEFAULT)]
    batch: i64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub async fn run(global: &Global, args: EventsArgs) -> Result<ExitCode, CliError> {
    let (pool, executor) = global.executor().await?;
    let store = Arc::new(PgEventStore::new(pool.clone()));
    let ledger = global.ledger.clone();
    let head = store.head_position(&ledger).await.context("head")?;
    let tag = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let limits = StreamLimits {
        name: format!("ESCROWBENCH{tag}"),
        subject_prefix: format!("escrowbench{tag}"),
        ..StreamLimits::default()
    };
    let connect = || NatsSink::connect(&args.nats, &limits);
    let sink_name = format!("nats:bench-{tag}");
    let config = RelayConfig {
        owner: crate::events::owner(),
        batch: args.batch.clamp(1, 10_000),
        once: true,
        poll: None,
    };
    // (1) Throughput: the whole log from 0.
    let (_stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let report = run_sink(
        pool.clone(),
        store.clone(),
        ledger.clone(),
        sink_name.clone(),
        Sink::Nats(
            connect()
                .await
                .map_err(|e| CliError::environment(e.to_string()))?,
        ),
        config.clone(),
        stop.clone(),
    )
    .await
    .map_err(|e| CliError::environment(format!("relay: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let per_s = report.events as f64 / seconds.max(1e-9);
    eprintln!(
        "relay to JetStream: {} events (head {head}) in {seconds:.1} s: {per_s:.0} events/s, every publish acknowledged",
        report.events
    );
    let mut out = serde_json::json!({
        "events": report.events, "seconds": seconds, "events_per_second": per_s,
    });
    // (2) Latency from commit to publish under a steady load.
    if args.load_seconds > 0 {
        let client = async_nats::connect(&args.nats)
            .await
            .context("cannot connect to NATS")?;
        let mut subscription = client
            .subscribe(format!("{}.>", limits.subject_prefix))
            .await
            .context("cannot subscribe")?;
        let samples: Arc<Mutex<Vec<f64>>> = Arc::default();
        let collector = {
            let samples = samples.clone();
            tokio::spawn(async move {
                while let Some(m) = subscription.next().await {
                    let received = Utc::now();
                    if let Ok(e) = serde_json::from_slice::<ledger_events::PublicEvent>(&m.payload)
                    {
                        let ms = (received - e.recorded_at).num_microseconds().unwrap_or(0) as f64
                            / 1000.0;
                        samples.lock().expect("samples").push(ms);
                    }
                }
            })
        };
        // Committed events get their positions from the sequencer, as under `serve`.
        let sequencer = ledger_store::sequencer::Background::spawn(pool.clone());
        let (stop_tx, stop) = watch::channel(false);
        let live = tokio::spawn(run_sink(
            pool.clone(),
            store.clone(),
            ledger.clone(),
            sink_name.clone(),
            Sink::Nats(
                connect()
                    .await
                    .map_err(|e| CliError::environment(e.to_string()))?,
            ),
            RelayConfig {
                once: false,
                ..config.clone()
            },
            stop,
        ));
        let users: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
        // The relay first computes the balances at its position (a snapshot and the tail): wait until a
        // probe event comes through, so that the measure is of delivery, not of that start.
        let probe = CommandEnvelope {
            command_id: Uuid::new_v4(),
            actor: Actor::User(users[0]),
            at: Utc::now(),
            command: Command::InitiateDeposit {
                payment_id: Uuid::new_v4(),
                amount: Money::from_minor(100, Currency::USD),
                gateway: Gateway::Stripe,
                fund: None,
            },
        };
        executor
            .execute(&probe, None)
            .await
            .context("probe command")?;
        let ready = Instant::now();
        while samples.lock().expect("samples").is_empty() {
            if ready.elapsed() > Duration::from_secs(300) {
                return Err(CliError::environment(
                    "the live relay delivered nothing within 300 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "live relay ready after {:.1} s",
            ready.elapsed().as_secs_f64()
        );
        samples.lock().expect("samples").clear();
        let interval = Duration::from_secs_f64(2.0 / args.rate.max(2) as f64);
        let until = Instant::now() + Duration::from_secs(args.load_seconds);
        let mut tick = tokio::time::interval(interval);
        let mut sent = 0_u64;
        while Instant::now() < until {
            tick.tick().await;
            let (user, payment) = (users[(sent as usize) % users.len()], Uuid::new_v4());
            let amount = Money::from_minor(10_000, Currency::USD);
            let commands = [
                (
                    Actor::User(user),
                    Command::InitiateDeposit {
                        payment_id: payment,
                        amount,
                        gateway: Gateway::Stripe,
                        fund: None,
                    },
                ),
                (
                    Actor::Gateway(Gateway::Stripe),
                    Command::ConfirmDeposit {
                        payment_id: payment,
                        amount,
                        gateway_fee: None,
                        occurred_at: None,
                        fee_in_suspense: None,
                    },
                ),
            ];
            for (actor, command) in commands {
                let env = CommandEnvelope {
                    command_id: Uuid::new_v4(),
                    actor,
                    at: Utc::now(),
                    command,
                };
                executor.execute(&env, None).await.context("load command")?;
                sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop_tx.send(true);
        sequencer.stop().await;
        match live.await {
            Ok(Ok(r)) => eprintln!("live relay: {} events delivered", r.events),
            Ok(Err(e)) => return Err(CliError::environment(format!("live relay: {e}"))),
            Err(e) => return Err(CliError::environment(format!("live relay: {e}"))),
        }
        collector.abort();
        let mut lat = samples.lock().expect("samples").clone();
        lat.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99, max) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0),
        );
        eprintln!(
            "commit to publish under {} commands/s for {} s: {} events, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            args.rate,
            args.load_seconds,
            lat.len()
        );
        out["latency_samples"] = serde_json::json!(lat.len());
        out["commit_to_publish_p50_ms"] = serde_json::json!(p50);
        out["commit_to_publish_p99_ms"] = serde_json::json!(p99);
        out["commands_sent"] = serde_json::json!(sent);
    }
    let sink = connect()
        .await
        .map_err(|e| CliError::environment(e.to_string()))?;
    sink.delete_stream(&limits.name)
        .await
        .map_err(|e| CliError::environment(e.to_string()))?;
    sqlx::query("delete from ledger.event_cursors where ledger_id = $1 and sink = $2")
        .bind(&ledger)
        .bind(&sink_name)
        .execute(&pool)
        .await
        .context("cannot remove the benchmark's cursor")?;
    if args.json {
        println!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}
