// Benchmark figures (rates, percentiles) are measurements, not money: floats are fine here and only here.
//! `bench seed | append`: benchmarks that print figures. Heavy: run on demand, not in CI.
#![allow(clippy::float_arithmetic)]

mod append;
mod callbacks;
mod cpu;
mod events;
mod rebuild;
mod replay;
mod seed;

use std::process::ExitCode;

use clap::Subcommand;

use crate::db::Global;
use crate::exit::CliError;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Builds a realistic ledger of about N events with COPY (for the other benchmarks).
    Seed(seed::SeedArgs),
    /// Concurrent writers funding and releasing milestones through group commit; prints throughput.
    Append(append::AppendArgs),
    /// Replay and verify speed, trial balance as of past moments, peak memory (on a seeded ledger).
    Replay(replay::ReplayArgs),
    /// Rebuild throughput of every projection, then live projection lag under an offered command load.
    Rebuild(rebuild::RebuildArgs),
    /// Signed callbacks through the real HTTP server from concurrent senders; prints callbacks/s, p50/p99.
    /// Writes into a new ledger `bench-callbacks-<time>` (not `--ledger`), which stays: run it on a scratch
    /// database.
    Callbacks(callbacks::CallbacksArgs),
    /// The events relay to NATS JetStream: events/s over the whole log, then commit-to-publish latency.
    Events(events::EventsArgs),
}

pub async fn run(global: &Global, command: BenchCommand) -> Result<ExitCode, CliError> {
    match command {
        BenchCommand::Seed(args) => seed::run(global, args).await,
        BenchCommand::Append(args) => append::run(global, args).await,
        BenchCommand::Rebuild(args) => rebuild::run(global, args).await,
        BenchCommand::Replay(args) => replay::run(global, args).await,
        BenchCommand::Callbacks(args) => callbacks::run(global, args).await,
        BenchCommand::Events(args) => events::run(global, args).await,
    }
}

/// Peak resident memory of this process, in MB (Linux `VmHWM`).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kb as f64 / 1024.0
}
