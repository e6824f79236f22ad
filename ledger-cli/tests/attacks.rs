//! The HTTP surface tried as an attacker would (issue 9, items 1-5, 9, 11 and 12), through the real
//! `escrow-ledger serve` binary on a fresh database. Each test was written against the code that had the
//! hole and seen failing first.

use std::io::Write as _;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use ledger_core::aggregates::payment::{PaymentState, PaymentStatus};
use ledger_core::{
    Account, Actor, AggState, Balances, Command, CommandEnvelope, Currency, Event, Gateway, Money,
    StreamId,
};
use ledger_gateway::verify::{sign_sha512_hex, sign_timestamped};
use ledger_store::testdb::TestDb;
use ledger_store::{Executor, ExecutorConfig};
use sha2::Sha256;
use uuid::Uuid;

const BACKEND_KEY: &str = "backend-key-0123456789";
const WORKER_KEY: &str = "payout-worker-key-0123456789";
const STRIPE_SECRET: &str = "whsec_attacks";
const PAYSTACK_SECRET: &str = "sk_test_attacks";
const FLUTTERWAVE_HASH: &str = "flw-secret-hash-attacks";
const FINCRA_SECRET: &str = "fincra-webhook-key-attacks";
const CALLBACK_SECRET: &str = "in-house-attacks";

/// Every secret and the backend key, for ledger `default` (the payout worker's key comes from the
/// environment: `ESCROW_LEDGER_PAYOUT_WORKER_KEY`).
fn full_config() -> String {
    format!(
        "[ledgers.default]\napi_key = \"{BACKEND_KEY}\"\n\
         stripe_secret = \"{STRIPE_SECRET}\"\npaystack_secret = \"{PAYSTACK_SECRET}\"\n\
         flutterwave_hash = \"{FLUTTERWAVE_HASH}\"\nfincra_secret = \"{FINCRA_SECRET}\"\n\
         callback_secret = \"{CALLBACK_SECRET}\"\n"
    )
}

struct Server {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

fn write_temp(text: &str, suffix: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("escrow-attacks-{}.{suffix}", Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The serve command line (not started): config file, environment, stderr into a file we can read.
fn serve_process(
    url: &str,
    port: u16,
    config: &str,
    env: &[(&str, &str)],
) -> (Process, std::path::PathBuf) {
    let log = write_temp("", "log");
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_escrow-ledger"));
    cmd.args([
        "--database-url",
        url,
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--config")
    .arg(write_temp(config, "toml"))
    .env("ESCROW_LEDGER_LOG", "info")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd, log)
}

impl Server {
    async fn start(url: &str, config: &str) -> Server {
        Server::start_with(url, config, &[]).await
    }

    async fn start_with(url: &str, config: &str, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let (mut cmd, log) = serve_process(url, port, config, env);
        let server = Server {
            child: cmd.spawn().expect("the binary starts"),
            base: format!("http://127.0.0.1:{port}"),
            log,
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
        panic!("server did not answer /healthz: {}", server.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/ledgers/default/{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn executor(db: &TestDb) -> Executor {
    Executor::new(Arc::new(db.store()), "default", ExecutorConfig::default())
}

fn usd(text: &str) -> Money {
    Money::parse(text, Currency::USD).unwrap()
}

async fn deposit(ex: &Executor, user: Uuid, amount: Money, gateway: Gateway) -> Uuid {
    let id = Uuid::new_v4();
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: Actor::User(user),
        at: Utc::now(),
        command: Command::InitiateDeposit {
            payment_id: id,
            amount,
            gateway,
            fund: None,
        },
    };
    assert!(ex.execute(&env, None).await.unwrap().is_accepted());
    id
}

async fn payment(ex: &Executor, id: Uuid) -> PaymentState {
    match ex
        .load_stream_state(&StreamId::Payment(id))
        .await
        .unwrap()
        .0
    {
        AggState::Payment(p) => p,
        other => panic!("{other:?}"),
    }
}

/// Balances folded from every stored event (not from any read table).
async fn balances(db: &TestDb) -> Balances {
    let pool = ledger_store::connect(db.url()).await.unwrap();
    let rows: Vec<(String, String, i32, serde_json::Value)> = sqlx::query_as(
        "select stream_id, event_type, schema_version, payload from ledger.events where ledger_id = 'default' order by local_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut balances = Balances::default();
    for (stream, event_type, version, payload) in rows {
        let event =
            Event::from_stored(&stream.parse().unwrap(), &event_type, version, payload).unwrap();
        if let Some(entry) = event.entry() {
            balances.apply(entry);
        }
    }
    balances
}

fn wallet(b: &Balances, user: Uuid, currency: Currency) -> i128 {
    b.balance(&Account::UserAvailable { user }, currency).abs()
}

async fn events_count(db: &TestDb) -> i64 {
    let pool = ledger_store::connect(db.url()).await.unwrap();
    sqlx::query_scalar("select count(*) from ledger.events")
        .fetch_one(&pool)
        .await
        .unwrap()
}

async fn inbox_rows(db: &TestDb) -> Vec<(String, String, Vec<u8>)> {
    let pool = ledger_store::connect(db.url()).await.unwrap();
    sqlx::query_as("select disposition, detail, raw_body from ledger.inbox order by recorded_at")
        .fetch_all(&pool)
        .await
        .unwrap()
}

fn paystack_charge(data_id: i64, reference: Uuid, minor: i64, currency: &str) -> String {
    format!(
        r#"{{"event":"charge.success","data":{{"id":{data_id},"reference":"{reference}","amount":{minor},"currency":"{currency}","status":"success","fees":0,"paid_at":"2026-11-30T10:00:00.000Z"}}}}"#
    )
}

async fn post_paystack(
    client: &reqwest::Client,
    server: &Server,
    body: &str,
) -> (u16, serde_json::Value) {
    let r = client
        .post(server.url("callbacks/paystack"))
        .header(
            "x-paystack-signature",
            sign_sha512_hex(PAYSTACK_SECRET, body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn flutterwave_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(FLUTTERWAVE_HASH.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn command(
    client: &reqwest::Client,
    server: &Server,
    key: Option<&str>,
    idempotency_key: Option<&str>,
    body: &serde_json::Value,
) -> (u16, String) {
    let mut request = client.post(server.url("commands")).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(k) = idempotency_key {
        request = request.header("idempotency-key", k);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn initiate(user: Uuid, payment: Uuid, amount: &str, gateway: &str) -> serde_json::Value {
    serde_json::json!({"actor": {"kind": "user", "id": user}, "command": {"type": "initiate_deposit",
        "payment_id": payment, "amount": {"amount": amount, "currency": "USD"}, "gateway": gateway, "fund": null}})
}

/// Item 1: an authentic callback of gateway B naming a payment of gateway A moves nothing on that payment:
/// the money is held in suspense on B's clearing, with the payment it pointed at named. Flutterwave's static
/// `verif-hash` (which travels in every webhook) is refused unless the ledger opts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_acts_only_on_what_its_gateway_owns() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let user = Uuid::new_v4();
    let id = deposit(&ex, user, usd("10.00"), Gateway::Stripe).await;
    let server = Server::start(db.url(), &full_config()).await;
    let client = reqwest::Client::new();
    let (status, receipt) = post_paystack(
        &client,
        &server,
        &paystack_charge(7001, id, 100_000_000, "USD"),
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["disposition"], "suspense", "{receipt}");
    assert!(
        receipt["detail"]
            .as_str()
            .unwrap()
            .contains(&id.to_string()),
        "{receipt}"
    );
    assert_eq!(payment(&ex, id).await.status, PaymentStatus::Pending);
    let b = balances(&db).await;
    assert_eq!(
        wallet(&b, user, Currency::USD),
        0,
        "a Paystack callback credited a Stripe deposit"
    );
    assert_eq!(
        b.balance(&Account::Suspense, Currency::USD).abs(),
        100_000_000
    );
    assert_eq!(
        b.balance(&Account::GatewayClearing(Gateway::Paystack), Currency::USD),
        100_000_000
    );
    assert_eq!(
        b.balance(&Account::GatewayClearing(Gateway::Stripe), Currency::USD),
        0
    );
    // ... and it is an anomaly for a person, naming the payment it pointed at.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_escrow-ledger"))
        .args(["--database-url", db.url(), "anomalies", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id.to_string()) && l.contains("\"gateway\":\"paystack\"")),
        "`anomalies` does not list the Paystack callback naming Stripe payment {id}:\n{listed}"
    );

    // The static verif-hash alone is not a signature: 401 unless the ledger opted in.
    let fid = deposit(&ex, user, usd("10.00"), Gateway::Flutterwave).await;
    let body = format!(
        r#"{{"type":"charge.completed","data":{{"id":"chg_1","amount":10,"currency":"USD","status":"succeeded","reference":"{fid}"}}}}"#
    );
    let forged = client
        .post(server.url("callbacks/flutterwave"))
        .header("verif-hash", FLUTTERWAVE_HASH)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        401,
        "a body with only the static verif-hash was accepted"
    );
    assert_eq!(payment(&ex, fid).await.status, PaymentStatus::Pending);
}

/// Environment variables given to one server.
type Environment = Vec<(&'static str, &'static str)>;

/// Item 2: an empty or all-whitespace secret or key, from the file or the environment, stops the server
/// at start with the setting's name; it never switches authentication off. So does a payout worker's key
/// equal to the backend key (issue 19).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_secret_is_a_startup_error_naming_the_setting() {
    let db = TestDb::new().await;
    let cases: Vec<(String, Environment, &str)> = vec![
        (
            "[ledgers.default]\napi_key = \"\"\n".into(),
            vec![],
            "api_key",
        ),
        (
            "[ledgers.default]\nstripe_secret = \"  \"\n".into(),
            vec![],
            "stripe_secret",
        ),
        (
            "[ledgers.default]\nflutterwave_hash = \"\"\n".into(),
            vec![],
            "flutterwave_hash",
        ),
        (
            String::new(),
            vec![("ESCROW_LEDGER_PAYSTACK_SECRET", " \t")],
            "ESCROW_LEDGER_PAYSTACK_SECRET",
        ),
        (
            String::new(),
            vec![("ESCROW_LEDGER_API_KEY", "")],
            "ESCROW_LEDGER_API_KEY",
        ),
        // Issue 19: the payout worker's key equal to the backend key (it would get the backend's scope).
        (
            "[ledgers.default]\napi_key = \"same-key-0123456789\"\npayout_worker_key = \"same-key-0123456789\"\n"
                .into(),
            vec![],
            "payout_worker_key",
        ),
        (
            String::new(),
            vec![
                ("ESCROW_LEDGER_API_KEY", "same-key-0123456789"),
                ("ESCROW_LEDGER_PAYOUT_WORKER_KEY", "same-key-0123456789"),
            ],
            "ESCROW_LEDGER_PAYOUT_WORKER_KEY",
        ),
    ];
    for (config, env, setting) in cases {
        let (mut cmd, log) = serve_process(db.url(), free_port(), &config, &env);
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            status.is_some_and(|s| !s.success()),
            "serve started with an empty {setting} ({config:?} {env:?})"
        );
        assert!(
            text.contains(setting),
            "the error does not name {setting}: {text}"
        );
    }
}

/// Item 3: an API idempotency key shaped like a callback's dedupe key cannot swallow the genuine callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_idempotency_keys_never_collide_with_callback_dedupe_keys() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let user = Uuid::new_v4();
    let id = deposit(&ex, user, usd("10.00"), Gateway::Paystack).await;
    let server = Server::start(db.url(), &full_config()).await;
    let client = reqwest::Client::new();
    // Exactly the dedupe key the genuine callback below gets (ledger_gateway::plan::dedupe_key): without the
    // `api:` namespace of HTTP keys, the command's outcome would answer the callback as a duplicate.
    let key = format!("callback:paystack:{id}:deposit_succeeded:7002:10.00 USD");
    let (status, text) = command(
        &client,
        &server,
        Some(BACKEND_KEY),
        Some(&key),
        &initiate(user, Uuid::new_v4(), "1.00", "paystack"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, receipt) =
        post_paystack(&client, &server, &paystack_charge(7002, id, 1000, "USD")).await;
    assert_eq!(status, 200);
    assert_eq!(receipt["disposition"], "applied", "{receipt}");
    assert_eq!(payment(&ex, id).await.status, PaymentStatus::Completed);
    assert_eq!(wallet(&balances(&db).await, user, Currency::USD), 1000);
}

/// Issue 19, finding 6: a callback planned on a stale cache is labelled by what committed. `serve` has the
/// deposit cached as pending (it initiated it); another process confirms it; a Stripe `charge.failed` then
/// arrives: planned as a failure of a pending deposit ("applied"), decided again on the fresh state it is a
/// late failure after success, an anomaly. The answer and the inbox row must both say `anomaly`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_planned_on_a_stale_cache_is_labelled_by_its_committed_outcome() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let server = Server::start(db.url(), &full_config()).await;
    let client = reqwest::Client::new();
    let (user, id) = (Uuid::new_v4(), Uuid::new_v4());
    let (status, text) = command(
        &client,
        &server,
        Some(BACKEND_KEY),
        Some("stale-1"),
        &initiate(user, id, "10.00", "stripe"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let confirm = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: Actor::Gateway(Gateway::Stripe),
        at: Utc::now(),
        command: Command::ConfirmDeposit {
            payment_id: id,
            amount: usd("10.00"),
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        },
    };
    assert!(ex.execute(&confirm, None).await.unwrap().is_accepted());
    let body = format!(
        r#"{{"id":"evt_stale","type":"charge.failed","created":{},"data":{{"object":{{"id":"ch_stale","amount":1000,"currency":"usd","status":"failed","metadata":{{"payment_reference":"{id}"}}}}}}}}"#,
        Utc::now().timestamp()
    );
    let response = client
        .post(server.url("callbacks/stripe"))
        .header(
            "stripe-signature",
            sign_timestamped(STRIPE_SECRET, Utc::now().timestamp(), body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let receipt: serde_json::Value = response.json().await.unwrap();
    assert_eq!(receipt["disposition"], "anomaly", "{receipt}");
    let rows = inbox_rows(&db).await;
    let row = rows
        .iter()
        .find(|(_, _, raw)| raw == body.as_bytes())
        .expect("the delivery's inbox row");
    assert_eq!(row.0, "anomaly", "{row:?}");
    assert_eq!(payment(&ex, id).await.status, PaymentStatus::Completed);
}

/// Issue 19, finding 3 (gateway evidence): `verify --deep --gateway-config` authenticates every delivery again
/// from its kept signature and raw body; a delivery written beside `serve` (backed by a forged log entry, so
/// the commit-time check passes) does not verify and is named; a gateway command that came through no
/// delivery (an operator's) is listed as manual; with a wrong secret the genuine delivery is named too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_deep_authenticates_every_delivery_again_with_the_gateway_secrets() {
    use sha2::Digest as _;
    let db = TestDb::new().await;
    let ex = executor(&db);
    let server = Server::start(db.url(), &full_config()).await;
    let client = reqwest::Client::new();
    let user = Uuid::new_v4();
    let id = deposit(&ex, user, usd("10.00"), Gateway::Paystack).await;
    let (status, receipt) =
        post_paystack(&client, &server, &paystack_charge(9001, id, 1000, "USD")).await;
    assert_eq!(
        (status, receipt["disposition"].as_str()),
        (200, Some("applied")),
        "{receipt}"
    );
    drop(server);
    // An operator confirms another deposit as the gateway, without a delivery.
    let other = deposit(&ex, user, usd("5.00"), Gateway::Stripe).await;
    let manual = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor: Actor::Gateway(Gateway::Stripe),
        at: Utc::now(),
        command: Command::ConfirmDeposit {
            payment_id: other,
            amount: usd("5.00"),
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        },
    };
    assert!(ex.execute(&manual, None).await.unwrap().is_accepted());
    let config = write_temp(&full_config(), "toml");
    let deep = |config: &std::path::Path| {
        let out = Process::new(env!("CARGO_BIN_EXE_escrow-ledger"))
            .args([
                "--database-url",
                db.url(),
                "verify",
                "--deep",
                "--gateway-config",
            ])
            .arg(config)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = deep(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("MANUAL: command {}", manual.command_id)),
        "{out}"
    );
    // A wrong secret: the genuine delivery does not verify any more.
    let wrong = write_temp(
        &full_config().replace(PAYSTACK_SECRET, "sk_test_other"),
        "toml",
    );
    let (code, out) = deep(&wrong);
    assert!(code == Some(1) && out.contains("does not verify"), "{out}");
    // A delivery forged beside serve, backed by a forged DeliveryRecorded: signed with another secret.
    let body = paystack_charge(9002, Uuid::new_v4(), 1000, "USD");
    let forged = Uuid::new_v4();
    let signature = format!(
        "x-paystack-signature: {}",
        sign_sha512_hex("sk_guess", body.as_bytes())
    );
    let sha: String = sha2::Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let payload = serde_json::json!({"type": "DeliveryRecorded", "delivery_id": forged, "gateway": "paystack",
        "dedupe_key": "forged", "disposition": "ignored", "body_sha256": sha});
    let sql = format!(
        "set local role escrow_writer;
         insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
         values ('default', 'outcome-{forged}', 1, gen_random_uuid(), 'DeliveryRecorded', 1, '{payload}', '{{}}');
         insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type, dedupe_key,
                                   disposition, detail, raw_body, received_at, signature)
         values ('default', '{forged}', 'paystack', '9002', 'charge.success', 'forged', 'ignored', '',
                 convert_to('{}', 'UTF8'), now(), '{signature}');",
        body.replace('\'', "''")
    );
    let pool = ledger_store::connect(db.url()).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit()
        .await
        .expect("a backed forgery passes the commit-time check");
    // Sequenced in its own transaction (Citus refuses a query on placements this transaction modified as
    // another user).
    sqlx::raw_sql("set role escrow_writer; select ledger.sequence('default', 5000); reset role")
        .execute(&pool)
        .await
        .unwrap();
    let (code, out) = deep(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("delivery {forged}")) && out.contains("does not verify"),
        "{out}"
    );
}

/// The port of `server` (its base URL's).
fn port_of(server: &Server) -> u16 {
    server.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// Reads from `stream` until the peer closes it (`Ok(true)`), or `within` passes (`Ok(false)`).
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read as _;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
            ))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
    false
}

/// Issue 19, finding 6: the connection cap, the header-read timeout and the idle timeout each hold (each
/// assertion fails when its limit is taken out of `listener::accept_loop`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_cap_header_timeout_and_idle_timeout_hold() {
    let db = TestDb::new().await;
    // Header-read timeout (the idle timeout far away): a request head that never ends is cut off.
    let config = |header: u64, idle: u64| {
        format!(
            "header_read_timeout_ms = {header}\nidle_timeout_ms = {idle}\n{}",
            full_config()
        )
    };
    let server = Server::start(db.url(), &config(400, 60_000)).await;
    let port = port_of(&server);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)),
        "a connection that never finished its request head was kept open"
    );
    drop(server);
    // Idle timeout (the next request head may take long): a keep-alive connection with no traffic after
    // its answer is closed.
    let server = Server::start(db.url(), &config(30_000, 600)).await;
    let port = port_of(&server);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)),
        "an idle keep-alive connection was kept open"
    );
    // Connection cap (its own server: the request head timeout is the default 5 s): with two connections
    // open and silent, a third is not served until one of them closes.
    let capped = Server::start(db.url(), &format!("connections_max = 2\n{}", full_config())).await;
    let port = port_of(&capped);
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut held: Vec<std::net::TcpStream> = (0..2).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut third = connect();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1_000)))
        .unwrap();
    let mut answer = Vec::new();
    use std::io::Read as _;
    let early = third.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "a third connection was served past connections_max = 2 ({early:?}: {})",
        String::from_utf8_lossy(&answer)
    );
    held.clear(); // frees both slots
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = third.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the waiting connection was not served once a slot was free: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(capped);
}

/// Item 4: keys have scopes; no HTTP key asserts a gateway actor; every command carries an idempotency key
/// or a command id; the server stamps `at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_keys_have_scopes_and_none_can_act_as_a_gateway() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let user = Uuid::new_v4();
    let id = deposit(&ex, user, usd("10.00"), Gateway::Stripe).await;
    let server = Server::start_with(
        db.url(),
        &full_config(),
        &[("ESCROW_LEDGER_PAYOUT_WORKER_KEY", WORKER_KEY)],
    )
    .await;
    let client = reqwest::Client::new();
    let confirm = serde_json::json!({"actor": {"kind": "gateway", "id": "stripe"}, "command": {"type": "confirm_deposit",
        "payment_id": id, "amount": {"amount": "50000.00", "currency": "USD"}, "gateway_fee": null}});
    let (status, text) = command(&client, &server, Some(BACKEND_KEY), Some("gw-1"), &confirm).await;
    assert_eq!(
        status, 403,
        "the backend key asserted a gateway actor: {text}"
    );
    assert_eq!(wallet(&balances(&db).await, user, Currency::USD), 0);

    // The payout worker's key reads and claims the outbox, nothing else.
    let (status, _) = command(
        &client,
        &server,
        Some(WORKER_KEY),
        Some("w-1"),
        &initiate(user, Uuid::new_v4(), "1.00", "stripe"),
    )
    .await;
    assert_eq!(status, 403, "the payout worker's key sent a command");
    let claim = client
        .post(server.url("outbox/claim"))
        .bearer_auth(WORKER_KEY)
        .json(&serde_json::json!({"worker": "w1", "limit": 5, "lease_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(claim.status(), 200);

    // No idempotency key and no command id: refused, so that a retry can never apply twice.
    let before = events_count(&db).await;
    let (status, text) = command(
        &client,
        &server,
        Some(BACKEND_KEY),
        None,
        &initiate(user, Uuid::new_v4(), "1.00", "stripe"),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("Idempotency-Key"), "{text}");
    // A top-level command_id is enough, and a retry with it applies once.
    let mut with_id = initiate(user, Uuid::new_v4(), "1.00", "stripe");
    with_id["command_id"] = serde_json::json!(Uuid::new_v4());
    for _ in 0..2 {
        let (status, text) = command(&client, &server, Some(BACKEND_KEY), None, &with_id).await;
        assert_eq!(status, 200, "{text}");
    }
    assert_eq!(events_count(&db).await, before + 1);
    // Callers cannot backdate.
    let mut dated = initiate(user, Uuid::new_v4(), "1.00", "stripe");
    dated["at"] = serde_json::json!("2001-01-01T00:00:00Z");
    let (status, text) =
        command(&client, &server, Some(BACKEND_KEY), Some("dated-1"), &dated).await;
    assert_eq!(status, 422, "a caller set `at`: {text}");
}

/// Item 5: a second, different success for a completed deposit is held in suspense, never answered
/// "duplicate"; only the same movement (same transaction, same amount) is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_different_success_for_a_completed_deposit_is_never_dropped() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let user = Uuid::new_v4();
    let id = deposit(&ex, user, usd("200.00"), Gateway::Paystack).await;
    let server = Server::start(db.url(), &full_config()).await;
    let client = reqwest::Client::new();
    let first = paystack_charge(8001, id, 18_000, "USD");
    let second = paystack_charge(8002, id, 2_000, "USD");
    assert_eq!(
        post_paystack(&client, &server, &first).await.1["disposition"],
        "applied"
    );
    let (status, receipt) = post_paystack(&client, &server, &second).await;
    assert_eq!(status, 200);
    assert_eq!(
        receipt["disposition"], "suspense",
        "the second real payment: {receipt}"
    );
    for body in [&first, &second] {
        let (status, receipt) = post_paystack(&client, &server, body).await;
        assert_eq!(
            (status, receipt["disposition"].as_str()),
            (200, Some("duplicate")),
            "{receipt}"
        );
    }
    let b = balances(&db).await;
    assert_eq!(wallet(&b, user, Currency::USD), 18_000);
    assert_eq!(b.balance(&Account::Suspense, Currency::USD).abs(), 2_000);
}

/// Item 9: slow connections cannot starve `/healthz`; a database that is down answers 503 with
/// `Retry-After`, not 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_connections_do_not_starve_health_and_a_dead_database_answers_503() {
    raise_open_files_limit();
    let db = TestDb::new().await;
    let server = Server::start(db.url(), &full_config()).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..2000 {
        let Ok(mut s) = std::net::TcpStream::connect(&address) else {
            break;
        };
        let _ = s.write_all(
            b"POST /v1/ledgers/default/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{",
        );
        slow.push(s);
    }
    assert_eq!(slow.len(), 2000, "could not open the slow connections");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let took = started.elapsed();
    assert!(
        health.as_ref().is_ok_and(|r| r.status() == 200) && took < Duration::from_secs(1),
        "/healthz with 2000 slow connections open: {health:?} after {took:?}"
    );
    drop(slow);

    // The database goes away under the server.
    let admin = ledger_store::testdb::admin_url().await.unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database \"{}\" allow_connections false",
        db.name()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(db.name())
        .execute(&mut conn)
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(server.url("commands"))
        .bearer_auth(BACKEND_KEY)
        .header("idempotency-key", "down-1")
        .json(&initiate(Uuid::new_v4(), Uuid::new_v4(), "1.00", "stripe"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (
        r.status().as_u16(),
        r.headers().get("retry-after").is_some(),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database \"{}\" allow_connections true",
        db.name()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!((status, retry_after), (503, true), "database down");
}

/// Raises this test process's open-file limit to its hard limit (2,000 sockets need more than 1,024).
fn raise_open_files_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

/// Item 11 (HTTP): a NUL in a command answers 422 naming the field; an authentic callback is never 5xx
/// because of its content (its raw bytes are kept and it becomes an anomaly); control characters are
/// escaped in the logs; a 401 says only "unauthorized"; authentication comes before the ledger lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_bytes_and_refusals_leak_nothing_and_never_5xx() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let user = Uuid::new_v4();
    let server = Server::start(
        db.url(),
        &format!("[ledgers.default]\napi_key = \"{BACKEND_KEY}\"\npaystack_secret = \"{PAYSTACK_SECRET}\"\n"),
    )
    .await;
    let client = reqwest::Client::new();
    let id = deposit(&ex, user, usd("10.00"), Gateway::Paystack).await;
    let cancel = serde_json::json!({"actor": {"kind": "user", "id": user}, "command": {"type": "initiate_deposit",
        "payment_id": Uuid::new_v4(), "amount": {"amount": "1.00", "currency": "USD"}, "gateway": "stripe", "fund": null}});
    let body = serde_json::json!({"actor": {"kind": "admin", "id": Uuid::new_v4()}, "command": {"type": "record_suspense",
        "suspense_id": Uuid::new_v4(), "gateway": "stripe", "amount": {"amount": "1.00", "currency": "USD"},
        "reference": "ref\u{0}x", "reason": "r"}});
    let (status, text) = command(&client, &server, Some(BACKEND_KEY), Some("nul-1"), &body).await;
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("command.reference"),
        "the 422 does not name the field: {text}"
    );

    // A NUL and a line break in an authentic callback's identifiers: 200 anomaly, raw bytes kept, every time.
    let event = format!(
        r#"{{"event":"charge.success","data":{{"id":"77\u0000\nFORGED LOG LINE","reference":"{id}","amount":1000,"currency":"USD","status":"success"}}}}"#
    );
    for _ in 0..2 {
        let (status, receipt) = post_paystack(&client, &server, &event).await;
        assert_eq!(status, 200, "{receipt}");
        assert_eq!(receipt["disposition"], "anomaly", "{receipt}");
    }
    let rows = inbox_rows(&db).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(_, _, raw)| raw == event.as_bytes()));
    assert_eq!(payment(&ex, id).await.status, PaymentStatus::Pending);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED LOG LINE")),
        "a control character reached the log raw: {log}"
    );

    // 401s say only "unauthorized", and an unknown ledger is not told apart from a wrong key.
    let unconfigured = client
        .post(server.url("callbacks/stripe"))
        .header(
            "stripe-signature",
            sign_timestamped("x", Utc::now().timestamp(), b"{}"),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unconfigured.status(), 401);
    assert_eq!(
        unconfigured.text().await.unwrap(),
        r#"{"error":"unauthorized"}"#
    );
    let unknown = client
        .post(format!("{}/v1/ledgers/acme/commands", server.base))
        .json(&cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        401,
        "an unknown ledger answered before authentication"
    );
    assert_eq!(unknown.text().await.unwrap(), r#"{"error":"unauthorized"}"#);
    let (status, text) = command(&client, &server, Some("wrong"), Some("k"), &cancel).await;
    assert_eq!(
        (status, text.as_str()),
        (401, r#"{"error":"unauthorized"}"#)
    );
}

/// Item 12: the gateways' real payloads: Flutterwave v4 signed with `flutterwave-signature` (a numeric
/// `created_datetime`), Fincra collections carrying `amountReceived` and `reference`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_flutterwave_v4_and_fincra_collection_payloads_post_money() {
    let db = TestDb::new().await;
    let ex = executor(&db);
    let user = Uuid::new_v4();
    let ngn = |t: &str| Money::parse(t, Currency::from_code("NGN").unwrap()).unwrap();
    let flw = deposit(&ex, user, ngn("25000"), Gateway::Flutterwave).await;
    let fincra = deposit(&ex, user, ngn("101.51"), Gateway::Fincra).await;
    let server = Server::start(db.url(), &full_config()).await;
    let client = reqwest::Client::new();
    let v4 = format!(
        r#"{{"webhook_id":"wbk_1","timestamp":1732000000000,"type":"charge.completed","data":{{"id":"chg_e1f3a2b1","amount":25000,"currency":"NGN","status":"succeeded","reference":"{flw}","created_datetime":1732000000000}}}}"#
    );
    let r = client
        .post(server.url("callbacks/flutterwave"))
        .header(
            "flutterwave-signature",
            flutterwave_signature(v4.as_bytes()),
        )
        .body(v4)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["disposition"], "applied", "{receipt}");
    assert_eq!(payment(&ex, flw).await.status, PaymentStatus::Completed);

    let collection = format!(
        r#"{{"event":"charge.successful","data":{{"chargeReference":"fcr-bt-1","amountToSettle":100,"id":892892,"amount":101.51,"amountExpected":101.51,"amountReceived":101.51,"currency":"NGN","fee":1.51,"status":"success","reference":"{fincra}"}}}}"#
    );
    let r = client
        .post(server.url("callbacks/fincra"))
        .header(
            "signature",
            sign_sha512_hex(FINCRA_SECRET, collection.as_bytes()),
        )
        .body(collection)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["disposition"], "applied", "{receipt}");
    let p = payment(&ex, fincra).await;
    assert_eq!(
        (p.status, p.received_minor),
        (PaymentStatus::Completed, 10_151)
    );
    let b = balances(&db).await;
    assert_eq!(
        wallet(&b, user, Currency::from_code("NGN").unwrap()),
        2_500_000 + 10_151
    );
    assert_eq!(
        b.balance(
            &Account::GatewayClearing(Gateway::Fincra),
            Currency::from_code("NGN").unwrap()
        ),
        10_000,
        "the clearing account receives what Fincra settles (amountToSettle)"
    );
}
