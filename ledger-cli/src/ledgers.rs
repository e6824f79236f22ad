//! `ledgers create | list`: one ledger per marketplace, each with its own accounts and order.

use std::process::ExitCode;

use clap::Subcommand;
use ledger_store::{EventStore, PgEventStore, StoreError};

use crate::db::Global;
use crate::exit::{CliError, Context};

/// Longest ledger name accepted (names appear in stream keys, logs and URLs).
const LEDGER_NAME_BYTES_MAX: usize = 63;

#[derive(Subcommand, Debug)]
pub enum LedgersCommand {
    /// Creates a ledger: lower-case letters, digits, `-` and `_`, starting with a letter.
    Create { name: String },
    /// Lists the ledgers with their number of events.
    List,
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= LEDGER_NAME_BYTES_MAX
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub async fn run(global: &Global, command: LedgersCommand) -> Result<ExitCode, CliError> {
    let store = PgEventStore::new(global.pool().await?);
    match command {
        LedgersCommand::Create { name } => {
            if !valid_name(&name) {
                return Err(CliError::environment(format!(
                    "invalid ledger name {name:?}: use lower-case letters, digits, '-' and '_', starting with a letter, at most {LEDGER_NAME_BYTES_MAX} bytes"
                )));
            }
            match store.create_ledger(&name).await {
                Ok(()) => println!("created ledger {name}"),
                Err(StoreError::LedgerExists { .. }) => {
                    return Err(CliError::findings(format!("ledger {name} already exists")));
                }
                Err(e) => {
                    return Err(CliError::environment(format!(
                        "cannot create ledger {name}: {e}"
                    )));
                }
            }
        }
        LedgersCommand::List => {
            for ledger in store.list_ledgers().await.context("cannot list ledgers")? {
                let head = store
                    .head_position(&ledger)
                    .await
                    .context("cannot read the head")?;
                println!("{ledger}\t{head}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
