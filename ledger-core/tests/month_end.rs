//! Month-end in the core: settlements (booked once, onto the bank and off the clearing), closed periods
//! (closed only once ended, re-opened explicitly and logged) and entries moved out of a closed period.

use chrono::{DateTime, TimeZone, Utc};
use ledger_core::aggregates::Ctx;
use ledger_core::aggregates::closed_periods::{
    Periods, PeriodsCommand, PeriodsEvent, PeriodsState,
};
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
            clearing_balance_minor: 1_000_000,
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
    let SettlementEvent::SettlementRecorded { entry, .. } = &events[0] else {
        panic!("a settlement records its entry first: {events:?}");
    };
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

#[test]
fn a_settlement_never_takes_the_clearing_below_zero() {
    let admin = Actor::Admin(Uuid::from_u128(1));
    let mut cmd = settle(admin, 14_000, Some(25));
    cmd.body.clearing_balance_minor = 14_024;
    let err = Settlement::decide(&cmd, &SettlementState::default()).unwrap_err();
    assert_eq!(err.code(), "insufficient_funds", "{err}");
    assert!(
        err.to_string().contains("Assets:Gateway:Stripe:Clearing"),
        "{err}"
    );
    cmd.body.clearing_balance_minor = 14_025;
    assert_eq!(
        Settlement::decide(&cmd, &SettlementState::default())
            .unwrap()
            .len(),
        1
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

// ---- through the engine: JSON commands, a closed period, a late callback

use ledger_core::{Command, CommandEnvelope, MemoryLedger};

fn run(
    ledger: &mut MemoryLedger,
    n: u128,
    actor: Actor,
    at: DateTime<Utc>,
    command: serde_json::Value,
) -> Result<ledger_core::Outcome, Rejection> {
    let command: Command = serde_json::from_value(command).expect("a command");
    ledger.execute(&CommandEnvelope {
        command_id: Uuid::from_u128(0xE0_0000 + n),
        actor,
        at,
        command,
    })
}

fn deposit(
    ledger: &mut MemoryLedger,
    n: u128,
    payment: Uuid,
    gross: &str,
    occurred_at: &str,
    at: DateTime<Utc>,
) -> ledger_core::Outcome {
    let buyer = Uuid::from_u128(0xB);
    let usd = |a: &str| serde_json::json!({"amount": a, "currency": "USD"});
    run(ledger, n, Actor::User(buyer), at, serde_json::json!({"type": "initiate_deposit", "payment_id": payment, "amount": usd(gross), "gateway": "stripe", "fund": null})).unwrap();
    run(ledger, n + 1, Actor::Gateway(Gateway::Stripe), at, serde_json::json!({"type": "confirm_deposit", "payment_id": payment, "amount": usd(gross), "gateway_fee": null, "occurred_at": occurred_at})).unwrap()
}

#[test]
fn a_late_callback_into_a_closed_month_posts_at_the_start_of_the_first_open_month() {
    let mut ledger = MemoryLedger::new();
    let admin = Actor::Admin(Uuid::from_u128(0xAD));
    let early = deposit(
        &mut ledger,
        1,
        Uuid::from_u128(0xD1),
        "100.00",
        "2026-01-05T10:00:00Z",
        t(2026, 1, 5),
    );
    let entry = early.changes.iter().find_map(|c| c.event.entry()).unwrap();
    assert_eq!(
        entry.effective_at(),
        Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap()
    );
    assert_eq!(entry.original_effective_at(), None);
    run(
        &mut ledger,
        10,
        admin,
        t(2026, 2, 2),
        serde_json::json!({"type": "close_periods", "through": "2026-01"}),
    )
    .unwrap();
    let late = deposit(
        &mut ledger,
        20,
        Uuid::from_u128(0xD4),
        "10.00",
        "2026-01-25T10:00:00Z",
        t(2026, 2, 3),
    );
    let entry = late.changes.iter().find_map(|c| c.event.entry()).unwrap();
    assert_eq!(
        entry.effective_at(),
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(
        entry.original_effective_at(),
        Some(Utc.with_ymd_and_hms(2026, 1, 25, 10, 0, 0).unwrap())
    );
    // Money that moved in an open month keeps its time.
    let open = deposit(
        &mut ledger,
        30,
        Uuid::from_u128(0xD5),
        "10.00",
        "2026-02-10T10:00:00Z",
        t(2026, 2, 11),
    );
    let entry = open.changes.iter().find_map(|c| c.event.entry()).unwrap();
    assert_eq!(
        (entry.effective_at(), entry.original_effective_at()),
        (Utc.with_ymd_and_hms(2026, 2, 10, 10, 0, 0).unwrap(), None)
    );
    // Re-opened, January takes late money again.
    run(&mut ledger, 40, admin, t(2026, 2, 12), serde_json::json!({"type": "reopen_periods", "from": "2026-01", "reason": "audit adjustment"})).unwrap();
    let reopened = deposit(
        &mut ledger,
        50,
        Uuid::from_u128(0xD6),
        "10.00",
        "2026-01-26T10:00:00Z",
        t(2026, 2, 13),
    );
    assert_eq!(
        reopened
            .changes
            .iter()
            .find_map(|c| c.event.entry())
            .unwrap()
            .original_effective_at(),
        None
    );
    // The stored form keeps the original time, and reads back the same.
    let json =
        serde_json::to_value(late.changes.iter().find_map(|c| c.event.entry()).unwrap()).unwrap();
    assert_eq!(json["original_effective_at"], "2026-01-25T10:00:00Z");
    let back: ledger_core::JournalEntry = serde_json::from_value(json).unwrap();
    assert_eq!(
        back.original_effective_at(),
        Some(Utc.with_ymd_and_hms(2026, 1, 25, 10, 0, 0).unwrap())
    );
}

#[test]
fn record_settlement_as_json_books_the_bank_once() {
    let mut ledger = MemoryLedger::new();
    deposit(
        &mut ledger,
        1,
        Uuid::from_u128(0xD1),
        "150.00",
        "2026-01-05T10:00:00Z",
        t(2026, 1, 5),
    );
    let admin = Actor::Admin(Uuid::from_u128(0xAD));
    let settle = serde_json::json!({"type": "record_settlement", "gateway": "stripe", "settlement_id": "po_me_1", "bank_account": "main", "amount": {"amount": "140.00", "currency": "USD"}, "fee": null, "occurred_at": "2026-01-31T12:00:00Z"});
    let outcome = run(&mut ledger, 10, admin, t(2026, 2, 1), settle.clone()).unwrap();
    // The settlement, and its mark on the clearing's guard stream (settlements of one clearing serialize).
    let types: Vec<_> = outcome
        .changes
        .iter()
        .map(|c| c.event.to_stored().0)
        .collect();
    assert_eq!(types, ["SettlementRecorded", "ClearingSettled"]);
    let bank = Account::Bank(BankName::new("main").unwrap());
    assert_eq!(ledger.balances().balance(&bank, Currency::USD), 14_000);
    assert_eq!(
        ledger
            .balances()
            .balance(&Account::GatewayClearing(Gateway::Stripe), Currency::USD),
        1_000
    );
    let again = run(&mut ledger, 11, admin, t(2026, 2, 1), settle).unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    assert_eq!(ledger.balances().balance(&bank, Currency::USD), 14_000);
    // The clearing holds 10.00 now: a settlement of 10.01 would take it below zero.
    let too_much = serde_json::json!({"type": "record_settlement", "gateway": "stripe", "settlement_id": "po_me_2", "bank_account": "main", "amount": {"amount": "10.01", "currency": "USD"}, "fee": null, "occurred_at": "2026-02-28T12:00:00Z"});
    let err = run(&mut ledger, 12, admin, t(2026, 3, 1), too_much).unwrap_err();
    assert_eq!(err.code(), "insufficient_funds");
    let exact = serde_json::json!({"type": "record_settlement", "gateway": "stripe", "settlement_id": "po_me_2", "bank_account": "main", "amount": {"amount": "10.00", "currency": "USD"}, "fee": null, "occurred_at": "2026-02-28T12:00:00Z"});
    run(&mut ledger, 13, admin, t(2026, 3, 1), exact).unwrap();
    assert_eq!(
        ledger
            .balances()
            .balance(&Account::GatewayClearing(Gateway::Stripe), Currency::USD),
        0
    );
}
