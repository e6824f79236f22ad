//! `serve` runs the deadline worker for the ledgers it serves, unless `--no-timers` (issue 11): a deposit
//! initiated four days ago (explicit `at`) is past its 72-hour expiry; a server started with `--no-timers`
//! leaves it alone, a server started without it cancels it within seconds, once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use ledger_store::testdb::TestDb;
use serde_json::json;
use uuid::Uuid;

const CLI: &str = env!("CARGO_BIN_EXE_escrow-ledger");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(url: &str, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CLI)
        .args(["--database-url", url, "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .env("ESCROW_LEDGER_API_KEY", "timers-serve-key")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    Server(child)
}

async fn cancellations(db: &TestDb, payment: Uuid) -> i64 {
    sqlx::query_scalar(
        "select count(*) from ledger.events where stream_id = $1 and event_type = 'DepositCancelled'",
    )
    .bind(format!("payment-{payment}"))
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn serve_fires_due_deadlines_unless_no_timers() {
    let db = TestDb::new().await;
    let (payment, payer) = (Uuid::new_v4(), Uuid::new_v4());
    let line = json!({"actor": {"kind": "user", "id": payer}, "at": Utc::now() - chrono::Duration::days(4),
        "command": {"type": "initiate_deposit", "payment_id": payment, "amount": {"amount": "5.00", "currency": "USD"},
        "gateway": "stripe", "fund": null}});
    let path = std::env::temp_dir().join(format!("timers-serve-{payment}.jsonl"));
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let applied = Command::new(CLI)
        .args(["--database-url", db.url(), "apply"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");

    let quiet = serve(db.url(), &["--no-timers"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cancellations(&db, payment).await, 0, "--no-timers fired");
    drop(quiet);

    let _server = serve(db.url(), &[]);
    let started = Instant::now();
    while cancellations(&db, payment).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not fire the due deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cancellations(&db, payment).await, 1);
    let key: i64 = sqlx::query_scalar(
        "select count(*) from ledger.idempotency where idempotency_key like 'deadline:%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(key, 1);
    std::fs::remove_file(&path).ok();
}
