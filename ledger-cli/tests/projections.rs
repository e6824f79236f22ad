//! Projections, rebuild, crash safety and row-level security against a real PostgreSQL (a fresh database
//! per test). The demo (the real binary) writes realistic histories; the library runs the workers.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use ledger_projections::runner::{RunnerConfig, Worker};
use ledger_projections::sql::read_rows;
use ledger_projections::table::{Projection, Row, TABLES};
use ledger_projections::verify::compare_with_log;
use ledger_store::testdb::TestDb;
use sqlx::PgPool;

const CLI: &str = env!("CARGO_BIN_EXE_escrow-ledger");

fn demo(url: &str) {
    let output = Command::new(CLI)
        .args(["--database-url", url, "demo"])
        .output()
        .expect("run escrow-ledger demo");
    assert!(
        output.status.success(),
        "demo failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("every read table equals a replay of the log"),
        "{stdout}"
    );
}

/// Every read table's rows (all ledgers), read as the superuser, keyed.
async fn snapshot(pool: &PgPool) -> Vec<BTreeMap<Row, Row>> {
    let mut conn = pool.acquire().await.unwrap();
    let mut out = Vec::new();
    for spec in TABLES {
        let rows = read_rows(&mut conn, spec, "default").await.unwrap();
        out.push(
            rows.into_iter()
                .map(|r| (spec.key_of(&r).to_vec(), r))
                .collect(),
        );
    }
    out
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn demo_tables_equal_the_replay_balances_agree_with_postings_and_trial_balance_is_zero() {
    let db = TestDb::new().await;
    demo(db.url());
    demo(db.url());
    let mismatches = compare_with_log(&db.pool, "default").await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    // Every table has rows after two stories.
    for spec in TABLES {
        let n = count(
            &db.pool,
            &format!("select count(*) from escrow.{}", spec.name),
        )
        .await;
        assert!(n > 0, "escrow.{} is empty", spec.name);
    }
    // account_balances agree with the sum of postings, account by account.
    let disagreeing = count(
        &db.pool,
        "select count(*) from escrow.account_balances b full join (
            select ledger_id, account, currency,
                   sum(amount) filter (where side = 'debit') as debits,
                   sum(amount) filter (where side = 'credit') as credits, count(*) as n, max(position) as last
              from escrow.postings group by 1, 2, 3) p using (ledger_id, account, currency)
          where b.debits is distinct from coalesce(p.debits, 0)
             or b.credits is distinct from coalesce(p.credits, 0)
             or b.postings is distinct from p.n or b.as_of_position is distinct from p.last",
    )
    .await;
    assert_eq!(disagreeing, 0, "account_balances disagree with postings");
    let unbalanced = count(
        &db.pool,
        "select count(*) from (select currency from escrow.account_balances group by currency
                                having sum(debits) <> sum(credits)) t",
    )
    .await;
    assert_eq!(unbalanced, 0, "trial balance is not zero");
    // Journal entries' totals equal their postings on each side.
    let bad_entries = count(
        &db.pool,
        "select count(*) from escrow.journal_entries e join (
            select entry_id, sum(amount) filter (where side = 'debit') d,
                   sum(amount) filter (where side = 'credit') c from escrow.postings group by 1) p
          using (entry_id) where p.d <> p.c or p.d <> e.total",
    )
    .await;
    assert_eq!(bad_entries, 0);
    // One audit row per event of the log, in order.
    let audit = count(&db.pool, "select count(*) from escrow.audit_log").await;
    let head = count(&db.pool, "select max(position) from ledger.sequence").await;
    assert_eq!(audit, head);

    // The comparison is not blind: a tampered balance and a tampered checkpoint are reported.
    sqlx::query(
        "update escrow.account_balances set credits = credits + 1 where account like 'Income:%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("update escrow.projection_checkpoints set position = position - 3 where projection = 'audit'")
        .execute(&db.pool)
        .await
        .unwrap();
    let mismatches = compare_with_log(&db.pool, "default").await.unwrap();
    assert!(
        mismatches.iter().any(|m| m.table == "account_balances"),
        "{mismatches:#?}"
    );
    assert!(
        mismatches
            .iter()
            .any(|m| m.table == "projection_checkpoints" && m.key.contains("audit")),
        "{mismatches:#?}"
    );
}

async fn security_of(pool: &PgPool, relation: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "select x from (
           select 'acl ' || coalesce(relacl::text, '') || ' rls ' || relrowsecurity || relforcerowsecurity
                  || ' opts ' || coalesce(reloptions::text, '') as x
             from pg_class where oid = $1::regclass
           union all
           select 'policy ' || polname || ' ' || polcmd::text || ' ' || polpermissive || ' ' || polroles::regrole[]::text
                  || ' ' || coalesce(pg_get_expr(polqual, polrelid), '') || ' '
                  || coalesce(pg_get_expr(polwithcheck, polrelid), '')
             from pg_policy where polrelid = $1::regclass
           union all
           select 'index ' || pg_get_indexdef(indexrelid) from pg_index where indrelid = $1::regclass
           union all
           select 'view ' || pg_get_viewdef($1::regclass) where (select relkind from pg_class where oid = $1::regclass) = 'v'
         ) s order by x",
    )
    .bind(relation)
    .fetch_all(pool)
    .await
    .unwrap();
    // A re-created view deparses `a in (b, c, d)` with different (equivalent) parentheses: compare the
    // text without them.
    rows.into_iter()
        .map(|(x,)| {
            if x.starts_with("view ") {
                x.replace(['(', ')', ' ', '\n'], "")
            } else {
                x
            }
        })
        .collect()
}

async fn escrow_relations(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select 'escrow.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'escrow' and c.relkind in ('r', 'v') order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rebuild_equals_incremental_row_for_row_and_keeps_grants_policies_and_forced_rls() {
    let db = TestDb::new().await;
    demo(db.url());
    demo(db.url());
    let incremental = snapshot(&db.pool).await;
    let relations = escrow_relations(&db.pool).await;
    let mut security = Vec::new();
    for relation in &relations {
        security.push(security_of(&db.pool, relation).await);
    }

    let report = ledger_projections::rebuild::rebuild(&db.pool, &Projection::ALL)
        .await
        .unwrap();
    assert!(report.events > 0);

    let rebuilt = snapshot(&db.pool).await;
    for (spec, (a, b)) in TABLES.iter().zip(incremental.iter().zip(&rebuilt)) {
        assert!(!a.is_empty(), "{} is empty", spec.name);
        assert_eq!(a, b, "escrow.{} differs after the rebuild", spec.name);
    }
    assert_eq!(
        escrow_relations(&db.pool).await,
        relations,
        "tables or views appeared or vanished"
    );
    for (relation, before) in relations.iter().zip(&security) {
        assert_eq!(
            &security_of(&db.pool, relation).await,
            before,
            "{relation} lost security"
        );
    }
    // Workers go on from the rebuilt checkpoints.
    demo(db.url());
    assert!(
        compare_with_log(&db.pool, "default")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Empties the read tables and checkpoints (as the superuser) so the log can be projected again.
/// A ledger created while a rebuild folds the others (after it listed them, before its swap) keeps its read
/// rows: on one server its checkpoints are reset by the swap and its workers replay it; on Citus its rows are
/// left alone. The swap is held back by a lock on the default ledger's checkpoint while the new ledger runs
/// the demo (its own projections included).
#[tokio::test]
async fn a_ledger_created_while_a_rebuild_folds_keeps_its_read_rows() {
    let db = TestDb::new().await;
    demo(db.url());
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query(
        "select 1 from escrow.projection_checkpoints where ledger_id = 'default' for update",
    )
    .fetch_all(&mut *holder)
    .await
    .unwrap();
    let rebuild = tokio::spawn({
        let pool = db.pool.clone();
        async move { ledger_projections::rebuild::rebuild(&pool, &Projection::ALL).await }
    });
    // The fold is done and the swap waits for the checkpoint row, on the node holding it (a worker on
    // Citus).
    let node = PgPool::connect(&db.ledger_node_url("default").await.unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while count(
        &node,
        "select count(*) from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'
            and query ilike '%projection_checkpoints%for update%'",
    )
    .await
        == 0
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the rebuild's swap never waited for the held checkpoint"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for args in [
        &["--database-url", db.url(), "ledgers", "create", "late"][..],
        &["--database-url", db.url(), "--ledger", "late", "demo"][..],
    ] {
        let output = Command::new(CLI).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let late_rows = "select count(*) from escrow.audit_log where ledger_id = 'late'";
    assert!(count(&db.pool, late_rows).await > 0);
    holder.commit().await.unwrap();
    let report = rebuild.await.unwrap().unwrap();
    assert!(report.ledgers.iter().all(|(ledger, _)| ledger != "late"));
    for projection in Projection::ALL {
        let mut worker =
            Worker::start(db.pool.clone(), "late", projection, RunnerConfig::default())
                .await
                .unwrap();
        worker.catch_up().await.unwrap();
    }
    assert!(count(&db.pool, late_rows).await > 0);
    for ledger in ["default", "late"] {
        let differences = compare_with_log(&db.pool, ledger).await.unwrap();
        assert!(differences.is_empty(), "{ledger}: {differences:?}");
    }
}

async fn forget_projections(pool: &PgPool) {
    for spec in TABLES {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "delete from escrow.{}",
            spec.name
        )))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("delete from escrow.projection_checkpoints")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_worker_failing_mid_batch_and_restarted_gives_the_same_tables() {
    let db = TestDb::new().await;
    for _ in 0..3 {
        demo(db.url());
    }
    let uninterrupted = snapshot(&db.pool).await;
    forget_projections(&db.pool).await;
    assert!(snapshot(&db.pool).await.iter().all(|t| t.is_empty()));

    let mut crashes = 0;
    for (round, projection) in Projection::ALL.into_iter().cycle().take(200).enumerate() {
        // Each round is a fresh worker (a restarted process): nothing carried over but the database.
        let config = RunnerConfig {
            batch_events_max: 7,
            fail_after_writes: Some(round % 3),
            ..RunnerConfig::default()
        };
        let mut worker = Worker::start(db.pool.clone(), "default", projection, config)
            .await
            .unwrap();
        match worker.catch_up().await {
            Ok(_) => {}
            Err(ledger_projections::Error::Injected(_)) => crashes += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(crashes > 10, "the hook never fired ({crashes})");
    for projection in Projection::ALL {
        let config = RunnerConfig {
            batch_events_max: 7,
            ..RunnerConfig::default()
        };
        let mut worker = Worker::start(db.pool.clone(), "default", projection, config)
            .await
            .unwrap();
        worker.catch_up().await.unwrap();
    }
    let recovered = snapshot(&db.pool).await;
    for (spec, (a, b)) in TABLES.iter().zip(uninterrupted.iter().zip(&recovered)) {
        assert_eq!(a, b, "escrow.{} differs after crashes", spec.name);
    }
    assert!(
        compare_with_log(&db.pool, "default")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_killed_projection_process_resumes_without_applying_an_event_twice_or_skipping_one() {
    let db = TestDb::new().await;
    for _ in 0..4 {
        demo(db.url());
    }
    let uninterrupted = snapshot(&db.pool).await;
    forget_projections(&db.pool).await;
    for round in 0..8_u64 {
        let mut child = Command::new(CLI)
            .args([
                "--database-url",
                db.url(),
                "projections",
                "run",
                "--batch-size",
                "3",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + 97 * round));
        child.kill().unwrap(); // SIGKILL: no cleanup, wherever it was
        child.wait().unwrap();
    }
    let status = Command::new(CLI)
        .args([
            "--database-url",
            db.url(),
            "projections",
            "run",
            "--until-caught-up",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let recovered = snapshot(&db.pool).await;
    for (spec, (a, b)) in TABLES.iter().zip(uninterrupted.iter().zip(&recovered)) {
        assert_eq!(a, b, "escrow.{} differs after kills", spec.name);
    }
}

// ---------------------------------------------------------------------------------------------------
// Row-level security matrix.

struct Identity {
    name: &'static str,
    /// The claims JSON, or None for an anonymous connection.
    claims: Option<serde_json::Value>,
    /// Whose rows (by sub) the identity may see; None: nobody's.
    sub: Option<String>,
    staff: bool,
    provider: bool,
    /// An application role without a ledger claim, or any identity without one once the database holds
    /// several ledgers: no rows at all.
    sees_nothing: bool,
}

fn claims(sub: &str, app_metadata: serde_json::Value) -> Option<serde_json::Value> {
    Some(serde_json::json!({ "sub": sub, "role": "authenticated", "app_metadata": app_metadata }))
}

async fn visible(pool: &PgPool, identity: &Identity, relation: &str) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("set local role escrow_reader")
        .execute(&mut *tx)
        .await
        .unwrap();
    if let Some(claims) = &identity.claims {
        // SET LOCAL (carried to Citus workers), not set_config: migration 20261201000301.
        sqlx::query("select escrow.set_claims($1)")
            .bind(claims.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from {relation}"
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    n
}

/// Rows of `relation` an identity reads as PostgREST does it; `anon` (no claims) is refused outright, which
/// counts as none.
async fn visible_the_postgrest_way(api: &PgPool, identity: &Identity, relation: &str) -> i64 {
    let mut tx = api.begin().await.unwrap();
    let role = if identity.claims.is_some() {
        "authenticated"
    } else {
        "anon"
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("set local role {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    if let Some(claims) = &identity.claims {
        sqlx::query(
            "select set_config('request.jwt.claims', $1, true), set_config('request.jwt.claim.sub', $2, true),
                    set_config('request.jwt.claim.role', 'authenticated', true)",
        )
        .bind(claims.to_string())
        .bind(claims["sub"].as_str().unwrap_or(""))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
        "select count(*) from {relation}"
    )))
    .fetch_one(&mut *tx)
    .await;
    let _ = tx.rollback().await;
    match n {
        Ok(n) => n,
        Err(e) if role == "anon" && e.to_string().contains("permission denied") => 0,
        Err(e) => panic!("{} reads {relation} as {role}: {e}", identity.name),
    }
}

/// The rows an identity must see of `relation`: none without claims, or without a sub or a ledger claim
/// where one is needed; staff have no accounts or projects of their own, so their own views are empty; else
/// what the policies allow.
async fn expected(pool: &PgPool, identity: &Identity, relation: &str) -> i64 {
    let nobody = identity.sees_nothing
        || identity.claims.is_none()
        || (identity.sub.is_none() && !identity.staff);
    if nobody || (identity.staff && relation.contains(".my_")) {
        0
    } else {
        allowed(pool, identity, relation).await
    }
}

/// What the policies allow, written independently as plain SQL over all rows (superuser).
async fn allowed(pool: &PgPool, identity: &Identity, relation: &str) -> i64 {
    let u = identity
        .sub
        .clone()
        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into());
    let u = format!("'{u}'::uuid");
    let any = |cols: &[&str]| format!("{u} in ({})", cols.join(", "));
    let staff = identity.staff;
    let filter = match relation {
        "escrow.service_requests" if identity.provider => {
            format!("(status = 'open' or client_id = {u})")
        }
        "escrow.service_requests" => format!("client_id = {u}"),
        "escrow.quotes" => any(&["provider_id", "client_id"]),
        "escrow.bookings" => any(&["client_id", "provider_id"]),
        "escrow.projects" | "escrow.milestones" => any(&["creator_id", "buyer_id", "seller_id"]),
        "escrow.transactions" => any(&["user_id", "creator_id", "buyer_id", "seller_id"]),
        "escrow.disputes" => any(&[
            "opened_by",
            "counterparty",
            "creator_id",
            "buyer_id",
            "seller_id",
        ]),
        "escrow.accounts" | "escrow.postings" | "escrow.account_balances" => {
            format!("owner_id = {u}")
        }
        "escrow.journal_entries" | "escrow.audit_log" => "false".into(),
        "escrow.deadlines" => any(&["party_a", "party_b"]),
        "escrow.my_deadlines" => {
            return count(
                pool,
                &format!(
                    "select count(*) from escrow.deadlines where status = 'pending' and {}",
                    any(&["party_a", "party_b"])
                ),
            )
            .await;
        }
        // Views show the caller's own rows whatever their role.
        "escrow.my_projects" => {
            return count(
                pool,
                &format!(
                    "select count(*) from escrow.projects where {}",
                    any(&["creator_id", "buyer_id", "seller_id"])
                ),
            )
            .await;
        }
        "escrow.my_milestones" => {
            return count(
                pool,
                &format!(
                    "select count(*) from escrow.milestones where {}",
                    any(&["creator_id", "buyer_id", "seller_id"])
                ),
            )
            .await;
        }
        "escrow.my_transactions" => {
            return count(
                pool,
                &format!(
                    "select count(*) from escrow.transactions where {}",
                    any(&["user_id", "creator_id", "buyer_id", "seller_id"])
                ),
            )
            .await;
        }
        "escrow.my_bookings" => {
            return count(
                pool,
                &format!(
                    "select count(*) from escrow.bookings where {}",
                    any(&["client_id", "provider_id"])
                ),
            )
            .await;
        }
        "escrow.my_balances" => return count(
            pool,
            &format!(
                "select count(distinct currency) from escrow.account_balances where owner_id = {u}"
            ),
        )
        .await,
        other => panic!("no expectation for {other}"),
    };
    let filter = if staff { "true".to_string() } else { filter };
    count(
        pool,
        &format!("select count(*) from {relation} where ledger_id = 'default' and ({filter})"),
    )
    .await
}

#[tokio::test]
async fn row_level_security_matrix_every_table_and_view_for_every_identity() {
    let db = TestDb::new().await;
    demo(db.url());
    demo(db.url());
    let pool = &db.pool;
    let one = |sql: &str| {
        let sql = sql.to_string();
        async move {
            let id: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap();
            id.to_string()
        }
    };
    let project = "(select project_id from escrow.projects where booking_id is null order by created_at limit 1)";
    let buyer = one(&format!(
        "select buyer_id from escrow.projects where project_id = {project}"
    ))
    .await;
    let seller = one(&format!(
        "select seller_id from escrow.projects where project_id = {project}"
    ))
    .await;
    let creator = one(&format!(
        "select creator_id from escrow.projects where project_id = {project}"
    ))
    .await;
    let client = one("select client_id from escrow.bookings order by created_at limit 1").await;
    let provider = one("select provider_id from escrow.bookings order by created_at limit 1").await;
    let stranger = "00000000-0000-4000-8000-00000000dead".to_string();
    let stranger2 = "00000000-0000-4000-8000-00000000beef".to_string();
    let admin = "00000000-0000-4000-8000-0000000000ad".to_string();
    let none = serde_json::json!({});
    let id = |name, sub: &String, meta: serde_json::Value, staff, provider| Identity {
        name,
        claims: claims(sub, meta),
        sub: if staff { None } else { Some(sub.clone()) },
        staff,
        provider,
        sees_nothing: false,
    };
    let claimless = |name, sub: &String, meta: serde_json::Value| Identity {
        name,
        claims: claims(sub, meta),
        sub: Some(sub.clone()),
        staff: false,
        provider: false,
        sees_nothing: true,
    };
    let identities = vec![
        id("buyer", &buyer, none.clone(), false, false),
        id("seller", &seller, none.clone(), false, false),
        id("creator", &creator, none.clone(), false, false),
        id("client", &client, none.clone(), false, false),
        id(
            "provider",
            &provider,
            serde_json::json!({"role": "provider", "ledger": "default"}),
            false,
            true,
        ),
        id(
            "buyer with its ledger claim",
            &buyer,
            serde_json::json!({"ledger": "default"}),
            false,
            false,
        ),
        id("stranger", &stranger, none.clone(), false, false),
        id("another stranger", &stranger2, none.clone(), false, false),
        id(
            "admin",
            &admin,
            serde_json::json!({"role": "admin", "ledger": "default"}),
            true,
            false,
        ),
        id(
            "accountant",
            &admin,
            serde_json::json!({"role": "accountant", "ledger": "default"}),
            true,
            false,
        ),
        // No ledger claim: an application role sees nothing, whatever the role.
        claimless(
            "admin without a ledger claim",
            &admin,
            serde_json::json!({"role": "admin"}),
        ),
        claimless(
            "accountant without a ledger claim",
            &admin,
            serde_json::json!({"role": "accountant"}),
        ),
        claimless(
            "provider without a ledger claim",
            &provider,
            serde_json::json!({"role": "provider"}),
        ),
        claimless(
            "seller with an unknown role and no ledger claim",
            &seller,
            serde_json::json!({"role": "seller"}),
        ),
        Identity {
            name: "anonymous",
            claims: None,
            sub: None,
            staff: false,
            provider: false,
            sees_nothing: true,
        },
        Identity {
            name: "forged top-level role",
            claims: Some(serde_json::json!({"sub": stranger, "role": "admin", "app_metadata": {}})),
            sub: Some(stranger.clone()),
            staff: false,
            provider: false,
            sees_nothing: false,
        },
        Identity {
            name: "buyer claiming another ledger",
            claims: claims(&buyer, serde_json::json!({"ledger": "other"})),
            sub: None,
            staff: false,
            provider: false,
            sees_nothing: true,
        },
    ];
    let relations = escrow_relations(pool).await;
    let relations: Vec<&String> = relations
        .iter()
        .filter(|r| !r.ends_with("projection_checkpoints"))
        .collect();
    assert_eq!(relations.len(), 13 + 6, "{relations:?}");
    for identity in &identities {
        for relation in &relations {
            let seen = visible(pool, identity, relation).await;
            let expected = expected(pool, identity, relation).await;
            assert_eq!(seen, expected, "{} on {relation}", identity.name);
        }
    }
    // The same matrix the way PostgREST reads on Supabase (not on Citus, where `set_config` is not carried to
    // the workers: readers there use `escrow.set_claims`): Supabase's NOINHERIT roles, logged in as
    // `authenticator`, `set local role authenticated` (anonymous: `anon`, which may read nothing) and the
    // claims in `request.jwt.claims` and `request.jwt.claim.*`.
    if !ledger_store::testdb::citus_requested() {
        support::supabase_roles(pool).await;
        ledger_store::migrate(pool).await.unwrap();
        sqlx::raw_sql("grant usage on schema escrow to anon, authenticated, service_role")
            .execute(pool)
            .await
            .unwrap();
        let api = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&support::as_authenticator(&db))
            .await
            .unwrap();
        for identity in &identities {
            for relation in &relations {
                let seen = visible_the_postgrest_way(&api, identity, relation).await;
                let expected = expected(pool, identity, relation).await;
                assert_eq!(
                    seen, expected,
                    "{} on {relation} as authenticated",
                    identity.name
                );
            }
        }
    }
    // Once the database holds a second ledger, a party without a ledger claim sees nothing either (its own
    // rows only while there is one tenant); with the claim it sees them as before.
    let created = Command::new(CLI)
        .args(["--database-url", db.url(), "ledgers", "create", "acme"])
        .output()
        .unwrap();
    assert!(created.status.success());
    for identity in identities.iter().take(7) {
        let with_claim = identity
            .claims
            .as_ref()
            .is_some_and(|c| c["app_metadata"]["ledger"] == "default");
        for relation in &relations {
            let seen = visible(pool, identity, relation).await;
            if with_claim {
                assert_eq!(
                    seen,
                    allowed(pool, identity, relation).await,
                    "{} on {relation} with two ledgers",
                    identity.name
                );
            } else {
                assert_eq!(seen, 0, "{} on {relation} with two ledgers", identity.name);
            }
        }
    }
    sqlx::query("delete from ledger.ledgers where ledger_id = 'acme'")
        .execute(pool)
        .await
        .unwrap();
    // Parties see something of their own, staff see everything, and a stranger nothing.
    let named = |name: &str| identities.iter().find(|i| i.name == name).unwrap();
    let buyer_id = &identities[0];
    for relation in [
        "escrow.projects",
        "escrow.milestones",
        "escrow.transactions",
        "escrow.disputes",
        "escrow.postings",
        "escrow.account_balances",
        "escrow.accounts",
        "escrow.my_projects",
        "escrow.my_balances",
        "escrow.my_milestones",
        "escrow.my_transactions",
    ] {
        assert!(
            visible(pool, buyer_id, relation).await > 0,
            "buyer sees nothing in {relation}"
        );
    }
    for relation in [
        "escrow.quotes",
        "escrow.bookings",
        "escrow.my_bookings",
        "escrow.service_requests",
    ] {
        assert!(
            visible(pool, named("client"), relation).await > 0,
            "client sees nothing in {relation}"
        );
    }
    let all_projects = count(pool, "select count(*) from escrow.projects").await;
    assert_eq!(
        visible(pool, named("admin"), "escrow.projects").await,
        all_projects
    );
    assert!(visible(pool, buyer_id, "escrow.projects").await < all_projects);
    assert!(visible(pool, named("admin"), "escrow.audit_log").await > 0);

    // escrow_reader can write nothing, whoever it claims to be.
    for relation in relations.iter().filter(|r| !r.contains(".my_")) {
        for statement in [
            format!("delete from {relation}"),
            format!("update {relation} set ledger_id = ledger_id"),
            format!("insert into {relation} select * from {relation} limit 1"),
            format!("truncate {relation}"),
        ] {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("set local role escrow_reader")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("select set_config('request.jwt.claims', $1, true)")
                .bind(
                    serde_json::json!({"sub": admin, "app_metadata": {"role": "admin"}})
                        .to_string(),
                )
                .execute(&mut *tx)
                .await
                .unwrap();
            let result = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut *tx)
                .await;
            let code = result.err().and_then(|e| {
                e.as_database_error()
                    .and_then(|d| d.code().map(|c| c.to_string()))
            });
            assert_eq!(
                code.as_deref(),
                Some("42501"),
                "{statement} was not refused"
            );
            tx.rollback().await.unwrap();
        }
    }
    // Neither role is superuser, bypasses RLS, or owns a read table.
    let privileged = count(
        pool,
        "select count(*) from pg_roles where rolname in ('escrow_reader', 'escrow_projector')
                                   and (rolsuper or rolbypassrls)",
    )
    .await;
    assert_eq!(privileged, 0);
    let owned = count(pool, "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                              where n.nspname = 'escrow' and pg_get_userbyid(c.relowner) in ('escrow_reader', 'escrow_projector')").await;
    assert_eq!(owned, 0);
}
