//! Issue 20 end to end through `escrow-ledger serve`: each gateway's callback signed as it signs, on a
//! payment opened through /commands first, judged by `trial-balance` and by what the server answered.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use ledger_gateway::verify::{sign_sha512_hex, sign_timestamped};
use ledger_store::testdb::TestDb;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::cli;
use uuid::Uuid;

const API_KEY: &str = "rg-test-api-key-0123456789";
const PAYSTACK: &str = "sk_test_rg_paystack";
const FINCRA: &str = "rg-fincra-key";
const CMI: &str = "RgStoreKey2026x";
const TAP: &str = "sk_test_rgTap";
const STRIPE: &str = "whsec_rg";

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Process::new(env!("CARGO_BIN_EXE_escrow-ledger"))
            .args(["--database-url", db.url(), "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("ESCROW_LEDGER_API_KEY", API_KEY)
            .env("ESCROW_LEDGER_PAYSTACK_SECRET", PAYSTACK)
            .env("ESCROW_LEDGER_FINCRA_SECRET", FINCRA)
            .env("ESCROW_LEDGER_CMI_STORE_KEY", CMI)
            .env("ESCROW_LEDGER_TAP_SECRET", TAP)
            .env("ESCROW_LEDGER_STRIPE_SECRET", STRIPE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..400 {
            if reqwest::get(format!("{}/healthz", server.base))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not answer /healthz");
    }

    async fn command(&self, user: Uuid, command: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/ledgers/default/commands", self.base))
            .bearer_auth(API_KEY)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&json!({"actor": {"kind": "user", "id": user}, "command": command}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{command}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn deposit(&self, gateway: &str, amount: &str, currency: &str) -> (Uuid, Uuid) {
        let (user, payment) = (Uuid::new_v4(), Uuid::new_v4());
        self.command(
            user,
            json!({"type": "initiate_deposit", "payment_id": payment,
                   "amount": {"amount": amount, "currency": currency}, "gateway": gateway, "fund": null}),
        )
        .await;
        (user, payment)
    }

    /// Posts a callback; the status and the body as text.
    async fn callback(
        &self,
        gateway: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        content_type: &str,
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(format!(
                "{}/v1/ledgers/default/callbacks/{gateway}",
                self.base
            ))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// Credit-side balances (liabilities positive, assets and expenses negative), exact, by lower-cased account.
fn trial_balance(db: &TestDb) -> BTreeMap<(String, String), Decimal> {
    let out = cli(db, "default", &["trial-balance", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut balances = BTreeMap::new();
    for row in report["rows"].as_array().unwrap() {
        let amount =
            |side: &str| Decimal::from_str_exact(row[side].as_str().unwrap_or("0")).unwrap();
        *balances
            .entry((
                row["account"].as_str().unwrap().to_ascii_lowercase(),
                row["currency"].as_str().unwrap().to_string(),
            ))
            .or_default() += amount("credit") - amount("debit");
    }
    balances
}

fn get(tb: &BTreeMap<(String, String), Decimal>, account: &str, currency: &str) -> Decimal {
    tb.get(&(account.to_ascii_lowercase(), currency.to_string()))
        .copied()
        .unwrap_or_default()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn wallet(user: Uuid) -> String {
    format!("Liabilities:Users:{user}:Available")
}

#[tokio::test]
async fn a_fincra_collection_of_50_with_fee_0_50_leaves_wallet_50_and_clearing_49_50() {
    let db = TestDb::new().await;
    let server = Server::start(&db).await;
    let (user, payment) = server.deposit("fincra", "50.00", "NGN").await;
    let body = serde_json::to_vec(&json!({"event": "collection.successful", "data": {
        "sessionId": "ETZ-20261205-0001", "sourceCurrency": "NGN", "destinationCurrency": "NGN",
        "sourceAmount": 50, "destinationAmount": 50, "amountReceived": 49.5, "fee": 0.5,
        "status": "successful", "reference": payment}}))
    .unwrap();
    let sign = |b: &[u8]| vec![("signature", sign_sha512_hex(FINCRA, b))];
    let (status, answer) = server
        .callback("fincra", body.clone(), &sign(&body), "application/json")
        .await;
    assert_eq!(status, 200, "{answer}");
    let tb = trial_balance(&db);
    assert_eq!(get(&tb, &wallet(user), "NGN"), dec("50.00"));
    assert_eq!(
        get(&tb, "Assets:Gateway:Fincra:Clearing", "NGN"),
        dec("-49.50")
    );
    assert_eq!(get(&tb, "Expenses:GatewayFees", "NGN"), dec("-0.50"));
    let (status, answer) = server
        .callback("fincra", body.clone(), &sign(&body), "application/json")
        .await;
    assert!(
        status == 200 && answer.contains("duplicate"),
        "{status} {answer}"
    );
    assert_eq!(trial_balance(&db), tb, "the redelivery books nothing");
}

#[tokio::test]
async fn a_paystack_refund_requested_through_the_outbox_is_cleared_by_refund_processed() {
    let db = TestDb::new().await;
    let server = Server::start(&db).await;
    let (user, payment) = server.deposit("paystack", "50.00", "NGN").await;
    let signed = |obj: Value| {
        let body = serde_json::to_vec(&obj).unwrap();
        let headers = vec![("x-paystack-signature", sign_sha512_hex(PAYSTACK, &body))];
        (body, headers)
    };
    let (body, headers) = signed(
        json!({"event": "charge.success", "data": {"id": 3300112233_u64,
        "status": "success", "reference": payment, "amount": 5000, "currency": "NGN", "fees": 75,
        "paid_at": "2026-12-05T10:00:00.000Z"}}),
    );
    assert_eq!(
        server
            .callback("paystack", body, &headers, "application/json")
            .await
            .0,
        200
    );
    let refund = Uuid::new_v4();
    server
        .command(
            user,
            json!({"type": "request_card_refund", "refund_id": refund, "deposit_id": payment,
                   "amount": {"amount": "20.00", "currency": "NGN"}, "gateway": "paystack"}),
        )
        .await;
    let claimed: Value = server
        .http
        .post(format!("{}/v1/ledgers/default/outbox/claim", server.base))
        .bearer_auth(API_KEY)
        .json(&json!({"worker": "rg-worker", "limit": 10, "lease_seconds": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        claimed.to_string().contains(&refund.to_string()),
        "{claimed}"
    );
    // The worker sent it and keeps Paystack's refund id on it (the notice will carry it).
    let kept = server
        .http
        .post(format!(
            "{}/v1/ledgers/default/outbox/{refund}/gateway-reference",
            server.base
        ))
        .bearer_auth(API_KEY)
        .json(&json!({"gateway_reference": "132013318360"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200, "{}", kept.text().await.unwrap());
    let in_transit = format!("Liabilities:RefundsInTransit:{refund}");
    let before = trial_balance(&db);
    assert_eq!(get(&before, &in_transit, "NGN"), dec("20.00"));
    let (body, headers) = signed(
        json!({"event": "refund.processed", "data": {"status": "processed",
        "transaction_reference": payment, "refund_reference": "132013318360", "amount": "2000",
        "currency": "NGN", "processor": "card_processor", "integration": 412829, "domain": "test"}}),
    );
    let (status, answer) = server
        .callback("paystack", body.clone(), &headers, "application/json")
        .await;
    assert!(
        status == 200 && answer.contains("\"applied\""),
        "{status} {answer}"
    );
    let after = trial_balance(&db);
    assert_eq!(get(&after, &in_transit, "NGN"), Decimal::ZERO);
    assert_eq!(
        get(&before, "Assets:Gateway:Paystack:Clearing", "NGN")
            - get(&after, "Assets:Gateway:Paystack:Clearing", "NGN"),
        dec("-20.00"),
        "the clearing (a debit balance) went down by 20.00"
    );
    assert_eq!(get(&after, &wallet(user), "NGN"), dec("30.00"));
    let (status, answer) = server
        .callback("paystack", body, &headers, "application/json")
        .await;
    assert!(
        status == 200 && answer.contains("duplicate"),
        "{status} {answer}"
    );
    assert_eq!(trial_balance(&db), after);
}

#[tokio::test]
async fn a_cmi_callback_answered_postauth_posts_once_and_a_redelivery_gets_the_same_body() {
    let db = TestDb::new().await;
    let server = Server::start(&db).await;
    let (user, payment) = server.deposit("cmi", "120.50", "MAD").await;
    let oid = payment.to_string();
    let params = |code: &'static str, trans: &'static str| {
        vec![
            ("clientid", "600001234".to_string()),
            ("oid", oid.clone()),
            ("amount", "120.50".to_string()),
            ("currency", "504".to_string()),
            ("ProcReturnCode", code.to_string()),
            (
                "Response",
                if code == "00" { "Approved" } else { "Declined" }.to_string(),
            ),
            ("TransId", trans.to_string()),
            ("BillToName", "Amal|Idrissi".to_string()),
            ("hashAlgorithm", "ver3".to_string()),
            ("encoding", "UTF-8".to_string()),
        ]
    };
    let form = |p: &[(&str, String)], key: &str| {
        let pairs: Vec<(&str, &str)> = p.iter().map(|(n, v)| (*n, v.as_str())).collect();
        ledger_gateway::cmi::form_body(&pairs, key)
    };
    let ctype = "application/x-www-form-urlencoded";
    // A declined attempt first: recorded, APPROVED, nothing credited.
    let declined = form(&params("05", "26339VXYH00001"), CMI);
    let (status, answer) = server.callback("cmi", declined, &[], ctype).await;
    assert_eq!((status, answer.as_str()), (200, "APPROVED"));
    // A wrong store key: refused, nothing credited.
    let success = params("00", "26339VXYH00002");
    let (status, answer) = server
        .callback("cmi", form(&success, "NotTheKey"), &[], ctype)
        .await;
    assert_eq!((status, answer.as_str()), (401, "FAILURE"));
    assert_eq!(
        get(&trial_balance(&db), &wallet(user), "MAD"),
        Decimal::ZERO
    );
    let body = form(&success, CMI);
    let (status, answer) = server.callback("cmi", body.clone(), &[], ctype).await;
    assert_eq!((status, answer.as_str()), (200, "ACTION=POSTAUTH"));
    let tb = trial_balance(&db);
    assert_eq!(get(&tb, &wallet(user), "MAD"), dec("120.50"));
    assert_eq!(
        get(&tb, "Assets:Gateway:CMI:Clearing", "MAD"),
        dec("-120.50")
    );
    let (status, answer) = server.callback("cmi", body, &[], ctype).await;
    assert_eq!((status, answer.as_str()), (200, "ACTION=POSTAUTH"));
    assert_eq!(
        trial_balance(&db),
        tb,
        "the redelivery credits nothing more"
    );
    // An amount other than the deposit's (CMI's HASH does not bind values to names): nothing booked.
    let (other_payer, other) = server.deposit("cmi", "10.00", "MAD").await;
    let inflated = vec![
        ("oid", other.to_string()),
        ("amount", "600001234".to_string()),
        ("currency", "504".to_string()),
        ("ProcReturnCode", "00".to_string()),
        ("Response", "Approved".to_string()),
    ];
    for _ in 0..2 {
        let (status, answer) = server
            .callback("cmi", form(&inflated, CMI), &[], ctype)
            .await;
        assert_eq!((status, answer.as_str()), (200, "APPROVED"));
    }
    assert_eq!(
        get(&trial_balance(&db), &wallet(other_payer), "MAD"),
        Decimal::ZERO
    );
}

#[tokio::test]
async fn a_tap_kwd_capture_of_12_345_posts_12_345() {
    let db = TestDb::new().await;
    let server = Server::start(&db).await;
    let (user, payment) = server.deposit("tap", "12.345", "KWD").await;
    let charge = |id: &str, amount: f64, status: &str| {
        let text = format!(
            r#"{{"id":"{id}","object":"charge","status":"{status}","amount":{amount},"currency":"KWD","reference":{{"gateway":"123456789012","payment":"5512345678901234","transaction":"{payment}"}},"transaction":{{"created":"1764936000000"}},"metadata":{{"payment_reference":"{payment}"}},"response":{{"code":"000","message":"Captured"}}}}"#
        );
        text.into_bytes()
    };
    let body = charge("chg_TS0RG0000000000000000001", 12.345, "CAPTURED");
    let hash = ledger_gateway::tap::sign(&body, TAP).unwrap();
    let (status, answer) = server
        .callback(
            "tap",
            body.clone(),
            &[("hashstring", "0".repeat(64))],
            "application/json",
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = server
        .callback(
            "tap",
            body.clone(),
            &[("hashstring", hash.clone())],
            "application/json",
        )
        .await;
    assert!(
        status == 200 && answer.contains("\"applied\""),
        "{status} {answer}"
    );
    let tb = trial_balance(&db);
    assert_eq!(get(&tb, &wallet(user), "KWD"), dec("12.345"));
    assert_eq!(
        get(&tb, "Assets:Gateway:Tap:Clearing", "KWD"),
        dec("-12.345")
    );
    let (status, answer) = server
        .callback("tap", body, &[("hashstring", hash)], "application/json")
        .await;
    assert!(
        status == 200 && answer.contains("duplicate"),
        "{status} {answer}"
    );
    assert_eq!(trial_balance(&db), tb);
    // The unused secret keeps Stripe configured, as a real deployment's would be.
    let _ = sign_timestamped(STRIPE, 0, b"");
}
