//! ledger-core: the pure escrow ledger. Commands in, events out; every money movement a balanced
//! double-entry journal entry. No I/O, no async, no clock, no randomness: time and ids come with commands.
//!
//! Map: [`money`] (exact amounts, ISO 4217), [`journal`] (chart of accounts, entries, balances),
//! [`aggregates`] (one [`Decider`] per aggregate), [`engine`] (the command set, composition across
//! streams, the wallet guard, the process logic), [`memory`] (an in-memory ledger for tests and replays).

pub mod aggregates;
pub mod calendar;
pub mod deadlines;
pub mod decider;
pub mod engine;
pub mod error;
pub mod ids;
pub mod journal;
pub mod memory;
pub mod money;
pub mod outcomes;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod testing;

pub use calendar::{Month, MonthRange};
pub use decider::Decider;
pub use engine::{AggState, Change, Command, CommandEnvelope, DecideError, Event, StreamId};
pub use error::{Rejection, RejectionReport};
pub use ids::{Actor, Gateway, MilestoneNo};
pub use journal::{Account, AccountKind, Balances, BankName, JournalEntry, Posting, Side};
pub use memory::{MemoryLedger, Outcome};
pub use money::{Currency, Money, MoneyError, Rate};
