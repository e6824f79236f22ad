//! Settlements: a gateway pays what it holds for the platform out to the platform's own bank account.
//! One stream per (gateway, settlement id) (`settlement-<uuid v5>`), so a settlement id is booked once:
//! Dr `Assets:Bank:<bank_account>` amount, Dr `Expenses:GatewayFees` fee, Cr the gateway's clearing
//! amount + fee. Operators and timers record any gateway's; a gateway callback only its own.
//! A settlement may not take the clearing account below zero: the clearing account belongs to no stream (it
//! must never be a contention point), so the caller hands the decider its balance computed from the log
//! (`StateView::account_balance`, asked for with `DecideError::NeedBalance`). That balance carries no version:
//! a payout completing at the same moment is not serialized with the settlement.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Ctx, require_currency, require_positive, require_within_ceiling};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, Gateway};
use crate::journal::{Account, BankName, EntryBuilder, JournalEntry};
use crate::money::Money;

/// Namespace of settlement stream ids (UUID v5 of `"<gateway>:<settlement id>"`).
pub const SETTLEMENT_NAMESPACE: Uuid = Uuid::from_u128(0x3f6b_2a91_7c4d_4e0a_9b1f_5d2e_8c7a_6b13);
/// Longest settlement id accepted (a gateway's payout or settlement id).
pub const SETTLEMENT_ID_BYTES_MAX: usize = 256;

/// The stream id of a gateway's settlement.
pub fn settlement_stream_id(gateway: Gateway, settlement_id: &str) -> Uuid {
    Uuid::new_v5(
        &SETTLEMENT_NAMESPACE,
        format!("{gateway}:{settlement_id}").as_bytes(),
    )
}

/// Namespace of the clearing guard streams (UUID v5 of `"<gateway>:<currency>"`).
pub const CLEARING_GUARD_NAMESPACE: Uuid =
    Uuid::from_u128(0x9d41_0c6e_52b8_4f37_a1e4_07c3_6b2d_f850);

/// The stream every settlement of `gateway`'s clearing in `currency` writes (`ClearingSettled`): two
/// settlements decided on the same balance both append to it at the same version, so one of them fails at
/// append and is decided again on the balance the other left. Deposits and payouts never touch it (the
/// clearing account must not become their contention point).
pub fn clearing_guard_stream_id(gateway: Gateway, currency: crate::money::Currency) -> Uuid {
    Uuid::new_v5(
        &CLEARING_GUARD_NAMESPACE,
        format!("{gateway}:{currency}").as_bytes(),
    )
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementState {
    /// The amount and fee booked, once recorded.
    pub booked: Option<(Money, Money)>,
    /// A clearing guard stream: how many settlements it has serialized.
    #[serde(default)]
    pub guarded: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SettlementCommand {
    pub gateway: Gateway,
    pub settlement_id: String,
    pub bank_account: BankName,
    pub amount: Money,
    pub fee: Option<Money>,
    pub occurred_at: DateTime<Utc>,
    /// What the gateway's clearing account holds in this currency before the settlement (normal side, minor
    /// units), as the shell computed it from the log: a settlement may not take it below zero.
    pub clearing_balance_minor: i128,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SettlementEvent {
    SettlementRecorded {
        gateway: Gateway,
        settlement_id: String,
        bank_account: BankName,
        amount: Money,
        fee: Money,
        entry: JournalEntry,
    },
    /// On the clearing guard stream of (gateway, currency): a settlement took this from the clearing. No
    /// money moves here (the settlement's own entry moves it).
    ClearingSettled {
        settlement_id: String,
        amount: Money,
    },
}

pub struct Settlement;

impl Decider for Settlement {
    type Command = Ctx<SettlementCommand>;
    type Event = SettlementEvent;
    type State = SettlementState;
    type Error = Rejection;

    fn decide(
        cmd: &Ctx<SettlementCommand>,
        s: &SettlementState,
    ) -> Result<Vec<SettlementEvent>, Rejection> {
        let c = &cmd.body;
        match cmd.actor {
            Actor::Admin(_) | Actor::System => {}
            Actor::Gateway(g) if g == c.gateway => {}
            _ => {
                return Err(Rejection::not_party(
                    &cmd.actor,
                    "record a settlement",
                    "only operators, timers and the settling gateway",
                ));
            }
        }
        if c.settlement_id.trim().is_empty() || c.settlement_id.len() > SETTLEMENT_ID_BYTES_MAX {
            return Err(Rejection::InvalidCommand(format!(
                "settlement_id must be 1 to {SETTLEMENT_ID_BYTES_MAX} bytes"
            )));
        }
        require_positive(c.amount)?;
        let fee = c.fee.unwrap_or(Money::zero(c.amount.currency()));
        require_currency(c.amount.currency(), fee)?;
        if fee.minor() < 0 {
            return Err(Rejection::NonPositiveAmount(fee.to_string()));
        }
        require_within_ceiling(
            "a settlement plus its fee",
            i128::from(c.amount.minor()) + i128::from(fee.minor()),
            c.amount.currency(),
        )?;
        if let Some((amount, booked_fee)) = s.booked {
            if amount == c.amount && booked_fee == fee {
                return Ok(vec![]); // the same settlement announced again
            }
            return Err(Rejection::AlreadyExists {
                aggregate: "settlement",
                id: format!(
                    "{}:{} (booked {amount}, fee {booked_fee})",
                    c.gateway, c.settlement_id
                ),
            });
        }
        let total = Money::from_minor(c.amount.minor() + fee.minor(), c.amount.currency());
        if i128::from(total.minor()) > c.clearing_balance_minor {
            let available = i64::try_from(c.clearing_balance_minor)
                .map(|m| Money::from_minor(m, total.currency()).to_string())
                .unwrap_or_else(|_| format!("{} minor units", c.clearing_balance_minor));
            return Err(Rejection::InsufficientFunds {
                account: Account::GatewayClearing(c.gateway).to_string(),
                available,
                requested: total.to_string(),
            });
        }
        let entry = EntryBuilder::new(c.amount.currency())
            .debit(Account::Bank(c.bank_account), c.amount)
            .debit(Account::GatewayFees, fee)
            .credit(Account::GatewayClearing(c.gateway), total)
            .build(cmd.at, c.occurred_at)?;
        Ok(vec![SettlementEvent::SettlementRecorded {
            gateway: c.gateway,
            settlement_id: c.settlement_id.clone(),
            bank_account: c.bank_account,
            amount: c.amount,
            fee,
            entry,
        }])
    }

    fn evolve(mut s: SettlementState, e: &SettlementEvent) -> SettlementState {
        match e {
            SettlementEvent::SettlementRecorded { amount, fee, .. } => {
                s.booked = Some((*amount, *fee))
            }
            SettlementEvent::ClearingSettled { .. } => s.guarded += 1,
        }
        s
    }
}
