//! Findings of the adversarial review of issues 9 and 10 (ledger-store): each test reproduces one bug found by
//! reading the landed work as a payments engineer would, against real PostgreSQL.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Gateway, Money};
use ledger_store::testdb::TestDb;
use ledger_store::{CommandOutcome, DEFAULT_LEDGER, Executor, ExecutorConfig};
use uuid::Uuid;

const BUYER: Uuid = Uuid::from_u128(0xB0B);
const STRIPE: Actor = Actor::Gateway(Gateway::Stripe);

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn env(command: Command, actor: Actor, seconds: i64) -> CommandEnvelope {
    let at: DateTime<Utc> =
        Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds);
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor,
        at,
        command,
    }
}

/// Gateways do not promise delivery order (Stripe says so in its webhook guide): a `chargeback_won` may
/// arrive before the `chargeback_opened` of the same dispute. The early one is refused `not_found`; that
/// refusal rests on state that does not exist *yet* and must not be recorded under the callback's key, or
/// the redelivery after the dispute opened answers the old refusal and the won chargeback is never booked
/// (the clearing account then disagrees with the gateway by the disputed amount, for good).
#[tokio::test]
async fn a_chargeback_won_delivered_before_it_opened_is_booked_when_redelivered() {
    let db = TestDb::new().await;
    let ex = Executor::new(
        Arc::new(db.store()),
        DEFAULT_LEDGER,
        ExecutorConfig::default(),
    );
    let payment = Uuid::from_u128(0x9B1);
    let chargeback_id = Uuid::from_u128(0xCB1);
    for (actor, command) in [
        (
            Actor::User(BUYER),
            Command::InitiateDeposit {
                payment_id: payment,
                amount: usd(10_000),
                gateway: Gateway::Stripe,
                fund: None,
            },
        ),
        (
            STRIPE,
            Command::ConfirmDeposit {
                payment_id: payment,
                amount: usd(10_000),
                gateway_fee: None,
                occurred_at: None,
                fee_in_suspense: None,
            },
        ),
    ] {
        let outcome = ex.execute(&env(command, actor, 0), None).await.unwrap();
        assert!(outcome.is_accepted(), "{outcome:?}");
    }
    let won = Command::WinChargeback {
        payment_id: payment,
        chargeback_id,
    };
    let won_key = format!("callback:stripe:{payment}:chargeback_won:dp_1");
    let early = ex
        .execute(&env(won.clone(), STRIPE, 10), Some(&won_key))
        .await
        .unwrap();
    let CommandOutcome::Rejected { rejection, .. } = &early else {
        panic!("won before it opened: {early:?}")
    };
    assert_eq!(rejection.code, "not_found");
    let opened = Command::OpenChargeback {
        payment_id: payment,
        chargeback_id,
        amount: usd(10_000),
        fee: None,
        occurred_at: None,
    };
    let outcome = ex
        .execute(
            &env(opened, STRIPE, 20),
            Some("callback:stripe:opened:dp_1"),
        )
        .await
        .unwrap();
    assert!(outcome.is_accepted(), "{outcome:?}");
    // The gateway redelivers the win (it got no 2xx, or it retries anyway).
    let again = ex
        .execute(&env(won, STRIPE, 30), Some(&won_key))
        .await
        .unwrap();
    assert!(
        again.is_accepted(),
        "the early refusal was recorded for good: {again:?}"
    );
    let events = ex
        .store()
        .read_stream(DEFAULT_LEDGER, &format!("payment-{payment}"), 0, 100)
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.event_type == "ChargebackWon"));
}
