//! Payment: one external money movement (deposit, payout, card refund) and a deposit's chargebacks.
//!
//! Status only moves forward. Per kind (domain.md):
//! - a deposit is a series of attempts: a failed attempt does not close it and a later success is accepted;
//! - a failed payout or card refund is terminal (its money went back to the wallet, maybe spent since): a
//!   success reported afterwards is money that really left, posted Dr `Assets:Receivable:Users:<user>` Cr
//!   Clearing and recorded as an anomaly; it never pushes a wallet below zero;
//! - a late failure after completion moves no money and is recorded as an anomaly;
//! - a repeated outcome (the same success twice) is a no-op: the money effect is idempotent per payment and
//!   outcome, whatever gateway event ids carried it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Ctx, require_currency, require_positive, require_within_ceiling};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, Gateway, MilestoneNo};
use crate::journal::{Account, EntryBuilder, JournalEntry};
use crate::money::{Currency, Money};

/// Bound on chargebacks tracked per deposit.
pub const CHARGEBACKS_PER_PAYMENT_MAX: usize = 8;
/// Bound on card refunds requested of one deposit.
pub const REFUNDS_PER_DEPOSIT_MAX: usize = 32;
/// Bound on a gateway's reference of a payout or card refund.
pub const GATEWAY_REFERENCE_BYTES_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Deposit,
    Payout,
    CardRefund,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PaymentStatus {
    #[default]
    None,
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Reversed,
}

/// The milestone a deposit is meant to fund once it succeeds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundTarget {
    pub project_id: Uuid,
    pub milestone: MilestoneNo,
}

/// Escrow a lost chargeback may take: a milestone's held amount, then its deferred buyer fee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowSource {
    pub project_id: Uuid,
    pub milestone: MilestoneNo,
    pub held_minor: i64,
    pub buyer_fee_minor: i64,
}

/// What a lost chargeback took from one milestone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowTaken {
    pub project_id: Uuid,
    pub milestone: MilestoneNo,
    pub escrow: Money,
    pub buyer_fee: Money,
}

/// How far a lost chargeback may reach before it becomes a receivable or a loss.
#[derive(Clone, Copy, Debug)]
struct Coverage {
    recover: bool,
    available_minor: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargebackStatus {
    Open,
    Won,
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargebackState {
    pub id: Uuid,
    pub amount_minor: i64,
    pub status: ChargebackStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    pub id: Uuid,
    pub kind: Option<PaymentKind>,
    pub status: PaymentStatus,
    pub user: Uuid,
    pub amount_minor: i64,
    /// Platform payout fee (payouts only), charged with the payout.
    pub fee_minor: i64,
    pub currency: Option<Currency>,
    pub gateway: Option<Gateway>,
    pub fund: Option<FundTarget>,
    pub received_minor: i64,
    pub late_success_recorded: bool,
    pub late_failure_recorded: bool,
    pub chargebacks: Vec<ChargebackState>,
    /// When an unpaid deposit expires (deposits initiated before the deadline policy: `None`, never).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// A deposit: what card refunds of it have taken (requested, less those that failed).
    #[serde(default)]
    pub refunded_minor: i64,
    /// A card refund: the deposit it gives money back to (refunds requested before it was required: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<Uuid>,
    /// A deposit: the card refunds requested of it, oldest first (at most `REFUNDS_PER_DEPOSIT_MAX`), so that
    /// a gateway's refund notice naming the deposit finds the refund it answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Uuid>,
    /// A payout or card refund: the gateway's own id of it, when its worker recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_reference: Option<String>,
}

impl PaymentState {
    /// What a card refund of this deposit may still give back: what it brought in, less earlier refunds and
    /// chargebacks not won.
    pub fn refundable_minor(&self) -> i64 {
        let charged_back: i64 = self
            .chargebacks
            .iter()
            .filter(|c| c.status != ChargebackStatus::Won)
            .map(|c| c.amount_minor)
            .sum();
        (self.received_minor - self.refunded_minor - charged_back).max(0)
    }

    pub fn exists(&self) -> bool {
        self.kind.is_some()
    }
    fn currency(&self) -> Currency {
        self.currency.expect("an existing payment has a currency")
    }
    fn money(&self, minor: i64) -> Money {
        Money::from_minor(minor, self.currency())
    }
    fn clearing(&self) -> Account {
        Account::GatewayClearing(self.gateway.expect("an existing payment has a gateway"))
    }
    /// Total kept in transit (payout amount plus payout fee, or the refund amount).
    fn in_transit(&self) -> Money {
        self.money(self.amount_minor + self.fee_minor)
    }
    fn in_transit_account(&self) -> Account {
        match self.kind {
            Some(PaymentKind::CardRefund) => Account::RefundsInTransit(self.id),
            _ => Account::PayoutsInTransit(self.id),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum PaymentCommand {
    InitiateDeposit {
        payment_id: Uuid,
        amount: Money,
        gateway: Gateway,
        fund: Option<FundTarget>,
        expires_at: Option<DateTime<Utc>>,
    },
    MarkProcessing,
    /// The timer: an unpaid deposit past its expiry is cancelled.
    ExpireDeposit,
    DepositSucceeded {
        amount: Money,
        gateway_fee: Money,
        /// A fee reported with more digits than the currency: debited to suspense, not to fees.
        fee_in_suspense: Money,
        occurred_at: DateTime<Utc>,
    },
    DepositFailed {
        reason: String,
    },
    CancelDeposit,
    RequestPayout {
        payout_id: Uuid,
        amount: Money,
        fee: Money,
        gateway: Gateway,
    },
    RequestCardRefund {
        refund_id: Uuid,
        amount: Money,
        gateway: Gateway,
        deposit_id: Uuid,
    },
    /// On the deposit a card refund names: its payer takes back at most what it brought in through the same
    /// gateway (less earlier refunds and chargebacks).
    ReserveRefund {
        refund_id: Uuid,
        amount: Money,
        gateway: Gateway,
    },
    /// On the deposit: a failed card refund's reservation is given back.
    ReleaseRefund {
        refund_id: Uuid,
        amount: Money,
    },
    /// A card refund the gateway made unasked (see `Command::RecordGatewayRefund`): requested and processed
    /// at once, from the payer's wallet, when `from_wallet`; else held in suspense.
    RecordRefund {
        refund_id: Uuid,
        deposit_id: Uuid,
        user: Uuid,
        amount: Money,
        gateway: Gateway,
        gateway_fee: Money,
        occurred_at: DateTime<Utc>,
        from_wallet: bool,
        /// The gateway's id of the refund, kept on it.
        reference: Option<String>,
    },
    /// The gateway's own id of a payout or card refund (recorded by the payout worker).
    RecordReference {
        reference: String,
    },
    /// Payout or card refund confirmed by the gateway.
    Succeeded {
        gateway_fee: Money,
        /// As in `DepositSucceeded`.
        fee_in_suspense: Money,
        occurred_at: DateTime<Utc>,
    },
    /// Payout or card refund failed at the gateway.
    Failed {
        reason: String,
    },
    CancelPayout,
    /// A completed payout came back (bank return).
    PayoutReversed {
        occurred_at: DateTime<Utc>,
    },
    OpenChargeback {
        chargeback_id: Uuid,
        amount: Money,
        fee: Money,
        occurred_at: DateTime<Utc>,
    },
    WinChargeback {
        chargeback_id: Uuid,
    },
    /// `buyer_available_minor` is the buyer wallet's available balance, supplied by the engine.
    /// `buyer_available_minor` is the buyer wallet's available balance and `escrow_sources` the held
    /// escrow (and buyer fees) of that buyer's open milestones, both supplied by the engine, in coverage order.
    LoseChargeback {
        chargeback_id: Uuid,
        recover_from_user: bool,
        buyer_available_minor: i64,
        escrow_sources: Vec<EscrowSource>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentEvent {
    DepositInitiated {
        payment_id: Uuid,
        user: Uuid,
        amount: Money,
        gateway: Gateway,
        fund: Option<FundTarget>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
    },
    PaymentProcessing,
    DepositSucceeded {
        amount: Money,
        gateway_fee: Money,
        fund: Option<FundTarget>,
        entry: JournalEntry,
    },
    DepositAttemptFailed {
        reason: String,
        /// When it failed: an attempt that was processing restarts the expiry clock from here at the
        /// earliest (absent in events recorded before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    DepositCancelled,
    PayoutRequested {
        payout_id: Uuid,
        user: Uuid,
        amount: Money,
        fee: Money,
        gateway: Gateway,
        entry: JournalEntry,
    },
    PayoutCompleted {
        gateway_fee: Money,
        entry: JournalEntry,
    },
    PayoutFailed {
        reason: String,
        entry: JournalEntry,
    },
    PayoutCancelled {
        entry: JournalEntry,
    },
    PayoutReversed {
        entry: JournalEntry,
    },
    /// A payout reversed before its gateway reported it complete: its money (and payout fee) back in the
    /// wallet; ends the payout as reversed (a success reported afterwards changes nothing).
    PayoutReturned {
        entry: JournalEntry,
    },
    CardRefundRequested {
        refund_id: Uuid,
        user: Uuid,
        amount: Money,
        gateway: Gateway,
        entry: JournalEntry,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deposit_id: Option<Uuid>,
    },
    /// On a deposit: a card refund of it was requested (no money moves here; the refund's entry moves it).
    DepositRefundReserved {
        refund_id: Uuid,
        amount: Money,
    },
    /// On a deposit: a card refund of it failed, so it may be refunded again.
    DepositRefundReleased {
        refund_id: Uuid,
        amount: Money,
    },
    CardRefundProcessed {
        gateway_fee: Money,
        entry: JournalEntry,
    },
    CardRefundFailed {
        reason: String,
        entry: JournalEntry,
    },
    /// Anomaly: money left after we had already treated the payment as failed. Needs a person.
    SuccessAfterFailure {
        amount: Money,
        entry: JournalEntry,
    },
    /// Anomaly: a failure reported after completion. No money moves.
    LateFailureIgnored {
        reason: String,
    },
    ChargebackOpened {
        chargeback_id: Uuid,
        amount: Money,
        fee: Money,
        entry: JournalEntry,
    },
    ChargebackWon {
        chargeback_id: Uuid,
        entry: JournalEntry,
    },
    /// Anomaly: a card refund the gateway made unasked while the payer's wallet no longer held the money: it
    /// left the gateway's clearing account and is held in suspense (Dr Suspense, Cr Clearing) for a person.
    UnrequestedRefundHeld {
        refund_id: Uuid,
        deposit_id: Uuid,
        user: Uuid,
        amount: Money,
        gateway: Gateway,
        entry: JournalEntry,
    },
    /// The gateway's own id of this payout or card refund.
    GatewayReferenceRecorded {
        reference: String,
    },
    /// Anomaly: a chargeback's outcome reported after the opposite one was recorded (won after lost, or lost
    /// after won). The first outcome's money stands; nothing moves; a person must look.
    ChargebackOutcomeConflict {
        chargeback_id: Uuid,
        recorded: ChargebackStatus,
        reported: ChargebackStatus,
    },
    ChargebackLost {
        chargeback_id: Uuid,
        from_wallet: Money,
        #[serde(default)]
        from_escrow: Vec<EscrowTaken>,
        receivable: Money,
        loss: Money,
        entry: JournalEntry,
    },
}

pub struct Payment;

impl PaymentEvent {
    /// An anomaly for a person: a late failure after success, money out after a failure, a chargeback's
    /// outcome after the opposite one, a refund made unasked that no wallet covered.
    pub fn is_anomaly(&self) -> bool {
        matches!(
            self,
            PaymentEvent::LateFailureIgnored { .. }
                | PaymentEvent::SuccessAfterFailure { .. }
                | PaymentEvent::ChargebackOutcomeConflict { .. }
                | PaymentEvent::UnrequestedRefundHeld { .. }
        )
    }
}

/// What a gateway took for one movement: the fee booked to `Expenses:GatewayFees`, and a fee it reported
/// with more digits than the currency has, held in `Liabilities:Suspense` for a person (never dropped).
#[derive(Clone, Copy, Debug)]
struct Fees {
    booked: Money,
    in_suspense: Money,
}

impl Fees {
    /// Both, in the payment's currency and not negative.
    fn total(&self, currency: Currency) -> Result<Money, Rejection> {
        for fee in [self.booked, self.in_suspense] {
            require_currency(currency, fee)?;
            if fee.minor() < 0 {
                return Err(Rejection::NonPositiveAmount(fee.to_string()));
            }
        }
        Ok(self.booked.checked_add(self.in_suspense)?)
    }
}

const AGG: &str = "payment";

/// Outcomes are reported by a verified gateway callback, the timers or an operator; a gateway only about its
/// own payments (a callback from another gateway naming this payment is not its report: `not_a_party`).
fn require_reporter(
    actor: &Actor,
    s: &PaymentState,
    action: &'static str,
) -> Result<(), Rejection> {
    match actor {
        Actor::Gateway(g) if s.gateway == Some(*g) => Ok(()),
        Actor::Gateway(_) => Err(Rejection::not_party(
            actor,
            action,
            "a gateway reports only on payments made through it",
        )),
        Actor::System | Actor::Admin(_) => Ok(()),
        _ => Err(Rejection::not_party(
            actor,
            action,
            "only a verified gateway callback or an operator",
        )),
    }
}

/// Money comes in only on a gateway's word (its verified callback, about its own payment) or an operator's
/// manual confirmation (a bank transfer matched by hand, recorded with the operator's id). Neither the timers
/// nor a backend acting as the system may confirm a deposit.
fn require_confirmer(actor: &Actor, s: &PaymentState) -> Result<(), Rejection> {
    match actor {
        Actor::Admin(_) => Ok(()),
        Actor::Gateway(_) => require_reporter(actor, s, "confirm a deposit"),
        _ => Err(Rejection::not_party(
            actor,
            "confirm a deposit",
            "only its gateway's verified callback or an operator's manual confirmation",
        )),
    }
}

fn require_user(actor: &Actor, action: &'static str) -> Result<Uuid, Rejection> {
    actor
        .user()
        .ok_or_else(|| Rejection::not_party(actor, action, "only the wallet's owner"))
}

/// A deposit's own commands apply only to a deposit.
fn require_deposit(s: &PaymentState, action: &'static str) -> Result<(), Rejection> {
    if s.kind == Some(PaymentKind::Deposit) {
        Ok(())
    } else {
        Err(Rejection::transition(AGG, s.kind, action))
    }
}

/// A payout's or card refund's own commands apply only to those.
fn require_outbound(s: &PaymentState, action: &'static str) -> Result<(), Rejection> {
    if matches!(s.kind, Some(PaymentKind::Payout | PaymentKind::CardRefund)) {
        Ok(())
    } else {
        Err(Rejection::transition(AGG, s.kind, action))
    }
}

impl Payment {
    /// A deposit nobody paid by its expiry is cancelled (pending, or after failed attempts only).
    fn expire_deposit(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "expire a deposit",
                "only the timer",
            ));
        }
        if !matches!(s.status, PaymentStatus::Pending | PaymentStatus::Failed) {
            return Err(Rejection::transition(AGG, s.status, "expire"));
        }
        let due = s
            .expires_at
            .ok_or_else(|| Rejection::InvalidCommand("this deposit has no expiry".into()))?;
        if cmd.at < due {
            return Err(Rejection::TooEarly {
                what: "deposit expiry",
                due: due.to_rfc3339(),
            });
        }
        Ok(vec![PaymentEvent::DepositCancelled])
    }

    fn deposit_succeeded(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        amount: Money,
        fees: Fees,
        occurred_at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_confirmer(&cmd.actor, s)?;
        if s.status == PaymentStatus::Completed || s.status == PaymentStatus::Reversed {
            return Ok(vec![]); // the same outcome again: already applied
        }
        require_currency(s.currency(), amount)?;
        require_positive(amount)?;
        let taken = fees.total(s.currency())?;
        let gateway_fee = fees.booked;
        if taken.minor() > amount.minor() {
            return Err(Rejection::AmountTooLarge {
                what: "gateway fee",
                amount: taken.to_string(),
                limit: amount.to_string(),
            });
        }
        let entry = EntryBuilder::new(s.currency())
            .debit(s.clearing(), amount.checked_sub(taken)?)
            .debit(Account::GatewayFees, gateway_fee)
            .debit(Account::Suspense, fees.in_suspense)
            .credit(Account::UserAvailable { user: s.user }, amount)
            .build(cmd.at, occurred_at)?;
        Ok(vec![PaymentEvent::DepositSucceeded {
            amount,
            gateway_fee,
            fund: s.fund,
            entry,
        }])
    }

    fn request_out(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if s.exists() {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        let user = require_user(&cmd.actor, "move money out of a wallet")?;
        let (id, amount, fee, gateway, refund) = match &cmd.body {
            PaymentCommand::RequestPayout {
                payout_id,
                amount,
                fee,
                gateway,
            } => (*payout_id, *amount, *fee, *gateway, false),
            PaymentCommand::RequestCardRefund {
                refund_id,
                amount,
                gateway,
                ..
            } => (
                *refund_id,
                *amount,
                Money::zero(amount.currency()),
                *gateway,
                true,
            ),
            _ => unreachable!("request_out is only called for payout and card refund requests"),
        };
        require_positive(amount)?;
        require_currency(amount.currency(), fee)?;
        if fee.minor() < 0 {
            return Err(Rejection::NonPositiveAmount(fee.to_string()));
        }
        let total = amount.checked_add(fee)?;
        require_within_ceiling(
            "an amount and its fee",
            i128::from(total.minor()),
            total.currency(),
        )?;
        let transit = if refund {
            Account::RefundsInTransit(id)
        } else {
            Account::PayoutsInTransit(id)
        };
        let entry = EntryBuilder::new(amount.currency())
            .debit(Account::UserAvailable { user }, total)
            .credit(transit, total)
            .build(cmd.at, cmd.at)?;
        let deposit_id = match &cmd.body {
            PaymentCommand::RequestCardRefund { deposit_id, .. } => Some(*deposit_id),
            _ => None,
        };
        Ok(vec![if refund {
            PaymentEvent::CardRefundRequested {
                refund_id: id,
                user,
                amount,
                gateway,
                entry,
                deposit_id,
            }
        } else {
            PaymentEvent::PayoutRequested {
                payout_id: id,
                user,
                amount,
                fee,
                gateway,
                entry,
            }
        }])
    }

    fn out_succeeded(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        fees: Fees,
        occurred_at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_reporter(&cmd.actor, s, "confirm a payout or refund")?;
        let taken = fees.total(s.currency())?;
        let gateway_fee = fees.booked;
        let amount = s.money(s.amount_minor);
        match s.status {
            PaymentStatus::Completed | PaymentStatus::Reversed => Ok(vec![]),
            PaymentStatus::Failed | PaymentStatus::Cancelled if s.late_success_recorded => {
                Ok(vec![])
            }
            PaymentStatus::Failed | PaymentStatus::Cancelled => {
                let entry = EntryBuilder::new(s.currency())
                    .debit(Account::Receivable { user: s.user }, amount)
                    .debit(Account::GatewayFees, gateway_fee)
                    .debit(Account::Suspense, fees.in_suspense)
                    .credit(s.clearing(), amount.checked_add(taken)?)
                    .build(cmd.at, occurred_at)?;
                Ok(vec![PaymentEvent::SuccessAfterFailure { amount, entry }])
            }
            _ => {
                let mut b = EntryBuilder::new(s.currency())
                    .debit(s.in_transit_account(), s.in_transit())
                    .debit(Account::GatewayFees, gateway_fee)
                    .debit(Account::Suspense, fees.in_suspense)
                    .credit(s.clearing(), amount.checked_add(taken)?);
                if s.kind == Some(PaymentKind::Payout) {
                    b = b.credit(Account::PayoutFees, s.money(s.fee_minor));
                }
                let entry = b.build(cmd.at, occurred_at)?;
                Ok(vec![if s.kind == Some(PaymentKind::Payout) {
                    PaymentEvent::PayoutCompleted { gateway_fee, entry }
                } else {
                    PaymentEvent::CardRefundProcessed { gateway_fee, entry }
                }])
            }
        }
    }

    /// A card refund gives money back where it came from: the payer of a completed deposit, through that
    /// deposit's gateway, at most what it brought in less earlier refunds and chargebacks. Anything else
    /// leaving a wallet is a payout and pays the payout fee.
    fn reserve_refund(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        refund_id: Uuid,
        amount: Money,
        gateway: Gateway,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        // Its payer asks; or its gateway reports a refund it made unasked (`RecordGatewayRefund`).
        let by_gateway = matches!(cmd.actor, Actor::Gateway(g) if s.gateway == Some(g));
        if !cmd.actor.is(s.user) && !by_gateway {
            return Err(Rejection::not_party(
                &cmd.actor,
                "refund a deposit to its card",
                "only the deposit's payer, or its gateway reporting a refund it made",
            ));
        }
        if s.status != PaymentStatus::Completed {
            return Err(Rejection::transition(AGG, s.status, "refund to its card"));
        }
        if s.gateway != Some(gateway) {
            return Err(Rejection::InvalidCommand(format!(
                "a card refund goes back through the deposit's own gateway ({}), not {gateway}",
                s.gateway.map_or_else(String::new, |g| g.to_string())
            )));
        }
        require_currency(s.currency(), amount)?;
        require_positive(amount)?;
        if s.refunds.len() >= REFUNDS_PER_DEPOSIT_MAX {
            return Err(Rejection::InvalidCommand(format!(
                "a deposit takes at most {REFUNDS_PER_DEPOSIT_MAX} card refunds"
            )));
        }
        if amount.minor() > s.refundable_minor() {
            return Err(Rejection::AmountTooLarge {
                what: "a card refund of this deposit (what it brought in, less earlier refunds and chargebacks)",
                amount: amount.to_string(),
                limit: s.money(s.refundable_minor()).to_string(),
            });
        }
        Ok(vec![PaymentEvent::DepositRefundReserved {
            refund_id,
            amount,
        }])
    }

    /// The in-transit money goes back to the wallet (failure or cancellation of a payout or refund).
    fn return_to_wallet(at: DateTime<Utc>, s: &PaymentState) -> Result<JournalEntry, Rejection> {
        Ok(EntryBuilder::new(s.currency())
            .debit(s.in_transit_account(), s.in_transit())
            .credit(Account::UserAvailable { user: s.user }, s.in_transit())
            .build(at, at)?)
    }

    fn out_failed(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        reason: &str,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_reporter(&cmd.actor, s, "fail a payout or refund")?;
        match s.status {
            PaymentStatus::Failed | PaymentStatus::Cancelled => Ok(vec![]),
            PaymentStatus::Completed | PaymentStatus::Reversed if s.late_failure_recorded => {
                Ok(vec![])
            }
            PaymentStatus::Completed | PaymentStatus::Reversed => {
                Ok(vec![PaymentEvent::LateFailureIgnored {
                    reason: reason.to_string(),
                }])
            }
            _ => {
                let entry = Payment::return_to_wallet(cmd.at, s)?;
                let reason = reason.to_string();
                Ok(vec![if s.kind == Some(PaymentKind::Payout) {
                    PaymentEvent::PayoutFailed { reason, entry }
                } else {
                    PaymentEvent::CardRefundFailed { reason, entry }
                }])
            }
        }
    }

    fn chargeback(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_reporter(&cmd.actor, s, "record a chargeback")?;
        if s.kind != Some(PaymentKind::Deposit)
            || !matches!(s.status, PaymentStatus::Completed | PaymentStatus::Reversed)
        {
            return Err(Rejection::transition(
                AGG,
                s.status,
                "take a chargeback (only completed deposits)",
            ));
        }
        let find = |id: Uuid| s.chargebacks.iter().find(|c| c.id == id);
        match &cmd.body {
            PaymentCommand::OpenChargeback {
                chargeback_id,
                amount,
                fee,
                occurred_at,
            } => {
                if find(*chargeback_id).is_some() {
                    return Ok(vec![]);
                }
                Payment::open_chargeback(cmd, s, *chargeback_id, *amount, *fee, *occurred_at)
            }
            PaymentCommand::WinChargeback { chargeback_id } => {
                let cb = find(*chargeback_id).ok_or(Rejection::NotFound {
                    aggregate: "chargeback",
                    id: chargeback_id.to_string(),
                })?;
                match cb.status {
                    ChargebackStatus::Open => Payment::win_chargeback(cmd, s, *cb),
                    ChargebackStatus::Won => Ok(vec![]),
                    ChargebackStatus::Lost => Ok(conflict(cb, ChargebackStatus::Won)),
                }
            }
            PaymentCommand::LoseChargeback {
                chargeback_id,
                recover_from_user,
                buyer_available_minor,
                escrow_sources,
            } => {
                let cb = find(*chargeback_id).ok_or(Rejection::NotFound {
                    aggregate: "chargeback",
                    id: chargeback_id.to_string(),
                })?;
                match cb.status {
                    ChargebackStatus::Open => {}
                    ChargebackStatus::Lost => return Ok(vec![]),
                    ChargebackStatus::Won => return Ok(conflict(cb, ChargebackStatus::Lost)),
                }
                let coverage = Coverage {
                    recover: *recover_from_user,
                    available_minor: *buyer_available_minor,
                };
                Payment::lose_chargeback(cmd, s, *cb, coverage, escrow_sources)
            }
            _ => unreachable!("chargeback is only called for chargeback commands"),
        }
    }

    /// A new chargeback takes its amount and fee out of clearing, up to what the deposit brought in less the
    /// chargebacks not won.
    fn open_chargeback(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        chargeback_id: Uuid,
        amount: Money,
        fee: Money,
        occurred_at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if s.chargebacks.len() >= CHARGEBACKS_PER_PAYMENT_MAX {
            return Err(Rejection::InvalidCommand(
                "too many chargebacks on one deposit".into(),
            ));
        }
        require_currency(s.currency(), amount)?;
        require_currency(s.currency(), fee)?;
        require_positive(amount)?;
        let disputed: i64 = s
            .chargebacks
            .iter()
            .filter(|c| c.status != ChargebackStatus::Won)
            .map(|c| c.amount_minor)
            .sum();
        if disputed + amount.minor() > s.received_minor {
            return Err(Rejection::AmountTooLarge {
                what: "chargebacks",
                amount: amount.to_string(),
                limit: s.money(s.received_minor - disputed).to_string(),
            });
        }
        let entry = EntryBuilder::new(s.currency())
            .debit(Account::Chargeback(chargeback_id), amount)
            .debit(Account::ChargebackFees, fee)
            .credit(s.clearing(), amount.checked_add(fee)?)
            .build(cmd.at, occurred_at)?;
        Ok(vec![PaymentEvent::ChargebackOpened {
            chargeback_id,
            amount,
            fee,
            entry,
        }])
    }

    /// A won chargeback (still open) brings its amount back into clearing.
    fn win_chargeback(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        cb: ChargebackState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        let amount = s.money(cb.amount_minor);
        let entry = EntryBuilder::new(s.currency())
            .debit(s.clearing(), amount)
            .credit(Account::Chargeback(cb.id), amount)
            .build(cmd.at, cmd.at)?;
        Ok(vec![PaymentEvent::ChargebackWon {
            chargeback_id: cb.id,
            entry,
        }])
    }
}

impl Payment {
    /// Covered in order (domain.md): the buyer's wallet, escrow still held for that buyer (each milestone's
    /// held amount, then its deferred buyer fee), a receivable when the terms allow recovery, else a loss.
    fn lose_chargeback(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        cb: ChargebackState,
        coverage: Coverage,
        sources: &[EscrowSource],
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        let mut rest = cb.amount_minor;
        let from_wallet = s.money(rest.min(coverage.available_minor.max(0)));
        rest -= from_wallet.minor();
        let mut from_escrow = Vec::new();
        for source in sources {
            if rest == 0 {
                break;
            }
            let escrow = rest.min(source.held_minor.max(0));
            rest -= escrow;
            let fee = if escrow == source.held_minor {
                rest.min(source.buyer_fee_minor.max(0))
            } else {
                0
            };
            rest -= fee;
            if escrow + fee > 0 {
                from_escrow.push(EscrowTaken {
                    project_id: source.project_id,
                    milestone: source.milestone,
                    escrow: s.money(escrow),
                    buyer_fee: s.money(fee),
                });
            }
        }
        let (receivable, loss) = if coverage.recover {
            (s.money(rest), s.money(0))
        } else {
            (s.money(0), s.money(rest))
        };
        let mut b = EntryBuilder::new(s.currency())
            .debit(Account::UserAvailable { user: s.user }, from_wallet);
        for taken in &from_escrow {
            b = b
                .debit(
                    Account::Escrow {
                        project: taken.project_id,
                        milestone: taken.milestone,
                    },
                    taken.escrow,
                )
                .debit(
                    Account::DeferredFees {
                        project: taken.project_id,
                    },
                    taken.buyer_fee,
                );
        }
        let entry = b
            .debit(Account::Receivable { user: s.user }, receivable)
            .debit(Account::ChargebackLosses, loss)
            .credit(Account::Chargeback(cb.id), s.money(cb.amount_minor))
            .build(cmd.at, cmd.at)?;
        Ok(vec![PaymentEvent::ChargebackLost {
            chargeback_id: cb.id,
            from_wallet,
            from_escrow,
            receivable,
            loss,
            entry,
        }])
    }
}

/// Deposits: started by the payer, confirmed or failed by its gateway, cancelled or expired unpaid, and the
/// reservations card refunds of it take.
impl Payment {
    /// One deposit command, after the kind check each names (a new deposit has no kind yet).
    fn deposit_command(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        use PaymentCommand as C;
        match &cmd.body {
            C::InitiateDeposit { .. } => Payment::initiate_deposit(cmd, s),
            C::ExpireDeposit => {
                require_deposit(s, "expire as a deposit")?;
                Payment::expire_deposit(cmd, s)
            }
            C::DepositSucceeded {
                amount,
                gateway_fee,
                fee_in_suspense,
                occurred_at,
            } => {
                require_deposit(s, "confirm as a deposit")?;
                let fees = Fees {
                    booked: *gateway_fee,
                    in_suspense: *fee_in_suspense,
                };
                Payment::deposit_succeeded(cmd, s, *amount, fees, *occurred_at)
            }
            C::DepositFailed { reason } => {
                require_deposit(s, "fail as a deposit")?;
                Payment::deposit_failed(cmd, s, reason)
            }
            C::CancelDeposit => {
                require_deposit(s, "cancel as a deposit")?;
                Payment::cancel_deposit(cmd, s)
            }
            C::ReserveRefund {
                refund_id,
                amount,
                gateway,
            } => {
                require_deposit(s, "refund to a card as a deposit")?;
                Payment::reserve_refund(cmd, s, *refund_id, *amount, *gateway)
            }
            C::ReleaseRefund { refund_id, amount } => {
                require_deposit(s, "release a refund as a deposit")?;
                Payment::release_refund(cmd, *refund_id, *amount)
            }
            _ => unreachable!("deposit_command is only called for deposit commands"),
        }
    }

    /// The payer starts a deposit: a new payment, pending until its gateway reports.
    fn initiate_deposit(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        let PaymentCommand::InitiateDeposit {
            payment_id,
            amount,
            gateway,
            fund,
            expires_at,
        } = &cmd.body
        else {
            unreachable!("initiate_deposit is only called for InitiateDeposit")
        };
        if s.exists() {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: payment_id.to_string(),
            });
        }
        let user = require_user(&cmd.actor, "start a deposit")?;
        require_positive(*amount)?;
        Ok(vec![PaymentEvent::DepositInitiated {
            payment_id: *payment_id,
            user,
            amount: *amount,
            gateway: *gateway,
            fund: *fund,
            expires_at: *expires_at,
        }])
    }

    /// A failed attempt leaves the deposit open for another; a failure after completion moves no money and
    /// is recorded once as an anomaly.
    fn deposit_failed(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        reason: &str,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_reporter(&cmd.actor, s, "fail a deposit")?;
        Ok(match s.status {
            PaymentStatus::Completed | PaymentStatus::Reversed if s.late_failure_recorded => {
                vec![]
            }
            PaymentStatus::Completed | PaymentStatus::Reversed => {
                vec![PaymentEvent::LateFailureIgnored {
                    reason: reason.to_string(),
                }]
            }
            PaymentStatus::Cancelled => vec![],
            _ => vec![PaymentEvent::DepositAttemptFailed {
                reason: reason.to_string(),
                at: Some(cmd.at),
            }],
        })
    }

    /// Its payer or an operator cancels a deposit nobody has paid (pending, or after failed attempts only).
    fn cancel_deposit(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if !(cmd.actor.is(s.user) || matches!(cmd.actor, Actor::Admin(_))) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "cancel a deposit",
                "only its payer or an operator",
            ));
        }
        match s.status {
            PaymentStatus::Pending | PaymentStatus::Failed => {
                Ok(vec![PaymentEvent::DepositCancelled])
            }
            other => Err(Rejection::transition(AGG, other, "cancel")),
        }
    }

    /// The refund process gives a failed card refund's reservation back to the deposit.
    fn release_refund(
        cmd: &Ctx<PaymentCommand>,
        refund_id: Uuid,
        amount: Money,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "release a card refund's reservation",
                "only the refund process",
            ));
        }
        Ok(vec![PaymentEvent::DepositRefundReleased {
            refund_id,
            amount,
        }])
    }

    /// A gateway's notice that an attempt is under way (deposits, payouts and card refunds alike).
    fn mark_processing(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_reporter(&cmd.actor, s, "mark a payment processing")?;
        match s.status {
            PaymentStatus::Pending => Ok(vec![PaymentEvent::PaymentProcessing]),
            // A deposit is a series of attempts: a new attempt after a failed one is processing again.
            PaymentStatus::Failed if s.kind == Some(PaymentKind::Deposit) => {
                Ok(vec![PaymentEvent::PaymentProcessing])
            }
            // Already processing, or a stale notice arriving after the outcome (gateways deliver out
            // of order): status only moves forward, so it changes nothing and is not an error.
            PaymentStatus::Processing
            | PaymentStatus::Completed
            | PaymentStatus::Failed
            | PaymentStatus::Cancelled
            | PaymentStatus::Reversed => Ok(vec![]),
            PaymentStatus::None => Err(Rejection::transition(AGG, s.status, "mark processing")),
        }
    }
}

/// Transfers out of a wallet (payouts and card refunds): requested by the wallet's owner, confirmed or failed
/// by the gateway, cancelled while pending, and a completed payout reversed by the bank.
impl Payment {
    /// One payout or card refund command, after the kind check each names (a new one has no kind yet).
    fn transfer_command(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        use PaymentCommand as C;
        match &cmd.body {
            C::RequestPayout { .. } | C::RequestCardRefund { .. } => Payment::request_out(cmd, s),
            C::Succeeded {
                gateway_fee,
                fee_in_suspense,
                occurred_at,
            } => {
                require_outbound(s, "confirm as a payout or refund")?;
                let fees = Fees {
                    booked: *gateway_fee,
                    in_suspense: *fee_in_suspense,
                };
                Payment::out_succeeded(cmd, s, fees, *occurred_at)
            }
            C::Failed { reason } => {
                require_outbound(s, "fail as a payout or refund")?;
                Payment::out_failed(cmd, s, reason)
            }
            C::CancelPayout => {
                require_outbound(s, "cancel as a payout")?;
                Payment::cancel_payout(cmd, s)
            }
            C::PayoutReversed { occurred_at } => Payment::reverse_payout(cmd, s, *occurred_at),
            C::RecordRefund { .. } => Payment::record_refund(cmd, s),
            C::RecordReference { reference } => {
                require_outbound(s, "record a gateway reference as a payout or refund")?;
                Payment::record_reference(cmd, s, reference)
            }
            _ => {
                unreachable!("transfer_command is only called for payout and card refund commands")
            }
        }
    }

    /// A refund the gateway made unasked, reported by that gateway: a card refund requested and processed at
    /// once (Dr wallet, Cr RefundsInTransit; Dr RefundsInTransit, Dr fees, Cr Clearing), or, when the wallet no
    /// longer holds it, the money that left held in suspense (Dr Suspense, Cr Clearing) as an anomaly.
    fn record_refund(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        let PaymentCommand::RecordRefund {
            refund_id,
            deposit_id,
            user,
            amount,
            gateway,
            gateway_fee,
            occurred_at,
            from_wallet,
            reference,
        } = &cmd.body
        else {
            unreachable!("record_refund is only called for RecordRefund")
        };
        let kept = match reference.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() && r.len() <= GATEWAY_REFERENCE_BYTES_MAX => {
                Some(PaymentEvent::GatewayReferenceRecorded {
                    reference: r.to_string(),
                })
            }
            _ => None,
        };
        if s.exists() {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: refund_id.to_string(),
            });
        }
        if cmd.actor != Actor::Gateway(*gateway) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "record a refund the gateway made",
                "only that gateway's verified callback",
            ));
        }
        require_positive(*amount)?;
        require_currency(amount.currency(), *gateway_fee)?;
        if gateway_fee.minor() < 0 {
            return Err(Rejection::NonPositiveAmount(gateway_fee.to_string()));
        }
        let clearing = Account::GatewayClearing(*gateway);
        let currency = amount.currency();
        if !from_wallet {
            let entry = EntryBuilder::new(currency)
                .debit(Account::Suspense, amount.checked_add(*gateway_fee)?)
                .credit(clearing, amount.checked_add(*gateway_fee)?)
                .build(cmd.at, *occurred_at)?;
            let held = PaymentEvent::UnrequestedRefundHeld {
                refund_id: *refund_id,
                deposit_id: *deposit_id,
                user: *user,
                amount: *amount,
                gateway: *gateway,
                entry,
            };
            return Ok(std::iter::once(held).chain(kept).collect());
        }
        let transit = Account::RefundsInTransit(*refund_id);
        let requested = EntryBuilder::new(currency)
            .debit(Account::UserAvailable { user: *user }, *amount)
            .credit(transit, *amount)
            .build(cmd.at, *occurred_at)?;
        let processed = EntryBuilder::new(currency)
            .debit(transit, *amount)
            .debit(Account::GatewayFees, *gateway_fee)
            .credit(clearing, amount.checked_add(*gateway_fee)?)
            .build(cmd.at, *occurred_at)?;
        Ok(vec![
            PaymentEvent::CardRefundRequested {
                refund_id: *refund_id,
                user: *user,
                amount: *amount,
                gateway: *gateway,
                entry: requested,
                deposit_id: Some(*deposit_id),
            },
            PaymentEvent::CardRefundProcessed {
                gateway_fee: *gateway_fee,
                entry: processed,
            },
        ]
        .into_iter()
        .chain(kept)
        .collect())
    }

    /// The payout worker (the system, or an operator) records the gateway's id of a payout or refund it
    /// sent; the same id again changes nothing, another one is refused (a gateway id names one movement).
    fn record_reference(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        reference: &str,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if !matches!(cmd.actor, Actor::System | Actor::Admin(_)) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "record a gateway reference",
                "only the payout worker (system) or an operator",
            ));
        }
        let reference = reference.trim();
        if reference.is_empty() || reference.len() > GATEWAY_REFERENCE_BYTES_MAX {
            return Err(Rejection::InvalidCommand(format!(
                "a gateway reference has 1 to {GATEWAY_REFERENCE_BYTES_MAX} bytes"
            )));
        }
        match &s.gateway_reference {
            Some(known) if known == reference => Ok(vec![]),
            Some(known) => Err(Rejection::InvalidCommand(format!(
                "this payment's gateway reference is already {known:?}"
            ))),
            None => Ok(vec![PaymentEvent::GatewayReferenceRecorded {
                reference: reference.to_string(),
            }]),
        }
    }

    /// Its owner or an operator cancels a payout or refund still pending: the money goes back to the wallet.
    fn cancel_payout(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        if !(cmd.actor.is(s.user) || matches!(cmd.actor, Actor::Admin(_))) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "cancel a payout",
                "only its owner or an operator",
            ));
        }
        if s.status != PaymentStatus::Pending {
            return Err(Rejection::transition(AGG, s.status, "cancel"));
        }
        Ok(vec![PaymentEvent::PayoutCancelled {
            entry: Payment::return_to_wallet(cmd.at, s)?,
        }])
    }

    /// A completed payout came back (bank return): the money is the wallet's again.
    fn reverse_payout(
        cmd: &Ctx<PaymentCommand>,
        s: &PaymentState,
        occurred_at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        require_reporter(&cmd.actor, s, "reverse a payout")?;
        if s.kind != Some(PaymentKind::Payout) {
            return Err(Rejection::transition(AGG, s.kind, "reverse as a payout"));
        }
        match s.status {
            PaymentStatus::Reversed | PaymentStatus::Failed | PaymentStatus::Cancelled => {
                Ok(vec![])
            }
            // Returned before the gateway reported it complete (its notices crossed): the money, with the
            // payout fee, goes back to the wallet as a failure's would, and the payout ends reversed, so that
            // the success still on its way changes nothing (it went out and came back: nothing is owed).
            PaymentStatus::Pending | PaymentStatus::Processing => {
                Ok(vec![PaymentEvent::PayoutReturned {
                    entry: Payment::return_to_wallet(cmd.at, s)?,
                }])
            }
            PaymentStatus::Completed => {
                let amount = s.money(s.amount_minor);
                let entry = EntryBuilder::new(s.currency())
                    .debit(s.clearing(), amount)
                    .credit(Account::UserAvailable { user: s.user }, amount)
                    .build(cmd.at, occurred_at)?;
                Ok(vec![PaymentEvent::PayoutReversed { entry }])
            }
            other => Err(Rejection::transition(
                AGG,
                other,
                "reverse (only completed payouts)",
            )),
        }
    }
}

impl Decider for Payment {
    type Command = Ctx<PaymentCommand>;
    type Event = PaymentEvent;
    type State = PaymentState;
    type Error = Rejection;

    fn decide(cmd: &Ctx<PaymentCommand>, s: &PaymentState) -> Result<Vec<PaymentEvent>, Rejection> {
        use PaymentCommand as C;
        let creating = matches!(
            cmd.body,
            C::InitiateDeposit { .. }
                | C::RequestPayout { .. }
                | C::RequestCardRefund { .. }
                | C::RecordRefund { .. }
        );
        if !creating && !s.exists() {
            return Err(Rejection::NotFound {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        match &cmd.body {
            C::InitiateDeposit { .. }
            | C::ExpireDeposit
            | C::DepositSucceeded { .. }
            | C::DepositFailed { .. }
            | C::CancelDeposit
            | C::ReserveRefund { .. }
            | C::ReleaseRefund { .. } => Payment::deposit_command(cmd, s),
            C::MarkProcessing => Payment::mark_processing(cmd, s),
            C::RequestPayout { .. }
            | C::RequestCardRefund { .. }
            | C::Succeeded { .. }
            | C::Failed { .. }
            | C::CancelPayout
            | C::PayoutReversed { .. }
            | C::RecordRefund { .. }
            | C::RecordReference { .. } => Payment::transfer_command(cmd, s),
            C::OpenChargeback { .. } | C::WinChargeback { .. } | C::LoseChargeback { .. } => {
                Payment::chargeback(cmd, s)
            }
        }
    }

    fn evolve(mut s: PaymentState, event: &PaymentEvent) -> PaymentState {
        use PaymentEvent as E;
        match event {
            E::DepositInitiated { .. }
            | E::DepositSucceeded { .. }
            | E::DepositAttemptFailed { .. }
            | E::DepositCancelled
            | E::DepositRefundReserved { .. }
            | E::DepositRefundReleased { .. } => evolve_deposit(&mut s, event),
            E::PayoutRequested { .. }
            | E::CardRefundRequested { .. }
            | E::PayoutCompleted { .. }
            | E::CardRefundProcessed { .. }
            | E::PayoutFailed { .. }
            | E::CardRefundFailed { .. }
            | E::PayoutCancelled { .. }
            | E::PayoutReversed { .. }
            | E::PayoutReturned { .. } => evolve_transfer(&mut s, event),
            E::ChargebackOpened { .. } | E::ChargebackWon { .. } | E::ChargebackLost { .. } => {
                evolve_chargeback(&mut s, event)
            }
            E::ChargebackOutcomeConflict { .. } => {}
            E::GatewayReferenceRecorded { reference } => {
                s.gateway_reference = Some(reference.clone())
            }
            E::UnrequestedRefundHeld {
                refund_id,
                user,
                amount,
                gateway,
                deposit_id,
                ..
            } => {
                // Closed at once: the money left; what it was for is for a person.
                s = outbound(
                    *refund_id,
                    PaymentKind::CardRefund,
                    *user,
                    *amount,
                    0,
                    *gateway,
                );
                s.refund_of = Some(*deposit_id);
                s.status = PaymentStatus::Completed;
            }
            E::PaymentProcessing => s.status = PaymentStatus::Processing,
            E::SuccessAfterFailure { .. } => s.late_success_recorded = true,
            E::LateFailureIgnored { .. } => s.late_failure_recorded = true,
        }
        s
    }

    fn is_terminal(s: &PaymentState) -> bool {
        s.kind != Some(PaymentKind::Deposit)
            && matches!(
                s.status,
                PaymentStatus::Failed | PaymentStatus::Cancelled | PaymentStatus::Reversed
            )
    }
}

fn outbound(
    id: Uuid,
    kind: PaymentKind,
    user: Uuid,
    amount: Money,
    fee_minor: i64,
    gateway: Gateway,
) -> PaymentState {
    PaymentState {
        id,
        kind: Some(kind),
        status: PaymentStatus::Pending,
        user,
        amount_minor: amount.minor(),
        fee_minor,
        currency: Some(amount.currency()),
        gateway: Some(gateway),
        ..PaymentState::default()
    }
}

/// The anomaly of an outcome reported after its opposite (once per outcome: its dedupe key is its own).
fn conflict(cb: &ChargebackState, reported: ChargebackStatus) -> Vec<PaymentEvent> {
    vec![PaymentEvent::ChargebackOutcomeConflict {
        chargeback_id: cb.id,
        recorded: cb.status,
        reported,
    }]
}

fn set_chargeback(s: &mut PaymentState, id: Uuid, status: ChargebackStatus) {
    if let Some(c) = s.chargebacks.iter_mut().find(|c| c.id == id) {
        c.status = status;
    }
}

/// Folds a deposit's events: its start, attempts and outcome, and the card refunds reserved against it.
/// Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_deposit(s: &mut PaymentState, event: &PaymentEvent) {
    use PaymentEvent as E;
    match event {
        E::DepositInitiated {
            payment_id,
            user,
            amount,
            gateway,
            fund,
            expires_at,
        } => {
            *s = PaymentState {
                id: *payment_id,
                kind: Some(PaymentKind::Deposit),
                status: PaymentStatus::Pending,
                user: *user,
                amount_minor: amount.minor(),
                currency: Some(amount.currency()),
                gateway: Some(*gateway),
                fund: *fund,
                expires_at: *expires_at,
                ..PaymentState::default()
            };
        }
        E::DepositSucceeded { amount, .. } => {
            s.status = PaymentStatus::Completed;
            s.received_minor += amount.minor();
        }
        E::DepositAttemptFailed { .. } => s.status = PaymentStatus::Failed,
        E::DepositCancelled => s.status = PaymentStatus::Cancelled,
        E::DepositRefundReserved { amount, refund_id } => {
            s.refunded_minor += amount.minor();
            s.refunds.push(*refund_id);
        }
        E::DepositRefundReleased { amount, .. } => s.refunded_minor -= amount.minor(),
        _ => {}
    }
}

/// Folds a payout's or card refund's events: its request and outcome.
/// Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_transfer(s: &mut PaymentState, event: &PaymentEvent) {
    use PaymentEvent as E;
    match event {
        E::PayoutRequested {
            payout_id,
            user,
            amount,
            fee,
            gateway,
            ..
        } => {
            *s = outbound(
                *payout_id,
                PaymentKind::Payout,
                *user,
                *amount,
                fee.minor(),
                *gateway,
            );
        }
        E::CardRefundRequested {
            refund_id,
            user,
            amount,
            gateway,
            deposit_id,
            ..
        } => {
            *s = outbound(
                *refund_id,
                PaymentKind::CardRefund,
                *user,
                *amount,
                0,
                *gateway,
            );
            s.refund_of = *deposit_id;
        }
        E::PayoutCompleted { .. } | E::CardRefundProcessed { .. } => {
            s.status = PaymentStatus::Completed
        }
        E::PayoutFailed { .. } | E::CardRefundFailed { .. } => s.status = PaymentStatus::Failed,
        E::PayoutCancelled { .. } => s.status = PaymentStatus::Cancelled,
        E::PayoutReversed { .. } | E::PayoutReturned { .. } => s.status = PaymentStatus::Reversed,
        _ => {}
    }
}

/// Folds a deposit's chargebacks: opened, then won or lost.
/// Another family's event changes nothing here (`evolve` hands each event to its own family).
fn evolve_chargeback(s: &mut PaymentState, event: &PaymentEvent) {
    use PaymentEvent as E;
    match event {
        E::ChargebackOpened {
            chargeback_id,
            amount,
            ..
        } => s.chargebacks.push(ChargebackState {
            id: *chargeback_id,
            amount_minor: amount.minor(),
            status: ChargebackStatus::Open,
        }),
        E::ChargebackWon { chargeback_id, .. } => {
            set_chargeback(s, *chargeback_id, ChargebackStatus::Won)
        }
        E::ChargebackLost { chargeback_id, .. } => {
            set_chargeback(s, *chargeback_id, ChargebackStatus::Lost)
        }
        _ => {}
    }
}
