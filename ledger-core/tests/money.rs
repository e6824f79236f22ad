//! Money: exact parsing and formatting at every ISO 4217 exponent, currency safety, half-even fees and
//! largest-remainder allocation. Unit examples come from domain.md; the properties compare with plain
//! integer reference computations (i128), never with the code under test.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::str::FromStr;

use ledger_core::money::EXPONENT_MAX;
use ledger_core::{Currency, Money, MoneyError, Rate, Rejection};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn usd(text: &str) -> Money {
    Money::parse(text, Currency::USD).expect("valid USD amount")
}

fn code(currency: &str) -> Currency {
    Currency::from_code(currency).expect("known currency")
}

fn bps(rate_bps: u32) -> Rate {
    Rate::from_bps(rate_bps).expect("rate within [0, 1]")
}

/// Reference: round_half_even(minor * bps / 10_000) with integers only.
fn reference_fee(minor: i64, rate_bps: u32) -> i64 {
    let numerator = i128::from(minor) * i128::from(rate_bps);
    let denominator = 10_000_i128;
    let quotient = numerator.div_euclid(denominator);
    let remainder = numerator.rem_euclid(denominator);
    let rounded = match (2 * remainder).cmp(&denominator) {
        Ordering::Less => quotient,
        Ordering::Greater => quotient + 1,
        Ordering::Equal if quotient % 2 == 0 => quotient,
        Ordering::Equal => quotient + 1,
    };
    i64::try_from(rounded).expect("fee fits in i64")
}

// ---------------------------------------------------------------------------------------------------------
// ISO 4217 table
// ---------------------------------------------------------------------------------------------------------

#[test]
fn iso_exponents_of_the_currencies_the_platform_uses() {
    let table = [
        ("JPY", 0),
        ("XOF", 0),
        ("XAF", 0),
        ("MAD", 2),
        ("NGN", 2),
        ("KES", 2),
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("OMR", 3),
    ];
    for (iso, exponent) in table {
        let currency = code(iso);
        assert_eq!(currency.exponent(), exponent, "{iso}");
        assert_eq!(currency.code(), iso);
        assert_eq!(currency.to_string(), iso);
        assert_eq!(Currency::from_str(iso), Ok(currency));
    }
}

#[test]
fn named_constants_agree_with_the_table() {
    let constants = [
        (Currency::USD, "USD"),
        (Currency::EUR, "EUR"),
        (Currency::GBP, "GBP"),
        (Currency::NGN, "NGN"),
        (Currency::KES, "KES"),
        (Currency::MAD, "MAD"),
        (Currency::JPY, "JPY"),
        (Currency::XOF, "XOF"),
        (Currency::XAF, "XAF"),
        (Currency::KWD, "KWD"),
        (Currency::BHD, "BHD"),
        (Currency::OMR, "OMR"),
    ];
    for (constant, iso) in constants {
        assert_eq!(constant, code(iso), "{iso}");
    }
}

#[test]
fn other_iso_exponents_that_are_easy_to_get_wrong() {
    // Zero-decimal and three-decimal currencies besides the common ones, and the two four-decimal units.
    for (iso, exponent) in [
        ("KRW", 0),
        ("CLP", 0),
        ("VND", 0),
        ("ISK", 0),
        ("UGX", 0),
        ("JOD", 3),
        ("TND", 3),
        ("IQD", 3),
        ("LYD", 3),
        ("CLF", 4),
        ("UYW", 4),
    ] {
        assert_eq!(code(iso).exponent(), exponent, "{iso}");
    }
}

#[test]
fn currency_table_is_sane() {
    let all: Vec<Currency> = Currency::all().collect();
    assert!(all.len() > 150, "ISO 4217 list one has ~170 codes");
    let distinct: HashSet<&str> = all.iter().map(|c| c.code()).collect();
    assert_eq!(distinct.len(), all.len(), "no duplicate codes");
    for c in &all {
        assert!(c.exponent() <= EXPONENT_MAX, "{c}");
        assert_eq!(c.code().len(), 3);
        assert!(c.code().chars().all(|ch| ch.is_ascii_uppercase()), "{c}");
    }
}

#[test]
fn unknown_currency_codes_are_rejected() {
    // XAU/XXX have no minor unit in ISO 4217; lower case and wrong lengths are not codes.
    for bad in [
        "ABC", "usd", "Usd", "US", "USDX", "", "XAU", "XXX", "XDR", " USD",
    ] {
        assert_eq!(
            Currency::from_code(bad),
            Err(MoneyError::UnknownCurrency(bad.to_string())),
            "{bad:?}"
        );
    }
    let err = serde_json::from_str::<Currency>("\"ZZZ\"").unwrap_err();
    assert!(err.to_string().contains("unknown currency"), "{err}");
    let rejection = Rejection::from(MoneyError::UnknownCurrency("ZZZ".into()));
    assert_eq!(rejection.code(), "invalid_command");
}

// ---------------------------------------------------------------------------------------------------------
// Parsing and formatting
// ---------------------------------------------------------------------------------------------------------

#[test]
fn parses_decimal_strings_exactly() {
    let cases: &[(&str, &str, i64)] = &[
        ("12.30", "USD", 1230),
        ("12.3", "USD", 1230),
        ("0.05", "USD", 5),
        ("-5", "USD", -500),
        (" 7.00 ", "USD", 700),
        ("100", "USD", 10_000),
        ("0", "USD", 0),
        ("1000", "JPY", 1000),
        ("1000.00", "JPY", 1000),
        ("1000.000000", "XOF", 1000),
        ("0.034", "KWD", 34),
        ("0.670", "KWD", 670),
        ("1.5", "BHD", 1500),
        ("0.0001", "CLF", 1),
        ("92233720368547758.07", "USD", i64::MAX),
        ("-92233720368547758.08", "USD", i64::MIN),
    ];
    for (text, iso, minor) in cases {
        let money = Money::parse(text, code(iso)).unwrap_or_else(|e| panic!("{text} {iso}: {e}"));
        assert_eq!(money.minor(), *minor, "{text} {iso}");
        assert_eq!(money.currency(), code(iso));
    }
}

#[test]
fn more_digits_than_the_currency_allows_is_a_precision_error() {
    let cases = [
        ("10.005", "USD", 2),
        ("1000.50", "JPY", 0),
        ("0.5", "JPY", 0),
        ("1.1", "XAF", 0),
        ("0.0335", "KWD", 3),
        ("0.00001", "CLF", 4),
        ("0.001", "EUR", 2),
    ];
    for (text, iso, exponent) in cases {
        let currency = code(iso);
        let err = Money::parse(text, currency).unwrap_err();
        assert_eq!(
            err,
            MoneyError::Precision {
                amount: text.to_string(),
                currency,
                exponent,
            },
            "{text} {iso}"
        );
        assert_eq!(Rejection::from(err).code(), "amount_precision");
    }
}

#[test]
fn trailing_zeros_beyond_the_exponent_are_not_precision() {
    assert_eq!(
        Money::parse("1000.00", Currency::JPY).unwrap().minor(),
        1000
    );
    assert_eq!(
        Money::parse("10.0050", Currency::KWD).unwrap().minor(),
        10_005
    );
    assert_eq!(usd("10.000000").minor(), 1000);
}

#[test]
fn text_that_is_not_a_decimal_is_refused() {
    for bad in [
        "", "  ", "abc", "1,000.00", "1e3", "1.2.3", "12 USD", "$12", "0x10", "--5", "NaN", ".",
        "-", "+", "-.", "+-5", "- 5",
    ] {
        let err = Money::parse(bad, Currency::USD).unwrap_err();
        assert_eq!(err, MoneyError::NotADecimal(bad.to_string()), "{bad:?}");
        assert_eq!(Rejection::from(err).code(), "amount_precision");
    }
}

#[test]
fn amounts_beyond_i64_minor_units_overflow() {
    let err = Money::parse("92233720368547758.08", Currency::USD).unwrap_err();
    assert_eq!(err, MoneyError::Overflow);
    assert_eq!(Rejection::from(err).code(), "overflow");
}

#[test]
fn minor_unit_strings_as_stripe_and_paystack_send_them() {
    assert_eq!(
        Money::from_minor_str("1050", Currency::USD).unwrap(),
        usd("10.50")
    );
    assert_eq!(
        Money::from_minor_str(" 7 ", Currency::NGN).unwrap().minor(),
        7
    );
    assert_eq!(
        Money::from_minor_str("-3", Currency::USD).unwrap().minor(),
        -3
    );
    assert_eq!(
        Money::from_minor_str("1000", Currency::JPY).unwrap(),
        Money::parse("1000", Currency::JPY).unwrap()
    );
    assert_eq!(
        Money::from_minor_str("670", Currency::KWD).unwrap(),
        Money::parse("0.670", Currency::KWD).unwrap()
    );
    for bad in ["10.50", "", "1e3", "ten"] {
        assert_eq!(
            Money::from_minor_str(bad, Currency::USD),
            Err(MoneyError::NotADecimal(bad.to_string())),
            "{bad:?}"
        );
    }
}

#[test]
fn formats_with_exactly_the_currency_exponent() {
    let cases: &[(i64, &str, &str)] = &[
        (1230, "USD", "12.30"),
        (5, "USD", "0.05"),
        (-5, "USD", "-0.05"),
        (0, "USD", "0.00"),
        (1000, "JPY", "1000"),
        (34, "KWD", "0.034"),
        (1, "CLF", "0.0001"),
    ];
    for (minor, iso, text) in cases {
        let money = Money::from_minor(*minor, code(iso));
        assert_eq!(money.to_decimal().to_string(), *text);
        assert_eq!(money.to_string(), format!("{text} {iso}"));
    }
}

#[test]
fn edge_amounts_round_trip_in_every_currency() {
    for currency in Currency::all() {
        for minor in [0, 1, -1, 7, 10, 999, i64::MAX, i64::MIN] {
            let money = Money::from_minor(minor, currency);
            let text = money.to_decimal().to_string();
            assert_eq!(money.to_decimal().scale(), u32::from(currency.exponent()));
            assert_eq!(
                Money::parse(&text, currency),
                Ok(money),
                "{text} {currency}"
            );
        }
    }
}

#[test]
fn serializes_as_an_exact_decimal_string() {
    let value = serde_json::to_value(usd("102.50")).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"amount": "102.50", "currency": "USD"})
    );
    let kwd = serde_json::to_value(Money::from_minor(34, Currency::KWD)).unwrap();
    assert_eq!(
        kwd,
        serde_json::json!({"amount": "0.034", "currency": "KWD"})
    );
    let jpy = serde_json::to_value(Money::from_minor(1000, Currency::JPY)).unwrap();
    assert_eq!(
        jpy,
        serde_json::json!({"amount": "1000", "currency": "JPY"})
    );
    let back: Money = serde_json::from_value(value).unwrap();
    assert_eq!(back, usd("102.50"));
}

#[test]
fn deserializing_refuses_imprecise_or_unknown_amounts() {
    let too_precise = serde_json::json!({"amount": "10.005", "currency": "USD"});
    let err = serde_json::from_value::<Money>(too_precise).unwrap_err();
    assert!(err.to_string().contains("more decimal places"), "{err}");
    let jpy = serde_json::json!({"amount": "1000.50", "currency": "JPY"});
    assert!(serde_json::from_value::<Money>(jpy).is_err());
    let unknown = serde_json::json!({"amount": "1.00", "currency": "ABC"});
    assert!(serde_json::from_value::<Money>(unknown).is_err());
}

#[test]
fn a_json_number_is_never_read_through_f64() {
    // 2^53 + 1 is not representable as f64: reading it through a float would give ...992.
    let body = r#"{"amount": 9007199254740993, "currency": "JPY"}"#;
    if let Ok(money) = serde_json::from_str::<Money>(body) {
        assert_eq!(money.minor(), 9_007_199_254_740_993);
    }
    let body = r#"{"amount": 0.1, "currency": "USD"}"#;
    if let Ok(money) = serde_json::from_str::<Money>(body) {
        assert_eq!(money.minor(), 10);
    }
}

proptest! {
    #[test]
    fn parse_of_format_is_identity_in_every_currency(
        index in 0usize..1000,
        minor in any::<i64>(),
    ) {
        let currencies: Vec<Currency> = Currency::all().collect();
        let currency = currencies[index % currencies.len()];
        let money = Money::from_minor(minor, currency);
        let text = money.to_decimal().to_string();
        prop_assert_eq!(Money::parse(&text, currency), Ok(money));
        let json = serde_json::to_string(&money).unwrap();
        prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
    }

    #[test]
    fn a_non_zero_digit_beyond_the_exponent_is_always_refused(
        index in 0usize..1000,
        minor in -1_000_000_000i64..1_000_000_000,
        extra_digit in 1u8..=9,
    ) {
        let currencies: Vec<Currency> = Currency::all().collect();
        let currency = currencies[index % currencies.len()];
        let base = Money::from_minor(minor, currency).to_decimal().to_string();
        let text = if currency.exponent() == 0 {
            format!("{base}.{extra_digit}")
        } else {
            format!("{base}{extra_digit}")
        };
        let is_precision_error = matches!(
            Money::parse(&text, currency),
            Err(MoneyError::Precision { .. })
        );
        prop_assert!(is_precision_error, "{}", text);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Currency safety
// ---------------------------------------------------------------------------------------------------------

#[test]
fn mixed_currency_arithmetic_and_comparison_are_refused() {
    let dollars = usd("10.00");
    let euros = Money::parse("10.00", Currency::EUR).unwrap();
    let mismatch = MoneyError::CurrencyMismatch {
        left: Currency::USD,
        right: Currency::EUR,
    };
    assert_eq!(dollars.checked_add(euros), Err(mismatch.clone()));
    assert_eq!(dollars.checked_sub(euros), Err(mismatch.clone()));
    assert_eq!(dollars.checked_cmp(&euros), Err(mismatch.clone()));
    // Same number of minor units but different currencies are different amounts.
    assert_ne!(dollars, euros);
    let rejection = Rejection::from(mismatch);
    assert_eq!(rejection.code(), "currency_mismatch");
    assert_eq!(
        rejection,
        Rejection::CurrencyMismatch {
            expected: Currency::USD,
            found: Currency::EUR
        }
    );
}

#[test]
fn same_currency_arithmetic() {
    assert_eq!(usd("10.05").checked_add(usd("0.95")), Ok(usd("11.00")));
    assert_eq!(usd("10.05").checked_sub(usd("10.10")), Ok(usd("-0.05")));
    assert_eq!(usd("1.00").checked_cmp(&usd("0.99")), Ok(Ordering::Greater));
    assert_eq!(usd("1.00").checked_cmp(&usd("1.0")), Ok(Ordering::Equal));
    let max = Money::from_minor(i64::MAX, Currency::USD);
    assert_eq!(max.checked_add(usd("0.01")), Err(MoneyError::Overflow));
    let min = Money::from_minor(i64::MIN, Currency::USD);
    assert_eq!(min.checked_sub(usd("0.01")), Err(MoneyError::Overflow));
}

// ---------------------------------------------------------------------------------------------------------
// Fees: round half even at the currency's exponent
// ---------------------------------------------------------------------------------------------------------

#[test]
fn fee_rounds_half_to_even() {
    // (gross minor, currency, rate bps, fee minor): the documented examples and the mirrored half cases.
    let cases: &[(i64, &str, u32, i64)] = &[
        (10_050, "USD", 500, 502), // 502.5 -> 502 (even)
        (10_070, "USD", 500, 504), // 503.5 -> 504 (even)
        (670, "KWD", 500, 34),     // 33.5 minor -> 34, i.e. 0.034 KWD
        (650, "KWD", 500, 32),     // 32.5 minor -> 32
        (10, "USD", 2500, 2),      // 2.5 -> 2
        (30, "USD", 2500, 8),      // 7.5 -> 8
        (1010, "JPY", 500, 50),    // 50.5 JPY -> 50
        (1030, "JPY", 500, 52),    // 51.5 JPY -> 52
        (10_000, "USD", 250, 250), // exact
        (10_001, "USD", 1, 1),     // 1.0001 -> 1
        (12_345, "USD", 0, 0),
        (12_345, "USD", 10_000, 12_345),
    ];
    for (gross, iso, rate_bps, fee) in cases {
        let currency = code(iso);
        let (got_fee, net) = Money::from_minor(*gross, currency).split_fee(bps(*rate_bps));
        assert_eq!(
            got_fee,
            Money::from_minor(*fee, currency),
            "{gross} {iso} {rate_bps}bps"
        );
        assert_eq!(net, Money::from_minor(gross - fee, currency));
        assert_eq!(
            Money::from_minor(*gross, currency).fee(bps(*rate_bps)),
            got_fee
        );
    }
}

#[test]
fn documented_example_10050_minor_at_5_percent() {
    let (fee, net) = usd("100.50").split_fee(Rate::new(Decimal::new(5, 2)).unwrap());
    assert_eq!(fee, usd("5.02"));
    assert_eq!(net, usd("95.48"));
}

#[test]
fn documented_example_kwd_half_minor_unit() {
    let rate = Rate::new(Decimal::from_str("0.05").unwrap()).unwrap();
    let fee = Money::parse("0.670", Currency::KWD).unwrap().fee(rate);
    assert_eq!(fee.to_decimal().to_string(), "0.034");
    let fee = Money::parse("0.650", Currency::KWD).unwrap().fee(rate);
    assert_eq!(fee.to_decimal().to_string(), "0.032");
}

proptest! {
    #[test]
    fn fee_plus_net_is_gross_and_fee_is_half_even(
        gross in 0i64..1_000_000_000_000_000,
        rate_bps in 0u32..=10_000,
    ) {
        let money = Money::from_minor(gross, Currency::USD);
        let (fee, net) = money.split_fee(bps(rate_bps));
        prop_assert_eq!(fee.checked_add(net), Ok(money));
        prop_assert_eq!(fee.minor(), reference_fee(gross, rate_bps));
        prop_assert!(fee.minor() >= 0 && fee.minor() <= gross);
        prop_assert_eq!(fee.currency(), Currency::USD);
        prop_assert_eq!(net.currency(), Currency::USD);
    }

    #[test]
    fn fee_is_within_half_a_minor_unit_for_fine_grained_rates(
        gross in 0i64..1_000_000_000_000,
        rate_millionths in 0i64..=1_000_000,
    ) {
        let rate = Rate::new(Decimal::new(rate_millionths, 6)).unwrap();
        let (fee, net) = Money::from_minor(gross, Currency::KWD).split_fee(rate);
        prop_assert_eq!(fee.minor() + net.minor(), gross);
        // |fee - gross * rate| <= 1/2, in millionths of a minor unit.
        let exact_millionths = i128::from(gross) * i128::from(rate_millionths);
        let fee_millionths = i128::from(fee.minor()) * 1_000_000;
        prop_assert!((fee_millionths - exact_millionths).abs() <= 500_000);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Allocation: largest remainder, ties to the lower index
// ---------------------------------------------------------------------------------------------------------

fn minors(parts: &[Money]) -> Vec<i64> {
    parts.iter().map(Money::minor).collect()
}

#[test]
fn allocation_examples() {
    let cases: &[(i64, &[u64], &[i64])] = &[
        (100, &[1, 1, 1], &[34, 33, 33]),
        (100, &[1, 1], &[50, 50]),
        (101, &[1, 1], &[51, 50]),
        (2, &[1, 1, 1], &[1, 1, 0]),
        (5, &[1, 1, 1, 1, 1, 1], &[1, 1, 1, 1, 1, 0]),
        (100, &[0, 1], &[0, 100]),
        (250, &[3000, 7000], &[75, 175]),
        (250, &[5555, 4445], &[139, 111]),
        (10, &[1, 2], &[3, 7]),
        (0, &[1, 2, 3], &[0, 0, 0]),
        (7, &[1], &[7]),
    ];
    for (whole, weights, expected) in cases {
        let parts = Money::from_minor(*whole, Currency::USD)
            .allocate(weights)
            .unwrap();
        assert_eq!(minors(&parts), *expected, "{whole} by {weights:?}");
        assert!(parts.iter().all(|p| p.currency() == Currency::USD));
    }
}

#[test]
fn allocation_refuses_degenerate_inputs() {
    let money = usd("1.00");
    assert!(money.allocate(&[]).is_err());
    assert!(money.allocate(&[0, 0]).is_err());
    assert!(usd("-1.00").allocate(&[1, 1]).is_err());
}

proptest! {
    #[test]
    fn allocation_sums_exactly_and_each_part_is_within_one_of_its_share(
        whole in 0i64..=i64::MAX,
        weights in prop::collection::vec(0u64..1_000_000, 1..12),
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let parts = Money::from_minor(whole, Currency::EUR).allocate(&weights).unwrap();
        prop_assert_eq!(parts.len(), weights.len());
        let sum: i128 = parts.iter().map(|p| i128::from(p.minor())).sum();
        prop_assert_eq!(sum, i128::from(whole));
        let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
        for (part, weight) in parts.iter().zip(&weights) {
            prop_assert_eq!(part.currency(), Currency::EUR);
            // floor(share) <= part <= floor(share) + 1, so |part - share| < 1.
            let floor = (whole as u128) * u128::from(*weight) / total;
            let part = part.minor() as u128;
            prop_assert!(part == floor || part == floor + 1, "part {} floor {}", part, floor);
            if *weight == 0 {
                prop_assert_eq!(part, 0);
            }
        }
    }

    #[test]
    fn equal_weights_give_the_extra_units_to_the_lowest_indices(
        whole in 0i64..1_000_000,
        count in 1usize..10,
    ) {
        let parts = Money::from_minor(whole, Currency::USD).allocate(&vec![1; count]).unwrap();
        let base = whole / count as i64;
        let extra = (whole % count as i64) as usize;
        for (i, part) in parts.iter().enumerate() {
            let expected = if i < extra { base + 1 } else { base };
            prop_assert_eq!(part.minor(), expected);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Rates
// ---------------------------------------------------------------------------------------------------------

#[test]
fn rate_bounds() {
    assert_eq!(
        Rate::new(Decimal::ZERO).map(|r| r.as_decimal()),
        Ok(Decimal::ZERO)
    );
    assert_eq!(
        Rate::new(Decimal::ONE).map(|r| r.as_decimal()),
        Ok(Decimal::ONE)
    );
    let above = Decimal::from_str("1.0001").unwrap();
    assert_eq!(Rate::new(above), Err(MoneyError::RateOutOfRange(above)));
    let negative = Decimal::from_str("-0.01").unwrap();
    assert_eq!(
        Rate::new(negative),
        Err(MoneyError::RateOutOfRange(negative))
    );
    assert_eq!(
        Rejection::from(MoneyError::RateOutOfRange(above)).code(),
        "invalid_command"
    );
    assert_eq!(bps(500).as_decimal(), Decimal::from_str("0.05").unwrap());
    assert_eq!(bps(10_000).as_decimal(), Decimal::ONE);
    assert!(Rate::from_bps(10_001).is_err());
    assert_eq!(Rate::ZERO.as_decimal(), Decimal::ZERO);
}

#[test]
fn rate_json_is_validated() {
    let rate: Rate = serde_json::from_str("\"0.025\"").unwrap();
    assert_eq!(rate, bps(250));
    assert_eq!(
        serde_json::to_value(rate).unwrap(),
        serde_json::json!("0.025")
    );
    assert!(serde_json::from_str::<Rate>("\"1.5\"").is_err());
    assert!(serde_json::from_str::<Rate>("\"-0.1\"").is_err());
}
