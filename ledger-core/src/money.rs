//! Exact money: an integer count of minor units tagged with an ISO 4217 currency.
//!
//! Why integers: every amount a ledger stores must be exactly representable at its currency's exponent, so
//! minor units (`i64`) are the natural carrier; `rust_decimal::Decimal` is used only at the edges (parsing,
//! formatting, fee rates). There are no floats anywhere in this module.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// ISO 4217 list one (current funds codes), alphabetic code and minor unit ("exponent").
///
/// Source: ISO 4217 "List one: Currency, fund and precious metal codes" as published by SIX (the ISO 4217
/// maintenance agency), amendment 179 (2025). Codes with "N.A." minor units (precious metals, XDR, XXX...)
/// are deliberately absent: a ledger cannot hold an amount whose precision the standard leaves undefined.
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// The largest exponent in the table; bounds the scale of every amount we accept.
pub const EXPONENT_MAX: u8 = 4;

/// The one amount ceiling, in minor units of any currency: every amount a command carries and every sum the
/// core computes from them (a project's milestones, a payout and its fee, a wallet balance) stays at or
/// below it (`amount_too_large` otherwise). 10^15 minor units is 10 trillion USD, so 1,000,000.00 USD is an
/// ordinary amount, while a hundred maximal milestones still sum far inside `i64` (and `i128` balances).
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

/// Errors of money parsing and arithmetic. Each maps to a stable rejection code in [`crate::Rejection`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (not in ISO 4217 list one)")]
    UnknownCurrency(String),
    #[error("amount {amount} has more decimal places than {currency} allows ({exponent})")]
    Precision {
        amount: String,
        currency: Currency,
        exponent: u8,
    },
    #[error("{0:?} is not a decimal amount")]
    NotADecimal(String),
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount overflows the ledger's range")]
    Overflow,
    #[error("rate {0} is outside [0, 1]")]
    RateOutOfRange(Decimal),
}

/// An ISO 4217 currency: its code and minor-unit exponent. `Copy`, 4 bytes; constructed only from the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    pub const USD: Currency = Currency {
        code: *b"USD",
        exponent: 2,
    };
    pub const EUR: Currency = Currency {
        code: *b"EUR",
        exponent: 2,
    };
    pub const GBP: Currency = Currency {
        code: *b"GBP",
        exponent: 2,
    };
    pub const NGN: Currency = Currency {
        code: *b"NGN",
        exponent: 2,
    };
    pub const KES: Currency = Currency {
        code: *b"KES",
        exponent: 2,
    };
    pub const MAD: Currency = Currency {
        code: *b"MAD",
        exponent: 2,
    };
    pub const JPY: Currency = Currency {
        code: *b"JPY",
        exponent: 0,
    };
    pub const XOF: Currency = Currency {
        code: *b"XOF",
        exponent: 0,
    };
    pub const XAF: Currency = Currency {
        code: *b"XAF",
        exponent: 0,
    };
    pub const KWD: Currency = Currency {
        code: *b"KWD",
        exponent: 3,
    };
    pub const BHD: Currency = Currency {
        code: *b"BHD",
        exponent: 3,
    };
    pub const OMR: Currency = Currency {
        code: *b"OMR",
        exponent: 3,
    };

    /// Looks a code up in ISO 4217 list one. Codes are upper case, exactly three letters.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        // The table is in alphabetical order (a test checks it): binary search.
        ISO_4217
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .ok()
            .map(|i| &ISO_4217[i])
            .map(|(c, exponent)| {
                let bytes = c.as_bytes();
                Currency {
                    code: [bytes[0], bytes[1], bytes[2]],
                    exponent: *exponent,
                }
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn code(&self) -> &str {
        // The bytes come from the ASCII table above, so this cannot fail.
        std::str::from_utf8(&self.code).expect("currency codes are ASCII")
    }

    /// Number of decimal places of the minor unit (USD 2, JPY 0, KWD 3).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Every currency of the table, for exhaustive tests.
    pub fn all() -> impl Iterator<Item = Currency> {
        ISO_4217
            .iter()
            .map(|(c, _)| Currency::from_code(c).expect("table entries parse"))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// An exact amount of one currency, as a signed count of minor units.
///
/// Serialized as `{"amount": "12.34", "currency": "USD"}`: an exact decimal string, never a JSON number.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    pub const fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// Parses a decimal string ("12.30", "-5", "1000.00" JPY) exactly. Trailing zeros beyond the exponent are
    /// accepted ("1000.00" JPY is 1000); a non-zero digit beyond it is a precision error ("1000.50" JPY).
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let trimmed = text.trim();
        let valid_shape = !trimmed.is_empty()
            && trimmed
                .trim_start_matches(['-', '+'])
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
            && trimmed.chars().filter(|c| *c == '.').count() <= 1;
        if !valid_shape {
            return Err(MoneyError::NotADecimal(text.to_string()));
        }
        let decimal = Decimal::from_str_exact(trimmed)
            .map_err(|_| MoneyError::NotADecimal(text.to_string()))?;
        Money::from_decimal(decimal, currency)
    }

    /// Converts an exact decimal in major units; refuses anything not representable at the exponent.
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let normalized = amount.normalize();
        if normalized.scale() > u32::from(currency.exponent) {
            return Err(MoneyError::Precision {
                amount: amount.to_string(),
                currency,
                exponent: currency.exponent,
            });
        }
        let scaled = normalized
            .checked_mul(Decimal::from(10_i64.pow(u32::from(currency.exponent))))
            .ok_or(MoneyError::Overflow)?;
        assert!(
            scaled.fract().is_zero(),
            "scale was checked against the exponent"
        );
        let minor = scaled.to_i64().ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency })
    }

    /// Integer minor units as gateways like Stripe and Paystack send them.
    pub fn from_minor_str(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let minor: i64 = text
            .trim()
            .parse()
            .map_err(|_| MoneyError::NotADecimal(text.to_string()))?;
        Ok(Money { minor, currency })
    }

    pub const fn minor(&self) -> i64 {
        self.minor
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_positive(&self) -> bool {
        self.minor > 0
    }

    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// The amount in major units with exactly the currency's number of decimals (scale = exponent).
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor, u32::from(self.currency.exponent))
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(&self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    pub fn checked_sub(&self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    /// Compares two amounts of the same currency; mixed currencies have no order.
    pub fn checked_cmp(&self, other: &Money) -> Result<Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.minor.cmp(&other.minor))
    }

    /// `round_half_even(self * rate)` at the currency's exponent: the fee part of a gross amount.
    pub fn fee(&self, rate: Rate) -> Money {
        let exact = Decimal::from(self.minor) * rate.0;
        let rounded = exact.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
        // |rate| <= 1, so |fee| <= |self| and the conversion back to i64 cannot overflow.
        let minor = rounded
            .to_i64()
            .expect("a fee never exceeds its gross amount");
        assert!(minor.abs() <= self.minor.abs(), "fee exceeds gross");
        Money {
            minor,
            currency: self.currency,
        }
    }

    /// Splits a gross amount into `(fee, net)` with `fee + net == gross` by construction.
    pub fn split_fee(&self, rate: Rate) -> (Money, Money) {
        let fee = self.fee(rate);
        let net = Money {
            minor: self.minor - fee.minor,
            currency: self.currency,
        };
        (fee, net)
    }

    /// Largest-remainder allocation of a non-negative amount by non-negative integer weights: the parts sum
    /// exactly to the whole, each is within one minor unit of its exact share, and ties in the remainder go to
    /// the lower index (100 in 3 -> 34, 33, 33).
    pub fn allocate(&self, weights: &[u64]) -> Result<Vec<Money>, MoneyError> {
        let total_weight: u128 = weights.iter().map(|w| u128::from(*w)).sum();
        if weights.is_empty() || total_weight == 0 || self.minor < 0 {
            return Err(MoneyError::Overflow);
        }
        let whole = self.minor as u128;
        let mut parts: Vec<u128> = weights
            .iter()
            .map(|w| whole * u128::from(*w) / total_weight)
            .collect();
        let allocated: u128 = parts.iter().sum();
        let mut order: Vec<usize> = (0..weights.len()).collect();
        // Largest remainder first; the stable sort keeps lower indices first on ties.
        order.sort_by_key(|i| std::cmp::Reverse(whole * u128::from(weights[*i]) % total_weight));
        for i in order.into_iter().take((whole - allocated) as usize) {
            parts[i] += 1;
        }
        let result: Vec<Money> = parts
            .into_iter()
            .map(|p| Money {
                minor: p as i64,
                currency: self.currency,
            })
            .collect();
        assert_eq!(
            result.iter().map(|m| m.minor).sum::<i64>(),
            self.minor,
            "allocation must be exact"
        );
        Ok(result)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: String,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MoneyRepr {
            amount: self.to_decimal().to_string(),
            currency: self.currency,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = MoneyRepr::deserialize(d)?;
        Money::parse(&repr.amount, repr.currency).map_err(serde::de::Error::custom)
    }
}

/// A proportion in [0, 1] (5% is `0.05`), exact. Used for commissions and buyer fees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Rate(Decimal);

impl Rate {
    pub const ZERO: Rate = Rate(Decimal::ZERO);
    pub const ONE: Rate = Rate(Decimal::ONE);

    pub fn new(rate: Decimal) -> Result<Rate, MoneyError> {
        if rate.is_sign_negative() || rate > Decimal::ONE {
            return Err(MoneyError::RateOutOfRange(rate));
        }
        Ok(Rate(rate))
    }

    /// A rate in basis points (500 = 5%).
    pub fn from_bps(bps: u32) -> Result<Rate, MoneyError> {
        Rate::new(Decimal::new(i64::from(bps), 4))
    }

    pub fn as_decimal(&self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Rate {
    type Error = MoneyError;
    fn try_from(d: Decimal) -> Result<Self, Self::Error> {
        Rate::new(d)
    }
}

impl From<Rate> for Decimal {
    fn from(r: Rate) -> Decimal {
        r.0
    }
}

#[cfg(test)]
mod tests {
    use super::ISO_4217;

    #[test]
    fn the_iso_table_is_sorted_and_has_no_duplicates() {
        assert!(
            ISO_4217.windows(2).all(|w| w[0].0 < w[1].0),
            "ISO_4217 must stay sorted for binary search"
        );
    }
}
