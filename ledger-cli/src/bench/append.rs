//! `bench append`: the defined escrow workload against PostgreSQL, through the executor and group commit.
//!
//! Setup (not timed): each writer gets its own projects (buyer, seller, 8 milestones, 10% commission, 2.5%
//! buyer fee), agreed and paid for by a confirmed deposit. Timed: every writer walks its projects' milestones
//! with `in_flight` of them under way at once: fund (project + buyer wallet streams, one journal entry),
//! submit (project), approve, whose release follows in the same append (project + seller wallet streams,
//! one journal entry). Durable: `synchronous_commit` stays `on`, and the figures count what was committed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money, Rate};
use ledger_store::{CommandOutcome, EventStore, GroupCommitConfig, GroupCommitter, PgEventStore};
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

const MILESTONES_PER_PROJECT: u32 = 8;
const MILESTONE_MINOR: i64 = 10_000;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Projects each writer keeps under way at once (its pipelining window).
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Projects per writer (each carries 8 milestones x 3 commands).
    #[arg(long, default_value_t = 200)]
    projects: usize,
    /// Most commands per group-commit transaction.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Concurrent group-commit transactions.
    #[arg(long, default_value_t = 3)]
    committers: usize,
    /// How long a batch waits for more commands once it has one, in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

struct Lane {
    buyer: Uuid,
    seller: Uuid,
    project_id: Uuid,
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn envelope(actor: Actor, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor,
        at: Utc::now(),
        command,
    }
}

async fn submit(
    committer: &GroupCommitter,
    actor: Actor,
    command: Command,
) -> Result<CommandOutcome, CliError> {
    let outcome = committer
        .submit(envelope(actor, command.clone()), None)
        .await
        .context("append failed")?;
    if let CommandOutcome::Rejected { rejection, .. } = &outcome {
        return Err(CliError::environment(format!(
            "benchmark command {command:?} was refused: {}",
            rejection.message
        )));
    }
    Ok(outcome)
}

async fn set_up(committer: &GroupCommitter, lane: &Lane) -> Result<(), CliError> {
    let fees = FeePolicy {
        commission_rate: Rate::from_bps(1_000).expect("rate"),
        buyer_fee_rate: Rate::from_bps(250).expect("rate"),
        ..FeePolicy::default()
    };
    let (buyer, seller, project_id) = (lane.buyer, lane.seller, lane.project_id);
    let milestones = (0..MILESTONES_PER_PROJECT)
        .map(|_| usd(MILESTONE_MINOR))
        .collect();
    submit(
        committer,
        Actor::User(buyer),
        Command::CreateProject {
            project_id,
            buyer,
            seller,
            currency: Currency::USD,
            milestones,
            fees: fees.into(),
        },
    )
    .await?;
    submit(
        committer,
        Actor::User(buyer),
        Command::SubmitProjectForAgreement { project_id },
    )
    .await?;
    submit(
        committer,
        Actor::User(seller),
        Command::AgreeToProject { project_id },
    )
    .await?;
    let payment_id = Uuid::new_v4();
    let total = MILESTONE_MINOR * i64::from(MILESTONES_PER_PROJECT) * 41 / 40;
    submit(
        committer,
        Actor::User(buyer),
        Command::InitiateDeposit {
            payment_id,
            amount: usd(total),
            gateway: Gateway::Stripe,
            fund: None,
        },
    )
    .await?;
    let confirm = Command::ConfirmDeposit {
        payment_id,
        amount: usd(total),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    submit(committer, Actor::Gateway(Gateway::Stripe), confirm).await?;
    Ok(())
}

/// The timed part for one project: per milestone fund, submit, approve (+ release). Returns latencies and
/// the number of events appended.
async fn work(committer: GroupCommitter, lane: Lane) -> Result<(Vec<Duration>, u64), CliError> {
    let mut latencies = Vec::with_capacity(MILESTONES_PER_PROJECT as usize * 3);
    let mut events = 0_u64;
    let (buyer, seller, project_id) = (lane.buyer, lane.seller, lane.project_id);
    for milestone in 1..=MILESTONES_PER_PROJECT {
        for (actor, command) in [
            (
                Actor::User(buyer),
                Command::FundMilestone {
                    project_id,
                    milestone,
                },
            ),
            (
                Actor::User(seller),
                Command::SubmitMilestone {
                    project_id,
                    milestone,
                },
            ),
            (
                Actor::User(buyer),
                Command::ApproveMilestone {
                    project_id,
                    milestone,
                },
            ),
        ] {
            let started = Instant::now();
            let outcome = submit(&committer, actor, command).await?;
            latencies.push(started.elapsed());
            if let CommandOutcome::Accepted {
                events: appended, ..
            } = outcome
            {
                events += appended.len() as u64;
            }
        }
    }
    Ok((latencies, events))
}

pub async fn run(global: &Global, args: AppendArgs) -> Result<ExitCode, CliError> {
    if args.writers == 0 || args.in_flight == 0 || args.projects == 0 {
        return Err(CliError::environment(
            "--writers, --in-flight and --projects must be positive",
        ));
    }
    let (pool, executor) = global.executor().await?;
    let synchronous_commit: String = sqlx::query_scalar("show synchronous_commit")
        .fetch_one(&pool)
        .await
        .context("cannot read synchronous_commit")?;
    let config = GroupCommitConfig {
        batch_size_max: args.batch_size,
        committers: args.committers,
        linger: std::time::Duration::from_millis(args.linger_ms),
        ..GroupCommitConfig::default()
    };
    let committer = GroupCommitter::spawn(executor, config.clone());
    let lanes: Vec<Vec<Lane>> = (0..args.writers)
        .map(|_| {
            (0..args.projects)
                .map(|_| Lane {
                    buyer: Uuid::new_v4(),
                    seller: Uuid::new_v4(),
                    project_id: Uuid::new_v4(),
                })
                .collect()
        })
        .collect();
    eprintln!("setting up {} projects...", args.writers * args.projects);
    let setup_started = Instant::now();
    run_lanes(&committer, &lanes, args.in_flight, |c, lane| async move {
        set_up(&c, &lane).await.map(|_| (Vec::new(), 0))
    })
    .await?;
    eprintln!(
        "setup took {:.1} s; running the workload...",
        setup_started.elapsed().as_secs_f64()
    );
    let cpu_before = super::cpu::CpuSample::now();
    let started = Instant::now();
    let (mut latencies, events) = run_lanes(&committer, &lanes, args.in_flight, work).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(super::cpu::CpuSample::now())
        .map(|(a, b)| a.until(&b));
    latencies.sort();
    let commands = latencies.len() as u64;
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let store = PgEventStore::new(pool.clone());
    let head = store
        .head_position(&global.ledger)
        .await
        .context("cannot read the head")?;
    let mut report = serde_json::json!({
        "commands_per_s": commands as f64 / elapsed,
        "events_per_s": events as f64 / elapsed,
        "events_per_command": events as f64 / commands.max(1) as f64,
        "batch_size": config.batch_size_max,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "peak_rss_mb": super::peak_rss_mb(),
        "synchronous_commit": synchronous_commit,
        "commands_total": commands,
        "events_total": events,
        "seconds": elapsed,
        "writers": args.writers,
        "in_flight_per_writer": args.in_flight,
        "ledger_head_position": head,
    });
    eprintln!(
        "{commands} commands, {events} events in {elapsed:.2} s: {:.0} commands/s, {:.0} events/s, p50 {:.1} ms, p99 {:.1} ms",
        commands as f64 / elapsed,
        events as f64 / elapsed,
        percentile(0.50),
        percentile(0.99)
    );
    if let Some(cpu) = cpu {
        eprintln!("{}", cpu.line(commands, "command"));
        super::cpu::merge(&mut report, cpu.json(commands, "command"));
    }
    if args.json {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `job` over every writer's lanes, `in_flight` lanes at a time per writer; gathers the results.
async fn run_lanes<F, Fut>(
    committer: &GroupCommitter,
    lanes: &[Vec<Lane>],
    in_flight: usize,
    job: F,
) -> Result<(Vec<Duration>, u64), CliError>
where
    F: Fn(GroupCommitter, Lane) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(Vec<Duration>, u64), CliError>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for writer in lanes {
        for window in 0..in_flight {
            let mine: Vec<Lane> = writer
                .iter()
                .skip(window)
                .step_by(in_flight)
                .map(|l| Lane {
                    buyer: l.buyer,
                    seller: l.seller,
                    project_id: l.project_id,
                })
                .collect();
            let (committer, job) = (committer.clone(), job.clone());
            tasks.push(tokio::spawn(async move {
                let mut all = (Vec::new(), 0_u64);
                for lane in mine {
                    let (latencies, events) = job(committer.clone(), lane).await?;
                    all.0.extend(latencies);
                    all.1 += events;
                }
                Ok::<_, CliError>(all)
            }));
        }
    }
    let mut total = (Vec::new(), 0_u64);
    for task in tasks {
        let (latencies, events) = task
            .await
            .map_err(|e| CliError::environment(format!("a writer task failed: {e}")))??;
        total.0.extend(latencies);
        total.1 += events;
    }
    Ok(total)
}
