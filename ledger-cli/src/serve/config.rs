//! Secrets and API keys per ledger: a TOML file (`--config`) and, for the selected ledger, environment
//! variables. Values are never logged (`Debug` shows only whether each is set).
//!
//! ```toml
//! body_limit_bytes = 262144        # optional, default 256 KiB, at most 1 MiB
//! request_timeout_ms = 10000       # optional
//! chargeback_recover_from_user = true   # a lost chargeback not covered becomes a receivable (else a loss)
//! [ledgers.default]
//! api_key = "..."                  # bearer token of POST /commands and the outbox
//! stripe_secret = "whsec_..."
//! paystack_secret = "sk_live_..."
//! flutterwave_hash = "..."
//! fincra_secret = "..."
//! callback_secret = "..."          # X-Escrow-Signature of the normalized format
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use ledger_gateway::Secrets;
use serde::Deserialize;

use crate::exit::{CliError, Context};

pub const BODY_LIMIT_BYTES_DEFAULT: usize = 256 * 1024;
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Bound on configured ledgers.
pub const LEDGERS_MAX: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub body_limit_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub chargeback_recover_from_user: Option<bool>,
    #[serde(default)]
    pub ledgers: BTreeMap<String, LedgerSecrets>,
}

#[derive(Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LedgerSecrets {
    pub api_key: Option<String>,
    pub stripe_secret: Option<String>,
    pub paystack_secret: Option<String>,
    pub flutterwave_hash: Option<String>,
    pub fincra_secret: Option<String>,
    pub callback_secret: Option<String>,
}

impl std::fmt::Debug for LedgerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LedgerSecrets {{ api_key: {}, {:?} }}",
            if self.api_key.is_some() {
                "set"
            } else {
                "unset"
            },
            self.gateway_secrets()
        )
    }
}

impl LedgerSecrets {
    pub fn gateway_secrets(&self) -> Secrets {
        Secrets {
            stripe: self.stripe_secret.clone(),
            paystack: self.paystack_secret.clone(),
            flutterwave_hash: self.flutterwave_hash.clone(),
            fincra: self.fincra_secret.clone(),
            callback: self.callback_secret.clone(),
        }
    }

    fn overlay_env(&mut self) {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let pairs: [(&mut Option<String>, &str); 6] = [
            (&mut self.stripe_secret, "ESCROW_LEDGER_STRIPE_SECRET"),
            (&mut self.paystack_secret, "ESCROW_LEDGER_PAYSTACK_SECRET"),
            (&mut self.flutterwave_hash, "ESCROW_LEDGER_FLUTTERWAVE_HASH"),
            (&mut self.fincra_secret, "ESCROW_LEDGER_FINCRA_SECRET"),
            (&mut self.callback_secret, "ESCROW_LEDGER_CALLBACK_SECRET"),
            (&mut self.api_key, "ESCROW_LEDGER_API_KEY"),
        ];
        for (slot, name) in pairs {
            if let Some(v) = env(name) {
                *slot = Some(v);
            }
        }
    }
}

/// The file (if any) plus the environment variables applied to `default_ledger`.
pub fn load(path: Option<&Path>, default_ledger: &str) -> Result<FileConfig, CliError> {
    let mut config = match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).context(format!("cannot read {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .context(format!("invalid config {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    config
        .ledgers
        .entry(default_ledger.to_string())
        .or_default()
        .overlay_env();
    if config.ledgers.len() > LEDGERS_MAX {
        return Err(CliError::environment(format!(
            "more than {LEDGERS_MAX} ledgers configured"
        )));
    }
    let limit = config.body_limit_bytes.unwrap_or(BODY_LIMIT_BYTES_DEFAULT);
    if limit == 0 || limit > ledger_gateway::BODY_BYTES_MAX {
        return Err(CliError::environment(format!(
            "body_limit_bytes must be in 1..={}",
            ledger_gateway::BODY_BYTES_MAX
        )));
    }
    Ok(config)
}
