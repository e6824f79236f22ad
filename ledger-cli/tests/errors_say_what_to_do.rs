//! Issue 24, finding 3 and the error paths of findings 1 and 2: every error a newcomer met says what went
//! wrong and what to do next, and nothing panics or paints escape codes into a pipe.

mod support;

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ledger_store::testdb::TestDb;
use support::{bin, cli};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_pretty_printed_object_given_to_apply_says_one_object_per_line() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("escrow-errors-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pretty.json");
    std::fs::write(
        &file,
        "{\"actor\": {\"kind\": \"system\"},\n \"command\": {\"type\": \"close_periods\", \"through\": \"2020-01\"}}\n",
    )
    .unwrap();
    let out = cli(&db, "default", &["apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains("one whole object per line") && said.contains("jq -c"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_database_a_refused_port_and_a_bad_uuid_say_what_to_do() {
    let db = TestDb::new().await;
    let missing = format!(
        "{}/escrow_no_such_db_{}",
        db.url().rsplit_once('/').unwrap().0,
        std::process::id()
    );
    let out = bin()
        .args(["--database-url", &missing, "db", "migrate"])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("does not exist") && said.contains("createdb"),
        "{said}"
    );

    let started = Instant::now();
    let out = bin()
        .args([
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
            "db",
            "status",
        ])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(said.contains("connection refused at 127.0.0.1:1"), "{said}");

    let out = cli(
        &db,
        "default",
        &[
            "period",
            "close",
            "--through",
            "2026-01",
            "--operator",
            "alice",
        ],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("--operator") && said.contains("expected a UUID"),
        "{said}"
    );
}

#[tokio::test]
async fn serve_names_a_missing_ledger_and_refuses_a_placeholder_key() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("escrow-errors-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("workers.toml");
    std::fs::write(
        &config,
        "[ledgers.acme]\napi_key = \"docs-check-key-0123456789\"\n",
    )
    .unwrap();
    let serve = |config: &std::path::Path| {
        bin()
            .args([
                "--database-url",
                db.url(),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(config)
            .output()
            .unwrap()
    };
    let said = text(&serve(&config));
    assert!(said.contains("escrow-ledger ledgers create acme"), "{said}");
    std::fs::write(&config, "[ledgers.default]\napi_key = \"...\"\n").unwrap();
    let out = serve(&config);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("ledgers.default.api_key is a placeholder"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn as_of_before_anything_was_recorded_points_to_effective_as_of() {
    let db = TestDb::new().await;
    let out = cli(&db, "default", &["demo"]);
    assert!(out.status.success());
    let out = cli(
        &db,
        "default",
        &["trial-balance", "--as-of", "2001-01-31T23:59:59Z"],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("nothing was recorded by") && said.contains("--effective-as-of"),
        "{said}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_quietly_and_logs_to_a_pipe_carry_no_colour() {
    let db = TestDb::new().await;
    let seeded = cli(&db, "default", &["bench", "seed", "--events", "3000"]);
    assert!(seeded.status.success(), "{}", text(&seeded));
    // `journal | head -1`: the reader goes away after the first byte, long before the journal (far more
    // than a pipe's buffer) is written.
    let mut child = bin()
        .args(["--database-url", db.url(), "journal"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0_u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then dropped: the pipe closes
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Logs (here at info) into a pipe: plain text.
    let out = bin()
        .args(["--database-url", db.url(), "projections", "status"])
        .env("ESCROW_LEDGER_LOG", "info")
        .output()
        .unwrap();
    assert!(
        !out.stderr.contains(&0x1b),
        "escape codes in logs written to a pipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
