//! `escrow-ledger suspense` (list, assign to a wallet, return to the sender) and `escrow-ledger anomalies`.
//! Resolving is an operator's command through the executor, recorded like every other event.

use ledger_store::roles::RunRole;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use ledger_core::{Actor, Command, CommandEnvelope};
use ledger_store::CommandOutcome;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

pub const LIST_LIMIT_MAX: i64 = 10_000;

/// gateway, gateway event id, event type, payment reference, disposition, detail, received at.
type InboxRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    DateTime<Utc>,
);

#[derive(Subcommand, Debug)]
pub enum SuspenseCommand {
    /// Lists suspense items with their status (held, assigned, returned).
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Assigns a held item to a user's wallet (Dr Suspense, Cr the user's available balance).
    Assign {
        #[arg(value_parser = crate::exit::uuid_arg)]
        suspense_id: Uuid,
        #[arg(long)]
        #[arg(value_parser = crate::exit::uuid_arg)]
        user: Uuid,
        /// The operator resolving it.
        #[arg(long)]
        #[arg(value_parser = crate::exit::uuid_arg)]
        operator: Uuid,
    },
    /// Returns a held item to its sender (Dr Suspense, Cr the gateway's clearing account).
    Return {
        #[arg(value_parser = crate::exit::uuid_arg)]
        suspense_id: Uuid,
        #[arg(long)]
        #[arg(value_parser = crate::exit::uuid_arg)]
        operator: Uuid,
    },
}

pub async fn run(global: &Global, command: SuspenseCommand) -> Result<ExitCode, CliError> {
    let (pool, executor) = global.executor_as(RunRole::Writer).await?;
    let (command, operator) = match command {
        SuspenseCommand::List { json, limit } => {
            let rows: Vec<(String, serde_json::Value, DateTime<Utc>, Option<String>)> = sqlx::query_as(
                "select e.stream_id, e.payload, e.recorded_at,
                        (select t.event_type from ledger.events t
                          where t.ledger_id = e.ledger_id and t.stream_id = e.stream_id and t.stream_version > 1
                          order by t.stream_version desc limit 1)
                   from ledger.events e
                  where e.ledger_id = $1 and e.event_type = 'SuspenseRecorded'
                  order by e.recorded_at, e.stream_id limit $2",
            )
            .bind(&global.ledger)
            .bind(limit.clamp(1, LIST_LIMIT_MAX))
            .fetch_all(&pool)
            .await
            .context("cannot read suspense")?;
            for (stream, payload, at, resolution) in &rows {
                let status = match resolution.as_deref() {
                    Some("SuspenseAssigned") => "assigned",
                    Some("SuspenseReturned") => "returned",
                    _ => "held",
                };
                let id = stream.strip_prefix("suspense-").unwrap_or(stream);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"suspense_id": id, "status": status, "recorded_at": at, "item": payload})
                    );
                } else {
                    println!(
                        "{id} {status:<8} {} {} {} ref={} {}",
                        payload["amount"]["amount"].as_str().unwrap_or("?"),
                        payload["amount"]["currency"].as_str().unwrap_or("?"),
                        payload["gateway"].as_str().unwrap_or("?"),
                        payload["reference"].as_str().unwrap_or(""),
                        payload["reason"].as_str().unwrap_or("")
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        SuspenseCommand::Assign {
            suspense_id,
            user,
            operator,
        } => (Command::AssignSuspense { suspense_id, user }, operator),
        SuspenseCommand::Return {
            suspense_id,
            operator,
        } => (Command::ReturnSuspense { suspense_id }, operator),
    };
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: Actor::Admin(operator),
        at: Utc::now(),
        command,
    };
    match executor
        .execute(&env, None)
        .await
        .context("cannot resolve the suspense item")?
    {
        CommandOutcome::Accepted { events, .. } => {
            println!("resolved: {} events appended", events.len());
            Ok(ExitCode::SUCCESS)
        }
        CommandOutcome::Rejected { rejection, .. } => Err(CliError::findings(format!(
            "refused: {}",
            rejection.message
        ))),
    }
}

/// Lists anomalies: the core's anomaly events (a late failure after success, a transfer success after its
/// failure) and callbacks the ingestion could not match or the ledger refused (from the inbox), including
/// money held in suspense that names one of our payments.
pub async fn anomalies(global: &Global, json: bool, limit: i64) -> Result<ExitCode, CliError> {
    let (pool, _) = global.executor_as(RunRole::Writer).await?;
    let events: Vec<(String, String, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "select stream_id, event_type, payload, recorded_at from ledger.events
          where ledger_id = $1 and event_type in ('LateFailureIgnored', 'SuccessAfterFailure', 'ChargebackOutcomeConflict',
                                               'UnrequestedRefundHeld')
          order by recorded_at limit $2",
    )
    .bind(&global.ledger)
    .bind(limit.clamp(1, LIST_LIMIT_MAX))
    .fetch_all(&pool)
    .await
    .context("cannot read anomaly events")?;
    let inbox: Vec<InboxRow> = sqlx::query_as(
        // Money held in suspense although it names one of our payments (another gateway's callback naming
        // it, a second success for a completed deposit, a currency mismatch) is also for a person to look at.
        "select gateway, gateway_event_id, event_type, payment_reference, disposition, detail, received_at
           from ledger.inbox i
          where ledger_id = $1
            and (disposition in ('anomaly', 'rejected')
                 or (disposition = 'suspense'
                     and exists (select 1 from ledger.events e
                                  where e.ledger_id = i.ledger_id
                                    and e.stream_id = 'payment-' || lower(btrim(i.payment_reference))
                                    and e.stream_version = 1)))
          order by recorded_at limit $2",
    )
    .bind(&global.ledger)
    .bind(limit.clamp(1, LIST_LIMIT_MAX))
    .fetch_all(&pool)
    .await
    .context("cannot read the inbox")?;
    for (stream, kind, payload, at) in &events {
        if json {
            println!(
                "{}",
                serde_json::json!({"source": "event", "stream": stream, "type": kind, "payload": payload, "at": at})
            );
        } else {
            println!("event  {} {stream} {kind} {payload}", at.to_rfc3339());
        }
    }
    for (gateway, event_id, event_type, reference, disposition, detail, at) in &inbox {
        if json {
            println!(
                "{}",
                serde_json::json!({"source": "inbox", "gateway": gateway, "gateway_event_id": event_id,
                    "event_type": event_type, "payment_reference": reference, "disposition": disposition,
                    "detail": detail, "received_at": at})
            );
        } else {
            println!(
                "inbox  {} {gateway} {event_id} {event_type} ref={} {disposition}: {detail}",
                at.to_rfc3339(),
                reference.as_deref().unwrap_or("-")
            );
        }
    }
    if !json {
        println!(
            "{} anomaly events, {} unmatched, refused or held callbacks",
            events.len(),
            inbox.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
