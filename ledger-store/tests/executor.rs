//! The command executor against a real PostgreSQL (and the in-memory store where noted): conflicts on one
//! wallet, idempotency under races, group commit, follow-ups in the same append, crash safety.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::engine::{AggState, StreamId};
use ledger_core::{
    Actor, Command, CommandEnvelope, Currency, Event, Gateway, MemoryLedger, Money, Rate,
};
use ledger_store::testdb::TestDb;
use ledger_store::{
    CommandOutcome, DEFAULT_LEDGER, EventStore, ExecError, Executor, ExecutorConfig,
    InMemoryEventStore,
};
use uuid::Uuid;

const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn env(actor: Actor, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor,
        at: at(0),
        command,
    }
}

fn executor(store: Arc<dyn EventStore>) -> Executor {
    Executor::new(
        store,
        DEFAULT_LEDGER,
        ExecutorConfig {
            attempts_max: 50,
            ..ExecutorConfig::default()
        },
    )
}

async fn run(ex: &Executor, actor: Actor, command: Command) -> CommandOutcome {
    ex.execute(&env(actor, command), None)
        .await
        .expect("no store error")
}

/// A deposit confirmed by the gateway: the buyer's wallet holds `minor`.
async fn fund_wallet(ex: &Executor, user: Uuid, payment: u128, minor: i64) {
    let payment_id = Uuid::from_u128(payment);
    let init = Command::InitiateDeposit {
        payment_id,
        amount: usd(minor),
        gateway: Gateway::Stripe,
        fund: None,
    };
    assert!(run(ex, Actor::User(user), init).await.is_accepted());
    let confirm = Command::ConfirmDeposit {
        payment_id,
        amount: usd(minor),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    };
    assert!(
        run(ex, Actor::Gateway(Gateway::Stripe), confirm)
            .await
            .is_accepted()
    );
}

/// Replays the whole log through the core: the ledger every reader would rebuild.
async fn replay(store: &dyn EventStore) -> MemoryLedger {
    let mut ledger = MemoryLedger::new();
    let mut after = 0;
    loop {
        let batch = store.read_log(DEFAULT_LEDGER, after, 1_000).await.unwrap();
        if batch.is_empty() {
            return ledger;
        }
        for recorded in batch {
            let stream: StreamId = recorded.stream_id.parse().unwrap();
            let event = Event::from_stored(
                &stream,
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload,
            )
            .unwrap();
            ledger.apply(ledger_core::Change {
                stream,
                event_id: recorded.event_id,
                event,
            });
            after = recorded.position.unwrap();
        }
    }
}

fn wallet_available(ledger: &MemoryLedger, user: Uuid) -> i64 {
    match ledger.state(&StreamId::Wallet {
        user,
        currency: Currency::USD,
    }) {
        Some(AggState::Wallet(w)) => w.available_minor,
        _ => 0,
    }
}

#[tokio::test]
async fn concurrent_payouts_from_one_wallet_never_overdraw_and_lose_no_update() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    fund_wallet(&executor(store.clone()), BUYER, 1, 100_000).await;
    // Eight writers, each with its own executor (its own cache, like separate processes), race to pay out.
    let mut tasks = Vec::new();
    for writer in 0..8_u128 {
        let ex = executor(store.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0_i64;
            for n in 0..10_u128 {
                let amount = 1_000 + (writer * 37 + n * 113) as i64 % 2_500;
                let payout_id = Uuid::from_u128(0x10_000 + writer * 100 + n);
                let cmd = Command::RequestPayout {
                    payout_id,
                    amount: usd(amount),
                    fee: None,
                    gateway: Gateway::Stripe,
                };
                match ex
                    .execute(&env(Actor::User(BUYER), cmd), None)
                    .await
                    .unwrap()
                {
                    CommandOutcome::Accepted { .. } => accepted += amount,
                    CommandOutcome::Rejected { rejection, .. } => {
                        assert_eq!(rejection.code, "insufficient_funds")
                    }
                }
            }
            accepted
        }));
    }
    let mut accepted_total = 0;
    for t in tasks {
        accepted_total += t.await.unwrap();
    }
    assert!(accepted_total <= 100_000, "overdrawn: {accepted_total}");
    assert!(
        accepted_total > 90_000,
        "the wallet should be nearly drained, only {accepted_total} went out"
    );
    let ledger = replay(store.as_ref()).await;
    assert_eq!(
        wallet_available(&ledger, BUYER),
        100_000 - accepted_total,
        "a lost update"
    );
    assert!(ledger.balances().negative_constrained().is_empty());
    assert!(
        ledger
            .balances()
            .imbalance_by_currency()
            .values()
            .all(|v| *v == 0)
    );
}

#[tokio::test]
async fn racing_duplicates_of_a_keyed_command_append_once_with_identical_outcomes() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    fund_wallet(&executor(store.clone()), BUYER, 1, 50_000).await;
    let head_before = store.head_position(DEFAULT_LEDGER).await.unwrap();
    let cmd = Command::RequestPayout {
        payout_id: Uuid::from_u128(77),
        amount: usd(5_000),
        fee: None,
        gateway: Gateway::Stripe,
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let ex = executor(store.clone());
        // Each retry of a client is a new envelope (new command id, later time), same key and request.
        let envelope = env(Actor::User(BUYER), cmd.clone());
        tasks.push(tokio::spawn(async move {
            ex.execute(&envelope, Some("payout-77")).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert!(
        outcomes.iter().all(|o| o == &outcomes[0]),
        "outcomes differ: {outcomes:?}"
    );
    assert!(outcomes[0].is_accepted());
    let CommandOutcome::Accepted { events, .. } = &outcomes[0] else {
        unreachable!()
    };
    assert!(
        events.iter().all(|e| e.position > head_before),
        "positions are filled: {events:?}"
    );
    let head_after = store.head_position(DEFAULT_LEDGER).await.unwrap();
    assert_eq!(
        head_after - head_before,
        events.len() as i64,
        "appended more than once"
    );
    let ledger = replay(store.as_ref()).await;
    assert_eq!(wallet_available(&ledger, BUYER), 45_000);
}

#[tokio::test]
async fn a_rejected_keyed_command_repeats_its_rejection_and_a_changed_payload_conflicts() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let ex = executor(store.clone());
    let too_much = Command::RequestPayout {
        payout_id: Uuid::from_u128(5),
        amount: usd(1_000),
        fee: None,
        gateway: Gateway::Stripe,
    };
    let first = ex
        .execute(&env(Actor::User(BUYER), too_much.clone()), Some("k1"))
        .await
        .unwrap();
    let CommandOutcome::Rejected { rejection, .. } = &first else {
        panic!("{first:?}")
    };
    assert_eq!(rejection.code, "insufficient_funds");
    // Money arrives; the repeat with the same key still gets the recorded rejection, not a new decision.
    fund_wallet(&ex, BUYER, 1, 10_000).await;
    let again = ex
        .execute(&env(Actor::User(BUYER), too_much), Some("k1"))
        .await
        .unwrap();
    assert_eq!(again, first);
    let other = Command::RequestPayout {
        payout_id: Uuid::from_u128(6),
        amount: usd(1_000),
        fee: None,
        gateway: Gateway::Stripe,
    };
    let err = ex
        .execute(&env(Actor::User(BUYER), other), Some("k1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecError::IdempotencyConflict { ref key } if key == "k1"),
        "{err}"
    );
}

/// Creates an agreed project with one milestone between BUYER and SELLER.
async fn agreed_project(ex: &Executor, project_id: Uuid, buyer: Uuid, seller: Uuid, minor: i64) {
    let fees = FeePolicy {
        commission_rate: Rate::from_bps(1_000).unwrap(),
        ..FeePolicy::default()
    };
    let create = Command::CreateProject {
        project_id,
        buyer,
        seller,
        currency: Currency::USD,
        milestones: vec![usd(minor)],
        fees: fees.into(),
    };
    assert!(run(ex, Actor::User(buyer), create).await.is_accepted());
    assert!(
        run(
            ex,
            Actor::User(buyer),
            Command::SubmitProjectForAgreement { project_id }
        )
        .await
        .is_accepted()
    );
    assert!(
        run(
            ex,
            Actor::User(seller),
            Command::AgreeToProject { project_id }
        )
        .await
        .is_accepted()
    );
}

#[tokio::test]
async fn approval_and_its_release_are_appended_together() {
    for store in [
        Arc::new(InMemoryEventStore::new()) as Arc<dyn EventStore>,
        Arc::new(TestDb::new().await.store()),
    ] {
        let ex = executor(store.clone());
        let project_id = Uuid::from_u128(0x900);
        agreed_project(&ex, project_id, BUYER, SELLER, 10_000).await;
        fund_wallet(&ex, BUYER, 1, 10_000).await;
        for (actor, cmd) in [
            (
                BUYER,
                Command::FundMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            (
                SELLER,
                Command::SubmitMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
        ] {
            assert!(run(&ex, Actor::User(actor), cmd).await.is_accepted());
        }
        let outcome = run(
            &ex,
            Actor::User(BUYER),
            Command::ApproveMilestone {
                project_id,
                milestone: 1,
            },
        )
        .await;
        let CommandOutcome::Accepted {
            events, follow_ups, ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(follow_ups.len(), 1);
        assert_eq!(follow_ups[0].command, "release_milestone");
        assert!(follow_ups[0].rejection.is_none());
        // Approved, released, completed, the seller's wallet credit and the buyer's escrow index (the project
        // holds none of its escrow any more): one append, consecutive positions.
        assert_eq!(events.len(), 5, "{events:?}");
        let mut positions: Vec<i64> = events.iter().map(|e| e.position).collect();
        positions.sort_unstable();
        assert!(
            positions.windows(2).all(|w| w[1] == w[0] + 1),
            "{positions:?}"
        );
        let ledger = replay(store.as_ref()).await;
        assert_eq!(wallet_available(&ledger, SELLER), 9_000);
    }
}

#[tokio::test]
async fn group_commit_appends_disjoint_commands_in_one_transaction_and_defers_overlaps() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let ex = executor(store.clone());
    let mut batch = Vec::new();
    for n in 0..40_u128 {
        let (buyer, seller, project_id) = (
            Uuid::from_u128(0x1000 + n),
            Uuid::from_u128(0x2000 + n),
            Uuid::from_u128(0x3000 + n),
        );
        agreed_project(&ex, project_id, buyer, seller, 1_000).await;
        fund_wallet(&ex, buyer, 0x4000 + n, 1_500).await;
        batch.push((
            env(
                Actor::User(buyer),
                Command::FundMilestone {
                    project_id,
                    milestone: 1,
                },
            ),
            None,
        ));
    }
    // Two commands on the same project in one batch: the second overlaps and must take the slow path.
    let project_0 = Uuid::from_u128(0x3000);
    batch.push((
        env(
            Actor::User(Uuid::from_u128(0x2000)),
            Command::SubmitMilestone {
                project_id: project_0,
                milestone: 1,
            },
        ),
        None,
    ));
    let head_before = store.head_position(DEFAULT_LEDGER).await.unwrap();
    let results = ex.execute_batch(batch).await;
    assert_eq!(results.len(), 41);
    for r in &results {
        assert!(r.as_ref().unwrap().is_accepted(), "{r:?}");
    }
    let head_after = store.head_position(DEFAULT_LEDGER).await.unwrap();
    assert_eq!(head_after - head_before, 40 * 2 + 1);
    // The 40 disjoint fundings went in one transaction (all of them read the ledger-wide `periods` stream,
    // which none of them writes: reading it is no overlap).
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct tx_id) from ledger.events where event_type = 'MilestoneFunded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(transactions, 1, "the disjoint fundings took the slow path");
    let ledger = replay(store.as_ref()).await;
    for n in 0..40_u128 {
        assert_eq!(wallet_available(&ledger, Uuid::from_u128(0x1000 + n)), 500);
        let project = Uuid::from_u128(0x3000 + n);
        assert_eq!(
            ledger.balances().balance(
                &ledger_core::Account::Escrow {
                    project,
                    milestone: 1
                },
                Currency::USD
            ),
            1_000
        );
    }
}

#[tokio::test]
async fn a_stale_cache_after_another_writer_is_corrected_by_the_version_check() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let (a, b) = (executor(store.clone()), executor(store.clone()));
    fund_wallet(&a, BUYER, 1, 10_000).await;
    // Executor b spends through its own cache, so a's cached wallet is now stale.
    let spend = |id: u128, minor| Command::RequestPayout {
        payout_id: Uuid::from_u128(id),
        amount: usd(minor),
        fee: None,
        gateway: Gateway::Stripe,
    };
    assert!(
        run(&b, Actor::User(BUYER), spend(10, 8_000))
            .await
            .is_accepted()
    );
    let outcome = run(&a, Actor::User(BUYER), spend(11, 5_000)).await;
    let CommandOutcome::Rejected { rejection, .. } = outcome else {
        panic!("stale cache overdrew: {outcome:?}")
    };
    assert_eq!(rejection.code, "insufficient_funds");
    let ledger = replay(store.as_ref()).await;
    assert_eq!(wallet_available(&ledger, BUYER), 2_000);
}

// ---------------------------------------------------------------------------------------------------------
// Crash safety: a child process (this test binary, re-run with an env var) writes commands and prints each
// acknowledged command id; the parent kills it with SIGKILL mid-stream, then checks that every acknowledged
// command is in the log and that no command is there in part.

const CHILD_URL: &str = "ESCROW_CRASH_CHILD_URL";

#[tokio::test]
async fn crash_child_writer() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    }; // only meaningful as the child
    let pool = ledger_store::connect(&url).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(ledger_store::PgEventStore::new(pool));
    let ex = executor(store);
    for n in 0..100_000_u128 {
        let payment_id = Uuid::from_u128(0xC0_0000 + n);
        // Each acknowledged command: a deposit confirmed = payment event + wallet event, both or neither.
        let init = Command::InitiateDeposit {
            payment_id,
            amount: usd(100),
            gateway: Gateway::Stripe,
            fund: None,
        };
        let e1 = env(Actor::User(BUYER), init);
        ex.execute(&e1, None).await.unwrap();
        let confirm = Command::ConfirmDeposit {
            payment_id,
            amount: usd(100),
            gateway_fee: None,
            occurred_at: None,
            fee_in_suspense: None,
        };
        let e2 = env(Actor::Gateway(Gateway::Stripe), confirm);
        ex.execute(&e2, None).await.unwrap();
        println!("ACK {}", e2.command_id);
    }
}

#[tokio::test]
async fn a_killed_writer_loses_no_acknowledged_command_and_leaves_no_partial_one() {
    use std::io::{BufRead, BufReader};
    let db = TestDb::new().await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, db.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = HashSet::new();
    let reader = BufReader::new(child.stdout.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.insert(Uuid::parse_str(id).unwrap());
            if acked.len() == 200 {
                child.kill().unwrap(); // SIGKILL: no destructors, a transaction may be open
                break;
            }
        }
    }
    child.wait().unwrap();
    // A restarted writer's first append sequences whatever the dead one committed.
    let store = db.store();
    let ex = executor(Arc::new(db.store()));
    fund_wallet(&ex, SELLER, 0xFFFF, 1).await;
    let mut per_command: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut after = 0;
    loop {
        let batch = store.read_log(DEFAULT_LEDGER, after, 1_000).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for e in batch {
            after = e.position.unwrap();
            per_command
                .entry(e.metadata.correlation_id.unwrap())
                .or_default()
                .push(e.event_type);
        }
    }
    for id in &acked {
        assert!(
            per_command.contains_key(id),
            "acknowledged command {id} is lost"
        );
    }
    for (id, types) in &per_command {
        let whole = types == &["DepositInitiated"] || types == &["DepositSucceeded", "Credited"];
        assert!(whole, "command {id} is partial: {types:?}");
    }
    let ledger = replay(&store).await;
    assert!(
        ledger
            .balances()
            .imbalance_by_currency()
            .values()
            .all(|v| *v == 0)
    );
}

#[tokio::test]
async fn a_long_stream_loads_from_its_snapshot_plus_the_tail_to_the_same_state() {
    use ledger_store::executor::{FOLD_VERSION, SNAPSHOT_EVERY_EVENTS};
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let writer = executor(store.clone());
    // More wallet events than the snapshot interval: one deposit credit each.
    let deposits = SNAPSHOT_EVERY_EVENTS as u128 + 20;
    for n in 0..deposits {
        fund_wallet(&writer, BUYER, 0x5000 + n, 100).await;
    }
    let wallet = StreamId::Wallet {
        user: BUYER,
        currency: Currency::USD,
    };
    // A cold executor loads the whole stream and leaves a snapshot behind.
    let (cold, version) = executor(store.clone())
        .load_stream_state(&wallet)
        .await
        .unwrap();
    assert_eq!(version, deposits as i64);
    let snapshot = store
        .load_snapshot(DEFAULT_LEDGER, &wallet.to_string(), FOLD_VERSION)
        .await
        .unwrap()
        .expect("a snapshot was saved");
    assert_eq!(snapshot.stream_version, deposits as i64);
    // More events after the snapshot; the next cold load is snapshot + tail and equals a fold from zero.
    for n in 0..7 {
        fund_wallet(&writer, BUYER, 0x9000 + n, 100).await;
    }
    let (from_snapshot, version) = executor(store.clone())
        .load_stream_state(&wallet)
        .await
        .unwrap();
    assert_eq!(version, deposits as i64 + 7);
    let ledger = replay(store.as_ref()).await;
    assert_eq!(Some(&from_snapshot), ledger.state(&wallet));
    assert_ne!(from_snapshot, cold);
    assert_eq!(
        wallet_available(&ledger, BUYER),
        (deposits as i64 + 7) * 100
    );
    // The snapshot really is the starting point: a doctored field the journal does not pin (the chargeback
    // index) shows through, the tail folded after it.
    let marker = Uuid::from_u128(0xD0C);
    let AggState::Wallet(mut real) = serde_json::from_value(snapshot.state.clone()).unwrap() else {
        panic!("not a wallet")
    };
    real.escrow_projects = vec![marker];
    let mut doctored = snapshot.clone();
    doctored.state = serde_json::to_value(AggState::Wallet(real)).unwrap();
    store
        .save_snapshot(DEFAULT_LEDGER, &doctored)
        .await
        .unwrap();
    let (loaded, _) = executor(store.clone())
        .load_stream_state(&wallet)
        .await
        .unwrap();
    let AggState::Wallet(w) = loaded else {
        panic!("not a wallet")
    };
    assert_eq!(w.escrow_projects, vec![marker]);
    assert_eq!(w.available_minor, (deposits as i64 + 7) * 100);
    // A doctored amount disagrees with the wallet's account: ignored, the stream replayed from zero.
    doctored.state = serde_json::to_value(AggState::Wallet(
        ledger_core::aggregates::wallet::WalletState {
            available_minor: 1,
            ..Default::default()
        },
    ))
    .unwrap();
    store
        .save_snapshot(DEFAULT_LEDGER, &doctored)
        .await
        .unwrap();
    let (loaded, _) = executor(store.clone())
        .load_stream_state(&wallet)
        .await
        .unwrap();
    assert_eq!(Some(&loaded), ledger.state(&wallet));
}

#[tokio::test]
async fn keyed_commands_group_commit_with_their_outcomes_and_duplicates_replay() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let ex = executor(store.clone());
    fund_wallet(&ex, BUYER, 1, 10_000).await;
    let payout = |id: u128, minor| Command::RequestPayout {
        payout_id: Uuid::from_u128(id),
        amount: usd(minor),
        fee: None,
        gateway: Gateway::Stripe,
    };
    let head_before = store.head_position(DEFAULT_LEDGER).await.unwrap();
    let batch = vec![
        (
            env(Actor::User(BUYER), payout(10, 1_000)),
            Some("k1".to_string()),
        ),
        // The same request again under the same key, in the same batch (a racing duplicate).
        (
            env(Actor::User(BUYER), payout(10, 1_000)),
            Some("k1".to_string()),
        ),
        (
            env(Actor::User(SELLER), payout(11, 5_000)),
            Some("k2".to_string()),
        ),
        (
            env(Actor::User(Uuid::from_u128(0xC0FFEE)), payout(12, 1)),
            None,
        ),
    ];
    let results: Vec<CommandOutcome> = ex
        .execute_batch(batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(results[0].is_accepted());
    assert_eq!(results[1], results[0], "a duplicate gets the first outcome");
    let CommandOutcome::Rejected { rejection, .. } = &results[2] else {
        panic!("{:?}", results[2])
    };
    assert_eq!(rejection.code, "insufficient_funds");
    assert!(!results[3].is_accepted());
    let CommandOutcome::Accepted { events, .. } = &results[0] else {
        unreachable!()
    };
    let head_after = store.head_position(DEFAULT_LEDGER).await.unwrap();
    // The first k1's events, and k2's rejection recorded in the log (its idempotency row's log entry).
    assert_eq!(
        head_after - head_before,
        events.len() as i64 + 1,
        "only the first k1 appended, besides k2's recorded rejection"
    );
    let appended = store
        .read_log(DEFAULT_LEDGER, head_before, 100)
        .await
        .unwrap();
    let recorded: Vec<_> = appended
        .iter()
        .filter(|e| e.event_type == "CommandOutcomeRecorded")
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].payload["idempotency_key"], "k2");
    assert_eq!(
        recorded[0].payload["rejection"]["code"],
        "insufficient_funds"
    );
    // Later repeats replay the recorded outcomes, the rejection included, and append nothing.
    let again = ex
        .execute_batch(vec![
            (
                env(Actor::User(BUYER), payout(10, 1_000)),
                Some("k1".to_string()),
            ),
            (
                env(Actor::User(SELLER), payout(11, 5_000)),
                Some("k2".to_string()),
            ),
        ])
        .await;
    assert_eq!(again[0].as_ref().unwrap(), &results[0]);
    assert_eq!(again[1].as_ref().unwrap(), &results[2]);
    assert_eq!(
        store.head_position(DEFAULT_LEDGER).await.unwrap(),
        head_after
    );
    let ledger = replay(store.as_ref()).await;
    assert_eq!(wallet_available(&ledger, BUYER), 9_000);
}

#[tokio::test]
async fn current_state_never_caches_a_stream_that_does_not_exist_yet() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let (reader, writer) = (executor(store.clone()), executor(store.clone()));
    let payment = StreamId::Payment(Uuid::from_u128(0x77));
    let (_, version) = reader.current_state(&payment).await.unwrap();
    assert_eq!(version, 0);
    // Another process creates the payment; the reader must see it, not a cached "unknown".
    fund_wallet(&writer, BUYER, 0x77, 500).await;
    let (state, version) = reader.current_state(&payment).await.unwrap();
    assert_eq!(version, 2);
    let AggState::Payment(p) = state else {
        panic!("not a payment")
    };
    assert!(p.exists());
}

/// A deposit of 5.00 initiated by the buyer, then confirmed by Stripe as having happened `occurred_at`.
async fn late_deposit(ex: &Executor, payment_id: Uuid, occurred_at: DateTime<Utc>) {
    initiate_deposit(ex, payment_id).await;
    confirm_deposit_at(ex, payment_id, occurred_at).await;
}

async fn initiate_deposit(ex: &Executor, payment_id: Uuid) {
    let init = Command::InitiateDeposit {
        payment_id,
        amount: usd(500),
        gateway: Gateway::Stripe,
        fund: None,
    };
    assert!(run(ex, Actor::User(BUYER), init).await.is_accepted());
}

async fn confirm_deposit_at(ex: &Executor, payment_id: Uuid, occurred_at: DateTime<Utc>) {
    let confirm = Command::ConfirmDeposit {
        payment_id,
        amount: usd(500),
        gateway_fee: None,
        occurred_at: Some(occurred_at),
        fee_in_suspense: None,
    };
    assert!(
        run(ex, Actor::Gateway(Gateway::Stripe), confirm)
            .await
            .is_accepted()
    );
}

/// The journal entry of a deposit, from the whole log.
async fn deposit_entry(store: &dyn EventStore, payment_id: Uuid) -> ledger_core::JournalEntry {
    replay(store)
        .await
        .log()
        .iter()
        .filter(|c| c.stream == StreamId::Payment(payment_id))
        .find_map(|c| c.event.entry().cloned())
        .expect("the deposit's entry")
}

// ---------------------------------------------------------------------------------------------------------
// Closed periods: every money-moving decision reads the ledger's `periods` stream. The executor keeps it in
// its cache (one store read per process, not per command), and a close by another writer is still seen: the
// read check at append fails, the stream is reloaded and the command decided again.

#[tokio::test]
async fn the_periods_stream_is_cached_and_a_close_by_another_writer_is_seen() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let (a, b) = (executor(store.clone()), executor(store.clone()));
    fund_wallet(&a, BUYER, 1, 10_000).await;
    assert!(
        a.is_cached(&StreamId::Periods),
        "the periods stream a deposit read is not cached: every command would read it from the store"
    );
    // b closes April 2026 (commands here happen on May 1); a's cached periods stream is now stale.
    let close = Command::ClosePeriods {
        through: "2026-04".parse().unwrap(),
    };
    assert!(run(&b, Actor::Admin(SELLER), close).await.is_accepted());
    let payment_id = Uuid::from_u128(2);
    let april = Utc.with_ymd_and_hms(2026, 4, 20, 9, 0, 0).unwrap();
    late_deposit(&a, payment_id, april).await;
    let entry = deposit_entry(store.as_ref(), payment_id).await;
    assert_eq!(
        entry.effective_at(),
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(entry.original_effective_at(), Some(april));
}

/// Write skew (issue 19, finding 4): a close that has written its event but not committed yet, and a late
/// posting that only READ the periods stream. A plain version check at append does not see the uncommitted
/// close, so both committed and the closed month changed after its close. The posting must wait for the
/// close, see it, and be decided again (effective on the first open day).
#[tokio::test]
async fn a_late_posting_waits_for_an_uncommitted_close_and_lands_after_it() {
    let db = TestDb::new().await;
    let a = executor(Arc::new(db.store()));
    let closer = executor(Arc::new(db.store().with_pre_commit_hold_ms(1_500)));
    fund_wallet(&a, BUYER, 1, 10_000).await; // `a` has read the periods stream: April is open
    let payment_id = Uuid::from_u128(2);
    initiate_deposit(&a, payment_id).await;
    let close = tokio::spawn(async move {
        let through = "2026-04".parse().unwrap();
        run(
            &closer,
            Actor::Admin(SELLER),
            Command::ClosePeriods { through },
        )
        .await
    });
    // The close has inserted its event by now and holds its transaction open for 1.5 s.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let april = Utc.with_ymd_and_hms(2026, 4, 30, 23, 0, 0).unwrap();
    confirm_deposit_at(&a, payment_id, april).await;
    assert!(close.await.unwrap().is_accepted());
    let entry = deposit_entry(&db.store(), payment_id).await;
    assert_eq!(
        entry.effective_at(),
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
        "a posting into April committed beside April's close (write skew)"
    );
}

/// Saves a stream snapshot as the writer role may (`ledger.save_snapshot`), with a state of its choosing.
async fn plant_snapshot(
    store: &Arc<dyn EventStore>,
    stream: &StreamId,
    version: i64,
    state: AggState,
) {
    store
        .save_snapshot(
            DEFAULT_LEDGER,
            &ledger_store::Snapshot {
                stream_id: stream.to_string(),
                stream_version: version,
                fold_version: ledger_store::executor::FOLD_VERSION,
                state: serde_json::to_value(&state).unwrap(),
                taken_at: Utc::now(),
            },
        )
        .await
        .expect("the writer role may save a snapshot");
}

/// Issue 19, finding 1: the writer role saves stream snapshots and chooses their content. A wallet snapshot
/// saying it holds 1,000,000.00 must not let a freshly started executor pay out what the wallet's accounts do
/// not hold: the snapshot disagrees with the journal, so the stream is replayed from its first event. (The
/// wallet has more events than `SNAPSHOT_EVERY_EVENTS`: the executor would take a snapshot of it itself.)
#[tokio::test]
async fn a_wallet_snapshot_that_disagrees_with_its_accounts_is_not_trusted() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let first = executor(store.clone());
    let credits = ledger_store::executor::SNAPSHOT_EVERY_EVENTS;
    for n in 0..credits {
        fund_wallet(&first, BUYER, 1_000 + n as u128, 100).await; // 1.00 each
    }
    let wallet = StreamId::Wallet {
        user: BUYER,
        currency: Currency::USD,
    };
    let inflated = AggState::Wallet(ledger_core::aggregates::wallet::WalletState {
        available_minor: 100_000_000,
        ..Default::default()
    });
    plant_snapshot(&store, &wallet, credits, inflated).await;
    let fresh = executor(store.clone()); // a freshly started `serve`: nothing cached
    let payout = Command::RequestPayout {
        payout_id: Uuid::from_u128(0x9A),
        amount: usd(50_000),
        fee: None,
        gateway: Gateway::Stripe,
    };
    let CommandOutcome::Rejected { rejection, .. } = run(&fresh, Actor::User(BUYER), payout).await
    else {
        panic!(
            "a payout of 500.00 from a wallet holding {credits}.00 cents was accepted on a planted snapshot"
        );
    };
    assert_eq!(rejection.code, "insufficient_funds");
    let (state, _) = fresh.load_stream_state(&wallet).await.unwrap();
    let AggState::Wallet(w) = state else { panic!() };
    assert_eq!(w.available_minor, 100 * credits);
}

/// A snapshot of a short stream (the executor never snapshots one) is ignored: a planted snapshot saying the
/// closed periods are open does not let a late posting into a closed month.
#[tokio::test]
async fn a_snapshot_of_a_short_stream_is_ignored() {
    let db = TestDb::new().await;
    let store: Arc<dyn EventStore> = Arc::new(db.store());
    let first = executor(store.clone());
    fund_wallet(&first, BUYER, 1, 10_000).await;
    let through = "2026-04".parse().unwrap();
    assert!(
        run(
            &first,
            Actor::Admin(SELLER),
            Command::ClosePeriods { through }
        )
        .await
        .is_accepted()
    );
    let open = AggState::initial(&StreamId::Periods);
    plant_snapshot(&store, &StreamId::Periods, 1, open).await;
    let fresh = executor(store.clone());
    let payment_id = Uuid::from_u128(2);
    let april = Utc.with_ymd_and_hms(2026, 4, 20, 9, 0, 0).unwrap();
    late_deposit(&fresh, payment_id, april).await;
    let entry = deposit_entry(store.as_ref(), payment_id).await;
    assert_eq!(
        entry.effective_at(),
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
        "a planted snapshot reopened a closed month"
    );
}

/// A settlement never takes its gateway's clearing below zero, whichever way the executor gets the balance:
/// summed by PostgreSQL, or replayed from the log by the executor (the in-memory store sums nothing).
#[tokio::test]
async fn a_settlement_is_refused_beyond_the_clearing_balance_on_both_stores() {
    let db = TestDb::new().await;
    let stores: [Arc<dyn EventStore>; 2] =
        [Arc::new(db.store()), Arc::new(InMemoryEventStore::new())];
    for store in stores {
        let ex = executor(store.clone());
        fund_wallet(&ex, BUYER, 1, 10_000).await; // Stripe's clearing: 100.00
        let settle = |id: &str, minor| Command::RecordSettlement {
            gateway: Gateway::Stripe,
            settlement_id: id.into(),
            bank_account: ledger_core::BankName::new("main").unwrap(),
            amount: usd(minor),
            fee: Some(usd(25)),
            occurred_at: at(0),
        };
        let admin = Actor::Admin(SELLER);
        let CommandOutcome::Rejected { rejection, .. } =
            run(&ex, admin, settle("po_1", 9_976)).await
        else {
            panic!("a settlement of 99.76 + 0.25 fee left 100.00 of clearing below zero")
        };
        assert_eq!(rejection.code, "insufficient_funds");
        assert!(run(&ex, admin, settle("po_1", 9_975)).await.is_accepted());
        let ledger = replay(store.as_ref()).await;
        let clearing = ledger_core::Account::GatewayClearing(Gateway::Stripe);
        assert_eq!(ledger.balances().balance(&clearing, Currency::USD), 0);
    }
}

/// A delivery's inbox row.
fn delivery_row(
    body: &str,
    key: &str,
    disposition: &str,
    command_id: Option<Uuid>,
) -> ledger_store::InboxRow {
    ledger_store::InboxRow {
        delivery_id: Uuid::new_v4(),
        gateway: "normalized".into(),
        gateway_event_id: body.into(),
        event_type: "deposit_succeeded".into(),
        dedupe_key: key.into(),
        payment_reference: None,
        disposition: disposition.into(),
        detail: String::new(),
        command_id,
        correlation_id: None,
        raw_body: body.as_bytes().to_vec(),
        received_at: at(0),
        signature: None,
    }
}

/// A callback delivery's inbox row, labelled from the outcome it is recorded with (as serve's pipeline does).
fn delivery_builder(body: &'static str, key: &'static str) -> ledger_store::InboxRowBuilder {
    Box::new(
        move |outcome: &CommandOutcome, replayed: bool, _events: &[Event]| {
            let disposition = if replayed { "duplicate" } else { "applied" };
            delivery_row(body, key, disposition, Some(outcome.command_id()))
        },
    )
}

fn confirm(payment: u128, minor: i64) -> Command {
    Command::ConfirmDeposit {
        payment_id: Uuid::from_u128(payment),
        amount: usd(minor),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    }
}

/// Callbacks group-committed: each delivery's row commits with its outcome; an exact duplicate in the same
/// batch follows its original (one money effect, its own row, nothing decided twice); a key recorded by an
/// earlier batch is replayed with its row in this one; a delivery with nothing to run is recorded alone in
/// the batch; and an item the store refuses fails alone, its neighbours committed.
async fn callbacks_group_commit_each_delivery_with_its_outcome(store: Arc<dyn EventStore>) {
    use ledger_store::{BatchAnswer, BatchItem};
    let ex = executor(store.clone());
    for (payment, user) in [(21_u128, 0xA1_u128), (22, 0xA2), (23, 0xA3)] {
        let init = Command::InitiateDeposit {
            payment_id: Uuid::from_u128(payment),
            amount: usd(1_000),
            gateway: Gateway::Normalized,
            fund: None,
        };
        assert!(
            run(&ex, Actor::User(Uuid::from_u128(user)), init)
                .await
                .is_accepted()
        );
    }
    let gateway = Actor::Gateway(Gateway::Normalized);
    let callback = |payment: u128, body: &'static str, key: &'static str| BatchItem::Command {
        env: env(gateway, confirm(payment, 1_000)),
        key: Some(key.to_string()),
        inbox: Some(delivery_builder(body, key)),
    };
    let first = ex
        .execute_items(vec![callback(21, "dep-21", "normalized:dep-21")])
        .await;
    assert!(matches!(
        &first[0],
        Ok(BatchAnswer::Executed { outcome, replayed: false }) if outcome.is_accepted()
    ));
    let head_before = store.head_position(DEFAULT_LEDGER).await.unwrap();
    let ignored = delivery_row("ignored", "normalized:ignored", "ignored", None);
    let refused = delivery_row("refused", "normalized:refused", "not-a-disposition", None);
    let answers = ex
        .execute_items(vec![
            callback(22, "dep-22", "normalized:dep-22"),
            callback(22, "dep-22", "normalized:dep-22"), // an exact duplicate in the same batch
            callback(21, "dep-21", "normalized:dep-21"), // recorded by the earlier batch
            BatchItem::Record(ignored),
            BatchItem::Record(refused),
            callback(23, "dep-23", "normalized:dep-23"),
        ])
        .await;
    let outcome = |i: usize| match &answers[i] {
        Ok(BatchAnswer::Executed { outcome, replayed }) => (outcome.clone(), *replayed),
        other => panic!("item {i}: {other:?}"),
    };
    let (original, replayed) = outcome(0);
    assert!(original.is_accepted() && !replayed);
    assert_eq!(
        outcome(1),
        (original.clone(), true),
        "the duplicate follows its original"
    );
    let (earlier, replayed) = outcome(2);
    assert!(replayed && earlier.command_id() != original.command_id());
    assert!(matches!(answers[3], Ok(BatchAnswer::Recorded)));
    assert!(
        matches!(
            answers[4],
            Err(ExecError::Store(
                ledger_store::StoreError::InvalidAppend { .. }
            ))
        ),
        "{:?}",
        answers[4]
    );
    assert!(
        outcome(5).0.is_accepted() && !outcome(5).1,
        "a neighbour of the refused item commits"
    );
    let appended = store
        .read_log(DEFAULT_LEDGER, head_before, 100)
        .await
        .unwrap();
    let succeeded: Vec<&str> = appended
        .iter()
        .filter(|e| e.event_type == "DepositSucceeded")
        .map(|e| e.stream_id.as_str())
        .collect();
    assert_eq!(
        succeeded,
        [
            format!("payment-{}", Uuid::from_u128(22)),
            format!("payment-{}", Uuid::from_u128(23))
        ],
        "one money effect per deposit"
    );
    let rows = |key: &'static str| {
        let store = store.clone();
        async move { store.read_inbox(DEFAULT_LEDGER, key).await.unwrap() }
    };
    // Sorted: both rows of a key were received at the same time here.
    let dispositions = |rows: Vec<ledger_store::InboxRow>| -> Vec<String> {
        let mut found: Vec<String> = rows.into_iter().map(|r| r.disposition).collect();
        found.sort();
        found
    };
    assert_eq!(
        dispositions(rows("normalized:dep-22").await),
        ["applied", "duplicate"]
    );
    assert_eq!(
        dispositions(rows("normalized:dep-21").await),
        ["applied", "duplicate"]
    );
    assert_eq!(dispositions(rows("normalized:ignored").await), ["ignored"]);
    assert_eq!(dispositions(rows("normalized:dep-23").await), ["applied"]);
    // A delivery whose command appended events is carried by the event its idempotency record names first
    // (`metadata.delivery`): only the delivery that ran no command has a `DeliveryRecorded` of its own (the
    // duplicates are backed by the outcomes they repeat).
    let ignored = rows("normalized:ignored").await;
    let logged: Vec<&str> = appended
        .iter()
        .filter(|e| e.event_type == "DeliveryRecorded")
        .map(|e| e.stream_id.as_str())
        .collect();
    assert_eq!(logged, [format!("outcome-{}", ignored[0].delivery_id)]);
    for key in ["normalized:dep-22", "normalized:dep-23"] {
        let applied = rows(key)
            .await
            .into_iter()
            .find(|r| r.disposition == "applied")
            .expect("the applied delivery");
        let carriers: Vec<&ledger_store::RecordedEvent> = appended
            .iter()
            .filter(|e| {
                e.metadata
                    .delivery
                    .as_ref()
                    .is_some_and(|d| d.delivery_id == applied.delivery_id)
            })
            .collect();
        assert_eq!(carriers.len(), 1, "{key}: one event carries the delivery");
        let record = store
            .get_idempotency(DEFAULT_LEDGER, key)
            .await
            .unwrap()
            .expect("its outcome");
        assert_eq!(
            record.outcome["events"][0]["event_id"].as_str(),
            Some(carriers[0].event_id.to_string().as_str()),
            "{key}: the carrier is the event its record names first"
        );
    }
}

#[tokio::test]
async fn callbacks_group_commit_each_delivery_with_its_outcome_postgres() {
    let db = TestDb::new().await;
    callbacks_group_commit_each_delivery_with_its_outcome(Arc::new(db.store())).await;
}

#[tokio::test]
async fn callbacks_group_commit_each_delivery_with_its_outcome_in_memory() {
    callbacks_group_commit_each_delivery_with_its_outcome(Arc::new(InMemoryEventStore::new()))
        .await;
}
