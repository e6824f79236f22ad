//! Projection workers: fold the escrow-ledger log into the read tables of schema `escrow`.
//!
//! - [`table`]: the read tables as data (columns, keys, owning projection, merge rule).
//! - [`fold`]: the pure fold, events in, rows out (the same code serves live runs, rebuilds and `verify`).
//! - [`runner`]: per-projection workers with checkpoints written in the same transaction as their rows;
//!   catch-up then live tail; bounded batches; crash-resumable.
//! - [`rebuild`]: a projection rebuilt from zero into shadow tables (COPY, then indexes) and swapped in.
//! - [`verify`]: recompute every table from the log in memory and report rows that differ.
//! - [`journal_check`]: the money columns against the journal's postings (sums per deposit, payout,
//!   project, milestone and account), independent of the fold.
//! - [`mismatch`]: the one difference type both report (below both: neither imports the other for it).
//!
//! Invariants kept by absence: nothing here writes `ledger.*`; no read-table row is written outside a
//! transaction that also moves its projection's checkpoint (except a rebuild's shadow tables, which no
//! reader sees before the swap); no SQL text is built from values.

pub mod fold;
pub mod journal_check;
pub mod mismatch;
pub mod rebuild;
pub mod runner;
pub mod sql;
pub mod table;
pub mod verify;

pub use runner::{BatchReport, RunnerConfig, Worker, catch_up_all, run_all};
pub use table::{Projection, TABLES};

/// Errors of the projection workers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event store: {0}")]
    Store(#[from] ledger_store::StoreError),
    #[error("cannot decode a stored event: {0}")]
    Decode(String),
    #[error(transparent)]
    Fold(#[from] fold::FoldError),
    #[error(
        "checkpoint of projection {projection} on ledger {ledger} moved to {found} while this worker expected {expected} (a rebuild or another worker)"
    )]
    CheckpointMoved {
        projection: String,
        ledger: String,
        expected: i64,
        found: i64,
    },
    #[error("another rebuild is running on this database")]
    RebuildBusy,
    #[error("injected failure (test hook) after {0} table writes")]
    Injected(usize),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
