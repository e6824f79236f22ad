//! `verify [--seal FILE]` and `seal [--output FILE]`.
//!
//! `verify` replays the whole log through ledger-core and checks the invariants (every entry decodes and
//! balances, the trial balance is zero per currency, no constrained account is below zero, every wallet,
//! escrow and deferred-fee state equals its accounts, in-transit accounts are empty once their payment is
//! terminal, income and expenses only come from releases, payouts, fees and chargebacks), the hash chain
//! (against a seal when given), the balance snapshots, and that every projection equals the replay. Silent
//! with exit 0 when all is well; otherwise one line per finding and exit 1.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ledger_core::aggregates::payment::{PaymentKind, PaymentStatus};
use ledger_core::{Account, AggState, Balances, Change, MemoryLedger, StreamId};
use ledger_store::{EventStore, PgEventStore, Seal, balances};
use sqlx::PgPool;

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::replay::{self, balances_from_json};

/// Most findings printed (a broken ledger can have millions; the first ones locate the problem).
const FINDINGS_MAX: usize = 200;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A seal written earlier by `escrow-ledger seal`: history up to it must be unchanged.
    #[arg(long)]
    pub seal: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    /// Write the seal here instead of stdout (keep it outside the database).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub async fn seal(global: &Global, args: SealArgs) -> Result<ExitCode, CliError> {
    let store = PgEventStore::new(global.pool().await?);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let seal = store.seal(&global.ledger).await.context("cannot seal")?;
    let text = serde_json::to_string_pretty(&seal).expect("seals serialize");
    match args.output {
        Some(path) => {
            fs::write(&path, format!("{text}\n"))
                .context(format!("cannot write {}", path.display()))?;
            eprintln!(
                "sealed ledger {} at position {} into {}",
                seal.ledger_id,
                seal.position,
                path.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(global: &Global, args: VerifyArgs) -> Result<ExitCode, CliError> {
    let seal: Option<Seal> = match &args.seal {
        Some(path) => {
            let text = fs::read_to_string(path)
                .context(format!("cannot read the seal {}", path.display()))?;
            Some(serde_json::from_str(&text).context(format!("{} is not a seal", path.display()))?)
        }
        None => None,
    };
    if let Some(s) = &seal
        && s.ledger_id != global.ledger
    {
        return Err(CliError::environment(format!(
            "the seal is for ledger {:?}, not {:?}",
            s.ledger_id, global.ledger
        )));
    }
    let pool = global.pool().await?;
    let store = PgEventStore::new(pool.clone());
    crate::db::require_ledger(&store, &global.ledger).await?;
    let mut findings = Vec::new();
    // The hash chain and the replay read the log independently: run them side by side (two cores).
    let head = store
        .head_position(&global.ledger)
        .await
        .context("cannot read the head")?;
    let chain = {
        let (store, ledger) = (store.clone(), global.ledger.clone());
        tokio::spawn(async move { store.verify_chain(&ledger, seal).await })
    };
    let started = std::time::Instant::now();
    replay_checks(&pool, &store, &global.ledger, head, &mut findings).await?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "replay checks done"
    );
    let report = chain
        .await
        .map_err(|e| CliError::environment(format!("the chain verifier failed: {e}")))?
        .context("cannot verify the hash chain")?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        events = report.events_verified,
        "hash chain verified"
    );
    if let Some(b) = &report.first_break {
        let event = b
            .event_id
            .map(|e| format!(" (event {e})"))
            .unwrap_or_default();
        findings.push(format!(
            "hash chain broken at position {}{event}: {}",
            b.position, b.reason
        ));
    }
    if report.seal_matches == Some(false) {
        findings.push(
            "the chain does not match the seal: history up to the seal was rewritten".to_string(),
        );
    }
    projection_checks(&pool, &global.ledger, &mut findings).await?;
    if findings.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in findings.iter().take(FINDINGS_MAX) {
        println!("FINDING: {f}");
    }
    if findings.len() > FINDINGS_MAX {
        println!("... and {} more findings", findings.len() - FINDINGS_MAX);
    }
    Ok(ExitCode::from(crate::exit::EXIT_FINDINGS))
}

/// Replays the log into a `MemoryLedger` (its log is dropped batch by batch: memory follows the number of
/// streams and accounts, not of events) and checks the invariants and the balance snapshots on the way.
async fn replay_checks(
    pool: &PgPool,
    store: &PgEventStore,
    ledger: &str,
    head: i64,
    findings: &mut Vec<String>,
) -> Result<(), CliError> {
    let mut snapshots = balances::positions(pool, ledger)
        .await
        .context("cannot read balance snapshots")?
        .into_iter()
        .peekable();
    // Only a digest of the replayed balances is kept per snapshot position (a clone of every account's
    // balances per snapshot would make memory grow with the log).
    let mut due_snapshots: Vec<(i64, [u8; 32])> = Vec::new();
    let mut memory = MemoryLedger::new();
    let bar = replay::progress(head, "verifying");
    replay::scan(store, ledger, 0, head, &bar, |d| {
        if let Some(entry) = d.event.entry() {
            let touches_pnl = entry
                .postings()
                .iter()
                .any(|p| p.account.is_income_or_expense());
            let allowed = [
                "MilestoneReleased",
                "MilestoneResolved",
                "MilestoneRefunded",
                "PayoutCompleted",
                "CardRefundProcessed",
                "DepositSucceeded",
                "SuccessAfterFailure",
            ];
            if touches_pnl
                && !allowed.contains(&d.event_type.as_str())
                && !d.event_type.starts_with("Chargeback")
            {
                findings.push(format!(
                    "event {} at position {} ({}) touches income or expenses",
                    d.event_id, d.position, d.event_type
                ));
            }
        }
        memory.apply(Change {
            stream: d.stream,
            event_id: d.event_id,
            event: d.event,
        });
        if memory.log().len() >= replay::READ_BATCH as usize {
            memory.take_log();
        }
        while snapshots.peek().is_some_and(|p| *p <= d.position) {
            let position = snapshots.next().expect("peeked");
            if position == d.position {
                due_snapshots.push((position, digest(memory.balances())));
            }
        }
        Ok(())
    })
    .await?;
    for (position, expected) in due_snapshots {
        let stored = balances::load_exact(pool, ledger, position)
            .await
            .context("cannot read a balance snapshot")?;
        let found = stored.map(|s| balances_from_json(&s.balances).map(|b| digest(&b)));
        if !matches!(&found, Some(Ok(d)) if *d == expected) {
            findings.push(format!("balance snapshot at position {position} differs from the replay of the log up to it"));
        }
    }
    ledger_checks(&memory, findings);
    Ok(())
}

/// A digest of balances (accounts in order with their debits and credits).
fn digest(balances: &Balances) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for ((account, currency), (d, c)) in balances.iter() {
        hasher.update(format!("{account}\u{0}{currency}\u{0}{d}\u{0}{c}\n").as_bytes());
    }
    hasher.finalize().into()
}

/// Invariants of the replayed ledger as a whole.
fn ledger_checks(memory: &MemoryLedger, findings: &mut Vec<String>) {
    let b = memory.balances();
    for (currency, imbalance) in b.imbalance_by_currency() {
        if imbalance != 0 {
            findings.push(format!(
                "trial balance of {currency} is off by {imbalance} minor units (debits - credits)"
            ));
        }
    }
    for (account, currency, balance) in b.negative_constrained() {
        findings.push(format!(
            "account {account} ({currency}) is below zero: {balance} minor units"
        ));
    }
    for (stream, state) in memory.written_states() {
        match (&stream, &state) {
            (StreamId::Wallet { user, currency }, AggState::Wallet(w)) => {
                for (account, held) in [
                    (Account::UserAvailable { user: *user }, w.available_minor),
                    (Account::UserPending { user: *user }, w.pending_minor),
                ] {
                    let booked = b.balance(&account, *currency);
                    if booked != i128::from(held) {
                        findings.push(format!("wallet {stream}: state says {held}, account {account} says {booked} minor units"));
                    }
                }
            }
            (StreamId::Project(id), AggState::Project(p)) if p.exists() => {
                let currency = p.currency();
                for (i, m) in p.milestones.iter().enumerate() {
                    let account = Account::Escrow {
                        project: *id,
                        milestone: (i + 1) as u32,
                    };
                    let booked = b.balance(&account, currency);
                    if booked != i128::from(m.held_minor()) {
                        findings.push(format!("{account}: project state holds {}, the account says {booked} minor units", m.held_minor()));
                    }
                }
                let deferred = Account::DeferredFees { project: *id };
                let fees: i64 = p.milestones.iter().map(|m| m.buyer_fee_minor).sum();
                if b.balance(&deferred, currency) != i128::from(fees) {
                    findings.push(format!(
                        "{deferred}: project state holds {fees}, the account says {}",
                        b.balance(&deferred, currency)
                    ));
                }
            }
            (StreamId::Payment(id), AggState::Payment(p)) if p.exists() => {
                let terminal = matches!(
                    p.status,
                    PaymentStatus::Completed
                        | PaymentStatus::Failed
                        | PaymentStatus::Cancelled
                        | PaymentStatus::Reversed
                );
                let transit = match p.kind {
                    Some(PaymentKind::Payout) => Some(Account::PayoutsInTransit(*id)),
                    Some(PaymentKind::CardRefund) => Some(Account::RefundsInTransit(*id)),
                    _ => None,
                };
                if let (true, Some(account), Some(currency)) = (terminal, transit, p.currency) {
                    let left = b.balance(&account, currency);
                    if left != 0 {
                        findings.push(format!("{account}: payment is {:?} but {left} minor units are still in transit", p.status));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every projection's tables and checkpoint must equal what the log implies.
async fn projection_checks(
    pool: &PgPool,
    ledger: &str,
    findings: &mut Vec<String>,
) -> Result<(), CliError> {
    // Read tables are recomputed from the log up to each projection's checkpoint, and the checkpoint is
    // checked against what the tables reflect (see `ledger_projections::verify`).
    let mismatches = ledger_projections::verify::compare_with_log(pool, ledger)
        .await
        .map_err(|e| {
            CliError::environment(format!("cannot compare the projections with the log: {e}"))
        })?;
    findings.extend(mismatches.iter().map(|m| format!("projection {m}")));
    Ok(())
}
