//! Ledger policy: the platform's own fee schedule, one per ledger (stream `ledger-policy`). Only an operator
//! changes it (`set_fee_policy`), and every change is an event in the log, so what a project was allowed to
//! charge can always be replayed.
//!
//! The schedule holds, for the seller-paid commission, the buyer-paid fee and the platform payout fee, a
//! default rate and the allowed range, plus whether a quote, a project or a payout request may state its own
//! rate (within the range) instead of the default. Commands that set fees (`create_project`, `create_quote`,
//! `request_payout`) read this stream and are refused with `fee_outside_policy` when they step outside it.
//! Until an operator sets a schedule, a ledger has none and accepts what the commands state (a rate left out
//! is zero), exactly as before the policy existed.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::project::{FeePolicy, FeeTerms};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;
use crate::money::{Money, Rate};

/// A fee rate's default and the range a stated rate must fall in (`min <= default <= max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateBounds {
    pub default: Rate,
    pub min: Rate,
    pub max: Rate,
}

impl RateBounds {
    /// Anything from zero to one, zero by default: the behaviour of a ledger without a policy.
    pub const OPEN: RateBounds = RateBounds {
        default: Rate::ZERO,
        min: Rate::ZERO,
        max: Rate::ONE,
    };

    fn contains(&self, rate: Rate) -> bool {
        self.min.as_decimal() <= rate.as_decimal() && rate.as_decimal() <= self.max.as_decimal()
    }

    fn describe(&self) -> String {
        format!(
            "{} ..= {} (default {})",
            self.min.as_decimal(),
            self.max.as_decimal(),
            self.default.as_decimal()
        )
    }
}

/// The platform's fee schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    /// Seller-paid commission, taken at release.
    pub commission: RateBounds,
    /// Buyer-paid fee, collected at funding.
    pub buyer_fee: RateBounds,
    /// Platform payout fee, as a rate of the payout amount (rounded half-even).
    pub payout_fee: RateBounds,
    /// Whether a quote, a project or a payout request may state a rate other than the default (within the
    /// range). When false, a stated rate must equal the default.
    pub overrides_allowed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPolicyState {
    /// `None` until an operator sets a schedule.
    pub fees: Option<FeeSchedule>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LedgerPolicyCommand {
    SetFees(FeeSchedule),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LedgerPolicyEvent {
    FeePolicySet { fees: FeeSchedule },
}

fn outside(what: &'static str, stated: String, allowed: String) -> Rejection {
    Rejection::FeeOutsidePolicy {
        what,
        stated,
        allowed,
    }
}

/// A stated rate against its bounds: the default when none is stated.
fn resolve_rate(
    what: &'static str,
    stated: Option<Rate>,
    bounds: &RateBounds,
    overrides_allowed: bool,
) -> Result<Rate, Rejection> {
    let Some(rate) = stated else {
        return Ok(bounds.default);
    };
    let allowed = if overrides_allowed {
        bounds.contains(rate)
    } else {
        rate == bounds.default
    };
    if allowed {
        Ok(rate)
    } else {
        let range = if overrides_allowed {
            bounds.describe()
        } else {
            format!("only the default {}", bounds.default.as_decimal())
        };
        Err(outside(what, rate.as_decimal().to_string(), range))
    }
}

impl LedgerPolicyState {
    /// A command's fee terms made concrete: each rate as stated (checked against the schedule) or the
    /// schedule's default; without a schedule, as stated or zero.
    pub fn resolve_terms(&self, terms: &FeeTerms) -> Result<FeePolicy, Rejection> {
        let (commission_rate, buyer_fee_rate) = match &self.fees {
            None => (
                terms.commission_rate.unwrap_or(Rate::ZERO),
                terms.buyer_fee_rate.unwrap_or(Rate::ZERO),
            ),
            Some(s) => (
                resolve_rate(
                    "commission rate",
                    terms.commission_rate,
                    &s.commission,
                    s.overrides_allowed,
                )?,
                resolve_rate(
                    "buyer fee rate",
                    terms.buyer_fee_rate,
                    &s.buyer_fee,
                    s.overrides_allowed,
                )?,
            ),
        };
        Ok(terms.with_rates(commission_rate, buyer_fee_rate))
    }

    /// The platform fee of a payout of `amount`: as stated (checked against the schedule's range, applied
    /// to the amount) or the default rate applied to the amount; without a schedule, as stated or zero.
    /// A stated fee in another currency is returned as is, for the payment decider to refuse.
    pub fn payout_fee(&self, amount: Money, stated: Option<Money>) -> Result<Money, Rejection> {
        let Some(s) = &self.fees else {
            return Ok(stated.unwrap_or(Money::zero(amount.currency())));
        };
        let bounds = &s.payout_fee;
        let Some(fee) = stated else {
            return Ok(amount.fee(bounds.default));
        };
        if fee.currency() != amount.currency() {
            return Ok(fee);
        }
        let (min, max) = (amount.fee(bounds.min), amount.fee(bounds.max));
        let default = amount.fee(bounds.default);
        let allowed = if s.overrides_allowed {
            min.minor() <= fee.minor() && fee.minor() <= max.minor()
        } else {
            fee == default
        };
        if allowed {
            Ok(fee)
        } else {
            let range = if s.overrides_allowed {
                format!("{min} ..= {max} for a payout of {amount}")
            } else {
                format!("only the default {default} for a payout of {amount}")
            };
            Err(outside("payout fee", fee.to_string(), range))
        }
    }
}

pub struct LedgerPolicy;

impl Decider for LedgerPolicy {
    type Command = Ctx<LedgerPolicyCommand>;
    type Event = LedgerPolicyEvent;
    type State = LedgerPolicyState;
    type Error = Rejection;

    fn decide(
        cmd: &Ctx<LedgerPolicyCommand>,
        _state: &LedgerPolicyState,
    ) -> Result<Vec<LedgerPolicyEvent>, Rejection> {
        let LedgerPolicyCommand::SetFees(fees) = &cmd.body;
        if !matches!(cmd.actor, Actor::Admin(_)) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "set the fee policy",
                "only an operator",
            ));
        }
        for (what, b) in [
            ("commission", &fees.commission),
            ("buyer fee", &fees.buyer_fee),
            ("payout fee", &fees.payout_fee),
        ] {
            let (min, default, max) = (
                b.min.as_decimal(),
                b.default.as_decimal(),
                b.max.as_decimal(),
            );
            if !(min <= default && default <= max) {
                return Err(Rejection::InvalidCommand(format!(
                    "{what}: needs min <= default <= max, got {min}, {default}, {max}"
                )));
            }
        }
        Ok(vec![LedgerPolicyEvent::FeePolicySet { fees: *fees }])
    }

    fn evolve(mut state: LedgerPolicyState, event: &LedgerPolicyEvent) -> LedgerPolicyState {
        match event {
            LedgerPolicyEvent::FeePolicySet { fees } => state.fees = Some(*fees),
        }
        state
    }
}
