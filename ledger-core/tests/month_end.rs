//! Month-end in the core: settlements (booked once, onto the bank and off the clearing), closed periods
//! (closed only once ended, re-opened explicitly and logged) and entries moved out of a closed period.

use chrono::{DateTime, TimeZone, Utc};
use ledger_core::aggregates::Ctx;
use ledger_core::aggregates::period::{Periods, PeriodsCommand, PeriodsEvent, PeriodsState};
use ledger_core::aggregates::settlement::{
    Settlement, SettlementCommand, SettlementEvent, SettlementState,
};
use ledger_core::{
    Account, Actor, BankName, Currency, Decider, Gateway, Money, Month, Rejection, Side,
};
use uuid::Uuid;

fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn settle(actor: Actor, amount: i64, fee: Option<i64>) -> Ctx<SettlementCommand> {
    Ctx::new(
        actor,
        t(2026, 2, 1),
        SettlementCommand {
            gateway: Gateway::Stripe,
            settlement_id: "po_1".into(),
            bank_account: BankName::new("Main").unwrap(),
            amount: usd(amount),
            fee: fee.map(usd),
            occurred_at: t(2026, 1, 31),
        },
    )
}

fn fold<D: Decider>(events: &[D::Event]) -> D::State {
    events.iter().fold(D::State::default(), D::evolve)
}

#[test]
fn a_settlement_moves_clearing_to_the_bank_once() {
    let admin = Actor::Admin(Uuid::from_u128(1));
    let events = Settlement::decide(
        &settle(admin, 14_000, Some(25)),
        &SettlementState::default(),
    )
    .unwrap();
    let SettlementEvent::SettlementRecorded { entry, .. } = &events[0];
    let postings: Vec<(String, Side, i64)> = entry
        .postings()
        .iter()
        .map(|p| (p.account.to_string(), p.side, p.amount.minor()))
        .collect();
    assert_eq!(
        postings,
        vec![
            ("Assets:Bank:main".to_string(), Side::Debit, 14_000),
            ("Expenses:GatewayFees".to_string(), Side::Debit, 25),
            (
                "Assets:Gateway:Stripe:Clearing".to_string(),
                Side::Credit,
                14_025
            ),
        ]
    );
    assert_eq!(entry.effective_at(), t(2026, 1, 31));
    let state = fold::<Settlement>(&events);
    // The same announcement again books nothing; another amount under the same id is refused.
    assert_eq!(
        Settlement::decide(&settle(admin, 14_000, Some(25)), &state).unwrap(),
        vec![]
    );
    let err = Settlement::decide(&settle(admin, 15_000, None), &state).unwrap_err();
    assert_eq!(err.code(), "already_exists");
}

#[test]
fn who_may_record_a_settlement_and_what_it_may_carry() {
    let s = SettlementState::default();
    assert!(Settlement::decide(&settle(Actor::System, 100, None), &s).is_ok());
    assert!(Settlement::decide(&settle(Actor::Gateway(Gateway::Stripe), 100, None), &s).is_ok());
    for actor in [
        Actor::Gateway(Gateway::Paystack),
        Actor::User(Uuid::from_u128(2)),
    ] {
        let err = Settlement::decide(&settle(actor, 100, None), &s).unwrap_err();
        assert_eq!(err.code(), "not_a_party", "{actor:?}");
    }
    assert_eq!(
        Settlement::decide(&settle(Actor::System, 0, None), &s)
            .unwrap_err()
            .code(),
        "non_positive_amount"
    );
    let mut other = settle(Actor::System, 100, None);
    other.body.fee = Some(Money::from_minor(1, Currency::EUR));
    assert_eq!(
        Settlement::decide(&other, &s).unwrap_err().code(),
        "currency_mismatch"
    );
    assert!(
        BankName::new("-x").is_err()
            && BankName::new("a b").is_err()
            && BankName::new(&"a".repeat(33)).is_err()
    );
    assert_eq!(
        "Assets:Bank:main".parse::<Account>().unwrap(),
        Account::Bank(BankName::new("MAIN").unwrap())
    );
}

fn periods(actor: Actor, at: DateTime<Utc>, body: PeriodsCommand) -> Ctx<PeriodsCommand> {
    Ctx::new(actor, at, body)
}

#[test]
fn months_close_once_ended_and_reopen_explicitly() {
    let op = Uuid::from_u128(7);
    let admin = Actor::Admin(op);
    let jan: Month = "2026-01".parse().unwrap();
    let close = PeriodsCommand::Close { through: jan };
    let err = Periods::decide(
        &periods(admin, t(2026, 1, 31), close.clone()),
        &PeriodsState::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Rejection::InvalidCommand(ref m) if m.contains("before it ends")),
        "{err}"
    );
    let err = Periods::decide(
        &periods(Actor::User(op), t(2026, 2, 2), close.clone()),
        &PeriodsState::default(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "not_a_party");
    let events = Periods::decide(
        &periods(admin, t(2026, 2, 2), close.clone()),
        &PeriodsState::default(),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![PeriodsEvent::PeriodsClosed {
            through: jan,
            operator: op
        }]
    );
    let state = fold::<Periods>(&events);
    assert_eq!(
        state.first_open_start(),
        Some(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(
        Periods::decide(&periods(admin, t(2026, 3, 2), close), &state).unwrap(),
        vec![]
    );
    let feb: Month = "2026-02".parse().unwrap();
    let reopen = |from: Month, reason: &str| PeriodsCommand::Reopen {
        from,
        reason: reason.into(),
    };
    assert!(
        Periods::decide(
            &periods(admin, t(2026, 3, 2), reopen(feb, "late fee")),
            &state
        )
        .is_err()
    );
    assert!(Periods::decide(&periods(admin, t(2026, 3, 2), reopen(jan, " ")), &state).is_err());
    let events = Periods::decide(
        &periods(admin, t(2026, 3, 2), reopen(jan, "late fee")),
        &state,
    )
    .unwrap();
    let dec: Month = "2025-12".parse().unwrap();
    assert_eq!(
        events,
        vec![PeriodsEvent::PeriodsReopened {
            from: jan,
            closed_through: Some(dec),
            operator: op,
            reason: "late fee".into()
        }]
    );
    assert_eq!(
        fold::<Periods>(&events).closed_through,
        Some(dec),
        "December stays closed"
    );
}
