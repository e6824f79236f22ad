//! `projections run | status | rebuild`: the read tables in schema `escrow` (see ledger-projections).

use ledger_store::roles::RunRole;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledger_projections::{Projection, RunnerConfig};
use ledger_store::{EventStore, PgEventStore};
use sqlx::PgPool;

use crate::db::Global;
use crate::exit::{CliError, Context};

#[derive(Subcommand, Debug)]
pub enum ProjectionsCommand {
    /// Catches up from each checkpoint, then follows the log live (Ctrl-C stops).
    #[command(
        after_help = "Examples:\n  escrow-ledger projections run\n  escrow-ledger projections run --all-ledgers --projection journal --projection audit\n  escrow-ledger projections run --until-caught-up"
    )]
    Run(RunArgs),
    /// Each projection's checkpoint against the log head.
    Status {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Rebuilds projections from zero into shadow tables and swaps them in (every ledger).
    Rebuild {
        /// Projections to rebuild (default: all).
        #[arg(long = "projection", value_parser = projection_parser())]
        projections: Vec<Projection>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Projections to run (default: all).
    #[arg(long = "projection", value_parser = projection_parser())]
    projections: Vec<Projection>,
    /// Run for every ledger of the database, not only `--ledger`.
    #[arg(long)]
    all_ledgers: bool,
    /// Events per transaction.
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Stop once every projection has reached the log head.
    #[arg(long)]
    until_caught_up: bool,
}

/// The projections' names as clap's possible values, from `Projection::ALL` (so `--help` lists every one).
pub fn projection_parser() -> impl clap::builder::TypedValueParser<Value = Projection> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Projection::ALL.map(|p| p.name()))
        .map(|name| Projection::from_name(&name).expect("a name from Projection::ALL"))
}

fn or_all(projections: Vec<Projection>) -> Vec<Projection> {
    if projections.is_empty() {
        Projection::ALL.to_vec()
    } else {
        projections
    }
}

pub async fn run(global: &Global, command: ProjectionsCommand) -> Result<ExitCode, CliError> {
    match command {
        ProjectionsCommand::Run(args) => run_workers(global, args).await,
        ProjectionsCommand::Status { json } => status(global, json).await,
        ProjectionsCommand::Rebuild { projections, json } => {
            let pool = global.pool().await?;
            let report = ledger_projections::rebuild::rebuild(&pool, &or_all(projections))
                .await
                .context("rebuild failed")?;
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                println!(
                    "rebuilt {} from {} events in {} ms (fold+COPY {} ms, index {} ms, swap {} ms)",
                    report.projections.join(", "),
                    report.events,
                    report.total.as_millis(),
                    report.fold_and_copy.as_millis(),
                    report.index.as_millis(),
                    report.swap.as_millis()
                );
                for (table, rows) in &report.rows {
                    println!("  escrow.{table}: {rows} rows");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn ledgers_to_run(
    global: &Global,
    pool: &PgPool,
    all: bool,
) -> Result<Vec<String>, CliError> {
    let store = PgEventStore::new(pool.clone());
    let known = store.list_ledgers().await.context("cannot list ledgers")?;
    if all {
        return Ok(known);
    }
    if !known.contains(&global.ledger) {
        return Err(CliError::environment(format!(
            "unknown ledger {:?} (known: {})",
            global.ledger,
            known.join(", ")
        )));
    }
    Ok(vec![global.ledger.clone()])
}

async fn run_workers(global: &Global, args: RunArgs) -> Result<ExitCode, CliError> {
    // Writer sessions (the background sequencer runs here too); each batch takes escrow_projector with
    // `set local role` for its writes.
    let pool = global.pool_as(RunRole::Writer).await?;
    let ledgers = ledgers_to_run(global, &pool, args.all_ledgers).await?;
    let projections = or_all(args.projections);
    let config = RunnerConfig {
        batch_events_max: args.batch_size,
        ..RunnerConfig::default()
    };
    if args.until_caught_up {
        // Events a dead writer left committed but unsequenced are part of the log to catch up with.
        ledger_store::sequencer::sequence_all(&pool)
            .await
            .context("cannot sequence the committed events")?;
        for ledger in &ledgers {
            let positions = ledger_projections::catch_up_all(&pool, ledger, &projections, &config)
                .await
                .context(format!("projections of ledger {ledger:?} failed"))?;
            for (projection, position) in positions {
                println!("{ledger} {projection}: caught up at position {position}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stop = crate::shutdown::watch_requested();
    eprintln!(
        "escrow-ledger: running {} on {} (Ctrl-C stops)",
        projections
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        ledgers.join(", ")
    );
    // The projections follow the log; the background sequencer keeps it complete when no writer runs.
    let sequencer = ledger_store::sequencer::Background::spawn(pool.clone());
    let ran = ledger_projections::run_all(pool, ledgers, projections, config, stop, None).await;
    sequencer.stop().await;
    ran.context("a projection worker stopped")?;
    Ok(ExitCode::SUCCESS)
}

async fn status(global: &Global, json: bool) -> Result<ExitCode, CliError> {
    let pool = global.pool_as(RunRole::Auditor).await?;
    let rows = ledger_projections::runner::status(&pool)
        .await
        .context("cannot read the checkpoints")?;
    for row in rows {
        if json {
            println!("{}", serde_json::to_string(&row).unwrap_or_default());
        } else {
            println!(
                "{:<12} {:<12} position {:>10} of {:>10} (behind {})",
                row.ledger,
                row.projection,
                row.position,
                row.head,
                row.head - row.position
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
