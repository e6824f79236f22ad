//! Issue 21, events out, through the real binary: NATS JetStream (a nats-server this test starts, JetStream on,
//! its own store), the relay killed and NATS restarted mid-run, signed webhooks with retries, dead letters,
//! filters and rotation, and the pull feed under concurrent writers.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ledger_core::{Account, Side};
use ledger_store::testdb::TestDb;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Sha256;
use std::str::FromStr;
use support::{bin, cli};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server with JetStream on a free port and a store of its own (kept across restarts).
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nats {
    fn start() -> Nats {
        let dir = std::env::temp_dir().join(format!("escrow-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = Nats {
            child: None,
            port: free_port(),
            dir,
        };
        nats.spawn();
        nats
    }

    fn spawn(&mut self) {
        let child = Process::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (apt install nats-server; .ci/run installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (position, event id) of every sequenced event, in order.
async fn log(db: &TestDb) -> Vec<(i64, String)> {
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let rows: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
        "select s.position, e.event_id from ledger.sequence s
           join ledger.events e on e.ledger_id = s.ledger_id and e.local_id = s.local_id
          where s.ledger_id = 'default' order by s.position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.into_iter().map(|(p, e)| (p, e.to_string())).collect()
}

/// Every message of stream ESCROW: (Nats-Msg-Id, body).
async fn messages(url: &str) -> Vec<(String, Value)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream("ESCROW").await.unwrap();
    let info = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if info.messages == 0 {
        return out;
    }
    for seq in info.first_sequence..=info.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&m.payload).unwrap()));
    }
    out
}

/// Every event delivered exactly once, in position order, with the log's ids, and every posting's balance
/// after it equal to the running balance of the postings delivered before.
fn assert_exactly_the_log(delivered: &[(String, Value)], log: &[(i64, String)]) {
    let positions: Vec<i64> = delivered
        .iter()
        .map(|(_, m)| m["position"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = log.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions, expected,
        "one message per event, in position order"
    );
    let ids: Vec<&str> = delivered.iter().map(|(id, _)| id.as_str()).collect();
    let log_ids: Vec<&str> = log.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(ids, log_ids, "Nats-Msg-Id is the log's event id");
    let mut running: HashMap<(String, String), Decimal> = HashMap::new();
    let mut entries = 0;
    for (_, m) in delivered {
        let Some(entry) = m.get("entry") else {
            continue;
        };
        entries += 1;
        let currency = entry["currency"].as_str().unwrap().to_string();
        for p in entry["postings"].as_array().unwrap() {
            let name = p["account"].as_str().unwrap();
            let account = Account::from_str(name).unwrap();
            let amount = Decimal::from_str_exact(p["amount"].as_str().unwrap()).unwrap();
            let signed = match (p["side"].as_str().unwrap(), account.normal_side()) {
                ("debit", Side::Debit) | ("credit", Side::Credit) => amount,
                _ => -amount,
            };
            *running
                .entry((name.to_string(), currency.clone()))
                .or_default() += signed;
        }
        for p in entry["postings"].as_array().unwrap() {
            let key = (p["account"].as_str().unwrap().to_string(), currency.clone());
            let after = Decimal::from_str_exact(p["balance_after"].as_str().unwrap()).unwrap();
            assert_eq!(
                after, running[&key],
                "balance after position {} of {}",
                m["position"], key.0
            );
        }
    }
    assert!(entries > 0, "the demo moves money");
}

#[tokio::test]
async fn the_demo_arrives_once_in_order_with_its_balances_and_a_rerun_adds_nothing() {
    let db = TestDb::new().await;
    let nats = Nats::start();
    ok(cli(&db, "default", &["demo"]));
    ok(cli(
        &db,
        "default",
        &["events", "run", "--nats", &nats.url(), "--once"],
    ));
    let first = messages(&nats.url()).await;
    assert_exactly_the_log(&first, &log(&db).await);
    ok(cli(
        &db,
        "default",
        &["events", "run", "--nats", &nats.url(), "--once"],
    ));
    assert_eq!(
        messages(&nats.url()).await.len(),
        first.len(),
        "the cursor is kept"
    );
    // A second story: only its events arrive, positions continuing, balances cumulative.
    ok(cli(&db, "default", &["demo"]));
    ok(cli(
        &db,
        "default",
        &["events", "run", "--nats", &nats.url(), "--once"],
    ));
    assert_exactly_the_log(&messages(&nats.url()).await, &log(&db).await);
    let status = ok(cli(&db, "default", &["events", "status", "--json"]));
    assert!(status.contains("\"backlog\":0"), "{status}");
}

fn relay(db: &TestDb, nats: &str) -> Child {
    bin()
        .arg("--database-url")
        .arg(db.url())
        .args(["events", "run", "--nats", nats, "--batch", "7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_relay_killed_three_times_and_nats_restarted_lose_nothing() {
    let db = TestDb::new().await;
    let mut nats = Nats::start();
    let url = nats.url();
    ok(cli(&db, "default", &["demo"]));
    // SIGKILL mid-run, three times, while stories are written.
    for round in 0..3 {
        let mut r = relay(&db, &url);
        let writer = {
            let url = db.url().to_string();
            std::thread::spawn(move || {
                bin()
                    .args(["--database-url", &url, "demo"])
                    .output()
                    .unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        r.kill().unwrap(); // SIGKILL
        r.wait().unwrap();
        assert!(writer.join().unwrap().status.success());
    }
    // NATS restarted while a relay runs: the relay retries from its cursor.
    let mut r = relay(&db, &url);
    std::thread::sleep(Duration::from_millis(500));
    nats.stop();
    ok(cli(&db, "default", &["demo"]));
    std::thread::sleep(Duration::from_millis(500));
    nats.spawn();
    std::thread::sleep(Duration::from_secs(4));
    r.kill().unwrap();
    r.wait().unwrap();
    // The lease of the killed relay expires; --once then delivers what is left.
    tokio::time::sleep(Duration::from_secs(
        ledger_events::cursor::LEASE_SECONDS as u64 + 1,
    ))
    .await;
    ok(cli(
        &db,
        "default",
        &["events", "run", "--nats", &url, "--once"],
    ));
    assert_exactly_the_log(&messages(&url).await, &log(&db).await);
}

type Received = Arc<Mutex<Vec<(String, String, HashMap<String, String>, String)>>>;

/// A webhook receiver: records (path, webhook-id, headers, body) and answers per path: `/ok` 200,
/// `/flaky` 500 to the first delivery of each id, `/down` always 500, `/slow` after 15 s.
async fn receiver() -> (u16, Received) {
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let seen: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (r, s) = (received.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/{kind}",
        axum::routing::post(
            move |axum::extract::Path(kind): axum::extract::Path<String>,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    let h: HashMap<String, String> = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let id = h.get("webhook-id").cloned().unwrap_or_default();
                    r.lock().unwrap().push((kind.clone(), id.clone(), h, body));
                    let first = s.lock().unwrap().insert(format!("{kind}:{id}"));
                    match kind.as_str() {
                        "ok" => axum::http::StatusCode::OK,
                        "flaky" if first => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "flaky" => axum::http::StatusCode::OK,
                        "slow" => {
                            tokio::time::sleep(Duration::from_secs(15)).await;
                            axum::http::StatusCode::OK
                        }
                        _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    }
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

fn verifies(secret: &[u8], h: &HashMap<String, String>, body: &str) -> usize {
    let content = format!("{}.{}.{body}", h["webhook-id"], h["webhook-timestamp"]);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(content.as_bytes());
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    h["webhook-signature"]
        .split(' ')
        .filter(|s| *s == want)
        .count()
}

// Multi-threaded: the test waits on the relay's process (blocking) while the receiver answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_dead_letter_redeliver_filter_rotate_and_never_wait_for_a_dead_endpoint() {
    let db = TestDb::new().await;
    let (port, received) = receiver().await;
    let base = format!("http://127.0.0.1:{port}");
    let secret = "whsec_ZXZlbnRzLW91dC10ZXN0LXNpZ25pbmcta2V5LTAx";
    let key = base64::engine::general_purpose::STANDARD
        .decode(&secret[6..])
        .unwrap();
    let add = |url: String, extra: &[&str]| {
        let mut args = vec![
            "events",
            "endpoints",
            "add",
            "--url",
            &url,
            "--secret",
            secret,
        ];
        args.extend_from_slice(extra);
        ok(cli(&db, "default", &args)).trim().to_string()
    };
    let flaky = add(format!("{base}/flaky"), &[]);
    add(format!("{base}/down"), &[]);
    add(format!("{base}/slow"), &["--types", "payment.*"]);
    add(format!("{base}/ok"), &["--types", "payment.*"]);
    ok(cli(&db, "default", &["demo"]));
    let log = log(&db).await;
    let schedule = [("ESCROW_LEDGER_WEBHOOK_RETRY_SCHEDULE", "1s,1s")];
    let run_once = || {
        let started = std::time::Instant::now();
        let out = bin()
            .arg("--database-url")
            .arg(db.url())
            .args(["events", "run", "--once"])
            .envs(schedule)
            .output()
            .unwrap();
        (ok(out), started.elapsed())
    };
    // The slow endpoint (15 s a request, past the 10 s deadline) and the dead one hold up nobody: every
    // event reaches the flaky endpoint while the slow one is still timing out.
    let started = std::time::Instant::now();
    let once = std::thread::spawn({
        let url = db.url().to_string();
        move || {
            bin()
                .args(["--database-url", &url, "events", "run", "--once"])
                .envs([("ESCROW_LEDGER_WEBHOOK_RETRY_SCHEDULE", "1s,1s")])
                .output()
                .unwrap()
        }
    });
    let count = |path: &str| {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ..)| p == path)
            .count()
    };
    while count("flaky") < log.len() && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fast = started.elapsed();
    ok(once.join().unwrap());
    let took = started.elapsed();
    assert!(
        fast < Duration::from_secs(9) && took > fast,
        "the flaky endpoint had every event after {fast:?}, the run with the slow endpoint took {took:?}"
    );
    let by = |path: &str| -> Vec<(String, HashMap<String, String>, String)> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(_, id, h, b)| (id.clone(), h.clone(), b.clone()))
            .collect()
    };
    // Every event reached the flaky endpoint once (answered 500), signed, one stable id per event.
    let first = by("flaky");
    assert_eq!(first.len(), log.len(), "one delivery per event");
    for (_, h, body) in &first {
        assert_eq!(
            verifies(&key, h, body),
            1,
            "signed with the decoded whsec_ key"
        );
        assert!(
            !body.contains(secret) && !body.contains(&secret[6..]),
            "no secret in a body"
        );
    }
    // The filter: only payment events reach /ok.
    let filtered = by("ok");
    assert!(!filtered.is_empty());
    assert!(
        filtered
            .iter()
            .all(|(_, _, b)| b.contains("\"type\":\"payment."))
    );
    // Retries after 1 s: the flaky endpoint answers 200 the second time; the dead one dies after 3 attempts.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        run_once();
    }
    let again = by("flaky");
    let ids: HashSet<&String> = first.iter().map(|(id, ..)| id).collect();
    if again.len() < 2 * log.len() {
        let all = ok(cli(
            &db,
            "default",
            &["events", "deliveries", "--limit", "10000", "--json"],
        ));
        let odd: Vec<&str> = all
            .lines()
            .filter(|l| l.contains(&flaky) && !l.contains("\"delivered\""))
            .collect();
        panic!(
            "every flaky delivery retried once: {} requests for {} events; not delivered: {odd:?}",
            again.len(),
            log.len()
        );
    }
    assert!(
        again.iter().all(|(id, ..)| ids.contains(id)),
        "the same webhook-id across retries"
    );
    let dead = ok(cli(
        &db,
        "default",
        &[
            "events",
            "deliveries",
            "--dead",
            "--limit",
            "10000",
            "--json",
        ],
    ));
    let dead: Vec<Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        dead.iter().any(|d| d["attempts"] == 3),
        "the dead endpoint's deliveries are dead after 3 attempts"
    );
    assert!(dead.iter().all(|d| d["endpoint_id"] != json!(flaky)));
    // Redeliver one dead delivery: due again, sent again.
    let one = dead[0]["delivery_id"].as_str().unwrap().to_string();
    let before = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, id, ..)| *id == one)
        .count();
    ok(cli(&db, "default", &["events", "redeliver", &one]));
    run_once();
    let after = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, id, ..)| *id == one)
        .count();
    assert_eq!(after, before + 1, "redeliver sends it again");
    // Rotation: both signatures on the next deliveries.
    let rotated = "whsec_cm90YXRlZC1ldmVudHMtb3V0LXRlc3Qta2V5LTAy";
    let key2 = base64::engine::general_purpose::STANDARD
        .decode(&rotated[6..])
        .unwrap();
    ok(cli(
        &db,
        "default",
        &["events", "endpoints", "rotate", &flaky, "--secret", rotated],
    ));
    let seen = by("flaky").len();
    ok(cli(&db, "default", &["demo"]));
    run_once();
    let newest = &by("flaky")[seen..];
    assert!(!newest.is_empty());
    for (_, h, body) in newest {
        assert_eq!(
            verifies(&key, h, body) + verifies(&key2, h, body),
            2,
            "both secrets sign during a rotation"
        );
    }
}

#[tokio::test]
async fn the_pull_feed_gives_every_position_once_while_writers_run() {
    let db = TestDb::new().await;
    let port = free_port();
    let key = "feed-test-key-0123456789";
    let mut serve = bin()
        .arg("--database-url")
        .arg(db.url())
        .args(["serve", "--no-timers", "--no-events", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("ESCROW_LEDGER_API_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stories written while the consumer pages (one writer: `demo` projects its read tables as it goes).
    let writers: Vec<_> = (0..1)
        .map(|_| {
            let url = db.url().to_string();
            std::thread::spawn(move || {
                let mut last = None;
                for _ in 0..3 {
                    let out = bin()
                        .args(["--database-url", &url, "demo"])
                        .output()
                        .unwrap();
                    let failed = !out.status.success();
                    last = Some(out);
                    if failed {
                        break;
                    }
                }
                last.unwrap()
            })
        })
        .collect();
    let http = reqwest::Client::new();
    let mut seen: BTreeMap<i64, String> = BTreeMap::new();
    let mut after = 0;
    let mut quiet = 0;
    while quiet < 3 {
        let page: Value = http
            .get(format!(
                "{base}/v1/ledgers/default/events?after={after}&limit=50&wait_ms=1000"
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() && writers.iter().all(|w| w.is_finished()) {
            quiet += 1;
        }
        for e in events {
            let p = e["position"].as_i64().unwrap();
            assert!(
                seen.insert(p, e["event_id"].as_str().unwrap().into())
                    .is_none(),
                "position {p} twice"
            );
        }
        after = page["next_after"].as_i64().unwrap();
    }
    for w in writers {
        let out = w.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = log(&db).await;
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        log,
        "every position exactly once, the log's ids"
    );
    let refused = http
        .get(format!("{base}/v1/ledgers/default/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let _ = serve.kill();
    let _ = serve.wait();
}

#[tokio::test]
async fn a_clearing_crossing_a_threshold_down_up_down_triggers_clears_triggers() {
    use support::{gateway, line, setup, usd, user};
    let db = TestDb::new().await;
    let nats = Nats::start();
    let payer = uuid::Uuid::new_v4();
    let deposit = |id: uuid::Uuid, amount: &str| {
        vec![
            line(
                user(payer),
                json!({"type": "initiate_deposit", "payment_id": id, "amount": usd(amount),
                       "gateway": "stripe", "fund": null}),
                None,
            ),
            line(
                gateway("stripe"),
                json!({"type": "confirm_deposit", "payment_id": id, "amount": usd(amount),
                       "gateway_fee": null, "occurred_at": null}),
                None,
            ),
        ]
    };
    let payout = |id: uuid::Uuid, amount: &str| {
        vec![
            line(
                user(payer),
                json!({"type": "request_payout", "payout_id": id, "amount": usd(amount), "fee": usd("0.00"),
                       "gateway": "stripe"}),
                None,
            ),
            line(
                gateway("stripe"),
                json!({"type": "confirm_transfer", "payment_id": id, "gateway_fee": null, "occurred_at": null}),
                None,
            ),
        ]
    };
    setup(&db, "default", &deposit(uuid::Uuid::new_v4(), "200.00"));
    ok(cli(
        &db,
        "default",
        &[
            "events",
            "monitors",
            "add",
            "--name",
            "clearing low",
            "--when",
            "Assets:Gateway:Stripe:Clearing < 100.00 USD",
        ],
    ));
    setup(&db, "default", &payout(uuid::Uuid::new_v4(), "150.00")); // 50: becomes true
    setup(&db, "default", &deposit(uuid::Uuid::new_v4(), "100.00")); // 150: stops
    setup(&db, "default", &payout(uuid::Uuid::new_v4(), "100.00")); // 50: again
    // A posting that keeps it true (still below) changes nothing.
    setup(&db, "default", &deposit(uuid::Uuid::new_v4(), "10.00")); // 60
    ok(cli(
        &db,
        "default",
        &["events", "run", "--nats", &nats.url(), "--once"],
    ));
    let kinds: Vec<String> = messages(&nats.url())
        .await
        .into_iter()
        .filter(|(_, m)| m["type"].as_str().unwrap().starts_with("monitor."))
        .map(|(_, m)| {
            format!(
                "{} {}",
                m["type"].as_str().unwrap(),
                m["data"]["balance"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "monitor.triggered 50.00",
            "monitor.cleared 150.00",
            "monitor.triggered 50.00"
        ]
    );
    // The pull feed carries the same edges, with the same ids as the relay's.
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let store = ledger_store::PgEventStore::new(pool.clone());
    let page = ledger_events::feed::page(&pool, &store, "default", 0, 1_000, Duration::ZERO)
        .await
        .unwrap();
    let relayed: Vec<String> = messages(&nats.url())
        .await
        .into_iter()
        .filter(|(_, m)| m["type"].as_str().unwrap().starts_with("monitor."))
        .map(|(id, _)| id)
        .collect();
    let fed: Vec<String> = page
        .events
        .iter()
        .filter(|e| e.event_type.starts_with("monitor."))
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(fed, relayed, "the feed's monitor edges are the relay's");
    // Resent from the start by another sink run, the same edges carry the same ids (dedupe holds).
    ok(cli(
        &db,
        "default",
        &["events", "run", "--nats", &nats.url(), "--once"],
    ));
    assert_eq!(
        messages(&nats.url())
            .await
            .iter()
            .filter(|(_, m)| m["type"].as_str().unwrap().starts_with("monitor."))
            .count(),
        3
    );
}

#[tokio::test]
async fn a_live_relay_delivers_new_events_without_being_restarted() {
    let db = TestDb::new().await;
    let nats = Nats::start();
    let mut r = relay(&db, &nats.url());
    ok(cli(&db, "default", &["demo"]));
    let log = log(&db).await;
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = messages(&nats.url()).await;
        if delivered.len() >= log.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.kill().unwrap();
    r.wait().unwrap();
    assert_exactly_the_log(&delivered, &log);
    // Backlog and lag per sink, in `db status` and `/metrics`: none now; after another story the relay has
    // not delivered, the story's events and the age of its first one.
    let sink = "ledger=\"default\",sink=\"nats:ESCROW\"";
    let status = ok(cli(&db, "default", &["db", "status"]));
    assert!(
        status.contains("events to nats:ESCROW of ledger default"),
        "{status}"
    );
    assert!(status.contains("(backlog 0, lag 0.0s)"), "{status}");
    let port = free_port();
    let mut serve = bin()
        .arg("--database-url")
        .arg(db.url())
        .args(["serve", "--no-timers", "--no-events", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let metrics = || async {
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{base}/metrics")).await {
                return r.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("serve did not answer");
    };
    let text = metrics().await;
    assert!(
        text.contains(&format!("escrow_events_backlog{{{sink}}} 0\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("escrow_events_lag_seconds{{{sink}}} 0.000\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "escrow_events_delivered_total{{{sink}}} {}\n",
            log.len()
        )),
        "{text}"
    );
    ok(cli(&db, "default", &["demo"]));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let waiting = self::log(&db).await.len() - log.len();
    let text = metrics().await;
    assert!(
        text.contains(&format!("escrow_events_backlog{{{sink}}} {waiting}\n")),
        "{text}"
    );
    let lag: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("escrow_events_lag_seconds{{{sink}}} ")))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        lag >= 1.0,
        "the oldest waiting event is over a second old: {lag}"
    );
    let _ = serve.kill();
    let _ = serve.wait();
}

/// Monitor events of stream ESCROW as `type account`.
async fn monitor_messages(url: &str) -> Vec<String> {
    messages(url)
        .await
        .into_iter()
        .filter(|(_, m)| m["type"].as_str().unwrap().starts_with("monitor."))
        .map(|(_, m)| {
            format!(
                "{} {}",
                m["type"].as_str().unwrap(),
                m["data"]["account"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn an_escrow_older_than_its_age_triggers_once_and_clears_when_released() {
    use support::{gateway, line, setup, usd, user};
    let db = TestDb::new().await;
    let nats = Nats::start();
    let (b, s, p) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let now = chrono::Utc::now();
    let (old, recent) = (
        now - chrono::Duration::days(40),
        now - chrono::Duration::days(1),
    );
    let d = uuid::Uuid::new_v4();
    let fund = |m: u32, at| {
        line(
            user(b),
            json!({"type": "fund_milestone", "project_id": p, "milestone": m}),
            Some(at),
        )
    };
    setup(
        &db,
        "default",
        &[
            line(
                user(b),
                json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("300.00"),
                       "gateway": "stripe", "fund": null}),
                Some(old),
            ),
            line(
                gateway("stripe"),
                json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("300.00"),
                       "gateway_fee": null, "occurred_at": null}),
                Some(old),
            ),
            line(
                user(b),
                json!({"type": "create_project", "project_id": p, "buyer": b, "seller": s,
                       "currency": "USD", "milestones": [usd("100.00"), usd("100.00")],
                       "fees": {"commission_rate": "0", "buyer_fee_rate": "0"}}),
                Some(old),
            ),
            line(
                user(b),
                json!({"type": "submit_project_for_agreement", "project_id": p}),
                Some(old),
            ),
            line(
                user(s),
                json!({"type": "agree_to_project", "project_id": p}),
                Some(old),
            ),
            fund(1, old),
            fund(2, recent),
        ],
    );
    ok(cli(
        &db,
        "default",
        &[
            "events",
            "monitors",
            "add",
            "--name",
            "stale escrow",
            "--when",
            "escrow older than 30 days",
        ],
    ));
    let listed = ok(cli(&db, "default", &["events", "monitors", "list"]));
    assert!(
        listed.contains("escrow older than 2592000 seconds"),
        "{listed}"
    );
    let run = || {
        ok(cli(
            &db,
            "default",
            &["events", "run", "--nats", &nats.url(), "--once"],
        ))
    };
    run();
    let m1 = format!("monitor.triggered Liabilities:Escrow:{p}:1");
    assert_eq!(
        monitor_messages(&nats.url()).await,
        std::slice::from_ref(&m1),
        "only the escrow funded 40 days ago is older than 30 days"
    );
    // Another run (a restarted relay) triggers nothing again: the holds were saved with the cursor.
    run();
    assert_eq!(
        monitor_messages(&nats.url()).await,
        std::slice::from_ref(&m1)
    );
    // Released: milestone 1's escrow is emptied, its monitor clears.
    setup(
        &db,
        "default",
        &[
            line(
                user(s),
                json!({"type": "submit_milestone", "project_id": p, "milestone": 1}),
                None,
            ),
            line(
                user(b),
                json!({"type": "approve_milestone", "project_id": p, "milestone": 1}),
                None,
            ),
        ],
    );
    run();
    run();
    let cleared = format!("monitor.cleared Liabilities:Escrow:{p}:1");
    assert_eq!(monitor_messages(&nats.url()).await, [m1, cleared]);
    // Refused conditions say what is expected.
    let bad = cli(
        &db,
        "default",
        &[
            "events",
            "monitors",
            "add",
            "--name",
            "x",
            "--when",
            "escrow older than 3 weeks",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("days, hours, minutes or seconds"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
