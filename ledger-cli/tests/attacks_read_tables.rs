//! Attacks on the read tables, their tenancy and the run-time roles (issue 9 items 6, 8, 10 and the
//! read-table half of 11), each replayed against the real binary and a real PostgreSQL (a fresh database
//! per test). Each test was written first against the code that had the hole and seen failing.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use ledger_store::testdb::TestDb;
use ledger_store::{EventMetadata, ExpectedVersion, NewEvent, StreamAppend};
use ledger_store::{EventStore, PgEventStore};
use sqlx::PgPool;

const CLI: &str = env!("CARGO_BIN_EXE_escrow-ledger");
const BUYER: &str = "00000000-0000-4000-8000-00000000b0b0";
const DEPOSIT: &str = "00000000-0000-4000-8000-0000000000d6";

fn cli(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(CLI)
        .arg("--database-url")
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn scalar_text(pool: &PgPool, sql: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_default()
}

/// The SQLSTATE a statement fails with (None when it succeeds), run in a transaction that is rolled back.
async fn sqlstate_as(pool: &PgPool, role: &str, statements: &[&str]) -> Option<String> {
    let mut tx = pool.begin().await.unwrap();
    let mut code = None;
    let set_role = format!("set local role {role}");
    for statement in std::iter::once(set_role.as_str()).chain(statements.iter().copied()) {
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut *tx)
            .await
        {
            code = Some(
                e.as_database_error()
                    .and_then(|d| d.code().map(|c| c.to_string()))
                    .unwrap_or_else(|| e.to_string()),
            );
            break;
        }
    }
    tx.rollback().await.unwrap();
    code
}

/// Item 6: an underpaid KWD deposit (200.000 asked, 180.000 arrived, 0.048 gateway fee) is shown as what
/// arrived and the fee paid; `verify` compares the money columns with the journal, not only with the fold.
#[tokio::test]
async fn item6_transactions_show_the_amount_received_and_the_fee_paid_and_verify_checks_them_against_the_journal()
 {
    let db = TestDb::new().await;
    let lines = format!(
        "{}\n{}\n",
        serde_json::json!({"actor": {"kind": "user", "id": BUYER}, "idempotency_key": "kwd-init",
            "command": {"type": "initiate_deposit", "payment_id": DEPOSIT, "gateway": "stripe", "fund": null,
                        "amount": {"amount": "200.000", "currency": "KWD"}}}),
        serde_json::json!({"actor": {"kind": "gateway", "id": "stripe"}, "idempotency_key": "kwd-ok",
            "command": {"type": "confirm_deposit", "payment_id": DEPOSIT, "occurred_at": "2026-11-30T09:00:00Z",
                        "amount": {"amount": "180.000", "currency": "KWD"},
                        "gateway_fee": {"amount": "0.048", "currency": "KWD"}}}),
    );
    ok(&cli(db.url(), &["apply", "-"], Some(&lines)), "apply");
    ok(
        &cli(db.url(), &["projections", "run", "--until-caught-up"], None),
        "projections run",
    );
    let shown = scalar_text(
        &db.pool,
        &format!(
            "select type || ' ' || status || ' ' || amount::text || ' fee ' || fee::text
               from escrow.transactions where source_id = '{DEPOSIT}'"
        ),
    )
    .await;
    assert_eq!(shown, "deposit completed 180.000 fee 0.048");
    let verified = cli(db.url(), &["verify"], None);
    ok(&verified, "verify of an honest ledger");

    // A money column that disagrees with the postings is a finding of the journal comparison (the fold
    // comparison would report it too; the journal one must not depend on the fold).
    sqlx::query("update escrow.transactions set amount = 200.000 where source_id::text = $1")
        .bind(DEPOSIT)
        .execute(&db.pool)
        .await
        .unwrap();
    let tampered = cli(db.url(), &["verify"], None);
    let out = String::from_utf8_lossy(&tampered.stdout);
    assert_eq!(tampered.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FINDING: ") && l.contains("journal") && l.contains("200")),
        "no finding compares escrow.transactions with the journal:\n{out}"
    );
}

const READ_TABLES: [&str; 12] = [
    "service_requests",
    "quotes",
    "bookings",
    "projects",
    "milestones",
    "transactions",
    "disputes",
    "accounts",
    "journal_entries",
    "postings",
    "account_balances",
    "audit_log",
];

/// Supabase's API roles as Supabase makes them, NOLOGIN NOINHERIT (roles are cluster-wide: created when
/// missing, their attributes set either way; parallel tests race on the creation).
async fn supabase_roles(pool: &PgPool) {
    for role in ["anon", "authenticated"] {
        let create = format!(
            "do $$ begin create role {role} nologin noinherit; exception when duplicate_object or unique_violation then null; end $$"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(pool)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter role {role} nologin noinherit"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn rows_seen(pool: &PgPool, role: &str, claims: &serde_json::Value, setting: bool) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("set local role {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("select set_config('request.jwt.claims', $1, true)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    if setting {
        sqlx::query("select set_config('escrow.ledger', 'default', true)")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let mut total = 0;
    for table in READ_TABLES {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from escrow.{table}"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        total += n;
    }
    tx.rollback().await.unwrap();
    total
}

/// Item 8: no ledger claim, no rows, for every identity (admin and accountant included, with or without
/// `escrow.ledger` set; a plain party once the database holds two ledgers); a rebuild under Supabase-style default privileges leaves `authenticated` and
/// `anon` no write or TRUNCATE grant.
#[tokio::test]
async fn item8_no_ledger_claim_no_rows_and_a_rebuild_grants_authenticated_no_write_or_truncate() {
    // Supabase's roles exist before the schema is migrated (as on a Supabase project).
    let db = TestDb::empty().await;
    supabase_roles(&db.pool).await;
    ledger_store::migrate(&db.pool).await.unwrap();
    sqlx::raw_sql("grant usage on schema escrow to authenticated, anon")
        .execute(&db.pool)
        .await
        .unwrap();
    ok(&cli(db.url(), &["demo"], None), "demo");
    let mut bad = Vec::new();
    let buyer = scalar_text(
        &db.pool,
        "select buyer_id::text from escrow.projects limit 1",
    )
    .await;
    let admin = "00000000-0000-4000-8000-0000000000ad";
    let with_claim =
        serde_json::json!({"sub": admin, "app_metadata": {"role": "admin", "ledger": "default"}});
    if rows_seen(&db.pool, "escrow_reader", &with_claim, false).await == 0 {
        bad.push("an admin of ledger default sees nothing (nothing to test against)".to_string());
    }
    // Application roles need the claim; a plain party without it sees its own rows only while the database
    // holds one ledger, so a second ledger is created first.
    ok(
        &cli(db.url(), &["ledgers", "create", "acme"], None),
        "ledgers create",
    );
    for (name, app_metadata) in [
        ("admin", serde_json::json!({"role": "admin"})),
        ("accountant", serde_json::json!({"role": "accountant"})),
        ("provider", serde_json::json!({"role": "provider"})),
        ("buyer", serde_json::json!({})),
    ] {
        let sub = if name == "buyer" {
            buyer.as_str()
        } else {
            admin
        };
        let claims =
            serde_json::json!({"sub": sub, "role": "authenticated", "app_metadata": app_metadata});
        for role in ["escrow_reader", "authenticated"] {
            for setting in [false, true] {
                let seen = rows_seen(&db.pool, role, &claims, setting).await;
                if seen != 0 {
                    bad.push(format!(
                        "{name} without a ledger claim as {role} (escrow.ledger set: {setting}) sees {seen} rows"
                    ));
                }
            }
        }
    }

    sqlx::raw_sql(
        "alter default privileges in schema escrow grant all on tables to authenticated;
         alter default privileges in schema escrow grant all on tables to anon",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    ok(&cli(db.url(), &["projections", "rebuild"], None), "rebuild");
    for table in READ_TABLES {
        for role in ["authenticated", "anon"] {
            for privilege in [
                "INSERT",
                "UPDATE",
                "DELETE",
                "TRUNCATE",
                "REFERENCES",
                "TRIGGER",
            ] {
                let granted = scalar_text(
                    &db.pool,
                    &format!(
                        "select has_table_privilege('{role}', 'escrow.{table}', '{privilege}')::text"
                    ),
                )
                .await;
                if granted != "false" {
                    bad.push(format!(
                        "after a rebuild {role} has {privilege} on escrow.{table}"
                    ));
                }
            }
        }
    }
    let truncate = sqlstate_as(
        &db.pool,
        "authenticated",
        &["truncate escrow.service_requests"],
    )
    .await;
    if truncate.as_deref() != Some("42501") {
        bad.push(format!(
            "TRUNCATE escrow.service_requests as authenticated after a rebuild: {truncate:?}"
        ));
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Item 10: commands given the superuser's URL run as a role that cannot alter the log, disable its
/// triggers or bypass RLS; the reports' read-only role sees every row; the private cluster wants a password.
#[tokio::test]
async fn item10_run_time_roles_cannot_alter_the_log_and_the_private_cluster_wants_a_password() {
    let db = TestDb::new().await;
    // Record the role each statement inserting events runs under (`role` is what SET ROLE chose; it stays
    // the same inside security definer functions, which change only current_user).
    sqlx::raw_sql(
        "create table public.roles_seen (role text not null, superuser boolean not null);
         grant insert on public.roles_seen to public;
         create function public.record_role() returns trigger language plpgsql as $$
         begin
             insert into public.roles_seen
             select current_setting('role'), rolsuper from pg_roles where rolname = current_user;
             return null;
         end $$;
         create trigger record_role after insert on ledger.events
             for each statement execute function public.record_role();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let line = serde_json::json!({"actor": {"kind": "user", "id": BUYER}, "idempotency_key": "r10",
        "command": {"type": "initiate_deposit", "payment_id": DEPOSIT, "gateway": "stripe", "fund": null,
                    "amount": {"amount": "10.00", "currency": "USD"}}});
    ok(
        &cli(db.url(), &["apply", "-"], Some(&format!("{line}\n"))),
        "apply",
    );
    let mut bad = Vec::new();
    let roles: Vec<(String, bool)> =
        sqlx::query_as("select distinct role, superuser from public.roles_seen")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    if roles.is_empty() {
        bad.push("apply appended nothing".to_string());
    }
    for (role, superuser) in &roles {
        if role == "none" || *superuser {
            bad.push(format!(
                "apply with the superuser's URL appended as role {role:?} (superuser: {superuser})"
            ));
            continue;
        }
        for attack in [
            "alter table ledger.events disable trigger all",
            "alter table ledger.events disable trigger user",
            "alter table escrow.transactions no force row level security",
            "truncate ledger.events",
        ] {
            let code = sqlstate_as(&db.pool, role, &[attack]).await;
            if code.as_deref() != Some("42501") {
                bad.push(format!("as {role}: {attack}: {code:?}"));
            }
        }
        let bypass = scalar_text(
            &db.pool,
            &format!("select rolbypassrls::text from pg_roles where rolname = '{role}'"),
        )
        .await;
        if bypass != "false" {
            bad.push(format!("{role} bypasses RLS: {bypass}"));
        }
    }
    // The reports' role: reads every row of every ledger, writes nothing.
    ok(&cli(db.url(), &["demo"], None), "demo");
    let all = scalar_text(&db.pool, "select count(*)::text from escrow.transactions").await;
    let auditor = sqlstate_as(
        &db.pool,
        "escrow_auditor",
        &["select 1 from ledger.events limit 1"],
    )
    .await;
    if auditor.is_some() {
        bad.push(format!("escrow_auditor cannot read the log: {auditor:?}"));
    } else {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("set local role escrow_auditor")
            .execute(&mut *tx)
            .await
            .unwrap();
        let seen: i64 = sqlx::query_scalar("select count(*) from escrow.transactions")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        if seen.to_string() != all {
            bad.push(format!("escrow_auditor sees {seen} of {all} transactions"));
        }
        for write in [
            "insert into ledger.ledgers (ledger_id) values ('x')",
            "delete from escrow.transactions",
            "alter table ledger.events disable trigger all",
        ] {
            let code = sqlstate_as(&db.pool, "escrow_auditor", &[write]).await;
            if code.as_deref() != Some("42501") {
                bad.push(format!("as escrow_auditor: {write}: {code:?}"));
            }
        }
    }
    bad.extend(private_cluster_wants_a_password().await);
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Starts a private cluster from nothing, tries it without a password, then with its own URL.
async fn private_cluster_wants_a_password() -> Vec<String> {
    use ledger_store::cluster::PrivateCluster;
    let mut bad = Vec::new();
    let root = std::env::temp_dir().join(format!("escrow-ledger-attack10-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = PrivateCluster::new(root.join("pg"), port);
    tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.start()
    })
    .await
    .unwrap()
    .expect("the private cluster starts with no setup");
    let passwordless = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    if ledger_store::connect(&passwordless).await.is_ok() {
        bad.push("the private cluster accepts a TCP connection without a password".to_string());
    }
    match ledger_store::connect(&cluster.url()).await {
        Ok(pool) => pool.close().await,
        Err(e) => bad.push(format!("the private cluster refuses its own URL: {e}")),
    }
    let cluster_for_stop = cluster.clone();
    tokio::task::spawn_blocking(move || cluster_for_stop.stop())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    bad
}

/// Item 11, read-table half: two milestones of the largest amount a log written before the core's ceiling
/// can hold make a project total the read table shows exactly (no wrap to -0.02, no crash).
#[tokio::test]
async fn item11_two_huge_milestones_never_wrap_the_project_total() {
    let db = TestDb::new().await;
    let project = "00000000-0000-4000-8000-0000000000b1";
    let huge = serde_json::json!({"amount": "92233720368547758.07", "currency": "USD"});
    let payload = serde_json::json!({
        "type": "ProjectCreated", "project_id": project, "creator": BUYER, "buyer": BUYER,
        "seller": "00000000-0000-4000-8000-000000005e11", "currency": "USD", "booking_id": null,
        "milestones": [huge, huge],
        "fees": {"buyer_fee_rate": "0", "commission_rate": "0", "auto_approve_days": 14,
                 "release_to_pending": false, "late_cancel_keep_rate": "0", "return_buyer_fee_on_refund": true}});
    let store = PgEventStore::new(db.pool.clone());
    store
        .append(
            "default",
            vec![StreamAppend {
                stream_id: format!("project-{project}"),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    stream_id: format!("project-{project}"),
                    event_type: "ProjectCreated".into(),
                    schema_version: 1,
                    payload,
                    metadata: EventMetadata::default(),
                }],
            }],
            None,
        )
        .await
        .unwrap();
    let run = cli(db.url(), &["projections", "run", "--until-caught-up"], None);
    let total = scalar_text(
        &db.pool,
        &format!(
            "select coalesce((select total_amount::text from escrow.projects
                               where project_id = '{project}'), 'no row')"
        ),
    )
    .await;
    assert_eq!(
        total,
        "184467440737095516.14",
        "projections run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    ok(&run, "projections run");
}
