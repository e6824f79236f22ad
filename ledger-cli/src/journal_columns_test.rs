//! Every money column of every read table is checked against the journal (issue 19, finding 5): a history
//! from the scenario generator is folded as the workers fold it, then one money column of one row is changed
//! as a fold bug would change it (the row-by-row comparison of `verify` replays that same fold, so only the
//! journal can tell), and `JournalMoney::check` must name that table. Table-driven over the columns, and the
//! list is checked against the tables' numeric columns: a new money column without a check fails here.

use std::collections::{BTreeMap, HashMap};

use ledger_core::{Change, StreamId};
use ledger_projections::fold::{Folder, MapSink};
use ledger_projections::journal_check::JournalMoney;
use ledger_projections::table::{Cell, ColType, Projection, Row, TABLES, TableSpec};
use ledger_store::{EventMetadata, RecordedEvent};
use rust_decimal::Decimal;

use crate::scenario::Generator;

/// Numeric columns that are terms (what was agreed or proposed), not money that moved: compared with the
/// replay row by row, never with the journal.
const TERMS: [(&str, &str); 6] = [
    ("quotes", "amount"),
    ("projects", "total_amount"),
    ("projects", "commission_rate"),
    ("projects", "buyer_fee_rate"),
    ("milestones", "amount"),
    ("disputes", "proposed_release"),
];

/// Every money column, each compared with the journal.
const MONEY: [(&str, &str); 22] = [
    ("projects", "funded"),
    ("projects", "released"),
    ("projects", "refunded"),
    ("projects", "held"),
    ("milestones", "buyer_fee"),
    ("milestones", "funded"),
    ("milestones", "released"),
    ("milestones", "refunded"),
    ("milestones", "charged_back"),
    ("milestones", "held"),
    ("disputes", "held"),
    ("disputes", "released"),
    ("disputes", "refunded"),
    ("transactions", "amount"),
    ("transactions", "fee"),
    ("journal_entries", "total"),
    ("postings", "amount"),
    ("account_balances", "debits"),
    ("account_balances", "credits"),
    ("account_balances", "balance"),
    ("account_balances", "pending"),
    ("account_balances", "available"),
];

const PROJECTIONS: [Projection; 3] = [
    Projection::Escrow,
    Projection::Payments,
    Projection::Journal,
];

fn history() -> Vec<Change> {
    let mut generator = Generator::new(19, 12, 6);
    for _ in 0..60 {
        generator.project();
    }
    generator.ledger.take_log()
}

fn fold(changes: &[Change]) -> (MapSink, JournalMoney) {
    let mut folder = Folder::new("default", &PROJECTIONS);
    let mut sink = MapSink::new();
    let mut journal = JournalMoney::new();
    let mut versions: HashMap<StreamId, i64> = HashMap::new();
    let at = chrono::Utc::now();
    for (i, change) in changes.iter().enumerate() {
        let version = versions.entry(change.stream).or_insert(0);
        *version += 1;
        let (event_type, payload) = change.event.to_stored();
        let record = RecordedEvent {
            ledger_id: "default".into(),
            stream_id: change.stream.to_string(),
            stream_version: *version,
            event_id: change.event_id,
            event_type,
            schema_version: ledger_core::engine::SCHEMA_VERSION,
            payload,
            metadata: EventMetadata::default(),
            recorded_at: at,
            position: Some(i as i64 + 1),
            sequenced_at: Some(at),
        };
        folder
            .apply(&change.stream, &record, &change.event, &mut sink)
            .expect("the fold takes the engine's history");
        journal.feed(&change.stream, &change.event);
    }
    folder.drain(&mut sink);
    (sink, journal)
}

fn table_index(name: &str) -> usize {
    TABLES.iter().position(|t| t.name == name).expect("a table")
}

fn check(
    journal: &JournalMoney,
    tables: &[BTreeMap<Row, Row>],
    projection: Projection,
) -> Vec<String> {
    let found: Vec<(&TableSpec, &BTreeMap<Row, Row>)> = projection
        .tables()
        .map(|spec| (spec, &tables[table_index(spec.name)]))
        .collect();
    journal
        .check(projection, &found)
        .into_iter()
        .map(|m| m.to_string())
        .collect()
}

#[test]
fn every_numeric_column_is_either_money_checked_against_the_journal_or_terms() {
    let numeric: Vec<(&str, &str)> = TABLES
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|(_, ty)| matches!(ty, ColType::Numeric))
                .map(move |(c, _)| (t.name, *c))
        })
        .collect();
    let mut classified: Vec<(&str, &str)> = MONEY.iter().chain(&TERMS).copied().collect();
    let mut numeric_sorted = numeric.clone();
    classified.sort();
    numeric_sorted.sort();
    assert_eq!(numeric_sorted, classified, "classify every numeric column");
}

#[test]
fn a_fold_bug_in_any_money_column_is_named_by_the_journal_check() {
    let (sink, journal) = fold(&history());
    for projection in PROJECTIONS {
        let clean = check(&journal, &sink.tables, projection);
        assert!(
            clean.is_empty(),
            "the true fold disagrees with the journal: {clean:#?}"
        );
    }
    let cent = Decimal::new(1, 2);
    for (table, column) in MONEY {
        let index = table_index(table);
        let spec = &TABLES[index];
        let col = spec
            .columns
            .iter()
            .position(|(c, _)| *c == column)
            .expect("a column");
        // A row where the column holds money (not null, not zero where there is such a row).
        let rows = &sink.tables[index];
        let key = rows
            .iter()
            .find(|(_, r)| matches!(r[col], Cell::Num(v) if !v.is_zero()))
            .or_else(|| rows.iter().find(|(_, r)| matches!(r[col], Cell::Num(_))))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| panic!("the history has no {table} row with {column}"));
        let mut tables = sink.tables.clone();
        let row = tables[index].get_mut(&key).expect("the row");
        let Cell::Num(value) = row[col] else {
            unreachable!()
        };
        row[col] = Cell::Num(value + cent);
        let found = check(&journal, &tables, spec.projection);
        assert!(
            found.iter().any(|m| m.starts_with(table)),
            "a fold bug in {table}.{column} (+0.01) is not named: {found:#?}"
        );
    }
}
