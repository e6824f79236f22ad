//! The executor's guarantees with several processes on one database (issue 10), against real PostgreSQL:
//! no decision from unverified state is recorded, committed means accepted, bounded work for every valid
//! command, one canonical write order. "Two processes" are two `Executor`s over two separate pools.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger_core::aggregates::project::FeePolicy;
use ledger_core::{Actor, Command, CommandEnvelope, Currency, Event, Gateway, Money};
use ledger_store::testdb::TestDb;
use ledger_store::{
    CommandOutcome, DEFAULT_LEDGER, EventMetadata, EventStore, Executor, ExecutorConfig,
    ExpectedVersion, InMemoryEventStore, InboxRow, NewEvent, PgEventStore, StoreError,
    StreamAppend,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::str::FromStr;
use uuid::Uuid;

const BUYER: Uuid = Uuid::from_u128(0xB0B);
const SELLER: Uuid = Uuid::from_u128(0x5E11);

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD)
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn env_at(actor: Actor, command: Command, seconds: i64) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        actor,
        at: at(seconds),
        command,
    }
}

fn env(actor: Actor, command: Command) -> CommandEnvelope {
    env_at(actor, command, 0)
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

/// A second "process": its own pool on the same database.
async fn process(db: &TestDb) -> Executor {
    let pool = ledger_store::connect(db.url()).await.unwrap();
    executor(Arc::new(PgEventStore::new(pool)))
}

async fn run(ex: &Executor, actor: Actor, command: Command) -> CommandOutcome {
    ex.execute(&env(actor, command), None)
        .await
        .expect("no store error")
}

fn deposit(payment: Uuid, minor: i64) -> Command {
    Command::InitiateDeposit {
        payment_id: payment,
        amount: usd(minor),
        gateway: Gateway::Stripe,
        fund: None,
    }
}

fn confirm(payment: Uuid, minor: i64) -> Command {
    Command::ConfirmDeposit {
        payment_id: payment,
        amount: usd(minor),
        gateway_fee: None,
        occurred_at: None,
        fee_in_suspense: None,
    }
}

fn chargeback_opened(payment: Uuid, minor: i64) -> Command {
    Command::OpenChargeback {
        payment_id: payment,
        chargeback_id: Uuid::from_u128(0xCB),
        amount: usd(minor),
        fee: None,
        occurred_at: None,
    }
}

fn command_id(outcome: &CommandOutcome) -> Uuid {
    match outcome {
        CommandOutcome::Accepted { command_id, .. }
        | CommandOutcome::Rejected { command_id, .. } => *command_id,
    }
}

const STRIPE: Actor = Actor::Gateway(Gateway::Stripe);

/// Events of one type in the whole stream of `stream_id`.
async fn count_events(store: &dyn EventStore, stream_id: &str, event_type: &str) -> usize {
    let events = store
        .read_stream(DEFAULT_LEDGER, stream_id, 0, 10_000)
        .await
        .unwrap();
    events.iter().filter(|e| e.event_type == event_type).count()
}

// ---------------------------------------------------------------------------------------------------------
// 1. No decision from unverified state is recorded.

/// The attack of issue 10 finding 1: `serve` (process A) cached a Pending payment; `apply` (process B)
/// confirmed it; a chargeback callback to A must not be refused "while Pending" and recorded forever.
#[tokio::test]
async fn a_refusal_decided_on_a_stale_cache_in_another_process_is_never_recorded() {
    let db = TestDb::new().await;
    let (serve, apply) = (process(&db).await, process(&db).await);
    let payment = Uuid::from_u128(0x9A1);
    assert!(
        run(&serve, Actor::User(BUYER), deposit(payment, 10_000))
            .await
            .is_accepted()
    );
    assert!(
        run(&apply, STRIPE, confirm(payment, 10_000))
            .await
            .is_accepted()
    );
    let key = format!("stripe:{payment}:chargeback_opened");
    let first = serve
        .execute(&env(STRIPE, chargeback_opened(payment, 10_000)), Some(&key))
        .await
        .unwrap();
    assert!(first.is_accepted(), "decided on the stale cache: {first:?}");
    // The gateway redelivers: the recorded answer is the acceptance, with the first command's id.
    let again = serve
        .execute(&env(STRIPE, chargeback_opened(payment, 10_000)), Some(&key))
        .await
        .unwrap();
    assert!(again.is_accepted(), "{again:?}");
    assert_eq!(command_id(&again), command_id(&first));
    let store = serve.store().as_ref();
    let stream = format!("payment-{payment}");
    assert_eq!(count_events(store, &stream, "ChargebackOpened").await, 1);
}

/// An unkeyed refusal records nothing, so it must be decided again on fresh state before it is returned.
#[tokio::test]
async fn an_unkeyed_refusal_on_a_stale_cache_is_decided_again_on_fresh_state() {
    let db = TestDb::new().await;
    let (serve, apply) = (process(&db).await, process(&db).await);
    let payment = Uuid::from_u128(0x9A2);
    assert!(
        run(&serve, Actor::User(BUYER), deposit(payment, 10_000))
            .await
            .is_accepted()
    );
    assert!(
        run(&apply, STRIPE, confirm(payment, 10_000))
            .await
            .is_accepted()
    );
    let outcome = run(&serve, STRIPE, chargeback_opened(payment, 10_000)).await;
    assert!(outcome.is_accepted(), "{outcome:?}");
}

/// Group commit checks the streams a command only reads too: the same attack through `execute_batch`.
#[tokio::test]
async fn group_commit_checks_the_streams_a_command_only_read() {
    let db = TestDb::new().await;
    let (serve, apply) = (process(&db).await, process(&db).await);
    let payment = Uuid::from_u128(0x9A3);
    assert!(
        run(&serve, Actor::User(BUYER), deposit(payment, 10_000))
            .await
            .is_accepted()
    );
    assert!(
        run(&apply, STRIPE, confirm(payment, 10_000))
            .await
            .is_accepted()
    );
    let key = "batch-chargeback".to_string();
    let results = serve
        .execute_batch(vec![(
            env(STRIPE, chargeback_opened(payment, 10_000)),
            Some(key.clone()),
        )])
        .await;
    let outcome = results.into_iter().next().unwrap().unwrap();
    assert!(
        outcome.is_accepted(),
        "decided on the stale cache: {outcome:?}"
    );
    let again = serve
        .execute(&env(STRIPE, chargeback_opened(payment, 10_000)), Some(&key))
        .await
        .unwrap();
    assert_eq!(command_id(&again), command_id(&outcome));
    assert!(again.is_accepted());
}

/// `too_early` depends on time alone: it is returned, not recorded, and the same key succeeds later.
#[tokio::test]
async fn a_too_early_refusal_is_transient_and_the_same_key_succeeds_later() {
    let db = TestDb::new().await;
    let ex = executor(Arc::new(db.store()));
    let request_id = Uuid::from_u128(0x5E9);
    let open = Command::OpenServiceRequest {
        request_id,
        currency: Currency::USD,
        title: "fix the roof".into(),
        expires_at: Some(at(100)),
    };
    assert!(run(&ex, Actor::User(BUYER), open).await.is_accepted());
    let expire = Command::ExpireServiceRequest { request_id };
    let early = ex
        .execute(&env_at(Actor::System, expire.clone(), 50), Some("expire-1"))
        .await
        .unwrap();
    let CommandOutcome::Rejected { rejection, .. } = &early else {
        panic!("expired before its time: {early:?}")
    };
    assert_eq!(rejection.code, "too_early");
    let due = ex
        .execute(&env_at(Actor::System, expire, 200), Some("expire-1"))
        .await
        .unwrap();
    assert!(
        due.is_accepted(),
        "the refusal was recorded for good: {due:?}"
    );
}

/// The key compares actor and command, not the envelope's time: a refusal of an impossible `at` (outside the
/// core's bounds) is not recorded, so the retry with a sane time is decided.
#[tokio::test]
async fn a_refused_envelope_time_is_not_recorded_under_the_key() {
    let db = TestDb::new().await;
    let ex = executor(Arc::new(db.store()));
    let payment = Uuid::from_u128(0x7E0);
    let mut bogus = env(Actor::User(BUYER), deposit(payment, 1_000));
    bogus.at = Utc.with_ymd_and_hms(1990, 1, 1, 0, 0, 0).unwrap();
    let refused = ex.execute(&bogus, Some("deposit-1")).await.unwrap();
    assert!(!refused.is_accepted(), "{refused:?}");
    let retried = ex
        .execute(
            &env(Actor::User(BUYER), deposit(payment, 1_000)),
            Some("deposit-1"),
        )
        .await
        .unwrap();
    assert!(
        retried.is_accepted(),
        "the bad time's refusal was recorded: {retried:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 3. Committed means accepted: a sequencer that fails after the commit never turns into an error, a retry
// or a rejection. The failure is real: another session holds `ledger.sequence` locked and the writer's
// statements time out.

/// A process whose statements time out after `timeout_ms`.
async fn impatient_process(db: &TestDb, timeout_ms: u32) -> Executor {
    let options = PgConnectOptions::from_str(db.url())
        .unwrap()
        .options([("statement_timeout", format!("{timeout_ms}ms"))]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    executor(Arc::new(PgEventStore::new(pool)))
}

/// Holds the sequence table so that no sequencer can insert a position until the guard is released.
async fn block_the_sequencer(db: &TestDb) -> PgConnection {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("begin; lock table ledger.sequence in exclusive mode")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn release(mut conn: PgConnection) {
    sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
}

async fn agreed_project(ex: &Executor, project_id: Uuid, buyer: Uuid, minor: i64) {
    let create = Command::CreateProject {
        project_id,
        buyer,
        seller: SELLER,
        currency: Currency::USD,
        milestones: vec![usd(minor)],
        fees: FeePolicy::default().into(),
    };
    assert!(run(ex, Actor::User(buyer), create).await.is_accepted());
    let submit = Command::SubmitProjectForAgreement { project_id };
    assert!(run(ex, Actor::User(buyer), submit).await.is_accepted());
    let agree = Command::AgreeToProject { project_id };
    assert!(run(ex, Actor::User(SELLER), agree).await.is_accepted());
}

async fn funded_wallet(ex: &Executor, payment: u128, minor: i64) {
    let payment = Uuid::from_u128(payment);
    assert!(
        run(ex, Actor::User(BUYER), deposit(payment, minor))
            .await
            .is_accepted()
    );
    assert!(run(ex, STRIPE, confirm(payment, minor)).await.is_accepted());
}

fn fund(project_id: Uuid) -> Command {
    Command::FundMilestone {
        project_id,
        milestone: 1,
    }
}

#[tokio::test]
async fn a_sequencer_failure_after_commit_still_answers_accepted_and_appends_once() {
    let db = TestDb::new().await;
    let setup = executor(Arc::new(db.store()));
    let project = Uuid::from_u128(0x7001);
    agreed_project(&setup, project, BUYER, 1_000).await;
    funded_wallet(&setup, 0x7101, 5_000).await;
    let writer = impatient_process(&db, 1_500).await;
    let guard = block_the_sequencer(&db).await;
    let outcome = writer
        .execute(&env(Actor::User(BUYER), fund(project)), None)
        .await;
    release(guard).await;
    let outcome = outcome.expect("committed, so accepted");
    assert!(outcome.is_accepted(), "{outcome:?}");
    setup
        .store()
        .sequence_pending(DEFAULT_LEDGER)
        .await
        .unwrap();
    let stream = format!("project-{project}");
    assert_eq!(
        count_events(setup.store().as_ref(), &stream, "MilestoneFunded").await,
        1
    );
    let log = setup
        .store()
        .read_log(DEFAULT_LEDGER, 0, 10_000)
        .await
        .unwrap();
    let funded = log
        .iter()
        .filter(|e| e.event_type == "MilestoneFunded")
        .count();
    assert_eq!(funded, 1, "in the log once");
}

#[tokio::test]
async fn group_commit_never_turns_an_applied_command_into_a_rejection() {
    let db = TestDb::new().await;
    let setup = executor(Arc::new(db.store()));
    let projects = [Uuid::from_u128(0x7002), Uuid::from_u128(0x7003)];
    let buyers = [Uuid::from_u128(0xB1), Uuid::from_u128(0xB2)];
    for (project, buyer) in projects.iter().zip(buyers) {
        agreed_project(&setup, *project, buyer, 1_000).await;
        let payment = Uuid::new_v4();
        assert!(
            run(&setup, Actor::User(buyer), deposit(payment, 5_000))
                .await
                .is_accepted()
        );
        assert!(
            run(&setup, STRIPE, confirm(payment, 5_000))
                .await
                .is_accepted()
        );
    }
    let writer = impatient_process(&db, 1_500).await;
    let guard = block_the_sequencer(&db).await;
    let items = projects
        .iter()
        .zip(buyers)
        .map(|(p, buyer)| (env(Actor::User(buyer), fund(*p)), None))
        .collect();
    let results = writer.execute_batch(items).await;
    release(guard).await;
    for result in &results {
        let outcome = result.as_ref().expect("committed, so accepted");
        assert!(
            outcome.is_accepted(),
            "an applied command came back as {outcome:?}"
        );
    }
    setup
        .store()
        .sequence_pending(DEFAULT_LEDGER)
        .await
        .unwrap();
    for project in projects {
        let stream = format!("project-{project}");
        let store = setup.store().as_ref();
        assert_eq!(count_events(store, &stream, "MilestoneFunded").await, 1);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Bounded work for every valid command: a buyer with 1,000 funded projects (10x the wallet's old memory
// of 64 projects and 30x the old load bound of 32) can still have a lost chargeback booked.

#[tokio::test]
async fn a_buyer_with_a_thousand_funded_projects_can_lose_a_chargeback() {
    const PROJECTS: u128 = 1_000;
    const CHUNK: usize = 100;
    let db = TestDb::new().await;
    let ex = executor(Arc::new(db.store()));
    let payment = Uuid::from_u128(0xDE905);
    let total = i64::try_from(PROJECTS).unwrap() * 100;
    funded_wallet(&ex, 0xDE905, total).await;
    let mut commands = Vec::new();
    for n in 0..PROJECTS {
        let project_id = Uuid::from_u128(0x10_0000 + n);
        let create = Command::CreateProject {
            project_id,
            buyer: BUYER,
            seller: SELLER,
            currency: Currency::USD,
            milestones: vec![usd(100)],
            fees: FeePolicy::default().into(),
        };
        commands.push(env(Actor::User(BUYER), create));
        let submit = Command::SubmitProjectForAgreement { project_id };
        commands.push(env(Actor::User(BUYER), submit));
        let agree = Command::AgreeToProject { project_id };
        commands.push(env(Actor::User(SELLER), agree));
        commands.push(env(Actor::User(BUYER), fund(project_id)));
    }
    for chunk in commands.chunks(CHUNK) {
        let done = ex.execute_atomic(chunk).await.expect("no store error");
        assert!(done.is_ok(), "{done:?}");
    }
    let opened = run(&ex, STRIPE, chargeback_opened(payment, total)).await;
    assert!(opened.is_accepted(), "{opened:?}");
    let lose = Command::LoseChargeback {
        payment_id: payment,
        chargeback_id: Uuid::from_u128(0xCB),
        recover_from_user: true,
    };
    let lost = ex.execute(&env(STRIPE, lose), Some("lost-1")).await;
    let lost = lost.expect("a valid command never fails for the number of streams it needs");
    assert!(lost.is_accepted(), "{lost:?}");
}

// ---------------------------------------------------------------------------------------------------------
// 4. One canonical write order: appends touching the same streams in opposite order never deadlock.

fn two_streams(first: &str, second: &str, events: usize) -> Vec<StreamAppend> {
    [first, second]
        .iter()
        .map(|stream| StreamAppend {
            stream_id: stream.to_string(),
            expected: ExpectedVersion::NoStream,
            events: (0..events)
                .map(|_| NewEvent {
                    event_id: Uuid::new_v4(),
                    stream_id: stream.to_string(),
                    event_type: "Tested".into(),
                    schema_version: 1,
                    payload: serde_json::json!({"pad": "x"}),
                    metadata: EventMetadata::default(),
                })
                .collect(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_in_opposite_stream_order_never_deadlock() {
    // In waves, so that every append has a connection at once (the pool holds 24).
    const WAVES: usize = 4;
    const PAIRS_PER_WAVE: usize = 10;
    // Long inserts and a common start make the two statements of a pair overlap.
    const EVENTS_PER_STREAM: usize = 1_000;
    let db = TestDb::new().await;
    let store = db.store();
    let (mut deadlocks, mut conflicts, mut appended) = (0, 0, 0);
    for wave in 0..WAVES {
        let mut tasks = Vec::new();
        for pair in 0..PAIRS_PER_WAVE {
            let (x, y) = (format!("x-{wave}-{pair}"), format!("y-{wave}-{pair}"));
            let start = Arc::new(tokio::sync::Barrier::new(2));
            for (first, second) in [(x.clone(), y.clone()), (y, x)] {
                let (store, start) = (store.clone(), start.clone());
                let appends = two_streams(&first, &second, EVENTS_PER_STREAM);
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    store.append(DEFAULT_LEDGER, appends, None).await
                }));
            }
        }
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => appended += 1,
                Err(StoreError::Deadlock) => deadlocks += 1,
                Err(StoreError::ConcurrencyConflict { .. }) => conflicts += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    eprintln!("appended {appended}, conflicts {conflicts}, deadlocks {deadlocks}");
    assert_eq!(deadlocks, 0, "appends in opposite order deadlocked");
    assert_eq!(
        appended,
        WAVES * PAIRS_PER_WAVE,
        "one append of each pair wins"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 5. The inbox row commits with the events: one transaction, or nothing.

fn delivery(
    delivery_id: Uuid,
    dedupe_key: &str,
) -> impl Fn(&CommandOutcome, bool, &[Event]) -> InboxRow {
    let dedupe_key = dedupe_key.to_string();
    move |outcome: &CommandOutcome, replayed: bool, _: &[Event]| InboxRow {
        delivery_id: if replayed {
            Uuid::new_v4()
        } else {
            delivery_id
        },
        gateway: "stripe".into(),
        gateway_event_id: "evt_\0nul".into(),
        event_type: "charge.succeeded".into(),
        dedupe_key: dedupe_key.clone(),
        payment_reference: None,
        disposition: match (replayed, outcome.is_accepted()) {
            (true, _) => "duplicate",
            (false, true) => "applied",
            (false, false) => "rejected",
        }
        .into(),
        detail: String::new(),
        command_id: Some(command_id(outcome)),
        correlation_id: None,
        raw_body: b"{\"id\":\"evt_\\u0000nul\"}\0".to_vec(),
        received_at: at(0),
        signature: None,
    }
}

async fn inbox_rows_commit_with_their_command(store: Arc<dyn EventStore>) {
    let ex = executor(store.clone());
    let payment = Uuid::from_u128(0x1B0);
    assert!(
        run(&ex, Actor::User(BUYER), deposit(payment, 2_000))
            .await
            .is_accepted()
    );
    // A row the table refuses (its delivery id is taken) takes the command down with it.
    let taken = Uuid::new_v4();
    ex.record_inbox(delivery(taken, "other")(
        &run(&ex, STRIPE, confirm(Uuid::nil(), 1)).await,
        false,
        &[],
    ))
    .await
    .unwrap();
    let key = "stripe:deposit_confirmed";
    let refused = ex
        .execute_with_inbox(
            &env(STRIPE, confirm(payment, 2_000)),
            Some(key),
            &delivery(taken, key),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let stream = format!("payment-{payment}");
    assert_eq!(
        count_events(store.as_ref(), &stream, "DepositSucceeded").await,
        0
    );
    assert!(
        store
            .get_idempotency(DEFAULT_LEDGER, key)
            .await
            .unwrap()
            .is_none()
    );
    // Accepted: events, key and row together; the redelivery gets its own "duplicate" row.
    let first = ex
        .execute_with_inbox(
            &env(STRIPE, confirm(payment, 2_000)),
            Some(key),
            &delivery(Uuid::new_v4(), key),
        )
        .await
        .unwrap();
    assert!(first.is_accepted(), "{first:?}");
    let again = ex
        .execute_with_inbox(
            &env(STRIPE, confirm(payment, 2_000)),
            Some(key),
            &delivery(Uuid::new_v4(), key),
        )
        .await
        .unwrap();
    assert_eq!(command_id(&again), command_id(&first));
    let rows = store.read_inbox(DEFAULT_LEDGER, key).await.unwrap();
    let dispositions: Vec<&str> = rows.iter().map(|r| r.disposition.as_str()).collect();
    assert_eq!(dispositions, ["applied", "duplicate"]);
    assert_eq!(rows[0].gateway_event_id, "evt_\\u0000nul");
    assert_eq!(rows[0].raw_body, b"{\"id\":\"evt_\\u0000nul\"}\0");
    assert_eq!(
        count_events(store.as_ref(), &stream, "DepositSucceeded").await,
        1
    );
}

#[tokio::test]
async fn inbox_rows_commit_with_their_command_in_postgres() {
    let db = TestDb::new().await;
    inbox_rows_commit_with_their_command(Arc::new(db.store())).await;
}

#[tokio::test]
async fn inbox_rows_commit_with_their_command_in_memory() {
    inbox_rows_commit_with_their_command(Arc::new(InMemoryEventStore::new())).await;
}

/// Group commit keeps commands that only share a stream they READ (the platform's fee policy, which every
/// new project reads) in one transaction: a stream read by an earlier command of the batch is no overlap,
/// only a stream it writes is. Putting every read stream in the batch's taken set sent all but the first
/// of such commands to the slow path, one transaction and one sequencer call each (bench append).
#[tokio::test]
async fn group_commit_keeps_commands_that_only_share_a_read_stream_in_one_transaction() {
    let db = TestDb::new().await;
    let ex = executor(Arc::new(db.store()));
    let items: Vec<(CommandEnvelope, Option<String>)> = (1..=10u128)
        .map(|n| {
            let create = Command::CreateProject {
                project_id: Uuid::from_u128(0x9000 + n),
                buyer: Uuid::from_u128(0xB000 + n),
                seller: SELLER,
                currency: Currency::USD,
                milestones: vec![usd(1_000)],
                fees: FeePolicy::default().into(),
            };
            (env(Actor::User(Uuid::from_u128(0xB000 + n)), create), None)
        })
        .collect();
    for result in ex.execute_batch(items).await {
        assert!(result.expect("no store error").is_accepted());
    }
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct tx_id) from ledger.events where stream_id like 'project-%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        transactions, 1,
        "ten projects that only share the streams they read were written in {transactions} transactions"
    );
}
