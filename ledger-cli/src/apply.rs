//! `apply FILE|-`: executes commands given as JSON Lines and prints one result per line.
//!
//! Each line is one object:
//!
//! ```json
//! {"actor": {"kind": "user", "id": "<uuid>"}, "command": {"type": "fund_milestone", "project_id": "<uuid>", "milestone": 1},
//!  "idempotency_key": "optional", "at": "optional RFC 3339 time", "command_id": "optional uuid"}
//! ```
//!
//! `actor.kind` is `user`, `admin` (with `id`), `system`, or `gateway` (with `id` = stripe, paystack,
//! flutterwave, fincra, normalized). Without `at` the command happens now; without `command_id` it is derived
//! from the idempotency key (so a retried file keeps its ids) or drawn at random. Blank lines and lines
//! starting with `#` are skipped. A bad line is reported with its number and the valid ones still run, unless
//! `--atomic`: then every line must parse and every command be accepted, and all are appended in one
//! transaction or none is. Exit 0 when every command was accepted, 1 when any was refused or invalid.

use ledger_store::roles::RunRole;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use ledger_core::{Actor, Command, CommandEnvelope};
use ledger_store::CommandOutcome;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};

/// Longest accepted line (a command is small; a huge line is a mistake or an attack).
const LINE_BYTES_MAX: usize = 1 << 20;
/// Most lines one `--atomic` run may carry (they are appended in one transaction).
const ATOMIC_LINES_MAX: usize = 10_000;
/// An import at least this large is followed by `ANALYZE` of the log (a bulk load must not leave the planner
/// on default statistics until autovacuum comes by).
const ANALYZE_AFTER_LINES: usize = 10_000;
/// Namespace of command ids derived from idempotency keys.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x3f1e_07d2_95b4_4c61_a8e3_1d0c_6b2a_9f47);

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A JSON Lines file, or `-` for standard input.
    pub file: PathBuf,
    /// All or nothing: one transaction for every line.
    #[arg(long)]
    pub atomic: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    actor: Actor,
    command: Command,
    idempotency_key: Option<String>,
    at: Option<DateTime<Utc>>,
    command_id: Option<Uuid>,
}

struct Parsed {
    number: usize,
    envelope: CommandEnvelope,
    key: Option<String>,
}

/// What a line that is not one whole object probably is, and what to do.
const ONE_OBJECT_PER_LINE: &str = "apply reads JSON Lines: one whole object per line; a pretty-printed \
     object spans several lines: put each on one line (e.g. `jq -c . commands.json > commands.jsonl`, or \
     `jq -c '.[]'` for an array)";

fn parse(ledger: &str, number: usize, text: &str) -> Result<Parsed, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| {
        let cut_short = e.is_eof() || text.starts_with('[') || !text.starts_with('{');
        if cut_short {
            format!("{e}: {ONE_OBJECT_PER_LINE}")
        } else {
            e.to_string()
        }
    })?;
    let command_id = line
        .command_id
        .unwrap_or_else(|| match &line.idempotency_key {
            Some(key) => Uuid::new_v5(&KEY_NAMESPACE, format!("{ledger}\u{0}{key}").as_bytes()),
            None => Uuid::new_v4(),
        });
    let envelope = CommandEnvelope {
        command_id,
        actor: line.actor,
        at: line.at.unwrap_or_else(Utc::now),
        command: line.command,
    };
    Ok(Parsed {
        number,
        envelope,
        key: line.idempotency_key,
    })
}

fn read_lines(path: &PathBuf) -> Result<Vec<(usize, String)>, CliError> {
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).context(format!("cannot open {}", path.display()))?)
    };
    let mut lines = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.context(format!("cannot read line {}", i + 1))?;
        if line.len() > LINE_BYTES_MAX {
            return Err(CliError::environment(format!(
                "line {} is longer than {LINE_BYTES_MAX} bytes",
                i + 1
            )));
        }
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            lines.push((i + 1, trimmed.to_string()));
        }
    }
    Ok(lines)
}

fn result_line(number: usize, outcome: &CommandOutcome) -> serde_json::Value {
    match outcome {
        CommandOutcome::Accepted {
            command_id,
            events,
            follow_ups,
        } => json!({
            "line": number, "status": "accepted", "command_id": command_id, "events": events, "follow_ups": follow_ups,
        }),
        CommandOutcome::Rejected {
            command_id,
            rejection,
        } => json!({
            "line": number, "status": "rejected", "command_id": command_id, "code": rejection.code, "message": rejection.message,
        }),
    }
}

pub async fn run(global: &Global, args: ApplyArgs) -> Result<ExitCode, CliError> {
    let lines = read_lines(&args.file)?;
    let mut parsed = Vec::with_capacity(lines.len());
    let mut invalid = Vec::new();
    for (number, text) in &lines {
        match parse(&global.ledger, *number, text) {
            Ok(p) => parsed.push(p),
            Err(e) => invalid.push((*number, e)),
        }
    }
    if args.atomic && !invalid.is_empty() {
        for (number, error) in &invalid {
            println!(
                "{}",
                json!({"line": number, "status": "invalid", "error": error})
            );
        }
        eprintln!(
            "escrow-ledger: {} invalid line(s); --atomic applied nothing",
            invalid.len()
        );
        return Ok(ExitCode::from(crate::exit::EXIT_FINDINGS));
    }
    if !invalid.is_empty() {
        eprintln!(
            "escrow-ledger: {} invalid line(s), reported with their `error`; the first, line {}: {}",
            invalid.len(),
            invalid[0].0,
            invalid[0].1
        );
    }
    let (_, executor) = global.executor_as(RunRole::Writer).await?;
    let mut refused = invalid.len();
    for (number, error) in &invalid {
        println!(
            "{}",
            json!({"line": number, "status": "invalid", "error": error})
        );
    }
    if args.atomic {
        if parsed.len() > ATOMIC_LINES_MAX {
            return Err(CliError::environment(format!(
                "--atomic takes at most {ATOMIC_LINES_MAX} lines"
            )));
        }
        if parsed.iter().any(|p| p.key.is_some()) {
            return Err(CliError::environment(
                "--atomic does not take idempotency keys (the whole file is one unit)",
            ));
        }
        let envelopes: Vec<CommandEnvelope> = parsed.iter().map(|p| p.envelope.clone()).collect();
        match executor
            .execute_atomic(&envelopes)
            .await
            .context("append failed")?
        {
            Ok(outcomes) => {
                for (p, outcome) in parsed.iter().zip(&outcomes) {
                    println!("{}", result_line(p.number, outcome));
                }
            }
            Err((index, rejection)) => {
                let p = &parsed[index];
                println!(
                    "{}",
                    json!({"line": p.number, "status": "rejected", "command_id": p.envelope.command_id, "code": rejection.code, "message": rejection.message})
                );
                eprintln!(
                    "escrow-ledger: line {} was refused ({}); --atomic applied nothing",
                    p.number, rejection.code
                );
                refused += 1;
            }
        }
    } else {
        for p in &parsed {
            let outcome = executor
                .execute(&p.envelope, p.key.as_deref())
                .await
                .context(format!("line {}", p.number))?;
            refused += usize::from(!outcome.is_accepted());
            println!("{}", result_line(p.number, &outcome));
        }
    }
    if parsed.len() >= ANALYZE_AFTER_LINES {
        // As the tables' owner (the writer role may not analyze): best effort, the import is done.
        match global.pool().await {
            Ok(owner) => {
                if let Err(e) = ledger_store::analyze_log(&owner).await {
                    eprintln!(
                        "escrow-ledger: the import is complete, but ANALYZE failed ({e}); run `analyze` as the owner"
                    );
                }
            }
            Err(e) => eprintln!(
                "escrow-ledger: the import is complete, but ANALYZE could not connect ({})",
                e.message
            ),
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::EXIT_FINDINGS)
    })
}
