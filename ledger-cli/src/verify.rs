//! `verify [--seal FILE]` and `seal [--output FILE]`.
//!
//! `verify` replays the whole log through ledger-core and checks the invariants (every entry decodes and
//! balances, the trial balance is zero per currency, no constrained account is below zero, every wallet,
//! escrow and deferred-fee state equals its accounts, in-transit accounts are empty once their payment is
//! terminal, income and expenses only come from releases, payouts, fees and chargebacks), the hash chain
//! (against a seal when given; chain v2 also holds `sequenced_at`), the balance snapshots and the stream
//! snapshots (each recomputed from the log, and its digest), that no committed event waits unsequenced for more than 10 s,
//! and that every projection equals the replay. Silent with exit 0 when all is well; otherwise one line per
//! finding and exit 1.

use ledger_store::roles::RunRole;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::Args;
use ledger_core::aggregates::payment::{PaymentKind, PaymentStatus};
use ledger_core::{Account, AggState, Balances, Change, Event, MemoryLedger, StreamId};
use ledger_store::chain::ChainVerifier;
use ledger_store::{ChainReport, EventStore, PgEventStore, Seal, balances};
use sqlx::PgPool;

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::replay::{self, Decoded, balances_from_json};

/// Most findings printed (a broken ledger can have millions; the first ones locate the problem).
const FINDINGS_MAX: usize = 200;
/// Chain links read per query.
const CHAIN_BATCH: i64 = 5_000;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A seal written earlier by `escrow-ledger seal`: history up to it must be unchanged.
    #[arg(long)]
    pub seal: Option<PathBuf>,
    /// Also list every deposit an operator confirmed by hand (`MANUAL:` lines; not findings): money that
    /// entered on an operator's word rather than a gateway's verified callback.
    #[arg(long)]
    pub manual: bool,
    /// Also decide every recorded command again on the state before it and compare its events with the log
    /// (forged events, forged outcomes, commands the rules refuse); lists manual confirmations as `--manual`.
    #[arg(long)]
    pub deep: bool,
    /// With `--deep`: the serve configuration (TOML, as `serve --config`) holding the ledger's gateway
    /// secrets; every delivery in the inbox is authenticated again against its kept signature and raw body.
    #[arg(long, requires = "deep")]
    pub gateway_config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    /// Write the seal here instead of stdout (keep it outside the database).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub async fn seal(global: &Global, args: SealArgs) -> Result<ExitCode, CliError> {
    let store = PgEventStore::new(global.pool_as(RunRole::Auditor).await?);
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
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool.clone());
    crate::db::require_ledger(&store, &global.ledger).await?;
    let mut findings = Vec::new();
    // One pass over the log: every link of the hash chain is recomputed and every event replayed from the
    // same rows (reading the log twice doubled the database's work).
    let head = store
        .head_position(&global.ledger)
        .await
        .context("cannot read the head")?;
    let started = std::time::Instant::now();
    // A changed history can make `evolve` refuse an event (caught below as a finding): keep its panic
    // message off the terminal while replaying, then restore the normal hook.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut deep = args.deep.then(crate::verify_deep::DeepCheck::default);
    let report = replay_checks(
        &pool,
        &store,
        &global.ledger,
        head,
        seal,
        deep.as_mut(),
        &mut findings,
    )
    .await;
    std::panic::set_hook(hook);
    let report = report?;
    if let Some(deep) = deep {
        deep.finish(&mut findings);
    }
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        events = report.events_verified,
        "chain and replay checked"
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
    store_checks(&pool, &global.ledger, &mut findings).await?;
    if let Some(path) = &args.gateway_config {
        let config = crate::serve::config::load(Some(path), &global.ledger)?;
        let secrets = config
            .ledgers
            .get(&global.ledger)
            .map(|s| s.gateway_secrets())
            .unwrap_or_default();
        let evidence =
            crate::verify_deep::gateway_evidence(&pool, &global.ledger, &secrets, &mut findings)
                .await?;
        tracing::info!(
            verified = evidence.verified,
            "deliveries authenticated again"
        );
        for line in evidence.listed {
            println!("{line}");
        }
    }
    projection_checks(&pool, &global.ledger, &mut findings).await?;
    if args.manual || args.deep {
        for line in manual_confirmations(&pool, &global.ledger).await? {
            println!("MANUAL: {line}");
        }
    }
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

/// One manual confirmation: position, actor, stream, amount, currency, when recorded.
type ManualRow = (
    Option<i64>,
    String,
    String,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
);

/// Most manual confirmations listed.
const MANUAL_ROWS_MAX: i64 = 100_000;

/// Deposits confirmed by an operator (actor `admin:<id>`), not by their gateway: one line each, in log
/// order, with the operator, the deposit, the amount and when it was recorded.
pub async fn manual_confirmations(pool: &PgPool, ledger: &str) -> Result<Vec<String>, CliError> {
    let rows: Vec<ManualRow> = sqlx::query_as(
            "select s.position, e.metadata->>'actor', e.stream_id,
                    coalesce(e.payload->'amount'->>'amount', ''), coalesce(e.payload->'amount'->>'currency', ''),
                    e.recorded_at
               from ledger.events e
               left join ledger.sequence s on s.ledger_id = e.ledger_id and s.local_id = e.local_id
              where e.ledger_id = $1 and e.event_type = 'DepositSucceeded'
                and e.metadata->>'actor' like 'admin:%'
              order by s.position nulls last, e.recorded_at
              limit $2",
        )
        .bind(ledger)
        .bind(MANUAL_ROWS_MAX)
        .fetch_all(pool)
        .await
        .context("cannot list manual confirmations")?;
    Ok(rows
        .into_iter()
        .map(|(position, actor, stream, amount, currency, at)| {
            let position = position.map_or_else(|| "unsequenced".to_string(), |p| p.to_string());
            format!(
                "{stream} confirmed by {actor}: {amount} {currency} (position {position}, recorded {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .collect())
}

/// Replays the log into a `MemoryLedger` (its log is dropped batch by batch: memory follows the number of
/// streams and accounts, not of events) and checks the invariants and the balance snapshots on the way.
async fn replay_checks(
    pool: &PgPool,
    store: &PgEventStore,
    ledger: &str,
    head: i64,
    seal: Option<Seal>,
    mut deep: Option<&mut crate::verify_deep::DeepCheck>,
    findings: &mut Vec<String>,
) -> Result<ChainReport, CliError> {
    let mut verifier = ChainVerifier::new(ledger, seal);
    let (unpositioned, positioned): (Vec<i64>, Vec<i64>) = balances::positions(pool, ledger)
        .await
        .context("cannot read balance snapshots")?
        .into_iter()
        .partition(|p| *p < 1);
    // The ledger takes snapshots only at positions of its log: one before the first position can be
    // compared with nothing, so it is named (it would otherwise be read by as-of reports unchecked).
    for position in unpositioned {
        findings.push(format!(
            "balance snapshot at position {position} is not at a position of the log (the ledger never takes one there)"
        ));
    }
    let mut snapshots = positioned.into_iter().peekable();
    // Only a digest of the replayed balances is kept per snapshot position (a clone of every account's
    // balances per snapshot would make memory grow with the log).
    let mut due_snapshots: Vec<(i64, [u8; 32])> = Vec::new();
    let mut stream_snapshots = StreamSnapshots::load(pool, ledger).await?;
    let mut memory = MemoryLedger::new();
    let mut broken = false;
    // The start of the first open month as the log stands at each position: no entry recorded after a
    // close may be effective before it (the engine moves late money to it; a forged event would not).
    let mut first_open: Option<chrono::DateTime<chrono::Utc>> = None;
    let bar = replay::progress(head, "verifying");
    chain_scan(store, ledger, head, &mut verifier, findings, &bar, |d, metadata, findings| {
        if let ledger_core::Event::Periods(e) = &d.event {
            let state = ledger_core::aggregates::closed_periods::PeriodsState {
                closed_through: match e {
                    ledger_core::aggregates::closed_periods::PeriodsEvent::PeriodsClosed { through, .. } => Some(*through),
                    ledger_core::aggregates::closed_periods::PeriodsEvent::PeriodsReopened { closed_through, .. } => *closed_through,
                },
            };
            first_open = state.first_open_start();
        }
        if let Some(entry) = d.event.entry()
            && let Some(open) = first_open.filter(|open| entry.effective_at() < *open)
        {
            findings.push(format!(
                "event {} at position {} ({}) is effective {}, inside a closed period (open from {})",
                d.event_id,
                d.position,
                d.event_type,
                entry.effective_at().to_rfc3339(),
                open.to_rfc3339()
            ));
        }
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
                "SettlementRecorded",
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
        if broken {
            return Ok(());
        }
        // `evolve` is total for any history the engine wrote; an event that does not fit its stream's state
        // means the stored history was changed (an event removed or reordered): a finding, not a crash.
        if let Some(deep) = deep.as_deref_mut() {
            deep.before_apply(&memory, &d, metadata, findings);
        }
        let (position, event_id, stream) = (d.position, d.event_id, d.stream);
        let change = Change { stream: d.stream, event_id: d.event_id, event: d.event };
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| memory.apply(change)));
        if applied.is_err() {
            broken = true;
            findings.push(format!(
                "event {event_id} at position {position} does not fit its stream's state: history was changed; replay checks stop here"
            ));
            return Ok(());
        }
        stream_snapshots.check(&memory, &stream, findings);
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
        if matches!(&stored, Some((_, false))) {
            findings.push(format!("balance snapshot at position {position} does not match its digest (edited outside ledger.take_balance_snapshot, or the chain was re-hashed; reports ignore it)"));
        }
        let found = stored.map(|(s, _)| balances_from_json(&s.balances).map(|b| digest(&b)));
        if !matches!(&found, Some(Ok(d)) if *d == expected) {
            findings.push(format!("balance snapshot at position {position} differs from the replay of the log up to it"));
        }
    }
    if !broken {
        ledger_checks(&memory, findings);
    }
    Ok(verifier.finish())
}

/// The executor's stream snapshots (current fold version), each compared with the replayed state of its
/// stream when the replay reaches the snapshot's version: a snapshot saved through `ledger.save_snapshot`
/// with a made-up state has a valid digest, so only a recomputation catches it. A snapshot the replay does
/// not reach (its events were sequenced after `verify` read the head) is not checked this time;
/// `ledger.save_snapshot` refuses a version the stream does not have.
struct StreamSnapshots {
    pending: std::collections::HashMap<String, (u64, serde_json::Value)>,
}

impl StreamSnapshots {
    async fn load(pool: &PgPool, ledger: &str) -> Result<Self, CliError> {
        let rows =
            ledger_store::stream_snapshots(pool, ledger, ledger_store::executor::FOLD_VERSION)
                .await
                .context("cannot read the stream snapshots")?;
        let pending = rows
            .into_iter()
            .map(|(stream, version, state)| (stream, (u64::try_from(version).unwrap_or(0), state)))
            .collect();
        Ok(Self { pending })
    }

    /// Called after each replayed event of `stream`.
    fn check(&mut self, memory: &MemoryLedger, stream: &StreamId, findings: &mut Vec<String>) {
        if self.pending.is_empty() {
            return;
        }
        let key = stream.to_string();
        let version = memory.version(stream);
        let Some((at, stored)) = self.pending.get(&key) else {
            return;
        };
        if *at != version {
            return;
        }
        let replayed = memory.state(stream).map(serde_json::to_value);
        if !matches!(&replayed, Some(Ok(value)) if value == stored) {
            findings.push(format!(
                "snapshot of stream {key} at version {version} differs from the replay of its events (the executor would start from it)"
            ));
        }
        self.pending.remove(&key);
    }
}

/// Reads the chain's links with their events by position ranges (the next range read while this one is
/// checked), feeds every link to the chain verifier and every decodable event to `f`. An event that does
/// not decode is a finding (the chain check says more about it), not a reason to stop.
async fn chain_scan(
    store: &PgEventStore,
    ledger: &str,
    head: i64,
    verifier: &mut ChainVerifier,
    findings: &mut Vec<String>,
    bar: &indicatif::ProgressBar,
    mut f: impl FnMut(Decoded, &str, &mut Vec<String>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let fetch = |from: i64| {
        let (store, ledger) = (store.clone(), ledger.to_string());
        tokio::spawn(async move { store.read_chain_rows(&ledger, from, CHAIN_BATCH).await })
    };
    let mut cursor = 0;
    let mut next = (head > 0).then(|| fetch(cursor));
    while let Some(reading) = next.take() {
        let rows = reading
            .await
            .map_err(|e| CliError::environment(format!("a log reader failed: {e}")))?
            .context("cannot read the log")?;
        cursor += CHAIN_BATCH;
        if cursor < head {
            next = Some(fetch(cursor));
        }
        for row in rows {
            row.push_to(verifier, ledger);
            let Some(e) = row.event else { continue };
            let decoded = StreamId::from_str(&e.stream_id)
                .map_err(|x| x.to_string())
                .and_then(|stream| {
                    Event::from_stored_str(
                        &stream,
                        &e.event_type,
                        e.schema_version,
                        &e.payload_text,
                    )
                    .map(|event| (stream, event))
                    .map_err(|x| x.to_string())
                });
            match decoded {
                Ok((stream, event)) => {
                    let d = Decoded {
                        position: row.position,
                        event_id: e.event_id,
                        stream,
                        event_type: e.event_type,
                        event,
                    };
                    f(d, &e.metadata_text, findings)?;
                }
                Err(reason) => findings.push(format!(
                    "event {} at position {} does not decode: {reason}",
                    e.event_id, row.position
                )),
            }
        }
        bar.set_position(cursor.min(head).max(0) as u64);
    }
    bar.finish_and_clear();
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

/// What the store keeps beside the log: events committed but left unsequenced for longer than
/// `sequencer::STALE_AFTER` (invisible to every reader: no sequencer is running), and stream snapshots
/// whose digest does not match their content (the executor ignores those; someone edited them).
async fn store_checks(
    pool: &PgPool,
    ledger: &str,
    findings: &mut Vec<String>,
) -> Result<(), CliError> {
    let backlog = ledger_store::sequencer::backlog(pool)
        .await
        .context("cannot read the unsequenced backlog")?;
    for b in backlog
        .iter()
        .filter(|b| b.ledger_id == ledger && b.stale_events > 0)
    {
        findings.push(format!(
            "{} committed events are unsequenced for more than {} s (the oldest for {} ms): no sequencer is running; start `escrow-ledger sequencer run`",
            b.stale_events,
            ledger_store::sequencer::STALE_AFTER.as_secs(),
            b.oldest_age_ms
        ));
    }
    let doctored = ledger_store::snapshot_digest_mismatches(pool, ledger)
        .await
        .context("cannot read the stream snapshots")?;
    for (stream, fold_version) in doctored {
        findings.push(format!(
            "snapshot of stream {stream} (fold version {fold_version}) does not match its digest (edited outside ledger.save_snapshot; the executor ignores it)"
        ));
    }
    // Every recorded outcome is in the chain: an idempotency or inbox row without its log entry was written
    // beside the engine, and would answer a genuine request "duplicate" or "rejected".
    let unlogged = ledger_store::unlogged_outcomes(pool, ledger)
        .await
        .context("cannot check the idempotency and inbox rows against the log")?;
    findings.extend(unlogged);
    Ok(())
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
