//! Secrets and API keys per ledger: a TOML file (`--config`) and, for the selected ledger, environment
//! variables. Values are never logged (`Debug` shows only whether each is set).
//!
//! ```toml
//! body_limit_bytes = 262144        # optional, default 256 KiB, at most 1 MiB
//! request_timeout_ms = 10000       # optional: covers the wait for a slot, the body and the answer
//! header_read_timeout_ms = 5000    # optional: a connection must send its request head within this
//! idle_timeout_ms = 60000          # optional: a connection with no traffic for this long is closed
//! connections_max = 4096           # optional: open connections at once (more wait in the backlog)
//! chargeback_recover_from_user = true   # a lost chargeback not covered becomes a receivable (else a loss)
//! group_commit_batch_max = 256     # optional: most callbacks/commands in one transaction (1..=1000)
//! group_commit_linger_ms = 2       # optional: how long a batch waits for more while another commits
//! group_commit_committers = 2      # optional: batches committing at once, each on its own connection
//! [ledgers.default]
//! api_key = "..."                  # backend key: POST /commands (user, admin, system actors) and the outbox
//! payout_worker_key = "..."        # payout workers: read and claim the outbox, nothing else
//! stripe_secret = "whsec_..."
//! paystack_secret = "sk_live_..."
//! flutterwave_hash = "..."         # the secret hash: key of `flutterwave-signature`
//! flutterwave_accept_static_hash = false   # true also accepts the static `verif-hash` header (weaker)
//! fincra_secret = "..."
//! cmi_store_key = "..."            # CMI's store key (hashAlgorithm ver3)
//! tap_secret = "sk_live_..."       # Tap's secret key (the `hashstring` header)
//! callback_secret = "..."          # X-Escrow-Signature of the normalized format
//! ```
//!
//! An empty or all-whitespace secret or key, from the file or the environment, is a startup error naming
//! the setting: it would otherwise switch authentication off (or on for an empty signature).

use std::collections::BTreeMap;
use std::path::Path;

use ledger_gateway::Secrets;
use serde::Deserialize;

use crate::exit::{CliError, Context};

pub const BODY_LIMIT_BYTES_DEFAULT: usize = 256 * 1024;
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;
/// Bound on `connections_max` (each connection holds a file descriptor and a task).
pub const CONNECTIONS_MAX_LIMIT: usize = 65_536;
/// A value copied from an example rather than a secret: `...` anywhere (no real key or secret holds it),
/// `<...>`, or a well-known stand-in.
fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    v.contains("...")
        || v.contains('\u{2026}')
        || (v.starts_with('<') && v.ends_with('>'))
        || [
            "changeme",
            "change-me",
            "change_me",
            "secret",
            "your-key",
            "your_key",
            "todo",
            "xxx",
            "key",
        ]
        .contains(&lower.as_str())
}

/// Bound on configured ledgers.
pub const LEDGERS_MAX: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub body_limit_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub connections_max: Option<usize>,
    pub chargeback_recover_from_user: Option<bool>,
    pub group_commit_batch_max: Option<usize>,
    pub group_commit_linger_ms: Option<u64>,
    pub group_commit_committers: Option<usize>,
    #[serde(default)]
    pub ledgers: BTreeMap<String, LedgerSecrets>,
}

#[derive(Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LedgerSecrets {
    pub api_key: Option<String>,
    pub payout_worker_key: Option<String>,
    pub stripe_secret: Option<String>,
    pub paystack_secret: Option<String>,
    pub flutterwave_hash: Option<String>,
    pub flutterwave_accept_static_hash: Option<bool>,
    pub fincra_secret: Option<String>,
    pub cmi_store_key: Option<String>,
    pub tap_secret: Option<String>,
    pub callback_secret: Option<String>,
}

impl std::fmt::Debug for LedgerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "set" } else { "unset" };
        write!(
            f,
            "LedgerSecrets {{ api_key: {}, payout_worker_key: {}, {:?} }}",
            set(&self.api_key),
            set(&self.payout_worker_key),
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
            flutterwave_accept_static_hash: self.flutterwave_accept_static_hash.unwrap_or(false),
            fincra: self.fincra_secret.clone(),
            cmi_store_key: self.cmi_store_key.clone(),
            tap_secret: self.tap_secret.clone(),
            callback: self.callback_secret.clone(),
        }
    }

    /// Every secret and key that is set, with its name in the file.
    fn named(&self) -> [(&'static str, &Option<String>); 9] {
        [
            ("api_key", &self.api_key),
            ("payout_worker_key", &self.payout_worker_key),
            ("stripe_secret", &self.stripe_secret),
            ("paystack_secret", &self.paystack_secret),
            ("flutterwave_hash", &self.flutterwave_hash),
            ("fincra_secret", &self.fincra_secret),
            ("cmi_store_key", &self.cmi_store_key),
            ("tap_secret", &self.tap_secret),
            ("callback_secret", &self.callback_secret),
        ]
    }

    /// A blank value is refused (naming `ledgers.{ledger}.{setting}`), never taken as "no authentication";
    /// so is a placeholder copied from an example (`"..."`, `"<key>"`, `"changeme"`).
    fn check_not_blank(&self, ledger: &str) -> Result<(), CliError> {
        for (name, value) in self.named() {
            let Some(value) = value.as_deref() else {
                continue;
            };
            if value.trim().is_empty() {
                return Err(CliError::environment(format!(
                    "ledgers.{ledger}.{name} is empty: remove the setting or give it a value"
                )));
            }
            if is_placeholder(value) {
                return Err(CliError::environment(format!(
                    "ledgers.{ledger}.{name} is a placeholder ({value:?}), not a secret: set a real one \
                     (e.g. `openssl rand -hex 32` for a key; a gateway's secret from its dashboard)"
                )));
            }
        }
        Ok(())
    }

    /// The backend key and the payout worker's key must differ: a request carrying a key equal to both would
    /// get the backend's scope, so the worker's key would command the ledger.
    fn check_keys_distinct(&self, ledger: &str) -> Result<(), CliError> {
        match (&self.api_key, &self.payout_worker_key) {
            (Some(api), Some(worker)) if api == worker => Err(CliError::environment(format!(
                "ledgers.{ledger}.payout_worker_key equals ledgers.{ledger}.api_key \
                 (ESCROW_LEDGER_PAYOUT_WORKER_KEY / ESCROW_LEDGER_API_KEY): give the payout workers a key of their own"
            ))),
            _ => Ok(()),
        }
    }

    /// Environment variables override the file; one that is set but blank is an error naming it.
    fn overlay_env(&mut self) -> Result<(), CliError> {
        let pairs: [(&mut Option<String>, &str); 9] = [
            (&mut self.stripe_secret, "ESCROW_LEDGER_STRIPE_SECRET"),
            (&mut self.paystack_secret, "ESCROW_LEDGER_PAYSTACK_SECRET"),
            (&mut self.flutterwave_hash, "ESCROW_LEDGER_FLUTTERWAVE_HASH"),
            (&mut self.fincra_secret, "ESCROW_LEDGER_FINCRA_SECRET"),
            (&mut self.cmi_store_key, "ESCROW_LEDGER_CMI_STORE_KEY"),
            (&mut self.tap_secret, "ESCROW_LEDGER_TAP_SECRET"),
            (&mut self.callback_secret, "ESCROW_LEDGER_CALLBACK_SECRET"),
            (&mut self.api_key, "ESCROW_LEDGER_API_KEY"),
            (
                &mut self.payout_worker_key,
                "ESCROW_LEDGER_PAYOUT_WORKER_KEY",
            ),
        ];
        for (slot, name) in pairs {
            match std::env::var(name) {
                Ok(v) if v.trim().is_empty() => {
                    return Err(CliError::environment(format!(
                        "{name} is set but empty: unset it or give it a value"
                    )));
                }
                Ok(v) => *slot = Some(v),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(CliError::environment(format!("{name} is not UTF-8")));
                }
            }
        }
        Ok(())
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
    for (ledger, secrets) in &config.ledgers {
        secrets.check_not_blank(ledger)?;
    }
    config
        .ledgers
        .entry(default_ledger.to_string())
        .or_default()
        .overlay_env()?;
    for (ledger, secrets) in &config.ledgers {
        secrets.check_not_blank(ledger)?;
        secrets.check_keys_distinct(ledger)?;
    }
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
    check_limits(&config)?;
    Ok(config)
}

/// Group commit as `serve` runs it by default: batches of at most 256 callbacks or commands, two committing at
/// once (each on its own connection), and a batch waits up to 2 ms for more only while the other one
/// commits, so a lone request is not held back and a storm forms large batches by itself (measured with
/// `bench callbacks`: larger batches cost less CPU per callback; more committers made smaller batches).
pub const GROUP_COMMIT_BATCH_MAX_DEFAULT: usize = 256;
pub const GROUP_COMMIT_LINGER_MS_DEFAULT: u64 = 2;
pub const GROUP_COMMIT_COMMITTERS_DEFAULT: usize = 2;
const GROUP_COMMIT_LINGER_MS_LIMIT: u64 = 100;
const GROUP_COMMIT_COMMITTERS_LIMIT: usize = 16;

impl FileConfig {
    /// The group commit of each served ledger (validated by `check_limits`).
    pub fn group_commit(&self) -> ledger_store::GroupCommitConfig {
        ledger_store::GroupCommitConfig {
            batch_size_max: self
                .group_commit_batch_max
                .unwrap_or(GROUP_COMMIT_BATCH_MAX_DEFAULT),
            linger: std::time::Duration::from_millis(
                self.group_commit_linger_ms
                    .unwrap_or(GROUP_COMMIT_LINGER_MS_DEFAULT),
            ),
            committers: self
                .group_commit_committers
                .unwrap_or(GROUP_COMMIT_COMMITTERS_DEFAULT),
            ..ledger_store::GroupCommitConfig::default()
        }
    }
}

fn check_limits(config: &FileConfig) -> Result<(), CliError> {
    let group = config.group_commit();
    if group.batch_size_max == 0 || group.batch_size_max > ledger_store::BATCH_REQUESTS_MAX {
        return Err(CliError::environment(format!(
            "group_commit_batch_max must be in 1..={}",
            ledger_store::BATCH_REQUESTS_MAX
        )));
    }
    if group.linger > std::time::Duration::from_millis(GROUP_COMMIT_LINGER_MS_LIMIT) {
        return Err(CliError::environment(format!(
            "group_commit_linger_ms must be in 0..={GROUP_COMMIT_LINGER_MS_LIMIT}"
        )));
    }
    if group.committers == 0 || group.committers > GROUP_COMMIT_COMMITTERS_LIMIT {
        return Err(CliError::environment(format!(
            "group_commit_committers must be in 1..={GROUP_COMMIT_COMMITTERS_LIMIT}"
        )));
    }
    let connections = config.connections_max.unwrap_or(CONNECTIONS_MAX_DEFAULT);
    if connections == 0 || connections > CONNECTIONS_MAX_LIMIT {
        return Err(CliError::environment(format!(
            "connections_max must be in 1..={CONNECTIONS_MAX_LIMIT}"
        )));
    }
    for (name, value) in [
        ("request_timeout_ms", config.request_timeout_ms),
        ("header_read_timeout_ms", config.header_read_timeout_ms),
        ("idle_timeout_ms", config.idle_timeout_ms),
    ] {
        if value == Some(0) {
            return Err(CliError::environment(format!("{name} must be positive")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_settings_out_of_bounds_are_refused_by_name() {
        let parse = |text: &str| toml::from_str::<FileConfig>(text).unwrap();
        let defaults = parse("").group_commit();
        assert_eq!(
            (
                defaults.batch_size_max,
                defaults.committers,
                defaults.linger
            ),
            (256, 2, std::time::Duration::from_millis(2))
        );
        assert!(check_limits(&parse("group_commit_batch_max = 1000")).is_ok());
        for (text, named) in [
            ("group_commit_batch_max = 0", "group_commit_batch_max"),
            ("group_commit_batch_max = 1001", "group_commit_batch_max"),
            ("group_commit_committers = 0", "group_commit_committers"),
            ("group_commit_linger_ms = 101", "group_commit_linger_ms"),
        ] {
            let error = check_limits(&parse(text)).unwrap_err().message;
            assert!(error.contains(named), "{text}: {error}");
        }
    }

    #[test]
    fn a_placeholder_copied_from_an_example_is_refused_with_its_setting_named() {
        for placeholder in [
            "...",
            "whsec_...",
            "<your key>",
            "changeme",
            "sk_test_\u{2026}",
        ] {
            assert!(is_placeholder(placeholder), "{placeholder}");
        }
        for real in [
            "docs-check-key-0123456789",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "in-house-storm",
        ] {
            assert!(!is_placeholder(real), "{real}");
        }
        let dir = std::env::temp_dir().join(format!("escrow-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("workers.toml");
        std::fs::write(&path, "[ledgers.acme]\napi_key = \"...\"\n").unwrap();
        let refused = load(Some(&path), "default").unwrap_err();
        assert!(
            refused
                .message
                .contains("ledgers.acme.api_key is a placeholder"),
            "{}",
            refused.message
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
