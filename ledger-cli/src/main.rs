//! `escrow-ledger`: the operators' and accountants' command line. See `escrow-ledger --help`.
//!
//! Exit codes: 0 ok; 1 findings or rejections (a command refused, `verify` found a problem);
//! 2 usage or environment errors (bad arguments, unreachable database, unreadable input).

mod bench;
mod db;
mod demo;
mod exit;
mod ingest;
mod ledgers;
mod outbox;
mod projections;
mod scenario;
mod serve;
mod suspense;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::CliError;

/// Event-sourced escrow and booking ledger: replay history, check it, feed it, benchmark it.
#[derive(Parser, Debug)]
#[command(name = "escrow-ledger", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: db::Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  escrow-ledger db migrate                      # private cluster when no DATABASE_URL is set
  escrow-ledger --database-url postgres://postgres@127.0.0.1:5432/escrow db status
  escrow-ledger ledgers create acme-marketplace
  escrow-ledger bench seed --events 1000000
  escrow-ledger bench append --writers 8 --json";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The database: schema, status, and the private cluster used when no URL is configured.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Ledgers (one per marketplace) in this database.
    #[command(subcommand)]
    Ledgers(ledgers::LedgersCommand),
    /// A marketplace story end to end (booking, escrow project, dispute, refund, payouts), projected, with
    /// the balances. Each run adds a fresh, independent story to the ledger.
    #[command(
        after_help = "Example:\n  escrow-ledger demo                  # no DATABASE_URL: the private cluster"
    )]
    Demo,
    /// Read tables in schema `escrow`: run the workers, show checkpoints, rebuild from zero.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// Benchmarks that print figures (see README: Benchmarks).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The payment workers' HTTP API: gateway callbacks, commands, the outbox (see README).
    Serve(serve::ServeArgs),
    /// Payouts and card refunds the ledger decided, for workers to execute (lease-based claims).
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// Unmatched incoming money held in Liabilities:Suspense: list, assign to a wallet, return.
    #[command(subcommand)]
    Suspense(suspense::SuspenseCommand),
    /// Anomalies: late failures, successes after failure, unmatched or refused callbacks.
    Anomalies {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Replays captured callback deliveries (JSON Lines) through the same ingestion as `serve`.
    Ingest(ingest::IngestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ESCROW_LEDGER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return exit::report(&CliError::environment(format!(
                "cannot start the runtime: {e}"
            )));
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Db(cmd) => db::run(&cli.global, cmd).await,
        Command::Ledgers(cmd) => ledgers::run(&cli.global, cmd).await,
        Command::Demo => demo::run(&cli.global).await,
        Command::Projections(cmd) => projections::run(&cli.global, cmd).await,
        Command::Bench(cmd) => bench::run(&cli.global, cmd).await,
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Outbox(cmd) => outbox::run(&cli.global, cmd).await,
        Command::Suspense(cmd) => suspense::run(&cli.global, cmd).await,
        Command::Anomalies { json, limit } => suspense::anomalies(&cli.global, json, limit).await,
        Command::Ingest(args) => ingest::run(&cli.global, args).await,
    }
}
