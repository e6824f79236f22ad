//! The background sequencer and what `verify` says about sequencing, through the release CLI against a
//! real PostgreSQL (issue 10, items 4 and 5): a writer process killed between its commit and its
//! sequencing, a stale unsequenced event, an edited `sequenced_at` under a seal, a doctored snapshot.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ledger_store::EventStore;
use ledger_store::testdb::TestDb;
use sqlx::{Connection, PgConnection};

const BUYER: &str = "00000000-0000-4000-8000-00000000b0b0";
const DEPOSIT: &str = "00000000-0000-4000-8000-0000000000d1";
const LOCK_KEY: &str = "escrow-ledger.sequence:default";

fn cli(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_escrow-ledger"))
        .arg("--database-url")
        .arg(db.url())
        .args(args)
        .output()
        .expect("the binary runs")
}

fn spawn(db: &TestDb, args: &[&str], stdin_file: Option<&std::path::Path>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_escrow-ledger"));
    command
        .arg("--database-url")
        .arg(db.url())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(file) = stdin_file {
        command.stdin(std::fs::File::open(file).unwrap());
    }
    command.spawn().expect("the binary starts")
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn findings(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "verify should report: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn command_line(i: usize, actor: &str, command: &str) -> String {
    format!(r#"{{"actor": {actor}, "at": "2026-01-05T10:{i:02}:00Z", "command": {command}}}"#)
}

fn initiate_deposit() -> String {
    command_line(
        0,
        &format!(r#"{{"kind": "user", "id": "{BUYER}"}}"#),
        &format!(
            r#"{{"type": "initiate_deposit", "payment_id": "{DEPOSIT}", "amount": {{"amount": "110.00", "currency": "USD"}}, "gateway": "stripe", "fund": null}}"#
        ),
    )
}

fn confirm_deposit() -> String {
    command_line(
        1,
        r#"{"kind": "gateway", "id": "stripe"}"#,
        &format!(
            r#"{{"type": "confirm_deposit", "payment_id": "{DEPOSIT}", "amount": {{"amount": "110.00", "currency": "USD"}}, "gateway_fee": {{"amount": "3.50", "currency": "USD"}}, "occurred_at": "2026-01-05T09:59:00Z"}}"#
        ),
    )
}

fn write_lines(db: &TestDb, name: &str, lines: &[String]) -> std::path::PathBuf {
    let file = std::env::temp_dir().join(format!("{name}-{}.jsonl", db.name()));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    count_on(&db.pool, sql).await
}

async fn count_on(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `sql` counts at least `at_least` on `pool`, or panics after `timeout`.
async fn wait_for(pool: &sqlx::PgPool, sql: &str, at_least: i64, timeout: Duration, what: &str) {
    let started = Instant::now();
    while count_on(pool, sql).await < at_least {
        assert!(started.elapsed() < timeout, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn events_of_a_writer_killed_after_commit_are_sequenced_within_a_second() {
    let db = TestDb::new().await;
    let first = write_lines(&db, "initiate", &[initiate_deposit()]);
    succeeded(&cli(&db, &["apply", first.to_str().unwrap()]));
    let head_before = count(&db, "select count(*) from ledger.sequence").await;

    // The test holds the per-ledger sequencer lock: the writer commits, then blocks in its sequencing.
    // The lock, the blocked sequencing and its session are on the node holding the ledger (the worker on
    // Citus, where `ledger.sequence` runs).
    let node_url = db.ledger_node_url("default").await.unwrap();
    let node = sqlx::PgPool::connect(&node_url).await.unwrap();
    let mut holder = PgConnection::connect(&node_url).await.unwrap();
    sqlx::query("select pg_advisory_lock(hashtextextended($1, 0))")
        .bind(LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let second = write_lines(&db, "confirm", &[confirm_deposit()]);
    let mut writer = spawn(&db, &["apply", "-"], Some(&second));
    wait_for(
        &db.pool,
        "select count(*) from ledger.unsequenced",
        1,
        Duration::from_secs(30),
        "the writer never committed",
    )
    .await;
    wait_for(
        &node,
        "select count(*) from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'",
        1,
        Duration::from_secs(30),
        "the writer never reached its sequencing",
    )
    .await;
    // SIGKILL the writer, and end its session as the server would once it notices the dead client.
    writer.kill().unwrap();
    writer.wait().unwrap();
    let ended: i64 = count_on(
        &node,
        "with waiting as materialized (
             select pid from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock'
                and pid <> pg_backend_pid())
         select count(*) from waiting where pg_terminate_backend(pid, 5000)",
    )
    .await;
    assert_eq!(ended, 1, "the dead writer's session");
    // Events, not queue rows: a row holds one inserting statement's events (`local_ids`).
    let unsequenced = count(
        &db,
        "select count(distinct i.id) from ledger.unsequenced u
          cross join lateral unnest(coalesce(u.local_ids, array[u.local_id])) as i(id)",
    )
    .await;
    assert!(unsequenced > 0);

    let mut sequencer = spawn(&db, &["sequencer", "run"], None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("select pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let released = Instant::now();
    let started = Instant::now();
    while count(&db, "select count(*) from ledger.unsequenced").await > 0 {
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "{unsequenced} committed events still unsequenced 1 s after the lock was released (sequencer: {:?})",
            sequencer.try_wait()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sequenced_after = released.elapsed();
    let head = count(&db, "select count(*) from ledger.sequence").await;
    assert_eq!(head, head_before + unsequenced);
    let tb: serde_json::Value = serde_json::from_str(&succeeded(&cli(
        &db,
        &["trial-balance", "--format", "json"],
    )))
    .unwrap();
    let clearing = tb["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == "Assets:Gateway:Stripe:Clearing")
        .unwrap_or_else(|| panic!("the confirmed deposit is not in the trial balance: {tb}"));
    assert_eq!(clearing["debit"], "106.50");
    sequencer.kill().unwrap();
    sequencer.wait().unwrap();
    eprintln!("sequenced {unsequenced} events {sequenced_after:?} after the lock was released");
}

#[tokio::test]
async fn verify_reports_an_event_left_unsequenced_for_more_than_ten_seconds() {
    let db = TestDb::new().await;
    assert!(succeeded(&cli(&db, &["verify"])).is_empty());
    // Committed a minute ago by a writer that died before sequencing (queued by the schema's trigger;
    // the explicit queue insert is for schemas without one).
    // Backdated behind the trigger that stamps `recorded_at` (the database's own clock, issue 19), as the
    // owner could: a writer cannot state it.
    db.tamper(
        "with e as (
             insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type,
                                        schema_version, payload, metadata, recorded_at)
             values ('default', 'wallet-x', 1, gen_random_uuid(), 'Credited', 1, '{}', '{}',
                     now() - interval '1 minute')
             returning ledger_id, local_id)
         insert into ledger.unsequenced (ledger_id, local_id) select * from e on conflict do nothing",
    )
    .await
    .unwrap();
    let report = findings(&cli(&db, &["verify"]));
    assert!(report.contains("unsequenced"), "{report}");
    let status = succeeded(&cli(&db, &["db", "status"]));
    assert!(status.contains("1 unsequenced"), "{status}");
}

#[tokio::test]
async fn verify_with_a_seal_reports_an_edited_sequenced_at() {
    let db = TestDb::new().await;
    let lines = write_lines(&db, "deposit", &[initiate_deposit(), confirm_deposit()]);
    succeeded(&cli(&db, &["apply", lines.to_str().unwrap()]));
    let seal = std::env::temp_dir().join(format!("{}.seal.json", db.name()));
    succeeded(&cli(&db, &["seal", "--output", seal.to_str().unwrap()]));
    assert!(succeeded(&cli(&db, &["verify", "--seal", seal.to_str().unwrap()])).is_empty());
    // Backdating the confirmation changes what `trial-balance --as-of` answers for the hour before.
    // The new times are computed here: Citus plans no STABLE function of a column in an UPDATE.
    let links: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select position, sequenced_at from ledger.sequence where ledger_id = 'default'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut tampering = db.tampering().await.unwrap();
    for (position, at) in links {
        sqlx::query(
            "update ledger.sequence set sequenced_at = $1
              where ledger_id = 'default' and position = $2",
        )
        .bind(at - chrono::Duration::hours(1))
        .bind(position)
        .execute(tampering.conn())
        .await
        .unwrap();
    }
    tampering.finish().await.unwrap();
    let report = findings(&cli(&db, &["verify", "--seal", seal.to_str().unwrap()]));
    assert!(report.contains("seal"), "{report}");
}

/// The state the executor would snapshot: the stream's events folded by the core.
async fn replayed_state(db: &TestDb, stream_id: &str) -> serde_json::Value {
    let stream: ledger_core::StreamId = stream_id.parse().unwrap();
    let events = db
        .store()
        .read_stream("default", stream_id, 0, 1_000)
        .await
        .unwrap();
    let mut state = ledger_core::AggState::initial(&stream);
    for e in &events {
        let event = ledger_core::Event::from_stored(
            &stream,
            &e.event_type,
            e.schema_version,
            e.payload.clone(),
        )
        .unwrap();
        state = ledger_core::engine::evolve(state, &event);
    }
    serde_json::to_value(&state).unwrap()
}

#[tokio::test]
async fn verify_reports_a_lying_or_doctored_snapshot() {
    let db = TestDb::new().await;
    let lines = write_lines(&db, "deposit", &[initiate_deposit(), confirm_deposit()]);
    succeeded(&cli(&db, &["apply", lines.to_str().unwrap()]));
    let (stream_id, stream_version): (String, i64) = sqlx::query_as(
        "select stream_id, max(stream_version) from ledger.events
          where stream_id like 'wallet-%' group by stream_id limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut snapshot = ledger_store::Snapshot {
        stream_id: stream_id.clone(),
        stream_version,
        fold_version: ledger_store::executor::FOLD_VERSION,
        state: replayed_state(&db, &stream_id).await,
        taken_at: chrono::Utc::now(),
    };
    db.store()
        .save_snapshot("default", &snapshot)
        .await
        .unwrap();
    assert!(succeeded(&cli(&db, &["verify"])).is_empty());
    // (a) A writer saves a made-up state through the function: the digest is valid, the state is not.
    snapshot.state["available_minor"] = serde_json::json!(1_000_000);
    db.store()
        .save_snapshot("default", &snapshot)
        .await
        .unwrap();
    let report = findings(&cli(&db, &["verify"]));
    assert!(report.contains("differs from the replay"), "{report}");
    // (b) Someone edits the row behind the function: the digest no longer matches.
    sqlx::raw_sql("update ledger.snapshots set state = '{\"available_minor\": 1}'")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = findings(&cli(&db, &["verify"]));
    assert!(
        report.contains("snapshot") && report.contains("digest"),
        "{report}"
    );
}
