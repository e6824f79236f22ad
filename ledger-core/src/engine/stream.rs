//! Stream ids: one aggregate instance's event stream, and its text form in the store.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::money::Currency;

/// The name of the ledger policy's stream.
const LEDGER_POLICY_STREAM: &str = "ledger-policy";
/// The name of the closed periods' stream.
const PERIODS_STREAM: &str = "periods";

/// One aggregate instance's event stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum StreamId {
    ServiceRequest(Uuid),
    Quote(Uuid),
    Booking(Uuid),
    Project(Uuid),
    Payment(Uuid),
    Wallet {
        user: Uuid,
        currency: Currency,
    },
    Dispute(Uuid),
    Suspense(Uuid),
    /// The ledger's own policy (its fee schedule): one per ledger.
    LedgerPolicy,
    /// One gateway settlement (id: `aggregates::settlement::settlement_stream_id`).
    Settlement(Uuid),
    /// One recorded reconciliation run.
    Reconciliation(Uuid),
    /// The ledger's closed periods: one per ledger.
    Periods,
    /// One recorded outcome (`outcomes`): of a keyed command without other events, or of a delivery.
    Outcome(Uuid),
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::ServiceRequest(id) => write!(f, "request-{id}"),
            StreamId::Quote(id) => write!(f, "quote-{id}"),
            StreamId::Booking(id) => write!(f, "booking-{id}"),
            StreamId::Project(id) => write!(f, "project-{id}"),
            StreamId::Payment(id) => write!(f, "payment-{id}"),
            StreamId::Wallet { user, currency } => write!(f, "wallet-{user}-{currency}"),
            StreamId::Dispute(id) => write!(f, "dispute-{id}"),
            StreamId::Suspense(id) => write!(f, "suspense-{id}"),
            StreamId::LedgerPolicy => f.write_str(LEDGER_POLICY_STREAM),
            StreamId::Settlement(id) => write!(f, "settlement-{id}"),
            StreamId::Reconciliation(id) => write!(f, "reconciliation-{id}"),
            StreamId::Periods => f.write_str(PERIODS_STREAM),
            StreamId::Outcome(id) => write!(f, "outcome-{id}"),
        }
    }
}

/// In JSON a stream id is its text form (`project-<uuid>`, `wallet-<uuid>-USD`, `periods`).
impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stream id")]
pub struct BadStreamId(pub String);

impl FromStr for StreamId {
    type Err = BadStreamId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStreamId(s.to_string());
        if s == LEDGER_POLICY_STREAM {
            return Ok(StreamId::LedgerPolicy);
        }
        if s == PERIODS_STREAM {
            return Ok(StreamId::Periods);
        }
        let (kind, rest) = s.split_once('-').ok_or_else(bad)?;
        if kind == "wallet" {
            let (user, currency) = rest.rsplit_once('-').ok_or_else(bad)?;
            return Ok(StreamId::Wallet {
                user: Uuid::parse_str(user).map_err(|_| bad())?,
                currency: Currency::from_code(currency).map_err(|_| bad())?,
            });
        }
        let id = Uuid::parse_str(rest).map_err(|_| bad())?;
        Ok(match kind {
            "request" => StreamId::ServiceRequest(id),
            "quote" => StreamId::Quote(id),
            "booking" => StreamId::Booking(id),
            "project" => StreamId::Project(id),
            "payment" => StreamId::Payment(id),
            "dispute" => StreamId::Dispute(id),
            "suspense" => StreamId::Suspense(id),
            "settlement" => StreamId::Settlement(id),
            "reconciliation" => StreamId::Reconciliation(id),
            "outcome" => StreamId::Outcome(id),
            _ => return Err(bad()),
        })
    }
}
