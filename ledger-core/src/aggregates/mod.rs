//! One module per aggregate, each a [`crate::Decider`]. Commands arrive wrapped in [`Ctx`]: who, when.

pub mod booking;
pub mod closed_periods;
pub mod dispute;
pub mod ledger_policy;
pub mod payment;
pub mod project;
pub mod quote;
pub mod reconciliation;
pub mod service_request;
pub mod settlement;
pub mod suspense;
pub mod wallet;

use chrono::{DateTime, Utc};

use crate::error::Rejection;
use crate::ids::Actor;
use crate::money::Money;

/// A command with the actor issuing it and the time it happens (the core never reads a clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Ctx<C> {
    pub actor: Actor,
    pub at: DateTime<Utc>,
    pub body: C,
}

impl<C> Ctx<C> {
    pub fn new(actor: Actor, at: DateTime<Utc>, body: C) -> Ctx<C> {
        Ctx { actor, at, body }
    }
}

pub(crate) fn require_positive(amount: Money) -> Result<(), Rejection> {
    if amount.is_positive() {
        Ok(())
    } else {
        Err(Rejection::NonPositiveAmount(amount.to_string()))
    }
}

/// Refuses an amount (or a sum) beyond [`crate::money::AMOUNT_MINOR_MAX`], in either direction.
pub(crate) fn require_within_ceiling(
    what: &'static str,
    minor: i128,
    currency: crate::money::Currency,
) -> Result<(), Rejection> {
    let limit = i128::from(crate::money::AMOUNT_MINOR_MAX);
    if minor.abs() <= limit {
        return Ok(());
    }
    let shown = i64::try_from(minor)
        .map(|m| Money::from_minor(m, currency).to_string())
        .unwrap_or_else(|_| format!("{minor} minor units of {currency}"));
    Err(Rejection::AmountTooLarge {
        what,
        amount: shown,
        limit: Money::from_minor(crate::money::AMOUNT_MINOR_MAX, currency).to_string(),
    })
}

pub(crate) fn require_currency(
    expected: crate::money::Currency,
    amount: Money,
) -> Result<(), Rejection> {
    if amount.currency() == expected {
        Ok(())
    } else {
        Err(Rejection::CurrencyMismatch {
            expected,
            found: amount.currency(),
        })
    }
}
