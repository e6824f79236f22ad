//! Helpers shared by the binary-level test files: the binary, `apply` lines, trial balances in cents.
#![allow(dead_code)] // each test file uses its own subset

pub mod commands_doc;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, SecondsFormat, Utc};
use ledger_store::testdb::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_escrow-ledger"))
}

pub fn cli(db: &TestDb, ledger: &str, args: &[&str]) -> Output {
    bin()
        .arg("--database-url")
        .arg(db.url())
        .args(["--ledger", ledger])
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn usd(amount: &str) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

pub fn user(id: Uuid) -> Value {
    json!({"kind": "user", "id": id})
}

pub fn admin(id: Uuid) -> Value {
    json!({"kind": "admin", "id": id})
}

pub fn system() -> Value {
    json!({"kind": "system"})
}

pub fn gateway(name: &str) -> Value {
    json!({"kind": "gateway", "id": name})
}

/// One `apply` line: actor, command, a fresh idempotency key, and `at` when given.
pub fn line(actor: Value, command: Value, at: Option<DateTime<Utc>>) -> Value {
    let mut l =
        json!({"actor": actor, "command": command, "idempotency_key": Uuid::new_v4().to_string()});
    if let Some(at) = at {
        l["at"] = json!(iso(at));
    }
    l
}

/// An `apply -` process on `ledger`, its stdin, stdout and stderr piped (feed it `jsonl(lines)`).
pub fn spawn_apply(db: &TestDb, ledger: &str) -> std::process::Child {
    bin()
        .arg("--database-url")
        .arg(db.url())
        .args(["--ledger", ledger, "apply", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apply starts")
}

/// `lines` as JSON Lines.
pub fn jsonl(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Runs `apply -` on `lines`; one result object per line, in line order.
pub fn apply(db: &TestDb, ledger: &str, lines: &[Value]) -> Vec<Value> {
    let mut child = spawn_apply(db, ledger);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(jsonl(lines).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    results.sort_by_key(|r| r["line"].as_u64());
    assert_eq!(
        results.len(),
        lines.len(),
        "apply answered {} of {} lines: {}",
        results.len(),
        lines.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

pub fn accepted(r: &Value) -> bool {
    r["status"] == "accepted"
}

/// Applies lines that must all be accepted (setup).
pub fn setup(db: &TestDb, ledger: &str, lines: &[Value]) {
    for (r, l) in apply(db, ledger, lines).iter().zip(lines) {
        assert!(accepted(r), "setup line refused: {l}\n -> {r}");
    }
}

/// Balances on the credit side minus the debit side, in minor units (USD: cents), by (account, currency).
pub fn balances(db: &TestDb, ledger: &str) -> BTreeMap<(String, String), i128> {
    let out = cli(db, ledger, &["trial-balance", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cents = |v: &Value| -> i128 {
        let text = v.as_str().unwrap_or("0");
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let frac = format!("{frac:0<2}");
        whole.parse::<i128>().unwrap() * 100 + frac[..2].parse::<i128>().unwrap()
    };
    let mut out = BTreeMap::new();
    for row in report["rows"].as_array().unwrap() {
        let key = (
            row["account"].as_str().unwrap().to_string(),
            row["currency"].as_str().unwrap().to_string(),
        );
        *out.entry(key).or_insert(0) += cents(&row["credit"]) - cents(&row["debit"]);
    }
    out
}

pub fn bal(b: &BTreeMap<(String, String), i128>, account: &str) -> i128 {
    b.get(&(account.to_string(), "USD".to_string()))
        .copied()
        .unwrap_or(0)
}

pub fn held(b: &BTreeMap<(String, String), i128>, u: Uuid) -> i128 {
    bal(b, &format!("Liabilities:Users:{u}:Available"))
        + bal(b, &format!("Liabilities:Users:{u}:Pending"))
}

pub fn escrow(b: &BTreeMap<(String, String), i128>, p: Uuid, m: u32) -> i128 {
    bal(b, &format!("Liabilities:Escrow:{p}:{m}"))
}

/// Supabase's roles, as its init scripts make them (`authenticator`'s password is irrelevant here: the test
/// server trusts local connections).
pub async fn supabase_roles(pool: &sqlx::PgPool) {
    for (role, attributes) in [
        ("anon", "nologin noinherit nobypassrls"),
        ("authenticated", "nologin noinherit nobypassrls"),
        ("service_role", "nologin noinherit bypassrls"),
        ("authenticator", "login noinherit nobypassrls"),
    ] {
        let create = format!(
            "do $$ begin create role {role}; exception when duplicate_object or unique_violation then null; end $$"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(pool)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter role {role} {attributes}"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::raw_sql("grant anon, authenticated, service_role to authenticator")
        .execute(pool)
        .await
        .unwrap();
}

/// The URL of `db` logged in as `authenticator`.
pub fn as_authenticator(db: &TestDb) -> String {
    let url = db.url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://authenticator@{host}")
}
