//! `escrow-ledger ingest FILE|-`: the callback ingestion over JSON Lines of captured deliveries, one object
//! per line: `{"gateway": "stripe", "headers": {"Stripe-Signature": "..."}, "body": "<raw body>",
//! "received_at": "2026-01-01T00:00:00Z"}` (or `"body_base64"` for bodies that are not UTF-8). Signatures are
//! verified against the recorded receipt time, so a gateway export or a dead-letter queue replays exactly.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Deserialize;
use uuid::Uuid;

use crate::db::Global;
use crate::exit::{CliError, Context};
use crate::serve::pipeline::{DeliveryError, deliver};

/// Bound on one line (a body is at most 1 MiB, base64 adds a third).
pub const LINE_BYTES_MAX: usize = 1_500_000;

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// JSON Lines file, or `-` for standard input.
    pub file: PathBuf,
    /// Secrets per ledger (same format as `serve --config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Captured {
    gateway: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    body_base64: Option<String>,
    received_at: DateTime<Utc>,
}

pub async fn run(global: &Global, args: IngestArgs) -> Result<ExitCode, CliError> {
    let (state, _) = crate::serve::build_state(global, args.config.as_deref()).await?;
    let ctx = state.ledgers.get(&global.ledger).ok_or_else(|| {
        CliError::environment(format!("ledger {:?} is not configured", global.ledger))
    })?;
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file)
                .context(format!("cannot open {}", args.file.display()))?,
        ))
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused = 0_u64;
    for (number, line) in reader.lines().enumerate() {
        let line = line.context("cannot read input")?;
        if line.trim().is_empty() {
            continue;
        }
        let lineno = number + 1;
        if line.len() > LINE_BYTES_MAX {
            eprintln!("line {lineno}: longer than {LINE_BYTES_MAX} bytes");
            refused += 1;
            continue;
        }
        let captured: Captured = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("line {lineno}: not a captured delivery: {e}");
                refused += 1;
                continue;
            }
        };
        let Some(gateway) = ledger_gateway::gateway_from_segment(&captured.gateway) else {
            eprintln!("line {lineno}: unknown gateway {:?}", captured.gateway);
            refused += 1;
            continue;
        };
        let body = match (&captured.body, &captured.body_base64) {
            (Some(b), None) => b.as_bytes().to_vec(),
            (None, Some(b)) => match base64_decode(b) {
                Some(bytes) => bytes,
                None => {
                    eprintln!("line {lineno}: body_base64 is not base64");
                    refused += 1;
                    continue;
                }
            },
            _ => {
                eprintln!("line {lineno}: give exactly one of body, body_base64");
                refused += 1;
                continue;
            }
        };
        let headers: BTreeMap<String, String> = captured
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let header = |name: &str| headers.get(name).cloned();
        match deliver(
            ctx,
            gateway,
            &header,
            &body,
            captured.received_at,
            Uuid::new_v4(),
        )
        .await
        {
            Ok(receipt) => *counts.entry(receipt.disposition.to_string()).or_default() += 1,
            Err(DeliveryError::Callback(e)) => {
                eprintln!("line {lineno}: {e}");
                refused += 1;
            }
            Err(e) => return Err(CliError::environment(format!("line {lineno}: {e}"))),
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("ingested: {}; refused {refused}", summary.join(", "));
    Ok(if refused > 0 {
        ExitCode::from(crate::exit::EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    })
}

/// Standard base64 (with padding), without another dependency.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for byte in text.trim().bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|c| *c == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}
