//! Append-only, tamper-evident event store for escrow-ledger.
//!
//! The store is payload-agnostic (events are JSON); `ledger-core` types are joined by the
//! executor. Two implementations of [`EventStore`] share one contract: [`PgEventStore`]
//! (PostgreSQL, schema in `migrations/`) and [`InMemoryEventStore`].
//!
//! Invariants kept by absence: no code path updates or deletes an event, a sequence link or an
//! idempotency record; only this crate knows row types and SQLSTATEs (mapped in `error.rs`);
//! no SQL text is built from values.

pub mod balances;
pub mod chain;
pub mod citus;
pub mod citus_cluster;
pub mod cluster;
mod error;
pub mod executor;
pub mod group;
mod memory;
pub mod outcome_log;
mod postgres;
pub mod roles;
pub mod sequencer;
mod store;
pub mod testdb;
mod types;

pub use error::{Result, StoreError};
pub use executor::{
    BatchAnswer, BatchItem, CommandOutcome, ExecError, Executor, ExecutorConfig, InboxRowBuilder,
};
pub use group::{GroupCommitConfig, GroupCommitter, SubmitError};
pub use memory::InMemoryEventStore;
pub use postgres::read::{
    ChainEvent, ChainRow, sequencer_lock_key, snapshot_digest_mismatches, stream_snapshots,
    unlogged_outcomes,
};
pub use postgres::{PgEventStore, RawEvent, STATEMENT_TIMEOUT, analyze_log, connect};
pub use store::{
    APPEND_EVENTS_MAX, BATCH_REQUESTS_MAX, BatchRequest, EventStore, READ_LIMIT_MAX, Subscription,
    subscription_stream,
};
pub use types::*;

/// The schema migrations, embedded at build time (no database needed to build).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Brings a database to the current schema. Safe to run concurrently on different databases
/// of one cluster (the shared role is created race-safely). On a Citus coordinator it then distributes
/// the schema by ledger ([`citus::distribute`]; nothing changes on one server).
pub async fn migrate(pool: &sqlx::PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    citus::distribute(pool).await?;
    // Supabase's roles may be made after the migrations ran: every migrate gives them their rights again
    // (migration 20261207000201; a no-op without them).
    sqlx::query("select escrow.adopt_supabase_roles()")
        .execute(pool)
        .await?;
    Ok(())
}
