//! Each adapter on the gateways' documented payloads (see tests/fixtures/SOURCES.md), with valid, invalid and
//! stale signatures, and the exactness of amounts.

use ledger_core::aggregates::payment::{PaymentKind, PaymentState, PaymentStatus};
use ledger_core::{Command, Currency, Gateway, Money};
use ledger_gateway::model::AmountProblem;
use ledger_gateway::plan::{Disposition, dedupe_key, plan};
use ledger_gateway::verify::{parse_timestamped, sign_timestamped};
use ledger_gateway::{
    AuthError, CallbackError, CallbackKind, Secrets, authenticate_and_parse, parse,
};
use uuid::Uuid;

const STRIPE_DOCS_EVENT: &[u8] = include_bytes!("fixtures/stripe_event_object_docs.json");
const STRIPE_PI: &[u8] = include_bytes!("fixtures/stripe_payment_intent_succeeded.json");
const PAYSTACK_TRANSFER: &[u8] = include_bytes!("fixtures/paystack_transfer_success.json");
const PAYSTACK_REFUND_OK: &[u8] = include_bytes!("fixtures/paystack_refund_processed.json");
const PAYSTACK_REFUND_FAILED: &[u8] = include_bytes!("fixtures/paystack_refund_failed.json");
const PAYSTACK_DISPUTE: &[u8] = include_bytes!("fixtures/paystack_dispute_create.json");
const FINCRA_PAYOUT: &[u8] = include_bytes!("fixtures/fincra_payout_successful.json");
const FLUTTERWAVE_CHARGE: &[u8] = include_bytes!("fixtures/flutterwave_charge_completed.json");
const FINCRA_CHARGE: &[u8] = include_bytes!("fixtures/fincra_charge_successful.json");

/// Computed with Python's hmac module (SOURCES.md), not with the code under test.
const STRIPE_VECTOR_HEX: &str = "2dedf3d0bb1ea987464b0f75fba8dcb38ce266f8e73df210b6815d4ce63fb631";
const PAYSTACK_VECTOR_HEX: &str = "228efcd0c985851ea584eed8b56b5cd939c85b53a9d5b2b0d287c6531efdf824105d331ff9b53f7ce914b058d379c2d6ac64bddb70d328d330337e534f0faaee";
const FINCRA_VECTOR_HEX: &str = "f92b62c5b2bea173b84a7fa8e411da36e810f5dcbfdd5964876146d2bfdadfb1193beecaa0312b28e3f4fda6f7ef280a71bfd19148eaef915f4975ec652145fa";
const FLUTTERWAVE_VECTOR_B64: &str = "ON/KAGccl63uko6xsN/YsnKEgxZMw2cCdwOlrVMmn4g=";
const FINCRA_CHARGE_VECTOR_HEX: &str = "7b17b08e203b8121d8374754ef4b549f68c682bdc3557e1526ef3fb4bf234ac43aa1e3a068defc987451e49dd2693fa0a2f96a51b2c1660de623866f9faa9af8";
/// Stripe's documented header (webhook signatures guide).
const STRIPE_DOCS_HEADER: &str = "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";

fn secrets() -> Secrets {
    Secrets {
        stripe: Some("whsec_test_secret".into()),
        paystack: Some("sk_test_paystack".into()),
        flutterwave_hash: Some("flw-hash-123".into()),
        flutterwave_accept_static_hash: false,
        fincra: Some("fincra_test_key".into()),
        cmi_store_key: Some("CmiStoreKey123".into()),
        tap_secret: Some("sk_test_tap".into()),
        callback: Some("in-house-secret".into()),
    }
}

fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| {
        owned
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn money(text: &str, code: &str) -> Money {
    Money::parse(text, Currency::from_code(code).unwrap()).unwrap()
}

#[test]
fn stripe_published_vector_and_documented_header() {
    let now = 1_700_000_010;
    let good = format!("t=1700000000,v1={STRIPE_VECTOR_HEX}");
    let c = authenticate_and_parse(
        Gateway::Stripe,
        &headers(&[("stripe-signature", &good)]),
        STRIPE_PI,
        &secrets(),
        now,
    )
    .unwrap();
    assert_eq!(c.kind, Some(CallbackKind::DepositSucceeded));
    assert_eq!(c.event_id, "evt_checks_1");
    assert_eq!(c.reference.as_deref(), Some("no-such-reference"));
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("25.00", "USD")
    );
    assert_eq!(c.raw_body, STRIPE_PI);
    // Our signer agrees with the independent vector.
    assert_eq!(
        sign_timestamped("whsec_test_secret", 1_700_000_000, STRIPE_PI),
        good
    );
    // Several v1 values (secret rotation): one good one is enough; v0 is ignored.
    let rotated = format!(
        "t=1700000000,v1={},v1={STRIPE_VECTOR_HEX},v0=00",
        "ab".repeat(32)
    );
    assert!(
        authenticate_and_parse(
            Gateway::Stripe,
            &headers(&[("stripe-signature", &rotated)]),
            STRIPE_PI,
            &secrets(),
            now
        )
        .is_ok()
    );
    // Stale: more than 300 s old, and in the future.
    for at in [1_700_000_301, 1_699_999_000] {
        let err = authenticate_and_parse(
            Gateway::Stripe,
            &headers(&[("stripe-signature", &good)]),
            STRIPE_PI,
            &secrets(),
            at,
        )
        .unwrap_err();
        assert!(
            matches!(err, CallbackError::Unauthorized(AuthError::Stale { .. })),
            "{err:?}"
        );
    }
    // Forged: one byte of the body changed.
    let mut forged = STRIPE_PI.to_vec();
    forged[60] ^= 1;
    let err = authenticate_and_parse(
        Gateway::Stripe,
        &headers(&[("stripe-signature", &good)]),
        &forged,
        &secrets(),
        now,
    )
    .unwrap_err();
    assert_eq!(err, CallbackError::Unauthorized(AuthError::Mismatch));
    // Only a v0 signature (downgrade) is not accepted.
    let v0_only = format!("t=1700000000,v0={STRIPE_VECTOR_HEX}");
    assert!(
        authenticate_and_parse(
            Gateway::Stripe,
            &headers(&[("stripe-signature", &v0_only)]),
            STRIPE_PI,
            &secrets(),
            now
        )
        .is_err()
    );
    // The documented header: t and exactly one v1 (v0 ignored); it does not verify under our secret.
    let (t, v1) = parse_timestamped(STRIPE_DOCS_HEADER, "Stripe-Signature").unwrap();
    assert_eq!((t, v1.len()), (1_492_774_577, 1));
    let err = authenticate_and_parse(
        Gateway::Stripe,
        &headers(&[("stripe-signature", STRIPE_DOCS_HEADER)]),
        STRIPE_PI,
        &secrets(),
        t,
    )
    .unwrap_err();
    assert_eq!(err, CallbackError::Unauthorized(AuthError::Mismatch));
    // Missing header.
    assert!(matches!(
        authenticate_and_parse(Gateway::Stripe, &headers(&[]), STRIPE_PI, &secrets(), now),
        Err(CallbackError::Unauthorized(AuthError::MissingHeader(_)))
    ));
}

#[test]
fn stripe_docs_event_is_authentic_but_not_handled() {
    let c = parse(Gateway::Stripe, STRIPE_DOCS_EVENT).unwrap();
    assert_eq!(c.event_id, "evt_1NG8Du2eZvKYlo2CUI79vXWy");
    assert_eq!(c.event_type, "setup_intent.created");
    assert_eq!(c.kind, None);
    assert_eq!(plan(&c, None, true).disposition, Disposition::Ignored);
}

#[test]
fn stripe_both_event_types_of_one_payment_share_a_dedupe_key() {
    let id = Uuid::from_u128(7);
    let pi = format!(
        r#"{{"id":"evt_a","type":"payment_intent.succeeded","created":1700000000,"data":{{"object":{{"id":"pi_1","object":"payment_intent","amount":1000,"amount_received":1000,"currency":"usd","metadata":{{"payment_reference":"{id}"}}}}}}}}"#
    );
    let ch = format!(
        r#"{{"id":"evt_b","type":"charge.succeeded","created":1700000001,"data":{{"object":{{"id":"ch_1","object":"charge","payment_intent":"pi_1","amount":1000,"amount_captured":1000,"currency":"usd","metadata":{{"payment_reference":"{id}"}}}}}}}}"#
    );
    let a = parse(Gateway::Stripe, pi.as_bytes()).unwrap();
    let b = parse(Gateway::Stripe, ch.as_bytes()).unwrap();
    assert_ne!(a.event_id, b.event_id);
    assert_eq!(dedupe_key(&a), dedupe_key(&b));
    assert_eq!(
        dedupe_key(&a),
        format!("callback:stripe:{id}:deposit_succeeded:pi_1:10.00 USD")
    );
}

#[test]
fn paystack_documented_transfer_refunds_and_dispute() {
    let good = headers(&[("x-paystack-signature", PAYSTACK_VECTOR_HEX)]);
    let c =
        authenticate_and_parse(Gateway::Paystack, &good, PAYSTACK_TRANSFER, &secrets(), 0).unwrap();
    assert_eq!(c.kind, Some(CallbackKind::PayoutSucceeded));
    assert_eq!(
        c.reference.as_deref(),
        Some("ACV_9ee55786-2323-4760-98e2-6380c9cb3f68")
    );
    assert_eq!(c.event_id, "transfer.success:860703114:success");
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("1000.00", "NGN")
    );
    assert_eq!(
        c.fee.as_ref().unwrap().to_money().unwrap(),
        money("0", "NGN")
    );
    let wrong = headers(&[(
        "x-paystack-signature",
        &PAYSTACK_VECTOR_HEX.replace('2', "3"),
    )]);
    assert_eq!(
        authenticate_and_parse(Gateway::Paystack, &wrong, PAYSTACK_TRANSFER, &secrets(), 0)
            .unwrap_err(),
        CallbackError::Unauthorized(AuthError::Mismatch)
    );

    let ok = parse(Gateway::Paystack, PAYSTACK_REFUND_OK).unwrap();
    assert_eq!(ok.kind, Some(CallbackKind::RefundProcessed));
    assert_eq!(
        ok.reference.as_deref(),
        Some("T2154954_412829_3be32076_6lcg3")
    );
    assert_eq!(
        ok.amount.as_ref().unwrap().to_money().unwrap(),
        money("50.00", "NGN")
    ); // "5000" as a string
    let failed = parse(Gateway::Paystack, PAYSTACK_REFUND_FAILED).unwrap();
    assert_eq!(failed.kind, Some(CallbackKind::RefundFailed));
    assert_eq!(
        failed.amount.as_ref().unwrap().to_money().unwrap(),
        money("200.00", "NGN")
    ); // 20000 as a number

    let dispute = parse(Gateway::Paystack, PAYSTACK_DISPUTE).unwrap();
    assert_eq!(dispute.kind, Some(CallbackKind::ChargebackOpened));
    assert_eq!(dispute.reference.as_deref(), Some("v3mjfgbnc19v97x"));
    assert_eq!(dispute.dispute_id.as_deref(), Some("358950"));
    assert_eq!(
        dispute.amount.as_ref().unwrap().to_money().unwrap(),
        money("58.00", "NGN")
    );
}

#[test]
fn fincra_documented_payout() {
    let good = headers(&[("signature", FINCRA_VECTOR_HEX)]);
    let c = authenticate_and_parse(Gateway::Fincra, &good, FINCRA_PAYOUT, &secrets(), 0).unwrap();
    assert_eq!(c.kind, Some(CallbackKind::PayoutSucceeded));
    // What the recipient received is the payout's amount; Fincra's fee is what it charged beyond that. The
    // published sample's figures disagree (212000 charged, 500 received, fee 150): an anomaly, nothing booked.
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("500", "GBP")
    );
    assert_eq!(c.fee, None);
    assert!(
        c.defect.as_deref().is_some_and(|d| d.contains("disagrees")),
        "{:?}",
        c.defect
    );
    // The documented example has no customerReference: nothing names our payout, so nothing moves.
    assert_eq!(c.reference, None);
    assert_eq!(plan(&c, None, true).disposition, Disposition::Anomaly);
    let mut tampered = FINCRA_PAYOUT.to_vec();
    tampered.push(b' ');
    assert!(authenticate_and_parse(Gateway::Fincra, &good, &tampered, &secrets(), 0).is_err());
    assert!(
        authenticate_and_parse(Gateway::Fincra, &headers(&[]), FINCRA_PAYOUT, &secrets(), 0)
            .is_err()
    );
}

#[test]
fn flutterwave_documented_charge() {
    // The sample travels with the static `verif-hash`: accepted only for a ledger that opted in.
    let good = headers(&[("verif-hash", "flw-hash-123")]);
    assert_eq!(
        authenticate_and_parse(
            Gateway::Flutterwave,
            &good,
            FLUTTERWAVE_CHARGE,
            &secrets(),
            0
        )
        .unwrap_err(),
        CallbackError::Unauthorized(AuthError::StaticHashRefused)
    );
    let opted_in = Secrets {
        flutterwave_accept_static_hash: true,
        ..secrets()
    };
    let c = authenticate_and_parse(
        Gateway::Flutterwave,
        &good,
        FLUTTERWAVE_CHARGE,
        &opted_in,
        0,
    )
    .unwrap();
    // Its reference is not a ledger payment id: authentic money we cannot match goes to suspense.
    assert_eq!(plan(&c, None, true).disposition, Disposition::Suspense);
    assert_eq!(c.kind, Some(CallbackKind::DepositSucceeded));
    assert_eq!(c.reference.as_deref(), Some("order_2026_05_24_001"));
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("25000", "NGN")
    );
    let bad = headers(&[("verif-hash", "flw-hash-124")]);
    assert_eq!(
        authenticate_and_parse(Gateway::Flutterwave, &bad, FLUTTERWAVE_CHARGE, &opted_in, 0)
            .unwrap_err(),
        CallbackError::Unauthorized(AuthError::Mismatch)
    );
    // v4: `flutterwave-signature` = base64(HMAC-SHA256(secret hash, raw body)), computed independently
    // (python3 hmac/base64 over the fixture file with key "flw-hash-123").
    let signed = headers(&[("flutterwave-signature", FLUTTERWAVE_VECTOR_B64)]);
    let c = authenticate_and_parse(
        Gateway::Flutterwave,
        &signed,
        FLUTTERWAVE_CHARGE,
        &secrets(),
        0,
    )
    .unwrap();
    assert_eq!(
        c.transaction_id.as_deref(),
        Some("chg_e1f3a2b1-93f0-4a51-aa57-1d80c5e4c001")
    );
    let mut tampered = FLUTTERWAVE_CHARGE.to_vec();
    tampered.push(b' ');
    assert_eq!(
        authenticate_and_parse(Gateway::Flutterwave, &signed, &tampered, &secrets(), 0)
            .unwrap_err(),
        CallbackError::Unauthorized(AuthError::Mismatch)
    );
    // v4 envelope with a numeric created_datetime (milliseconds).
    let v4 = br#"{"webhook_id":"wbk_1","timestamp":1732000000000,"type":"charge.completed","data":{"id":"chg_2","amount":10.5,"currency":"NGN","status":"succeeded","reference":"r","created_datetime":1732000000000}}"#;
    let c = parse(Gateway::Flutterwave, v4).unwrap();
    assert_eq!(c.kind, Some(CallbackKind::DepositSucceeded));
    assert_eq!(c.occurred_at.unwrap().timestamp(), 1_732_000_000);
    // v3 shape: tx_ref carries our reference, decimal major units parsed exactly.
    let v3 = br#"{"event":"charge.completed","data":{"id":285959875,"tx_ref":"Links-616626414629","amount":100.10,"currency":"NGN","app_fee":1.4,"status":"successful","created_at":"2020-07-06T19:17:04.000Z"}}"#;
    let c = parse(Gateway::Flutterwave, v3).unwrap();
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("100.10", "NGN")
    );
    assert_eq!(
        c.fee.as_ref().unwrap().to_money().unwrap(),
        money("1.40", "NGN")
    );
}

#[test]
fn amounts_are_exact_never_rounded() {
    let body = |amount: &str, currency: &str| {
        format!(
            r#"{{"event_id":"e1","kind":"deposit_succeeded","payment_reference":"r","amount":{amount},"currency":"{currency}"}}"#
        )
    };
    let amount_of = |a: &str, c: &str| {
        parse(Gateway::Normalized, body(a, c).as_bytes()).map(|cb| cb.amount.unwrap().to_money())
    };
    // A JSON number that f64 cannot hold exactly.
    assert_eq!(
        amount_of("12345678901234567.89", "USD")
            .unwrap()
            .unwrap()
            .minor(),
        1_234_567_890_123_456_789
    );
    assert_eq!(
        amount_of("0.1", "USD").unwrap().unwrap(),
        money("0.10", "USD")
    );
    assert_eq!(
        amount_of("\"1000.00\"", "JPY").unwrap().unwrap(),
        money("1000", "JPY")
    );
    assert_eq!(
        amount_of("10.505", "USD").unwrap().unwrap_err(),
        AmountProblem::NotRepresentable {
            held: money("10.50", "USD"),
            reported: "10.505 USD".into()
        }
    );
    assert!(matches!(
        amount_of("1000.50", "JPY").unwrap(),
        Err(AmountProblem::NotRepresentable { .. })
    ));
    assert!(matches!(
        amount_of("5", "XXQ").unwrap(),
        Err(AmountProblem::UnknownCurrency(_))
    ));
    assert!(
        amount_of("1e3", "USD").is_err(),
        "exponent forms are refused, not converted"
    );
    assert!(parse(Gateway::Normalized, b"{not json").is_err());
}

fn deposit(id: Uuid, currency: Currency) -> PaymentState {
    PaymentState {
        id,
        kind: Some(PaymentKind::Deposit),
        status: PaymentStatus::Pending,
        user: Uuid::from_u128(1),
        amount_minor: 1000,
        currency: Some(currency),
        gateway: Some(Gateway::Normalized),
        ..PaymentState::default()
    }
}

#[test]
fn plan_routes_unmatched_money_to_suspense() {
    let id = Uuid::from_u128(9);
    let cb = |amount: &str, currency: &str, kind: &str| {
        parse(
            Gateway::Normalized,
            format!(r#"{{"event_id":"e","kind":"{kind}","payment_reference":"{id}","amount":"{amount}","currency":"{currency}"}}"#).as_bytes(),
        )
        .unwrap()
    };
    // Matched: the deposit is confirmed with what actually moved (underpaid here).
    let p = plan(
        &cb("7.00", "USD", "deposit_succeeded"),
        Some(&deposit(id, Currency::USD)),
        true,
    );
    assert_eq!(p.disposition, Disposition::Apply);
    assert!(
        matches!(p.command, Some(Command::ConfirmDeposit { amount, .. }) if amount == money("7.00", "USD"))
    );
    // Unknown reference, currency mismatch, not representable: suspense with a deterministic id.
    for (p1, p2) in [
        (
            plan(&cb("7.00", "USD", "deposit_succeeded"), None, true),
            plan(&cb("7.00", "USD", "deposit_succeeded"), None, true),
        ),
        (
            plan(
                &cb("7.00", "EUR", "deposit_succeeded"),
                Some(&deposit(id, Currency::USD)),
                true,
            ),
            plan(
                &cb("7.00", "EUR", "deposit_succeeded"),
                Some(&deposit(id, Currency::USD)),
                true,
            ),
        ),
        (
            plan(
                &cb("7.005", "USD", "deposit_succeeded"),
                Some(&deposit(id, Currency::USD)),
                true,
            ),
            plan(
                &cb("7.005", "USD", "deposit_succeeded"),
                Some(&deposit(id, Currency::USD)),
                true,
            ),
        ),
    ] {
        assert_eq!(p1.disposition, Disposition::Suspense, "{}", p1.detail);
        assert_eq!(p1, p2);
    }
    // An outgoing outcome for an unknown payment moves nothing.
    assert_eq!(
        plan(&cb("7.00", "USD", "payout_succeeded"), None, true).disposition,
        Disposition::Anomaly
    );
}

#[test]
fn fincra_documented_charge_posts_what_was_received_against_our_reference() {
    let good = headers(&[("signature", FINCRA_CHARGE_VECTOR_HEX)]);
    let c = authenticate_and_parse(Gateway::Fincra, &good, FINCRA_CHARGE, &secrets(), 0).unwrap();
    assert_eq!(c.kind, Some(CallbackKind::DepositSucceeded));
    assert_eq!(
        c.reference.as_deref(),
        Some("31c1169c-d535-4e0b-90eb-a03a99c2f334")
    );
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("101.51", "NGN")
    );
    assert_eq!(
        c.fee.as_ref().unwrap().to_money().unwrap(),
        money("1.51", "NGN")
    );
    let id = Uuid::parse_str("31c1169c-d535-4e0b-90eb-a03a99c2f334").unwrap();
    let payment = PaymentState {
        gateway: Some(Gateway::Fincra),
        currency: Some(Currency::from_code("NGN").unwrap()),
        ..deposit(id, Currency::USD)
    };
    let p = plan(&c, Some(&payment), true);
    assert_eq!(p.disposition, Disposition::Apply, "{}", p.detail);
    assert!(
        matches!(p.command, Some(Command::ConfirmDeposit { amount, gateway_fee: Some(fee), .. })
        if amount == money("101.51", "NGN") && fee == money("1.51", "NGN"))
    );
    // Unknown to the ledger: authentic money held in suspense.
    assert_eq!(plan(&c, None, true).disposition, Disposition::Suspense);
    // A collection reporting what was charged and what was received: the customer paid the charge (gross),
    // the difference is the fee.
    let collection = br#"{"event":"collection.successful","data":{"id":5,"merchantReference":"m-1","amountCharged":"1000.00","amountReceived":"985.00","currency":"NGN","status":"successful"}}"#;
    let c = parse(Gateway::Fincra, collection).unwrap();
    assert_eq!(c.reference.as_deref(), Some("m-1"));
    assert_eq!(
        c.amount.as_ref().unwrap().to_money().unwrap(),
        money("1000.00", "NGN")
    );
    assert_eq!(
        c.fee.as_ref().unwrap().to_money().unwrap(),
        money("15.00", "NGN")
    );
}

fn paystack_success(
    reference: Uuid,
    data_id: &str,
    minor: i64,
) -> ledger_gateway::NormalizedCallback {
    parse(
        Gateway::Paystack,
        format!(r#"{{"event":"charge.success","data":{{"id":{data_id},"reference":"{reference}","amount":{minor},"currency":"USD","status":"success"}}}}"#).as_bytes(),
    )
    .unwrap()
}

#[test]
fn a_callback_naming_another_gateways_payment_is_suspense_on_its_own_clearing() {
    let id = Uuid::from_u128(11);
    let stripe_payment = PaymentState {
        gateway: Some(Gateway::Stripe),
        ..deposit(id, Currency::USD)
    };
    let p = plan(
        &paystack_success(id, "1", 100_000_000),
        Some(&stripe_payment),
        true,
    );
    assert_eq!(p.disposition, Disposition::Suspense);
    assert!(p.detail.contains(&id.to_string()), "{}", p.detail);
    assert!(
        matches!(p.command, Some(Command::RecordSuspense { gateway: Gateway::Paystack, amount, .. })
        if amount == money("1000000.00", "USD"))
    );
    // An outgoing outcome for another gateway's payout moves nothing.
    let payout = PaymentState {
        kind: Some(PaymentKind::Payout),
        gateway: Some(Gateway::Stripe),
        ..deposit(id, Currency::USD)
    };
    let transfer = parse(
        Gateway::Paystack,
        format!(r#"{{"event":"transfer.success","data":{{"id":2,"reference":"{id}","amount":1000,"currency":"USD","status":"success"}}}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        plan(&transfer, Some(&payout), true).disposition,
        Disposition::Anomaly
    );
}

#[test]
fn only_the_same_movement_is_a_duplicate_and_another_success_is_held() {
    let id = Uuid::from_u128(12);
    let (first, again, other) = (
        paystack_success(id, "1", 18_000),
        paystack_success(id, "1", 18_000),
        paystack_success(id, "2", 2_000),
    );
    assert_eq!(dedupe_key(&first), dedupe_key(&again));
    assert_ne!(dedupe_key(&first), dedupe_key(&other));
    // Same transaction id, another amount: another movement too.
    assert_ne!(
        dedupe_key(&first),
        dedupe_key(&paystack_success(id, "1", 2_000))
    );
    let completed = PaymentState {
        gateway: Some(Gateway::Paystack),
        status: PaymentStatus::Completed,
        ..deposit(id, Currency::USD)
    };
    let p = plan(&other, Some(&completed), true);
    assert_eq!(p.disposition, Disposition::Suspense);
    assert!(
        matches!(p.command, Some(Command::RecordSuspense { amount, .. }) if amount == money("20.00", "USD"))
    );
}

#[test]
fn a_nul_in_an_identifier_is_an_anomaly_with_storable_texts() {
    let id = Uuid::from_u128(13);
    let body = format!(
        r#"{{"event":"charge.success","data":{{"id":"7\u0000\nx","reference":"{id}","amount":1000,"currency":"USD","status":"success","gateway_response":"a\u0000b"}}}}"#
    );
    let c = parse(Gateway::Paystack, body.as_bytes()).unwrap();
    assert!(c.defect.is_some());
    for text in [
        &c.event_id,
        c.reason.as_ref().unwrap(),
        c.transaction_id.as_ref().unwrap(),
    ] {
        assert!(!text.contains('\0'), "{text:?}");
    }
    let payment = PaymentState {
        gateway: Some(Gateway::Paystack),
        ..deposit(id, Currency::USD)
    };
    let p = plan(&c, Some(&payment), true);
    assert_eq!((p.disposition, p.command), (Disposition::Anomaly, None));
}

#[test]
fn a_blank_secret_authenticates_nothing() {
    let blank = Secrets {
        paystack: Some("  ".into()),
        ..secrets()
    };
    let body = b"{}";
    let signature = ledger_gateway::verify::sign_sha512_hex("  ", body);
    assert_eq!(
        authenticate_and_parse(
            Gateway::Paystack,
            &headers(&[("x-paystack-signature", &signature)]),
            body,
            &blank,
            0
        )
        .unwrap_err(),
        CallbackError::Unauthorized(AuthError::NoSecret(Gateway::Paystack))
    );
}
