//! Conformance tables: every sample in `tests/fixtures/` (published payloads, and for CMI and Tap samples
//! built from their documentation), as published and matched to a payment of ours, signed as its gateway
//! signs, with the disposition AND the postings it must produce through the real adapter, plan and core
//! (tests/support). A fee taken twice, a refund that never clears, a dropped fee: each changes a posting here.

mod support;

use ledger_core::Gateway;
use ledger_gateway::Secrets;
use ledger_gateway::verify::{sign_sha256_base64, sign_sha512_hex, sign_timestamped};
use support::{Books, Delivered, at, headers, money};
use uuid::Uuid;

const STRIPE: &str = "whsec_conformance";
const PAYSTACK: &str = "sk_test_conformance";
const FLUTTERWAVE: &str = "flw-conformance";
const FINCRA: &str = "fincra-conformance";
/// The store key the CMI fixtures were hashed with (tests/cmi_tap.rs, SOURCES.md).
const CMI: &str = "TEST1234";
/// Tap's published sample key, which the Tap fixtures' vectors use.
const TAP: &str = "sk_test_XKokBfNWv6FIYuTMg5sLPjhJ";

/// Every fixture a table below replays; `every_fixture_has_a_row` fails when a new file is not listed.
const FIXTURES: [&str; 14] = [
    "stripe_event_object_docs.json",
    "stripe_payment_intent_succeeded.json",
    "paystack_transfer_success.json",
    "paystack_refund_processed.json",
    "paystack_refund_failed.json",
    "paystack_dispute_create.json",
    "flutterwave_charge_completed.json",
    "fincra_charge_successful.json",
    "fincra_payout_successful.json",
    "cmi_success.txt",
    "cmi_failure.txt",
    "cmi_nestpay_bank_return.txt",
    "tap_charge_captured.json",
    "tap_charge_declined.json",
];

fn fixture(name: &str) -> Vec<u8> {
    assert!(FIXTURES.contains(&name), "{name} is not in FIXTURES");
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn books() -> Books {
    let mut b = Books::new();
    b.secrets = Secrets {
        stripe: Some(STRIPE.into()),
        paystack: Some(PAYSTACK.into()),
        flutterwave_hash: Some(FLUTTERWAVE.into()),
        fincra: Some(FINCRA.into()),
        cmi_store_key: Some(CMI.into()),
        tap_secret: Some(TAP.into()),
        ..Secrets::default()
    };
    b
}

/// Signs `body` as `gateway` does, with `secret`, and delivers it.
fn send(b: &mut Books, gateway: Gateway, secret: &str, body: &[u8]) -> Delivered {
    let h = match gateway {
        Gateway::Stripe => headers(&[(
            "stripe-signature",
            &sign_timestamped(secret, at().timestamp(), body),
        )]),
        Gateway::Paystack => headers(&[("x-paystack-signature", &sign_sha512_hex(secret, body))]),
        Gateway::Fincra => headers(&[("signature", &sign_sha512_hex(secret, body))]),
        Gateway::Flutterwave => {
            headers(&[("flutterwave-signature", &sign_sha256_base64(secret, body))])
        }
        Gateway::Tap => headers(&[(
            "hashstring",
            &ledger_gateway::tap::sign(body, secret).unwrap(),
        )]),
        // CMI's HASH is inside the form (the fixtures carry theirs).
        Gateway::Cmi | Gateway::Normalized => headers(&[]),
    };
    b.deliver_signed(gateway, &h, body)
}

#[track_caller]
fn expect(d: &Delivered, disposition: &str, posts: &[(&str, &str)]) {
    assert_eq!(d.disposition, disposition, "{d:?}");
    assert_eq!(d.posts(), posts, "{d:?}");
}

fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains(from), "{from} not in the sample");
    text.replace(from, to).into_bytes()
}

#[test]
fn every_fixture_has_a_row() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "SOURCES.md")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn stripe() {
    let mut b = books();
    // An event type the ledger does not handle: authentic, recorded as ignored, nothing posted.
    let docs = fixture("stripe_event_object_docs.json");
    expect(
        &send(&mut b, Gateway::Stripe, STRIPE, &docs),
        "ignored",
        &[],
    );
    // As published: its reference is none of ours, so the money is held in suspense.
    let pi = fixture("stripe_payment_intent_succeeded.json");
    expect(
        &send(&mut b, Gateway::Stripe, STRIPE, &pi),
        "suspense",
        &[
            ("Assets:Gateway:Stripe:Clearing", "25.00"),
            ("Liabilities:Suspense", "-25.00"),
        ],
    );
    // Matched to a pending deposit of ours.
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Stripe, pay, user, money("25.00", "USD"));
    let matched = replace(&pi, "no-such-reference", &pay.to_string());
    expect(
        &send(&mut b, Gateway::Stripe, STRIPE, &matched),
        "applied",
        &[
            ("Assets:Gateway:Stripe:Clearing", "25.00"),
            ("Liabilities:Users:{user}:Available", "-25.00"),
        ],
    );
    expect(
        &send(&mut b, Gateway::Stripe, STRIPE, &matched),
        "duplicate",
        &[],
    );
    expect(
        &send(&mut b, Gateway::Stripe, "whsec_wrong", &matched),
        "unauthorized",
        &[],
    );
    // Cross-gateway: a Stripe success naming a Paystack deposit is not that deposit's report.
    let (u2, paystack_deposit) = (b.id("u2"), b.id("paystack_deposit"));
    b.pending_deposit(
        Gateway::Paystack,
        paystack_deposit,
        u2,
        money("25.00", "USD"),
    );
    let cross = replace(&pi, "no-such-reference", &paystack_deposit.to_string());
    let cross = replace(&cross, "pi_checks_1", "pi_checks_2");
    expect(
        &send(&mut b, Gateway::Stripe, STRIPE, &cross),
        "suspense",
        &[
            ("Assets:Gateway:Stripe:Clearing", "25.00"),
            ("Liabilities:Suspense", "-25.00"),
        ],
    );
}

#[test]
fn paystack() {
    let mut b = books();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("2000.00", "NGN"));
    // A transfer (payout) as published names a reference of someone else's: outgoing, unmatched, nothing moves.
    let transfer = fixture("paystack_transfer_success.json");
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &transfer),
        "anomaly",
        &[],
    );
    let payout = b.id("payout");
    b.payout(Gateway::Paystack, payout, user, money("1000.00", "NGN"));
    let matched = replace(
        &transfer,
        "ACV_9ee55786-2323-4760-98e2-6380c9cb3f68",
        &payout.to_string(),
    );
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &matched),
        "applied",
        &[
            ("Assets:Gateway:Paystack:Clearing", "-1000.00"),
            ("Liabilities:PayoutsInTransit:{payout}", "1000.00"),
        ],
    );
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &matched),
        "duplicate",
        &[],
    );
    expect(
        &send(&mut b, Gateway::Paystack, "sk_wrong", &matched),
        "unauthorized",
        &[],
    );
    // Refunds carry the refunded charge's reference (our deposit id) in transaction_reference.
    let processed = fixture("paystack_refund_processed.json");
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &processed),
        "anomaly",
        &[],
    );
    let (refund, failing) = (b.id("refund"), b.id("failing_refund"));
    b.card_refund(Gateway::Paystack, refund, pay, user, money("50.00", "NGN"));
    b.card_refund(
        Gateway::Paystack,
        failing,
        pay,
        user,
        money("200.00", "NGN"),
    );
    let processed = replace(
        &processed,
        "T2154954_412829_3be32076_6lcg3",
        &pay.to_string(),
    );
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &processed),
        "applied",
        &[
            ("Assets:Gateway:Paystack:Clearing", "-50.00"),
            ("Liabilities:RefundsInTransit:{refund}", "50.00"),
        ],
    );
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &processed),
        "duplicate",
        &[],
    );
    let failed = replace(
        &fixture("paystack_refund_failed.json"),
        "T9171231_412325_3be2736c_n6tml",
        &pay.to_string(),
    );
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &failed),
        "applied",
        &[
            ("Liabilities:RefundsInTransit:{failing_refund}", "200.00"),
            ("Liabilities:Users:{user}:Available", "-200.00"),
        ],
    );
    // A dispute names the disputed charge in data.transaction.reference.
    let dispute = fixture("paystack_dispute_create.json");
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &dispute),
        "anomaly",
        &[],
    );
    let (u2, disputed) = (b.id("u2"), b.id("disputed"));
    b.completed_deposit(Gateway::Paystack, disputed, u2, money("58.00", "NGN"));
    let dispute = replace(&dispute, "v3mjfgbnc19v97x", &disputed.to_string());
    expect(
        &send(&mut b, Gateway::Paystack, PAYSTACK, &dispute),
        "applied",
        &[
            ("Assets:Chargebacks:{derived}", "58.00"),
            ("Assets:Gateway:Paystack:Clearing", "-58.00"),
        ],
    );
}

#[test]
fn flutterwave() {
    let mut b = books();
    let charge = fixture("flutterwave_charge_completed.json");
    expect(
        &send(&mut b, Gateway::Flutterwave, FLUTTERWAVE, &charge),
        "suspense",
        &[
            ("Assets:Gateway:Flutterwave:Clearing", "25000.00"),
            ("Liabilities:Suspense", "-25000.00"),
        ],
    );
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Flutterwave, pay, user, money("25000.00", "NGN"));
    let matched = replace(
        &charge,
        "\"reference\": \"order_2026_05_24_001\"",
        &format!("\"reference\": \"{pay}\""),
    );
    let matched = replace(&matched, "chg_e1f3a2b1", "chg_e1f3a2b2");
    expect(
        &send(&mut b, Gateway::Flutterwave, FLUTTERWAVE, &matched),
        "applied",
        &[
            ("Assets:Gateway:Flutterwave:Clearing", "25000.00"),
            ("Liabilities:Users:{user}:Available", "-25000.00"),
        ],
    );
    expect(
        &send(&mut b, Gateway::Flutterwave, FLUTTERWAVE, &matched),
        "duplicate",
        &[],
    );
    // The static verif-hash the sample travels with is refused unless the ledger opted in.
    let d = b.deliver_signed(
        Gateway::Flutterwave,
        &headers(&[("verif-hash", FLUTTERWAVE)]),
        &matched,
    );
    expect(&d, "unauthorized", &[]);
    // Cross-gateway: naming a Fincra deposit.
    let (u2, fincra_deposit) = (b.id("u2"), b.id("fincra_deposit"));
    b.pending_deposit(
        Gateway::Fincra,
        fincra_deposit,
        u2,
        money("25000.00", "NGN"),
    );
    let cross = replace(
        &charge,
        "order_2026_05_24_001\"",
        &format!("{fincra_deposit}\""),
    );
    let cross = replace(&cross, "chg_e1f3a2b1", "chg_e1f3a2b3");
    expect(
        &send(&mut b, Gateway::Flutterwave, FLUTTERWAVE, &cross),
        "suspense",
        &[
            ("Assets:Gateway:Flutterwave:Clearing", "25000.00"),
            ("Liabilities:Suspense", "-25000.00"),
        ],
    );
}

#[test]
fn fincra() {
    let mut b = books();
    // The checkout charge's reference is a UUID: unknown to this ledger, what Fincra settles (amountToSettle
    // 100, the 101.51 paid less the 1.51 fee) is held.
    let charge = fixture("fincra_charge_successful.json");
    expect(
        &send(&mut b, Gateway::Fincra, FINCRA, &charge),
        "suspense",
        &[
            ("Assets:Gateway:Fincra:Clearing", "100.00"),
            ("Liabilities:Suspense", "-100.00"),
        ],
    );
    let mut b = books();
    let user = b.id("user");
    let pay = Uuid::parse_str("31c1169c-d535-4e0b-90eb-a03a99c2f334").unwrap();
    b.name(pay, "deposit");
    b.pending_deposit(Gateway::Fincra, pay, user, money("101.51", "NGN"));
    expect(
        &send(&mut b, Gateway::Fincra, FINCRA, &charge),
        "applied",
        &[
            ("Assets:Gateway:Fincra:Clearing", "100.00"),
            ("Expenses:GatewayFees", "1.51"),
            ("Liabilities:Users:{user}:Available", "-101.51"),
        ],
    );
    expect(
        &send(&mut b, Gateway::Fincra, FINCRA, &charge),
        "duplicate",
        &[],
    );
    expect(
        &send(&mut b, Gateway::Fincra, "wrong", &charge),
        "unauthorized",
        &[],
    );
    // The published payout's figures disagree (212000 charged, 500 received, fee 150) and it names no
    // customerReference: an anomaly, nothing booked.
    let payout = fixture("fincra_payout_successful.json");
    expect(
        &send(&mut b, Gateway::Fincra, FINCRA, &payout),
        "anomaly",
        &[],
    );
}

#[test]
fn cmi() {
    let mut b = books();
    let user = b.id("user");
    let pay = Uuid::parse_str("7d0c4e2a-5b1f-4c3e-9a8d-2f6b1e0c9d41").unwrap();
    b.name(pay, "deposit");
    b.pending_deposit(Gateway::Cmi, pay, user, money("120.50", "MAD"));
    // Failures first, then the success, for one oid: normal for CMI.
    expect(
        &send(&mut b, Gateway::Cmi, CMI, &fixture("cmi_failure.txt")),
        "applied",
        &[],
    );
    let success = fixture("cmi_success.txt");
    expect(
        &send(&mut b, Gateway::Cmi, CMI, &success),
        "applied",
        &[
            ("Assets:Gateway:CMI:Clearing", "120.50"),
            ("Liabilities:Users:{user}:Available", "-120.50"),
        ],
    );
    expect(&send(&mut b, Gateway::Cmi, CMI, &success), "duplicate", &[]);
    let mut wrong = books();
    wrong.secrets.cmi_store_key = Some("NotTheStoreKey".into());
    expect(
        &send(&mut wrong, Gateway::Cmi, CMI, &success),
        "unauthorized",
        &[],
    );
    // A NestPay bank's own 3-D return (no ProcReturnCode: no payment outcome): authentic, ignored.
    expect(
        &send(
            &mut b,
            Gateway::Cmi,
            CMI,
            &fixture("cmi_nestpay_bank_return.txt"),
        ),
        "ignored",
        &[],
    );
    // Cross-gateway: a CMI success naming a Tap deposit is held, not credited to it.
    let (u2, tap_deposit) = (b.id("u2"), b.id("tap_deposit"));
    b.pending_deposit(Gateway::Tap, tap_deposit, u2, money("80.00", "MAD"));
    let oid = tap_deposit.to_string();
    let form = ledger_gateway::cmi::form_body(
        &[
            ("clientid", "600001234"),
            ("oid", &oid),
            ("amount", "80.00"),
            ("currency", "504"),
            ("ProcReturnCode", "00"),
            ("Response", "Approved"),
            ("TransId", "26339VXYH99999"),
            ("hashAlgorithm", "ver3"),
            ("encoding", "UTF-8"),
        ],
        CMI,
    );
    expect(&send(&mut b, Gateway::Cmi, CMI, &form), "anomaly", &[]);
}

#[test]
fn tap() {
    let mut b = books();
    // As published: reference.transaction "txn_0001" is not ours; the captured SAR 1.00 is held.
    let captured = fixture("tap_charge_captured.json");
    expect(
        &send(&mut b, Gateway::Tap, TAP, &captured),
        "suspense",
        &[
            ("Assets:Gateway:Tap:Clearing", "1.00"),
            ("Liabilities:Suspense", "-1.00"),
        ],
    );
    let declined = fixture("tap_charge_declined.json");
    expect(&send(&mut b, Gateway::Tap, TAP, &declined), "anomaly", &[]);
    // Matched to deposits of ours (another charge id each: the published ones are already recorded).
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Tap, pay, user, money("1.00", "SAR"));
    let matched = replace(&captured, "\"txn_0001\"", &format!("\"{pay}\""));
    let matched = replace(
        &matched,
        "chg_TS05A4120230736x9K22710693",
        "chg_TS05A4120230736x9K22710694",
    );
    expect(
        &send(&mut b, Gateway::Tap, TAP, &matched),
        "applied",
        &[
            ("Assets:Gateway:Tap:Clearing", "1.00"),
            ("Liabilities:Users:{user}:Available", "-1.00"),
        ],
    );
    expect(&send(&mut b, Gateway::Tap, TAP, &matched), "duplicate", &[]);
    expect(
        &send(&mut b, Gateway::Tap, "sk_test_wrong", &matched),
        "unauthorized",
        &[],
    );
    let (u2, declined_pay) = (b.id("u2"), b.id("declined_deposit"));
    b.pending_deposit(Gateway::Tap, declined_pay, u2, money("10.00", "AED"));
    let declined = replace(&declined, "\"txn_0001\"", &format!("\"{declined_pay}\""));
    let declined = replace(
        &declined,
        "chg_TS03A2220231551Ha3j1408926",
        "chg_TS03A2220231551Ha3j1408927",
    );
    expect(&send(&mut b, Gateway::Tap, TAP, &declined), "applied", &[]);
    // Cross-gateway: a Tap capture naming a CMI deposit is held.
    let (u3, cmi_deposit) = (b.id("u3"), b.id("cmi_deposit"));
    b.pending_deposit(Gateway::Cmi, cmi_deposit, u3, money("1.00", "SAR"));
    let cross = replace(&captured, "\"txn_0001\"", &format!("\"{cmi_deposit}\""));
    let cross = replace(
        &cross,
        "chg_TS05A4120230736x9K22710693",
        "chg_TS05A4120230736x9K22710695",
    );
    expect(
        &send(&mut b, Gateway::Tap, TAP, &cross),
        "suspense",
        &[
            ("Assets:Gateway:Tap:Clearing", "1.00"),
            ("Liabilities:Suspense", "-1.00"),
        ],
    );
}
