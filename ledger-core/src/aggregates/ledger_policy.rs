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
//!
//! The schedule also holds the durations of the deadlines the engine keeps (`DeadlinePolicy`, set with
//! `set_deadline_policy`): each a default and the range an override must fall in. Until an operator sets
//! them, `DeadlinePolicy::default()` applies (14 days auto-approval, 72 hours auto-acceptance, 30 days
//! request expiry, 7 days maturation, 14 days dispute answer, 3 days unpaid deposit). The engine applies a
//! duration when the event that starts the clock is decided and stores the due time (or the duration) in
//! that event, so a later policy change never moves a clock already running.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::project::{AUTO_APPROVE_DAYS_DEFAULT, FeePolicy, FeeTerms};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;
use crate::money::{Money, Rate};

/// A fee rate's default and the range a stated rate must fall in (`min <= default <= max`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Bound on the currencies a payout fee minimum may be set for.
pub const PAYOUT_FEE_MINIMUMS_MAX: usize = 64;

/// The platform's fee schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The least payout fee per currency (a rate of a small payout rounds to nothing): the fee is never
    /// below it. At most one per currency; none: no minimum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payout_fee_min: Vec<Money>,
}

impl FeeSchedule {
    /// The least payout fee in `currency` (zero when none is set).
    pub fn payout_fee_floor(&self, currency: crate::money::Currency) -> Money {
        self.payout_fee_min
            .iter()
            .find(|m| m.currency() == currency)
            .copied()
            .unwrap_or(Money::zero(currency))
    }
}

/// A duration's default and the range an override must fall in (`min <= default <= max`), in the unit
/// its field names.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationBounds {
    pub default: u32,
    pub min: u32,
    pub max: u32,
}

impl DurationBounds {
    const fn new(default: u32, min: u32, max: u32) -> DurationBounds {
        DurationBounds { default, min, max }
    }

    pub fn contains(&self, value: u32) -> bool {
        self.min <= value && value <= self.max
    }
}

/// Upper bound of every duration of the policy: ten years in hours (a limit on everything).
pub const DEADLINE_HOURS_MAX: u32 = 87_600;

/// How long each clock the engine keeps runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlinePolicy {
    /// A submitted milestone nobody reviews is auto-approved (a project's `auto_approve_days` overrides).
    pub auto_approve_days: DurationBounds,
    /// A delivered booking nobody accepts is auto-accepted (a quote's `auto_approve_days`, in days,
    /// overrides when it differs from the built-in 14).
    pub auto_accept_hours: DurationBounds,
    /// A service request opened without `expires_at` expires.
    pub request_expiry_hours: DurationBounds,
    /// A release to the seller's pending balance matures to available (0: projects release straight to
    /// available).
    pub pending_maturity_hours: DurationBounds,
    /// A dispute's `respond_by` is at most this long after it opens; with no answer it times out then.
    pub dispute_response_hours: DurationBounds,
    /// A deposit nobody pays expires (cancelled; a later success still books the money).
    pub deposit_expiry_hours: DurationBounds,
    /// The least time a dispute's counterparty gets to answer: a `respond_by` earlier than this after the
    /// dispute opens is refused (`deadline_too_soon`), so silence can never be manufactured.
    #[serde(default = "dispute_min_response_hours_default")]
    pub dispute_min_response_hours: u32,
}

/// Default least time to answer a dispute: 48 hours.
pub const DISPUTE_MIN_RESPONSE_HOURS_DEFAULT: u32 = 48;

fn dispute_min_response_hours_default() -> u32 {
    DISPUTE_MIN_RESPONSE_HOURS_DEFAULT
}

impl Default for DeadlinePolicy {
    fn default() -> Self {
        DeadlinePolicy {
            auto_approve_days: DurationBounds::new(14, 1, 365),
            auto_accept_hours: DurationBounds::new(72, 1, 24 * 365),
            request_expiry_hours: DurationBounds::new(24 * 30, 1, 24 * 365),
            pending_maturity_hours: DurationBounds::new(24 * 7, 0, 24 * 365),
            dispute_response_hours: DurationBounds::new(24 * 14, 1, 24 * 365),
            deposit_expiry_hours: DurationBounds::new(72, 1, 24 * 365),
            dispute_min_response_hours: DISPUTE_MIN_RESPONSE_HOURS_DEFAULT,
        }
    }
}

impl DeadlinePolicy {
    /// The least time a counterparty gets to answer a dispute: the policy's minimum, never more than the
    /// longest a dispute may wait (`dispute_response_hours.default`, which caps `respond_by`).
    pub fn dispute_answer_window_hours(&self) -> u32 {
        self.dispute_min_response_hours
            .min(self.dispute_response_hours.default)
    }

    fn fields(&self) -> [(&'static str, &DurationBounds, u32); 6] {
        [
            (
                "auto_approve_days",
                &self.auto_approve_days,
                DEADLINE_HOURS_MAX / 24,
            ),
            (
                "auto_accept_hours",
                &self.auto_accept_hours,
                DEADLINE_HOURS_MAX,
            ),
            (
                "request_expiry_hours",
                &self.request_expiry_hours,
                DEADLINE_HOURS_MAX,
            ),
            (
                "pending_maturity_hours",
                &self.pending_maturity_hours,
                DEADLINE_HOURS_MAX,
            ),
            (
                "dispute_response_hours",
                &self.dispute_response_hours,
                DEADLINE_HOURS_MAX,
            ),
            (
                "deposit_expiry_hours",
                &self.deposit_expiry_hours,
                DEADLINE_HOURS_MAX,
            ),
        ]
    }

    /// Refuses bounds out of order or past the ceiling, a zero where a clock must run (the minimum answer
    /// window included).
    pub fn validate(&self) -> Result<(), Rejection> {
        let window = self.dispute_min_response_hours;
        if window == 0 || window > DEADLINE_HOURS_MAX {
            return Err(Rejection::InvalidCommand(format!(
                "dispute_min_response_hours: needs 1 <= value <= {DEADLINE_HOURS_MAX}, got {window}"
            )));
        }
        for (what, b, ceiling) in self.fields() {
            let zero_allowed = what == "pending_maturity_hours";
            if !(b.min <= b.default && b.default <= b.max && b.max <= ceiling)
                || (!zero_allowed && b.min == 0)
            {
                return Err(Rejection::InvalidCommand(format!(
                    "{what}: needs {} <= min <= default <= max <= {ceiling}, got {}, {}, {}",
                    u32::from(!zero_allowed),
                    b.min,
                    b.default,
                    b.max
                )));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPolicyState {
    /// `None` until an operator sets a schedule.
    pub fees: Option<FeeSchedule>,
    /// `None` until an operator sets deadlines: `DeadlinePolicy::default()` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadlines: Option<DeadlinePolicy>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LedgerPolicyCommand {
    SetFees(FeeSchedule),
    SetDeadlines(DeadlinePolicy),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LedgerPolicyEvent {
    FeePolicySet { fees: FeeSchedule },
    DeadlinePolicySet { deadlines: DeadlinePolicy },
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
        let mut decided = terms.with_rates(commission_rate, buyer_fee_rate);
        self.resolve_deadline_terms(&mut decided)?;
        Ok(decided)
    }

    /// The deadlines in force: the operator's, else the defaults.
    pub fn deadline_policy(&self) -> DeadlinePolicy {
        self.deadlines.unwrap_or_default()
    }

    /// A project's deadline terms against the policy: `auto_approve_days` left at the built-in default takes
    /// the policy's default, another value must be within its range; with a maturation of 0 hours, releases
    /// go straight to available.
    fn resolve_deadline_terms(&self, terms: &mut FeePolicy) -> Result<(), Rejection> {
        let policy = self.deadline_policy();
        let bounds = policy.auto_approve_days;
        if terms.auto_approve_days == AUTO_APPROVE_DAYS_DEFAULT {
            terms.auto_approve_days = bounds.default;
        } else if !bounds.contains(terms.auto_approve_days) {
            return Err(outside(
                "auto-approval days",
                terms.auto_approve_days.to_string(),
                format!(
                    "{} ..= {} (default {})",
                    bounds.min, bounds.max, bounds.default
                ),
            ));
        }
        if policy.pending_maturity_hours.default == 0 {
            terms.release_to_pending = false;
        }
        Ok(())
    }

    /// The platform fee of a payout of `amount`: as stated (checked against the schedule's range, applied
    /// to the amount) or the default rate applied to the amount; without a schedule, as stated or zero.
    /// A stated fee in another currency is returned as is, for the payment decider to refuse.
    pub fn payout_fee(&self, amount: Money, stated: Option<Money>) -> Result<Money, Rejection> {
        let Some(s) = &self.fees else {
            return Ok(stated.unwrap_or(Money::zero(amount.currency())));
        };
        let bounds = &s.payout_fee;
        let floor = s.payout_fee_floor(amount.currency());
        let at_least = |fee: Money| {
            if fee.minor() < floor.minor() {
                floor
            } else {
                fee
            }
        };
        let default = at_least(amount.fee(bounds.default));
        let Some(fee) = stated else {
            return Ok(default);
        };
        if fee.currency() != amount.currency() {
            return Ok(fee);
        }
        let (min, max) = (
            at_least(amount.fee(bounds.min)),
            at_least(amount.fee(bounds.max)),
        );
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

/// Payout fee minimums: positive, within the amount ceiling, one per currency, a bounded list.
fn validate_minimums(minimums: &[Money]) -> Result<(), Rejection> {
    if minimums.len() > PAYOUT_FEE_MINIMUMS_MAX {
        return Err(Rejection::InvalidCommand(format!(
            "payout_fee_min: at most {PAYOUT_FEE_MINIMUMS_MAX} currencies, got {}",
            minimums.len()
        )));
    }
    for (i, m) in minimums.iter().enumerate() {
        if !m.is_positive() {
            return Err(Rejection::InvalidCommand(format!(
                "payout_fee_min: {m} is not positive"
            )));
        }
        super::require_within_ceiling("a payout fee minimum", i128::from(m.minor()), m.currency())?;
        if minimums[..i].iter().any(|o| o.currency() == m.currency()) {
            return Err(Rejection::InvalidCommand(format!(
                "payout_fee_min: {} is listed twice",
                m.currency()
            )));
        }
    }
    Ok(())
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
        if !matches!(cmd.actor, Actor::Admin(_)) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "set the ledger policy",
                "only an operator",
            ));
        }
        let fees = match &cmd.body {
            LedgerPolicyCommand::SetFees(fees) => {
                validate_minimums(&fees.payout_fee_min)?;
                fees
            }
            LedgerPolicyCommand::SetDeadlines(deadlines) => {
                deadlines.validate()?;
                return Ok(vec![LedgerPolicyEvent::DeadlinePolicySet {
                    deadlines: *deadlines,
                }]);
            }
        };
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
        Ok(vec![LedgerPolicyEvent::FeePolicySet { fees: fees.clone() }])
    }

    fn evolve(mut state: LedgerPolicyState, event: &LedgerPolicyEvent) -> LedgerPolicyState {
        match event {
            LedgerPolicyEvent::FeePolicySet { fees } => state.fees = Some(fees.clone()),
            LedgerPolicyEvent::DeadlinePolicySet { deadlines } => {
                state.deadlines = Some(*deadlines)
            }
        }
        state
    }
}
