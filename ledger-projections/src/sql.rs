//! Rows to and from PostgreSQL, driven by the table descriptions in `table.rs`. The statement texts are
//! built only from those constant descriptions (never from values); values are bound as typed arrays.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::table::{Cell, ColType, Merge, Row, TableSpec};

/// Most rows one upsert statement carries.
pub const UPSERT_ROWS_MAX: usize = 2_000;

enum Column {
    Text(Vec<Option<String>>),
    Uuid(Vec<Option<Uuid>>),
    Int4(Vec<Option<i32>>),
    Int8(Vec<Option<i64>>),
    Numeric(Vec<Option<Decimal>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Bool(Vec<Option<bool>>),
}

impl Column {
    fn new(ty: ColType, capacity: usize) -> Column {
        match ty {
            ColType::Text => Column::Text(Vec::with_capacity(capacity)),
            ColType::Uuid => Column::Uuid(Vec::with_capacity(capacity)),
            ColType::Int4 => Column::Int4(Vec::with_capacity(capacity)),
            ColType::Int8 => Column::Int8(Vec::with_capacity(capacity)),
            ColType::Numeric => Column::Numeric(Vec::with_capacity(capacity)),
            ColType::Time => Column::Time(Vec::with_capacity(capacity)),
            ColType::Bool => Column::Bool(Vec::with_capacity(capacity)),
        }
    }

    fn push(&mut self, cell: &Cell) {
        match (self, cell) {
            (Column::Text(v), Cell::Text(x)) => v.push(Some(x.clone())),
            (Column::Text(v), _) => v.push(None),
            (Column::Uuid(v), Cell::Uuid(x)) => v.push(Some(*x)),
            (Column::Uuid(v), _) => v.push(None),
            (Column::Int4(v), Cell::Int(x)) => {
                v.push(Some(i32::try_from(*x).expect("int4 column value fits")))
            }
            (Column::Int4(v), _) => v.push(None),
            (Column::Int8(v), Cell::Int(x)) => v.push(Some(*x)),
            (Column::Int8(v), _) => v.push(None),
            (Column::Numeric(v), Cell::Num(x)) => v.push(Some(*x)),
            (Column::Numeric(v), _) => v.push(None),
            (Column::Time(v), Cell::Time(x)) => v.push(Some(*x)),
            (Column::Time(v), _) => v.push(None),
            (Column::Bool(v), Cell::Bool(x)) => v.push(Some(*x)),
            (Column::Bool(v), _) => v.push(None),
        }
    }
}

/// `insert ... select from unnest(...) on conflict ...` for `spec`, following its merge rule.
pub fn upsert_sql(spec: &TableSpec) -> String {
    let names: Vec<&str> = spec.columns.iter().map(|(n, _)| *n).collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let arrays: Vec<String> = spec
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{}[]", i + 1, ty.sql()))
        .collect();
    let key = quoted[..spec.key_len].join(", ");
    let on_conflict = match spec.merge {
        Merge::KeepFirst => "do nothing".to_string(),
        Merge::Replace => {
            let sets: Vec<String> = quoted[spec.key_len..]
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!("do update set {}", sets.join(", "))
        }
        Merge::Add => {
            let sets: Vec<String> = spec.columns[spec.key_len..]
                .iter()
                .filter_map(|(name, ty)| match (*name, *ty) {
                    ("as_of_position", _) => Some(format!(
                        "\"{name}\" = greatest(t.\"{name}\", excluded.\"{name}\")"
                    )),
                    (_, ColType::Numeric | ColType::Int8) => {
                        Some(format!("\"{name}\" = t.\"{name}\" + excluded.\"{name}\""))
                    }
                    _ => None,
                })
                .collect();
            format!("do update set {}", sets.join(", "))
        }
    };
    format!(
        "insert into escrow.{} as t ({}) select * from unnest({}) on conflict ({key}) {on_conflict}",
        spec.name,
        quoted.join(", "),
        arrays.join(", ")
    )
}

/// Writes `rows` (unique keys) into `spec`'s table, in statements of at most `UPSERT_ROWS_MAX` rows.
pub async fn write_rows(
    conn: &mut PgConnection,
    spec: &TableSpec,
    rows: &[Row],
) -> Result<(), sqlx::Error> {
    let sql = upsert_sql(spec);
    for chunk in rows.chunks(UPSERT_ROWS_MAX) {
        let mut columns: Vec<Column> = spec
            .columns
            .iter()
            .map(|(_, ty)| Column::new(*ty, chunk.len()))
            .collect();
        for row in chunk {
            for (column, cell) in columns.iter_mut().zip(row) {
                column.push(cell);
            }
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for column in columns {
            query = match column {
                Column::Text(v) => query.bind(v),
                Column::Uuid(v) => query.bind(v),
                Column::Int4(v) => query.bind(v),
                Column::Int8(v) => query.bind(v),
                Column::Numeric(v) => query.bind(v),
                Column::Time(v) => query.bind(v),
                Column::Bool(v) => query.bind(v),
            };
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `select <columns> from escrow.<table> where ledger_id = $1`.
pub fn select_sql(spec: &TableSpec) -> String {
    let names: Vec<String> = spec
        .columns
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect();
    format!(
        "select {} from escrow.{} where ledger_id = $1",
        names.join(", "),
        spec.name
    )
}

pub fn decode_row(spec: &TableSpec, row: &PgRow) -> Result<Row, sqlx::Error> {
    let mut out = Vec::with_capacity(spec.columns.len());
    for (i, (_, ty)) in spec.columns.iter().enumerate() {
        let cell = match ty {
            ColType::Text => row.try_get::<Option<String>, _>(i)?.map(Cell::Text),
            ColType::Uuid => row.try_get::<Option<Uuid>, _>(i)?.map(Cell::Uuid),
            ColType::Int4 => row
                .try_get::<Option<i32>, _>(i)?
                .map(|v| Cell::Int(i64::from(v))),
            ColType::Int8 => row.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
            ColType::Numeric => row.try_get::<Option<Decimal>, _>(i)?.map(Cell::num),
            ColType::Time => row.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Cell::time),
            ColType::Bool => row.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

/// Every row of `spec`'s table for `ledger`.
pub async fn read_rows(
    conn: &mut PgConnection,
    spec: &TableSpec,
    ledger: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(select_sql(spec)))
        .bind(ledger)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| decode_row(spec, r)).collect()
}

/// Appends `row` to a COPY text-format buffer.
pub fn copy_line(out: &mut String, row: &[Cell]) {
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        cell.write_copy(out);
    }
    out.push('\n');
}

/// `copy escrow.<table><suffix> (<columns>) from stdin`.
pub fn copy_sql(spec: &TableSpec, suffix: &str) -> String {
    let names: Vec<String> = spec
        .columns
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect();
    format!(
        "copy escrow.{}{suffix} ({}) from stdin",
        spec.name,
        names.join(", ")
    )
}
