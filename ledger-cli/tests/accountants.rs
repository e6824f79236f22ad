//! The accountants' CLI against a real PostgreSQL: golden reports on a fixed scenario whose totals were
//! computed by hand (below, not produced by the code), interop with hledger and beancount, as-of equality
//! with a replay of the log prefix, `verify` on clean and tampered ledgers, bad input.
//!
//! The fixed scenario (USD), with its hand-computed effect:
//!   buyer B deposits 110.00 through Stripe, gateway fee 3.50  -> Clearing +106.50, GatewayFees +3.50, B +110.00
//!   project P (one milestone 100.00, commission 10%, buyer fee 2.5%) funded -> B -102.50, Escrow +100.00, Deferred +2.50
//!   submitted and approved; released                          -> Escrow -100, Deferred -2.50, S +90.00,
//!                                                                Commission +10.00, PlatformFees +2.50
//!   S withdraws 50.00 with a 1.00 payout fee                   -> S -51.00, PayoutsInTransit +51.00
//!   the payout completes, gateway fee 0.25                     -> InTransit -51.00, Clearing -50.25,
//!                                                                PayoutFees +1.00, GatewayFees +0.25
//! Trial balance: Clearing 56.25 Dr, GatewayFees 3.75 Dr | B 7.50 Cr, S 39.00 Cr, Commission 10.00 Cr,
//! PlatformFees 2.50 Cr, PayoutFees 1.00 Cr; totals 60.00 = 60.00.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use ledger_store::testdb::TestDb;
use serde_json::Value;

const BUYER: &str = "00000000-0000-4000-8000-00000000b0b0";
const SELLER: &str = "00000000-0000-4000-8000-000000005e11";
const PROJECT: &str = "00000000-0000-4000-8000-0000000000a1";
const DEPOSIT: &str = "00000000-0000-4000-8000-0000000000d1";
const PAYOUT: &str = "00000000-0000-4000-8000-0000000000e1";

fn cli(db: &TestDb, args: &[&str]) -> Output {
    cli_env(db, args, &[])
}

fn cli_env(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_escrow-ledger"));
    command.arg("--database-url").arg(db.url()).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
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

fn scenario_lines() -> String {
    let user = |id: &str| format!(r#"{{"kind": "user", "id": "{id}"}}"#);
    let stripe = r#"{"kind": "gateway", "id": "stripe"}"#.to_string();
    let usd = |a: &str| format!(r#"{{"amount": "{a}", "currency": "USD"}}"#);
    let lines = [
        (
            user(BUYER),
            format!(
                r#"{{"type": "initiate_deposit", "payment_id": "{DEPOSIT}", "amount": {}, "gateway": "stripe", "fund": null}}"#,
                usd("110.00")
            ),
        ),
        (
            stripe.clone(),
            format!(
                r#"{{"type": "confirm_deposit", "payment_id": "{DEPOSIT}", "amount": {}, "gateway_fee": {}, "occurred_at": "2026-01-05T09:59:00Z"}}"#,
                usd("110.00"),
                usd("3.50")
            ),
        ),
        (
            user(BUYER),
            format!(
                r#"{{"type": "create_project", "project_id": "{PROJECT}", "buyer": "{BUYER}", "seller": "{SELLER}", "currency": "USD", "milestones": [{}], "fees": {{"commission_rate": "0.10", "buyer_fee_rate": "0.025"}}}}"#,
                usd("100.00")
            ),
        ),
        (
            user(BUYER),
            format!(r#"{{"type": "submit_project_for_agreement", "project_id": "{PROJECT}"}}"#),
        ),
        (
            user(SELLER),
            format!(r#"{{"type": "agree_to_project", "project_id": "{PROJECT}"}}"#),
        ),
        (
            user(BUYER),
            format!(r#"{{"type": "fund_milestone", "project_id": "{PROJECT}", "milestone": 1}}"#),
        ),
        (
            user(SELLER),
            format!(r#"{{"type": "submit_milestone", "project_id": "{PROJECT}", "milestone": 1}}"#),
        ),
        (
            user(BUYER),
            format!(
                r#"{{"type": "approve_milestone", "project_id": "{PROJECT}", "milestone": 1}}"#
            ),
        ),
        (
            user(SELLER),
            format!(
                r#"{{"type": "request_payout", "payout_id": "{PAYOUT}", "amount": {}, "fee": {}, "gateway": "stripe"}}"#,
                usd("50.00"),
                usd("1.00")
            ),
        ),
        (
            stripe,
            format!(
                r#"{{"type": "confirm_transfer", "payment_id": "{PAYOUT}", "gateway_fee": {}, "occurred_at": null}}"#,
                usd("0.25")
            ),
        ),
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, (actor, command))| {
            format!(
                r#"{{"actor": {actor}, "at": "2026-01-05T10:{i:02}:00Z", "command": {command}}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn scenario_db() -> TestDb {
    let db = TestDb::new().await;
    let file = std::env::temp_dir().join(format!("scenario-{}.jsonl", db.name()));
    std::fs::write(&file, scenario_lines()).unwrap();
    let out = stdout(&cli(&db, &["apply", file.to_str().unwrap()]));
    assert_eq!(out.lines().count(), 10);
    assert!(
        out.lines().all(|l| l.contains("\"status\":\"accepted\"")),
        "{out}"
    );
    db
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("JSON output")
}

fn account(kind: &str, id: &str, tail: &str) -> String {
    format!("Liabilities:{kind}:{id}{tail}")
}

#[tokio::test]
async fn golden_trial_balance_balance_sheet_and_income_statement() {
    let db = scenario_db().await;
    let tb = json(&cli(&db, &["trial-balance", "--format", "json"]));
    let rows: BTreeMap<String, (String, String)> = tb["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["account"].as_str().unwrap().to_string(),
                (
                    r["debit"].as_str().unwrap().to_string(),
                    r["credit"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, String)> = [
        (
            "Assets:Gateway:Stripe:Clearing".to_string(),
            ("56.25", "0.00"),
        ),
        ("Expenses:GatewayFees".to_string(), ("3.75", "0.00")),
        ("Income:Commission".to_string(), ("0.00", "10.00")),
        ("Income:PayoutFees".to_string(), ("0.00", "1.00")),
        ("Income:PlatformFees".to_string(), ("0.00", "2.50")),
        (account("Users", BUYER, ":Available"), ("0.00", "7.50")),
        (account("Users", SELLER, ":Available"), ("0.00", "39.00")),
    ]
    .into_iter()
    .map(|(a, (d, c))| (a, (d.to_string(), c.to_string())))
    .collect();
    assert_eq!(rows, expected);
    assert_eq!(
        tb["totals"],
        serde_json::json!([{"currency": "USD", "debit": "60.00", "credit": "60.00"}])
    );
    assert_eq!(tb["ledger"], "default");
    assert!(tb["position"].as_i64().unwrap() > 10);

    let sheet = stdout(&cli(&db, &["balance-sheet", "--format", "csv"]));
    for line in [
        "USD,Assets,total,56.25",
        "USD,Liabilities,total,46.50",
        "USD,Equity,Equity:RetainedEarnings,9.75",
        "USD,liabilities_and_equity,,56.25",
    ] {
        assert!(
            sheet.lines().any(|l| l == line),
            "missing {line:?} in\n{sheet}"
        );
    }
    let income = stdout(&cli(&db, &["income-statement", "--format", "csv"]));
    for line in [
        "USD,Revenue,total,13.50",
        "USD,Expenses,total,3.75",
        "USD,net_income,,9.75",
    ] {
        assert!(
            income.lines().any(|l| l == line),
            "missing {line:?} in\n{income}"
        );
    }
    let table = stdout(&cli(&db, &["trial-balance"]));
    assert!(
        table.contains("total") && table.contains("60.00"),
        "{table}"
    );
}

#[tokio::test]
async fn golden_journal_register_and_csv_export() {
    let db = scenario_db().await;
    let journal = json(&cli(&db, &["journal", "--format", "json"]));
    let entries = journal["entries"].as_array().unwrap();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "DepositSucceeded",
            "MilestoneFunded",
            "MilestoneReleased",
            "PayoutRequested",
            "PayoutCompleted"
        ]
    );
    // The deposit's effective time is the gateway's, its recorded time the command's; its reference names
    // the gateway and our payment.
    assert_eq!(entries[0]["effective_at"], "2026-01-05T09:59:00Z");
    assert_eq!(entries[0]["recorded_at"], "2026-01-05T10:01:00Z");
    assert_eq!(entries[0]["reference"], format!("stripe:{DEPOSIT}"));
    assert!(
        entries
            .iter()
            .all(|e| e["event_id"].as_str().is_some_and(|id| id.len() == 36))
    );
    let escrow_only = json(&cli(
        &db,
        &[
            "journal",
            "--format",
            "json",
            "--account",
            "Liabilities:Escrow",
        ],
    ));
    assert_eq!(escrow_only["entries"].as_array().unwrap().len(), 2);

    let seller = account("Users", SELLER, ":Available");
    let register = json(&cli(&db, &["register", &seller, "--format", "json"]));
    let lines: Vec<(String, String)> = register["postings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["amount"].as_str().unwrap().to_string(),
                p["balance"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("90.00".to_string(), "90.00".to_string()),
            ("-51.00".to_string(), "39.00".to_string())
        ]
    );

    let csv = stdout(&cli(&db, &["export", "--to", "csv"]));
    let mut rows = csv.lines();
    assert_eq!(
        rows.next().unwrap(),
        "position,entry_id,event_id,event_type,effective_at,recorded_at,account,currency,debit,credit,original_effective_at"
    );
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 3 + 3 + 5 + 2 + 4, "one row per posting");
    let (mut debits, mut credits) = (0_i64, 0_i64);
    for row in &rows {
        let cells: Vec<&str> = row.split(',').collect();
        let cents = |s: &str| {
            if s.is_empty() {
                0
            } else {
                s.replace('.', "").parse::<i64>().unwrap()
            }
        };
        debits += cents(cells[8]);
        credits += cents(cells[9]);
    }
    // 106.50+3.50+102.50+100+2.50+51+51+0.25 debits = credits.
    assert_eq!(debits, 41_725);
    assert_eq!(credits, 41_725);
    assert!(
        rows.iter()
            .any(|r| r.ends_with("Assets:Gateway:Stripe:Clearing,USD,,50.25,")),
        "{csv}"
    );
}

/// Per-account totals that hledger or beancount print, in the ledger's names (minor units).
fn parse_tool_totals(text: &str, beancount: bool) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (account, amount) = if beancount {
            // bean-query rows: `Account   12.34 USD`
            match words.as_slice() {
                [account, amount, "USD"] => (account.to_string(), *amount),
                _ => continue,
            }
        } else {
            // hledger flat balance rows: `12.34 USD  Account`
            match words.as_slice() {
                [amount, "USD", account] => (account.to_string(), *amount),
                _ => continue,
            }
        };
        // Back to the ledger's names: UUID components are upper-cased in beancount (documented rule).
        let name = account
            .split(':')
            .map(|c| {
                if uuid::Uuid::parse_str(c).is_ok() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(":");
        let minor: i64 = amount
            .replace('.', "")
            .parse()
            .unwrap_or_else(|_| panic!("amount {amount} in {line:?}"));
        if minor != 0 {
            totals.insert(name, minor);
        }
    }
    totals
}

fn trial_balance_totals(tb: &Value) -> BTreeMap<String, i64> {
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

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is missing (apt install hledger beancount): {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn hledger_and_beancount_agree_with_the_trial_balance() {
    let db = scenario_db().await;
    let tb = trial_balance_totals(&json(&cli(&db, &["trial-balance", "--format", "json"])));
    assert_eq!(tb.len(), 7);
    let dir = std::env::temp_dir();
    let journal = dir.join(format!("{}.journal", db.name()));
    stdout(&cli(
        &db,
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
    assert_eq!(
        parse_tool_totals(&hledger, false),
        tb,
        "hledger:\n{hledger}"
    );

    let beancount = dir.join(format!("{}.beancount", db.name()));
    stdout(&cli(
        &db,
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
    assert_eq!(parse_tool_totals(&query, true), tb, "bean-query:\n{query}");
    assert!(Path::new(&beancount).exists());
}

#[tokio::test]
async fn trial_balance_as_of_past_positions_equals_a_replay_of_the_prefix() {
    let db = scenario_db().await;
    let head = json(&cli(&db, &["trial-balance", "--format", "json"]))["position"]
        .as_i64()
        .unwrap();
    // The ledger takes a balance snapshot every 3 positions (computed by the database from the log), so
    // the as-of path goes through snapshot + tail.
    for position in (3..=head).step_by(3) {
        sqlx::query("select ledger.take_balance_snapshot('default', $1)")
            .bind(position)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let snapshots: i64 = sqlx::query_scalar("select count(*) from ledger.balance_snapshots")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        snapshots >= head / 3,
        "snapshots were written ({snapshots})"
    );
    let store = db.store();
    use ledger_store::EventStore;
    let log = store.read_log("default", 0, 10_000).await.unwrap();
    for position in [1, 4, 7, head / 2, head - 1, head] {
        let mut balances = ledger_core::Balances::default();
        for e in log.iter().filter(|e| e.position.unwrap() <= position) {
            let stream: ledger_core::StreamId = e.stream_id.parse().unwrap();
            let event = ledger_core::Event::from_stored(
                &stream,
                &e.event_type,
                e.schema_version,
                e.payload.clone(),
            )
            .unwrap();
            if let Some(entry) = event.entry() {
                balances.apply(entry);
            }
        }
        let expected: BTreeMap<String, i64> = balances
            .iter()
            .filter(|(_, (d, c))| d != c)
            .map(|((a, _), (d, c))| (a.to_string(), (d - c) as i64))
            .collect();
        let got = trial_balance_totals(&json(&cli(
            &db,
            &[
                "trial-balance",
                "--format",
                "json",
                "--position",
                &position.to_string(),
            ],
        )));
        assert_eq!(got, expected, "at position {position}");
    }
    // As of a time: before the first event nothing; far in the future, everything.
    let before = json(&cli(
        &db,
        &[
            "trial-balance",
            "--format",
            "json",
            "--as-of",
            "2000-01-01T00:00:00Z",
        ],
    ));
    assert_eq!(before["position"], 0);
    let after = json(&cli(
        &db,
        &[
            "trial-balance",
            "--format",
            "json",
            "--as-of",
            "2999-01-01T00:00:00Z",
        ],
    ));
    assert_eq!(after["position"], head);
}

fn findings(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "verify should fail: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn verify_is_silent_on_a_clean_ledger_and_names_an_edited_event() {
    let db = scenario_db().await;
    let clean = cli(&db, &["verify"]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    assert!(
        clean.stdout.is_empty(),
        "verify must be silent: {}",
        String::from_utf8_lossy(&clean.stdout)
    );
    // (a) an event row altered with the triggers disabled
    db.tamper(
        "update ledger.events set payload = jsonb_set(payload, '{amount,amount}', '\"999.00\"')
          where event_type = 'PayoutRequested';",
    )
    .await
    .unwrap();
    let event_id: uuid::Uuid = sqlx::query_scalar(
        "select event_id from ledger.events where event_type = 'PayoutRequested'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let report = findings(&cli(&db, &["verify"]));
    assert!(
        report.contains("hash chain broken") && report.contains(&event_id.to_string()),
        "{report}"
    );
}

#[tokio::test]
async fn verify_catches_a_rewritten_and_rehashed_history_against_an_earlier_seal() {
    let db = scenario_db().await;
    let seal = std::env::temp_dir().join(format!("{}.seal.json", db.name()));
    stdout(&cli(&db, &["seal", "--output", seal.to_str().unwrap()]));
    // A superuser edits an event covered by the seal and recomputes every hash after it (so the stored
    // chain is self-consistent again).
    db.tamper(
        "update ledger.events set metadata = jsonb_set(metadata, '{actor}', '\"someone-else\"')
          where event_type = 'MilestoneFunded'",
    )
    .await
    .unwrap();
    db.rehash_chain_from("default", 1).await.unwrap();
    assert!(
        cli(&db, &["verify"]).status.success(),
        "without the seal the re-hashed chain looks intact"
    );
    let report = findings(&cli(&db, &["verify", "--seal", seal.to_str().unwrap()]));
    assert!(report.contains("seal"), "{report}");
}

#[tokio::test]
async fn verify_names_an_altered_read_table_row_and_a_rewound_checkpoint() {
    let db = scenario_db().await;
    stdout(&cli(&db, &["projections", "run", "--until-caught-up"]));
    assert!(cli(&db, &["verify"]).status.success());
    // (c) a read-table row altered
    sqlx::query("update escrow.milestones set released = released + 1 where project_id = $1::uuid")
        .bind(PROJECT)
        .execute(&db.pool)
        .await
        .unwrap();
    let report = findings(&cli(&db, &["verify"]));
    assert!(report.contains("milestones"), "{report}");
    // Repair by rebuilding, then (d) rewind a checkpoint.
    stdout(&cli(&db, &["projections", "rebuild"]));
    assert!(cli(&db, &["verify"]).status.success());
    sqlx::query("update escrow.projection_checkpoints set position = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = findings(&cli(&db, &["verify"]));
    assert!(report.contains("projection"), "{report}");
}

#[tokio::test]
async fn bad_input_gives_one_line_errors_and_documented_exit_codes_and_applies_nothing() {
    let db = scenario_db().await;
    let head = |db: &TestDb| {
        json(&cli(db, &["trial-balance", "--format", "json"]))["position"]
            .as_i64()
            .unwrap()
    };
    let before = head(&db);
    let file = std::env::temp_dir().join(format!("bad-{}.jsonl", db.name()));
    let valid = format!(
        r#"{{"actor": {{"kind": "user", "id": "{BUYER}"}}, "command": {{"type": "cancel_service_request", "request_id": "{PROJECT}"}}}}"#
    );
    let bad = [
        "{not json".to_string(),
        format!(
            r#"{{"actor": {{"kind": "user", "id": "{BUYER}"}}, "command": {{"type": "launch_rockets"}}}}"#
        ),
        format!(
            r#"{{"actor": {{"kind": "user", "id": "{SELLER}"}}, "command": {{"type": "request_payout", "payout_id": "{DEPOSIT}", "amount": {{"amount": "10.005", "currency": "USD"}}, "fee": null, "gateway": "stripe"}}}}"#
        ),
    ];
    // Each bad line is reported by number; with --atomic nothing at all is applied.
    std::fs::write(&file, [bad.join("\n"), valid.clone()].join("\n")).unwrap();
    let atomic = cli(&db, &["apply", "--atomic", file.to_str().unwrap()]);
    assert_eq!(atomic.status.code(), Some(1));
    let out = String::from_utf8(atomic.stdout).unwrap();
    for (n, needle) in [(1, "invalid"), (2, "launch_rockets"), (3, "10.005")] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("\"line\":{n},")))
            .unwrap_or_else(|| panic!("line {n} not reported: {out}"));
        assert!(
            line.contains("\"status\":\"invalid\"") && line.contains(needle),
            "{line}"
        );
    }
    assert_eq!(head(&db), before, "--atomic applied something");
    // Without --atomic the valid line still runs (and is refused by the ledger: no such request, exit 1).
    let lenient = cli(&db, &["apply", file.to_str().unwrap()]);
    assert_eq!(lenient.status.code(), Some(1));
    let out = String::from_utf8(lenient.stdout).unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains("\"line\":4") && l.contains("not_found")),
        "{out}"
    );
    assert_eq!(head(&db), before);
    // Unknown account for `register`: one line, exit 2.
    let unknown = cli(&db, &["register", "Assets:Nowhere"]);
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8(unknown.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Assets:Nowhere"));
    // An unreachable database: one line, exit 2.
    let down = Command::new(env!("CARGO_BIN_EXE_escrow-ledger"))
        .args([
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "trial-balance",
        ])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(2));
    let stderr = String::from_utf8(down.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[tokio::test]
async fn verify_reports_a_deleted_event_without_crashing() {
    let db = scenario_db().await;
    // As a superuser could (no foreign key holds a position to its event since 20261208000101: only the
    // sequencer writes positions, for events it has just read).
    db.tamper("delete from ledger.events where event_type = 'ProjectCreated';")
        .await
        .unwrap();
    let output = cli(&db, &["verify"]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report = findings(&output);
    assert!(report.contains("missing"), "{report}");
    assert!(
        report.contains("does not fit its stream's state"),
        "{report}"
    );
}

/// Issue 19 (finding 1): no run-time or reporting role writes a balance snapshot whose content it chooses.
/// The auditor writes nothing (the old `save_balance_snapshot(ledger, 0, <700,000.00 more in Bank>)` is
/// gone and the new function is not its to call); a writer may only ask the ledger to take one, computed
/// from the log; a row planted behind the functions (at position 0, or at the head with made-up content and
/// a digest computed the old way) changes no report and is named by `verify`.
#[tokio::test]
async fn no_role_writes_a_balance_snapshot_of_its_choosing() {
    let db = scenario_db().await;
    let tb = |args: &[&str]| {
        let mut all = vec!["trial-balance", "--format", "json"];
        all.extend_from_slice(args);
        json(&cli(&db, &all))["rows"].clone()
    };
    let honest = tb(&[]);
    let head = json(&cli(&db, &["trial-balance", "--format", "json"]))["position"]
        .as_i64()
        .unwrap();
    let as_role = |role: &'static str, statement: String| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("set local role {role}")))
                .execute(&mut *tx)
                .await
                .unwrap();
            let result = sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map(|_| ());
            match result {
                Ok(()) => tx.commit().await.unwrap(),
                Err(_) => tx.rollback().await.unwrap(),
            }
            result
        }
    };
    let forged = r#"[["Assets:Bank:main","USD","70000000","0"],["Income:PlatformFees","USD","0","70000000"]]"#;
    for role in ["escrow_auditor", "escrow_writer", "escrow_projector"] {
        let old = as_role(
            role,
            format!("select ledger.save_balance_snapshot('default', 0, '{forged}')"),
        )
        .await;
        assert!(old.is_err(), "{role} saved a snapshot of its choosing");
        let insert = as_role(
            role,
            format!("insert into ledger.balance_snapshots (ledger_id, position, balances) values ('default', 0, '{forged}')"),
        )
        .await;
        assert!(insert.is_err(), "{role} inserted a snapshot row");
    }
    let auditor = as_role(
        "escrow_auditor",
        format!("select ledger.take_balance_snapshot('default', {head})"),
    )
    .await;
    assert!(auditor.is_err(), "the auditor wrote a snapshot");
    // A writer asks the ledger to take one: its content is the log's.
    as_role(
        "escrow_writer",
        format!("select ledger.take_balance_snapshot('default', {head})"),
    )
    .await
    .unwrap();
    assert_eq!(tb(&[]), honest);
    // Rows planted behind the functions (as the owner would): ignored by every report, named by verify.
    let digest = |position: i64, text: &str| {
        hex_encode(&ledger_store::chain::balance_snapshot_digest(
            "default",
            position,
            &[],
            text,
        ))
    };
    db.tamper(&format!(
        "insert into ledger.balance_snapshots (ledger_id, position, balances, digest)
         values ('default', 0, '{forged}', '\\x{}'::bytea)",
        digest(0, forged)
    ))
    .await
    .unwrap();
    db.tamper(&format!(
        "update ledger.balance_snapshots set balances = '{forged}' where ledger_id = 'default' and position = {head}"
    ))
    .await
    .unwrap();
    assert_eq!(
        tb(&[]),
        honest,
        "a planted snapshot changed the trial balance"
    );
    assert_eq!(tb(&["--position", &head.to_string()]), honest);
    let verify = cli(&db, &["verify"]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(text.contains("balance snapshot at position 0"), "{text}");
    assert!(
        text.contains(&format!("balance snapshot at position {head}")),
        "{text}"
    );
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ledger's own snapshot (computed in SQL from the journal) equals the replay in currencies of every
/// exponent: JPY (0), USD (2), KWD (3).
#[tokio::test]
async fn a_balance_snapshot_the_ledger_takes_equals_the_replay_in_every_exponent() {
    let db = TestDb::new().await;
    let user = "00000000-0000-4000-8000-0000000000b1";
    let mut lines = String::new();
    for (i, (amount, currency)) in [("1000", "JPY"), ("10.05", "USD"), ("1.234", "KWD")]
        .iter()
        .enumerate()
    {
        let id = format!("00000000-0000-4000-8000-00000000d0{i:02}");
        lines.push_str(&format!(
            r#"{{"actor": {{"kind": "user", "id": "{user}"}}, "command": {{"type": "initiate_deposit", "payment_id": "{id}", "amount": {{"amount": "{amount}", "currency": "{currency}"}}, "gateway": "stripe", "fund": null}}}}
{{"actor": {{"kind": "gateway", "id": "stripe"}}, "command": {{"type": "confirm_deposit", "payment_id": "{id}", "amount": {{"amount": "{amount}", "currency": "{currency}"}}, "gateway_fee": null, "occurred_at": null}}}}
"#
        ));
    }
    let file = std::env::temp_dir().join(format!("exponents-{}.jsonl", db.name()));
    std::fs::write(&file, lines).unwrap();
    stdout(&cli(&db, &["apply", file.to_str().unwrap()]));
    let replayed = json(&cli(
        &db,
        &[
            "trial-balance",
            "--format",
            "json",
            "--effective-as-of",
            "2199-01-01T00:00:00Z",
        ],
    ));
    let head = replayed["position"].as_i64().unwrap();
    sqlx::query("select ledger.take_balance_snapshot('default', $1)")
        .bind(head)
        .execute(&db.pool)
        .await
        .unwrap();
    let snapshot: Value = sqlx::query_scalar(
        "select balances from ledger.balance_snapshots where ledger_id = 'default' and position = $1",
    )
    .bind(head)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let rows = snapshot.as_array().unwrap();
    let cell = |account: &str, currency: &str| {
        rows.iter()
            .find(|r| r[0].as_str().unwrap().ends_with(account) && r[1] == currency)
            .map(|r| {
                (
                    r[2].as_str().unwrap().to_string(),
                    r[3].as_str().unwrap().to_string(),
                )
            })
    };
    let wallet = format!("{user}:Available");
    assert_eq!(cell(&wallet, "JPY"), Some(("0".into(), "1000".into())));
    assert_eq!(cell(&wallet, "USD"), Some(("0".into(), "1005".into())));
    assert_eq!(cell(&wallet, "KWD"), Some(("0".into(), "1234".into())));
    let from_snapshot = json(&cli(&db, &["trial-balance", "--format", "json"]));
    assert_eq!(from_snapshot["rows"], replayed["rows"]);
}
