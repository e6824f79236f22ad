//! Identifiers, actors and the deterministic derivation of ids (the core never draws random numbers).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Milestones are numbered 1..=N inside their project.
pub type MilestoneNo = u32;

/// Namespace of event ids: `event_id = uuid_v5(EVENT_NAMESPACE, command_id ++ index)`.
pub const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x2b8e_51d4_7a0c_4f93_9e16_5c3a_8d70_b4e2);
/// Namespace of ids the process logic derives for follow-up commands and the aggregates they create.
pub const PROCESS_NAMESPACE: Uuid = Uuid::from_u128(0x91c4_0e7b_3d25_4a86_b1f9_6e2d_4c08_7a53);

/// The id of the `index`-th event produced by a command: replaying the same command gives the same ids.
pub fn event_id(command_id: Uuid, index: usize) -> Uuid {
    let mut name = [0_u8; 24];
    name[..16].copy_from_slice(command_id.as_bytes());
    name[16..].copy_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v5(&EVENT_NAMESPACE, &name)
}

/// An id derived from a causing id and a purpose ("booking", "project", "fund"...).
pub fn derived_id(cause: Uuid, purpose: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + purpose.len());
    name.extend_from_slice(cause.as_bytes());
    name.extend_from_slice(purpose.as_bytes());
    Uuid::new_v5(&PROCESS_NAMESPACE, &name)
}

/// Payment gateways whose clearing accounts the ledger keeps.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gateway {
    Stripe,
    Paystack,
    Flutterwave,
    Fincra,
    /// CMI (Centre Monétique Interbancaire): card payments in Morocco.
    Cmi,
    /// Tap Payments: cards and local schemes in the Gulf (KWD, SAR, AED...).
    Tap,
    /// In-house payment workers posting the normalized callback format.
    Normalized,
}

impl Gateway {
    pub fn account_component(&self) -> &'static str {
        match self {
            Gateway::Stripe => "Stripe",
            Gateway::Paystack => "Paystack",
            Gateway::Flutterwave => "Flutterwave",
            Gateway::Fincra => "Fincra",
            Gateway::Cmi => "CMI",
            Gateway::Tap => "Tap",
            Gateway::Normalized => "Normalized",
        }
    }

    pub fn from_component(s: &str) -> Option<Gateway> {
        [
            Gateway::Stripe,
            Gateway::Paystack,
            Gateway::Flutterwave,
            Gateway::Fincra,
            Gateway::Cmi,
            Gateway::Tap,
            Gateway::Normalized,
        ]
        .into_iter()
        .find(|g| g.account_component().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.account_component().to_ascii_lowercase())
    }
}

/// Who issues a command. Authorization is a domain rule: each decider checks the actor.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// An end user (client, provider, buyer, seller), by their id.
    User(Uuid),
    /// A platform operator (mediates disputes, closes projects).
    Admin(Uuid),
    /// Timers and the process logic (auto-approval, expiry, follow-up commands).
    System,
    /// A verified gateway callback.
    Gateway(Gateway),
}

impl Actor {
    pub fn user(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(*id),
            _ => None,
        }
    }

    pub fn is(&self, user: Uuid) -> bool {
        self.user() == Some(user)
    }

    pub fn is_admin_or_system(&self) -> bool {
        matches!(self, Actor::Admin(_) | Actor::System)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Admin(id) => write!(f, "admin:{id}"),
            Actor::System => f.write_str("system"),
            Actor::Gateway(g) => write!(f, "gateway:{g}"),
        }
    }
}
