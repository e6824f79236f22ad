//! Issue 20, "Gateways as they really deliver": each finding replayed through the real adapter, plan and
//! core (tests/support), judged by what it posts.

mod support;

use ledger_core::{Actor, Gateway};
use ledger_gateway::plan::dedupe_key;
use ledger_gateway::{AuthError, CallbackError, Secrets, authenticate_and_parse, parse};
use support::{Books, headers, money};

/// Fincra's published `collection.successful` (bank transfer to a virtual account), with `extra` fields
/// added or replaced.
fn collection(reference: &str, session: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut data = serde_json::json!({
        "business": "64f1a2b3c4d5e6f7a8b9c0d1", "virtualAccount": "65f1a2b3c4d5e6f7a8b9c0d2",
        "sessionId": session, "senderBankName": "Access Bank PLC", "senderAccountName": "Ada Obi",
        "sourceCurrency": "NGN", "destinationCurrency": "NGN", "sourceAmount": 50, "destinationAmount": 50,
        "description": "FT//abc :TRFFRM Ada Obi", "amountReceived": 49.5, "fee": 0.5, "customerName": "Ada Obi",
        "settlementDestination": "wallet", "status": "successful", "initiatedAt": "2026-12-05T10:00:00.000Z",
        "createdAt": "2026-12-05T10:00:01.000Z", "updatedAt": "2026-12-05T10:00:02.000Z", "reference": reference
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        data[k] = v;
    }
    serde_json::to_vec(&serde_json::json!({"event": "collection.successful", "data": data}))
        .unwrap()
}

#[test]
fn finding_1_a_fincra_collection_books_what_the_customer_paid_and_takes_the_fee_once() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Fincra, pay, user, money("50.00", "NGN"));
    let body = collection(&pay.to_string(), "ETZ-000001", serde_json::json!({}));
    let first = b.deliver(Gateway::Fincra, &body);
    assert_eq!(first.disposition, "applied", "{first:?}");
    assert_eq!(
        first.posts(),
        [
            ("Assets:Gateway:Fincra:Clearing", "49.50"),
            ("Expenses:GatewayFees", "0.50"),
            ("Liabilities:Users:{user}:Available", "-50.00"),
        ]
    );
    // The same delivery again books nothing.
    assert_eq!(b.deliver(Gateway::Fincra, &body).disposition, "duplicate");
    // Another collection (another session) for the same reference is money all the same: held, not dropped.
    let second = b.deliver(
        Gateway::Fincra,
        &collection(&pay.to_string(), "ETZ-000002", serde_json::json!({})),
    );
    assert_eq!(second.disposition, "suspense", "{second:?}");
    assert_eq!(
        second.posts(),
        [
            ("Assets:Gateway:Fincra:Clearing", "49.50"),
            ("Liabilities:Suspense", "-49.50"),
        ]
    );
}

#[test]
fn finding_1_fincra_amount_charged_1000_received_985_is_gross_1000_fee_15() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Fincra, pay, user, money("1000.00", "NGN"));
    let body = collection(
        &pay.to_string(),
        "ETZ-000003",
        serde_json::json!({"id": 5551234, "amountCharged": 1000, "sourceAmount": 1000,
                           "destinationAmount": 1000, "amountReceived": 985, "fee": 15}),
    );
    let d = b.deliver(Gateway::Fincra, &body);
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Fincra:Clearing", "985.00"),
            ("Expenses:GatewayFees", "15.00"),
            ("Liabilities:Users:{user}:Available", "-1000.00"),
        ]
    );
}

#[test]
fn finding_1_a_fincra_fee_that_disagrees_holds_what_fincra_settles_in_suspense() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Fincra, pay, user, money("50.00", "NGN"));
    let body = collection(
        &pay.to_string(),
        "ETZ-000004",
        serde_json::json!({"fee": 0.25}),
    );
    let d = b.deliver(Gateway::Fincra, &body);
    assert_eq!(d.disposition, "suspense", "{d:?}");
    assert!(
        d.detail.contains("0.25") && d.detail.contains("49.5"),
        "{}",
        d.detail
    );
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Fincra:Clearing", "49.50"),
            ("Liabilities:Suspense", "-49.50"),
        ]
    );
}

#[test]
fn finding_1_fincra_collections_without_data_id_are_told_apart() {
    let a = parse(
        Gateway::Fincra,
        &collection("r-1", "ETZ-1", serde_json::json!({})),
    )
    .unwrap();
    let same = parse(
        Gateway::Fincra,
        &collection("r-1", "ETZ-1", serde_json::json!({})),
    )
    .unwrap();
    let other_session = parse(
        Gateway::Fincra,
        &collection("r-1", "ETZ-2", serde_json::json!({})),
    )
    .unwrap();
    assert_eq!(dedupe_key(&a), dedupe_key(&same));
    assert_ne!(dedupe_key(&a), dedupe_key(&other_session));
    // Neither data.id nor sessionId: the exact body tells two collections apart, never "-".
    let bare = |description: &str| {
        format!(
            r#"{{"event":"collection.successful","data":{{"sourceCurrency":"NGN","destinationCurrency":"NGN","sourceAmount":50,"destinationAmount":50,"amountReceived":49.5,"fee":0.5,"status":"successful","description":"{description}","reference":"r-1"}}}}"#
        )
    };
    let x = parse(Gateway::Fincra, bare("first").as_bytes()).unwrap();
    let y = parse(Gateway::Fincra, bare("second").as_bytes()).unwrap();
    assert_ne!(dedupe_key(&x), dedupe_key(&y));
    assert!(!dedupe_key(&x).contains(":-:"), "{}", dedupe_key(&x));
}

fn fincra_payout(reference: &str, charged: &str, received: &str, fee: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"payout.successful","data":{{"id":14381,"amountCharged":{charged},"amountReceived":{received},"fee":{fee},"sourceCurrency":"NGN","destinationCurrency":"NGN","status":"successful","createdAt":"2026-12-05T10:00:00.000Z","updatedAt":"2026-12-05T10:00:05.000Z","customerReference":"{reference}","reason":"Payout was successful"}}}}"#
    )
    .into_bytes()
}

#[test]
fn finding_1_a_fincra_payout_books_its_fee_and_must_match_the_amount_sent() {
    let mut b = Books::new();
    let (user, pay, payout) = (b.id("user"), b.id("deposit"), b.id("payout"));
    b.completed_deposit(Gateway::Fincra, pay, user, money("500.00", "NGN"));
    b.payout(Gateway::Fincra, payout, user, money("200.00", "NGN"));
    let wrong = b.deliver(
        Gateway::Fincra,
        &fincra_payout(&payout.to_string(), "210", "190", "20"),
    );
    assert_eq!(wrong.disposition, "anomaly", "{wrong:?}");
    assert!(wrong.postings.is_empty());
    let right = b.deliver(
        Gateway::Fincra,
        &fincra_payout(&payout.to_string(), "210", "200", "10"),
    );
    assert_eq!(right.disposition, "applied", "{right:?}");
    assert_eq!(
        right.posts(),
        [
            ("Assets:Gateway:Fincra:Clearing", "-210.00"),
            ("Expenses:GatewayFees", "10.00"),
            ("Liabilities:PayoutsInTransit:{payout}", "200.00"),
        ]
    );
}

fn refund_processed(deposit: &str, refund_reference: &str, kobo: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"refund.processed","data":{{"status":"processed","transaction_reference":"{deposit}","refund_reference":"{refund_reference}","amount":"{kobo}","currency":"NGN","processor":"card_processor","customer":{{"first_name":"Ada","last_name":"Obi","email":"ada@example.com"}},"integration":412829,"domain":"test"}}}}"#
    )
    .into_bytes()
}

#[test]
fn finding_2_a_paystack_refund_names_the_charge_and_clears_the_refund_it_answers() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    let (first, second) = (b.id("refund_1"), b.id("refund_2"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("50.00", "NGN"));
    b.card_refund(Gateway::Paystack, first, pay, user, money("20.00", "NGN"));
    b.card_refund(Gateway::Paystack, second, pay, user, money("5.00", "NGN"));
    let body = refund_processed(&pay.to_string(), "132013318360", "2000");
    let d = b.deliver(Gateway::Paystack, &body);
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-20.00"),
            ("Liabilities:RefundsInTransit:{refund_1}", "20.00"),
        ]
    );
    assert_eq!(b.deliver(Gateway::Paystack, &body).disposition, "duplicate");
    // The second refund of the same deposit is another refund, not a duplicate of the first.
    let d2 = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "132013318361", "500"),
    );
    assert_eq!(d2.disposition, "applied", "{d2:?}");
    assert_eq!(
        d2.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-5.00"),
            ("Liabilities:RefundsInTransit:{refund_2}", "5.00"),
        ]
    );
}

fn transfer_completed(payout: &str, amount: &str, fee: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"transfer.completed","event.type":"Transfer","data":{{"id":408722,"account_number":"0123456789","bank_name":"GUARANTY TRUST BANK","bank_code":"058","fullname":"Ada Obi","created_at":"2026-12-05T10:00:00.000Z","currency":"NGN","debit_currency":"NGN","amount":{amount},"fee":{fee},"status":"SUCCESSFUL","reference":"{payout}","meta":null,"narration":"payout","approver":null,"complete_message":"Successful","requires_approval":0,"is_approved":1}}}}"#
    )
    .into_bytes()
}

#[test]
fn finding_3_a_fee_the_currency_cannot_hold_is_held_in_suspense_and_named() {
    let mut b = Books::new();
    let (user, pay, payout, control) = (
        b.id("user"),
        b.id("deposit"),
        b.id("payout"),
        b.id("control"),
    );
    b.completed_deposit(Gateway::Flutterwave, pay, user, money("500.00", "NGN"));
    b.payout(Gateway::Flutterwave, payout, user, money("300.20", "NGN"));
    b.payout(Gateway::Flutterwave, control, user, money("100.00", "NGN"));
    let d = b.deliver(
        Gateway::Flutterwave,
        &transfer_completed(&payout.to_string(), "300.2", "26.875"),
    );
    assert_eq!(d.disposition, "anomaly", "{d:?}");
    assert!(
        d.detail.contains("26.875") && d.detail.contains("-0.005"),
        "{}",
        d.detail
    );
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Flutterwave:Clearing", "-327.08"),
            ("Liabilities:PayoutsInTransit:{payout}", "300.20"),
            ("Liabilities:Suspense", "26.88"),
        ]
    );
    let ok = b.deliver(
        Gateway::Flutterwave,
        &transfer_completed(&control.to_string(), "100", "10.75"),
    );
    assert_eq!(ok.disposition, "applied", "{ok:?}");
    assert_eq!(
        ok.posts(),
        [
            ("Assets:Gateway:Flutterwave:Clearing", "-110.75"),
            ("Expenses:GatewayFees", "10.75"),
            ("Liabilities:PayoutsInTransit:{control}", "100.00"),
        ]
    );
}

#[test]
fn finding_4_flutterwave_v4_fractional_created_datetime_is_exact() {
    let body = br#"{"type":"charge.completed","data":{"id":"chg_frac","reference":"ref-1","amount":10,"currency":"NGN","status":"succeeded","created_datetime":1735116842.116}}"#;
    let c = parse(Gateway::Flutterwave, body).unwrap();
    assert_eq!(
        c.occurred_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Some("2024-12-25T08:54:02.116Z".to_string())
    );
}

#[test]
fn finding_4_a_refused_verif_hash_is_reported_as_such() {
    let secrets = Secrets {
        flutterwave_hash: Some("flw-hash".into()),
        ..Secrets::default()
    };
    let body = br#"{"event":"charge.completed","data":{"id":1,"tx_ref":"x","amount":1,"currency":"NGN","status":"successful"}}"#;
    let err = authenticate_and_parse(
        Gateway::Flutterwave,
        &headers(&[("verif-hash", "flw-hash")]),
        body,
        &secrets,
        0,
    )
    .unwrap_err();
    assert_eq!(
        err,
        CallbackError::Unauthorized(AuthError::StaticHashRefused)
    );
    assert!(err.to_string().contains("verif-hash"), "{err}");
}

fn stripe_dispute(status: &str, payment: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_dp_{status}","type":"charge.dispute.closed","created":1764936000,"data":{{"object":{{"id":"dp_1","object":"dispute","amount":2500,"currency":"usd","status":"{status}","metadata":{{"payment_reference":"{payment}"}},"reason":"fraudulent"}}}}}}"#
    )
    .into_bytes()
}

#[test]
fn finding_4_a_chargeback_won_after_lost_is_an_anomaly() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.completed_deposit(Gateway::Stripe, pay, user, money("25.00", "USD"));
    let opened = format!(
        r#"{{"id":"evt_dp_open","type":"charge.dispute.created","created":1764936000,"data":{{"object":{{"id":"dp_1","object":"dispute","amount":2500,"currency":"usd","status":"needs_response","metadata":{{"payment_reference":"{pay}"}}}}}}}}"#
    );
    assert_eq!(
        b.deliver(Gateway::Stripe, opened.as_bytes()).disposition,
        "applied"
    );
    let lost = b.deliver(Gateway::Stripe, &stripe_dispute("lost", &pay.to_string()));
    assert_eq!(lost.disposition, "applied", "{lost:?}");
    let won = b.deliver(Gateway::Stripe, &stripe_dispute("won", &pay.to_string()));
    assert_eq!(won.disposition, "anomaly", "{won:?}");
    assert!(won.postings.is_empty());
}

#[test]
fn finding_4_a_transfer_reversed_before_completion_returns_the_payouts_money() {
    let mut b = Books::new();
    let (user, pay, payout) = (b.id("user"), b.id("deposit"), b.id("payout"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("100.00", "NGN"));
    b.payout(Gateway::Paystack, payout, user, money("40.00", "NGN"));
    let body = format!(
        r#"{{"event":"transfer.reversed","data":{{"id":778899,"amount":4000,"currency":"NGN","status":"reversed","reference":"{payout}","reason":"Beneficiary bank unavailable"}}}}"#
    );
    let d = b.deliver(Gateway::Paystack, body.as_bytes());
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert_eq!(
        d.posts(),
        [
            ("Liabilities:PayoutsInTransit:{payout}", "40.00"),
            ("Liabilities:Users:{user}:Available", "-40.00"),
        ]
    );
    assert_eq!(
        b.balance(&ledger_core::Account::UserAvailable { user }, "NGN"),
        rust_decimal::Decimal::from_str_exact("-100.00").unwrap(),
        "the whole deposit is the wallet's again (credit balance)"
    );
}

#[test]
fn finding_4_a_4000_character_id_is_hashed_into_the_key_and_booked_once() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Stripe, pay, user, money("25.00", "USD"));
    let long = format!("pi_{}", "Ab3".repeat(1333));
    let body = format!(
        r#"{{"id":"evt_long","object":"event","type":"payment_intent.succeeded","created":1764936000,"data":{{"object":{{"id":"{long}","object":"payment_intent","amount":2500,"amount_received":2500,"currency":"usd","status":"succeeded","metadata":{{"payment_reference":"{pay}"}}}}}}}}"#
    );
    let c = parse(Gateway::Stripe, body.as_bytes()).expect("a long id is not a reason to refuse");
    assert!(dedupe_key(&c).len() < 256, "{}", dedupe_key(&c).len());
    let d = b.deliver(Gateway::Stripe, body.as_bytes());
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert_eq!(
        b.deliver(Gateway::Stripe, body.as_bytes()).disposition,
        "duplicate"
    );
    // A currency a few KB long: no money it can name, an anomaly under a bounded key.
    let (u2, p2) = (b.id("u2"), b.id("deposit_2"));
    b.pending_deposit(Gateway::Stripe, p2, u2, money("25.00", "USD"));
    let odd = format!(
        r#"{{"id":"evt_cur","object":"event","type":"payment_intent.succeeded","created":1764936000,"data":{{"object":{{"id":"pi_cur","object":"payment_intent","amount":2500,"amount_received":2500,"currency":"{}","status":"succeeded","metadata":{{"payment_reference":"{p2}"}}}}}}}}"#,
        "usd".repeat(1000)
    );
    let c = parse(Gateway::Stripe, odd.as_bytes()).unwrap();
    assert!(dedupe_key(&c).len() < 256, "{}", dedupe_key(&c).len());
    assert_eq!(
        b.deliver(Gateway::Stripe, odd.as_bytes()).disposition,
        "anomaly"
    );
}

#[test]
fn a_tap_charge_replayed_with_another_payments_reference_credits_nothing_more() {
    // Tap's hashstring does not sign reference.transaction: the copy verifies, but one charge id has one
    // money effect whichever payment it names.
    let mut b = Books::new();
    let (user, pay, victim_user, other) = (
        b.id("user"),
        b.id("deposit"),
        b.id("other_user"),
        b.id("other"),
    );
    b.pending_deposit(Gateway::Tap, pay, user, money("12.345", "KWD"));
    b.pending_deposit(Gateway::Tap, other, victim_user, money("12.345", "KWD"));
    let charge = |reference: &str, status: &str| {
        serde_json::to_vec(&serde_json::json!({
            "id": "chg_TS01A2B3C4D5E6F7G8H9I0J1K", "object": "charge", "status": status, "amount": 12.345,
            "currency": "KWD", "reference": {"gateway": "123456789012", "payment": "1234567890123456",
            "transaction": reference}, "transaction": {"created": "1764936000000"},
            "response": {"code": "000", "message": "Captured"}
        }))
        .unwrap()
    };
    let first = b.deliver(Gateway::Tap, &charge(&pay.to_string(), "CAPTURED"));
    assert_eq!(first.disposition, "applied", "{first:?}");
    let copy = b.deliver(Gateway::Tap, &charge(&other.to_string(), "CAPTURED"));
    assert_eq!(copy.disposition, "duplicate", "{copy:?}");
    assert!(b.payment(other).is_some_and(|p| p.received_minor == 0));
    // Two different failed charges are two events, not duplicates of each other.
    let (u3, p3) = (b.id("u3"), b.id("p3"));
    b.pending_deposit(Gateway::Tap, p3, u3, money("3.000", "KWD"));
    let declined = |id: &str| {
        serde_json::to_vec(
            &serde_json::json!({"id": id, "object": "charge", "status": "DECLINED",
            "amount": 3, "currency": "KWD", "reference": {"transaction": p3.to_string()},
            "response": {"code": "507", "message": "Declined"}}),
        )
        .unwrap()
    };
    let a = ledger_gateway::parse(Gateway::Tap, &declined("chg_A")).unwrap();
    let c = ledger_gateway::parse(Gateway::Tap, &declined("chg_B")).unwrap();
    assert_ne!(dedupe_key(&a), dedupe_key(&c));
}

#[test]
fn a_refund_paystack_made_unasked_is_recorded_from_the_wallet_or_held_in_suspense() {
    let mut b = Books::new();
    let (user, pay, payout) = (b.id("user"), b.id("deposit"), b.id("payout"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("50.00", "NGN"));
    // Refunded from Paystack's dashboard: the ledger requested nothing; the wallet still holds the money.
    let d = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "DASH-1", "2000"),
    );
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert!(
        d.detail.contains("never requested") || d.detail.contains("matches no card refund"),
        "{}",
        d.detail
    );
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-20.00"),
            ("Liabilities:Users:{user}:Available", "20.00"),
        ],
        "from the wallet to the card: the refund's own account nets to zero"
    );
    assert_eq!(
        b.payment(pay).map(|p| p.refunded_minor),
        Some(2000),
        "reserved on the deposit like any card refund"
    );
    // The rest leaves the wallet as a payout; a second unasked refund then finds no money in it.
    b.payout(Gateway::Paystack, payout, user, money("30.00", "NGN"));
    let held = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "DASH-2", "1000"),
    );
    assert_eq!(held.disposition, "anomaly", "{held:?}");
    assert_eq!(
        held.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-10.00"),
            ("Liabilities:Suspense", "10.00"),
        ]
    );
    assert_eq!(
        b.deliver(
            Gateway::Paystack,
            &refund_processed(&pay.to_string(), "DASH-2", "1000")
        )
        .disposition,
        "duplicate"
    );
}

#[test]
fn a_refund_notice_finds_its_refund_by_the_gateway_id_the_worker_recorded() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    let (first, second) = (b.id("refund_1"), b.id("refund_2"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("50.00", "NGN"));
    b.card_refund(Gateway::Paystack, first, pay, user, money("10.00", "NGN"));
    b.card_refund(Gateway::Paystack, second, pay, user, money("10.00", "NGN"));
    // The worker sent the second one first and recorded Paystack's id for it.
    b.run(
        Actor::System,
        ledger_core::Command::RecordGatewayReference {
            payment_id: second,
            gateway_reference: "RF-2".into(),
        },
    );
    let d = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "RF-2", "1000"),
    );
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-10.00"),
            ("Liabilities:RefundsInTransit:{refund_2}", "10.00"),
        ]
    );
    // A notice under another id is not taken for the refund known as RF-2.
    let other = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "RF-1", "1000"),
    );
    assert_eq!(
        other.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-10.00"),
            ("Liabilities:RefundsInTransit:{refund_1}", "10.00"),
        ]
    );
}

// ---- review findings (issue 20): each a test seen failing before its fix --------------------------------

#[test]
fn review_a_cmi_form_with_renamed_parameters_verifies_but_books_nothing_it_did_not_sign() {
    // CMI's ver3 HASH covers the values in name order, not the names: renaming parameters so that their
    // sorted order is kept leaves the hash valid. `clientid`'s value then reads as the amount.
    let mut b = Books::new();
    b.secrets = Secrets {
        cmi_store_key: Some("TEST1234".into()),
        ..Secrets::default()
    };
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Cmi, pay, user, money("120.50", "MAD"));
    let oid = pay.to_string();
    let signed = [
        ("amount", "120.50"),
        ("clientid", "600001234"),
        ("currency", "504"),
        ("oid", oid.as_str()),
        ("ProcReturnCode", "00"),
        ("Response", "Approved"),
        ("TransId", "T-1"),
    ];
    let hash = ledger_gateway::cmi::sign(&signed, "TEST1234");
    let renamed = [
        ("a", "120.50"),
        ("amount", "600001234"),
        ("currency", "504"),
        ("oid", oid.as_str()),
        ("ProcReturnCode", "00"),
        ("Response", "Approved"),
        ("TransId", "T-1"),
    ];
    assert_eq!(
        ledger_gateway::cmi::sign(&renamed, "TEST1234"),
        hash,
        "names are not signed"
    );
    let forged = ledger_gateway::cmi::form_body(&renamed, "TEST1234");
    let d = b.deliver_signed(Gateway::Cmi, &headers(&[]), &forged);
    assert_eq!(d.disposition, "anomaly", "{d:?}");
    assert!(d.postings.is_empty(), "{d:?}");
    // The genuine form books the deposit's amount once.
    let genuine = ledger_gateway::cmi::form_body(&signed, "TEST1234");
    let d = b.deliver_signed(Gateway::Cmi, &headers(&[]), &genuine);
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:CMI:Clearing", "120.50"),
            ("Liabilities:Users:{user}:Available", "-120.50"),
        ]
    );
    // A copy with TransId renamed (another movement id, same values) is the same movement: one per oid.
    let renamed_id = [
        ("amount", "120.50"),
        ("clientid", "600001234"),
        ("currency", "504"),
        ("oid", oid.as_str()),
        ("ProcReturnCode", "00"),
        ("Response", "Approved"),
        ("TransIdx", "T-1"),
    ];
    let copy = ledger_gateway::cmi::form_body(&renamed_id, "TEST1234");
    let d = b.deliver_signed(Gateway::Cmi, &headers(&[]), &copy);
    assert!(d.postings.is_empty(), "{d:?}");
}

#[test]
fn review_a_declined_cmi_form_cannot_be_renamed_into_a_success() {
    // A declined form holding a "00" elsewhere: renamed so that "00" reads as ProcReturnCode. Without the
    // value "Approved" in the form it is not a success.
    let mut b = Books::new();
    b.secrets = Secrets {
        cmi_store_key: Some("TEST1234".into()),
        ..Secrets::default()
    };
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.pending_deposit(Gateway::Cmi, pay, user, money("120.50", "MAD"));
    let oid = pay.to_string();
    let forged = [
        ("amount", "120.50"),
        ("currency", "504"),
        ("oid", oid.as_str()),
        ("ProcReturnCode", "00"),
        ("Response", "Declined"),
        ("TransId", "T-2"),
    ];
    let body = ledger_gateway::cmi::form_body(&forged, "TEST1234");
    let d = b.deliver_signed(Gateway::Cmi, &headers(&[]), &body);
    assert!(d.postings.is_empty(), "{d:?}");
    assert_ne!(d.disposition, "applied", "{d:?}");
}

#[test]
fn review_a_refund_notice_under_another_id_than_the_one_kept_still_clears_its_refund_once() {
    let mut b = Books::new();
    let (user, pay, refund) = (b.id("user"), b.id("deposit"), b.id("refund"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("100.00", "NGN"));
    b.card_refund(Gateway::Paystack, refund, pay, user, money("20.00", "NGN"));
    b.run(
        Actor::System,
        ledger_core::Command::RecordGatewayReference {
            payment_id: refund,
            gateway_reference: "3018284".into(),
        },
    );
    let d = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "132013318360", "2000"),
    );
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-20.00"),
            ("Liabilities:RefundsInTransit:{refund}", "20.00"),
        ],
        "{d:?}"
    );
    let wallet = ledger_core::Account::UserAvailable { user };
    assert_eq!(
        b.balance(&wallet, "NGN"),
        rust_decimal::Decimal::from_str_exact("-80.00").unwrap()
    );
}

#[test]
fn review_two_unasked_refunds_of_the_same_amount_are_two_refunds() {
    let mut b = Books::new();
    let (user, pay, asked) = (b.id("user"), b.id("deposit"), b.id("asked"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("100.00", "NGN"));
    for id in ["DASH-1", "DASH-2"] {
        let d = b.deliver(
            Gateway::Paystack,
            &refund_processed(&pay.to_string(), id, "2000"),
        );
        assert_eq!(d.disposition, "applied", "{id}: {d:?}");
        assert_eq!(
            d.posts(),
            [
                ("Assets:Gateway:Paystack:Clearing", "-20.00"),
                ("Liabilities:Users:{user}:Available", "20.00"),
            ],
            "{id}"
        );
    }
    // A requested refund closed by its notice, then an unasked one of the same amount: both booked.
    b.card_refund(Gateway::Paystack, asked, pay, user, money("20.00", "NGN"));
    let closed = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "RF-A", "2000"),
    );
    assert_eq!(closed.disposition, "applied", "{closed:?}");
    let unasked = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "RF-B", "2000"),
    );
    assert_eq!(
        unasked.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-20.00"),
            ("Liabilities:Users:{user}:Available", "20.00"),
        ],
        "{unasked:?}"
    );
}

#[test]
fn review_an_unasked_refund_the_deposit_cannot_take_is_held_not_refused() {
    let mut b = Books::new();
    let (user, pay) = (b.id("user"), b.id("deposit"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("10.00", "NGN"));
    // More than the deposit brought in: the money left all the same.
    let d = b.deliver(
        Gateway::Paystack,
        &refund_processed(&pay.to_string(), "DASH-9", "1500"),
    );
    assert_eq!(d.disposition, "anomaly", "{d:?}");
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Paystack:Clearing", "-15.00"),
            ("Liabilities:Suspense", "15.00"),
        ]
    );
}

#[test]
fn review_a_reversal_before_the_success_leaves_nothing_receivable() {
    let mut b = Books::new();
    let (user, pay, payout) = (b.id("user"), b.id("deposit"), b.id("payout"));
    b.completed_deposit(Gateway::Paystack, pay, user, money("100.00", "NGN"));
    b.payout(Gateway::Paystack, payout, user, money("40.00", "NGN"));
    let reversed = format!(
        r#"{{"event":"transfer.reversed","data":{{"id":778899,"amount":4000,"currency":"NGN","status":"reversed","reference":"{payout}"}}}}"#
    );
    let success = format!(
        r#"{{"event":"transfer.success","data":{{"id":778899,"amount":4000,"currency":"NGN","status":"success","reference":"{payout}","fee_charged":0}}}}"#
    );
    b.deliver(Gateway::Paystack, reversed.as_bytes());
    let late = b.deliver(Gateway::Paystack, success.as_bytes());
    assert!(
        late.postings.is_empty(),
        "the money went out and came back: {late:?}"
    );
    assert_eq!(
        b.balance(&ledger_core::Account::Receivable { user }, "NGN"),
        rust_decimal::Decimal::ZERO
    );
    assert_eq!(
        b.balance(
            &ledger_core::Account::GatewayClearing(Gateway::Paystack),
            "NGN"
        ),
        rust_decimal::Decimal::from_str_exact("100.00").unwrap()
    );
}

#[test]
fn review_a_fincra_cross_currency_payout_books_what_left_in_the_payouts_currency() {
    let mut b = Books::new();
    let (user, pay, payout) = (b.id("user"), b.id("deposit"), b.id("payout"));
    b.completed_deposit(Gateway::Fincra, pay, user, money("300000.00", "NGN"));
    b.payout(Gateway::Fincra, payout, user, money("211850.00", "NGN"));
    let body = format!(
        r#"{{"event":"payout.successful","data":{{"id":14390,"amountCharged":212000,"amountReceived":500,"fee":150,"rate":0.0019,"sourceCurrency":"NGN","destinationCurrency":"GBP","status":"successful","customerReference":"{payout}"}}}}"#
    );
    let d = b.deliver(Gateway::Fincra, body.as_bytes());
    assert_eq!(d.disposition, "applied", "{d:?}");
    assert_eq!(
        d.posts(),
        [
            ("Assets:Gateway:Fincra:Clearing", "-212000.00"),
            ("Expenses:GatewayFees", "150.00"),
            ("Liabilities:PayoutsInTransit:{payout}", "211850.00"),
        ]
    );
}

#[test]
fn review_suspense_says_when_a_reported_fee_was_not_deducted() {
    let mut b = Books::new();
    let body = br#"{"event":"charge.completed","data":{"id":99001,"tx_ref":"not-ours","amount":1000,"currency":"NGN","app_fee":26.875,"status":"successful"}}"#;
    let d = b.deliver(Gateway::Flutterwave, body);
    assert_eq!(d.disposition, "suspense", "{d:?}");
    assert!(d.detail.contains("26.875"), "{}", d.detail);
}
