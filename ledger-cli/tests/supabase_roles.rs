//! Issue 22, finding 1: the read tables under Supabase's own roles. Supabase creates `anon`, `authenticated`
//! and `service_role` NOLOGIN NOINHERIT (`service_role` BYPASSRLS) and `authenticator` LOGIN NOINHERIT, member
//! of the three; PostgREST logs in as `authenticator` and, per request, `set local role authenticated` with
//! the JWT's claims in `request.jwt.claims` (and the older `request.jwt.claim.*`). With NOINHERIT, a grant of
//! `escrow_reader` to `authenticated` gives it nothing: every select answered "permission denied".
//!
//! Roles are cluster-wide: this test makes them as Supabase does (creating what is missing, then setting
//! Supabase's attributes), so a role an older run created with other attributes is corrected.

mod support;

use std::collections::BTreeMap;

use ledger_store::testdb::TestDb;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::{as_authenticator, gateway, line, setup, supabase_roles, usd, user};
use uuid::Uuid;

/// What PostgREST does for one request: `role` and the claims local to a transaction, then `query`.
async fn postgrest(
    pool: &PgPool,
    role: &str,
    claims: &serde_json::Value,
    query: &str,
) -> Result<Vec<(String, Decimal)>, String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("set local role {role}")))
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(
        "select set_config('request.jwt.claims', $1, true), set_config('request.jwt.claim.sub', $2, true),
                set_config('request.jwt.claim.role', $3, true)",
    )
    .bind(claims.to_string())
    .bind(claims["sub"].as_str().unwrap_or(""))
    .bind(role)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let rows: Vec<(String, Decimal)> = sqlx::query_as(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    tx.rollback().await.map_err(|e| e.to_string())?;
    Ok(rows)
}

/// A buyer with 150.00 available after depositing 250.00 and funding 100.00, projected.
async fn buyer_with_money(db: &TestDb) -> Uuid {
    let (b, s, p, d) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    setup(
        db,
        "default",
        &[
            line(
                user(b),
                json!({"type": "initiate_deposit", "payment_id": d, "amount": usd("250.00"), "gateway": "stripe", "fund": null}),
                None,
            ),
            line(
                gateway("stripe"),
                json!({"type": "confirm_deposit", "payment_id": d, "amount": usd("250.00"), "gateway_fee": null, "occurred_at": null}),
                None,
            ),
            line(
                user(b),
                json!({"type": "create_project", "project_id": p, "buyer": b, "seller": s, "currency": "USD",
                       "milestones": [usd("100.00")], "fees": {"commission_rate": "0", "buyer_fee_rate": "0"}}),
                None,
            ),
            line(
                user(b),
                json!({"type": "submit_project_for_agreement", "project_id": p}),
                None,
            ),
            line(
                user(s),
                json!({"type": "agree_to_project", "project_id": p}),
                None,
            ),
            line(
                user(b),
                json!({"type": "fund_milestone", "project_id": p, "milestone": 1}),
                None,
            ),
        ],
    );
    let out = support::cli(db, "default", &["projections", "run", "--until-caught-up"]);
    assert!(out.status.success());
    b
}

async fn reads_the_way_postgrest_does(db: &TestDb) {
    sqlx::raw_sql("grant usage on schema escrow to anon, authenticated, service_role")
        .execute(&db.pool)
        .await
        .unwrap();
    let buyer = buyer_with_money(db).await;
    let api = PgPoolOptions::new()
        .max_connections(1)
        .connect(&as_authenticator(db))
        .await
        .unwrap();
    let balances = "select currency::text, available from escrow.my_balances order by 1";
    let claims = |sub: Uuid, ledger: &str| json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "app_metadata": {"ledger": ledger}});
    let seen = postgrest(&api, "authenticated", &claims(buyer, "default"), balances)
        .await
        .unwrap_or_else(|e| panic!("the buyer reads escrow.my_balances as authenticated: {e}"));
    assert_eq!(
        seen,
        [("USD".to_string(), Decimal::new(15000, 2))],
        "the buyer's wallet as the log has it"
    );
    // A stranger, the buyer's JWT for another ledger: nothing.
    let stranger = postgrest(
        &api,
        "authenticated",
        &claims(Uuid::new_v4(), "default"),
        balances,
    )
    .await
    .unwrap();
    assert!(stranger.is_empty(), "{stranger:?}");
    let elsewhere = postgrest(&api, "authenticated", &claims(buyer, "acme"), balances)
        .await
        .unwrap();
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    // anon and service_role (BYPASSRLS: it would see every ledger) get no grant at all.
    for role in ["anon", "service_role"] {
        let refused = postgrest(&api, role, &json!({"role": role}), balances).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("permission denied")),
            "{role} reads escrow.my_balances: {refused:?}"
        );
    }
    // Supabase's attributes are left as Supabase made them.
    let attributes: BTreeMap<String, (bool, bool, bool)> =
        sqlx::query_as::<_, (String, bool, bool, bool)>(
            "select rolname::text, rolinherit, rolcanlogin, rolbypassrls from pg_roles
          where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(r, i, l, b)| (r, (i, l, b)))
        .collect();
    assert_eq!(attributes["authenticated"], (false, false, false));
    assert_eq!(attributes["service_role"], (false, false, true));
    assert_eq!(attributes["authenticator"], (false, true, false));
}

#[tokio::test]
async fn supabase_roles_made_before_the_migrations_read_their_rows_the_postgrest_way() {
    let db = TestDb::empty().await;
    supabase_roles(&db.pool).await;
    ledger_store::migrate(&db.pool).await.unwrap();
    reads_the_way_postgrest_does(&db).await;
}

#[tokio::test]
async fn supabase_roles_made_after_the_migrations_read_their_rows_once_migrate_runs_again() {
    let db = TestDb::empty().await;
    ledger_store::migrate(&db.pool).await.unwrap();
    supabase_roles(&db.pool).await;
    ledger_store::migrate(&db.pool).await.unwrap();
    reads_the_way_postgrest_does(&db).await;
}

/// Every process that starts migrates (three `serve` replicas and a projection worker at once, in the chaos
/// test): with Supabase's roles present, concurrent migrations must not fail on each other's grants
/// ("tuple concurrently updated").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_with_supabase_roles_present_all_succeed() {
    let db = TestDb::empty().await;
    supabase_roles(&db.pool).await;
    for round in 0..3 {
        let runs: Vec<_> = (0..6)
            .map(|_| {
                let url = db.url().to_string();
                tokio::spawn(async move {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    ledger_store::migrate(&pool).await
                })
            })
            .collect();
        for run in runs {
            run.await
                .unwrap()
                .unwrap_or_else(|e| panic!("a concurrent migrate failed (round {round}): {e}"));
        }
    }
}
