//! The payout and card-refund outbox: external movements the ledger decided (a `PayoutRequested` or
//! `CardRefundRequested` whose payment has no terminal event yet), claimed by workers with a lease so two
//! workers never both send one. The gateway's callback (with our payment id as its reference) closes it.

use ledger_store::roles::RunRole;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::Global;
use crate::exit::{CliError, Context};

pub const CLAIM_LIMIT_MAX: i64 = 100;
pub const LIST_LIMIT_MAX: i64 = 1_000;
pub const LEASE_SECONDS_MAX: i64 = 3_600;
pub const WORKER_BYTES_MAX: usize = 128;

#[derive(Debug, Clone, Serialize)]
pub struct OutboxItem {
    pub payment_id: String,
    pub kind: &'static str,
    pub payload: serde_json::Value,
    pub requested_at: DateTime<Utc>,
    pub leased_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub claims: Option<i32>,
}

const OPEN_ITEMS: &str = "
    select e.stream_id, e.event_type, e.payload, e.recorded_at, l.worker, l.lease_until, l.claims
      from ledger.events e
      left join ledger.outbox_leases l on l.ledger_id = e.ledger_id and l.stream_id = e.stream_id
     where e.ledger_id = $1
       and e.event_type in ('PayoutRequested', 'CardRefundRequested')
       and not exists (select 1 from ledger.events t
                        where t.ledger_id = e.ledger_id and t.stream_id = e.stream_id
                          and t.event_type in ('PayoutCompleted', 'PayoutFailed', 'PayoutCancelled',
                                               'PayoutReturned', 'CardRefundProcessed', 'CardRefundFailed'))";

type Row = (
    String,
    String,
    serde_json::Value,
    DateTime<Utc>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i32>,
);

fn item(row: Row) -> OutboxItem {
    let (stream_id, event_type, payload, requested_at, leased_by, lease_until, claims) = row;
    OutboxItem {
        payment_id: stream_id
            .strip_prefix("payment-")
            .unwrap_or(&stream_id)
            .to_string(),
        kind: if event_type == "PayoutRequested" {
            "payout"
        } else {
            "card_refund"
        },
        payload,
        requested_at,
        leased_by,
        lease_until,
        claims,
    }
}

/// Open items, oldest first.
pub async fn list(pool: &PgPool, ledger: &str, limit: i64) -> Result<Vec<OutboxItem>, sqlx::Error> {
    let sql = format!("{OPEN_ITEMS} order by e.recorded_at, e.stream_id limit $2");
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ledger)
        .bind(limit.clamp(1, LIST_LIMIT_MAX))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(item).collect())
}

/// Claims up to `limit` open items that no live lease holds. Safe under concurrent workers: the lease row
/// is inserted, or updated only when its lease has expired (the `where` is re-checked on the row version a
/// concurrent claimer committed), so one item has at most one live lease. The statement's `now()` reaches
/// the conflict check as `excluded.claimed_at`: Citus refuses `now()` itself in DO UPDATE.
pub async fn claim(
    pool: &PgPool,
    ledger: &str,
    worker: &str,
    limit: i64,
    lease_seconds: i64,
) -> Result<Vec<OutboxItem>, sqlx::Error> {
    let sql = format!(
        "with open as ({OPEN_ITEMS} and (l.lease_until is null or l.lease_until <= now())
                        order by e.recorded_at, e.stream_id limit $3),
              taken as (
                insert into ledger.outbox_leases as l
                       (ledger_id, stream_id, worker, lease_until, claims, claimed_at)
                select $1, stream_id, $2, now() + $4 * interval '1 second', 1, now() from open
                on conflict (ledger_id, stream_id) do update
                   set worker = excluded.worker, lease_until = excluded.lease_until, claims = l.claims + 1,
                       claimed_at = excluded.claimed_at
                 where l.lease_until <= excluded.claimed_at
                returning l.stream_id, l.worker, l.lease_until, l.claims)
         select o.stream_id, o.event_type, o.payload, o.recorded_at, t.worker, t.lease_until, t.claims
           from open o join taken t on t.stream_id = o.stream_id
          order by o.recorded_at, o.stream_id"
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ledger)
        .bind(worker)
        .bind(limit.clamp(1, CLAIM_LIMIT_MAX))
        .bind(lease_seconds.clamp(1, LEASE_SECONDS_MAX))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(item).collect())
}

pub fn check_worker(worker: &str) -> Result<(), String> {
    if worker.is_empty() || worker.len() > WORKER_BYTES_MAX || worker.chars().any(char::is_control)
    {
        return Err(format!(
            "worker must be 1..={WORKER_BYTES_MAX} printable bytes"
        ));
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// Lists open payouts and card refunds (with their lease, if any).
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Claims open items for a worker, with a lease; prints them as JSON lines.
    Claim(ClaimArgs),
}

#[derive(Args, Debug)]
pub struct ClaimArgs {
    #[arg(long)]
    pub worker: String,
    #[arg(long, default_value_t = 10)]
    pub limit: i64,
    #[arg(long, default_value_t = 60)]
    pub lease_seconds: i64,
}

pub async fn run(global: &Global, command: OutboxCommand) -> Result<ExitCode, CliError> {
    let (pool, _) = global.executor_as(RunRole::Writer).await?;
    match command {
        OutboxCommand::List { limit, json } => {
            let items = list(&pool, &global.ledger, limit)
                .await
                .context("cannot read the outbox")?;
            for i in &items {
                if json {
                    println!("{}", serde_json::to_string(i).expect("items serialize"));
                } else {
                    println!(
                        "{} {:<11} requested {} lease {}",
                        i.payment_id,
                        i.kind,
                        i.requested_at.to_rfc3339(),
                        match (&i.leased_by, i.lease_until) {
                            (Some(w), Some(u)) => format!("{w} until {}", u.to_rfc3339()),
                            _ => "none".into(),
                        }
                    );
                }
            }
            if !json {
                println!("{} open items", items.len());
            }
        }
        OutboxCommand::Claim(args) => {
            check_worker(&args.worker).map_err(CliError::environment)?;
            let items = claim(
                &pool,
                &global.ledger,
                &args.worker,
                args.limit,
                args.lease_seconds,
            )
            .await
            .context("cannot claim from the outbox")?;
            for i in &items {
                println!("{}", serde_json::to_string(i).expect("items serialize"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
