//! Stripe `payout.paid` without one of our payout references is the platform's own payout: a settlement
//! (`record_settlement`), not an anomaly; with our reference it stays a user's payout.

use ledger_core::{BankName, Command, Currency, Gateway, Money};
use ledger_gateway::{CallbackKind, Disposition, parse, plan};
use uuid::Uuid;

fn payout_paid(metadata: &str) -> Vec<u8> {
    format!(
        r#"{{"id": "evt_1", "object": "event", "type": "payout.paid", "created": 1769860800,
            "data": {{"object": {{"id": "po_1Abc", "object": "payout", "amount": 14000, "currency": "usd",
            "status": "paid", "destination": "ba_1Xyz", "metadata": {metadata}}}}}}}"#
    )
    .into_bytes()
}

#[test]
fn stripe_payout_to_the_platforms_bank_is_a_settlement() {
    let callback = parse(Gateway::Stripe, &payout_paid("{}")).unwrap();
    assert_eq!(callback.kind, Some(CallbackKind::SettlementPaid));
    assert_eq!(callback.reference.as_deref(), Some("po_1Abc"));
    let p = plan(&callback, None, false);
    assert_eq!(p.disposition, Disposition::Apply, "{}", p.detail);
    assert_eq!(p.dedupe_key, "callback:stripe:po_1Abc:settlement_paid");
    assert_eq!(
        p.command,
        Some(Command::RecordSettlement {
            gateway: Gateway::Stripe,
            settlement_id: "po_1Abc".into(),
            bank_account: BankName::new("stripe").unwrap(),
            amount: Money::from_minor(14_000, Currency::USD),
            fee: None,
            occurred_at: "2026-01-31T12:00:00Z".parse().unwrap(),
        })
    );
}

#[test]
fn stripe_payout_with_our_reference_stays_a_users_payout() {
    let id = Uuid::from_u128(0xE1);
    let callback = parse(
        Gateway::Stripe,
        &payout_paid(&format!(r#"{{"payment_reference": "{id}"}}"#)),
    )
    .unwrap();
    assert_eq!(callback.kind, Some(CallbackKind::PayoutSucceeded));
    // Unknown to the ledger: an anomaly for a person (as before), not a settlement.
    assert_eq!(
        plan(&callback, None, false).disposition,
        Disposition::Anomaly
    );
}
