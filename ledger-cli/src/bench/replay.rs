//! `bench replay`: on a seeded ledger, how fast the log replays through the core (a trial balance from zero,
//! and a full `verify`), how long `trial-balance --as-of` takes at past moments (balance snapshot + tail),
//! and the peak memory of a full replay at half and at all of the log (flat = memory does not follow length).

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use ledger_core::Balances;
use ledger_store::{EventStore, PgEventStore};

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::replay::{self, AsOf};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// How many past moments to ask `trial-balance --as-of` about.
    #[arg(long, default_value_t = 10)]
    as_of_samples: i64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// A trial balance from position 0, ignoring snapshots: the raw replay speed.
async fn replay_from_zero(
    store: &PgEventStore,
    ledger: &str,
    until: i64,
) -> Result<(f64, Balances), CliError> {
    let started = Instant::now();
    let mut balances = Balances::default();
    let bar = replay::progress(until, "replaying");
    replay::scan(store, ledger, 0, until, &bar, |d| {
        if let Some(entry) = d.event.entry() {
            balances.apply(entry);
        }
        Ok(())
    })
    .await?;
    Ok((started.elapsed().as_secs_f64(), balances))
}

/// `verify` (or `verify --deep`) of the whole ledger: its exit code and seconds.
async fn timed_verify(global: &Global, deep: bool) -> Result<(ExitCode, f64), CliError> {
    let started = Instant::now();
    let args = crate::verify::VerifyArgs {
        seal: None,
        manual: false,
        deep,
        gateway_config: None,
    };
    let code = crate::verify::verify(global, args).await?;
    Ok((code, started.elapsed().as_secs_f64()))
}

pub async fn run(global: &Global, args: ReplayArgs) -> Result<ExitCode, CliError> {
    let pool = global.pool().await?;
    let store = PgEventStore::new(pool.clone());
    crate::db::require_ledger(&store, &global.ledger).await?;
    let head = store
        .head_position(&global.ledger)
        .await
        .context("cannot read the head")?;
    if head == 0 {
        return Err(CliError::environment(
            "the ledger is empty: run `escrow-ledger bench seed` first",
        ));
    }
    let (half_s, _) = replay_from_zero(&store, &global.ledger, head / 2).await?;
    let rss_half = super::peak_rss_mb();
    let (full_s, balances) = replay_from_zero(&store, &global.ledger, head).await?;
    let rss_full = super::peak_rss_mb();
    let imbalance: i128 = balances
        .imbalance_by_currency()
        .values()
        .map(|v| v.abs())
        .sum();
    // The balance snapshots a ledger takes every `balances::snapshot_every()` positions (its writers take
    // them as they pass; a seeded ledger may predate them, so take the missing ones here, as the owner).
    let every = ledger_store::balances::snapshot_every();
    for position in (1..=head / every).map(|n| n * every) {
        ledger_store::balances::take(&pool, &global.ledger, position)
            .await
            .context("cannot take a balance snapshot")?;
    }
    let mut worst_ms = 0.0_f64;
    for i in 1..=args.as_of_samples {
        let position = head * i / (args.as_of_samples + 1) + 7;
        let t = store
            .position_at_or_before(&global.ledger, chrono::Utc::now())
            .await
            .context("as-of")?;
        let started = Instant::now();
        let view = AsOf {
            position: Some(position.min(t)),
            ..AsOf::default()
        };
        replay::balances_at(&pool, &store, &global.ledger, position.min(t), &view).await?;
        worst_ms = worst_ms.max(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (verify, verify_s) = timed_verify(global, false).await?;
    let (deep, deep_s) = timed_verify(global, true).await?;
    let report = serde_json::json!({
        "events": head,
        "replay_events_per_s": head as f64 / full_s,
        "replay_seconds": full_s,
        "replay_half_seconds": half_s,
        "verify_events_per_s": head as f64 / verify_s,
        "verify_seconds": verify_s,
        "verify_clean": verify == ExitCode::SUCCESS,
        "verify_deep_events_per_s": head as f64 / deep_s,
        "verify_deep_seconds": deep_s,
        "verify_deep_clean": deep == ExitCode::SUCCESS,
        "as_of_samples": args.as_of_samples,
        "as_of_worst_ms": worst_ms,
        "peak_rss_mb_after_half_replay": rss_half,
        "peak_rss_mb_after_full_replay": rss_full,
        "peak_rss_mb_after_verify": super::peak_rss_mb(),
        "trial_balance_imbalance_minor": imbalance.to_string(),
    });
    eprintln!(
        "replay {:.0} events/s, verify {:.0} events/s, as-of worst {worst_ms:.0} ms, peak RSS {rss_half:.0} MB (half) / {rss_full:.0} MB (full) / {:.0} MB (verify)",
        head as f64 / full_s,
        head as f64 / verify_s,
        super::peak_rss_mb()
    );
    if args.json {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
