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

/// JSON Schemas of the types whose serde form is written by hand (exact decimal strings, codes, names).
#[cfg(feature = "openapi")]
mod openapi_schemas {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::{RefOr, Schema};

    fn text(description: &str, pattern: Option<&str>, example: &str) -> RefOr<Schema> {
        let mut b = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(description))
            .examples([serde_json::json!(example)]);
        if let Some(p) = pattern {
            b = b.pattern(Some(p));
        }
        RefOr::T(Schema::Object(b.build()))
    }

    macro_rules! text_schema {
        ($ty:ty, $name:literal, $description:literal, $pattern:expr, $example:literal) => {
            impl utoipa::PartialSchema for $ty {
                fn schema() -> RefOr<Schema> {
                    text($description, $pattern, $example)
                }
            }
            impl utoipa::ToSchema for $ty {
                fn name() -> std::borrow::Cow<'static, str> {
                    std::borrow::Cow::Borrowed($name)
                }
            }
        };
    }

    text_schema!(
        crate::Currency,
        "Currency",
        "ISO 4217 code",
        Some("^[A-Z]{3}$"),
        "USD"
    );
    text_schema!(
        crate::Rate,
        "Rate",
        "A proportion in [0, 1] as an exact decimal string (5% is \"0.05\")",
        Some("^(0(\\.[0-9]+)?|1(\\.0+)?)$"),
        "0.10"
    );
    text_schema!(
        crate::calendar::Month,
        "Month",
        "A UTC calendar month",
        Some("^[0-9]{4}-[0-9]{2}$"),
        "2026-01"
    );
    text_schema!(
        crate::journal::BankName,
        "BankName",
        "A bank account's name: lower-case letters, digits, '-' and '_'",
        None,
        "main"
    );
    text_schema!(
        crate::engine::StreamId,
        "StreamId",
        "A stream of the log: `<kind>-<uuid>`, `wallet-<uuid>-<currency>`, `ledger-policy` or `periods`",
        None,
        "project-9b0c1e00-0000-4000-8000-000000000021"
    );

    impl utoipa::PartialSchema for crate::Money {
        fn schema() -> RefOr<Schema> {
            RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Object))
                    .description(Some(
                        "An exact amount: a decimal string in the currency's precision, never a JSON number",
                    ))
                    .property(
                        "amount",
                        text("Exact decimal", Some("^-?[0-9]+(\\.[0-9]+)?$"), "12.50"),
                    )
                    .required("amount")
                    .property("currency", <crate::Currency as utoipa::PartialSchema>::schema())
                    .required("currency")
                    .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
                    .build(),
            ))
        }
    }
    impl utoipa::ToSchema for crate::Money {
        fn name() -> std::borrow::Cow<'static, str> {
            std::borrow::Cow::Borrowed("Money")
        }
    }
}
