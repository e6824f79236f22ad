//! Month-end against a real PostgreSQL: reconciliation goldens in the three statement formats (matched lines,
//! a gross mismatch, a fee mismatch, a line only at the gateway, a movement only in the ledger, a settlement),
//! exit codes 0/1/2 and the run kept in the log; closing January (closed reports unchanged by a late callback,
//! hledger and beancount still agree with the trial balance, re-opening logged); a user's statement.
//!
//! The history (USD, buyer B, all through one gateway G), with its hand-computed effect on G's clearing:
//!   D1 100.00 fee 3.20 (Jan 5) +96.80 | D2 50.00 fee 1.75 (Jan 12) +48.25 | D3 20.00 fee 0.88 (Jan 20) +19.12
//!   D5 30.00 fee 0.90 (Jan 22) +29.10 | settlement of 140.00 to the bank (Jan 31 12:00) -140.00
//!   clearing at Jan 31 12:00: 53.27.
//! The statement of each format says: D1 as booked; D2 gross 55.00 (gross mismatch); D3 fee 0.90 (fee
//! mismatch); a stranger's 9.00 fee 0.30 (only at the gateway); the settlement as booked; nothing of D5 (only in
//! the ledger). Its net: 96.80 + 53.25 + 19.10 + 8.70 - 140.00 = 37.85.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use ledger_store::testdb::TestDb;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BUYER: &str = "00000000-0000-4000-8000-00000000b0b0";
const ADMIN: &str = "00000000-0000-4000-8000-00000000ad00";
const D1: &str = "00000000-0000-4000-8000-0000000000d1";
const D2: &str = "00000000-0000-4000-8000-0000000000d2";
const D3: &str = "00000000-0000-4000-8000-0000000000d3";
const D4: &str = "00000000-0000-4000-8000-0000000000d4";
const D5: &str = "00000000-0000-4000-8000-0000000000d5";
const STRANGER: &str = "00000000-0000-4000-8000-00000000dead";

fn cli(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_escrow-ledger"))
        .arg("--database-url")
        .arg(db.url())
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("JSON output")
}

fn usd(amount: &str) -> String {
    format!(r#"{{"amount": "{amount}", "currency": "USD"}}"#)
}

fn deposit_lines(
    gateway: &str,
    id: &str,
    gross: &str,
    fee: &str,
    occurred_at: &str,
) -> Vec<String> {
    vec![
        format!(
            r#"{{"actor": {{"kind": "user", "id": "{BUYER}"}}, "command": {{"type": "initiate_deposit", "payment_id": "{id}", "amount": {}, "gateway": "{gateway}", "fund": null}}}}"#,
            usd(gross)
        ),
        format!(
            r#"{{"actor": {{"kind": "gateway", "id": "{gateway}"}}, "command": {{"type": "confirm_deposit", "payment_id": "{id}", "amount": {}, "gateway_fee": {}, "occurred_at": "{occurred_at}"}}}}"#,
            usd(gross),
            usd(fee)
        ),
    ]
}

fn apply(db: &TestDb, lines: &[String]) {
    let file = std::env::temp_dir().join(format!("month-end-{}-{}.jsonl", db.name(), lines.len()));
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = stdout(&cli(db, &["apply", file.to_str().unwrap()]));
    assert!(
        out.lines().all(|l| l.contains("\"status\":\"accepted\"")),
        "{out}"
    );
}

/// The history above, through `gateway`, its settlement named `settlement_id`.
async fn history_db(gateway: &str, settlement_id: &str) -> TestDb {
    let db = TestDb::new().await;
    let mut lines = Vec::new();
    for (id, gross, fee, at) in [
        (D1, "100.00", "3.20", "2026-01-05T10:00:00Z"),
        (D2, "50.00", "1.75", "2026-01-12T10:00:00Z"),
        (D3, "20.00", "0.88", "2026-01-20T10:00:00Z"),
        (D5, "30.00", "0.90", "2026-01-22T10:00:00Z"),
    ] {
        lines.extend(deposit_lines(gateway, id, gross, fee, at));
    }
    lines.push(format!(
        r#"{{"actor": {{"kind": "admin", "id": "{ADMIN}"}}, "command": {{"type": "record_settlement", "gateway": "{gateway}", "settlement_id": "{settlement_id}", "bank_account": "main", "amount": {}, "fee": null, "occurred_at": "2026-01-31T12:00:00Z"}}}}"#,
        usd("140.00")
    ));
    apply(&db, &lines);
    db
}

fn write(db: &TestDb, name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", db.name()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Each list as sorted lines `reference kind statement(gross/fee) ledger(gross/fee)`.
fn summary(report: &Value) -> BTreeMap<String, Vec<String>> {
    let side = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            format!(
                "{}/{}",
                v["gross"].as_str().unwrap(),
                v["fee"].as_str().unwrap()
            )
        }
    };
    [
        "matched",
        "amount_mismatch",
        "only_at_gateway",
        "only_in_ledger",
    ]
    .iter()
    .map(|list| {
        let mut items: Vec<String> = report[list]
            .as_array()
            .unwrap_or_else(|| panic!("{list} missing in {report}"))
            .iter()
            .map(|i| {
                format!(
                    "{} {} {} {}",
                    i["payment_reference"].as_str().unwrap(),
                    i["kind"].as_str().unwrap(),
                    side(&i["statement"]),
                    side(&i["ledger"])
                )
            })
            .collect();
        items.sort();
        (list.to_string(), items)
    })
    .collect()
}

fn golden(settlement_id: &str) -> BTreeMap<String, Vec<String>> {
    let mut matched = vec![
        format!("{D1} deposit 100.00/3.20 100.00/3.20"),
        format!("{settlement_id} settlement 140.00/0.00 140.00/0.00"),
    ];
    matched.sort();
    [
        ("matched", matched),
        (
            "amount_mismatch",
            vec![
                format!("{D2} deposit 55.00/1.75 50.00/1.75"),
                format!("{D3} deposit 20.00/0.90 20.00/0.88"),
            ],
        ),
        (
            "only_at_gateway",
            vec![format!("{STRANGER} deposit 9.00/0.30 -")],
        ),
        ("only_in_ledger", vec![format!("{D5} deposit - 30.00/0.90")]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Runs `reconcile` in JSON, checks the exit code is 1, the golden lists, and that the run is in the log.
async fn reconcile_golden(
    db: &TestDb,
    gateway: &str,
    format: &str,
    file: &std::path::Path,
    settlement_id: &str,
) -> Value {
    let out = cli(
        db,
        &[
            "reconcile",
            "--gateway",
            gateway,
            "--statement",
            file.to_str().unwrap(),
            "--statement-format",
            format,
            "--format",
            "json",
            "--operator",
            ADMIN,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        summary(&report),
        golden(settlement_id),
        "{format}: {report}"
    );
    let digest = format!("{:x}", Sha256::digest(std::fs::read(file).unwrap()));
    assert_eq!(report["statement_sha256"], digest);
    let runs: Vec<(Value, Value)> = sqlx::query_as(
        "select payload, metadata from ledger.events where event_type = 'ReconciliationRecorded' order by recorded_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let (payload, _) = runs.last().expect("the run is recorded in the log");
    assert_eq!(payload["run"]["statement_sha256"], digest);
    assert_eq!(payload["run"]["format"], format);
    assert_eq!(
        payload["run"]["counts"],
        serde_json::json!({"matched": 2, "amount_mismatch": 2, "only_at_gateway": 1, "only_in_ledger": 1})
    );
    report
}

#[tokio::test]
async fn reconcile_generic_csv_golden_exit_codes_and_clearing() {
    let db = history_db("stripe", "stl-1").await;
    let statement = format!(
        "payment_reference,kind,gross,fee,currency,occurred_at\n\
         {D1},deposit,100.00,3.20,USD,2026-01-05T10:00:00Z\n\
         {D2},deposit,55.00,1.75,USD,2026-01-12T10:00:00Z\n\
         {D3},deposit,20.00,0.90,USD,2026-01-20T10:00:00Z\n\
         {STRANGER},deposit,9.00,0.30,USD,2026-01-21T10:00:00Z\n\
         stl-1,settlement,140.00,0.00,USD,2026-01-31T12:00:00Z\n"
    );
    let file = write(&db, "generic.csv", &statement);
    let report = reconcile_golden(&db, "stripe", "generic", &file, "stl-1").await;
    assert_eq!(
        report["clearing"],
        serde_json::json!([{"currency": "USD", "ledger_balance_at_end": "53.27", "ledger_net_in_range": "53.27",
                             "statement_net": "37.85", "difference": "15.42"}])
    );
    // The table says the same in words.
    let out = cli(
        &db,
        &[
            "reconcile",
            "--gateway",
            "stripe",
            "--statement",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    for line in [
        "matched: 2",
        "amount_mismatch: 2",
        "only_at_gateway: 1",
        "only_in_ledger: 1",
    ] {
        assert!(table.contains(line), "{line} in\n{table}");
    }
    // Everything matched: exit 0.
    let clean = write(
        &db,
        "clean.csv",
        &format!(
            "payment_reference,kind,gross,fee,currency,occurred_at\n{D1},deposit,100.00,3.20,USD,2026-01-05T10:00:00Z\n"
        ),
    );
    let out = cli(
        &db,
        &[
            "reconcile",
            "--gateway",
            "stripe",
            "--statement",
            clean.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the whole of January as the period, D2..D5 are missing from that statement.
    let out = cli(
        &db,
        &[
            "reconcile",
            "--gateway",
            "stripe",
            "--statement",
            clean.to_str().unwrap(),
            "--format",
            "json",
            "--period",
            "2026-01",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["only_in_ledger"].as_array().unwrap().len(), 4);
    // Unreadable statements: exit 2 with the line and the cause, and no run recorded.
    let recorded = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from ledger.events where event_type = 'ReconciliationRecorded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let before = recorded(&db).await;
    let bad = write(
        &db,
        "bad.csv",
        "payment_reference,kind,gross,fee,currency,occurred_at\nx,deposit,1.005,0,USD,2026-01-05T10:00:00Z\n",
    );
    for path in [bad.to_str().unwrap(), "/nonexistent/statement.csv"] {
        let out = cli(
            &db,
            &["reconcile", "--gateway", "stripe", "--statement", path],
        );
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("statement"), "{err}");
    }
    assert!(
        String::from_utf8_lossy(
            &cli(
                &db,
                &[
                    "reconcile",
                    "--gateway",
                    "stripe",
                    "--statement",
                    bad.to_str().unwrap()
                ]
            )
            .stderr
        )
        .contains("line 2")
    );
    assert_eq!(recorded(&db).await, before);
    let out = cli(
        &db,
        &[
            "reconcile",
            "--gateway",
            "nope",
            "--statement",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn reconcile_stripe_balance_report_golden() {
    let db = history_db("stripe", "po_1Abc").await;
    let statement = format!(
        "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,source_id,description,payment_metadata[payment_reference]\n\
         txn_1,2026-01-05 10:00:00,usd,100.00,3.20,96.80,charge,ch_1,,{D1}\n\
         txn_2,2026-01-12 10:00:00,usd,55.00,1.75,53.25,charge,ch_2,,{D2}\n\
         txn_3,2026-01-20 10:00:00,usd,20.00,0.90,19.10,charge,ch_3,,{D3}\n\
         txn_4,2026-01-21 10:00:00,usd,9.00,0.30,8.70,charge,ch_4,\"card, visa\",{STRANGER}\n\
         txn_5,2026-01-31 12:00:00,usd,-140.00,0.00,-140.00,payout,po_1Abc,STRIPE PAYOUT,\n\
         txn_6,2026-01-15 00:00:00,usd,-2.00,0.00,-2.00,fee,fee_1,Billing,\n"
    );
    let file = write(&db, "stripe.csv", &statement);
    let report = reconcile_golden(&db, "stripe", "stripe", &file, "po_1Abc").await;
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1, "{report}");
}

#[tokio::test]
async fn reconcile_paystack_settlements_golden() {
    let db = history_db("paystack", "3090024").await;
    let tx = |reference: &str, amount: i64, fees: i64, paid_at: &str, status: &str| {
        serde_json::json!({"id": amount, "status": status, "reference": reference, "amount": amount, "fees": fees,
                           "currency": "USD", "channel": "card", "paid_at": paid_at})
    };
    let statement = serde_json::json!([
        {"status": true, "message": "Settlements retrieved", "data": [
            {"id": 3090024, "domain": "live", "status": "success", "currency": "USD", "total_amount": 14000,
             "effective_amount": 14000, "total_fees": 0, "total_processed": 14000, "deductions": null,
             "settlement_date": "2026-01-31T12:00:00.000Z"}]},
        {"status": true, "message": "Transactions retrieved", "data": [
            tx(D1, 10000, 320, "2026-01-05T10:00:00.000Z", "success"),
            tx(D2, 5500, 175, "2026-01-12T10:00:00.000Z", "success"),
            tx(D3, 2000, 90, "2026-01-20T10:00:00.000Z", "success"),
            tx(STRANGER, 900, 30, "2026-01-21T10:00:00.000Z", "success"),
            tx("abandoned-one", 700, 0, "2026-01-21T11:00:00.000Z", "abandoned")]}
    ]);
    let file = write(&db, "paystack.json", &statement.to_string());
    let report = reconcile_golden(&db, "paystack", "paystack", &file, "3090024").await;
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1, "{report}");
}

fn rows(tb: &Value) -> BTreeMap<String, i64> {
    tb["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cents = |k: &str| {
                r[k].as_str()
                    .unwrap()
                    .replace('.', "")
                    .parse::<i64>()
                    .unwrap()
            };
            (
                r["account"].as_str().unwrap().to_string(),
                cents("debit") - cents("credit"),
            )
        })
        .collect()
}

/// hledger's or bean-query's per-account totals, in the ledger's names (minor units).
fn tool_totals(text: &str, beancount: bool) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (account, amount) = match (beancount, words.as_slice()) {
            (true, [account, amount, "USD"]) => (account.to_string(), *amount),
            (false, [amount, "USD", account]) => (account.to_string(), *amount),
            _ => continue,
        };
        let name = account
            .split(':')
            .enumerate()
            .map(|(i, c)| {
                let bank = account.starts_with("Assets:Bank:") && i == 2;
                if uuid::Uuid::parse_str(c).is_ok() || bank {
                    c.to_ascii_lowercase()
                } else {
                    c.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(":");
        let minor: i64 = amount.replace('.', "").parse().unwrap();
        if minor != 0 {
            totals.insert(name, minor);
        }
    }
    totals
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is missing (apt-get install hledger beancount): {e}")
        });
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn exports_agree_with_the_trial_balance(db: &TestDb) {
    let tb = rows(&json(&cli(db, &["trial-balance", "--format", "json"])));
    assert!(tb.contains_key("Assets:Bank:main"), "{tb:?}");
    let dir = std::env::temp_dir();
    let journal = dir.join(format!("{}.journal", db.name()));
    stdout(&cli(
        db,
        &[
            "export",
            "--to",
            "hledger",
            "--output",
            journal.to_str().unwrap(),
        ],
    ));
    let hledger = tool(
        "hledger",
        &[
            "-f",
            journal.to_str().unwrap(),
            "balance",
            "--flat",
            "--no-total",
        ],
    );
    assert_eq!(tool_totals(&hledger, false), tb, "hledger:\n{hledger}");
    let beancount = dir.join(format!("{}.beancount", db.name()));
    stdout(&cli(
        db,
        &[
            "export",
            "--to",
            "beancount",
            "--output",
            beancount.to_str().unwrap(),
        ],
    ));
    tool("bean-check", &[beancount.to_str().unwrap()]);
    let query = tool(
        "bean-query",
        &[
            beancount.to_str().unwrap(),
            "SELECT account, sum(position) GROUP BY account ORDER BY account",
        ],
    );
    assert_eq!(tool_totals(&query, true), tb, "bean-query:\n{query}");
}

#[tokio::test]
async fn a_late_callback_into_closed_january_changes_no_closed_report() {
    let db = history_db("stripe", "po_1").await;
    let closed_reports = |db: &TestDb| {
        let tb = json(&cli(
            db,
            &["trial-balance", "--period", "2026-01", "--format", "json"],
        ));
        let is = json(&cli(
            db,
            &[
                "income-statement",
                "--period",
                "2026-01",
                "--format",
                "json",
            ],
        ));
        (
            tb["rows"].clone(),
            tb["totals"].clone(),
            is["currencies"].clone(),
        )
    };
    // A month that has not ended cannot be closed; January can.
    let out = cli(
        &db,
        &[
            "period",
            "close",
            "--through",
            "2199-12",
            "--operator",
            ADMIN,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &db,
        &[
            "period",
            "close",
            "--through",
            "2026-13",
            "--operator",
            ADMIN,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    stdout(&cli(
        &db,
        &[
            "period",
            "close",
            "--through",
            "2026-01",
            "--operator",
            ADMIN,
        ],
    ));
    let before = closed_reports(&db);
    assert_eq!(
        before.1,
        serde_json::json!([{"currency": "USD", "debit": "200.00", "credit": "200.00"}])
    );
    let total_before = rows(&json(&cli(&db, &["trial-balance", "--format", "json"])));

    apply(
        &db,
        &deposit_lines("stripe", D4, "10.00", "0.40", "2026-01-25T10:00:00Z"),
    );
    assert_eq!(closed_reports(&db), before, "a closed report changed");
    let total_after = rows(&json(&cli(&db, &["trial-balance", "--format", "json"])));
    assert_ne!(total_after, total_before, "the late deposit posted nothing");
    assert_eq!(
        total_after[&format!("Liabilities:Users:{BUYER}:Available")],
        -21_000
    );
    // February's income statement holds the late fee.
    let feb = json(&cli(
        &db,
        &[
            "income-statement",
            "--period",
            "2026-02",
            "--format",
            "json",
        ],
    ));
    assert_eq!(feb["currencies"][0]["net_income"], "-0.40", "{feb}");

    // The entry keeps when the money moved: in the journal and the exports (CSV: effective_at stays 5th).
    let journal = json(&cli(
        &db,
        &["journal", "--format", "json", "--period", "2026-02"],
    ));
    let entries = journal["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{journal}");
    assert_eq!(entries[0]["effective_at"], "2026-02-01T00:00:00Z");
    assert_eq!(entries[0]["original_effective_at"], "2026-01-25T10:00:00Z");
    let csv = stdout(&cli(&db, &["export", "--to", "csv"]));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        (header[4], *header.last().unwrap()),
        ("effective_at", "original_effective_at")
    );
    let late: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c.last() == Some(&"2026-01-25T10:00:00+00:00"))
        .collect();
    assert_eq!(late.len(), 3, "{csv}");
    assert!(
        late.iter().all(|c| c[4] == "2026-02-01T00:00:00+00:00"),
        "{late:?}"
    );

    exports_agree_with_the_trial_balance(&db);
    // The projections fold settlements, periods and reconciliation runs, and `verify` compares them.
    let statement = write(
        &db,
        "d1.csv",
        &format!(
            "payment_reference,kind,gross,fee,currency,occurred_at\n{D1},deposit,100.00,3.20,USD,2026-01-05T10:00:00Z\n"
        ),
    );
    let out = cli(
        &db,
        &[
            "reconcile",
            "--gateway",
            "stripe",
            "--statement",
            statement.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&cli(&db, &["projections", "run", "--until-caught-up"]));
    let out = cli(&db, &["verify"]);
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What is closed, and the re-opening, are in the log.
    let list = json(&cli(&db, &["period", "list", "--format", "json"]));
    assert_eq!(
        (
            list["closed_through"].clone(),
            list["first_open_month"].clone()
        ),
        ("2026-01".into(), "2026-02".into())
    );
    let out = cli(
        &db,
        &[
            "period",
            "reopen",
            "--from",
            "2026-01",
            "--operator",
            ADMIN,
            "--reason",
            "",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    stdout(&cli(
        &db,
        &[
            "period",
            "reopen",
            "--from",
            "2026-01",
            "--operator",
            ADMIN,
            "--reason",
            "auditor's adjustment",
        ],
    ));
    let list = json(&cli(&db, &["period", "list", "--format", "json"]));
    assert_eq!(list["closed_through"], "2025-12");
    let history = list["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["action"], "re-opened_from");
    assert_eq!(history[1]["operator"], ADMIN);
    assert_eq!(history[1]["reason"], "auditor's adjustment");
}

#[tokio::test]
async fn a_users_statement_per_month() {
    let db = history_db("stripe", "po_1").await;
    stdout(&cli(
        &db,
        &[
            "period",
            "close",
            "--through",
            "2026-01",
            "--operator",
            ADMIN,
        ],
    ));
    apply(
        &db,
        &deposit_lines("stripe", D4, "10.00", "0.40", "2026-01-25T10:00:00Z"),
    );
    let jan = json(&cli(
        &db,
        &[
            "statement",
            "--user",
            BUYER,
            "--period",
            "2026-01",
            "--format",
            "json",
        ],
    ));
    let usd = &jan["currencies"][0];
    assert_eq!(
        (
            usd["currency"].as_str(),
            usd["opening_balance"].as_str(),
            usd["closing_balance"].as_str()
        ),
        (Some("USD"), Some("0.00"), Some("200.00")),
        "{jan}"
    );
    let amounts: Vec<&str> = usd["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["100.00", "50.00", "20.00", "30.00"]);
    let first = &usd["movements"][0];
    assert_eq!(
        first["counterpart"],
        "Assets:Gateway:Stripe:Clearing Expenses:GatewayFees"
    );
    assert_eq!(first["reference"], format!("payment-{D1}"));
    assert_eq!(first["balance"], "100.00");
    let feb = json(&cli(
        &db,
        &[
            "statement",
            "--user",
            BUYER,
            "--period",
            "2026-02",
            "--format",
            "json",
        ],
    ));
    let usd = &feb["currencies"][0];
    assert_eq!(
        (
            usd["opening_balance"].as_str(),
            usd["closing_balance"].as_str()
        ),
        (Some("200.00"), Some("210.00"))
    );
    assert_eq!(
        usd["movements"][0]["original_effective_at"],
        "2026-01-25T10:00:00Z"
    );
    // The register of the same account for February: its posting, the balance carried from January.
    let account = format!("Liabilities:Users:{BUYER}:Available");
    let register = json(&cli(
        &db,
        &[
            "register", &account, "--period", "2026-02", "--format", "json",
        ],
    ));
    let postings: Vec<(&str, &str)> = register["postings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["amount"].as_str().unwrap(),
                p["balance"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(postings, [("10.00", "210.00")]);
    let range = json(&cli(
        &db,
        &[
            "statement",
            "--user",
            BUYER,
            "--period",
            "2026-01..2026-02",
            "--format",
            "json",
        ],
    ));
    assert_eq!(
        range["currencies"][0]["movements"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let csv = stdout(&cli(
        &db,
        &[
            "statement",
            "--user",
            BUYER,
            "--period",
            "2026-02",
            "--format",
            "csv",
        ],
    ));
    assert!(
        csv.lines()
            .any(|l| l.starts_with("USD,opening,") && l.contains(",200.00,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("USD,closing,") && l.contains(",210.00,")),
        "{csv}"
    );
    let table = stdout(&cli(
        &db,
        &["statement", "--user", BUYER, "--period", "2026-03"],
    ));
    assert!(
        table.contains("opening balance") || table.contains("no movement"),
        "{table}"
    );
    let out = cli(&db, &["statement", "--user", BUYER, "--period", "January"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_settlement_never_takes_the_clearing_below_zero() {
    // Stripe's clearing holds 53.27 after the history's settlement.
    let db = history_db("stripe", "po_1").await;
    let settle = |id: &str, amount: &str| {
        format!(
            r#"{{"actor": {{"kind": "admin", "id": "{ADMIN}"}}, "command": {{"type": "record_settlement", "gateway": "stripe", "settlement_id": "{id}", "bank_account": "main", "amount": {}, "fee": null, "occurred_at": "2026-02-28T12:00:00Z"}}}}"#,
            usd(amount)
        )
    };
    let file = write(&db, "too-much.jsonl", &settle("po_2", "53.28"));
    let out = cli(&db, &["apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("\"code\":\"insufficient_funds\""), "{line}");
    apply(&db, &[settle("po_2", "53.27")]);
    let tb = rows(&json(&cli(&db, &["trial-balance", "--format", "json"])));
    assert_eq!(tb.get("Assets:Gateway:Stripe:Clearing"), None, "{tb:?}");
    assert_eq!(tb["Assets:Bank:main"], 19_327);
}

/// A stolen writer credential appending an entry effective inside closed January (a balanced settlement,
/// which no other invariant objects to) is named by `verify`.
#[tokio::test]
async fn verify_names_an_entry_forged_into_a_closed_period() {
    let db = history_db("stripe", "po_1").await;
    stdout(&cli(
        &db,
        &[
            "period",
            "close",
            "--through",
            "2026-01",
            "--operator",
            ADMIN,
        ],
    ));
    let out = cli(&db, &["verify"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let usd = |a: &str| serde_json::json!({"amount": a, "currency": "USD"});
    let event_id = uuid::Uuid::new_v4();
    let payload = serde_json::json!({
        "type": "SettlementRecorded", "gateway": "stripe", "settlement_id": "po_forged", "bank_account": "main",
        "amount": usd("1.00"), "fee": usd("0.00"),
        "entry": {"id": uuid::Uuid::new_v4(), "currency": "USD", "effective_at": "2026-01-15T00:00:00Z",
                  "recorded_at": "2026-02-02T00:00:00Z", "postings": [
            {"account": "Assets:Bank:main", "side": "debit", "amount": usd("1.00")},
            {"account": "Assets:Gateway:Stripe:Clearing", "side": "credit", "amount": usd("1.00")}]}
    });
    sqlx::query(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
         values ('default', $1, 1, $2, 'SettlementRecorded', 1, $3, '{}'::jsonb)",
    )
    .bind(format!("settlement-{}", uuid::Uuid::new_v4()))
    .bind(event_id)
    .bind(&payload)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("select ledger.sequence('default', 1000)")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = cli(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("inside a closed period") && report.contains(&event_id.to_string()),
        "{report}"
    );
}
