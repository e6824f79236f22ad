//! `timers run | list`: the worker that fires the deadlines the engine keeps (`ledger_core::deadlines`).
//!
//! A pass: sequence what dead writers left, bring the `deadlines` projection (`escrow.deadlines`) up to the
//! log's head, take the pending deadlines due at `now` in due order (bounded batches), and send each one's
//! command through the executor under the key `deadline:<id>`, at its due time, as the system. Outcomes:
//! `fired` (this worker's command was accepted), `duplicate` (the key was recorded by another worker or an
//! earlier run: nothing appended), `closed` (refused for good, now or by an earlier run: the engine is asked
//! to `close_deadline`, which decides the command again and appends `DeadlineClosed`, so the row leaves the
//! pending ones and no later batch reads it), `failed` (a transient refusal or an error; tried again by a
//! later pass, with backoff in the loop). A pass repeats until nothing due is left (firing may start clocks
//! already due, e.g. a release whose maturation passed during downtime). Two workers, a restart or a replay
//! never fire twice: the executor records the outcome under the key in the transaction that appends the
//! events.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use ledger_core::deadlines::{Deadline, DeadlineKind};
use ledger_core::ids::derived_id;
use ledger_core::{Actor, Command, CommandEnvelope, StreamId};
use ledger_projections::{Projection, RunnerConfig};
use ledger_store::executor::is_transient;
use ledger_store::roles::RunRole;
use ledger_store::{CommandOutcome, Executor};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

/// Deadlines taken per query of a pass.
pub const BATCH_DEADLINES_MAX: i64 = 500;
/// Queries per pass (each after the previous batch fired): bounds one pass's work.
pub const BATCHES_PER_PASS_MAX: usize = 64;
/// Attempts at bringing the deadlines projection up to date when another worker moves its checkpoint.
const CATCH_UP_ATTEMPTS_MAX: u32 = 8;
/// Pause between two passes of `timers run` (and of the timers inside `serve`).
pub const INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Longest backoff for a deadline that failed (doubling from the interval).
const BACKOFF_MAX_MS: u64 = 60_000;
/// Deadlines the loop remembers a backoff for.
const BACKOFF_ENTRIES_MAX: usize = 100_000;
/// Rows `timers list` prints at most.
const LIST_ROWS_MAX: i64 = 10_000;

#[derive(Subcommand, Debug)]
pub enum TimersCommand {
    /// Fires due deadlines: a loop (Ctrl-C or SIGTERM stops), or one catch-up with `--once`.
    #[command(
        after_help = "Examples:\n  escrow-ledger timers run\n  escrow-ledger timers run --once\n  escrow-ledger timers run --once --now 2026-01-20T00:00:00Z"
    )]
    Run(RunArgs),
    /// Pending deadlines with their due times.
    #[command(
        after_help = "Examples:\n  escrow-ledger timers list\n  escrow-ledger timers list --due-before 2026-02-01T00:00:00Z --format json"
    )]
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Fire everything due at `--now`, print one JSON line per deadline handled, and exit.
    #[arg(long)]
    once: bool,
    /// The time deadlines are due against (with `--once`; default: the clock).
    #[arg(long, requires = "once")]
    now: Option<DateTime<Utc>>,
    /// Pause between passes of the loop, in milliseconds.
    #[arg(long, default_value_t = INTERVAL_MS_DEFAULT)]
    interval_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only deadlines due before this time.
    #[arg(long)]
    due_before: Option<DateTime<Utc>>,
    /// Every deadline, whatever its status (pending, fired, cancelled, closed); default: pending only.
    #[arg(long)]
    all: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What a pass did with one deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub deadline: Deadline,
    pub outcome: &'static str,
    pub detail: Option<String>,
}

impl Handled {
    pub fn json(&self) -> serde_json::Value {
        let d = &self.deadline;
        let mut line = json!({
            "deadline_id": d.id,
            "kind": d.kind.name(),
            "stream": d.stream.to_string(),
            "due_at": d.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "outcome": self.outcome,
        });
        if let Some(detail) = &self.detail {
            line["detail"] = json!(detail);
        }
        line
    }
}

pub async fn run(global: &Global, command: TimersCommand) -> Result<ExitCode, CliError> {
    match command {
        TimersCommand::Run(args) => run_timers(global, args).await,
        TimersCommand::List(args) => list(global, args).await,
    }
}

async fn run_timers(global: &Global, args: RunArgs) -> Result<ExitCode, CliError> {
    let (pool, executor) = global.executor_as(RunRole::Writer).await?;
    if args.once {
        let now = args.now.unwrap_or_else(Utc::now);
        let mut failed = 0;
        let handled = pass(&pool, &executor, now, &mut |h| {
            failed += usize::from(h.outcome == "failed");
            println!("{}", h.json());
        })
        .await?;
        eprintln!(
            "escrow-ledger: {} deadline(s) handled at {}",
            handled,
            now.to_rfc3339()
        );
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::exit::EXIT_FINDINGS)
        });
    }
    let stop = crate::shutdown::watch_requested();
    eprintln!(
        "escrow-ledger: firing deadlines of ledger {:?} every {} ms (Ctrl-C stops)",
        global.ledger, args.interval_ms
    );
    let sequencer = ledger_store::sequencer::Background::spawn(pool.clone());
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let ran = run_loop(pool, executor, interval, stop, &mut |h| {
        println!("{}", h.json())
    })
    .await;
    sequencer.stop().await;
    ran?;
    Ok(ExitCode::SUCCESS)
}

/// Passes every `interval` until `stop` turns true; a deadline that failed waits a doubling backoff.
pub async fn run_loop(
    pool: PgPool,
    executor: Arc<Executor>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    report: &mut (dyn FnMut(&Handled) + Send),
) -> Result<(), CliError> {
    let mut backoff: HashMap<Uuid, (u32, Instant)> = HashMap::new();
    while !*stop.borrow() {
        let now = Utc::now();
        let result = pass_with(&pool, &executor, now, &backoff.clone(), &mut |h| {
            if h.outcome == "failed" {
                let attempts = backoff.get(&h.deadline.id).map_or(0, |b| b.0) + 1;
                let wait = interval.as_millis() as u64 * (1_u64 << attempts.min(16));
                let until = Instant::now() + Duration::from_millis(wait.min(BACKOFF_MAX_MS));
                backoff.insert(h.deadline.id, (attempts, until));
            } else {
                backoff.remove(&h.deadline.id);
            }
            report(h);
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e.message, "timers pass failed; retrying");
        }
        // Forget backoffs long past (the deadline was handled elsewhere); a bound on the map besides.
        let horizon = Duration::from_millis(BACKOFF_MAX_MS);
        backoff.retain(|_, (_, until)| *until + horizon > Instant::now());
        if backoff.len() > BACKOFF_ENTRIES_MAX {
            backoff.clear();
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
    Ok(())
}

/// One catch-up at `now`; `report` sees each deadline handled. Returns how many were handled.
pub async fn pass(
    pool: &PgPool,
    executor: &Executor,
    now: DateTime<Utc>,
    report: &mut (dyn FnMut(&Handled) + Send),
) -> Result<usize, CliError> {
    pass_with(pool, executor, now, &HashMap::new(), report).await
}

async fn pass_with(
    pool: &PgPool,
    executor: &Executor,
    now: DateTime<Utc>,
    backoff: &HashMap<Uuid, (u32, Instant)>,
    report: &mut (dyn FnMut(&Handled) + Send),
) -> Result<usize, CliError> {
    let ledger = executor.ledger_id().to_string();
    let mut seen: HashSet<Uuid> = backoff
        .iter()
        .filter(|(_, (_, until))| *until > Instant::now())
        .map(|(id, _)| *id)
        .collect();
    let mut handled = 0;
    for _batch in 0..BATCHES_PER_PASS_MAX {
        catch_up(pool, &ledger).await?;
        let due = due_deadlines(pool, &ledger, now, &seen).await?;
        if due.is_empty() {
            break;
        }
        for deadline in due {
            seen.insert(deadline.id);
            let h = fire(executor, deadline).await;
            handled += 1;
            report(&h);
        }
    }
    Ok(handled)
}

/// Sends one deadline's command; never fails (an error is the outcome `failed`). A firing refused for good
/// (now, or recorded so by an earlier run) closes the deadline in the log (`close_deadline`), so its row
/// leaves the pending ones and no batch reads it again.
async fn fire(executor: &Executor, deadline: Deadline) -> Handled {
    let key = deadline.idempotency_key();
    let result = executor
        .execute_reporting_replay(&deadline.envelope(), &key)
        .await;
    let (outcome, detail) = match result {
        Ok((CommandOutcome::Accepted { .. }, true)) => ("duplicate", None),
        Ok((CommandOutcome::Accepted { .. }, false)) => ("fired", None),
        Ok((CommandOutcome::Rejected { rejection, .. }, _)) => {
            let detail = format!("{}: {}", rejection.code, rejection.message);
            if is_transient(&rejection.code) {
                ("failed", Some(detail))
            } else {
                match close(executor, &deadline).await {
                    Ok(()) => ("closed", Some(detail)),
                    Err(e) => ("failed", Some(format!("{detail}; closing it failed: {e}"))),
                }
            }
        }
        Err(e) => ("failed", Some(e.to_string())),
    };
    Handled {
        deadline,
        outcome,
        detail,
    }
}

/// Closes a deadline whose firing was refused for good, once (key `deadline-closed:<id>`). The engine
/// decides the deadline's command again before it closes anything.
async fn close(executor: &Executor, deadline: &Deadline) -> Result<(), String> {
    let env = CommandEnvelope {
        command_id: derived_id(deadline.id, "close"),
        actor: Actor::System,
        at: Utc::now().max(deadline.due_at),
        command: Command::CloseDeadline {
            deadline_id: deadline.id,
            kind: deadline.kind.name().to_string(),
            stream: deadline.stream,
            milestone: deadline.milestone,
            due_at: deadline.due_at,
        },
    };
    let key = format!("deadline-closed:{}", deadline.id);
    match executor.execute_reporting_replay(&env, &key).await {
        Ok((CommandOutcome::Accepted { .. }, _)) => Ok(()),
        Ok((CommandOutcome::Rejected { rejection, .. }, _)) => {
            Err(format!("{}: {}", rejection.code, rejection.message))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Brings the `deadlines` projection of `ledger` to the log's head (after sequencing what dead writers
/// left); another worker moving the checkpoint meanwhile is retried.
async fn catch_up(pool: &PgPool, ledger: &str) -> Result<(), CliError> {
    ledger_store::sequencer::sequence_all(pool)
        .await
        .context("cannot sequence the committed events")?;
    let mut last = String::new();
    for attempt in 0..CATCH_UP_ATTEMPTS_MAX {
        let ran = ledger_projections::catch_up_all(
            pool,
            ledger,
            &[Projection::Deadlines],
            &RunnerConfig::default(),
        )
        .await;
        match ran {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                let pause = 20_u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
    Err(CliError::environment(format!(
        "the deadlines projection of ledger {ledger:?} could not catch up: {last}"
    )))
}

type DeadlineRow = (
    Uuid,
    String,
    String,
    Option<i32>,
    DateTime<Utc>,
    i64,
    Option<Uuid>,
    Option<Uuid>,
);

const DEADLINE_COLUMNS: &str =
    "deadline_id, kind, stream_id, milestone, due_at, computed_from_version, party_a, party_b";

fn decode(row: DeadlineRow) -> Result<Deadline, CliError> {
    let (id, kind, stream, milestone, due_at, version, party_a, party_b) = row;
    let kind = DeadlineKind::from_name(&kind)
        .ok_or_else(|| CliError::environment(format!("deadline {id}: unknown kind {kind:?}")))?;
    let stream: StreamId = stream
        .parse()
        .map_err(|e| CliError::environment(format!("deadline {id}: {e}")))?;
    Ok(Deadline {
        id,
        kind,
        stream,
        milestone: milestone.map(|m| m as u32),
        due_at,
        version,
        parties: party_a.into_iter().chain(party_b).collect(),
    })
}

/// Pending deadlines due at `now`, in due order, without those handled already in this pass. Fired and
/// closed deadlines are not `pending` (the log says so), so a batch never holds them.
async fn due_deadlines(
    pool: &PgPool,
    ledger: &str,
    now: DateTime<Utc>,
    seen: &HashSet<Uuid>,
) -> Result<Vec<Deadline>, CliError> {
    let skip: Vec<Uuid> = seen.iter().copied().collect();
    let mut tx = pool.begin().await.context("timers")?;
    sqlx::query("set local role escrow_projector")
        .execute(&mut *tx)
        .await
        .context("timers: cannot read the deadlines")?;
    let sql = format!(
        "select {DEADLINE_COLUMNS} from escrow.deadlines
          where ledger_id = $1 and status = 'pending' and due_at <= $2
            and deadline_id <> all($3)
          order by due_at, deadline_id limit $4"
    );
    let rows: Vec<DeadlineRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ledger)
        .bind(now)
        .bind(&skip)
        .bind(BATCH_DEADLINES_MAX)
        .fetch_all(&mut *tx)
        .await
        .context("timers: cannot read the deadlines")?;
    tx.commit().await.context("timers")?;
    rows.into_iter().map(decode).collect()
}

async fn list(global: &Global, args: ListArgs) -> Result<ExitCode, CliError> {
    let (pool, executor) = global.executor_as(RunRole::Writer).await?;
    catch_up(&pool, executor.ledger_id()).await?;
    let mut tx = pool.begin().await.context("timers")?;
    sqlx::query("set local role escrow_projector")
        .execute(&mut *tx)
        .await
        .context("timers: cannot read the deadlines")?;
    let sql = format!(
        "select {DEADLINE_COLUMNS}, status from escrow.deadlines
          where ledger_id = $1 and ($4 or status = 'pending')
            and ($2::timestamptz is null or due_at < $2)
          order by due_at, deadline_id limit $3"
    );
    type ListedRow = (
        Uuid,
        String,
        String,
        Option<i32>,
        DateTime<Utc>,
        i64,
        Option<Uuid>,
        Option<Uuid>,
        String,
    );
    let rows: Vec<ListedRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(executor.ledger_id())
        .bind(args.due_before)
        .bind(LIST_ROWS_MAX)
        .bind(args.all)
        .fetch_all(&mut *tx)
        .await
        .context("timers: cannot read the deadlines")?;
    tx.commit().await.context("timers")?;
    let deadlines: Vec<(Deadline, String)> = rows
        .into_iter()
        .map(
            |(id, kind, stream, milestone, due_at, version, a, b, status)| {
                decode((id, kind, stream, milestone, due_at, version, a, b)).map(|d| (d, status))
            },
        )
        .collect::<Result<_, _>>()?;
    match args.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = deadlines
                .iter()
                .map(|(d, status)| {
                    json!({
                        "deadline_id": d.id,
                        "kind": d.kind.name(),
                        "stream": d.stream.to_string(),
                        "milestone": d.milestone,
                        "due_at": d.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "computed_from_version": d.version,
                        "status": status,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        Format::Table => {
            println!(
                "{:<22} {:<24} {:<52} {:<9} milestone",
                "due_at", "kind", "stream", "status"
            );
            for (d, status) in &deadlines {
                println!(
                    "{:<22} {:<24} {:<52} {:<9} {}",
                    d.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    d.kind.name(),
                    d.stream.to_string(),
                    status,
                    d.milestone.map_or(String::new(), |m| m.to_string())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
