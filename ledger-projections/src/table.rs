//! The read tables as data: columns, key, which projection owns them, and how a row that already exists
//! is merged (`Merge`). One description drives the SQL writer (upsert, COPY), the reader used by
//! `verify`, and the in-memory fold, so the three cannot disagree about a table's shape.

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use std::fmt::Write;
use uuid::Uuid;

/// One value of a row. Times are kept at PostgreSQL's precision (microseconds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    Null,
    Text(String),
    Uuid(Uuid),
    Int(i64),
    Num(Decimal),
    Time(DateTime<Utc>),
    Bool(bool),
}

impl Cell {
    pub fn time(at: DateTime<Utc>) -> Cell {
        Cell::Time(at.trunc_subsecs(6))
    }

    pub fn opt_time(at: Option<DateTime<Utc>>) -> Cell {
        at.map_or(Cell::Null, Cell::time)
    }

    pub fn opt_uuid(id: Option<Uuid>) -> Cell {
        id.map_or(Cell::Null, Cell::Uuid)
    }

    pub fn text(text: impl Into<String>) -> Cell {
        Cell::Text(text.into())
    }

    /// A numeric cell; 12.30 and 12.3 compare equal (as in PostgreSQL) and keep their scale when stored.
    pub fn num(value: Decimal) -> Cell {
        Cell::Num(value)
    }

    pub fn as_num(&self) -> Decimal {
        match self {
            Cell::Num(value) => *value,
            _ => Decimal::ZERO,
        }
    }

    pub fn as_int(&self) -> i64 {
        match self {
            Cell::Int(value) => *value,
            _ => 0,
        }
    }

    /// PostgreSQL COPY text format.
    pub fn write_copy(&self, out: &mut String) {
        match self {
            Cell::Null => out.push_str("\\N"),
            Cell::Text(text) => {
                for ch in text.chars() {
                    match ch {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        _ => out.push(ch),
                    }
                }
            }
            Cell::Uuid(id) => {
                let _ = write!(out, "{id}");
            }
            Cell::Int(value) => {
                let _ = write!(out, "{value}");
            }
            Cell::Num(value) => {
                let _ = write!(out, "{value}");
            }
            Cell::Time(at) => {
                let _ = write!(out, "{}", at.format("%Y-%m-%d %H:%M:%S%.6f+00"));
            }
            Cell::Bool(value) => out.push(if *value { 't' } else { 'f' }),
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("null"),
            Cell::Text(text) => write!(f, "{text:?}"),
            Cell::Uuid(id) => write!(f, "{id}"),
            Cell::Int(value) => write!(f, "{value}"),
            Cell::Num(value) => write!(f, "{value}"),
            Cell::Time(at) => write!(f, "{}", at.to_rfc3339()),
            Cell::Bool(value) => write!(f, "{value}"),
        }
    }
}

pub type Row = Vec<Cell>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Text,
    Uuid,
    Int4,
    Int8,
    Numeric,
    Time,
    Bool,
}

impl ColType {
    pub fn sql(self) -> &'static str {
        match self {
            ColType::Text => "text",
            ColType::Uuid => "uuid",
            ColType::Int4 => "int4",
            ColType::Int8 => "int8",
            ColType::Numeric => "numeric",
            ColType::Time => "timestamptz",
            ColType::Bool => "bool",
        }
    }
}

/// What writing a row whose key exists does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The new row replaces the old one (entities folded from their streams; immutable facts).
    Replace,
    /// The first row stays (an account is opened once, at its first posting).
    KeepFirst,
    /// Numeric and count columns add up; `as_of_position` takes the larger (balances).
    Add,
}

/// The named projections. Each owns a set of tables and has its own checkpoint per ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Marketplace,
    Escrow,
    Payments,
    Journal,
    Audit,
    Deadlines,
}

impl Projection {
    pub const ALL: [Projection; 6] = [
        Projection::Marketplace,
        Projection::Escrow,
        Projection::Payments,
        Projection::Journal,
        Projection::Audit,
        Projection::Deadlines,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Projection::Marketplace => "marketplace",
            Projection::Escrow => "escrow",
            Projection::Payments => "payments",
            Projection::Journal => "journal",
            Projection::Audit => "audit",
            Projection::Deadlines => "deadlines",
        }
    }

    pub fn from_name(name: &str) -> Option<Projection> {
        Projection::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn tables(self) -> impl Iterator<Item = &'static TableSpec> {
        TABLES.iter().filter(move |t| t.projection == self)
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug)]
pub struct TableSpec {
    pub name: &'static str,
    pub projection: Projection,
    /// Columns in table order; the first `key_len` are the primary key (ledger_id first).
    pub columns: &'static [(&'static str, ColType)],
    pub key_len: usize,
    pub merge: Merge,
}

impl TableSpec {
    pub fn column_index(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|(c, _)| *c == name)
            .unwrap_or_else(|| panic!("{} has no column {name}", self.name))
    }

    pub fn key_of<'a>(&self, row: &'a [Cell]) -> &'a [Cell] {
        &row[..self.key_len]
    }

    /// Merges `new` into `old` the way the SQL writer does on a key conflict.
    pub fn merge_into(&self, old: &mut Row, new: Row) {
        match self.merge {
            Merge::Replace => *old = new,
            Merge::KeepFirst => {}
            Merge::Add => {
                for (i, (name, ty)) in self.columns.iter().enumerate().skip(self.key_len) {
                    match (*ty, *name) {
                        (_, "as_of_position") => {
                            old[i] = Cell::Int(old[i].as_int().max(new[i].as_int()))
                        }
                        // Checked: an impossible sum becomes NULL, which the NOT NULL columns refuse (the
                        // batch or rebuild fails) instead of a wrapped or panicking total.
                        (_, _) if old[i] == Cell::Null => {}
                        (ColType::Numeric, _) => {
                            old[i] = old[i]
                                .as_num()
                                .checked_add(new[i].as_num())
                                .map_or(Cell::Null, Cell::num)
                        }
                        (ColType::Int8, _) => {
                            old[i] = old[i]
                                .as_int()
                                .checked_add(new[i].as_int())
                                .map_or(Cell::Null, Cell::Int)
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

use ColType::{Bool, Int4, Int8, Numeric, Text, Time, Uuid as UuidT};

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "service_requests",
        projection: Projection::Marketplace,
        columns: &[
            ("ledger_id", Text),
            ("request_id", UuidT),
            ("client_id", UuidT),
            ("title", Text),
            ("currency", Text),
            ("status", Text),
            ("expires_at", Time),
            ("accepted_quote_id", UuidT),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "quotes",
        projection: Projection::Marketplace,
        columns: &[
            ("ledger_id", Text),
            ("quote_id", UuidT),
            ("request_id", UuidT),
            ("provider_id", UuidT),
            ("client_id", UuidT),
            ("amount", Numeric),
            ("currency", Text),
            ("status", Text),
            ("valid_until", Time),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "bookings",
        projection: Projection::Marketplace,
        columns: &[
            ("ledger_id", Text),
            ("booking_id", UuidT),
            ("project_id", UuidT),
            ("quote_id", UuidT),
            ("client_id", UuidT),
            ("provider_id", UuidT),
            ("status", Text),
            ("delivered_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "projects",
        projection: Projection::Escrow,
        columns: &[
            ("ledger_id", Text),
            ("project_id", UuidT),
            ("creator_id", UuidT),
            ("buyer_id", UuidT),
            ("seller_id", UuidT),
            ("booking_id", UuidT),
            ("currency", Text),
            ("status", Text),
            ("milestone_count", Int4),
            ("total_amount", Numeric),
            ("funded", Numeric),
            ("released", Numeric),
            ("refunded", Numeric),
            ("held", Numeric),
            ("commission_rate", Numeric),
            ("buyer_fee_rate", Numeric),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "milestones",
        projection: Projection::Escrow,
        columns: &[
            ("ledger_id", Text),
            ("project_id", UuidT),
            ("milestone", Int4),
            ("creator_id", UuidT),
            ("buyer_id", UuidT),
            ("seller_id", UuidT),
            ("currency", Text),
            ("amount", Numeric),
            ("buyer_fee", Numeric),
            ("status", Text),
            ("funded", Numeric),
            ("released", Numeric),
            ("refunded", Numeric),
            ("charged_back", Numeric),
            ("held", Numeric),
            ("submitted_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 3,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "disputes",
        projection: Projection::Escrow,
        columns: &[
            ("ledger_id", Text),
            ("dispute_id", UuidT),
            ("project_id", UuidT),
            ("milestone", Int4),
            ("opened_by", UuidT),
            ("counterparty", UuidT),
            ("creator_id", UuidT),
            ("buyer_id", UuidT),
            ("seller_id", UuidT),
            ("status", Text),
            ("currency", Text),
            ("held", Numeric),
            ("proposed_release", Numeric),
            ("released", Numeric),
            ("refunded", Numeric),
            ("reason", Text),
            ("respond_by", Time),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "transactions",
        projection: Projection::Payments,
        columns: &[
            ("ledger_id", Text),
            ("transaction_id", UuidT),
            ("type", Text),
            ("status", Text),
            ("user_id", UuidT),
            ("project_id", UuidT),
            ("milestone", Int4),
            ("creator_id", UuidT),
            ("buyer_id", UuidT),
            ("seller_id", UuidT),
            ("amount", Numeric),
            ("fee", Numeric),
            ("currency", Text),
            ("gateway", Text),
            ("source_id", UuidT),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "accounts",
        projection: Projection::Journal,
        columns: &[
            ("ledger_id", Text),
            ("account", Text),
            ("kind", Text),
            ("normal_side", Text),
            ("constrained", Bool),
            ("owner_id", UuidT),
            ("first_position", Int8),
            ("opened_at", Time),
        ],
        key_len: 2,
        merge: Merge::KeepFirst,
    },
    TableSpec {
        name: "journal_entries",
        projection: Projection::Journal,
        columns: &[
            ("ledger_id", Text),
            ("entry_id", UuidT),
            ("event_id", UuidT),
            ("position", Int8),
            ("stream_id", Text),
            ("event_type", Text),
            ("currency", Text),
            ("total", Numeric),
            ("effective_at", Time),
            ("recorded_at", Time),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "postings",
        projection: Projection::Journal,
        columns: &[
            ("ledger_id", Text),
            ("entry_id", UuidT),
            ("posting_no", Int4),
            ("account", Text),
            ("owner_id", UuidT),
            ("currency", Text),
            ("side", Text),
            ("amount", Numeric),
            ("position", Int8),
            ("effective_at", Time),
        ],
        key_len: 3,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "account_balances",
        projection: Projection::Journal,
        columns: &[
            ("ledger_id", Text),
            ("account", Text),
            ("currency", Text),
            ("owner_id", UuidT),
            ("debits", Numeric),
            ("credits", Numeric),
            ("balance", Numeric),
            ("pending", Numeric),
            ("available", Numeric),
            ("postings", Int8),
            ("as_of_position", Int8),
        ],
        key_len: 3,
        merge: Merge::Add,
    },
    TableSpec {
        name: "audit_log",
        projection: Projection::Audit,
        columns: &[
            ("ledger_id", Text),
            ("position", Int8),
            ("event_id", UuidT),
            ("stream_id", Text),
            ("stream_version", Int8),
            ("event_type", Text),
            ("actor", Text),
            ("correlation_id", UuidT),
            ("causation_id", UuidT),
            ("idempotency_key", Text),
            ("recorded_at", Time),
            ("sequenced_at", Time),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
    TableSpec {
        name: "deadlines",
        projection: Projection::Deadlines,
        columns: &[
            ("ledger_id", Text),
            ("deadline_id", UuidT),
            ("kind", Text),
            ("stream_id", Text),
            ("target_id", UuidT),
            ("milestone", Int4),
            ("due_at", Time),
            ("computed_from_version", Int8),
            ("status", Text),
            ("party_a", UuidT),
            ("party_b", UuidT),
            ("created_at", Time),
            ("updated_at", Time),
            ("position", Int8),
        ],
        key_len: 2,
        merge: Merge::Replace,
    },
];

/// The table named `name` (one of [`TABLES`]).
pub fn table(name: &str) -> &'static TableSpec {
    TABLES
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no read table {name}"))
}

/// Index of a table in [`TABLES`] (tables are referred to by index in hot paths).
pub fn table_index(name: &str) -> usize {
    TABLES
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("no read table {name}"))
}
