//! `export --to csv|json|hledger|beancount`: the journal in formats other tools can re-check.
//!
//! Account names: hledger takes the ledger's names unchanged. Beancount wants every component to start with
//! a capital letter or a digit, so ids (lower-case UUIDs) are written in upper case: `Liabilities:Users:
//! 8F0C...:Available`. The mapping is reversible: lower-casing a UUID component gives the ledger's name back
//! (the ledger always prints UUIDs in lower case, and no other component changes).

use ledger_store::roles::RunRole;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use ledger_core::{Account, Side};
use ledger_store::PgEventStore;
use serde_json::json;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::replay::{self, AsOf, Decoded};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
    Hledger,
    Beancount,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub to: ExportFormat,
    #[command(flatten)]
    pub as_of: AsOf,
    /// Write here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// The beancount name of an account (see the module docs for the reversible rule).
pub fn beancount_account(account: &Account) -> String {
    let bank = matches!(account, Account::Bank(_));
    account
        .to_string()
        .split(':')
        .enumerate()
        .map(|(i, c)| {
            // UUIDs and bank account names (the third component of `Assets:Bank:<name>`) are lower case in
            // the ledger: upper-cased here, lower-cased back by `from_beancount_account`.
            if Uuid::parse_str(c).is_ok() || (bank && i == 2) {
                c.to_ascii_uppercase()
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// The ledger's name of a beancount account written by `beancount_account` (the rule's inverse).
#[cfg_attr(not(test), allow(dead_code))]
pub fn from_beancount_account(name: &str) -> String {
    let bank = name.starts_with("Assets:Bank:");
    name.split(':')
        .enumerate()
        .map(|(i, c)| {
            if Uuid::parse_str(c).is_ok() || (bank && i == 2) {
                c.to_ascii_lowercase()
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// When the money really moved, for an entry moved out of a closed period (else empty).
pub fn original(entry: &ledger_core::JournalEntry) -> String {
    entry
        .original_effective_at()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn signed(p: &ledger_core::Posting) -> String {
    let amount = p.amount.to_decimal();
    if p.side == Side::Debit {
        amount.to_string()
    } else {
        (-amount).to_string()
    }
}

fn write_entry(
    out: &mut dyn Write,
    to: ExportFormat,
    d: &Decoded,
    first: &mut bool,
) -> std::io::Result<()> {
    let Some(entry) = d.event.entry() else {
        return Ok(());
    };
    let date = entry.effective_at().format("%Y-%m-%d");
    let c = entry.currency();
    match to {
        ExportFormat::Csv => {
            for p in entry.postings() {
                let (debit, credit) = if p.side == Side::Debit {
                    (p.amount.to_decimal().to_string(), String::new())
                } else {
                    (String::new(), p.amount.to_decimal().to_string())
                };
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{c},{debit},{credit},{}",
                    d.position,
                    entry.id(),
                    d.event_id,
                    d.event_type,
                    entry.effective_at().to_rfc3339(),
                    entry.recorded_at().to_rfc3339(),
                    p.account,
                    original(entry),
                )?;
            }
        }
        ExportFormat::Json => {
            let value = json!({
                "position": d.position, "entry_id": entry.id(), "event_id": d.event_id, "event_type": d.event_type,
                "stream": d.stream.to_string(), "effective_at": entry.effective_at(), "recorded_at": entry.recorded_at(), "currency": c,
                "original_effective_at": entry.original_effective_at(),
                "postings": entry.postings().iter().map(|p| json!({"account": p.account.to_string(), "side": p.side, "amount": p.amount.to_decimal().to_string()})).collect::<Vec<_>>(),
            });
            write!(out, "{}{}", if *first { "\n" } else { ",\n" }, value)?;
            *first = false;
        }
        ExportFormat::Hledger => {
            writeln!(
                out,
                "{date} {}  ; entry:{} event:{} position:{} stream:{}{}",
                d.event_type,
                entry.id(),
                d.event_id,
                d.position,
                d.stream,
                entry
                    .original_effective_at()
                    .map(|t| format!(" original_effective_at:{}", t.to_rfc3339()))
                    .unwrap_or_default()
            )?;
            for p in entry.postings() {
                writeln!(out, "    {}  {} {c}", p.account, signed(p))?;
            }
            writeln!(out)?;
        }
        ExportFormat::Beancount => {
            writeln!(
                out,
                "{date} * \"{}\" \"position {}\"",
                d.event_type, d.position
            )?;
            writeln!(
                out,
                "  entry_id: \"{}\"\n  event_id: \"{}\"",
                entry.id(),
                d.event_id
            )?;
            if let Some(original) = entry.original_effective_at() {
                writeln!(
                    out,
                    "  original_effective_at: \"{}\"",
                    original.to_rfc3339()
                )?;
            }
            for p in entry.postings() {
                writeln!(
                    out,
                    "  {}  {} {c}",
                    beancount_account(&p.account),
                    signed(p)
                )?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

pub async fn run(global: &Global, args: ExportArgs) -> Result<ExitCode, CliError> {
    let pool = global.pool_as(RunRole::Auditor).await?;
    let store = PgEventStore::new(pool);
    crate::db::require_ledger(&store, &global.ledger).await?;
    let position = args.as_of.resolve(&store, &global.ledger).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).context(format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let io = |e: std::io::Error| CliError::environment(format!("cannot write the export: {e}"));
    match args.to {
        ExportFormat::Csv => writeln!(out, "position,entry_id,event_id,event_type,effective_at,recorded_at,account,currency,debit,credit,original_effective_at").map_err(io)?,
        ExportFormat::Json => write!(out, "{{\"ledger\": {}, \"position\": {position}, \"entries\": [", json!(global.ledger)).map_err(io)?,
        ExportFormat::Hledger => writeln!(out, "; escrow-ledger: ledger {} up to position {position}; dates are effective dates\n", global.ledger).map_err(io)?,
        ExportFormat::Beancount => beancount_header(&store, global, position, &args.as_of, &mut out).await?,
    }
    let bar = replay::progress(position, "exporting");
    let mut first = true;
    replay::scan(&store, &global.ledger, 0, position, &bar, |d| {
        let included = d
            .event
            .entry()
            .is_some_and(|e| args.as_of.includes_effective(e.effective_at()));
        if included {
            write_entry(&mut out, args.to, &d, &mut first).map_err(io)
        } else {
            Ok(())
        }
    })
    .await?;
    if args.to == ExportFormat::Json {
        writeln!(out, "\n]}}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(ExitCode::SUCCESS)
}

/// Beancount needs every account opened on or before its first use: a first pass collects them.
async fn beancount_header(
    store: &PgEventStore,
    global: &Global,
    position: i64,
    as_of: &AsOf,
    out: &mut Box<dyn Write>,
) -> Result<(), CliError> {
    let mut accounts: BTreeSet<String> = BTreeSet::new();
    let mut currencies: BTreeSet<String> = BTreeSet::new();
    let mut earliest: Option<NaiveDate> = None;
    let bar = replay::progress(position, "collecting accounts");
    replay::scan(store, &global.ledger, 0, position, &bar, |d| {
        if let Some(entry) = d
            .event
            .entry()
            .filter(|e| as_of.includes_effective(e.effective_at()))
        {
            let date = entry.effective_at().date_naive();
            earliest = Some(earliest.map_or(date, |e| e.min(date)));
            currencies.insert(entry.currency().to_string());
            accounts.extend(
                entry
                    .postings()
                    .iter()
                    .map(|p| beancount_account(&p.account)),
            );
        }
        Ok(())
    })
    .await?;
    let io = |e: std::io::Error| CliError::environment(format!("cannot write the export: {e}"));
    writeln!(
        out,
        "; escrow-ledger: ledger {} up to position {position}; dates are effective dates",
        global.ledger
    )
    .map_err(io)?;
    writeln!(
        out,
        "; account ids are upper-cased UUIDs (lower-case them to get the ledger's names)\n"
    )
    .map_err(io)?;
    writeln!(out, "option \"title\" \"escrow-ledger {}\"", global.ledger).map_err(io)?;
    let opened =
        earliest.unwrap_or_else(|| NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date"));
    for currency in &currencies {
        writeln!(out, "{opened} commodity {currency}").map_err(io)?;
    }
    for account in &accounts {
        writeln!(out, "{opened} open {account}").map_err(io)?;
    }
    writeln!(out).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::Gateway;

    #[test]
    fn beancount_names_start_with_a_capital_or_digit_and_map_back() {
        let user = Uuid::parse_str("a1b2c3d4-0000-4000-8000-00000000beef").unwrap();
        let project = Uuid::parse_str("ffffffff-0000-4000-8000-000000000001").unwrap();
        for account in [
            Account::UserAvailable { user },
            Account::Escrow {
                project,
                milestone: 2,
            },
            Account::GatewayClearing(Gateway::Stripe),
            Account::Bank(ledger_core::BankName::new("main-2").unwrap()),
            Account::Suspense,
        ] {
            let name = beancount_account(&account);
            for component in name.split(':') {
                let first = component.chars().next().unwrap();
                assert!(
                    first.is_ascii_uppercase() || first.is_ascii_digit(),
                    "{name}"
                );
                assert!(
                    component
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                    "{name}"
                );
            }
            assert_eq!(from_beancount_account(&name), account.to_string());
        }
    }
}
