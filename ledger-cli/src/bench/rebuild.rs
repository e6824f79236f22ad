//! `bench rebuild`: (1) every projection rebuilt from zero on the selected database (all ledgers; seed a
//! large one first with `bench seed`), reported as events folded and written per second, all tables;
//! (2) live lag: the workers tail the log while an open-loop load of `--rate` commands/s (deposits
//! initiated then confirmed: a payment stream, a wallet, a journal entry) goes through group commit; the
//! lag of an event is the time from its sequencing to the commit of the batch that projects it.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money};
use ledger_projections::{BatchReport, Projection, RunnerConfig};
use ledger_store::{EventStore, GroupCommitConfig, GroupCommitter, PgEventStore};
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

/// Load units (two commands each) in flight at once; more are counted as not offered.
const IN_FLIGHT_MAX: usize = 20_000;
/// Lag samples kept (the first ones; enough for a percentile over a 60 s run at the goal rate).
const LAG_SAMPLES_MAX: usize = 5_000_000;
const USERS: u64 = 1_000;
const TICK: Duration = Duration::from_millis(10);

#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// Offered load during the live-lag phase, in commands per second.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the live-lag phase, in seconds (0 skips it).
    #[arg(long, default_value_t = 20)]
    load_seconds: u64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub async fn run(global: &Global, args: RebuildArgs) -> Result<ExitCode, CliError> {
    let (pool, executor) = global.executor().await?;
    let store = PgEventStore::new(pool.clone());
    let head = store.head_position(&global.ledger).await.context("head")?;
    eprintln!(
        "rebuilding every projection ({head} events on ledger {:?})...",
        global.ledger
    );
    let report = ledger_projections::rebuild::rebuild(&pool, &Projection::ALL)
        .await
        .context("rebuild failed")?;
    let seconds = report.total.as_secs_f64();
    let events_per_s = report.events as f64 / seconds;
    eprintln!(
        "rebuilt {} events in {seconds:.1} s ({events_per_s:.0} events/s): fold+COPY {:.1} s, index {:.1} s, swap {:.2} s",
        report.events,
        report.fold_and_copy.as_secs_f64(),
        report.index.as_secs_f64(),
        report.swap.as_secs_f64()
    );
    let mut out = serde_json::json!({
        "rebuild_events": report.events,
        "rebuild_seconds": seconds,
        "rebuild_events_per_s": events_per_s,
        "rebuild_fold_copy_seconds": report.fold_and_copy.as_secs_f64(),
        "rebuild_index_seconds": report.index.as_secs_f64(),
        "rebuild_swap_seconds": report.swap.as_secs_f64(),
        "rebuild_rows": report.rows.iter().map(|(t, n)| (t.clone(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        "goal_rebuild_events_per_s": 30_000,
    });
    if args.load_seconds > 0 {
        let lag = live_lag(global, pool, executor, &args).await?;
        if let (Some(out), serde_json::Value::Object(lag)) = (out.as_object_mut(), lag) {
            out.extend(lag);
        }
    }
    out["peak_rss_mb"] = serde_json::json!(super::peak_rss_mb());
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

async fn live_lag(
    global: &Global,
    pool: sqlx::PgPool,
    executor: Arc<ledger_store::Executor>,
    args: &RebuildArgs,
) -> Result<serde_json::Value, CliError> {
    let (stop_tx, stop) = watch::channel(false);
    let (reports_tx, mut reports) = mpsc::channel::<BatchReport>(100_000);
    let workers = tokio::spawn(ledger_projections::run_all(
        pool.clone(),
        vec![global.ledger.clone()],
        Projection::ALL.to_vec(),
        RunnerConfig::default(),
        stop.clone(),
        Some(reports_tx),
    ));
    let collector = tokio::spawn(async move {
        let mut lags: Vec<(Projection, i64)> = Vec::new();
        while let Some(report) = reports.recv().await {
            for lag in report.lags_ms {
                if lags.len() < LAG_SAMPLES_MAX {
                    lags.push((report.projection, lag));
                }
            }
        }
        lags
    });
    // Let the workers reach the head before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let committer = GroupCommitter::spawn(executor, GroupCommitConfig::default());
    let accepted = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let started = Instant::now();
    let units_per_tick = (args.rate / 2).max(1) * TICK.as_millis() as u64 / 1_000;
    let mut ticker = tokio::time::interval(TICK);
    let mut unit = 0_u64;
    while started.elapsed() < Duration::from_secs(args.load_seconds) {
        ticker.tick().await;
        for _ in 0..units_per_tick.max(1) {
            unit += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                dropped.fetch_add(2, Ordering::Relaxed);
                continue;
            };
            let (committer, accepted) = (committer.clone(), accepted.clone());
            let user = Uuid::from_u128(
                0xbe9c_0000_0000_0000_0000_0000_0000_0000 | u128::from(unit % USERS),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let payment_id = Uuid::new_v4();
                for (actor, command) in [
                    (
                        Actor::User(user),
                        Command::InitiateDeposit {
                            payment_id,
                            amount: usd(10_000),
                            gateway: Gateway::Stripe,
                            fund: None,
                        },
                    ),
                    (
                        Actor::Gateway(Gateway::Stripe),
                        Command::ConfirmDeposit {
                            payment_id,
                            amount: usd(10_000),
                            gateway_fee: Some(usd(320)),
                            occurred_at: None,
                            fee_in_suspense: None,
                        },
                    ),
                ] {
                    let env = CommandEnvelope {
                        command_id: Uuid::new_v4(),
                        actor,
                        at: Utc::now(),
                        command,
                    };
                    match committer.submit(env, None).await {
                        Ok(outcome) if outcome.is_accepted() => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            });
        }
    }
    let load = started.elapsed();
    // Wait for the load to drain and the workers to reach the head (bounded).
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        slots.acquire_many(IN_FLIGHT_MAX as u32),
    )
    .await;
    let store = PgEventStore::new(pool.clone());
    let head = store.head_position(&global.ledger).await.context("head")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = ledger_projections::runner::status(&pool)
            .await
            .context("status")?;
        let behind = status
            .iter()
            .filter(|s| s.ledger == global.ledger)
            .any(|s| s.position < head);
        if !behind || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_tx.send(true);
    workers
        .await
        .map_err(|e| CliError::environment(format!("workers: {e}")))?
        .context("a projection worker failed")?;
    let mut lags = collector
        .await
        .map_err(|e| CliError::environment(format!("collector: {e}")))?;
    lags.sort_by_key(|(_, lag)| *lag);
    let all: Vec<i64> = lags.iter().map(|(_, lag)| *lag).collect();
    let mut per_projection = serde_json::Map::new();
    for projection in Projection::ALL {
        let mine: Vec<i64> = lags
            .iter()
            .filter(|(p, _)| *p == projection)
            .map(|(_, l)| *l)
            .collect();
        per_projection.insert(projection.name().into(), serde_json::json!({
            "p50_ms": percentile(&mine, 0.50), "p99_ms": percentile(&mine, 0.99), "max_ms": mine.last().copied().unwrap_or(0),
        }));
    }
    let commands = accepted.load(Ordering::Relaxed);
    let achieved = commands as f64 / load.as_secs_f64();
    eprintln!(
        "live: offered {} commands/s for {:.0} s, accepted {achieved:.0}/s; lag p50 {} ms, p99 {} ms, max {} ms ({} samples)",
        args.rate,
        load.as_secs_f64(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0),
        all.len()
    );
    Ok(serde_json::json!({
        "live_offered_commands_per_s": args.rate,
        "live_accepted_commands_per_s": achieved,
        "live_not_offered_commands": dropped.load(Ordering::Relaxed),
        "live_seconds": load.as_secs_f64(),
        "live_lag_samples": all.len(),
        "live_lag_p50_ms": percentile(&all, 0.50),
        "live_lag_p99_ms": percentile(&all, 0.99),
        "live_lag_max_ms": all.last().copied().unwrap_or(0),
        "live_lag_by_projection": per_projection,
        "goal_live_lag_p99_ms": 1_000,
    }))
}
