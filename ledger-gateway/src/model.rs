//! The normalized callback: what every adapter produces and what in-house workers post directly.

use chrono::{DateTime, Utc};
use ledger_core::{Currency, Gateway, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::exact::ExactDecimal;

/// The outcome a callback reports. `None` in [`NormalizedCallback::kind`] means an authentic event of a type
/// the ledger does not handle (recorded as ignored, answered 2xx).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    DepositSucceeded,
    DepositFailed,
    RefundProcessed,
    RefundFailed,
    PayoutSucceeded,
    PayoutFailed,
    PayoutReversed,
    ChargebackOpened,
    ChargebackWon,
    ChargebackLost,
    /// The gateway paid the platform's own bank account (Stripe `payout.paid` without one of our payout
    /// references): a settlement, not a user's payout.
    SettlementPaid,
}

impl CallbackKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CallbackKind::DepositSucceeded => "deposit_succeeded",
            CallbackKind::DepositFailed => "deposit_failed",
            CallbackKind::RefundProcessed => "refund_processed",
            CallbackKind::RefundFailed => "refund_failed",
            CallbackKind::PayoutSucceeded => "payout_succeeded",
            CallbackKind::PayoutFailed => "payout_failed",
            CallbackKind::PayoutReversed => "payout_reversed",
            CallbackKind::ChargebackOpened => "chargeback_opened",
            CallbackKind::ChargebackWon => "chargeback_won",
            CallbackKind::ChargebackLost => "chargeback_lost",
            CallbackKind::SettlementPaid => "settlement_paid",
        }
    }

    /// Money that came in (a deposit): unmatched, it belongs in suspense.
    pub fn is_inbound(&self) -> bool {
        matches!(self, CallbackKind::DepositSucceeded)
    }
}

/// Whether an amount is in minor units (Stripe, Paystack: integer cents/kobo) or major units (Flutterwave,
/// Fincra, the normalized format: decimal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountUnit {
    Minor,
    Major,
}

/// An amount exactly as reported, with its currency code as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedAmount {
    pub value: ExactDecimal,
    pub unit: AmountUnit,
    pub currency_code: String,
}

/// Why a reported amount cannot be posted as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountProblem {
    UnknownCurrency(String),
    /// More precision than the currency has: `held` is the part that is representable (truncated toward zero),
    /// `reported` the exact text. The whole report goes to suspense with both recorded; nothing is rounded.
    NotRepresentable {
        held: Money,
        reported: String,
    },
    Invalid(String),
}

impl ReportedAmount {
    pub fn describe(&self) -> String {
        match self.unit {
            AmountUnit::Minor => format!("{} minor {}", self.value.as_str(), self.currency_code),
            AmountUnit::Major => format!("{} {}", self.value.as_str(), self.currency_code),
        }
    }

    pub fn currency(&self) -> Result<Currency, AmountProblem> {
        Currency::from_code(&self.currency_code.to_ascii_uppercase())
            .map_err(|_| AmountProblem::UnknownCurrency(self.currency_code.clone()))
    }

    /// The amount as ledger money, exactly, or why not.
    pub fn to_money(&self) -> Result<Money, AmountProblem> {
        let currency = self.currency()?;
        let decimal = Decimal::from_str_exact(self.value.as_str())
            .map_err(|e| AmountProblem::Invalid(format!("{}: {e}", self.value.as_str())))?;
        let major = match self.unit {
            AmountUnit::Major => decimal,
            AmountUnit::Minor => {
                let scale = Decimal::from(10_i64.pow(u32::from(currency.exponent())));
                decimal
                    .checked_div(scale)
                    .ok_or_else(|| AmountProblem::Invalid("overflow".into()))?
            }
        };
        match Money::from_decimal(major, currency) {
            Ok(m) => Ok(m),
            Err(ledger_core::MoneyError::Precision { .. }) => {
                let truncated = major.trunc_with_scale(u32::from(currency.exponent()));
                let held = Money::from_decimal(truncated, currency)
                    .map_err(|e| AmountProblem::Invalid(e.to_string()))?;
                Err(AmountProblem::NotRepresentable {
                    held,
                    reported: self.describe(),
                })
            }
            Err(e) => Err(AmountProblem::Invalid(e.to_string())),
        }
    }
}

/// One gateway event in the ledger's terms. `reference` is OUR payment reference (the ledger payment id the
/// worker passed to the gateway); each adapter documents which field carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedCallback {
    pub gateway: Gateway,
    /// The gateway's own event id (Stripe `evt_...`), or a synthesized one where the gateway has none
    /// (Paystack: `event:data.id:status`).
    pub event_id: String,
    pub event_type: String,
    pub reference: Option<String>,
    /// The gateway's id of the money movement itself (Stripe: the payment intent; Paystack, Flutterwave,
    /// Fincra: `data.id`; normalized: `transaction_id`, else the event id). Two deposit successes are one
    /// movement only when this and the amount agree.
    pub transaction_id: Option<String>,
    pub kind: Option<CallbackKind>,
    pub amount: Option<ReportedAmount>,
    pub fee: Option<ReportedAmount>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// The gateway's dispute id (chargeback kinds): one ledger chargeback per dispute.
    pub dispute_id: Option<String>,
    pub reason: Option<String>,
    /// The request body exactly as received, for audit.
    pub raw_body: Vec<u8>,
    /// Why this authentic delivery cannot be acted on although it parsed (a NUL in an identifier, which no
    /// text column can store): it becomes an anomaly, its raw bytes kept. Its texts are already escaped.
    pub defect: Option<String>,
    /// Why this authentic report's money must be held in suspense although it names a payment: its own
    /// figures disagree (Fincra: a stated `fee` other than what was charged less what was received). Its
    /// `amount` is then what the gateway settles to us.
    pub hold: Option<String>,
}

/// The in-house normalized format (route segment `normalized`), amounts in major units.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizedWire {
    pub event_id: String,
    pub kind: String,
    pub payment_reference: String,
    /// The in-house worker's id of the money movement; the event id when absent.
    pub transaction_id: Option<String>,
    pub amount: Option<ExactDecimal>,
    pub currency: Option<String>,
    pub fee: Option<ExactDecimal>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub dispute_id: Option<String>,
    pub reason: Option<String>,
}

impl CallbackKind {
    pub fn from_name(name: &str) -> Option<CallbackKind> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

/// Seconds since the epoch into a time (Stripe's `created`).
pub fn from_unix(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

/// An RFC 3339 time as gateways send it (`2020-11-24T13:45:57.000Z`).
pub fn from_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::<chrono::FixedOffset>::from_str(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
