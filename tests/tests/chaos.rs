//! Chaos: many processes, crashes and at-least-once clients against one database.
//!
//! Three `escrow-ledger serve` replicas, one `apply` feeder (one `apply -` process per batch of JSON Lines) and
//! one `projections run` share a fresh database. Stories run concurrently: a buyer deposits (the deposit is
//! confirmed by a signed normalized callback), funds a project milestone, the seller delivers, the buyer approves
//! (the release follows), the seller is paid out (confirmed by a callback). Project steps go through
//! `POST /commands` or through `apply` at random; callbacks are delivered 1 to `DELIVERIES_MAX` times, shuffled
//! over the replicas. A client whose request got no answer (its process was killed, 5xx) retries the same
//! request (same `Idempotency-Key`, same callback body) until it is acknowledged: at-least-once. Every
//! `KILL_INTERVAL` a random one of the five processes is killed with SIGKILL and restarted; the chaos ends with
//! every replica killed between the commit and the sequencing of a burst of commands (see `final_burst`).
//!
//! Afterwards: every acknowledged input is in the log exactly once; balances (the trial balance replayed from the
//! log) equal an independent model fed the acknowledged inputs (plain maps, its own arithmetic); nothing is left
//! unsequenced; every projection caught up with the log and `verify` (which also compares every projection with
//! the log) is silent. Findings are collected, not asserted one by one, so that one run reports all of them
//! with its counts (acknowledged, duplicates, retries, kills); run with `--nocapture` to see the counts of a
//! green run. `CHAOS_SEED` replays a workload (the interleaving still depends on timing).
//!
//! The HTTP client follows the contract of issue 9: every command carries an `Idempotency-Key`, no `at`, never
//! a `gateway` actor (gateway outcomes arrive as signed callbacks).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use ledger_store::testdb::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// Inputs the stories send: commands and callbacks (a callback counts once, whatever its deliveries).
const INPUTS_TOTAL: usize = 2_000;
/// Inputs per story (see `story`).
const INPUTS_PER_STORY: usize = 10;
const STORIES: usize = INPUTS_TOTAL / INPUTS_PER_STORY;
/// Stories under way at once.
const STORIES_IN_FLIGHT: usize = 32;
/// HTTP requests under way at once (keeps the replicas' connection pools within the shared server's limit).
const REQUESTS_IN_FLIGHT_MAX: usize = 32;
/// Deliveries of one callback: 1 to this many.
const DELIVERIES_MAX: usize = 5;
/// Share (percent) of project steps sent through `apply` rather than HTTP.
const APPLY_SHARE_PERCENT: u32 = 25;
/// Every this often a random process is killed (SIGKILL) and restarted.
const KILL_INTERVAL: Duration = Duration::from_secs(2);
/// The workload must be acknowledged within this; what is not is a finding. It takes 70-120 s on the
/// two-core development machine while other builds run (load 15), up to 150 s at load 20; less when idle.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(240);
/// One HTTP attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// One `apply` process (a batch).
const APPLY_RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines per `apply` process.
const APPLY_LINES_MAX: usize = 64;
/// After the last kill, every event must be sequenced within this (issue 10 asks for 1 s of commit; this
/// leaves room for a loaded two-core machine).
const SEQUENCED_WITHIN: Duration = Duration::from_secs(10);
/// After the last kill, every projection must reach the head within this.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// `verify`, `trial-balance`, a process start or stop.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Building the binary when this test runs alone and finds it stale.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1_800);
/// Buyers and sellers are shared by the stories (wallet streams see concurrent writers).
const BUYERS: usize = 12;
const SELLERS: usize = 6;
const SERVES: usize = 3;

const API_KEY: &str = "chaos-backend-key-0123456789";
const CALLBACK_SECRET: &str = "chaos-callback-secret-0123456789";
const LEDGER: &str = "default";
const PROJECTIONS: [&str; 5] = ["marketplace", "escrow", "payments", "journal", "audit"];

// ---------------------------------------------------------------------------------------------------------
// The binary

/// Workspace directories the binary is built from (a change in one makes a built binary stale).
const BINARY_SOURCES: [&str; 7] = [
    "ledger-cli/src",
    "ledger-core/src",
    "ledger-store/src",
    "ledger-projections/src",
    "ledger-gateway/src",
    "migrations",
    "Cargo.lock",
];

/// `ESCROW_LEDGER_BIN` when set, else `escrow-ledger` beside this test's own profile directory. `cargo test
/// --workspace` builds it there (ledger-cli's own tests need it); when this test runs alone and finds it
/// missing or older than a source, it builds it with the cargo that built the test.
fn escrow_ledger_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ESCROW_LEDGER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps");
    let binary = profile_dir.join(format!("escrow-ledger{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is a workspace member");
    if !is_fresh(&binary, workspace) {
        build_binary(profile_dir, workspace);
    }
    binary
}

fn is_fresh(binary: &Path, workspace: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    BINARY_SOURCES
        .iter()
        .all(|source| newest(&workspace.join(source), 8).is_none_or(|t| t <= built))
}

/// The newest modification time under `path` (bounded depth).
fn newest(path: &Path, depth_max: usize) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() || depth_max == 0 {
        return own;
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|entry| newest(&entry.path(), depth_max - 1))
        .chain(own)
        .max()
}

fn build_binary(profile_dir: &Path, workspace: &Path) {
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    eprintln!(
        "chaos: building escrow-ledger ({profile}) into {}",
        target_dir.display()
    );
    let mut child = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "ledger-cli", "--bin", "escrow-ledger"])
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(workspace)
        .spawn()
        .expect("cargo starts");
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("cargo runs") {
            assert!(status.success(), "building escrow-ledger failed: {status}");
            return;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            panic!("building escrow-ledger took longer than {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Shared state: counts, findings, the model and what was acknowledged

#[derive(Default)]
struct Counts {
    acknowledged: AtomicU64,
    acknowledged_http: AtomicU64,
    acknowledged_apply: AtomicU64,
    acknowledged_callbacks: AtomicU64,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    kills_serve: AtomicU64,
    kills_apply: AtomicU64,
    kills_projections: AtomicU64,
    apply_runs: AtomicU64,
    apply_timeouts: AtomicU64,
    unacknowledged: AtomicU64,
    unsequenced_age_max_ms: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The independent model: each account's signed balance in minor units (debit positive, credit negative).
#[derive(Default)]
struct Model {
    balances: BTreeMap<String, i64>,
}

impl Model {
    fn post(&mut self, postings: &[(String, i64)]) {
        for (account, amount) in postings {
            *self.balances.entry(account.clone()).or_default() += amount;
        }
    }
}

struct Run {
    servers: Vec<String>,
    http: reqwest::Client,
    requests: Semaphore,
    feeder: mpsc::Sender<ApplyRequest>,
    deadline: Instant,
    counts: Counts,
    findings: Mutex<Vec<String>>,
    model: Mutex<Model>,
    /// (stream, event type) of every acknowledged input: each must be in the log exactly once.
    expected: Mutex<Vec<(String, String, &'static str)>>,
    /// Event ids named by acknowledged outcomes (HTTP and `apply`).
    acknowledged_events: Mutex<Vec<Uuid>>,
}

impl Run {
    fn finding(&self, text: String) {
        self.findings.lock().expect("findings").push(text);
    }

    fn acknowledge(&self, step: &Step) {
        bump(&self.counts.acknowledged);
        bump(match step.route {
            Route::Http => &self.counts.acknowledged_http,
            Route::Apply => &self.counts.acknowledged_apply,
            Route::Callback { .. } => &self.counts.acknowledged_callbacks,
        });
        self.model.lock().expect("model").post(&step.postings);
        let mut expected = self.expected.lock().expect("expected");
        for (stream, event_type) in &step.expect {
            expected.push((stream.clone(), event_type.to_string(), step.label));
        }
    }

    fn outcome_events(&self, outcome: &Value) {
        let ids = outcome["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["event_id"].as_str())
            .filter_map(|id| Uuid::parse_str(id).ok());
        self.acknowledged_events.lock().expect("events").extend(ids);
    }

    async fn pause(&self, rng: &mut StdRng) {
        bump(&self.counts.retries);
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// The workload: stories of ten inputs, each with the postings the model books when it is acknowledged

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Http,
    Apply,
    Callback { deliveries: usize },
}

struct Step {
    label: &'static str,
    route: Route,
    key: String,
    actor: Value,
    /// The command (HTTP, apply) or the callback body.
    body: Value,
    /// (stream, event type) this input puts in the log exactly once.
    expect: Vec<(String, &'static str)>,
    postings: Vec<(String, i64)>,
}

const CLEARING: &str = "Assets:Gateway:Normalized:Clearing";
const GATEWAY_FEES: &str = "Expenses:GatewayFees";
const COMMISSION: &str = "Income:Commission";
const PLATFORM_FEES: &str = "Income:PlatformFees";
const PAYOUT_FEES: &str = "Income:PayoutFees";

fn available(user: Uuid) -> String {
    format!("Liabilities:Users:{user}:Available")
}

/// Minor units (cents) as the exact decimal text of a USD amount.
fn major(minor: i64) -> String {
    assert!(minor >= 0, "amounts in the workload are not negative");
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn usd(minor: i64) -> Value {
    json!({"amount": major(minor), "currency": "USD"})
}

/// A rate in basis points as decimal text ("0.1250").
fn rate(bps: i64) -> String {
    format!("{}.{:04}", bps / 10_000, bps % 10_000)
}

/// `round_half_even(amount * bps / 10_000)`, in integers.
fn fee_half_even(amount: i64, bps: i64) -> i64 {
    let (quotient, remainder) = ((amount * bps) / 10_000, (amount * bps) % 10_000);
    match (2 * remainder).cmp(&10_000) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + 1,
        std::cmp::Ordering::Equal => quotient + quotient % 2,
    }
}

fn user(id: Uuid) -> Value {
    json!({"kind": "user", "id": id})
}

/// The money of one story, drawn at random.
struct Amounts {
    escrow: i64,
    commission_bps: i64,
    buyer_fee_bps: i64,
    buyer_fee: i64,
    commission: i64,
    deposit: i64,
    deposit_fee: i64,
    payout: i64,
    payout_fee: i64,
}

fn amounts(rng: &mut StdRng) -> Amounts {
    let escrow = rng.random_range(100..=50_000);
    let commission_bps = [0, 500, 1_000, 1_250][rng.random_range(0..4)];
    let buyer_fee_bps = [0, 250, 300][rng.random_range(0..3)];
    let (buyer_fee, commission) = (
        fee_half_even(escrow, buyer_fee_bps),
        fee_half_even(escrow, commission_bps),
    );
    let deposit = escrow + buyer_fee + rng.random_range(0..=2_000);
    let deposit_fee = rng.random_range(0..=deposit.min(300));
    let proceeds = escrow - commission;
    let payout_fee = rng.random_range(0..=proceeds / 20);
    let payout = proceeds - payout_fee - rng.random_range(0..=proceeds / 10);
    Amounts {
        escrow,
        commission_bps,
        buyer_fee_bps,
        buyer_fee,
        commission,
        deposit,
        deposit_fee,
        payout,
        payout_fee,
    }
}

fn project_route(rng: &mut StdRng) -> Route {
    if rng.random_ratio(APPLY_SHARE_PERCENT, 100) {
        Route::Apply
    } else {
        Route::Http
    }
}

fn deliveries(rng: &mut StdRng) -> Route {
    Route::Callback {
        deliveries: rng.random_range(1..=DELIVERIES_MAX),
    }
}

/// Builds steps with the story's key prefix.
struct StoryBuilder {
    prefix: String,
    steps: Vec<Step>,
}

impl StoryBuilder {
    fn step(
        &mut self,
        label: &'static str,
        route: Route,
        actor: Value,
        body: Value,
        expect: Vec<(String, &'static str)>,
        postings: Vec<(String, i64)>,
    ) {
        self.steps.push(Step {
            label,
            route,
            key: format!("{}-{label}", self.prefix),
            actor,
            body,
            expect,
            postings,
        });
    }
}

/// One story: deposit initiated (HTTP) and confirmed (callback); project created, submitted, agreed, milestone
/// funded, submitted, approved (the release follows) through HTTP or `apply`; payout requested (HTTP) and
/// confirmed (callback).
fn story(rng: &mut StdRng, run_id: &str, index: usize, buyer: Uuid, seller: Uuid) -> Vec<Step> {
    let m = amounts(rng);
    let (deposit, project, payout) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (payment_stream, project_stream, payout_stream) = (
        format!("payment-{deposit}"),
        format!("project-{project}"),
        format!("payment-{payout}"),
    );
    let (escrow_account, deferred) = (
        format!("Liabilities:Escrow:{project}:1"),
        format!("Liabilities:DeferredFees:{project}"),
    );
    let in_transit = format!("Liabilities:PayoutsInTransit:{payout}");
    let mut b = StoryBuilder {
        prefix: format!("chaos-{run_id}-{index}"),
        steps: Vec::new(),
    };
    b.step(
        "deposit-initiated",
        Route::Http,
        user(buyer),
        json!({"type": "initiate_deposit", "payment_id": deposit, "amount": usd(m.deposit), "gateway": "normalized", "fund": null}),
        vec![(payment_stream.clone(), "DepositInitiated")],
        vec![],
    );
    let mut confirmation = json!({"event_id": format!("chaos-dep-{deposit}"), "kind": "deposit_succeeded",
        "payment_reference": deposit, "amount": major(m.deposit), "currency": "USD"});
    if m.deposit_fee > 0 {
        confirmation["fee"] = json!(major(m.deposit_fee));
    }
    b.step(
        "deposit-succeeded",
        deliveries(rng),
        Value::Null,
        confirmation,
        vec![(payment_stream, "DepositSucceeded")],
        vec![
            (CLEARING.into(), m.deposit - m.deposit_fee),
            (GATEWAY_FEES.into(), m.deposit_fee),
            (available(buyer), -m.deposit),
        ],
    );
    let fees =
        json!({"commission_rate": rate(m.commission_bps), "buyer_fee_rate": rate(m.buyer_fee_bps)});
    b.step(
        "project-created",
        project_route(rng),
        user(buyer),
        json!({"type": "create_project", "project_id": project, "buyer": buyer, "seller": seller,
            "currency": "USD", "milestones": [usd(m.escrow)], "fees": fees}),
        vec![(project_stream.clone(), "ProjectCreated")],
        vec![],
    );
    let project_steps: [(&'static str, Uuid, &str, &'static str); 4] = [
        (
            "project-submitted",
            buyer,
            "submit_project_for_agreement",
            "ProjectSubmittedForAgreement",
        ),
        (
            "project-agreed",
            seller,
            "agree_to_project",
            "ProjectAgreed",
        ),
        (
            "milestone-funded",
            buyer,
            "fund_milestone",
            "MilestoneFunded",
        ),
        (
            "milestone-submitted",
            seller,
            "submit_milestone",
            "MilestoneSubmitted",
        ),
    ];
    for (label, actor, command, event_type) in project_steps {
        let mut body = json!({"type": command, "project_id": project});
        if command.contains("milestone") {
            body["milestone"] = json!(1);
        }
        let postings = if label == "milestone-funded" {
            vec![
                (available(buyer), m.escrow + m.buyer_fee),
                (escrow_account.clone(), -m.escrow),
                (deferred.clone(), -m.buyer_fee),
            ]
        } else {
            vec![]
        };
        b.step(
            label,
            project_route(rng),
            user(actor),
            body,
            vec![(project_stream.clone(), event_type)],
            postings,
        );
    }
    b.step(
        "milestone-approved",
        project_route(rng),
        user(buyer),
        json!({"type": "approve_milestone", "project_id": project, "milestone": 1}),
        vec![
            (project_stream.clone(), "MilestoneApproved"),
            (project_stream, "MilestoneReleased"),
        ],
        vec![
            (escrow_account, m.escrow),
            (available(seller), -(m.escrow - m.commission)),
            (COMMISSION.into(), -m.commission),
            (deferred, m.buyer_fee),
            (PLATFORM_FEES.into(), -m.buyer_fee),
        ],
    );
    let payout_fee = (m.payout_fee > 0).then(|| usd(m.payout_fee));
    b.step(
        "payout-requested",
        Route::Http,
        user(seller),
        json!({"type": "request_payout", "payout_id": payout, "amount": usd(m.payout), "fee": payout_fee, "gateway": "normalized"}),
        vec![(payout_stream.clone(), "PayoutRequested")],
        vec![
            (available(seller), m.payout + m.payout_fee),
            (in_transit.clone(), -(m.payout + m.payout_fee)),
        ],
    );
    b.step(
        "payout-succeeded",
        deliveries(rng),
        Value::Null,
        json!({"event_id": format!("chaos-po-{payout}"), "kind": "payout_succeeded",
            "payment_reference": payout, "amount": major(m.payout), "currency": "USD"}),
        vec![(payout_stream, "PayoutCompleted")],
        vec![
            (in_transit, m.payout + m.payout_fee),
            (CLEARING.into(), -m.payout),
            (PAYOUT_FEES.into(), -m.payout_fee),
        ],
    );
    assert_eq!(b.steps.len(), INPUTS_PER_STORY);
    b.steps
}

/// Runs one story's steps in order; a step that is not acknowledged ends the story (a finding).
async fn run_story(run: Arc<Run>, steps: Vec<Step>, mut rng: StdRng) {
    for (done, step) in steps.iter().enumerate() {
        let sent = match step.route {
            Route::Http => post_command(&run, &mut rng, step).await,
            Route::Apply => apply_line(&run, step).await,
            Route::Callback { deliveries } => deliver_all(&run, &mut rng, step, deliveries).await,
        };
        match sent {
            Ok(()) => run.acknowledge(step),
            Err(why) => {
                run.finding(format!("{} ({:?}): {why}", step.key, step.route));
                let left = u64::try_from(steps.len() - done).unwrap_or(u64::MAX);
                run.counts.unacknowledged.fetch_add(left, Ordering::Relaxed);
                return;
            }
        }
    }
}

async fn run_stories(run: &Arc<Run>, seed: u64, run_id: &str) {
    let mut rng = StdRng::seed_from_u64(seed);
    let buyers: Vec<Uuid> = (0..BUYERS).map(|_| Uuid::new_v4()).collect();
    let sellers: Vec<Uuid> = (0..SELLERS).map(|_| Uuid::new_v4()).collect();
    let slots = Arc::new(Semaphore::new(STORIES_IN_FLIGHT));
    let mut tasks = Vec::with_capacity(STORIES);
    for index in 0..STORIES {
        let (buyer, seller) = (
            buyers[rng.random_range(0..BUYERS)],
            sellers[rng.random_range(0..SELLERS)],
        );
        let steps = story(&mut rng, run_id, index, buyer, seller);
        let story_rng = StdRng::seed_from_u64(rng.random());
        let (run, slots) = (run.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("slots stay open");
            run_story(run, steps, story_rng).await;
        }));
    }
    // Every attempt ends by the deadline plus one attempt's timeout; this bound only guards against a bug here.
    let bound = run.deadline + ATTEMPT_TIMEOUT + APPLY_RUN_TIMEOUT;
    let joined = tokio::time::timeout_at(bound, futures::future::join_all(tasks)).await;
    match joined {
        Ok(results) if results.iter().all(Result::is_ok) => {}
        Ok(_) => run.finding("a story task panicked".into()),
        Err(_) => run.finding("stories still running after the deadline".into()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Clients: HTTP commands, signed callbacks, apply lines

enum Attempt {
    Done(Value),
    Retry,
    Refused(String),
}

/// One HTTP answer: 2xx is an answer to read, 408/429/5xx and lost connections are retried.
async fn classify(answer: reqwest::Result<reqwest::Response>) -> Attempt {
    let Ok(response) = answer else {
        return Attempt::Retry;
    };
    let status = response.status().as_u16();
    let Ok(text) = response.text().await else {
        return Attempt::Retry;
    };
    match status {
        200..=299 => match serde_json::from_str(&text) {
            Ok(value) => Attempt::Done(value),
            Err(e) => Attempt::Refused(format!(
                "{status} with a body that is not JSON ({e}): {text}"
            )),
        },
        408 | 429 | 500..=599 => Attempt::Retry,
        _ => Attempt::Refused(format!("{status}: {}", clip(&text))),
    }
}

fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

fn past_deadline(run: &Run) -> bool {
    Instant::now() >= run.deadline
}

async fn post_command(run: &Run, rng: &mut StdRng, step: &Step) -> Result<(), String> {
    loop {
        if past_deadline(run) {
            return Err("not acknowledged before the deadline".into());
        }
        let base = &run.servers[rng.random_range(0..run.servers.len())];
        // A fresh command id per attempt: an answer naming another id is the replay of an earlier attempt.
        let attempt_id = Uuid::new_v4();
        let body = json!({"command_id": attempt_id, "actor": step.actor, "command": step.body});
        let permit = run.requests.acquire().await.expect("open");
        let answer = run
            .http
            .post(format!("{base}/v1/ledgers/{LEDGER}/commands"))
            .bearer_auth(API_KEY)
            .header("idempotency-key", &step.key)
            .json(&body)
            .send()
            .await;
        let attempt = classify(answer).await;
        drop(permit);
        match attempt {
            Attempt::Done(outcome) => return accepted(run, &outcome, Some(attempt_id)),
            Attempt::Retry => run.pause(rng).await,
            Attempt::Refused(why) => return Err(why),
        }
    }
}

/// An acknowledged outcome must be an acceptance whose follow-ups were all accepted.
fn accepted(run: &Run, outcome: &Value, attempt_id: Option<Uuid>) -> Result<(), String> {
    if outcome["status"] != "accepted" {
        return Err(format!(
            "acknowledged but not accepted: {}",
            clip(&outcome.to_string())
        ));
    }
    let refused_follow_up = outcome["follow_ups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| !f["rejection"].is_null());
    if let Some(f) = refused_follow_up {
        run.finding(format!("a follow-up was refused: {f}"));
    }
    let replayed = attempt_id.is_some_and(|id| outcome["command_id"] != json!(id));
    if replayed {
        bump(&run.counts.duplicates);
    }
    run.outcome_events(outcome);
    Ok(())
}

fn signature(timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(CALLBACK_SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Every delivery of one callback, concurrently, each to random replicas; all must be acknowledged.
async fn deliver_all(
    run: &Run,
    rng: &mut StdRng,
    step: &Step,
    deliveries: usize,
) -> Result<(), String> {
    let body = step.body.to_string();
    let sends = (0..deliveries).map(|_| {
        let mut rng = StdRng::seed_from_u64(rng.random());
        let body = body.clone();
        async move {
            // Shuffled: the deliveries start in random order, interleaved with other stories' traffic.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
            deliver(run, &mut rng, &body).await
        }
    });
    let answers = futures::future::join_all(sends).await;
    let applied = answers.iter().filter(|a| matches!(a, Ok(true))).count();
    if applied > 1 {
        run.finding(format!(
            "{}: {applied} deliveries answered \"applied\"",
            step.key
        ));
    }
    answers
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(|_| ())
}

/// One delivery until acknowledged: `Ok(true)` applied, `Ok(false)` duplicate.
async fn deliver(run: &Run, rng: &mut StdRng, body: &str) -> Result<bool, String> {
    bump(&run.counts.deliveries);
    loop {
        if past_deadline(run) {
            return Err("delivery not acknowledged before the deadline".into());
        }
        let base = &run.servers[rng.random_range(0..run.servers.len())];
        let permit = run.requests.acquire().await.expect("open");
        let answer = run
            .http
            .post(format!("{base}/v1/ledgers/{LEDGER}/callbacks/normalized"))
            .header("x-escrow-signature", signature(unix_now(), body.as_bytes()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        let attempt = classify(answer).await;
        drop(permit);
        match attempt {
            Attempt::Done(receipt) => return disposition(run, &receipt),
            Attempt::Retry => run.pause(rng).await,
            Attempt::Refused(why) => return Err(why),
        }
    }
}

fn disposition(run: &Run, receipt: &Value) -> Result<bool, String> {
    match receipt["disposition"].as_str() {
        Some("applied") => Ok(true),
        Some("duplicate") => {
            bump(&run.counts.duplicates);
            Ok(false)
        }
        _ => Err(format!("callback answered {}", clip(&receipt.to_string()))),
    }
}

struct ApplyRequest {
    line: String,
    reply: oneshot::Sender<Value>,
}

/// One line through the feeder; its result line must say `accepted`.
async fn apply_line(run: &Run, step: &Step) -> Result<(), String> {
    let line =
        json!({"actor": step.actor, "idempotency_key": step.key, "command": step.body}).to_string();
    let (reply, answer) = oneshot::channel();
    run.feeder
        .send(ApplyRequest { line, reply })
        .await
        .map_err(|_| "the apply feeder stopped".to_string())?;
    match tokio::time::timeout_at(run.deadline, answer).await {
        Ok(Ok(result)) => accepted(run, &result, None),
        Ok(Err(_)) => Err("the apply feeder dropped the line".into()),
        Err(_) => Err("not acknowledged by apply before the deadline".into()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The apply feeder: one `apply -` process per batch; lines without a result line are run again

struct Feeder {
    bin: PathBuf,
    url: String,
    log: PathBuf,
    run: Arc<Run>,
}

async fn feeder(
    f: Feeder,
    mut requests: mpsc::Receiver<ApplyRequest>,
    mut kills: mpsc::Receiver<oneshot::Sender<bool>>,
) {
    let mut pending: Vec<ApplyRequest> = Vec::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(r) => pending.push(r),
                    None => return,
                },
                Some(kill) = kills.recv() => { let _ = kill.send(false); continue; }
            }
        }
        while pending.len() < APPLY_LINES_MAX {
            match requests.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        pending.retain(|r| !r.reply.is_closed());
        let take = pending.len().min(APPLY_LINES_MAX);
        let batch: Vec<ApplyRequest> = pending.drain(..take).collect();
        let mut left = run_apply(&f, batch, &mut kills).await;
        left.append(&mut pending);
        pending = left;
    }
}

async fn run_apply(
    f: &Feeder,
    batch: Vec<ApplyRequest>,
    kills: &mut mpsc::Receiver<oneshot::Sender<bool>>,
) -> Vec<ApplyRequest> {
    bump(&f.run.counts.apply_runs);
    let input: String = batch.iter().map(|r| format!("{}\n", r.line)).collect();
    let mut slots: Vec<Option<ApplyRequest>> = batch.into_iter().map(Some).collect();
    let mut command = Command::new(&f.bin);
    command
        .arg("--database-url")
        .arg(&f.url)
        .args(["apply", "-"])
        .env_remove("ESCROW_LEDGER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(&f.log))
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            f.run.finding(format!("apply does not start: {e}"));
            return slots.into_iter().flatten().collect();
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let timeout = tokio::time::sleep(APPLY_RUN_TIMEOUT);
    tokio::pin!(timeout);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) => answer(&mut slots, &text),
                _ => break,
            },
            Some(kill) = kills.recv() => {
                let _ = child.start_kill();
                let _ = kill.send(true);
            }
            () = &mut timeout => {
                bump(&f.run.counts.apply_timeouts);
                let _ = child.start_kill();
                break;
            }
        }
    }
    let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
    writer.abort();
    let left: Vec<ApplyRequest> = slots
        .into_iter()
        .flatten()
        .filter(|r| !r.reply.is_closed())
        .collect();
    f.run.counts.retries.fetch_add(
        u64::try_from(left.len()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    left
}

/// A result line (`{"line": n, "status": ...}`) answers the n-th line of the batch.
fn answer(slots: &mut [Option<ApplyRequest>], text: &str) {
    let Ok(result) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let index = result["line"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_sub(1));
    if let Some(request) = index.and_then(|i| slots.get_mut(i)).and_then(Option::take) {
        let _ = request.reply.send(result);
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fleet: three serve replicas and a projection runner, killed and restarted at random

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Serve(usize),
    Projections,
}

struct Fleet {
    bin: PathBuf,
    url: String,
    logs: PathBuf,
    ports: Vec<u16>,
    processes: Vec<(Role, Child)>,
}

fn log_file(path: &Path) -> Stdio {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A free port below Linux's ephemeral range (32768-60999): a serve restarted after SIGKILL binds the same
/// port again, and one from the ephemeral range may meanwhile be the local port of one of the many outgoing
/// connections (to PostgreSQL, between processes), which made the restart fail with "address in use".
fn free_port() -> u16 {
    for _ in 0..1_000 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

impl Fleet {
    async fn start(bin: PathBuf, url: &str, logs: PathBuf, http: &reqwest::Client) -> Fleet {
        let mut fleet = Fleet {
            bin,
            url: url.to_string(),
            logs,
            ports: (0..SERVES).map(|_| free_port()).collect(),
            processes: Vec::new(),
        };
        let roles = (0..SERVES).map(Role::Serve).chain([Role::Projections]);
        for role in roles {
            let child = fleet.spawn(role);
            fleet.processes.push((role, child));
        }
        for base in fleet.bases() {
            assert!(
                healthy(http, &base).await,
                "{base} did not answer /healthz within {TOOL_TIMEOUT:?}"
            );
        }
        fleet
    }

    fn bases(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    fn spawn(&self, role: Role) -> Child {
        let mut command = Command::new(&self.bin);
        command.arg("--database-url").arg(&self.url);
        let log = match role {
            Role::Serve(i) => {
                command
                    .args(["serve", "--listen", &format!("127.0.0.1:{}", self.ports[i])])
                    .env("ESCROW_LEDGER_API_KEY", API_KEY)
                    .env("ESCROW_LEDGER_CALLBACK_SECRET", CALLBACK_SECRET);
                format!("serve-{i}.log")
            }
            Role::Projections => {
                command.args(["projections", "run"]);
                "projections.log".to_string()
            }
        };
        command
            .env_remove("ESCROW_LEDGER")
            .stdin(Stdio::null())
            .stdout(log_file(&self.logs.join(&log)))
            .stderr(log_file(&self.logs.join(&log)))
            .kill_on_drop(true)
            .spawn()
            .expect("escrow-ledger starts")
    }

    async fn kill_and_restart(&mut self, index: usize) {
        let role = self.processes[index].0;
        let child = &mut self.processes[index].1;
        let _ = child.start_kill();
        let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        self.processes[index].1 = self.spawn(role);
    }

    /// A process that exited without being killed is a finding; it is restarted.
    async fn restart_exited(&mut self, run: &Run) {
        for index in 0..self.processes.len() {
            let (role, child) = &mut self.processes[index];
            if let Ok(Some(status)) = child.try_wait() {
                run.finding(format!("{role:?} exited by itself ({status}); see its log"));
                let role = *role;
                self.processes[index].1 = self.spawn(role);
            }
        }
    }

    async fn stop(mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        }
    }
}

/// Whether `base` answers `/healthz` within `TOOL_TIMEOUT`.
async fn healthy(http: &reqwest::Client, base: &str) -> bool {
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while Instant::now() < deadline {
        let answer = http.get(format!("{base}/healthz")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Every `KILL_INTERVAL`: SIGKILL to a random one of the five processes (the running `apply`, when that is
/// the one drawn and one is running; else another), then a restart. Returns the fleet when told to stop.
async fn chaos(
    mut fleet: Fleet,
    run: Arc<Run>,
    apply_kills: mpsc::Sender<oneshot::Sender<bool>>,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) -> Fleet {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
    loop {
        tokio::select! {
            () = tokio::time::sleep(KILL_INTERVAL) => {}
            _ = stop.changed() => return fleet,
        }
        fleet.restart_exited(&run).await;
        let choices = fleet.processes.len() + 1;
        if rng.random_range(0..choices) == choices - 1 && kill_apply(&apply_kills).await {
            bump(&run.counts.kills_apply);
            continue;
        }
        let index = rng.random_range(0..fleet.processes.len());
        bump(match fleet.processes[index].0 {
            Role::Serve(_) => &run.counts.kills_serve,
            Role::Projections => &run.counts.kills_projections,
        });
        fleet.kill_and_restart(index).await;
    }
}

/// Commands in the final burst (spread over the replicas).
const FINAL_BURST: usize = 24;
/// How long the final burst may take to leave committed events waiting for the sequencer.
const BURST_COMMIT_WAIT: Duration = Duration::from_secs(5);
/// The per-ledger sequencer's advisory lock (`ledger.sequence`). Should it be renamed, the final burst only
/// loses its edge (no writer waits), it never makes a false finding.
const SEQUENCER_LOCK: &str = "escrow-ledger.sequence:";

/// The chaos ends with a writer killed between commit and sequencing, made certain rather than lucky: the
/// test holds the sequencer's lock, sends a burst of commands to every replica, waits until some have
/// committed (they then wait for the sequencer), kills every replica, restarts them and lets the lock go.
/// Nothing appends after that, so only a sequencer of its own sequences what the killed writers left. The
/// burst initiates deposits (no money moves) and is not acknowledged: neither the model nor the log check
/// counts it.
async fn final_burst(run: &Run, fleet: &mut Fleet, pool: &PgPool, run_id: &str) {
    let lock = hold_sequencer(&fleet.url).await;
    if let Err(e) = &lock {
        run.finding(format!(
            "cannot take the sequencer's lock for the final burst: {e}"
        ));
    }
    let tasks: Vec<_> = (0..FINAL_BURST)
        .map(|i| burst_command(run, run_id, i))
        .collect();
    let committed = Instant::now() + BURST_COMMIT_WAIT;
    while Instant::now() < committed
        && unsequenced(pool)
            .await
            .is_ok_and(|(n, _)| n < i64::try_from(FINAL_BURST / 4).unwrap_or(0))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let serves: Vec<usize> = (0..fleet.processes.len())
        .filter(|i| matches!(fleet.processes[*i].0, Role::Serve(_)))
        .collect();
    for &index in &serves {
        let _ = fleet.processes[index].1.start_kill();
        bump(&run.counts.kills_serve);
    }
    for &index in &serves {
        fleet.kill_and_restart(index).await;
    }
    // Long enough for the killed writers' sessions to notice (see `check_clients`).
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Ok(connection) = lock {
        let _ = connection.close().await;
    }
    let _ = tokio::time::timeout(ATTEMPT_TIMEOUT, futures::future::join_all(tasks)).await;
    for base in &run.servers {
        if !healthy(&run.http, base).await {
            run.finding(format!("{base} did not answer /healthz after its restart"));
        }
    }
}

/// A connection holding the sequencer's lock of `LEDGER` until it is closed.
async fn hold_sequencer(url: &str) -> Result<PgConnection, sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    sqlx::query("select pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("{SEQUENCER_LOCK}{LEDGER}"))
        .execute(&mut connection)
        .await?;
    Ok(connection)
}

fn burst_command(run: &Run, run_id: &str, i: usize) -> tokio::task::JoinHandle<()> {
    let base = run.servers[i % run.servers.len()].clone();
    let http = run.http.clone();
    let command = json!({"type": "initiate_deposit", "payment_id": Uuid::new_v4(),
        "amount": usd(100), "gateway": "normalized", "fund": null});
    let body = json!({"actor": user(Uuid::new_v4()), "command": command});
    let key = format!("chaos-{run_id}-burst-{i}");
    tokio::spawn(async move {
        let _ = http
            .post(format!("{base}/v1/ledgers/{LEDGER}/commands"))
            .bearer_auth(API_KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await;
    })
}

/// Sessions of the test database check every 200 ms that their client is still there while they run a
/// statement, so that a killed writer's session waiting for the sequencer's lock ends instead of
/// sequencing, after the fact, for a process that no longer exists. (PostgreSQL 14 and later; older servers
/// keep the default and the final burst is only less sharp.)
async fn check_clients(pool: &PgPool, database: &str) {
    // An identifier cannot be a bind parameter; `database` is the test database's generated name.
    let statement =
        format!("alter database \"{database}\" set client_connection_check_interval = '200ms'");
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(pool)
        .await;
}

/// Asks the feeder to kill its running `apply`; false when none is running.
async fn kill_apply(kills: &mpsc::Sender<oneshot::Sender<bool>>) -> bool {
    let (reply, answer) = oneshot::channel();
    if kills.send(reply).await.is_err() {
        return false;
    }
    tokio::time::timeout(STOP_TIMEOUT, answer)
        .await
        .is_ok_and(|killed| killed.unwrap_or(false))
}

// ---------------------------------------------------------------------------------------------------------
// Checks after the chaos

/// Events committed but without a position: (count, age of the oldest in ms).
const UNSEQUENCED: &str = "select count(*)::bigint,
        coalesce((extract(epoch from clock_timestamp() - min(e.recorded_at)) * 1000)::bigint, 0)
   from ledger.events e
  where e.ledger_id = $1
    and not exists (select 1 from ledger.sequence s where s.ledger_id = e.ledger_id and s.local_id = e.local_id)";

async fn unsequenced(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(UNSEQUENCED)
        .bind(LEDGER)
        .fetch_one(pool)
        .await
}

/// Samples the age of the oldest unsequenced event during the chaos (a figure for the report).
async fn sample_unsequenced(pool: PgPool, run: Arc<Run>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        if let Ok((_, age_ms)) = unsequenced(&pool).await {
            let age = u64::try_from(age_ms).unwrap_or(0);
            run.counts
                .unsequenced_age_max_ms
                .fetch_max(age, Ordering::Relaxed);
        }
    }
}

/// Waits (bounded) until nothing is left unsequenced; returns how long that took.
async fn wait_sequenced(pool: &PgPool, run: &Run) -> Duration {
    let started = Instant::now();
    loop {
        match unsequenced(pool).await {
            Ok((0, _)) => return started.elapsed(),
            Ok((count, age_ms)) if started.elapsed() >= SEQUENCED_WITHIN => {
                run.finding(format!(
                    "{count} events left unsequenced {SEQUENCED_WITHIN:?} after the chaos stopped (oldest {age_ms} ms)"
                ));
                return started.elapsed();
            }
            Err(e) if started.elapsed() >= SEQUENCED_WITHIN => {
                run.finding(format!("cannot count unsequenced events: {e}"));
                return started.elapsed();
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(max(position), 0)::bigint from ledger.sequence where ledger_id = $1",
    )
    .bind(LEDGER)
    .fetch_one(pool)
    .await
}

/// Projections whose checkpoint is not the head yet, with their positions.
async fn behind(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let head = head(pool).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select projection, position from escrow.projection_checkpoints where ledger_id = $1",
    )
    .bind(LEDGER)
    .fetch_all(pool)
    .await?;
    let at: HashMap<String, i64> = rows.into_iter().collect();
    Ok(PROJECTIONS
        .iter()
        .filter(|p| at.get(**p) != Some(&head))
        .map(|p| format!("{p} at {:?} (head {head})", at.get(*p)))
        .collect())
}

async fn wait_projections(pool: &PgPool, run: &Run) {
    let started = Instant::now();
    loop {
        let behind = behind(pool).await;
        match behind {
            Ok(list) if list.is_empty() => return,
            Ok(list) if started.elapsed() >= CATCH_UP_TIMEOUT => {
                run.finding(format!(
                    "projections behind the log after {CATCH_UP_TIMEOUT:?}: {}",
                    list.join(", ")
                ));
                return;
            }
            Err(e) if started.elapsed() >= CATCH_UP_TIMEOUT => {
                run.finding(format!("cannot read the projection checkpoints: {e}"));
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Every acknowledged input is in the log exactly once; every event an acknowledged outcome named exists.
async fn check_log(pool: &PgPool, run: &Run) -> Result<(), sqlx::Error> {
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "select stream_id, event_type, count(*)::bigint from ledger.events where ledger_id = $1 group by 1, 2",
    )
    .bind(LEDGER)
    .fetch_all(pool)
    .await?;
    let counts: HashMap<(String, String), i64> = counts
        .into_iter()
        .map(|(stream, event_type, n)| ((stream, event_type), n))
        .collect();
    let expected = run.expected.lock().expect("expected").clone();
    for (stream, event_type, label) in expected {
        let n = counts
            .get(&(stream.clone(), event_type.clone()))
            .copied()
            .unwrap_or(0);
        if n != 1 {
            run.finding(format!(
                "acknowledged {label}: {stream} has {n} {event_type} events, expected exactly 1"
            ));
        }
    }
    let ids: Vec<Uuid> =
        sqlx::query_scalar("select event_id from ledger.events where ledger_id = $1")
            .bind(LEDGER)
            .fetch_all(pool)
            .await?;
    let ids: HashSet<Uuid> = ids.into_iter().collect();
    let named = run.acknowledged_events.lock().expect("events").clone();
    let missing = named.iter().filter(|id| !ids.contains(id)).count();
    if missing > 0 {
        run.finding(format!(
            "{missing} events named by acknowledged outcomes are not in the log"
        ));
    }
    Ok(())
}

/// Runs the binary with a bound on its time: (exit code, stdout, stderr).
async fn tool(
    bin: &Path,
    url: &str,
    args: &[&str],
) -> Result<(Option<i32>, String, String), String> {
    let output = Command::new(bin)
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("ESCROW_LEDGER")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(TOOL_TIMEOUT, output).await {
        Ok(Ok(out)) => Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )),
        Ok(Err(e)) => Err(format!("{args:?} does not run: {e}")),
        Err(_) => Err(format!("{args:?} took longer than {TOOL_TIMEOUT:?}")),
    }
}

/// "12.34" as minor units.
fn minor(text: &str) -> Option<i64> {
    let (units, cents) = text.split_once('.')?;
    if cents.len() != 2 {
        return None;
    }
    Some(units.parse::<i64>().ok()? * 100 + cents.parse::<i64>().ok()?)
}

/// The trial balance replayed from the log, as signed minor units per account (debit positive).
fn ledger_balances(report: &Value) -> Result<BTreeMap<String, i64>, String> {
    let mut balances = BTreeMap::new();
    for row in report["rows"]
        .as_array()
        .ok_or("no rows in the trial balance")?
    {
        let account = row["account"].as_str().ok_or("a row without an account")?;
        if row["currency"] != "USD" {
            return Err(format!("unexpected currency in {row}"));
        }
        let side = |name: &str| {
            row[name]
                .as_str()
                .and_then(minor)
                .ok_or(format!("bad {name} in {row}"))
        };
        *balances.entry(account.to_string()).or_insert(0) += side("debit")? - side("credit")?;
    }
    balances.retain(|_, v| *v != 0);
    Ok(balances)
}

async fn check_balances(bin: &Path, url: &str, run: &Run) {
    let (code, stdout, stderr) = match tool(bin, url, &["trial-balance", "--format", "json"]).await
    {
        Ok(out) => out,
        Err(e) => return run.finding(e),
    };
    let report = serde_json::from_str::<Value>(stdout.trim()).map_err(|e| e.to_string());
    let ledger = match (code, report) {
        (Some(0), Ok(report)) => ledger_balances(&report),
        (code, _) => Err(format!("trial-balance exit {code:?}: {}", clip(&stderr))),
    };
    let ledger = match ledger {
        Ok(balances) => balances,
        Err(e) => return run.finding(format!("trial balance: {e}")),
    };
    let mut model = run.model.lock().expect("model").balances.clone();
    model.retain(|_, v| *v != 0);
    let accounts: HashSet<&String> = ledger.keys().chain(model.keys()).collect();
    let mut differences: Vec<String> = accounts
        .into_iter()
        .filter(|a| ledger.get(*a) != model.get(*a))
        .map(|a| format!("{a}: log {:?}, model {:?}", ledger.get(a), model.get(a)))
        .collect();
    differences.sort();
    if !differences.is_empty() {
        run.finding(format!(
            "{} accounts differ from the model, e.g. {}",
            differences.len(),
            differences
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

async fn check_verify(bin: &Path, url: &str, run: &Run) {
    match tool(bin, url, &["verify"]).await {
        Ok((Some(0), stdout, _)) if stdout.trim().is_empty() => {}
        Ok((code, stdout, stderr)) => run.finding(format!(
            "verify exit {code:?}: {} {}",
            clip(stdout.trim()),
            clip(stderr.trim())
        )),
        Err(e) => run.finding(e),
    }
}

fn report(run: &Run, seed: u64, elapsed: Duration, drained: Duration) -> String {
    let c = &run.counts;
    let findings = run.findings.lock().expect("findings");
    let mut text = format!(
        "chaos (seed {seed}): {STORIES} stories, {INPUTS_TOTAL} inputs in {elapsed:.1?}: acknowledged {} \
         (http {}, apply {}, callbacks {} with {} deliveries), unacknowledged {}, duplicates {}, retries {}, \
         kills {} (serve {}, apply {}, projections {}), apply runs {} ({} timed out), oldest unsequenced event \
         seen during the chaos {} ms, sequenced {drained:.1?} after it stopped; findings: {}",
        read(&c.acknowledged),
        read(&c.acknowledged_http),
        read(&c.acknowledged_apply),
        read(&c.acknowledged_callbacks),
        read(&c.deliveries),
        read(&c.unacknowledged),
        read(&c.duplicates),
        read(&c.retries),
        read(&c.kills_serve) + read(&c.kills_apply) + read(&c.kills_projections),
        read(&c.kills_serve),
        read(&c.kills_apply),
        read(&c.kills_projections),
        read(&c.apply_runs),
        read(&c.apply_timeouts),
        read(&c.unsequenced_age_max_ms),
        findings.len(),
    );
    for finding in findings.iter().take(40) {
        text.push_str(&format!("\n  - {finding}"));
    }
    if findings.len() > 40 {
        text.push_str(&format!("\n  ... and {} more", findings.len() - 40));
    }
    text
}

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_replicas_a_feeder_and_projections_under_sigkill() {
    let bin = escrow_ledger_binary();
    let db = TestDb::new().await;
    check_clients(&db.pool, db.name()).await;
    let seed = seed();
    let run_id = format!("{:08x}", seed & 0xFFFF_FFFF);
    let logs = std::env::temp_dir().join(format!("escrow-chaos-{}", db.name()));
    std::fs::create_dir_all(&logs).expect("a log directory");
    eprintln!("chaos: seed {seed}, logs in {}", logs.display());
    let http = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let fleet = Fleet::start(bin.clone(), db.url(), logs.clone(), &http).await;
    let (apply_tx, apply_rx) = mpsc::channel(STORIES);
    let (kill_tx, kill_rx) = mpsc::channel(4);
    let started = Instant::now();
    let run = Arc::new(Run {
        servers: fleet.bases(),
        http,
        requests: Semaphore::new(REQUESTS_IN_FLIGHT_MAX),
        feeder: apply_tx,
        deadline: started + WORKLOAD_TIMEOUT,
        counts: Counts::default(),
        findings: Mutex::new(Vec::new()),
        model: Mutex::new(Model::default()),
        expected: Mutex::new(Vec::new()),
        acknowledged_events: Mutex::new(Vec::new()),
    });
    let feeder_config = Feeder {
        bin: bin.clone(),
        url: db.url().to_string(),
        log: logs.join("apply.log"),
        run: run.clone(),
    };
    let feeder = tokio::spawn(feeder(feeder_config, apply_rx, kill_rx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let chaos = tokio::spawn(chaos(fleet, run.clone(), kill_tx, stop_rx.clone(), seed));
    let sampler = tokio::spawn(sample_unsequenced(db.pool.clone(), run.clone(), stop_rx));

    run_stories(&run, seed, &run_id).await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let mut fleet = chaos.await.expect("the chaos task ends");
    let _ = sampler.await;
    feeder.abort();
    fleet.restart_exited(&run).await;
    final_burst(&run, &mut fleet, &db.pool, &run_id).await;

    let drained = wait_sequenced(&db.pool, &run).await;
    wait_projections(&db.pool, &run).await;
    fleet.stop().await;
    if let Err(e) = check_log(&db.pool, &run).await {
        run.finding(format!("cannot read the log: {e}"));
    }
    check_balances(&bin, db.url(), &run).await;
    check_verify(&bin, db.url(), &run).await;

    let text = report(&run, seed, elapsed, drained);
    let all = run.findings.lock().expect("findings").join("\n");
    let _ = std::fs::write(logs.join("findings.txt"), all);
    println!(
        "{text}\n(every finding: {})",
        logs.join("findings.txt").display()
    );
    let clean = run.findings.lock().expect("findings").is_empty();
    if clean {
        // The logs matter only when something was found.
        let _ = std::fs::remove_dir_all(&logs);
    }
    assert!(clean, "{text}");
}

#[test]
fn the_model_rounds_half_to_even() {
    // 10,050 minor at 5% -> 502.5 -> 502; 10,150 at 5% -> 507.5 -> 508; 101 at 2.5% -> 2.525 -> 3.
    assert_eq!(fee_half_even(10_050, 500), 502);
    assert_eq!(fee_half_even(10_150, 500), 508);
    assert_eq!(fee_half_even(101, 250), 3);
    assert_eq!(fee_half_even(100, 0), 0);
    assert_eq!(minor("29.67"), Some(2_967));
    assert_eq!(minor("0.05"), Some(5));
    assert_eq!(minor("1.5"), None);
    assert_eq!(major(2_967), "29.67");
    assert_eq!(rate(1_250), "0.1250");
}
