//! What `verify` proves (issue 19): one test per finding that needs processes or a database, through the real
//! binary where a user would go through it. Findings 1 (balance snapshots) and 6 (recorded_at, equal keys)
//! are tested in `accountants.rs`, `sequencer.rs` and the store's tests.

mod support;
use support::*;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use ledger_store::testdb::TestDb;
use serde_json::json;
use uuid::Uuid;

/// Finding 4 (write skew at close): four `apply` processes confirm deposits effective on the last day of
/// the previous month while `period close --through <that month>` runs. The close and a posting into the
/// month it closes must never both commit: every journal entry positioned after the close is effective
/// after the closed month (a late posting moved to the first open day), never inside it.
#[tokio::test(flavor = "multi_thread")]
async fn finding_4_a_close_and_late_postings_from_four_processes_never_both_commit() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    let late = month_start - chrono::Duration::hours(2);
    let through = late.format("%Y-%m").to_string();
    let (processes, per_process) = (4, 60);
    let operator = Uuid::new_v4().to_string();
    let mut straddled = 0;
    for round in 0..4 {
        let ledger = format!("skew{round}");
        let out = cli(&db, "default", &["ledgers", "create", &ledger]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deposits: Vec<Uuid> = (0..processes * per_process)
            .map(|_| Uuid::new_v4())
            .collect();
        let initiate: Vec<_> = deposits
            .iter()
            .enumerate()
            .map(|(i, d)| {
                // One buyer per process: the processes race the close, not each other on one wallet.
                let buyer = Uuid::from_u128(1 + (i / per_process) as u128);
                line(
                    user(buyer),
                    json!({"type": "initiate_deposit", "payment_id": d,
                "amount": usd("1.00"), "gateway": "stripe", "fund": null}),
                    None,
                )
            })
            .collect();
        setup(&db, &ledger, &initiate);
        let mut children = Vec::new();
        for chunk in deposits.chunks(per_process) {
            let text: String = chunk
                .iter()
                .map(|d| {
                    let l = line(
                        gateway("stripe"),
                        json!({"type": "confirm_deposit", "payment_id": d,
                        "amount": usd("1.00"), "gateway_fee": null, "occurred_at": iso(late)}),
                        None,
                    );
                    format!("{l}\n")
                })
                .collect();
            let mut child = bin()
                .arg("--database-url")
                .arg(db.url())
                .args(["--ledger", &ledger, "apply", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("apply starts");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            children.push(child);
        }
        std::thread::sleep(Duration::from_millis(150 + 100 * round as u64));
        let out = cli(
            &db,
            &ledger,
            &[
                "period",
                "close",
                "--through",
                &through,
                "--operator",
                &operator,
            ],
        );
        assert!(
            out.status.success(),
            "period close: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for child in children {
            let out = child.wait_with_output().unwrap();
            let accepted = String::from_utf8_lossy(&out.stdout)
                .matches("\"accepted\"")
                .count();
            assert_eq!(
                accepted,
                per_process,
                "apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (inside_after_close, before, after): (i64, i64, i64) = sqlx::query_as(
            "with c as (select min(s.position) as p from ledger.events e
                          join ledger.sequence s using (ledger_id, local_id)
                         where e.ledger_id = $1 and e.event_type = 'PeriodsClosed'),
                  d as (select s.position, (e.payload->'entry'->>'effective_at')::timestamptz as eff
                          from ledger.events e join ledger.sequence s using (ledger_id, local_id)
                         where e.ledger_id = $1 and e.event_type = 'DepositSucceeded')
             select count(*) filter (where d.position > c.p and d.eff < $2),
                    count(*) filter (where d.position < c.p),
                    count(*) filter (where d.position > c.p)
               from d, c",
        )
        .bind(&ledger)
        .bind(month_start)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            inside_after_close, 0,
            "round {round}: {inside_after_close} deposits effective in {through} were positioned after its close"
        );
        if before > 0 && after > 0 {
            straddled += 1;
        }
        let out = cli(&db, &ledger, &["verify"]);
        assert!(
            out.status.success(),
            "verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        straddled > 0,
        "no round ran the close while confirmations were in flight: the race was not exercised"
    );
}
