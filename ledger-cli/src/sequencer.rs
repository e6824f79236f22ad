//! `sequencer run`: the background sequencer on its own (see `ledger_store::sequencer`). `serve` and
//! `projections run` run the same loop; run this one where neither runs (for example beside `apply` and
//! `ingest` feeders), so that events a dead writer left are sequenced within a second.

use ledger_store::roles::RunRole;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::db::Global;
use crate::exit::CliError;

#[derive(Subcommand, Debug)]
pub enum SequencerCommand {
    /// Sequences every ledger's committed events until Ctrl-C or SIGTERM.
    #[command(after_help = "Example:\n  escrow-ledger sequencer run")]
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Milliseconds between two looks at the queue (10..=1000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=1000))]
    poll_ms: u64,
}

pub async fn run(global: &Global, command: SequencerCommand) -> Result<ExitCode, CliError> {
    let SequencerCommand::Run(args) = command;
    let pool = global.pool_as(RunRole::Writer).await?;
    let background = ledger_store::sequencer::Background::spawn_with_interval(
        pool,
        Duration::from_millis(args.poll_ms),
    );
    eprintln!(
        "escrow-ledger: sequencing every ledger every {} ms (Ctrl-C stops)",
        args.poll_ms
    );
    crate::shutdown::requested().await;
    background.stop().await;
    Ok(ExitCode::SUCCESS)
}
