//! `escrow-ledger`: the operators' and accountants' command line. See `escrow-ledger --help`.
//!
//! Exit codes: 0 ok; 1 findings or rejections (a command refused, `verify` found a problem);
//! 2 usage or environment errors (bad arguments, unreachable database, unreadable input).

mod apply;
mod bench;
mod db;
mod demo;
mod events;
mod exit;
mod export;
mod ingest;
#[cfg(test)]
mod journal_columns_test;
mod ledgers;
mod month_end;
mod outbox;
mod projections;
#[cfg(test)]
mod readme_cli_test;
mod replay;
mod reports;
mod scenario;
mod sequencer;
mod serve;
mod shutdown;
mod suspense;
mod timers;
mod typescript;
mod verify;
mod verify_deep;

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
    /// Executes commands given as JSON Lines (a file or `-`); one result per line.
    #[command(
        after_help = "Example:\n  echo '{\"actor\": {\"kind\": \"user\", \"id\": \"00000000-0000-0000-0000-00000000b0b0\"}, \"command\": {\"type\": \"fund_milestone\", \"project_id\": \"00000000-0000-0000-0000-000000000001\", \"milestone\": 1}}' | escrow-ledger apply -"
    )]
    Apply(apply::ApplyArgs),
    /// Debit and credit per account, one block per currency, replayed from the log.
    #[command(
        after_help = "Examples:\n  escrow-ledger trial-balance\n  escrow-ledger trial-balance --as-of 2026-01-31T23:59:59Z --format json\n  escrow-ledger trial-balance --position 1000 --currency USD"
    )]
    TrialBalance(reports::ReportArgs),
    /// Every account's debits, credits and balance on its normal side.
    Balances(reports::ReportArgs),
    /// The general journal: each entry with its source event and gateway reference.
    #[command(
        after_help = "Examples:\n  escrow-ledger journal --account Liabilities:Escrow\n  escrow-ledger journal --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z --format csv"
    )]
    Journal(reports::JournalArgs),
    /// One account's postings with a running balance.
    #[command(
        after_help = "Example:\n  escrow-ledger register Liabilities:Users:00000000-0000-0000-0000-00000000b0b0:Available"
    )]
    Register(reports::RegisterArgs),
    /// Assets, liabilities and retained earnings per currency.
    BalanceSheet(reports::ReportArgs),
    /// Revenue, expenses and net income per currency.
    IncomeStatement(reports::ReportArgs),
    /// Checks the whole ledger: invariants, hash chain (and seal), snapshots, projections. Silent when sound.
    #[command(
        after_help = "Examples:\n  escrow-ledger verify\n  escrow-ledger verify --seal seals/2026-01.json"
    )]
    Verify(verify::VerifyArgs),
    /// Writes the chain head at the current position, to keep outside the database.
    #[command(after_help = "Example:\n  escrow-ledger seal --output seals/2026-01.json")]
    Seal(verify::SealArgs),
    /// The journal as CSV, JSON, an hledger journal or a beancount file.
    #[command(
        after_help = "Examples:\n  escrow-ledger export --to hledger --output books.journal && hledger -f books.journal balance\n  escrow-ledger export --to beancount --as-of 2026-01-31T23:59:59Z --output books.beancount && bean-check books.beancount"
    )]
    Export(export::ExportArgs),
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
    /// Writes TypeScript types: the read tables and views (`Database`, from the catalog) and serve's API.
    Typescript(typescript::TypescriptArgs),
    /// Prints `serve`'s OpenAPI 3.1 document (the same as its `GET /openapi.json`).
    Openapi,
    /// The payment workers' HTTP API: gateway callbacks, commands, the outbox (see README).
    Serve(serve::ServeArgs),
    /// Payouts and card refunds the ledger decided, for workers to execute (lease-based claims).
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// Events out: relay the log to NATS JetStream and signed webhooks; endpoints, deliveries, redelivery.
    #[command(subcommand)]
    Events(events::EventsCommand),
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
    /// The background sequencer: positions for committed events no writer sequenced (a writer that died).
    #[command(subcommand)]
    Sequencer(sequencer::SequencerCommand),
    /// Compares a gateway statement with the ledger: matched, amount_mismatch, only_at_gateway,
    /// only_in_ledger, and the clearing balance against the statement's net; the run is recorded in the log.
    /// Exit 0 when everything matched, 1 when anything did not, 2 for an unreadable statement.
    Reconcile(month_end::ReconcileArgs),
    /// Closed periods (UTC calendar months): close, re-open, list.
    #[command(subcommand)]
    Period(month_end::PeriodCommand),
    /// One user's statement for a month or a range of months: opening balance, movements with their
    /// counterpart and reference, closing balance, per currency.
    Statement(month_end::StatementArgs),
    /// Deadlines the engine keeps (auto-approval, expiries, maturation, time-outs): fire them, list them.
    #[command(subcommand)]
    Timers(timers::TimersCommand),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    exit::quiet_on_closed_stdout();
    let cli = Cli::parse();
    // Colour only for a person at a terminal: logs sent to a file or a collector carry no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ESCROW_LEDGER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(colour)
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
        Command::Apply(args) => apply::run(&cli.global, args).await,
        Command::TrialBalance(args) => reports::trial_balance(&cli.global, args).await,
        Command::Balances(args) => reports::balances(&cli.global, args).await,
        Command::Journal(args) => reports::journal(&cli.global, args).await,
        Command::Register(args) => reports::register(&cli.global, args).await,
        Command::BalanceSheet(args) => reports::balance_sheet(&cli.global, args).await,
        Command::IncomeStatement(args) => reports::income_statement(&cli.global, args).await,
        Command::Verify(args) => verify::verify(&cli.global, args).await,
        Command::Seal(args) => verify::seal(&cli.global, args).await,
        Command::Export(args) => export::run(&cli.global, args).await,
        Command::Ledgers(cmd) => ledgers::run(&cli.global, cmd).await,
        Command::Demo => demo::run(&cli.global).await,
        Command::Projections(cmd) => projections::run(&cli.global, cmd).await,
        Command::Bench(cmd) => bench::run(&cli.global, cmd).await,
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Typescript(args) => typescript::run(&cli.global, args).await,
        Command::Openapi => {
            let doc = serve::openapi::document();
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("the document serializes")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox(cmd) => outbox::run(&cli.global, cmd).await,
        Command::Events(cmd) => events::run(&cli.global, cmd).await,
        Command::Suspense(cmd) => suspense::run(&cli.global, cmd).await,
        Command::Anomalies { json, limit } => suspense::anomalies(&cli.global, json, limit).await,
        Command::Ingest(args) => ingest::run(&cli.global, args).await,
        Command::Sequencer(cmd) => sequencer::run(&cli.global, cmd).await,
        Command::Reconcile(args) => month_end::reconcile_run(&cli.global, args).await,
        Command::Period(cmd) => month_end::period(&cli.global, cmd).await,
        Command::Statement(args) => month_end::statement(&cli.global, args).await,
        Command::Timers(cmd) => timers::run(&cli.global, cmd).await,
    }
}
