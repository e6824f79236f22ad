//! What `verify` proves (issue 19): one test per finding that needs processes or a database, through the real
//! binary where a user would go through it. Findings 1 (balance snapshots) and 6 (recorded_at, equal keys)
//! are tested in `accountants.rs`, `sequencer.rs` and the store's tests.

mod support;
use support::*;

use std::io::Write as _;
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
            let confirmations: Vec<_> = chunk
                .iter()
                .map(|d| {
                    line(
                        gateway("stripe"),
                        json!({"type": "confirm_deposit", "payment_id": d,
                        "amount": usd("1.00"), "gateway_fee": null, "occurred_at": iso(late)}),
                        None,
                    )
                })
                .collect();
            let mut child = spawn_apply(&db, &ledger);
            child
                .stdin
                .take()
                .unwrap()
                .write_all(jsonl(&confirmations).as_bytes())
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

/// Runs `sql` as the run-time role `role` in one transaction (the role's own rights, as an insider with its
/// credentials has them). `Err` carries the SQLSTATE of the refusal.
async fn as_role(pool: &sqlx::PgPool, role: &str, sql: &str) -> Result<(), String> {
    let mut tx = pool.begin().await.unwrap();
    let statement = format!("set local role {role}; {sql}");
    let run = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut *tx)
        .await;
    let code = |e: sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| e.to_string())
    };
    run.map_err(code)?;
    tx.commit().await.map_err(code)
}

fn verify_out(db: &TestDb, ledger: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = cli(db, ledger, &all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Finding 2 (recorded outcomes outside the chain): `escrow_writer` inserts a "rejected" idempotency row under
/// the key a genuine command will use, and a copy of a genuine inbox row marked "rejected". Both are refused
/// at commit (no log entry records them); planted behind the trigger (as an owner could, or on Citus where
/// the trigger does not run), `verify` names each row; and the genuine command under that key is booked.
#[tokio::test]
async fn finding_2_an_outcome_row_without_its_log_entry_is_refused_and_named() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let (u, d) = (Uuid::new_v4(), Uuid::new_v4());
    let key = format!("callback:stripe:{d}:deposit_succeeded");
    let forged = json!({"status": "rejected", "command_id": Uuid::new_v4(),
                        "rejection": {"code": "invalid_transition", "message": "deposit is not pending"}});
    let insert_key = format!(
        "insert into ledger.idempotency (ledger_id, idempotency_key, request, outcome) values ('default', {}, '{{}}', {}::jsonb)",
        lit(&key),
        lit(&forged.to_string())
    );
    let refused = as_role(&pool, "escrow_writer", &insert_key).await;
    assert_eq!(
        refused,
        Err("EL003".to_string()),
        "the writer's forged idempotency row"
    );
    let planted = Uuid::new_v4();
    let insert_inbox = format!(
        "insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type, dedupe_key,
                                   disposition, detail, raw_body, received_at)
         values ('default', '{planted}', 'stripe', 'evt_1', 'charge.succeeded', 'stripe:evt_1', 'rejected',
                 'deposit is not pending', '\\x7b7d', now())"
    );
    let refused = as_role(&pool, "escrow_writer", &insert_inbox).await;
    assert_eq!(
        refused,
        Err("EL003".to_string()),
        "the writer's forged inbox row"
    );
    // The genuine command under that key is booked.
    let initiate = json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("10.00"),
                          "gateway": "stripe", "fund": null});
    let confirm = json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("10.00"),
                         "gateway_fee": null, "occurred_at": null});
    let mut confirm_line = line(gateway("stripe"), confirm, None);
    confirm_line["idempotency_key"] = json!(key);
    setup(
        &db,
        "default",
        &[line(user(u), initiate, None), confirm_line],
    );
    let wallet = bal(
        &balances(&db, "default"),
        &format!("Liabilities:Users:{u}:Available"),
    );
    assert_eq!(wallet, 1_000);
    assert_eq!(verify_out(&db, "default", &[]).0, 0);
    // Planted behind the trigger: verify names both rows.
    let mut tamper = db.tampering().await.unwrap();
    let other_key = format!("callback:stripe:{}:deposit_succeeded", Uuid::new_v4());
    for sql in [insert_key.replace(&key, &other_key), insert_inbox.clone()] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(tamper.conn())
            .await
            .unwrap();
    }
    tamper.finish().await.unwrap();
    let (code, out) = verify_out(&db, "default", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&other_key), "{out}");
    assert!(out.contains(&planted.to_string()), "{out}");
}

/// Copies genuine events of `ledger` into new rows as `escrow_writer` would write them (every uuid in the
/// stream, payload and metadata replaced by `ids`), with fresh event ids; returns the new event ids.
async fn forge_copies(
    pool: &sqlx::PgPool,
    ledger: &str,
    events: &[Uuid],
    ids: &[(String, String)],
) -> Result<Vec<Uuid>, String> {
    let mut statements = Vec::new();
    let mut forged = Vec::new();
    for event in events {
        let (stream, version, event_type, payload, metadata): (
            String,
            i64,
            String,
            String,
            String,
        ) = sqlx::query_as(
            "select stream_id, stream_version, event_type, payload::text, metadata::text
                   from ledger.events where ledger_id = $1 and event_id = $2",
        )
        .bind(ledger)
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap();
        let swap = |text: &str| {
            ids.iter()
                .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
        };
        let id = Uuid::new_v4();
        forged.push(id);
        statements.push(format!(
            "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
             values ({}, {}, {version}, '{id}', {}, 1, {}::jsonb, {}::jsonb);",
            lit(ledger),
            lit(&swap(&stream)),
            lit(&event_type),
            lit(&swap(&payload)),
            lit(&swap(&metadata))
        ));
    }
    as_role(pool, "escrow_writer", &statements.join("\n")).await?;
    as_role(
        pool,
        "escrow_writer",
        &format!("select ledger.sequence({}, 5000)", lit(ledger)),
    )
    .await?;
    Ok(forged)
}

/// Finding 3 (self-consistent forgeries): `escrow_writer` copies a genuine deposit (DepositInitiated,
/// DepositSucceeded with its balanced entry, the wallet's Credited) under new ids, and a genuine command's
/// recorded rejection is turned into a forged one for a command the rules accept. Plain `verify` cannot tell
/// (every entry balances, every state fits); `verify --deep` decides every recorded command again and names
/// each forged event.
#[tokio::test]
async fn finding_3_verify_deep_names_a_self_consistent_forged_deposit() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let (u, d) = (Uuid::new_v4(), Uuid::new_v4());
    let initiate = json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("50.00"),
                          "gateway": "stripe", "fund": null});
    let confirm = json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("50.00"),
                         "gateway_fee": null, "occurred_at": null});
    // A keyed refusal (a payout beyond the wallet): recorded in the log as CommandOutcomeRecorded.
    let payout = json!({"type": "request_payout", "payout_id": Uuid::new_v4(), "amount": usd("80.00"),
                        "fee": null, "gateway": "stripe"});
    let results = apply(
        &db,
        "default",
        &[
            line(user(u), initiate, None),
            line(gateway("stripe"), confirm, None),
            line(user(u), payout, None),
        ],
    );
    assert!(
        accepted(&results[0]) && accepted(&results[1]),
        "{results:?}"
    );
    assert_eq!(results[2]["status"], "rejected", "{results:?}");
    for args in [&[][..], &["--deep"][..]] {
        let (code, out) = verify_out(&db, "default", args);
        assert_eq!(code, 0, "verify {args:?} on an untouched ledger: {out}");
    }
    let genuine: Vec<(Uuid,)> = sqlx::query_as(
        "select event_id from ledger.events
          where ledger_id = 'default' and stream_id in ($1, $2) order by stream_id, stream_version",
    )
    .bind(format!("payment-{d}"))
    .bind(format!("wallet-{u}-USD"))
    .fetch_all(&pool)
    .await
    .unwrap();
    let genuine: Vec<Uuid> = genuine.into_iter().map(|(e,)| e).collect();
    assert_eq!(
        genuine.len(),
        3,
        "DepositInitiated, DepositSucceeded, Credited"
    );
    let (u2, d2, c2, c3) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let commands: Vec<(String,)> = sqlx::query_as(
        "select distinct metadata->>'correlation_id' from ledger.events where event_id = any($1)",
    )
    .bind(&genuine)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut ids = vec![
        (u.to_string(), u2.to_string()),
        (d.to_string(), d2.to_string()),
    ];
    for ((c,), to) in commands.iter().zip([c2, c3]) {
        ids.push((c.clone(), to.to_string()));
    }
    let forged = forge_copies(&pool, "default", &genuine, &ids)
        .await
        .expect("the writer may still insert events: verify --deep is what names them");
    let wallet = bal(
        &balances(&db, "default"),
        &format!("Liabilities:Users:{u2}:Available"),
    );
    assert_eq!(wallet, 5_000, "the forgery is in the books");
    let (code, out) = verify_out(&db, "default", &["--deep"]);
    assert_eq!(code, 1, "{out}");
    for id in &forged {
        assert!(
            out.contains(&id.to_string()),
            "forged event {id} not named: {out}"
        );
    }
}

/// Finding 3, the outcome side: a forged `CommandOutcomeRecorded` (a rejection of a command the rules
/// accept) with its idempotency row passes the commit-time check (it is backed) but not `verify --deep`.
#[tokio::test]
async fn finding_3_verify_deep_names_a_forged_rejection() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let (u, d) = (Uuid::new_v4(), Uuid::new_v4());
    let initiate = json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("10.00"),
                          "gateway": "stripe", "fund": null});
    setup(&db, "default", &[line(user(u), initiate, None)]);
    let command_id = Uuid::new_v4();
    let key = format!("callback:stripe:{d}:deposit_succeeded");
    let envelope = json!({"command_id": command_id, "actor": {"kind": "gateway", "id": "stripe"},
        "at": "2026-12-05T10:00:00Z", "command": {"type": "confirm_deposit", "payment_id": d,
        "amount": usd("10.00"), "gateway_fee": null, "occurred_at": null}});
    let rejection = json!({"code": "invalid_transition", "message": "deposit is not pending"});
    let payload = json!({"type": "CommandOutcomeRecorded", "command": envelope,
                         "idempotency_key": key, "rejection": rejection});
    let outcome = json!({"status": "rejected", "command_id": command_id, "rejection": rejection});
    let event_id = Uuid::new_v4();
    let sql = format!(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
         values ('default', 'outcome-{command_id}', 1, '{event_id}', 'CommandOutcomeRecorded', 1, {}::jsonb, '{{}}');
         insert into ledger.idempotency (ledger_id, idempotency_key, request, outcome)
         values ('default', {}, '{{}}', {}::jsonb);
         select ledger.sequence('default', 5000);",
        lit(&payload.to_string()),
        lit(&key),
        lit(&outcome.to_string())
    );
    as_role(&pool, "escrow_writer", &sql)
        .await
        .expect("a forged outcome with its forged log entry is backed");
    let (code, out) = verify_out(&db, "default", &["--deep"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&event_id.to_string()) && out.contains("forged outcome"),
        "{out}"
    );
}

/// One fact of a ledger, read as the owner (setup only).
async fn fact(pool: &sqlx::PgPool, sql: &str) -> String {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A demo ledger (history, read tables caught up) that `verify` and `verify --deep` find clean.
async fn demo_ledger() -> (TestDb, sqlx::PgPool) {
    let db = TestDb::new().await;
    let out = cli(&db, "default", &["demo"]);
    assert!(
        out.status.success(),
        "demo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [&[][..], &["--deep"][..]] {
        let (code, out) = verify_out(&db, "default", args);
        assert_eq!(code, 0, "verify {args:?} on the demo: {out}");
    }
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    (db, pool)
}

/// The tamper suite (issue 19): as each run-time role, with its own rights, every write it may try is
/// refused by the database, or, where the role must keep that right, named by `verify` or `verify --deep`.
/// What stays possible is listed in ARCHITECTURE.md's trust model.
#[tokio::test]
async fn tamper_suite_every_write_of_every_run_time_role_is_refused_or_named() {
    let (db, pool) = demo_ledger().await;
    let project = fact(
        &pool,
        "select project_id::text from escrow.milestones limit 1",
    )
    .await;
    let unbacked_key = "insert into ledger.idempotency (ledger_id, idempotency_key, request, outcome)
        values ('default', 'callback:stripe:future', '{}', '{\"status\": \"rejected\", \"command_id\": \"00000000-0000-4000-8000-000000000001\", \"rejection\": {\"code\": \"invalid_transition\", \"message\": \"x\"}}')";
    let unbacked_inbox = "insert into ledger.inbox (ledger_id, delivery_id, gateway, gateway_event_id, event_type,
        dedupe_key, disposition, detail, raw_body, received_at)
        values ('default', gen_random_uuid(), 'stripe', 'evt', 'charge.succeeded', 'k', 'rejected', '', '\\x7b7d', now())";
    let refused: Vec<(&str, String)> = vec![
        ("escrow_writer", "update ledger.events set payload = payload where ledger_id = 'default'".into()),
        ("escrow_writer", "delete from ledger.events where ledger_id = 'default'".into()),
        ("escrow_writer", "truncate ledger.events".into()),
        ("escrow_writer", "insert into ledger.sequence (ledger_id, position, local_id, hash, sequenced_at)
            select ledger_id, 999999, local_id, sha256(''::bytea), now() from ledger.events limit 1".into()),
        ("escrow_writer", unbacked_key.into()),
        ("escrow_writer", unbacked_inbox.into()),
        ("escrow_writer", "delete from ledger.idempotency".into()),
        ("escrow_writer", "update ledger.inbox set disposition = 'rejected'".into()),
        ("escrow_writer", "select ledger.save_balance_snapshot('default', 0, '[]')".into()),
        ("escrow_writer", format!("update escrow.milestones set released = released + 1 where project_id = '{project}'")),
        ("escrow_auditor", "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
            values ('default', 'wallet-x', 1, gen_random_uuid(), 'Credited', 1, '{}', '{}')".into()),
        ("escrow_auditor", "select ledger.take_balance_snapshot('default', 1)".into()),
        ("escrow_auditor", "select ledger.save_snapshot('default', 'periods', 1, 4, '{}', now())".into()),
        ("escrow_auditor", unbacked_key.into()),
        ("escrow_auditor", format!("update escrow.milestones set released = released + 1 where project_id = '{project}'")),
        ("escrow_projector", "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
            values ('default', 'wallet-x', 1, gen_random_uuid(), 'Credited', 1, '{}', '{}')".into()),
        ("escrow_projector", "select ledger.save_snapshot('default', 'periods', 1, 4, '{}', now())".into()),
        ("escrow_projector", unbacked_key.into()),
        ("escrow_reader", format!("update escrow.projects set funded = 0 where project_id = '{project}'")),
        ("escrow_reader", "select count(*) from ledger.events".into()),
        ("escrow_reader", unbacked_key.into()),
    ];
    for (role, sql) in &refused {
        let result = as_role(&pool, role, sql).await;
        assert!(result.is_err(), "{role} may: {sql}");
    }
    for args in [&[][..], &["--deep"][..]] {
        let (code, out) = verify_out(&db, "default", args);
        assert_eq!(code, 0, "after only refused writes, verify {args:?}: {out}");
    }

    // Writes a role must keep the right to make: each named.
    // 1. escrow_writer appends a second copy of a wallet credit (the wallet now says more than its account).
    let (db, pool) = demo_ledger().await;
    let (stream, version, event) = sqlx::query_as::<_, (String, i64, Uuid)>(
        "select stream_id, stream_version, event_id from ledger.events
          where stream_id like 'wallet-%' and event_type = 'Credited' order by stream_id, stream_version desc limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let head: i64 =
        sqlx::query_scalar("select max(stream_version) from ledger.events where stream_id = $1")
            .bind(&stream)
            .fetch_one(&pool)
            .await
            .unwrap();
    let forged = Uuid::new_v4();
    let sql = format!(
        "insert into ledger.events (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
         select ledger_id, stream_id, {}, '{forged}', event_type, schema_version, payload, '{{}}'::jsonb
           from ledger.events where event_id = '{event}';
         select ledger.sequence('default', 5000);",
        head + 1
    );
    let _ = version;
    as_role(&pool, "escrow_writer", &sql)
        .await
        .expect("the writer may append");
    let (code, out) = verify_out(&db, "default", &[]);
    assert_eq!(code, 1, "a forged wallet credit: {out}");
    let (code, out) = verify_out(&db, "default", &["--deep"]);
    assert!(
        code == 1 && out.contains(&forged.to_string()),
        "verify --deep does not name {forged}: {out}"
    );

    // 2. escrow_writer saves a stream snapshot with a state of its choosing (at a version that exists).
    let (db, pool) = demo_ledger().await;
    let (stream, version) = sqlx::query_as::<_, (String, i64)>(
        "select stream_id, max(stream_version) from ledger.events where stream_id like 'wallet-%' group by 1 limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let sql = format!(
        "select ledger.save_snapshot('default', '{stream}', {version}, {}, '{{\"Wallet\": {{}}}}', now())",
        ledger_store::executor::FOLD_VERSION
    );
    as_role(&pool, "escrow_writer", &sql)
        .await
        .expect("the writer saves stream snapshots");
    let (code, out) = verify_out(&db, "default", &[]);
    assert!(
        code == 1 && out.contains(&stream),
        "a made-up snapshot of {stream}: {out}"
    );

    // 3. escrow_projector writes a wrong money figure, and moves a checkpoint.
    let (db, pool) = demo_ledger().await;
    let project = fact(
        &pool,
        "select project_id::text from escrow.milestones where funded > 0 limit 1",
    )
    .await;
    let sql = format!(
        "update escrow.milestones set released = released + 1 where project_id = '{project}'"
    );
    as_role(&pool, "escrow_projector", &sql)
        .await
        .expect("the projector writes read tables");
    let (code, out) = verify_out(&db, "default", &[]);
    assert!(
        code == 1 && out.contains("milestones") && out.contains(&project),
        "{out}"
    );
    as_role(
        &pool,
        "escrow_projector",
        "update escrow.projection_checkpoints set position = position + 1000",
    )
    .await
    .expect("the projector moves its checkpoints");
    let (code, out) = verify_out(&db, "default", &[]);
    assert!(code == 1 && out.contains("projection_checkpoints"), "{out}");
}
