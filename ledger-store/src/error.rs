//! The store's one error type, and the one place where SQLSTATEs become typed errors.

use crate::types::ExpectedVersion;
use uuid::Uuid;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version (the caller reloads and retries).
    #[error("concurrency conflict on stream {stream_id}: expected {expected:?}, actual {actual:?}")]
    ConcurrencyConflict {
        stream_id: String,
        expected: ExpectedVersion,
        /// Version of the stream's last event, `None` when the stream does not exist.
        actual: Option<i64>,
    },
    /// A request with this idempotency key was already recorded (see `get_idempotency`).
    #[error("idempotency key {key} was already used")]
    DuplicateIdempotencyKey { key: String },
    #[error("an event id was already used in this ledger")]
    DuplicateEventId { event_id: Option<Uuid> },
    #[error("unknown ledger {ledger_id}")]
    UnknownLedger { ledger_id: String },
    #[error("ledger {ledger_id} already exists")]
    LedgerExists { ledger_id: String },
    #[error("invalid append: {reason}")]
    InvalidAppend { reason: String },
    #[error("serialization failure (retry the transaction)")]
    Serialization,
    #[error("deadlock detected (retry the transaction)")]
    Deadlock,
    /// Citus moved or split the ledger's shard while this transaction ran (its plan named a shard that is
    /// gone): the statement failed before COMMIT and the transaction rolled back, so running it again is
    /// safe.
    #[error("the ledger's shard moved during the transaction (retry it): {message}")]
    PlacementChanged { message: String },
    #[error("append-only violation: {message}")]
    AppendOnlyViolation { message: String },
    /// An idempotency or inbox row without the log entry that records the same outcome (`outcome_log`):
    /// refused, nothing committed.
    #[error("an outcome not recorded in the log: {message}")]
    OutcomeNotLogged { message: String },
    /// COMMIT failed on the way (connection lost, server gone): the transaction may or may not have
    /// committed. Look (by event id or idempotency key) before re-running anything.
    #[error("the outcome of the commit is unknown: {reason}")]
    CommitOutcomeUnknown { reason: String },
    /// An inbox row with this delivery id is already recorded.
    #[error("this delivery id is already in the inbox")]
    DuplicateDelivery,
    #[error("the sequencer did not assign positions to committed events in time")]
    SequencerStalled,
    #[error("corrupt stored row: {reason}")]
    Corrupt { reason: String },
    /// The database user can alter the schema but cannot take the run-time role (`roles` module).
    #[error(
        "the database user can alter the schema but cannot take the run-time role {role} (grant {role} to it, or migrate as it: the migrations grant it)"
    )]
    RunRoleUnavailable { role: &'static str },
    /// The private PostgreSQL cluster (`cluster` module) could not be found, started or stopped.
    #[error("{reason}")]
    Cluster { reason: String },
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Distributing the schema on a Citus cluster failed (`citus` module).
    #[error("distributing the schema on Citus: {reason}")]
    Citus { reason: String },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

/// What a database error means for the store, decided from SQLSTATE and constraint name only.
#[derive(Debug)]
pub(crate) enum DbFailure {
    StreamVersionTaken,
    EventIdTaken,
    IdempotencyKeyTaken,
    LedgerTaken,
    DeliveryTaken,
    UnknownLedger,
    Serialization,
    Deadlock,
    PlacementChanged(String),
    AppendOnly(String),
    OutcomeNotLogged(String),
    Other(sqlx::Error),
}

/// How Citus says that a statement's plan named a shard a concurrent move or split has just removed
/// (`XX000`, raised while planning or executing, before COMMIT).
const SHARD_GONE: &str = "could not find valid entry for shard ";

/// The single SQLSTATE mapping of the crate.
pub(crate) fn classify(error: sqlx::Error) -> DbFailure {
    let Some(db) = error.as_database_error() else {
        return DbFailure::Other(error);
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let (code, constraint) = unique_violation(&code, db.constraint(), db.message());
    let constraint = logical_constraint(constraint);
    match (code, constraint) {
        ("23505", "events_pkey") => DbFailure::StreamVersionTaken,
        ("23505", "events_event_id_key") => DbFailure::EventIdTaken,
        ("23505", "idempotency_pkey") => DbFailure::IdempotencyKeyTaken,
        ("23505", "ledgers_pkey") => DbFailure::LedgerTaken,
        ("23505", "inbox_pkey") => DbFailure::DeliveryTaken,
        ("23503", _) => DbFailure::UnknownLedger,
        ("40001", _) => DbFailure::Serialization,
        ("40P01", _) => DbFailure::Deadlock,
        ("XX000", _) if db.message().starts_with(SHARD_GONE) => {
            DbFailure::PlacementChanged(db.message().to_owned())
        }
        ("EL001", _) => DbFailure::AppendOnly(db.message().to_owned()),
        ("EL003", _) => DbFailure::OutcomeNotLogged(db.message().to_owned()),
        _ => DbFailure::Other(error),
    }
}

/// SQLSTATE and constraint of an error, completed for errors relayed by Citus: a worker's unique or
/// foreign-key violation reaches the coordinator without the constraint field, and one raised inside
/// Citus' COPY of a multi-row INSERT even without its SQLSTATE (`XX000`); both keep PostgreSQL's message,
/// which names the constraint.
fn unique_violation<'a>(
    code: &'a str,
    constraint: Option<&'a str>,
    message: &'a str,
) -> (&'a str, &'a str) {
    const RELAYED: [(&str, &str); 2] = [
        ("23505", "duplicate key value violates unique constraint \""),
        ("23503", " violates foreign key constraint \""),
    ];
    if let Some(constraint) = constraint {
        return (code, constraint);
    }
    for (sqlstate, marker) in RELAYED {
        if code != sqlstate && code != "XX000" {
            continue;
        }
        let named = message
            .find(marker)
            .and_then(|at| message[at + marker.len()..].split_once('"'));
        if let Some((name, _)) = named {
            return (sqlstate, name);
        }
    }
    (code, "")
}

/// The constraint's name as the migrations spell it. On Citus a violation is raised by a worker on a shard,
/// whose constraints carry the shard id (`events_pkey_102008`); the suffix is dropped when what remains is
/// one of the names `classify` knows.
fn logical_constraint(name: &str) -> &str {
    const KNOWN: [&str; 5] = [
        "events_pkey",
        "events_event_id_key",
        "idempotency_pkey",
        "ledgers_pkey",
        "inbox_pkey",
    ];
    match name.rsplit_once('_') {
        Some((base, shard))
            if !shard.is_empty()
                && shard.bytes().all(|b| b.is_ascii_digit())
                && KNOWN.contains(&base) =>
        {
            base
        }
        _ => name,
    }
}

impl DbFailure {
    /// True when the failure belongs to one request of a batch (so isolating it can help).
    pub(crate) fn is_request_specific(&self) -> bool {
        matches!(
            self,
            Self::StreamVersionTaken
                | Self::EventIdTaken
                | Self::IdempotencyKeyTaken
                | Self::UnknownLedger
        )
    }
}

impl From<sqlx::Error> for StoreError {
    /// Context-free conversion; appends add the stream or key with `AppendContext`.
    fn from(error: sqlx::Error) -> Self {
        match classify(error) {
            DbFailure::Serialization => Self::Serialization,
            DbFailure::Deadlock => Self::Deadlock,
            DbFailure::PlacementChanged(message) => Self::PlacementChanged { message },
            DbFailure::AppendOnly(message) => Self::AppendOnlyViolation { message },
            DbFailure::OutcomeNotLogged(message) => Self::OutcomeNotLogged { message },
            DbFailure::EventIdTaken => Self::DuplicateEventId { event_id: None },
            DbFailure::StreamVersionTaken => Self::ConcurrencyConflict {
                stream_id: String::new(),
                expected: ExpectedVersion::Any,
                actual: None,
            },
            DbFailure::IdempotencyKeyTaken => Self::DuplicateIdempotencyKey { key: String::new() },
            DbFailure::LedgerTaken => Self::LedgerExists {
                ledger_id: String::new(),
            },
            DbFailure::UnknownLedger => Self::UnknownLedger {
                ledger_id: String::new(),
            },
            DbFailure::DeliveryTaken => Self::DuplicateDelivery,
            DbFailure::Other(e) => Self::Database(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{logical_constraint, unique_violation};

    #[test]
    fn unique_violations_relayed_by_citus_keep_their_meaning() {
        let relayed = "duplicate key value violates unique constraint \"idempotency_pkey_102075\"";
        assert_eq!(
            unique_violation("XX000", None, relayed),
            ("23505", "idempotency_pkey_102075")
        );
        assert_eq!(
            unique_violation("23505", None, relayed),
            ("23505", "idempotency_pkey_102075")
        );
        assert_eq!(
            unique_violation("23505", Some("events_pkey"), relayed),
            ("23505", "events_pkey")
        );
        let foreign = "insert or update on table \"idempotency_102075\" violates foreign key \
                       constraint \"idempotency_ledger_id_fkey_102075\"";
        assert_eq!(
            unique_violation("XX000", None, foreign),
            ("23503", "idempotency_ledger_id_fkey_102075")
        );
        // Any other internal error stays what it is.
        assert_eq!(
            unique_violation("XX000", None, "tuple concurrently updated"),
            ("XX000", "")
        );
        assert_eq!(unique_violation("40001", None, relayed), ("40001", ""));
    }

    #[test]
    fn shard_suffixes_of_known_constraints_are_dropped() {
        assert_eq!(logical_constraint("events_pkey"), "events_pkey");
        assert_eq!(logical_constraint("events_pkey_102008"), "events_pkey");
        assert_eq!(logical_constraint("idempotency_pkey_7"), "idempotency_pkey");
        assert_eq!(
            logical_constraint("events_event_id_key_102040"),
            "events_event_id_key"
        );
        // Only known names lose a numeric suffix.
        assert_eq!(logical_constraint("other_pkey_12"), "other_pkey_12");
        assert_eq!(logical_constraint("events_pkey_x1"), "events_pkey_x1");
        assert_eq!(logical_constraint(""), "");
    }
}
