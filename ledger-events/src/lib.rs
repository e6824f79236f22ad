//! Events out: the ledger's log delivered to the systems around it.
//!
//! - [`model`]: the public, versioned event model (`schema_version`), money as exact decimal strings, every
//!   journal entry with each touched account's balance after it;
//! - [`relay`]: one loop per (ledger, sink) reading the log in global order behind the sequencer, from the
//!   sink's durable, leased cursor ([`cursor`]); at least once, in order, deduplicable by `event_id`;
//! - sinks: [`nats`] (JetStream, `Nats-Msg-Id` = event id) and [`webhook`] (Standard Webhooks signatures,
//!   retries on a schedule, dead letters, redelivery); the pull feed is [`feed`] (served by `serve`).
//!
//! Nothing below this crate knows it exists, and delivery never waits for the read tables.

pub mod catalogue;
pub mod cursor;
pub mod feed;
pub mod model;
pub mod monitor;
pub mod nats;
pub mod relay;
pub mod running;
pub mod webhook;

pub use model::{PublicEvent, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] ledger_store::StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot decode an event: {0}")]
    Decode(String),
    #[error("{0}")]
    Invalid(String),
    #[error("sink: {0}")]
    Sink(String),
    /// Another relay took this sink's lease: stop delivering, take it again later.
    #[error("the sink's lease was taken by another relay")]
    LeaseLost,
}
