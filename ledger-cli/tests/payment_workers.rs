//! Payment workers through the real HTTP server (the `escrow-ledger serve` binary) on a fresh database:
//! webhook storm, out-of-order permutations, outbox leases, bad input, graceful shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use ledger_core::aggregates::payment::{PaymentState, PaymentStatus};
use ledger_core::{
    Actor, AggState, Balances, Command, CommandEnvelope, Currency, Event, Gateway, Money, StreamId,
};
use ledger_gateway::verify::sign_timestamped;
use ledger_store::testdb::TestDb;
use ledger_store::{EventStore, Executor, ExecutorConfig};
use rand::Rng;
use rand::seq::SliceRandom;
use uuid::Uuid;

const STRIPE_SECRET: &str = "whsec_storm";
const CALLBACK_SECRET: &str = "in-house-storm";
const API_KEY: &str = "storm-api-key";

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(url: &str, config: Option<&str>) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Process::new(env!("CARGO_BIN_EXE_escrow-ledger"));
        cmd.args([
            "--database-url",
            url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("ESCROW_LEDGER_STRIPE_SECRET", STRIPE_SECRET)
        .env("ESCROW_LEDGER_CALLBACK_SECRET", CALLBACK_SECRET)
        .env("ESCROW_LEDGER_API_KEY", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(config) = config {
            let path = std::env::temp_dir().join(format!("escrow-serve-{}.toml", Uuid::new_v4()));
            std::fs::write(&path, config).unwrap();
            cmd.arg("--config").arg(&path);
        }
        let server = Server {
            child: cmd.spawn().expect("the binary starts"),
            base: format!("http://127.0.0.1:{port}"),
        };
        let base = server.base.clone();
        for _ in 0..400 {
            if reqwest::get(format!("{base}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not answer /healthz");
    }

    fn terminate(&mut self) {
        let status = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn executor(db: &TestDb, ledger: &str) -> Executor {
    Executor::new(Arc::new(db.store()), ledger, ExecutorConfig::default())
}

async fn run(ex: &Executor, actor: Actor, command: Command) {
    let env = CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor,
        at: Utc::now(),
        command,
    };
    let outcome = ex.execute(&env, None).await.unwrap();
    assert!(outcome.is_accepted(), "{outcome:?}");
}

fn usd(text: &str) -> Money {
    Money::parse(text, Currency::USD).unwrap()
}

async fn deposit(ex: &Executor, user: Uuid, id: Uuid, amount: &str, gateway: Gateway) {
    let command = Command::InitiateDeposit {
        payment_id: id,
        amount: usd(amount),
        gateway,
        fund: None,
    };
    run(ex, Actor::User(user), command).await;
}

async fn funded_payout(ex: &Executor, user: Uuid, payout: Uuid) {
    let dep = Uuid::new_v4();
    deposit(ex, user, dep, "100.00", Gateway::Normalized).await;
    let confirm = Command::ConfirmDeposit {
        payment_id: dep,
        amount: usd("100.00"),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    run(ex, Actor::Gateway(Gateway::Normalized), confirm).await;
    let request = Command::RequestPayout {
        payout_id: payout,
        amount: usd("40.00"),
        fee: None,
        gateway: Gateway::Normalized,
    };
    run(ex, Actor::User(user), request).await;
}

/// One delivery: the route segment of its gateway and its body (signed when sent).
#[derive(Clone)]
struct Delivery {
    gateway: &'static str,
    body: String,
}

fn normalized(event_id: &str, kind: &str, reference: Uuid, amount: &str) -> Delivery {
    Delivery {
        gateway: "normalized",
        body: format!(
            r#"{{"event_id":"{event_id}","kind":"{kind}","payment_reference":"{reference}","amount":"{amount}","currency":"USD"}}"#
        ),
    }
}

/// A Stripe event; a charge (`ch_...`) names its payment intent (`pi_...`), as Stripe's charges do.
fn stripe(event_id: &str, event_type: &str, object: &str, reference: Uuid, minor: i64) -> Delivery {
    let intent = object.replace("ch_", "pi_");
    Delivery {
        gateway: "stripe",
        body: format!(
            r#"{{"id":"{event_id}","object":"event","type":"{event_type}","created":1700000000,"data":{{"object":{{"id":"{object}","payment_intent":"{intent}","amount":{minor},"amount_received":{minor},"amount_captured":{minor},"currency":"usd","status":"succeeded","metadata":{{"payment_reference":"{reference}"}}}}}}}}"#
        ),
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    ledger: &str,
    d: &Delivery,
) -> reqwest::Result<reqwest::Response> {
    let (header, secret) = if d.gateway == "stripe" {
        ("stripe-signature", STRIPE_SECRET)
    } else {
        ("x-escrow-signature", CALLBACK_SECRET)
    };
    client
        .post(format!(
            "{base}/v1/ledgers/{ledger}/callbacks/{}",
            d.gateway
        ))
        .header(
            header,
            sign_timestamped(secret, Utc::now().timestamp(), d.body.as_bytes()),
        )
        .body(d.body.clone())
        .send()
        .await
}

/// Sends every delivery from `senders` concurrent tasks; returns the status of each.
async fn storm(base: &str, ledger: &str, deliveries: Vec<Delivery>, senders: usize) -> Vec<u16> {
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (deliveries, next, base, ledger) = (
            deliveries.clone(),
            next.clone(),
            base.to_string(),
            ledger.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut statuses = Vec::new();
            while let Some(d) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                let status = match post(&client, &base, &ledger, d).await {
                    Ok(r) if r.status().is_success() => 200,
                    Ok(r) => {
                        let status = r.status().as_u16();
                        eprintln!("{status}: {}", r.text().await.unwrap_or_default());
                        status
                    }
                    Err(_) => 0,
                };
                statuses.push(status);
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

struct LedgerView {
    balances: Balances,
    entry_ids: Vec<Uuid>,
    by_stream: HashMap<String, Vec<String>>,
    suspense: Vec<Money>,
}

async fn view(db: &TestDb, ledger: &str) -> LedgerView {
    let pool = ledger_store::connect(db.url()).await.unwrap();
    let rows: Vec<(String, String, i32, serde_json::Value)> = sqlx::query_as(
        "select stream_id, event_type, schema_version, payload from ledger.events where ledger_id = $1 order by local_id",
    )
    .bind(ledger)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut v = LedgerView {
        balances: Balances::default(),
        entry_ids: vec![],
        by_stream: HashMap::new(),
        suspense: vec![],
    };
    for (stream, event_type, version, payload) in rows {
        let event =
            Event::from_stored(&stream.parse().unwrap(), &event_type, version, payload).unwrap();
        if let Some(entry) = event.entry() {
            v.balances.apply(entry);
            v.entry_ids.push(entry.id());
        }
        if let Event::Suspense(
            ledger_core::aggregates::suspense::SuspenseEvent::SuspenseRecorded { amount, .. },
        ) = &event
        {
            v.suspense.push(*amount);
        }
        v.by_stream.entry(stream).or_default().push(event_type);
    }
    v
}

fn count(v: &LedgerView, id: Uuid, event_type: &str) -> usize {
    v.by_stream
        .get(&format!("payment-{id}"))
        .map_or(0, |e| e.iter().filter(|t| *t == event_type).count())
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

fn assert_balanced(v: &LedgerView) {
    assert!(
        v.balances.imbalance_by_currency().values().all(|x| *x == 0),
        "trial balance is not zero"
    );
    assert!(
        v.balances.negative_constrained().is_empty(),
        "a constrained account went negative"
    );
    let unique: HashSet<&Uuid> = v.entry_ids.iter().collect();
    assert_eq!(unique.len(), v.entry_ids.len(), "an entry was posted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_storm_gives_exactly_one_money_effect_per_outcome() {
    let db = TestDb::new().await;
    let ex = executor(&db, "default");
    let mut unique: Vec<Delivery> = Vec::new();
    let (mut plain, mut attempts, mut stripes, mut ok_payouts, mut fail_then) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut unknown_sum = 0_i64;
    for i in 0..250 {
        let id = Uuid::new_v4();
        deposit(&ex, Uuid::new_v4(), id, "10.00", Gateway::Normalized).await;
        unique.push(normalized(
            &format!("dep-ok-{i}"),
            "deposit_succeeded",
            id,
            "10.00",
        ));
        if i % 5 == 0 {
            unique.push(normalized(
                &format!("dep-fail-{i}"),
                "deposit_failed",
                id,
                "10.00",
            ));
            attempts.push(id);
        } else {
            plain.push(id);
        }
    }
    for i in 0..150 {
        let id = Uuid::new_v4();
        deposit(&ex, Uuid::new_v4(), id, "10.00", Gateway::Stripe).await;
        unique.push(stripe(
            &format!("evt_pi_{i}"),
            "payment_intent.succeeded",
            &format!("pi_{i}"),
            id,
            1000,
        ));
        unique.push(stripe(
            &format!("evt_ch_{i}"),
            "charge.succeeded",
            &format!("ch_{i}"),
            id,
            1000,
        ));
        stripes.push(id);
    }
    for i in 0..150 {
        let id = Uuid::new_v4();
        funded_payout(&ex, Uuid::new_v4(), id).await;
        unique.push(normalized(
            &format!("po-ok-{i}"),
            "payout_succeeded",
            id,
            "40.00",
        ));
        if i % 3 == 0 {
            ok_payouts.push(id);
        } else {
            unique.push(normalized(
                &format!("po-fail-{i}"),
                "payout_failed",
                id,
                "40.00",
            ));
            fail_then.push(id);
        }
    }
    for i in 0..160_i64 {
        let (amount, held) = if i < 10 {
            ("5.005".to_string(), 500)
        } else {
            (format!("{}.00", i + 1), (i + 1) * 100)
        };
        unique.push(normalized(
            &format!("unknown-{i}"),
            "deposit_succeeded",
            Uuid::new_v4(),
            &amount,
        ));
        unknown_sum += held;
    }
    assert!(unique.len() >= 1000, "{} unique events", unique.len());
    let mut rng = rand::rng();
    let mut deliveries = Vec::new();
    for d in &unique {
        for _ in 0..rng.random_range(1..=5) {
            deliveries.push(d.clone());
        }
    }
    deliveries.shuffle(&mut rng);
    let total = deliveries.len();
    let server = Server::start(db.url(), None).await;
    let statuses = storm(&server.base, "default", deliveries, 16).await;
    assert_eq!(statuses.len(), total);
    let bad: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(bad.is_empty(), "non-200: {bad:?}");

    let v = view(&db, "default").await;
    assert_balanced(&v);
    for id in plain.iter().chain(&attempts).chain(&stripes) {
        assert_eq!(count(&v, *id, "DepositSucceeded"), 1, "deposit {id}");
        let p = payment(&ex, *id).await;
        assert_eq!(
            (p.status, p.received_minor),
            (PaymentStatus::Completed, 1000)
        );
    }
    for id in &attempts {
        // Either the failed attempt came first (the success is still accepted) or the failure came late.
        assert_eq!(
            count(&v, *id, "DepositAttemptFailed") + count(&v, *id, "LateFailureIgnored"),
            1
        );
    }
    for id in &ok_payouts {
        assert_eq!(payment(&ex, *id).await.status, PaymentStatus::Completed);
        assert_eq!(count(&v, *id, "PayoutCompleted"), 1);
    }
    for id in &fail_then {
        let p = payment(&ex, *id).await;
        let (done, failed) = (
            count(&v, *id, "PayoutCompleted"),
            count(&v, *id, "PayoutFailed"),
        );
        match p.status {
            PaymentStatus::Completed => assert_eq!(
                (done, failed, count(&v, *id, "LateFailureIgnored")),
                (1, 0, 1)
            ),
            PaymentStatus::Failed => assert_eq!(
                (done, failed, count(&v, *id, "SuccessAfterFailure")),
                (0, 1, 1)
            ),
            other => panic!("payout {id} ended {other:?}"),
        }
    }
    assert_eq!(
        v.suspense.len(),
        160,
        "one suspense entry per unmatched deposit"
    );
    assert_eq!(
        v.suspense.iter().map(|m| m.minor()).sum::<i64>(),
        unknown_sum
    );
    assert_eq!(
        v.balances
            .balance(&ledger_core::Account::Suspense, Currency::USD)
            .abs(),
        i128::from(unknown_sum)
    );
    let pool = ledger_store::connect(db.url()).await.unwrap();
    let inbox: i64 = sqlx::query_scalar("select count(*) from ledger.inbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        inbox as usize, total,
        "every acknowledged delivery is in the inbox"
    );
    // Concurrent deliveries share transactions (group commit): the log entries that back the deliveries'
    // rows (a `DeliveryRecorded`, or the first event of the command a delivery ran, which carries it) were
    // written by far fewer transactions than there were of them.
    let (logged, transactions): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct tx_id) from ledger.events
          where event_type = 'DeliveryRecorded' or metadata ? 'delivery'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        logged >= unique.len() as i64 && transactions * 2 <= logged,
        "{logged} deliveries logged by {transactions} transactions: callbacks are not group-committed"
    );
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for rest in permutations(n - 1) {
        for i in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(i, n - 1);
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_of_a_deposits_callbacks_gives_the_same_ledger() {
    let db = TestDb::new().await;
    let user = Uuid::from_u128(11);
    let deposits = [Uuid::from_u128(21), Uuid::from_u128(22)];
    let callbacks = |id: Uuid| {
        vec![
            normalized(&format!("f-{id}"), "deposit_failed", id, "10.00"),
            stripe(
                &format!("evt_pi_{id}"),
                "payment_intent.succeeded",
                "pi",
                id,
                1000,
            ),
            stripe(&format!("evt_ch_{id}"), "charge.succeeded", "ch", id, 1000),
            normalized(&format!("f2-{id}"), "deposit_failed", id, "10.00"),
        ]
    };
    let orders = permutations(4);
    assert_eq!(orders.len(), 24);
    let mut config = String::new();
    for p in 0..orders.len() {
        let ledger = format!("perm-{p}");
        db.store().create_ledger(&ledger).await.unwrap();
        config.push_str(&format!("[ledgers.{ledger}]\nstripe_secret = \"{STRIPE_SECRET}\"\ncallback_secret = \"{CALLBACK_SECRET}\"\n"));
        let ex = executor(&db, &ledger);
        for id in deposits {
            deposit(&ex, user, id, "10.00", Gateway::Stripe).await;
        }
    }
    let server = Server::start(db.url(), Some(&config)).await;
    let client = reqwest::Client::new();
    let mut reference: Option<BTreeMap<String, i128>> = None;
    for (p, order) in orders.iter().enumerate() {
        let ledger = format!("perm-{p}");
        for id in deposits {
            let cbs = callbacks(id);
            for i in order {
                assert_eq!(
                    post(&client, &server.base, &ledger, &cbs[*i])
                        .await
                        .unwrap()
                        .status(),
                    200
                );
            }
        }
        let v = view(&db, &ledger).await;
        assert_balanced(&v);
        let balances: BTreeMap<String, i128> = v
            .balances
            .iter()
            .map(|((a, c), (d, cr))| (format!("{a:?} {c}"), d - cr))
            .collect();
        for id in deposits {
            assert_eq!(
                payment(&executor(&db, &ledger), id).await.status,
                PaymentStatus::Completed
            );
        }
        match &reference {
            None => reference = Some(balances),
            Some(r) => assert_eq!(r, &balances, "order {order:?} gave another ledger"),
        }
    }
}

async fn claim(
    client: &reqwest::Client,
    base: &str,
    worker: &str,
    limit: i64,
    lease: i64,
) -> Vec<(String, i64)> {
    let r: serde_json::Value = client
        .post(format!("{base}/v1/ledgers/default/outbox/claim"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"worker": worker, "limit": limit, "lease_seconds": lease}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["payment_id"].as_str().unwrap().to_string(),
                i["claims"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_leases_are_exclusive_and_expire() {
    let db = TestDb::new().await;
    let ex = executor(&db, "default");
    let mut payouts = HashSet::new();
    for _ in 0..30 {
        let id = Uuid::new_v4();
        funded_payout(&ex, Uuid::new_v4(), id).await;
        payouts.insert(id.to_string());
    }
    let server = Server::start(db.url(), None).await;
    let mut workers = Vec::new();
    for w in 0..2 {
        let base = server.base.clone();
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut mine = Vec::new();
            loop {
                let got = claim(&client, &base, &format!("worker-{w}"), 3, 300).await;
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|(id, _)| id));
            }
        }));
    }
    let b = workers.pop().unwrap().await.unwrap();
    let a = workers.pop().unwrap().await.unwrap();
    let (sa, sb): (HashSet<_>, HashSet<_>) =
        (a.iter().cloned().collect(), b.iter().cloned().collect());
    assert_eq!(
        sa.len() + sb.len(),
        a.len() + b.len(),
        "a worker claimed one item twice"
    );
    assert!(sa.is_disjoint(&sb), "two workers claimed the same payout");
    assert_eq!(sa.union(&sb).cloned().collect::<HashSet<_>>(), payouts);

    // An expired lease is claimable again; a live one is not.
    let late = Uuid::new_v4();
    funded_payout(&ex, Uuid::new_v4(), late).await;
    let client = reqwest::Client::new();
    assert_eq!(
        claim(&client, &server.base, "w3", 10, 1).await,
        vec![(late.to_string(), 1)]
    );
    assert!(claim(&client, &server.base, "w4", 10, 60).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        claim(&client, &server.base, "w4", 10, 60).await,
        vec![(late.to_string(), 2)]
    );

    // The gateway's callback closes the item.
    let d = normalized("close-late", "payout_succeeded", late, "40.00");
    assert_eq!(
        post(&client, &server.base, "default", &d)
            .await
            .unwrap()
            .status(),
        200
    );
    let listed: serde_json::Value = client
        .get(format!("{}/v1/ledgers/default/outbox", server.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains(&late.to_string()));
    assert_eq!(listed["items"].as_array().unwrap().len(), 30);
}

async fn events_count(db: &TestDb) -> i64 {
    let pool = ledger_store::connect(db.url()).await.unwrap();
    sqlx::query_scalar("select count(*) from ledger.events")
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_the_right_status_and_posts_nothing() {
    let db = TestDb::new().await;
    let ex = executor(&db, "default");
    let id = Uuid::new_v4();
    deposit(&ex, Uuid::new_v4(), id, "10.00", Gateway::Stripe).await;
    let server = Server::start(db.url(), None).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/ledgers/default/callbacks/stripe", server.base);
    let before = events_count(&db).await;
    let good = stripe("evt_bad_1", "payment_intent.succeeded", "pi", id, 1000);
    let now = Utc::now().timestamp();
    let big = vec![b' '; 300 * 1024];
    let cases: Vec<(&str, Vec<u8>, String, u16)> = vec![
        (
            "oversized",
            big.clone(),
            sign_timestamped(STRIPE_SECRET, now, &big),
            413,
        ),
        (
            "invalid JSON",
            b"{\"id\": ".to_vec(),
            sign_timestamped(STRIPE_SECRET, now, b"{\"id\": "),
            422,
        ),
        (
            "forged",
            good.body.clone().into_bytes(),
            sign_timestamped("not-the-secret", now, good.body.as_bytes()),
            401,
        ),
        (
            "replayed old",
            good.body.clone().into_bytes(),
            sign_timestamped(STRIPE_SECRET, now - 3600, good.body.as_bytes()),
            401,
        ),
        (
            "no signature",
            good.body.clone().into_bytes(),
            String::new(),
            401,
        ),
    ];
    // A fresh connection per case: after a 413 the server may close the connection it answered on.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (what, body, signature, expected) in cases {
        let status = fresh
            .post(&url)
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, expected, "{what}");
    }
    let unknown_ledger = client
        .post(format!("{}/v1/ledgers/nope/callbacks/stripe", server.base))
        .header(
            "stripe-signature",
            sign_timestamped(STRIPE_SECRET, now, good.body.as_bytes()),
        )
        .body(good.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown_ledger.status(),
        401,
        "an unknown ledger is not told apart from a bad signature"
    );
    let commands = format!("{}/v1/ledgers/default/commands", server.base);
    let cmd = serde_json::json!({"actor": {"kind": "user", "id": Uuid::new_v4()}, "command": {"type": "initiate_deposit", "payment_id": Uuid::new_v4(), "amount": {"amount": "5.00", "currency": "USD"}, "gateway": "stripe", "fund": null}});
    assert_eq!(
        client
            .post(&commands)
            .json(&cmd)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "missing API key"
    );
    assert_eq!(
        client
            .post(&commands)
            .bearer_auth("wrong")
            .json(&cmd)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "wrong API key"
    );
    assert_eq!(
        events_count(&db).await,
        before,
        "a refused request appended events"
    );

    // The server keeps serving: the authentic callback and a keyed command go through.
    let ok = client
        .post(&url)
        .header(
            "stripe-signature",
            sign_timestamped(STRIPE_SECRET, now, good.body.as_bytes()),
        )
        .body(good.body.clone())
        .send();
    assert_eq!(ok.await.unwrap().status(), 200);
    let keyed = |body: &serde_json::Value| {
        client
            .post(&commands)
            .bearer_auth(API_KEY)
            .header("idempotency-key", "k-1")
            .json(body)
            .send()
    };
    assert_eq!(keyed(&cmd).await.unwrap().status(), 200);
    assert_eq!(
        keyed(&cmd).await.unwrap().status(),
        200,
        "a repeat returns the original outcome"
    );
    let mut other = cmd.clone();
    other["command"]["amount"]["amount"] = "6.00".into();
    assert_eq!(
        keyed(&other).await.unwrap().status(),
        409,
        "key reused with another body"
    );
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.base))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("escrow_http_requests_total{route=\"callbacks\",status=\"4xx\"} 6"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_under_load_loses_no_acknowledged_callback() {
    let db = TestDb::new().await;
    let ex = executor(&db, "default");
    let ids: Vec<Uuid> = (0..1500).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        deposit(&ex, Uuid::new_v4(), *id, "10.00", Gateway::Normalized).await;
    }
    let mut server = Server::start(db.url(), None).await;
    let deliveries: Vec<(Uuid, Delivery)> = ids
        .iter()
        .map(|id| {
            (
                *id,
                normalized(&format!("sd-{id}"), "deposit_succeeded", *id, "10.00"),
            )
        })
        .collect();
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (deliveries, next, base) = (deliveries.clone(), next.clone(), server.base.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            while let Some((id, d)) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                match post(&client, &base, "default", d).await {
                    Ok(r) if r.status().is_success() => acknowledged.push(*id),
                    Ok(_) => {}
                    Err(_) => break, // the server stopped accepting
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.terminate();
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "the server did not stop cleanly: {status:?}"
    );
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < ids.len(),
        "{} acknowledged: no shutdown under load",
        acknowledged.len()
    );
    // After the stop, every acknowledged callback is in the log and in the inbox.
    let v = view(&db, "default").await;
    for id in &acknowledged {
        assert_eq!(
            count(&v, *id, "DepositSucceeded"),
            1,
            "acknowledged callback for {id} is missing"
        );
    }
    let pool = ledger_store::connect(db.url()).await.unwrap();
    let inbox: i64 = sqlx::query_scalar("select count(*) from ledger.inbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(inbox as usize >= acknowledged.len());
}

/// Gateways deliver in no guaranteed order: a chargeback's outcome that arrives before its opening refers to
/// a dispute the ledger has not recorded yet. It is answered 503 with `Retry-After` and nothing is recorded
/// under its key, so the gateway delivers it again; after the opening, that redelivery books it. (Before,
/// the early `not_found` was recorded for good: 200 "rejected", every redelivery "duplicate", never booked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chargeback_outcome_before_its_opening_is_retried_not_refused_for_good() {
    let db = TestDb::new().await;
    let ex = executor(&db, "default");
    let (user, id) = (Uuid::new_v4(), Uuid::new_v4());
    deposit(&ex, user, id, "50.00", Gateway::Normalized).await;
    let server = Server::start(db.url(), None).await;
    let client = reqwest::Client::new();
    let confirmed = normalized(&format!("ok-{id}"), "deposit_succeeded", id, "50.00");
    let r = post(&client, &server.base, "default", &confirmed)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dispute = |event: &str, kind: &str| Delivery {
        gateway: "normalized",
        body: format!(
            r#"{{"event_id":"{event}","kind":"{kind}","payment_reference":"{id}","amount":"20.00","currency":"USD","dispute_id":"dp_early"}}"#
        ),
    };
    let won = dispute("cb-won", "chargeback_won");
    let early = post(&client, &server.base, "default", &won).await.unwrap();
    assert_eq!(
        early.status(),
        503,
        "an outcome before its opening must be delivered again"
    );
    assert!(early.headers().contains_key("retry-after"));
    // Issue 19 (finding 6): a transient refusal leaves no inbox row (`anomalies` would list it for ever).
    let pool = ledger_store::connect(db.url()).await.unwrap();
    let rows: i64 =
        sqlx::query_scalar("select count(*) from ledger.inbox where disposition = 'rejected'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 0, "a transient refusal wrote a rejected inbox row");
    let opened = dispute("cb-opened", "chargeback_opened");
    let r = post(&client, &server.base, "default", &opened)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = post(&client, &server.base, "default", &won).await.unwrap();
    assert_eq!(again.status(), 200);
    let receipt: serde_json::Value = again.json().await.unwrap();
    assert_eq!(receipt["disposition"], "applied", "{receipt}");
    let v = view(&db, "default").await;
    assert_balanced(&v);
    assert_eq!(count(&v, id, "ChargebackWon"), 1);
}

/// Stripe paying the platform's own bank (`payout.paid` without one of our payment references) is a
/// settlement booked once however often it is delivered: Dr `Assets:Bank:stripe`, Cr Stripe's clearing. Not
/// an anomaly.
#[tokio::test]
async fn stripe_payout_to_the_platforms_bank_is_booked_once_as_a_settlement() {
    let db = TestDb::new().await;
    let server = Server::start(db.url(), None).await;
    // Stripe's clearing holds 200.00 (a deposit), so the settlement of 140.00 can leave it.
    let ex = executor(&db, "default");
    let (buyer, payment_id) = (Uuid::from_u128(0xB1), Uuid::from_u128(0xD1));
    deposit(&ex, buyer, payment_id, "200.00", Gateway::Stripe).await;
    let confirm = Command::ConfirmDeposit {
        payment_id,
        amount: usd("200.00"),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    run(&ex, Actor::Gateway(Gateway::Stripe), confirm).await;
    let body = r#"{"id":"evt_po_1","object":"event","type":"payout.paid","created":1769860800,"data":{"object":{"id":"po_1Abc","object":"payout","amount":14000,"currency":"usd","status":"paid","destination":"ba_1Xyz","metadata":{}}}}"#;
    let delivery = Delivery {
        gateway: "stripe",
        body: body.to_string(),
    };
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = post(&client, &server.base, "default", &delivery)
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    let v = view(&db, "default").await;
    let settlements: usize = v
        .by_stream
        .iter()
        .filter(|(stream, _)| stream.starts_with("settlement-"))
        .map(|(_, events)| events.iter().filter(|t| *t == "SettlementRecorded").count())
        .sum();
    assert_eq!(settlements, 1, "{:?}", v.by_stream);
    let bank: ledger_core::Account = "Assets:Bank:stripe".parse().unwrap();
    assert_eq!(v.balances.balance(&bank, Currency::USD), 14_000);
    let clearing = ledger_core::Account::GatewayClearing(Gateway::Stripe);
    assert_eq!(v.balances.balance(&clearing, Currency::USD), 6_000);
    let dispositions: Vec<String> = sqlx::query_scalar(
        "select disposition from ledger.inbox where gateway = 'stripe' order by received_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        dispositions.first().map(String::as_str),
        Some("applied"),
        "{dispositions:?}"
    );
    assert!(
        !dispositions.iter().any(|d| d == "anomaly"),
        "{dispositions:?}"
    );
}
