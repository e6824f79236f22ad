//! Typed rejections with stable machine-readable codes.

use serde::Serialize;

use crate::journal::EntryError;
use crate::money::{Currency, MoneyError};

/// Why a command was refused. `code()` is stable API (clients switch on it); the message is for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("insufficient funds in {account}: available {available}, requested {requested}")]
    InsufficientFunds {
        account: String,
        available: String,
        requested: String,
    },
    #[error("{aggregate} cannot {action} while {from}")]
    InvalidTransition {
        aggregate: &'static str,
        from: String,
        action: &'static str,
    },
    #[error("currency mismatch: expected {expected}, got {found}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    #[error("{actor} is not allowed to {action}: {reason}")]
    NotAParty {
        actor: String,
        action: &'static str,
        reason: &'static str,
    },
    #[error("{0}")]
    AmountPrecision(String),
    #[error("amount must be positive, got {0}")]
    NonPositiveAmount(String),
    #[error("{amount} exceeds {limit}: {what}")]
    AmountTooLarge {
        what: &'static str,
        amount: String,
        limit: String,
    },
    #[error("{aggregate} {id} does not exist")]
    NotFound { aggregate: &'static str, id: String },
    #[error("{aggregate} {id} already exists")]
    AlreadyExists { aggregate: &'static str, id: String },
    #[error("project has no milestone {0}")]
    UnknownMilestone(u32),
    #[error("split does not add up: release {release} + refund {refund} != held {held}")]
    SplitMismatch {
        release: String,
        refund: String,
        held: String,
    },
    #[error("quote expired at {0}")]
    QuoteExpired(String),
    #[error("too early: {what} is due at {due}")]
    TooEarly { what: &'static str, due: String },
    /// A caller-stated due time leaves the other side less than the policy's minimum to act.
    #[error("deadline too soon: {what} {stated} is before {earliest}")]
    DeadlineTooSoon {
        what: &'static str,
        stated: String,
        earliest: String,
    },
    #[error("an open dispute blocks this: {0}")]
    OpenDispute(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("amount overflow")]
    Overflow,
    #[error("unbalanced journal entry: {0}")]
    Unbalanced(String),
    #[error("{what} {stated} is outside the ledger's fee policy: {allowed}")]
    FeeOutsidePolicy {
        what: &'static str,
        stated: String,
        allowed: String,
    },
}

impl Rejection {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InsufficientFunds { .. } => "insufficient_funds",
            Rejection::InvalidTransition { .. } => "invalid_transition",
            Rejection::CurrencyMismatch { .. } => "currency_mismatch",
            Rejection::NotAParty { .. } => "not_a_party",
            Rejection::AmountPrecision(_) => "amount_precision",
            Rejection::NonPositiveAmount(_) => "non_positive_amount",
            Rejection::AmountTooLarge { .. } => "amount_too_large",
            Rejection::NotFound { .. } => "not_found",
            Rejection::AlreadyExists { .. } => "already_exists",
            Rejection::UnknownMilestone(_) => "unknown_milestone",
            Rejection::SplitMismatch { .. } => "split_mismatch",
            Rejection::QuoteExpired(_) => "quote_expired",
            Rejection::TooEarly { .. } => "too_early",
            Rejection::DeadlineTooSoon { .. } => "deadline_too_soon",
            Rejection::OpenDispute(_) => "open_dispute",
            Rejection::InvalidCommand(_) => "invalid_command",
            Rejection::Overflow => "overflow",
            Rejection::Unbalanced(_) => "unbalanced_entry",
            Rejection::FeeOutsidePolicy { .. } => "fee_outside_policy",
        }
    }

    pub fn to_report(&self) -> RejectionReport {
        RejectionReport {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }

    pub(crate) fn transition(
        aggregate: &'static str,
        from: impl std::fmt::Debug,
        action: &'static str,
    ) -> Self {
        Rejection::InvalidTransition {
            aggregate,
            from: format!("{from:?}"),
            action,
        }
    }

    pub(crate) fn not_party(
        actor: &crate::ids::Actor,
        action: &'static str,
        reason: &'static str,
    ) -> Self {
        Rejection::NotAParty {
            actor: actor.to_string(),
            action,
            reason,
        }
    }
}

/// The serializable form of a rejection (what `apply` prints and idempotency records keep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RejectionReport {
    pub code: String,
    pub message: String,
}

impl From<MoneyError> for Rejection {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::CurrencyMismatch { left, right } => Rejection::CurrencyMismatch {
                expected: left,
                found: right,
            },
            MoneyError::Precision { .. } | MoneyError::NotADecimal(_) => {
                Rejection::AmountPrecision(e.to_string())
            }
            MoneyError::Overflow => Rejection::Overflow,
            MoneyError::UnknownCurrency(_) | MoneyError::RateOutOfRange(_) => {
                Rejection::InvalidCommand(e.to_string())
            }
        }
    }
}

impl From<EntryError> for Rejection {
    fn from(e: EntryError) -> Self {
        Rejection::Unbalanced(e.to_string())
    }
}
