//! Issue 22: the TypeScript types. The committed `clients/typescript/generated` is exactly what `escrow-ledger
//! typescript` writes from a freshly migrated database (so a migration or an API change that is not
//! regenerated fails here), and a changed column changes the types. `.ci/openapi-contract` type-checks
//! `clients/typescript` with `tsc --strict`.

mod support;

use std::path::Path;

use ledger_store::testdb::TestDb;
use support::cli;

fn generate(db: &TestDb, dir: &Path) -> (String, String) {
    let out = cli(
        db,
        "default",
        &["typescript", "--output", dir.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(dir.join("database.ts")).unwrap(),
        std::fs::read_to_string(dir.join("api.ts")).unwrap(),
    )
}

#[tokio::test]
async fn the_committed_types_are_what_the_schema_and_the_api_generate_and_follow_a_changed_column()
{
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("escrow-ts-{}", uuid::Uuid::new_v4()));
    let (database, api) = generate(&db, &dir);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript/generated");
    let regenerate = "regenerate: `escrow-ledger typescript --output clients/typescript/generated` on a freshly migrated database";
    assert!(
        std::fs::read_to_string(committed.join("database.ts")).unwrap() == database,
        "clients/typescript/generated/database.ts differs from the schema: {regenerate}"
    );
    assert!(
        std::fs::read_to_string(committed.join("api.ts")).unwrap() == api,
        "clients/typescript/generated/api.ts differs from serve's OpenAPI document: {regenerate}"
    );
    // Money as exact strings; nullable exactly where the catalog says.
    assert!(database.contains("          available: string | null;"));
    assert!(database.contains("          funded: string;"));
    assert!(api.contains("\"initiate_deposit\""));

    // A scratch migration changes a column: the types follow.
    sqlx::raw_sql(
        "alter table escrow.projects add column scratch_note text;
         alter table escrow.projects alter column funded drop not null",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (changed, _) = generate(&db, &dir);
    assert!(
        changed.contains("          scratch_note: string | null;"),
        "{changed}"
    );
    assert!(changed.contains("          funded: string | null;"));
    assert_ne!(changed, database);
    let _ = std::fs::remove_dir_all(&dir);
}
