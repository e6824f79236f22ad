//! `escrow-ledger db status`, through the binary against a real PostgreSQL: on a database that was never
//! migrated it says so (it used to fail on the queue it looked for), and a reader that goes away
//! (`db status | head -1`) ends it quietly (it used to panic in `println!`, exit 101).

use std::process::{Command, Stdio};

use ledger_store::testdb::TestDb;

fn db_status(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_escrow-ledger"));
    command.args(["--database-url", url, "db", "status"]);
    command
}

#[tokio::test]
async fn on_a_database_never_migrated_it_says_to_migrate() {
    let db = TestDb::empty().await;
    let output = db_status(db.url()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("migrations applied: 0"), "{stdout}");
    assert!(
        stdout.contains("no ledger schema yet: run `escrow-ledger db migrate`"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_reader_that_went_away_ends_it_quietly() {
    let db = TestDb::new().await;
    // Full output first, for comparison.
    let full = db_status(db.url()).output().unwrap();
    assert!(full.status.success());
    assert!(String::from_utf8_lossy(&full.stdout).contains("ledger default: 0 events"));
    // Then with the pipe's read end closed before the first write.
    let mut child = db_status(db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
