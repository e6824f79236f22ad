//! `compare_with_log`: every read table recomputed from the log in memory (the same fold the workers use)
//! and compared row by row with what the database holds, plus the checkpoints' consistency. An empty
//! result means every projection equals the replay of the log prefix its checkpoint names.

use std::collections::BTreeMap;

use ledger_store::{EventStore, PgEventStore, READ_LIMIT_MAX};
use sqlx::PgPool;

use crate::Result;
use crate::fold::{Folder, MapSink, decode};
use crate::journal_check::JournalMoney;
pub use crate::mismatch::Mismatch;
use crate::sql::read_rows;
use crate::table::{Cell, Projection, Row, TABLES, TableSpec};

/// Differences reported per table before the rest are summarized in one line.
pub const MISMATCHES_PER_TABLE_MAX: usize = 50;

fn render_key(spec: &TableSpec, key: &[Cell]) -> String {
    spec.columns[..spec.key_len]
        .iter()
        .zip(key)
        .map(|((name, _), cell)| format!("{name}={cell}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns where `a` and `b` differ, as `name=value` lists (all columns when one side is missing).
fn render_diff(
    spec: &TableSpec,
    a: Option<&Row>,
    b: Option<&Row>,
) -> (Option<String>, Option<String>) {
    let show = |row: &Row, only: &dyn Fn(usize) -> bool| {
        spec.columns
            .iter()
            .zip(row)
            .enumerate()
            .filter(|(i, _)| only(*i))
            .map(|(_, ((name, _), cell))| format!("{name}={cell}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (a, b) {
        (Some(a), Some(b)) => {
            let differs = |i: usize| a[i] != b[i];
            (Some(show(a, &differs)), Some(show(b, &differs)))
        }
        (a, b) => (
            a.map(|r| show(r, &|i| i >= spec.key_len)),
            b.map(|r| show(r, &|i| i >= spec.key_len)),
        ),
    }
}

/// Compares one table's expected rows with the stored ones.
pub fn compare_table(
    spec: &TableSpec,
    expected: &BTreeMap<Row, Row>,
    found: &BTreeMap<Row, Row>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut extra = 0_usize;
    let keys: std::collections::BTreeSet<&Row> = expected.keys().chain(found.keys()).collect();
    for key in keys {
        let (e, f) = (expected.get(key), found.get(key));
        if e == f {
            continue;
        }
        if out.len() >= MISMATCHES_PER_TABLE_MAX {
            extra += 1;
            continue;
        }
        let (expected_text, found_text) = render_diff(spec, e, f);
        out.push(Mismatch {
            table: spec.name.to_string(),
            key: render_key(spec, key),
            expected: expected_text,
            found: found_text,
        });
    }
    if extra > 0 {
        out.push(Mismatch {
            table: spec.name.to_string(),
            key: "...".into(),
            expected: Some(format!("{extra} more differing rows")),
            found: None,
        });
    }
    out
}

/// The largest log position a stored row of `spec` reflects.
fn max_position(spec: &TableSpec, rows: &BTreeMap<Row, Row>) -> i64 {
    let columns: Vec<usize> = spec
        .columns
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| matches!(*name, "position" | "as_of_position" | "first_position"))
        .map(|(i, _)| i)
        .collect();
    rows.values()
        .flat_map(|row| columns.iter().map(|&i| row[i].as_int()))
        .max()
        .unwrap_or(0)
}

/// Recomputes every read table of `ledger` from the log and reports what differs (see module docs).
pub async fn compare_with_log(pool: &PgPool, ledger: &str) -> Result<Vec<Mismatch>> {
    let mut mismatches = Vec::new();
    for projection in Projection::ALL {
        mismatches.extend(compare_projection(pool, ledger, projection).await?);
    }
    Ok(mismatches)
}

/// [`compare_with_log`] for one projection.
pub async fn compare_projection(
    pool: &PgPool,
    ledger: &str,
    projection: Projection,
) -> Result<Vec<Mismatch>> {
    let store = PgEventStore::new(pool.clone());
    let mut tx = pool.begin().await?;
    // One snapshot for the checkpoint and the tables, read as the auditor (RLS is forced; its policy shows
    // every row, and it can write nothing).
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    sqlx::query("set local role escrow_auditor")
        .execute(&mut *tx)
        .await?;
    let checkpoint: i64 = sqlx::query_scalar(
        "select position from escrow.projection_checkpoints where ledger_id = $1 and projection = $2",
    )
    .bind(ledger)
    .bind(projection.name())
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(0);
    let mut found: Vec<BTreeMap<Row, Row>> = Vec::new();
    for spec in projection.tables() {
        let rows = read_rows(&mut tx, spec, ledger).await?;
        found.push(
            rows.into_iter()
                .map(|r| (spec.key_of(&r).to_vec(), r))
                .collect(),
        );
    }
    tx.commit().await?;
    let head = store.head_position(ledger).await?;
    let mut mismatches = Vec::new();
    let checkpoint_problem = |expected: String, found: String| Mismatch {
        table: "projection_checkpoints".into(),
        key: format!("ledger_id={ledger}, projection={projection}"),
        expected: Some(expected),
        found: Some(found),
    };
    if checkpoint > head {
        mismatches.push(checkpoint_problem(
            format!("position <= log head {head}"),
            format!("position {checkpoint} (ahead of the log)"),
        ));
    }
    for (spec, rows) in projection.tables().zip(&found) {
        let reflected = max_position(spec, rows);
        if reflected > checkpoint {
            mismatches.push(checkpoint_problem(
                format!(
                    "position >= {reflected} ({} reflects that event)",
                    spec.name
                ),
                format!("position {checkpoint} (behind its table)"),
            ));
        }
    }
    let (expected, journal) =
        replay_with_journal(&store, ledger, projection, checkpoint.min(head)).await?;
    for (spec, rows) in projection.tables().zip(&found) {
        let index = TABLES
            .iter()
            .position(|t| t.name == spec.name)
            .expect("a listed table");
        mismatches.extend(compare_table(spec, &expected.tables[index], rows));
    }
    // The fold above is the workers' own: the money columns are also checked against the journal.
    let tables: Vec<(&TableSpec, &BTreeMap<Row, Row>)> = projection.tables().zip(&found).collect();
    mismatches.extend(journal.check(projection, &tables));
    Ok(mismatches)
}

/// The rows `projection` implies for events 1..=`upto` of `ledger`, folded in memory.
pub async fn replay(
    store: &PgEventStore,
    ledger: &str,
    projection: Projection,
    upto: i64,
) -> Result<MapSink> {
    Ok(replay_with_journal(store, ledger, projection, upto)
        .await?
        .0)
}

/// [`replay`], and the journal's sums over the same events (see [`JournalMoney`]).
pub async fn replay_with_journal(
    store: &PgEventStore,
    ledger: &str,
    projection: Projection,
    upto: i64,
) -> Result<(MapSink, JournalMoney)> {
    let mut journal = JournalMoney::new();
    let mut folder = Folder::new(ledger, &[projection]);
    let mut sink = MapSink::new();
    let mut after = 0;
    while after < upto {
        let page = store
            .read_log(ledger, after, READ_LIMIT_MAX.min(upto - after))
            .await?;
        let Some(last) = page.last().and_then(|e| e.position) else {
            break;
        };
        for record in &page {
            let (stream, event) = decode(record)?;
            folder.apply(&stream, record, &event, &mut sink)?;
            journal.feed(&stream, &event);
        }
        after = last;
    }
    folder.drain(&mut sink);
    Ok((sink, journal))
}
