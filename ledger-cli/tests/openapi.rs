//! Issue 22: `serve`'s OpenAPI 3.1 document is served without a key, printed alike by `escrow-ledger
//! openapi`, every `$ref` in it resolves, and each status the running server answers is documented for its
//! operation (with an error body). `.ci/run` also validates it with `openapi-spec-validator` (PyPI).

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use ledger_store::testdb::TestDb;
use serde_json::{Value, json};
use support::bin;
use uuid::Uuid;

const KEY: &str = "openapi-test-key-0123456789";
const WORKER_KEY: &str = "openapi-worker-key-0123456789";

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every `$ref` of `node` (local ones only).
fn refs(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer.strip_prefix('#')?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_printed_alike_resolves_and_lists_what_serve_answers() {
    let db = TestDb::new().await;
    let port = free_port();
    let _serve = Serve(
        bin()
            .args([
                "--database-url",
                db.url(),
                "serve",
                "--no-timers",
                "--no-events",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .env("ESCROW_LEDGER_API_KEY", KEY)
            .env("ESCROW_LEDGER_PAYOUT_WORKER_KEY", WORKER_KEY)
            .env("ESCROW_LEDGER_STRIPE_SECRET", "whsec_openapi_test_secret")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut served = None;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/openapi.json")).send().await {
            assert_eq!(r.status(), 200, "GET /openapi.json without a key");
            served = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let doc = served.expect("serve answered");
    let printed = bin().arg("openapi").output().unwrap();
    assert!(printed.status.success());
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(
        printed, doc,
        "`escrow-ledger openapi` prints what serve serves"
    );
    assert_eq!(doc["openapi"], "3.1.0");

    let mut all = Vec::new();
    refs(&doc, &mut all);
    let broken: Vec<&String> = all.iter().filter(|r| resolve(&doc, r).is_none()).collect();
    assert!(
        broken.is_empty(),
        "$refs that resolve to nothing: {broken:?}"
    );
    let text = doc.to_string();
    for name in [
        "initiate_deposit",
        "create_project",
        "fund_milestone",
        "request_payout",
        "record_settlement",
    ] {
        assert!(
            text.contains(name),
            "the document never names the command {name}"
        );
    }

    // Each status serve answers is listed for its operation, with a body for an error.
    let documented = |path: &str, method: &str, status: u16| {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "no {method} {path} in the document");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which its responses do not list"
        );
        if status >= 400 {
            assert!(
                response["content"].is_object(),
                "{method} {path} {status} has no body"
            );
        }
    };
    let commands = "/v1/ledgers/{ledger}/commands";
    let url = format!("{base}/v1/ledgers/default/commands");
    let user = json!({"kind": "user", "id": Uuid::new_v4()});
    let deposit = |amount: &str| {
        json!({"type": "initiate_deposit", "payment_id": Uuid::new_v4(),
               "amount": {"amount": amount, "currency": "USD"}, "gateway": "stripe", "fund": null})
    };
    let key = format!("openapi-{}", Uuid::new_v4());
    let post = |body: Value, auth: Option<&str>, idem: Option<String>| {
        let mut r = http.post(&url).json(&body);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        if let Some(k) = idem {
            r = r.header("Idempotency-Key", k);
        }
        r.send()
    };
    let cases = [
        (
            json!({"actor": user, "command": deposit("10.00")}),
            Some(KEY),
            Some(key.clone()),
            200,
        ),
        (
            json!({"actor": user, "command": deposit("11.00")}),
            Some(KEY),
            Some(key.clone()),
            409,
        ),
        (
            json!({"actor": user, "command": deposit("10.00")}),
            None,
            Some(format!("k-{}", Uuid::new_v4())),
            401,
        ),
        (
            json!({"actor": {"kind": "gateway", "id": "stripe"}, "command": deposit("1.00")}),
            Some(KEY),
            Some(format!("k-{}", Uuid::new_v4())),
            403,
        ),
        (
            json!({"actor": user, "command": {"type": "no_such_command"}}),
            Some(KEY),
            Some(format!("k-{}", Uuid::new_v4())),
            422,
        ),
        (
            json!({"actor": user, "command": deposit("10.00")}),
            Some(WORKER_KEY),
            Some(format!("k-{}", Uuid::new_v4())),
            403,
        ),
        (
            json!({"actor": user, "command": deposit("10.00")}),
            Some(KEY),
            Some(String::new()),
            400,
        ),
    ];
    for (body, auth, idem, want) in cases {
        let got = post(body.clone(), auth, idem)
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(got, want, "{body}");
        documented(commands, "post", got);
    }
    let refused = http
        .post(format!("{base}/v1/ledgers/default/callbacks/stripe"))
        .header("Stripe-Signature", "t=1,v1=00")
        .body(r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    documented("/v1/ledgers/{ledger}/callbacks/{gateway}", "post", refused);
    let unknown = http
        .post(format!("{base}/v1/ledgers/default/callbacks/nosuchgateway"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    documented("/v1/ledgers/{ledger}/callbacks/{gateway}", "post", unknown);
    for (path, concrete, method, auth) in [
        (
            "/v1/ledgers/{ledger}/outbox",
            "/v1/ledgers/default/outbox",
            "get",
            None,
        ),
        (
            "/v1/ledgers/{ledger}/outbox",
            "/v1/ledgers/default/outbox",
            "get",
            Some(WORKER_KEY),
        ),
        (
            "/v1/ledgers/{ledger}/events",
            "/v1/ledgers/default/events",
            "get",
            Some(KEY),
        ),
        (
            "/v1/ledgers/{ledger}/events",
            "/v1/ledgers/default/events",
            "get",
            Some(WORKER_KEY),
        ),
    ] {
        let mut r = http.get(format!("{base}{concrete}"));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        let got = r.send().await.unwrap().status().as_u16();
        documented(path, method, got);
    }
    let claimed = http
        .post(format!("{base}/v1/ledgers/default/outbox/claim"))
        .bearer_auth(WORKER_KEY)
        .json(&json!({"worker": "w1", "limit": 5}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(claimed, 200);
    documented("/v1/ledgers/{ledger}/outbox/claim", "post", claimed);
}
