//! Reconciliation (pure): the property that it finds exactly the perturbations planted in a statement derived
//! from a random history, through the generic CSV text; and the statement formats' parsers.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use ledger_core::{Currency, Money};
use ledger_gateway::reconcile::{Movement, MovementKind, reconcile};
use ledger_gateway::statement::{StatementError, StatementFormat, parse};
use proptest::prelude::*;

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, day, hour, 0, 0).unwrap()
}

fn generic_csv(lines: &[Movement]) -> String {
    let mut out = String::from("payment_reference,kind,gross,fee,currency,occurred_at\n");
    for l in lines {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            l.reference,
            l.kind.as_str(),
            l.gross.to_decimal(),
            l.fee.to_decimal(),
            l.gross.currency(),
            l.occurred_at.to_rfc3339()
        ));
    }
    out
}

/// What a test plants in the statement derived from the history.
#[derive(Clone, Debug)]
enum Perturbation {
    /// The gateway reports another gross (by +delta minor units).
    Gross(u32),
    /// The gateway reports another fee.
    Fee(u32),
    /// The gateway does not list the movement.
    Drop,
}

fn movement_strategy() -> impl Strategy<Value = (u8, u8, i64, i64, u32, u32)> {
    (
        0u8..5,
        0u8..3,
        1i64..10_000_000,
        0i64..100_000,
        1u32..29,
        0u32..24,
    )
}

fn currency_of(index: u8) -> Currency {
    [Currency::USD, Currency::JPY, Currency::KWD][usize::from(index)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For a random history and a statement derived from it with random perturbations (changed gross, changed
    /// fee, a line left out, lines the ledger never saw), reconciliation finds exactly the perturbations.
    #[test]
    fn reconciliation_finds_exactly_the_perturbations(
        history in prop::collection::vec(movement_strategy(), 1..40),
        perturb in prop::collection::vec(prop::option::weighted(0.3, prop_oneof![
            (1u32..1000).prop_map(Perturbation::Gross),
            (1u32..1000).prop_map(Perturbation::Fee),
            Just(Perturbation::Drop),
        ]), 40),
        strangers in prop::collection::vec(movement_strategy(), 0..5),
    ) {
        let ledger: Vec<Movement> = history.iter().enumerate().map(|(i, (k, c, gross, fee, day, hour))| {
            let currency = currency_of(*c);
            Movement {
                reference: format!("pay-{i}"),
                kind: MovementKind::ALL[usize::from(*k)],
                gross: Money::from_minor(*gross, currency),
                fee: Money::from_minor(*fee, currency),
                occurred_at: at(*day, *hour),
            }
        }).collect();
        let mut statement = Vec::new();
        let (mut gross_changed, mut fee_changed, mut dropped) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for (movement, p) in ledger.iter().zip(perturb.iter()) {
            let mut line = movement.clone();
            match p {
                None => {}
                Some(Perturbation::Gross(d)) => {
                    line.gross = Money::from_minor(line.gross.minor() + i64::from(*d), line.gross.currency());
                    gross_changed.insert(line.reference.clone());
                }
                Some(Perturbation::Fee(d)) => {
                    line.fee = Money::from_minor(line.fee.minor() + i64::from(*d), line.fee.currency());
                    fee_changed.insert(line.reference.clone());
                }
                Some(Perturbation::Drop) => {
                    dropped.insert(line.reference.clone());
                    continue;
                }
            }
            statement.push(line);
        }
        let mut planted_strangers = BTreeSet::new();
        for (i, (k, c, gross, fee, day, hour)) in strangers.iter().enumerate() {
            let currency = currency_of(*c);
            let reference = format!("stranger-{i}");
            planted_strangers.insert(reference.clone());
            statement.push(Movement {
                reference,
                kind: MovementKind::ALL[usize::from(*k)],
                gross: Money::from_minor(*gross, currency),
                fee: Money::from_minor(*fee, currency),
                occurred_at: at(*day, *hour),
            });
        }
        // Through the text a gateway would hand over: what is parsed is what was written.
        let parsed = parse(StatementFormat::Generic, generic_csv(&statement).as_bytes()).unwrap();
        prop_assert_eq!(&parsed.lines, &statement);
        let month = Some((at(1, 0), Utc.with_ymd_and_hms(2026, 1, 31, 23, 59, 59).unwrap()));
        let report = reconcile(&parsed.lines, &ledger, month);

        let refs = |pairs: &[ledger_gateway::reconcile::Pair]| -> BTreeSet<String> {
            pairs.iter().map(|p| p.ledger.reference.clone()).collect()
        };
        let mismatched: BTreeSet<String> = gross_changed.union(&fee_changed).cloned().collect();
        prop_assert_eq!(refs(&report.amount_mismatch), mismatched.clone());
        for pair in &report.amount_mismatch {
            let gross_differs = pair.statement.gross != pair.ledger.gross;
            prop_assert_eq!(gross_differs, gross_changed.contains(&pair.ledger.reference));
            prop_assert_eq!(pair.statement.fee != pair.ledger.fee, fee_changed.contains(&pair.ledger.reference));
        }
        let untouched: BTreeSet<String> = ledger.iter().map(|m| m.reference.clone())
            .filter(|r| !mismatched.contains(r) && !dropped.contains(r)).collect();
        prop_assert_eq!(refs(&report.matched), untouched);
        let only_ledger: BTreeSet<String> = report.only_in_ledger.iter().map(|m| m.reference.clone()).collect();
        prop_assert_eq!(only_ledger, dropped.clone());
        let only_gateway: BTreeSet<String> = report.only_at_gateway.iter().map(|m| m.reference.clone()).collect();
        prop_assert_eq!(only_gateway, planted_strangers);
        prop_assert_eq!(report.is_clean(), report.amount_mismatch.is_empty() && report.only_in_ledger.is_empty() && report.only_at_gateway.is_empty());
    }
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn movement(reference: &str, kind: MovementKind, gross: i64, fee: i64, day: u32) -> Movement {
    Movement {
        reference: reference.into(),
        kind,
        gross: usd(gross),
        fee: usd(fee),
        occurred_at: at(day, 10),
    }
}

#[test]
fn a_movement_outside_the_statements_range_is_not_missing_from_it() {
    let ledger = vec![
        movement("a", MovementKind::Deposit, 100, 3, 5),
        movement("b", MovementKind::Deposit, 100, 3, 10),
        movement("late", MovementKind::Deposit, 100, 3, 25),
    ];
    let statement = vec![ledger[0].clone(), ledger[1].clone()];
    let report = reconcile(&statement, &ledger, None);
    assert_eq!(report.matched.len(), 2);
    assert!(report.only_in_ledger.is_empty(), "{report:?}");
    let report = reconcile(&statement[..1], &ledger, None);
    assert!(
        report.only_in_ledger.is_empty(),
        "the range shrank to day 5: {report:?}"
    );
    let report = reconcile(&statement[..1], &ledger, Some((at(1, 0), at(31, 0))));
    assert_eq!(report.only_in_ledger.len(), 2);
}

#[test]
fn the_same_reference_under_another_kind_does_not_match() {
    let ledger = vec![movement("a", MovementKind::Deposit, 100, 0, 5)];
    let statement = vec![movement("a", MovementKind::Refund, 100, 0, 5)];
    let report = reconcile(&statement, &ledger, None);
    assert!(report.matched.is_empty());
    assert_eq!(report.only_at_gateway.len(), 1);
    assert_eq!(report.only_in_ledger.len(), 1);
}

#[test]
fn generic_csv_is_exact_and_refuses_bad_lines_with_their_number() {
    let ok = "payment_reference,kind,gross,fee,currency,occurred_at\r\n\
              \"p,1\",deposit,100.00,,USD,2026-01-05T10:00:00Z\r\n";
    let s = parse(StatementFormat::Generic, ok.as_bytes()).unwrap();
    assert_eq!(
        s.lines,
        vec![Movement {
            reference: "p,1".into(),
            ..movement("", MovementKind::Deposit, 10_000, 0, 5)
        }]
    );
    let cases = [
        ("p,deposit,100.001,0,USD,2026-01-05T10:00:00Z", "line 2"),
        ("p,deposit,1000.50,0,JPY,2026-01-05T10:00:00Z", "line 2"),
        ("p,gift,1.00,0,USD,2026-01-05T10:00:00Z", "kind \"gift\""),
        ("p,deposit,1.00,0,XXX,2026-01-05T10:00:00Z", "currency"),
        ("p,deposit,1.00,0,USD,yesterday", "occurred_at"),
        (
            ",deposit,1.00,0,USD,2026-01-05T10:00:00Z",
            "payment_reference is empty",
        ),
        ("\"p,deposit,1.00,0,USD,2026-01-05T10:00:00Z", "not closed"),
    ];
    for (line, expected) in cases {
        let text = format!("payment_reference,kind,gross,fee,currency,occurred_at\n{line}\n");
        let err = parse(StatementFormat::Generic, text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{line}: {err}");
    }
    let err = parse(StatementFormat::Generic, b"reference,kind\n").unwrap_err();
    assert_eq!(
        err,
        StatementError::MissingColumn("payment_reference".into())
    );
    assert_eq!(
        parse(StatementFormat::Generic, &[0xff, 0xfe]).unwrap_err(),
        StatementError::NotUtf8
    );
}

#[test]
fn stripe_balance_report_lines_map_to_kinds_by_reporting_category() {
    let text = "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,source_id,description,payment_metadata[payment_reference],refund_metadata[payment_reference]\n\
        txn_1,2026-01-05 10:00:00,usd,100.00,3.20,96.80,charge,ch_1,,p1,\n\
        txn_2,2026-01-06 10:00:00,usd,-20.00,0.00,-20.00,refund,re_1,,,r1\n\
        txn_3,2026-01-07 10:00:00,usd,-50.00,15.00,-65.00,dispute,dp_1,,p2,\n\
        txn_4,2026-01-31 12:00:00,usd,-140.00,0.00,-140.00,payout,po_1,STRIPE PAYOUT,,\n\
        txn_5,2026-01-08 10:00:00,usd,-2.00,0.00,-2.00,fee,fee_1,Billing,,\n";
    let s = parse(StatementFormat::Stripe, text.as_bytes()).unwrap();
    let got: Vec<(&str, MovementKind, i64, i64)> = s
        .lines
        .iter()
        .map(|l| (l.reference.as_str(), l.kind, l.gross.minor(), l.fee.minor()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("p1", MovementKind::Deposit, 10_000, 320),
            ("r1", MovementKind::Refund, 2_000, 0),
            ("p2", MovementKind::Chargeback, 5_000, 1_500),
            ("po_1", MovementKind::Settlement, 14_000, 0),
        ]
    );
    assert_eq!(s.lines[3].occurred_at, at(31, 12));
    assert_eq!(s.skipped.len(), 1);
    assert!(s.skipped[0].1.contains("fee"));
}

#[test]
fn paystack_settlement_responses_in_subunits() {
    let text = r#"[{"status": true, "message": "Settlements retrieved", "data": [
        {"id": 3090024, "status": "success", "currency": "NGN", "total_amount": 995, "effective_amount": 995,
         "total_fees": 5, "total_processed": 1000, "settlement_date": "2026-01-09T00:00:00.000Z"}]},
      {"status": true, "data": [
        {"id": 1, "status": "success", "reference": "p1", "amount": 1000, "fees": 5, "currency": "NGN",
         "paid_at": "2026-01-08T10:00:00.000Z"},
        {"id": 2, "status": "abandoned", "reference": "p2", "amount": 1000, "currency": "NGN"}]}]"#;
    let s = parse(StatementFormat::Paystack, text.as_bytes()).unwrap();
    let got: Vec<(&str, MovementKind, i64, i64)> = s
        .lines
        .iter()
        .map(|l| (l.reference.as_str(), l.kind, l.gross.minor(), l.fee.minor()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("3090024", MovementKind::Settlement, 995, 0),
            ("p1", MovementKind::Deposit, 1000, 5)
        ]
    );
    assert_eq!(s.skipped.len(), 1);
    let bad = r#"{"data": [{"status": "success", "reference": "p", "amount": 10.5, "currency": "NGN", "paid_at": "2026-01-08T10:00:00Z"}]}"#;
    let err = parse(StatementFormat::Paystack, bad.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("whole number"), "{err}");
    assert!(matches!(
        parse(StatementFormat::Paystack, b"not json").unwrap_err(),
        StatementError::Json(_)
    ));
}
