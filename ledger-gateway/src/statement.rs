//! Gateway statements read into [`Movement`]s: the generic CSV, Stripe's balance report and Paystack's
//! settlement listings. Pure: bytes in, lines out; amounts exact (never through `f64`).
//!
//! - **generic** CSV, header `payment_reference,kind,gross,fee,currency,occurred_at` (any column order):
//!   `kind` is deposit, refund, payout, chargeback or settlement; `gross` and `fee` are decimal strings in the
//!   currency's precision (`fee` may be empty: zero); `occurred_at` is RFC 3339.
//! - **stripe**: the Balance report's itemized CSV (`balance_change_from_activity.itemized.1`..`.3`, "Balance
//!   report type", <https://docs.stripe.com/reports/report-types/balance>): columns found by header name:
//!   `created_utc` (or `created`), `currency` (lower case), `gross` and `fee` ("expressed in major units of the
//!   currency"; refunds, disputes and payouts are negative, taken as magnitudes), `reporting_category`,
//!   `source_id`, and the metadata columns the report adds on request, `payment_metadata[payment_reference]`
//!   and `refund_metadata[payment_reference]` (the key our workers set on every Stripe object, see
//!   `adapters`). Categories: `charge` deposit, `refund` refund, `dispute` chargeback, `payout` a payout
//!   when it carries our reference, else a settlement to the platform's bank named by `source_id` (`po_...`).
//!   Other categories (fees billed separately, adjustments, ...) are listed as skipped, never matched.
//! - **paystack**: the JSON the Settlements API returns ("Settlements", <https://paystack.com/docs/api/settlement/>):
//!   `GET /settlement` (each item `id`, `status`, `currency`, `total_amount`, `total_fees`, `settlement_date`:
//!   a settlement of `total_amount` to the bank) and `GET /settlement/:id/transactions` (each item `reference`,
//!   `status`, `amount`, `fees`, `currency`, `paid_at`: a charge, i.e. a deposit); amounts in subunits
//!   (integers). A file holds one response (`{"status": true, "data": [...]}`) or an array of responses
//!   (pages). Items whose `status` is not `success` are skipped.

use chrono::{DateTime, NaiveDateTime, Utc};
use ledger_core::{Currency, Money};

use crate::reconcile::{Movement, MovementKind};

/// Largest statement file read.
pub const STATEMENT_BYTES_MAX: usize = 64 << 20;
/// Most lines one statement may hold.
pub const STATEMENT_LINES_MAX: usize = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementFormat {
    Generic,
    Stripe,
    Paystack,
}

impl StatementFormat {
    pub fn parse(text: &str) -> Option<StatementFormat> {
        match text {
            "generic" | "csv" => Some(StatementFormat::Generic),
            "stripe" => Some(StatementFormat::Stripe),
            "paystack" => Some(StatementFormat::Paystack),
            _ => None,
        }
    }
}

/// Why a statement cannot be read: the line (1-based, header = 1) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("statement is {0} bytes, over the {STATEMENT_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("statement has more than {STATEMENT_LINES_MAX} lines")]
    TooManyLines,
    #[error("statement is not UTF-8")]
    NotUtf8,
    #[error("the header lacks the column {0:?}")]
    MissingColumn(String),
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("not a Paystack settlements response: {0}")]
    Json(String),
}

/// A statement read: its lines and what was deliberately left out (line number and why).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statement {
    pub lines: Vec<Movement>,
    pub skipped: Vec<(usize, String)>,
}

pub fn parse(format: StatementFormat, bytes: &[u8]) -> Result<Statement, StatementError> {
    if bytes.len() > STATEMENT_BYTES_MAX {
        return Err(StatementError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| StatementError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        StatementFormat::Generic => generic(text),
        StatementFormat::Stripe => stripe(text),
        StatementFormat::Paystack => paystack(text),
    }
}

/// RFC 4180 records: fields separated by commas, optionally quoted (`""` inside quotes is one quote),
/// records by LF or CRLF. Blank records are dropped. Each record comes with its 1-based line number.
pub fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, StatementError> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                push_record(&mut records, record_line, std::mem::take(&mut record))?;
                line += 1;
                record_line = line;
            }
            (false, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err(StatementError::Line {
            line: record_line,
            problem: "a quoted field is not closed".into(),
        });
    }
    record.push(field);
    push_record(&mut records, record_line, record)?;
    Ok(records)
}

fn push_record(
    records: &mut Vec<(usize, Vec<String>)>,
    line: usize,
    record: Vec<String>,
) -> Result<(), StatementError> {
    if record.iter().all(|f| f.trim().is_empty()) {
        return Ok(());
    }
    if records.len() > STATEMENT_LINES_MAX {
        return Err(StatementError::TooManyLines);
    }
    records.push((line, record));
    Ok(())
}

/// A CSV's header: column name -> index.
struct Header(Vec<String>);

impl Header {
    fn index(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|c| c.trim() == name)
    }
    fn require(&self, name: &str) -> Result<usize, StatementError> {
        self.index(name)
            .ok_or_else(|| StatementError::MissingColumn(name.to_string()))
    }
}

fn field(record: &[String], index: usize) -> &str {
    record.get(index).map(|f| f.trim()).unwrap_or("")
}

fn line_error(line: usize, problem: impl Into<String>) -> StatementError {
    StatementError::Line {
        line,
        problem: problem.into(),
    }
}

fn currency(line: usize, code: &str) -> Result<Currency, StatementError> {
    Currency::from_code(&code.to_ascii_uppercase())
        .map_err(|e| line_error(line, format!("currency {code:?}: {e}")))
}

/// A decimal amount in major units, exact at the currency's precision; a leading minus is dropped (statements
/// sign money going out; the kind says the direction). Empty is zero.
fn major(line: usize, what: &str, text: &str, currency: Currency) -> Result<Money, StatementError> {
    let magnitude = text.strip_prefix('-').unwrap_or(text);
    if magnitude.is_empty() {
        return Ok(Money::zero(currency));
    }
    Money::parse(magnitude, currency).map_err(|e| line_error(line, format!("{what} {text:?}: {e}")))
}

fn generic(text: &str) -> Result<Statement, StatementError> {
    let mut records = csv_records(text)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Err(StatementError::MissingColumn("payment_reference".into()));
    };
    let header = Header(header);
    let [reference, kind, gross, fee, code, occurred_at] = [
        "payment_reference",
        "kind",
        "gross",
        "fee",
        "currency",
        "occurred_at",
    ]
    .map(|name| header.require(name));
    let (reference, kind, gross, fee, code, occurred_at) =
        (reference?, kind?, gross?, fee?, code?, occurred_at?);
    let mut statement = Statement::default();
    for (line, record) in records {
        let currency = currency(line, field(&record, code))?;
        let kind_text = field(&record, kind);
        let kind = MovementKind::parse(kind_text).ok_or_else(|| {
            line_error(
                line,
                format!(
                    "kind {kind_text:?} is not deposit, refund, payout, chargeback or settlement"
                ),
            )
        })?;
        let reference = field(&record, reference);
        if reference.is_empty() {
            return Err(line_error(line, "payment_reference is empty"));
        }
        let time = field(&record, occurred_at);
        let occurred_at = DateTime::parse_from_rfc3339(time)
            .map_err(|e| line_error(line, format!("occurred_at {time:?}: {e}")))?
            .with_timezone(&Utc);
        statement.lines.push(Movement {
            reference: reference.to_string(),
            kind,
            gross: major(line, "gross", field(&record, gross), currency)?,
            fee: major(line, "fee", field(&record, fee), currency)?,
            occurred_at,
        });
    }
    Ok(statement)
}

/// Stripe's report times: `2026-01-05 10:00:00` (UTC for `created_utc`), or RFC 3339.
fn stripe_time(line: usize, text: &str) -> Result<DateTime<Utc>, StatementError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc())
        .map_err(|e| line_error(line, format!("time {text:?}: {e}")))
}

fn stripe(text: &str) -> Result<Statement, StatementError> {
    let mut records = csv_records(text)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Err(StatementError::MissingColumn("reporting_category".into()));
    };
    let header = Header(header);
    let created = header
        .index("created_utc")
        .or_else(|| header.index("created"))
        .ok_or_else(|| StatementError::MissingColumn("created_utc".into()))?;
    let [code, gross, fee, category, source] = [
        "currency",
        "gross",
        "fee",
        "reporting_category",
        "source_id",
    ]
    .map(|n| header.require(n));
    let (code, gross, fee, category, source) = (code?, gross?, fee?, category?, source?);
    let references: Vec<usize> = [
        "payment_metadata[payment_reference]",
        "refund_metadata[payment_reference]",
    ]
    .iter()
    .filter_map(|n| header.index(n))
    .collect();
    let mut statement = Statement::default();
    for (line, record) in records {
        let ours = references
            .iter()
            .map(|i| field(&record, *i))
            .find(|r| !r.is_empty());
        let category_text = field(&record, category);
        let (kind, reference) = match (category_text, ours) {
            ("charge", Some(r)) => (MovementKind::Deposit, r),
            ("refund", Some(r)) => (MovementKind::Refund, r),
            ("dispute", Some(r)) => (MovementKind::Chargeback, r),
            ("payout", Some(r)) => (MovementKind::Payout, r),
            ("payout", None) => (MovementKind::Settlement, field(&record, source)),
            (other, _) => {
                statement.skipped.push((
                    line,
                    format!("reporting_category {other:?} without our payment_reference"),
                ));
                continue;
            }
        };
        if reference.is_empty() {
            return Err(line_error(line, "source_id is empty"));
        }
        let currency = currency(line, field(&record, code))?;
        statement.lines.push(Movement {
            reference: reference.to_string(),
            kind,
            gross: major(line, "gross", field(&record, gross), currency)?,
            fee: major(line, "fee", field(&record, fee), currency)?,
            occurred_at: stripe_time(line, field(&record, created))?,
        });
    }
    Ok(statement)
}

fn paystack(text: &str) -> Result<Statement, StatementError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StatementError::Json(e.to_string()))?;
    let responses = match json {
        serde_json::Value::Array(pages) => pages,
        single => vec![single],
    };
    let mut statement = Statement::default();
    let mut item_no = 0usize;
    for response in responses {
        let items = response
            .get("data")
            .and_then(|d| d.as_array())
            .ok_or_else(|| StatementError::Json("a response without a `data` array".into()))?;
        for item in items {
            item_no += 1;
            if item_no > STATEMENT_LINES_MAX {
                return Err(StatementError::TooManyLines);
            }
            paystack_item(item_no, item, &mut statement)?;
        }
    }
    Ok(statement)
}

fn paystack_item(
    item_no: usize,
    item: &serde_json::Value,
    statement: &mut Statement,
) -> Result<(), StatementError> {
    let text = |key: &str| item.get(key).and_then(|v| v.as_str());
    let status = text("status").unwrap_or("");
    if status != "success" {
        statement
            .skipped
            .push((item_no, format!("status {status:?} is not success")));
        return Ok(());
    }
    let currency = currency(item_no, text("currency").unwrap_or(""))?;
    let subunits = |key: &str| -> Result<Money, StatementError> {
        match item.get(key) {
            None | Some(serde_json::Value::Null) => Ok(Money::zero(currency)),
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .filter(|v| *v >= 0)
                .map(|v| Money::from_minor(v, currency))
                .ok_or_else(|| {
                    line_error(
                        item_no,
                        format!("{key} {n} is not a whole number of subunits"),
                    )
                }),
            Some(other) => Err(line_error(
                item_no,
                format!("{key} {other} is not a number"),
            )),
        }
    };
    let time = |keys: &[&str]| -> Result<DateTime<Utc>, StatementError> {
        let value = keys
            .iter()
            .find_map(|k| text(k))
            .ok_or_else(|| line_error(item_no, format!("none of {keys:?}")))?;
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| line_error(item_no, format!("time {value:?}: {e}")))
    };
    let movement = if item.get("total_amount").is_some() {
        let id = match item.get("id") {
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err(line_error(item_no, "a settlement without an id")),
        };
        Movement {
            reference: id,
            kind: MovementKind::Settlement,
            gross: subunits("total_amount")?,
            fee: Money::zero(currency),
            occurred_at: time(&["settlement_date", "createdAt"])?,
        }
    } else {
        let reference = text("reference")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| line_error(item_no, "a transaction without a reference"))?;
        Movement {
            reference: reference.to_string(),
            kind: MovementKind::Deposit,
            gross: subunits("amount")?,
            fee: subunits("fees")?,
            occurred_at: time(&["paid_at", "paidAt", "createdAt", "created_at"])?,
        }
    };
    statement.lines.push(movement);
    Ok(())
}
