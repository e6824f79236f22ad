//! Accountants' reports, all computed from the log through ledger-core (never from the read tables):
//! `trial-balance`, `balances`, `balance-sheet`, `income-statement`, `journal`, `register`.
//! Amounts are exact, in each currency's precision; currencies are never summed together.

use ledger_store::roles::RunRole;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use ledger_core::{Account, AccountKind, Balances, Currency, Side};
use ledger_store::PgEventStore;
use rust_decimal::Decimal;
use serde_json::json;

use crate::db::Global;
use crate::exit::CliError;
use crate::replay::{self, AsOf};

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

/// An exact amount of minor units as a decimal string at the currency's exponent ("1234.50").
pub fn amount(minor: i128, currency: Currency) -> String {
    Decimal::try_from_i128_with_scale(minor, u32::from(currency.exponent()))
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("{minor}e-{}", currency.exponent()))
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub as_of: AsOf,
    /// Only this currency (ISO 4217 code).
    #[arg(long)]
    pub currency: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One account's line: its net balance shown on the debit or the credit side.
struct Row {
    account: Account,
    currency: Currency,
    debit: i128,
    credit: i128,
}

fn parse_currency(code: &Option<String>) -> Result<Option<Currency>, CliError> {
    code.as_deref()
        .map(|c| {
            Currency::from_code(&c.to_ascii_uppercase())
                .map_err(|e| CliError::environment(e.to_string()))
        })
        .transpose()
}

/// Net balances per account (non-zero only), sorted by currency then account name.
fn rows(balances: &Balances, currency: Option<Currency>) -> Vec<Row> {
    let mut rows: Vec<Row> = balances
        .iter()
        .filter(|((_, c), _)| currency.is_none_or(|only| *c == only))
        .filter_map(|((account, currency), (d, c))| {
            let net = d - c;
            (net != 0).then(|| Row {
                account: *account,
                currency: *currency,
                debit: net.max(0),
                credit: (-net).max(0),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.currency.code(), a.account.to_string()).cmp(&(b.currency.code(), b.account.to_string()))
    });
    rows
}

async fn load(global: &Global, args: &ReportArgs) -> Result<(i64, Balances), CliError> {
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool.clone());
    crate::db::require_ledger(&store, &global.ledger).await?;
    let position = args.as_of.resolve(&store, &global.ledger).await?;
    let balances =
        replay::balances_at(&pool, &store, &global.ledger, position, &args.as_of).await?;
    Ok((position, balances))
}

pub async fn trial_balance(global: &Global, args: ReportArgs) -> Result<ExitCode, CliError> {
    let currency = parse_currency(&args.currency)?;
    let (position, balances) = load(global, &args).await?;
    let rows = rows(&balances, currency);
    let mut totals: BTreeMap<&str, (Currency, i128, i128)> = BTreeMap::new();
    for r in &rows {
        let t = totals
            .entry(r.currency.code())
            .or_insert((r.currency, 0, 0));
        t.1 += r.debit;
        t.2 += r.credit;
    }
    for (code, (_, d, c)) in &totals {
        if d != c {
            return Err(CliError::findings(format!(
                "the trial balance of {code} does not balance: debits {d} != credits {c}"
            )));
        }
    }
    let out = match args.format {
        Format::Json => json!({
            "ledger": global.ledger,
            "position": position,
            "rows": rows.iter().map(|r| json!({
                "account": r.account.to_string(),
                "currency": r.currency,
                "debit": amount(r.debit, r.currency),
                "credit": amount(r.credit, r.currency),
            })).collect::<Vec<_>>(),
            "totals": totals.values().map(|(c, d, k)| json!({"currency": c, "debit": amount(*d, *c), "credit": amount(*k, *c)})).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Csv => {
            let mut s = String::from("account,currency,debit,credit\n");
            for r in &rows {
                let _ = writeln!(s, "{},{},{},{}", r.account, r.currency, amount(r.debit, r.currency), amount(r.credit, r.currency));
            }
            s.trim_end().to_string()
        }
        Format::Table => {
            let mut s = format!("Trial balance of ledger {} at position {position}\n", global.ledger);
            for (code, (c, d, k)) in &totals {
                let _ = writeln!(s, "\n{code}\n{:<64} {:>18} {:>18}", "account", "debit", "credit");
                for r in rows.iter().filter(|r| r.currency == *c) {
                    let _ = writeln!(s, "{:<64} {:>18} {:>18}", r.account.to_string(), show(r.debit, *c), show(r.credit, *c));
                }
                let _ = writeln!(s, "{:<64} {:>18} {:>18}", "total", amount(*d, *c), amount(*k, *c));
            }
            s.trim_end().to_string()
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// An amount, or nothing for zero (the empty side of a trial-balance line).
fn show(minor: i128, currency: Currency) -> String {
    if minor == 0 {
        String::new()
    } else {
        amount(minor, currency)
    }
}

/// `balances`: each account's balance on its normal side, with its debits and credits.
pub async fn balances(global: &Global, args: ReportArgs) -> Result<ExitCode, CliError> {
    let currency = parse_currency(&args.currency)?;
    let (position, balances) = load(global, &args).await?;
    let mut lines: Vec<(Account, Currency, i128, i128)> = balances
        .iter()
        .filter(|((_, c), _)| currency.is_none_or(|only| *c == only))
        .map(|((a, c), (d, k))| (*a, *c, *d, *k))
        .collect();
    lines.sort_by(|a, b| (a.1.code(), a.0.to_string()).cmp(&(b.1.code(), b.0.to_string())));
    let balance = |a: &Account, d: i128, k: i128| {
        if a.normal_side() == Side::Debit {
            d - k
        } else {
            k - d
        }
    };
    let out = match args.format {
        Format::Json => json!({
            "ledger": global.ledger,
            "position": position,
            "balances": lines.iter().map(|(a, c, d, k)| json!({
                "account": a.to_string(), "currency": c, "debits": amount(*d, *c), "credits": amount(*k, *c),
                "balance": amount(balance(a, *d, *k), *c), "normal_side": a.normal_side(),
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Csv => {
            let mut s = String::from("account,currency,debits,credits,balance,normal_side\n");
            for (a, c, d, k) in &lines {
                let side = if a.normal_side() == Side::Debit { "debit" } else { "credit" };
                let _ = writeln!(s, "{a},{c},{},{},{},{side}", amount(*d, *c), amount(*k, *c), amount(balance(a, *d, *k), *c));
            }
            s.trim_end().to_string()
        }
        Format::Table => {
            let mut s = format!("Balances of ledger {} at position {position}\n", global.ledger);
            let _ = writeln!(s, "{:<64} {:>5} {:>18} {:>18} {:>18}", "account", "cur", "debits", "credits", "balance");
            for (a, c, d, k) in &lines {
                let _ = writeln!(s, "{:<64} {:>5} {:>18} {:>18} {:>18}", a.to_string(), c.code(), amount(*d, *c), amount(*k, *c), amount(balance(a, *d, *k), *c));
            }
            s.trim_end().to_string()
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A statement section: its title and its accounts with their amounts.
type Section = (&'static str, Vec<(String, i128)>);
type Sections = Vec<Section>;

/// Sections of a statement: (title, kinds, sign) where sign turns a debit-positive net into the section's
/// natural sign.
fn statement(
    balances: &Balances,
    currency: Option<Currency>,
    kinds: &[(&'static str, AccountKind)],
) -> BTreeMap<Currency, Sections> {
    let mut out: BTreeMap<Currency, Sections> = BTreeMap::new();
    for ((account, c), (d, k)) in balances.iter() {
        if currency.is_some_and(|only| only != *c) {
            continue;
        }
        let Some(index) = kinds.iter().position(|(_, kind)| *kind == account.kind()) else {
            continue;
        };
        let natural = if account.normal_side() == Side::Debit {
            d - k
        } else {
            k - d
        };
        if natural == 0 {
            continue;
        }
        let sections = out
            .entry(*c)
            .or_insert_with(|| kinds.iter().map(|(t, _)| (*t, Vec::new())).collect());
        sections[index].1.push((account.to_string(), natural));
    }
    for sections in out.values_mut() {
        for (_, lines) in sections.iter_mut() {
            lines.sort();
        }
    }
    out
}

fn print_statement(
    title: &str,
    global: &Global,
    position: i64,
    format: Format,
    data: &BTreeMap<Currency, Sections>,
    bottom: (&str, fn(&[Section]) -> i128),
) -> String {
    let total = |lines: &[(String, i128)]| lines.iter().map(|(_, v)| v).sum::<i128>();
    match format {
        Format::Json => json!({
            "ledger": global.ledger,
            "position": position,
            "currencies": data.iter().map(|(c, sections)| json!({
                "currency": c,
                "sections": sections.iter().map(|(name, lines)| json!({
                    "section": name,
                    "accounts": lines.iter().map(|(a, v)| json!({"account": a, "amount": amount(*v, *c)})).collect::<Vec<_>>(),
                    "total": amount(total(lines), *c),
                })).collect::<Vec<_>>(),
                bottom.0: amount((bottom.1)(sections), *c),
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Csv => {
            let mut s = String::from("currency,section,account,amount\n");
            for (c, sections) in data {
                for (name, lines) in sections {
                    for (a, v) in lines {
                        let _ = writeln!(s, "{c},{name},{a},{}", amount(*v, *c));
                    }
                    let _ = writeln!(s, "{c},{name},total,{}", amount(total(lines), *c));
                }
                let _ = writeln!(s, "{c},{},,{}", bottom.0, amount((bottom.1)(sections), *c));
            }
            s.trim_end().to_string()
        }
        Format::Table => {
            let mut s = format!("{title} of ledger {} at position {position}\n", global.ledger);
            for (c, sections) in data {
                let _ = writeln!(s, "\n{c}");
                for (name, lines) in sections {
                    let _ = writeln!(s, "{name}");
                    for (a, v) in lines {
                        let _ = writeln!(s, "  {:<62} {:>18}", a, amount(*v, *c));
                    }
                    let _ = writeln!(s, "  {:<62} {:>18}", format!("total {}", name.to_lowercase()), amount(total(lines), *c));
                }
                let _ = writeln!(s, "{:<64} {:>18}", bottom.0.replace('_', " "), amount((bottom.1)(sections), *c));
            }
            s.trim_end().to_string()
        }
    }
}

fn section_total(sections: &[Section], i: usize) -> i128 {
    sections
        .get(i)
        .map(|(_, l)| l.iter().map(|(_, v)| v).sum())
        .unwrap_or(0)
}

/// `balance-sheet`: assets = liabilities + retained earnings (revenue - expenses so far), per currency.
pub async fn balance_sheet(global: &Global, args: ReportArgs) -> Result<ExitCode, CliError> {
    let currency = parse_currency(&args.currency)?;
    let (position, balances) = load(global, &args).await?;
    let mut data = statement(
        &balances,
        currency,
        &[
            ("Assets", AccountKind::Asset),
            ("Liabilities", AccountKind::Liability),
        ],
    );
    let income = statement(
        &balances,
        currency,
        &[
            ("Revenue", AccountKind::Revenue),
            ("Expenses", AccountKind::Expense),
        ],
    );
    for (c, sections) in data.iter_mut() {
        let earned = income
            .get(c)
            .map(|s| section_total(s, 0) - section_total(s, 1))
            .unwrap_or(0);
        let retained = if earned == 0 {
            vec![]
        } else {
            vec![("Equity:RetainedEarnings".to_string(), earned)]
        };
        sections.push(("Equity", retained));
        let (assets, liabilities, equity) = (
            section_total(sections, 0),
            section_total(sections, 1),
            section_total(sections, 2),
        );
        if assets != liabilities + equity {
            return Err(CliError::findings(format!(
                "{c}: assets {assets} != liabilities {liabilities} + equity {equity}"
            )));
        }
    }
    // Equity is the retained earnings (revenue - expenses so far): the ledger keeps no equity account.
    let out = print_statement(
        "Balance sheet",
        global,
        position,
        args.format,
        &data,
        ("liabilities_and_equity", |s| {
            section_total(s, 1) + section_total(s, 2)
        }),
    );
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `income-statement`: revenue, expenses and net income per currency (with `--period`, of that period only).
pub async fn income_statement(global: &Global, mut args: ReportArgs) -> Result<ExitCode, CliError> {
    args.as_of.activity = true;
    let currency = parse_currency(&args.currency)?;
    let (position, balances) = load(global, &args).await?;
    let data = statement(
        &balances,
        currency,
        &[
            ("Revenue", AccountKind::Revenue),
            ("Expenses", AccountKind::Expense),
        ],
    );
    let out = print_statement(
        "Income statement",
        global,
        position,
        args.format,
        &data,
        ("net_income", |s| section_total(s, 0) - section_total(s, 1)),
    );
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct JournalArgs {
    #[command(flatten)]
    pub as_of: AsOf,
    /// Only entries effective at or after this time (RFC 3339).
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// Only entries effective before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
    /// Only entries touching this account or any account under it (e.g. `Liabilities:Escrow`).
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The gateway reference of an entry: our payment reference and the gateway whose clearing it touches.
fn reference(stream: &ledger_core::StreamId, entry: &ledger_core::JournalEntry) -> String {
    let gateway = entry.postings().iter().find_map(|p| match p.account {
        Account::GatewayClearing(g) => Some(g.to_string()),
        _ => None,
    });
    match (stream, gateway) {
        (ledger_core::StreamId::Payment(id), Some(g)) => format!("{g}:{id}"),
        (ledger_core::StreamId::Suspense(id), Some(g)) => format!("{g}:suspense:{id}"),
        (ledger_core::StreamId::Settlement(id), Some(g)) => format!("{g}:settlement:{id}"),
        _ => String::new(),
    }
}

fn matches_account(account: &Account, filter: &Option<String>) -> bool {
    match filter {
        None => true,
        Some(f) => {
            let name = account.to_string();
            name == *f || name.starts_with(&format!("{f}:"))
        }
    }
}

pub async fn journal(global: &Global, mut args: JournalArgs) -> Result<ExitCode, CliError> {
    args.as_of.activity = true;
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let position = args.as_of.resolve(&store, &global.ledger).await?;
    let bar = replay::progress(position, "reading the journal");
    let mut out = String::new();
    let mut json_entries = Vec::new();
    if args.format == Format::Csv {
        out.push_str("position,entry_id,event_id,event_type,reference,effective_at,recorded_at,account,currency,debit,credit,original_effective_at\n");
    } else if args.format == Format::Table {
        let _ = writeln!(
            out,
            "General journal of ledger {} up to position {position}",
            global.ledger
        );
    }
    replay::scan(&store, &global.ledger, 0, position, &bar, |d| {
        let Some(entry) = d.event.entry() else { return Ok(()) };
        let effective = entry.effective_at();
        let in_window = args.from.is_none_or(|f| effective >= f) && args.to.is_none_or(|t| effective < t);
        let touches = entry.postings().iter().any(|p| matches_account(&p.account, &args.account));
        if !(in_window && touches && args.as_of.includes_effective(effective)) {
            return Ok(());
        }
        let reference = reference(&d.stream, entry);
        let c = entry.currency();
        match args.format {
            Format::Json => json_entries.push(json!({
                "position": d.position, "entry_id": entry.id(), "event_id": d.event_id, "event_type": d.event_type,
                "reference": reference, "effective_at": effective, "recorded_at": entry.recorded_at(), "currency": c,
                "original_effective_at": entry.original_effective_at(),
                "postings": entry.postings().iter().map(|p| json!({"account": p.account.to_string(), "side": p.side, "amount": p.amount.to_decimal().to_string()})).collect::<Vec<_>>(),
            })),
            Format::Csv => {
                for p in entry.postings() {
                    let (debit, credit) = if p.side == Side::Debit { (p.amount.to_decimal().to_string(), String::new()) } else { (String::new(), p.amount.to_decimal().to_string()) };
                    let _ = writeln!(out, "{},{},{},{},{reference},{},{},{},{c},{debit},{credit},{}", d.position, entry.id(), d.event_id, d.event_type, effective.to_rfc3339(), entry.recorded_at().to_rfc3339(), p.account, crate::export::original(entry));
                }
            }
            Format::Table => {
                let moved = entry.original_effective_at().map(|t| format!(" (money moved {}, in a closed period)", t.to_rfc3339())).unwrap_or_default();
                let _ = writeln!(out, "\n#{} {} {} effective {}{moved} recorded {}", d.position, effective.format("%Y-%m-%d"), d.event_type, effective.to_rfc3339(), entry.recorded_at().to_rfc3339());
                let _ = writeln!(out, "  entry {} event {}{}", entry.id(), d.event_id, if reference.is_empty() { String::new() } else { format!(" ref {reference}") });
                for p in entry.postings() {
                    let (debit, credit) = if p.side == Side::Debit { (p.amount.to_decimal().to_string(), String::new()) } else { (String::new(), p.amount.to_decimal().to_string()) };
                    let _ = writeln!(out, "  {:<62} {:>16} {:>16} {c}", p.account.to_string(), debit, credit);
                }
            }
        }
        Ok(())
    })
    .await?;
    if args.format == Format::Json {
        out = json!({"ledger": global.ledger, "position": position, "entries": json_entries})
            .to_string();
    }
    println!("{}", out.trim_end());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The account, e.g. `Liabilities:Users:<uuid>:Available`.
    pub account: String,
    #[command(flatten)]
    pub as_of: AsOf,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `register ACCOUNT`: every posting to one account with its running balance (on the account's normal
/// side), per currency.
/// With `--period`, the postings inside it, their running balance carried from everything before it.
pub async fn register(global: &Global, args: RegisterArgs) -> Result<ExitCode, CliError> {
    let period_start = args.as_of.period.map(|p| p.start());
    let account =
        Account::from_str(&args.account).map_err(|e| CliError::environment(e.to_string()))?;
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let position = args.as_of.resolve(&store, &global.ledger).await?;
    let bar = replay::progress(position, "reading the register");
    let mut running: BTreeMap<Currency, i128> = BTreeMap::new();
    let mut lines = Vec::new();
    replay::scan(&store, &global.ledger, 0, position, &bar, |d| {
        let Some(entry) = d.event.entry() else {
            return Ok(());
        };
        if !args.as_of.includes_effective(entry.effective_at()) {
            return Ok(());
        }
        for p in entry.postings().iter().filter(|p| p.account == account) {
            let signed = if p.side == account.normal_side() {
                i128::from(p.amount.minor())
            } else {
                -i128::from(p.amount.minor())
            };
            let balance = running.entry(entry.currency()).or_insert(0);
            *balance += signed;
            if period_start.is_some_and(|start| entry.effective_at() < start) {
                continue; // before the period: only its balance is carried
            }
            lines.push((
                d.position,
                entry.effective_at(),
                d.event_type.clone(),
                entry.id(),
                entry.currency(),
                signed,
                *balance,
            ));
        }
        Ok(())
    })
    .await?;
    let out = match args.format {
        Format::Json => json!({
            "ledger": global.ledger, "position": position, "account": account.to_string(),
            "normal_side": account.normal_side(),
            "postings": lines.iter().map(|(pos, at, t, id, c, amt, bal)| json!({
                "position": pos, "effective_at": at, "event_type": t, "entry_id": id, "currency": c,
                "amount": amount(*amt, *c), "balance": amount(*bal, *c),
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Csv => {
            let mut s =
                String::from("position,effective_at,event_type,entry_id,currency,amount,balance\n");
            for (pos, at, t, id, c, amt, bal) in &lines {
                let _ = writeln!(
                    s,
                    "{pos},{},{t},{id},{c},{},{}",
                    at.to_rfc3339(),
                    amount(*amt, *c),
                    amount(*bal, *c)
                );
            }
            s.trim_end().to_string()
        }
        Format::Table => {
            let mut s = format!(
                "Register of {account} ({:?}-normal) up to position {position}\n",
                account.normal_side()
            );
            for (pos, at, t, _, c, amt, bal) in &lines {
                let _ = writeln!(
                    s,
                    "#{pos:<8} {} {:<28} {:>16} {:>16} {c}",
                    at.format("%Y-%m-%d"),
                    t,
                    amount(*amt, *c),
                    amount(*bal, *c)
                );
            }
            s.trim_end().to_string()
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
