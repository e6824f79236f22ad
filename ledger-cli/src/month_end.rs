//! Month-end for accountants: `reconcile` (a gateway statement against the ledger, the run recorded in the
//! log), `period close|reopen|list` (closed months, events in the log) and `statement --user` (one user's
//! money per month). Everything is read from the log; the commands go through the executor like any other.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use ledger_core::aggregates::closed_periods::PeriodsEvent;
use ledger_core::aggregates::payment::PaymentEvent;
use ledger_core::aggregates::reconciliation::ReconciliationCounts;
use ledger_core::aggregates::settlement::SettlementEvent;
use ledger_core::aggregates::suspense::SuspenseEvent;
use ledger_core::{
    Account, Actor, Command, CommandEnvelope, Currency, Event, Gateway, JournalEntry, Money, Month,
    MonthRange, StreamId,
};
use ledger_gateway::reconcile::{Movement, MovementKind, Report, reconcile, statement_range};
use ledger_gateway::statement::{StatementFormat, parse};
use ledger_store::roles::RunRole;
use ledger_store::{CommandOutcome, EventStore, PgEventStore};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::replay;
use crate::reports::{Format, amount};

/// The money-moved time of an entry: its original time when it was moved out of a closed period.
fn moved_at(entry: &JournalEntry) -> DateTime<Utc> {
    entry
        .original_effective_at()
        .unwrap_or(entry.effective_at())
}

async fn execute(global: &Global, actor: Actor, command: Command) -> Result<usize, CliError> {
    let (_, executor) = global.executor_as(RunRole::Writer).await?;
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor,
        at: Utc::now(),
        command,
    };
    match executor
        .execute(&env, None)
        .await
        .context("cannot run the command")?
    {
        CommandOutcome::Accepted { events, .. } => Ok(events.len()),
        CommandOutcome::Rejected { rejection, .. } => Err(CliError::findings(format!(
            "refused ({}): {}",
            rejection.code, rejection.message
        ))),
    }
}

// ---------------------------------------------------------------------------------------------------------
// period

#[derive(Subcommand, Debug)]
pub enum PeriodCommand {
    /// Closes every month up to and including `--through` (UTC calendar months).
    Close {
        #[arg(long)]
        through: Month,
        /// The operator closing them (recorded as given).
        #[arg(long)]
        #[arg(value_parser = crate::exit::uuid_arg)]
        operator: Uuid,
    },
    /// Re-opens the months from `--from` on (an operator's explicit, logged decision).
    Reopen {
        #[arg(long)]
        from: Month,
        #[arg(long)]
        #[arg(value_parser = crate::exit::uuid_arg)]
        operator: Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Lists the closes and re-openings, and what is closed now.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub async fn period(global: &Global, command: PeriodCommand) -> Result<ExitCode, CliError> {
    match command {
        PeriodCommand::Close { through, operator } => {
            let n = execute(
                global,
                Actor::Admin(operator),
                Command::ClosePeriods { through },
            )
            .await?;
            println!(
                "closed through {through}: entries for money that moved before {} now post at that time ({n} events appended)",
                through.end().to_rfc3339()
            );
        }
        PeriodCommand::Reopen {
            from,
            operator,
            reason,
        } => {
            let command = Command::ReopenPeriods { from, reason };
            let n = execute(global, Actor::Admin(operator), command).await?;
            println!("re-opened from {from} ({n} events appended)");
        }
        PeriodCommand::List { format } => period_list(global, format).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn period_list(global: &Global, format: Format) -> Result<(), CliError> {
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let events = store
        .read_stream(&global.ledger, &StreamId::Periods.to_string(), 0, 100_000)
        .await
        .context("cannot read the periods")?;
    let mut rows = Vec::new();
    let mut closed_through: Option<Month> = None;
    for record in events {
        let event = Event::from_stored(
            &StreamId::Periods,
            &record.event_type,
            record.schema_version,
            record.payload,
        )
        .map_err(|e| CliError::findings(e.to_string()))?;
        let Event::Periods(event) = event else {
            continue;
        };
        let (action, month, operator, reason) = match event {
            PeriodsEvent::PeriodsClosed { through, operator } => {
                closed_through = Some(through);
                ("closed through", through, operator, String::new())
            }
            PeriodsEvent::PeriodsReopened {
                from,
                closed_through: now,
                operator,
                reason,
            } => {
                closed_through = now;
                ("re-opened from", from, operator, reason)
            }
        };
        rows.push((record.recorded_at, action, month, operator, reason));
    }
    let closed = closed_through.map(|m| m.to_string());
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "ledger": global.ledger,
                "closed_through": closed,
                "first_open_month": closed_through.map(|m| m.next().to_string()),
                "history": rows.iter().map(|(at, action, month, op, reason)| json!({
                    "at": at, "action": action.replace(' ', "_"), "month": month.to_string(), "operator": op, "reason": reason,
                })).collect::<Vec<_>>(),
            })
        ),
        Format::Csv => {
            println!("at,action,month,operator,reason");
            for (at, action, month, op, reason) in &rows {
                println!(
                    "{},{},{month},{op},{}",
                    at.to_rfc3339(),
                    action.replace(' ', "_"),
                    reason.replace(',', ";")
                );
            }
        }
        Format::Table => {
            match closed_through {
                Some(m) => println!("closed through {m}; first open month {}", m.next()),
                None => println!("no period is closed"),
            }
            for (at, action, month, op, reason) in &rows {
                println!("{} {action} {month} by {op} {reason}", at.to_rfc3339());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// reconcile

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReconcileFormat {
    #[default]
    Table,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatementKind {
    /// `payment_reference,kind,gross,fee,currency,occurred_at`.
    #[default]
    Generic,
    /// Stripe's Balance report, itemized CSV.
    Stripe,
    /// Paystack's Settlements API responses (JSON).
    Paystack,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// The gateway whose statement this is (stripe, paystack, flutterwave, fincra, normalized).
    #[arg(long)]
    pub gateway: String,
    /// The statement file.
    #[arg(long)]
    pub statement: PathBuf,
    /// The statement's format.
    #[arg(long, value_enum, default_value_t = StatementKind::Generic)]
    pub statement_format: StatementKind,
    #[arg(long, value_enum, default_value_t = ReconcileFormat::Table)]
    pub format: ReconcileFormat,
    /// The operator who ran it (recorded with the run; without it the run is recorded as the system's).
    #[arg(long)]
    #[arg(value_parser = crate::exit::uuid_arg)]
    pub operator: Option<Uuid>,
    /// The period the statement covers (its own first and last line's times when left out).
    #[arg(long)]
    pub period: Option<MonthRange>,
}

/// What the ledger booked at a gateway: its movements, and per currency every entry's effect on the clearing
/// account with the time the money moved.
#[derive(Default)]
struct LedgerSide {
    movements: Vec<Movement>,
    clearing: Vec<(Currency, DateTime<Utc>, i128)>,
}

/// A payment's kind, as its first event says.
fn payment_kind(event: &PaymentEvent) -> Option<MovementKind> {
    match event {
        PaymentEvent::DepositInitiated { .. } => Some(MovementKind::Deposit),
        PaymentEvent::PayoutRequested { .. } => Some(MovementKind::Payout),
        PaymentEvent::CardRefundRequested { .. } => Some(MovementKind::Refund),
        _ => None,
    }
}

/// The movement an event of the log is at `gateway`, if it is one the statements list.
fn movement_of(
    stream: &StreamId,
    event: &Event,
    entry: &JournalEntry,
    gateway: Gateway,
    kinds: &BTreeMap<Uuid, MovementKind>,
) -> Option<Movement> {
    let clearing = Account::GatewayClearing(gateway);
    let out_of_clearing = Money::from_minor(-entry.effect_on(&clearing), entry.currency());
    let less =
        |fee: Money| Money::from_minor(out_of_clearing.minor() - fee.minor(), fee.currency());
    let (reference, kind, gross, fee) = match (stream, event) {
        (StreamId::Payment(id), Event::Payment(p)) => match p {
            PaymentEvent::DepositSucceeded {
                amount,
                gateway_fee,
                ..
            } => (id.to_string(), MovementKind::Deposit, *amount, *gateway_fee),
            PaymentEvent::PayoutCompleted { gateway_fee, .. }
            | PaymentEvent::CardRefundProcessed { gateway_fee, .. } => {
                let kind = *kinds.get(id)?;
                (id.to_string(), kind, less(*gateway_fee), *gateway_fee)
            }
            PaymentEvent::SuccessAfterFailure { amount, .. } => {
                let zero = Money::zero(amount.currency());
                (id.to_string(), *kinds.get(id)?, *amount, zero)
            }
            // A refund the gateway made unasked: money out of clearing all the same.
            PaymentEvent::UnrequestedRefundHeld { .. } => {
                let zero = Money::zero(entry.currency());
                (id.to_string(), MovementKind::Refund, out_of_clearing, zero)
            }
            PaymentEvent::ChargebackOpened { amount, fee, .. } => {
                (id.to_string(), MovementKind::Chargeback, *amount, *fee)
            }
            _ => return None,
        },
        (
            _,
            Event::Settlement(SettlementEvent::SettlementRecorded {
                settlement_id,
                amount,
                fee,
                ..
            }),
        ) => (
            settlement_id.clone(),
            MovementKind::Settlement,
            *amount,
            *fee,
        ),
        (
            _,
            Event::Suspense(SuspenseEvent::SuspenseRecorded {
                reference, amount, ..
            }),
        ) => (
            reference.clone(),
            MovementKind::Deposit,
            *amount,
            Money::zero(amount.currency()),
        ),
        _ => return None,
    };
    Some(Movement {
        reference,
        kind,
        gross,
        fee,
        occurred_at: moved_at(entry),
    })
}

async fn ledger_side(
    store: &PgEventStore,
    ledger: &str,
    gateway: Gateway,
) -> Result<LedgerSide, CliError> {
    let head = store
        .head_position(ledger)
        .await
        .context("cannot read the ledger head")?;
    let bar = replay::progress(head, "reading the ledger");
    let mut side = LedgerSide::default();
    let mut kinds: BTreeMap<Uuid, MovementKind> = BTreeMap::new();
    let clearing = Account::GatewayClearing(gateway);
    replay::scan(store, ledger, 0, head, &bar, |d| {
        if let (StreamId::Payment(id), Event::Payment(p)) = (&d.stream, &d.event)
            && let Some(kind) = payment_kind(p)
        {
            kinds.insert(*id, kind);
        }
        let Some(entry) = d.event.entry() else {
            return Ok(());
        };
        let effect = entry.effect_on(&clearing);
        if effect == 0 && !entry.postings().iter().any(|p| p.account == clearing) {
            return Ok(());
        }
        side.clearing
            .push((entry.currency(), moved_at(entry), i128::from(effect)));
        if let Some(m) = movement_of(&d.stream, &d.event, entry, gateway, &kinds) {
            side.movements.push(m);
        }
        Ok(())
    })
    .await?;
    Ok(side)
}

fn side_json(m: &Movement) -> serde_json::Value {
    let c = m.gross.currency();
    json!({
        "gross": amount(i128::from(m.gross.minor()), c),
        "fee": amount(i128::from(m.fee.minor()), c),
        "occurred_at": m.occurred_at,
    })
}

fn item_json(statement: Option<&Movement>, ledger: Option<&Movement>) -> serde_json::Value {
    let any = statement.or(ledger).expect("one side at least");
    json!({
        "payment_reference": any.reference,
        "kind": any.kind,
        "currency": any.gross.currency(),
        "statement": statement.map(side_json),
        "ledger": ledger.map(side_json),
    })
}

/// Per currency: the ledger's clearing balance at the end of the range, its net movement within it, and the
/// statement's net (deposits in, everything else out).
fn clearing_summary(
    side: &LedgerSide,
    lines: &[Movement],
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<serde_json::Value> {
    let statement_net = ledger_gateway::reconcile::statement_net_minor(lines);
    let mut per: BTreeMap<Currency, (i128, i128)> = BTreeMap::new();
    for (c, at, effect) in &side.clearing {
        let (balance, net) = per.entry(*c).or_default();
        let before_end = range.is_none_or(|(_, to)| *at <= to);
        let inside = range.is_none_or(|(from, to)| *at >= from && *at <= to);
        if before_end {
            *balance += effect;
        }
        if inside {
            *net += effect;
        }
    }
    for code in statement_net.keys() {
        if let Ok(c) = Currency::from_code(code) {
            per.entry(c).or_default();
        }
    }
    per.iter()
        .map(|(c, (balance, net))| {
            let stated = statement_net.get(c.code()).copied().unwrap_or(0);
            json!({
                "currency": c,
                "ledger_balance_at_end": amount(*balance, *c),
                "ledger_net_in_range": amount(*net, *c),
                "statement_net": amount(stated, *c),
                "difference": amount(net - stated, *c),
            })
        })
        .collect()
}

fn report_json(
    report: &Report,
    gateway: Gateway,
    digest: &str,
    clearing: Vec<serde_json::Value>,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> serde_json::Value {
    let pairs = |list: &[ledger_gateway::reconcile::Pair]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|p| item_json(Some(&p.statement), Some(&p.ledger)))
            .collect()
    };
    json!({
        "gateway": gateway.to_string(),
        "statement_sha256": digest,
        "from": range.map(|r| r.0),
        "to": range.map(|r| r.1),
        "matched": pairs(&report.matched),
        "amount_mismatch": pairs(&report.amount_mismatch),
        "only_at_gateway": report.only_at_gateway.iter().map(|m| item_json(Some(m), None)).collect::<Vec<_>>(),
        "only_in_ledger": report.only_in_ledger.iter().map(|m| item_json(None, Some(m))).collect::<Vec<_>>(),
        "clearing": clearing,
    })
}

fn report_table(value: &serde_json::Value) -> String {
    let mut s = format!(
        "Reconciliation of {} statement {} ({} .. {})\n",
        value["gateway"].as_str().unwrap_or(""),
        &value["statement_sha256"].as_str().unwrap_or("")[..12],
        value["from"].as_str().unwrap_or("-"),
        value["to"].as_str().unwrap_or("-"),
    );
    let side = |v: &serde_json::Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            format!(
                "{} fee {}",
                v["gross"].as_str().unwrap_or(""),
                v["fee"].as_str().unwrap_or("")
            )
        }
    };
    for list in [
        "matched",
        "amount_mismatch",
        "only_at_gateway",
        "only_in_ledger",
    ] {
        let items = value[list].as_array().cloned().unwrap_or_default();
        let _ = writeln!(s, "\n{list}: {}", items.len());
        for item in &items {
            let _ = writeln!(
                s,
                "  {:<40} {:<10} {:<4} statement {:<24} ledger {}",
                item["payment_reference"].as_str().unwrap_or(""),
                item["kind"].as_str().unwrap_or(""),
                item["currency"].as_str().unwrap_or(""),
                side(&item["statement"]),
                side(&item["ledger"]),
            );
        }
    }
    let _ = writeln!(s, "\nclearing");
    for c in value["clearing"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            s,
            "  {} ledger balance at end {}, ledger net in range {}, statement net {}, difference {}",
            c["currency"].as_str().unwrap_or(""),
            c["ledger_balance_at_end"].as_str().unwrap_or(""),
            c["ledger_net_in_range"].as_str().unwrap_or(""),
            c["statement_net"].as_str().unwrap_or(""),
            c["difference"].as_str().unwrap_or(""),
        );
    }
    s.trim_end().to_string()
}

pub async fn reconcile_run(global: &Global, args: ReconcileArgs) -> Result<ExitCode, CliError> {
    let gateway = Gateway::from_component(&args.gateway)
        .ok_or_else(|| CliError::environment(format!("unknown gateway {:?}", args.gateway)))?;
    let bytes = std::fs::read(&args.statement).context(format!(
        "cannot read the statement {}",
        args.statement.display()
    ))?;
    let (format, format_name) = match args.statement_format {
        StatementKind::Generic => (StatementFormat::Generic, "generic"),
        StatementKind::Stripe => (StatementFormat::Stripe, "stripe"),
        StatementKind::Paystack => (StatementFormat::Paystack, "paystack"),
    };
    let statement = parse(format, &bytes).map_err(|e| {
        CliError::environment(format!(
            "cannot read the statement {}: {e}",
            args.statement.display()
        ))
    })?;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    let (pool, _) = global.executor_as(RunRole::Writer).await?;
    let store = PgEventStore::new(pool);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let side = ledger_side(&store, &global.ledger, gateway).await?;
    let range = match args.period {
        Some(p) => Some((p.start(), p.end() - chrono::Duration::microseconds(1))),
        None => statement_range(&statement.lines),
    };
    let report = reconcile(&statement.lines, &side.movements, range);
    let clearing = clearing_summary(&side, &statement.lines, range);
    let mut value = report_json(&report, gateway, &digest, clearing, range);
    value["skipped"] = json!(
        statement
            .skipped
            .iter()
            .map(|(line, why)| json!({"line": line, "why": why}))
            .collect::<Vec<_>>()
    );
    let counts = ReconciliationCounts {
        matched: report.matched.len() as u64,
        amount_mismatch: report.amount_mismatch.len() as u64,
        only_at_gateway: report.only_at_gateway.len() as u64,
        only_in_ledger: report.only_in_ledger.len() as u64,
    };
    let actor = args.operator.map_or(Actor::System, Actor::Admin);
    let record = Command::RecordReconciliation {
        reconciliation_id: Uuid::new_v4(),
        gateway,
        statement_sha256: digest.clone(),
        format: format_name.into(),
        from: range.map(|r| r.0),
        to: range.map(|r| r.1),
        counts,
    };
    execute(global, actor, record).await?;
    match args.format {
        ReconcileFormat::Json => println!("{value}"),
        ReconcileFormat::Table => {
            println!("{}", report_table(&value));
            for (line, why) in &statement.skipped {
                println!("skipped line {line}: {why}");
            }
        }
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::EXIT_FINDINGS)
    })
}

// ---------------------------------------------------------------------------------------------------------
// statement --user

#[derive(Args, Debug)]
pub struct StatementArgs {
    /// The user (their id).
    #[arg(long)]
    #[arg(value_parser = crate::exit::uuid_arg)]
    pub user: Uuid,
    /// A month (`2026-01`) or a range of months (`2026-01..2026-03`), UTC.
    #[arg(long)]
    pub period: MonthRange,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One movement of a user's money.
struct Line {
    position: i64,
    effective_at: DateTime<Utc>,
    original_effective_at: Option<DateTime<Utc>>,
    event_type: String,
    account: String,
    amount: i128,
    balance: i128,
    counterpart: String,
    reference: String,
}

#[derive(Default)]
struct PerCurrency {
    opening: i128,
    lines: Vec<Line>,
}

fn is_users(account: &Account, user: Uuid) -> bool {
    matches!(account, Account::UserAvailable { user: u } | Account::UserPending { user: u } if *u == user)
}

pub async fn statement(global: &Global, args: StatementArgs) -> Result<ExitCode, CliError> {
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let head = store
        .head_position(&global.ledger)
        .await
        .context("cannot read the ledger head")?;
    let bar = replay::progress(head, "reading the user's movements");
    let (start, end) = (args.period.start(), args.period.end());
    let mut per: BTreeMap<Currency, PerCurrency> = BTreeMap::new();
    replay::scan(&store, &global.ledger, 0, head, &bar, |d| {
        let Some(entry) = d.event.entry() else {
            return Ok(());
        };
        let at = entry.effective_at();
        if at >= end {
            return Ok(());
        }
        let counterpart: Vec<String> = entry
            .postings()
            .iter()
            .filter(|p| !is_users(&p.account, args.user))
            .map(|p| p.account.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for p in entry
            .postings()
            .iter()
            .filter(|p| is_users(&p.account, args.user))
        {
            let minor = i128::from(p.amount.minor());
            let signed = if p.side == p.account.normal_side() {
                minor
            } else {
                -minor
            };
            let currency = per.entry(entry.currency()).or_default();
            if at < start {
                currency.opening += signed;
                continue;
            }
            let balance =
                currency.opening + currency.lines.iter().map(|l| l.amount).sum::<i128>() + signed;
            currency.lines.push(Line {
                position: d.position,
                effective_at: at,
                original_effective_at: entry.original_effective_at(),
                event_type: d.event_type.clone(),
                account: p.account.to_string(),
                amount: signed,
                balance,
                counterpart: counterpart.join(" "),
                reference: d.stream.to_string(),
            });
        }
        Ok(())
    })
    .await?;
    println!("{}", render_statement(global, &args, &per));
    Ok(ExitCode::SUCCESS)
}

fn render_statement(
    global: &Global,
    args: &StatementArgs,
    per: &BTreeMap<Currency, PerCurrency>,
) -> String {
    let closing = |p: &PerCurrency| p.opening + p.lines.iter().map(|l| l.amount).sum::<i128>();
    match args.format {
        Format::Json => json!({
            "ledger": global.ledger,
            "user": args.user,
            "period": args.period.to_string(),
            "currencies": per.iter().map(|(c, p)| json!({
                "currency": c,
                "opening_balance": amount(p.opening, *c),
                "movements": p.lines.iter().map(|l| json!({
                    "position": l.position, "effective_at": l.effective_at, "original_effective_at": l.original_effective_at,
                    "event_type": l.event_type, "account": l.account, "amount": amount(l.amount, *c),
                    "balance": amount(l.balance, *c), "counterpart": l.counterpart, "reference": l.reference,
                })).collect::<Vec<_>>(),
                "closing_balance": amount(closing(p), *c),
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Csv => {
            let mut s = String::from("currency,line,position,effective_at,event_type,account,amount,balance,counterpart,reference,original_effective_at\n");
            for (c, p) in per {
                let _ = writeln!(s, "{c},opening,,{},,,,{},,,", args.period.start().to_rfc3339(), amount(p.opening, *c));
                for l in &p.lines {
                    let original = l.original_effective_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                    let _ = writeln!(s, "{c},movement,{},{},{},{},{},{},{},{},{original}", l.position, l.effective_at.to_rfc3339(), l.event_type, l.account, amount(l.amount, *c), amount(l.balance, *c), l.counterpart, l.reference);
                }
                let _ = writeln!(s, "{c},closing,,{},,,,{},,,", args.period.end().to_rfc3339(), amount(closing(p), *c));
            }
            s.trim_end().to_string()
        }
        Format::Table => {
            let mut s = format!("Statement of user {} for {} (ledger {})\n", args.user, args.period, global.ledger);
            for (c, p) in per {
                let _ = writeln!(s, "\n{c}\n  opening balance {:>46}", amount(p.opening, *c));
                for l in &p.lines {
                    let _ = writeln!(s, "  {} {:<24} {:>16} {:>16}  {} <- {} ({})", l.effective_at.format("%Y-%m-%d"), l.event_type, amount(l.amount, *c), amount(l.balance, *c), l.account, l.counterpart, l.reference);
                }
                let _ = writeln!(s, "  closing balance {:>46}", amount(closing(p), *c));
            }
            if per.is_empty() {
                s.push_str("\nno movement");
            }
            s.trim_end().to_string()
        }
    }
}
