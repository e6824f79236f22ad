//! The ledger engine: one public `Command` set over all aggregates, routed to their deciders and composed
//! when a command spans streams (funding touches a project and a wallet). Still pure: the caller supplies
//! the states it has loaded, and `decide` asks for any stream it is missing (`DecideError::NeedStream`).
//!
//! Wallet guard: for every journal entry produced, the postings to `Liabilities:Users:<u>:{Available,
//! Pending}` are netted per wallet and passed through the wallet decider, which refuses to go below zero and
//! appends a mirror event to the wallet's stream. So every change of a user's money takes that wallet's
//! expected version, while unconstrained accounts (clearing, income, expenses) take none.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregates::Ctx;
use crate::aggregates::booking::{
    Booking, BookingCommand, BookingEvent, BookingState, BookingStatus,
};
use crate::aggregates::dispute::{
    Dispute, DisputeCommand, DisputeEvent, DisputeState, DisputedMilestone,
};
use crate::aggregates::ledger_policy::{
    FeeSchedule, LedgerPolicy, LedgerPolicyCommand, LedgerPolicyEvent, LedgerPolicyState,
    RateBounds,
};
use crate::aggregates::payment::{
    EscrowSource, EscrowTaken, FundTarget, Payment, PaymentCommand, PaymentEvent, PaymentState,
};
use crate::aggregates::project::{
    FeeTerms, NewProject, Project, ProjectCommand, ProjectEvent, ProjectState,
};
use crate::aggregates::quote::{Quote, QuoteCommand, QuoteEvent, QuoteState, RequestInfo};
use crate::aggregates::service_request::{
    RequestStatus, ServiceRequest, ServiceRequestCommand, ServiceRequestEvent, ServiceRequestState,
};
use crate::aggregates::suspense::{Suspense, SuspenseCommand, SuspenseEvent, SuspenseState};
use crate::aggregates::wallet::{Wallet, WalletCommand, WalletEvent, WalletState};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::{Actor, Gateway, MilestoneNo, derived_id, event_id};
use crate::journal::{Account, JournalEntry};
use crate::money::{Currency, Money, Rate};

/// Current schema version of every event type. See `upcast` for how older versions are read.
pub const SCHEMA_VERSION: i32 = 1;
/// Bound on follow-up commands one command may cascade into (process logic), and on their depth.
pub const FOLLOW_UPS_MAX: usize = 32;
pub const FOLLOW_UP_DEPTH_MAX: usize = 6;

/// The name of the ledger policy's stream.
const LEDGER_POLICY_STREAM: &str = "ledger-policy";

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
        }
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
            _ => return Err(bad()),
        })
    }
}

/// Any aggregate's event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Event {
    ServiceRequest(ServiceRequestEvent),
    Quote(QuoteEvent),
    Booking(BookingEvent),
    Project(ProjectEvent),
    Payment(PaymentEvent),
    Wallet(WalletEvent),
    Dispute(DisputeEvent),
    Suspense(SuspenseEvent),
    LedgerPolicy(LedgerPolicyEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event {event_type} v{version} of stream {stream}: {message}")]
    Payload {
        stream: String,
        event_type: String,
        version: i32,
        message: String,
    },
    #[error("event schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    FutureVersion(i32),
}

/// The one list of money-moving events: matches `$event` (by reference or by mutable reference; default
/// binding modes give `entry` the same kind of reference) and yields its journal entry.
macro_rules! entry_of {
    ($event:expr) => {{
        use PaymentEvent as P;
        use ProjectEvent as J;
        match $event {
            Event::Project(
                J::MilestoneFunded { entry, .. }
                | J::MilestoneReleased { entry, .. }
                | J::MilestoneRefunded { entry, .. }
                | J::MilestoneResolved { entry, .. },
            ) => Some(entry),
            Event::Payment(
                P::DepositSucceeded { entry, .. }
                | P::PayoutRequested { entry, .. }
                | P::PayoutCompleted { entry, .. }
                | P::PayoutFailed { entry, .. }
                | P::PayoutCancelled { entry }
                | P::PayoutReversed { entry }
                | P::CardRefundRequested { entry, .. }
                | P::CardRefundProcessed { entry, .. }
                | P::CardRefundFailed { entry, .. }
                | P::SuccessAfterFailure { entry, .. }
                | P::ChargebackOpened { entry, .. }
                | P::ChargebackWon { entry, .. }
                | P::ChargebackLost { entry, .. },
            ) => Some(entry),
            Event::Wallet(WalletEvent::PendingMatured { entry, .. }) => Some(entry),
            Event::Suspense(
                SuspenseEvent::SuspenseRecorded { entry, .. }
                | SuspenseEvent::SuspenseAssigned { entry, .. }
                | SuspenseEvent::SuspenseReturned { entry },
            ) => Some(entry),
            _ => None,
        }
    }};
}

impl Event {
    /// The journal entry this event carries, if it moves money.
    pub fn entry(&self) -> Option<&JournalEntry> {
        entry_of!(self)
    }

    fn entry_mut(&mut self) -> Option<&mut JournalEntry> {
        entry_of!(self)
    }

    /// `(event_type, payload)` as stored: the payload carries the same `type` tag.
    pub fn to_stored(&self) -> (String, serde_json::Value) {
        let payload = serde_json::to_value(self).expect("events always serialize");
        let event_type = payload
            .get("type")
            .and_then(|t| t.as_str())
            .expect("every event has a type tag")
            .to_string();
        (event_type, payload)
    }

    /// Decodes a stored event of `stream`, upcasting older schema versions first.
    pub fn from_stored(
        stream: &StreamId,
        event_type: &str,
        version: i32,
        payload: serde_json::Value,
    ) -> Result<Event, EventDecodeError> {
        let payload = upcast(event_type, version, payload)?;
        let err = |e: serde_json::Error| EventDecodeError::Payload {
            stream: stream.to_string(),
            event_type: event_type.to_string(),
            version,
            message: e.to_string(),
        };
        Ok(match stream {
            StreamId::ServiceRequest(_) => {
                Event::ServiceRequest(serde_json::from_value(payload).map_err(err)?)
            }
            StreamId::Quote(_) => Event::Quote(serde_json::from_value(payload).map_err(err)?),
            StreamId::Booking(_) => Event::Booking(serde_json::from_value(payload).map_err(err)?),
            StreamId::Project(_) => Event::Project(serde_json::from_value(payload).map_err(err)?),
            StreamId::Payment(_) => Event::Payment(serde_json::from_value(payload).map_err(err)?),
            StreamId::Wallet { .. } => Event::Wallet(serde_json::from_value(payload).map_err(err)?),
            StreamId::Dispute(_) => Event::Dispute(serde_json::from_value(payload).map_err(err)?),
            StreamId::Suspense(_) => Event::Suspense(serde_json::from_value(payload).map_err(err)?),
            StreamId::LedgerPolicy => {
                Event::LedgerPolicy(serde_json::from_value(payload).map_err(err)?)
            }
        })
    }

    /// Decodes a stored event from its JSON text: straight into the typed event when it is of the current
    /// schema version (the replay hot path), through `from_stored` and its upcasts otherwise.
    pub fn from_stored_str(
        stream: &StreamId,
        event_type: &str,
        version: i32,
        payload: &str,
    ) -> Result<Event, EventDecodeError> {
        let err = |e: serde_json::Error| EventDecodeError::Payload {
            stream: stream.to_string(),
            event_type: event_type.to_string(),
            version,
            message: e.to_string(),
        };
        if version != SCHEMA_VERSION {
            let value = serde_json::from_str(payload).map_err(err)?;
            return Event::from_stored(stream, event_type, version, value);
        }
        Ok(match stream {
            StreamId::ServiceRequest(_) => {
                Event::ServiceRequest(serde_json::from_str(payload).map_err(err)?)
            }
            StreamId::Quote(_) => Event::Quote(serde_json::from_str(payload).map_err(err)?),
            StreamId::Booking(_) => Event::Booking(serde_json::from_str(payload).map_err(err)?),
            StreamId::Project(_) => Event::Project(serde_json::from_str(payload).map_err(err)?),
            StreamId::Payment(_) => Event::Payment(serde_json::from_str(payload).map_err(err)?),
            StreamId::Wallet { .. } => Event::Wallet(serde_json::from_str(payload).map_err(err)?),
            StreamId::Dispute(_) => Event::Dispute(serde_json::from_str(payload).map_err(err)?),
            StreamId::Suspense(_) => Event::Suspense(serde_json::from_str(payload).map_err(err)?),
            StreamId::LedgerPolicy => {
                Event::LedgerPolicy(serde_json::from_str(payload).map_err(err)?)
            }
        })
    }
}

/// Reads an event stored under an older schema version as the current one.
///
/// Events are never rewritten in the store. When an event's shape changes, its `SCHEMA_VERSION` goes up and
/// a step `(event_type, old_version) -> payload of old_version + 1` is added here (for example, filling a new
/// field with the value the old semantics implied); steps chain until the current version. Version 1 is the
/// first, so today the function only refuses versions from the future.
pub fn upcast(
    _event_type: &str,
    version: i32,
    payload: serde_json::Value,
) -> Result<serde_json::Value, EventDecodeError> {
    if version > SCHEMA_VERSION {
        return Err(EventDecodeError::FutureVersion(version));
    }
    Ok(payload)
}

/// Any aggregate's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AggState {
    ServiceRequest(ServiceRequestState),
    Quote(QuoteState),
    Booking(BookingState),
    Project(ProjectState),
    Payment(PaymentState),
    Wallet(WalletState),
    Dispute(DisputeState),
    Suspense(SuspenseState),
    LedgerPolicy(LedgerPolicyState),
}

impl AggState {
    /// The state of a stream with no events (ids filled so rejections can name them).
    pub fn initial(stream: &StreamId) -> AggState {
        match *stream {
            StreamId::ServiceRequest(id) => AggState::ServiceRequest(ServiceRequestState {
                id,
                ..Default::default()
            }),
            StreamId::Quote(id) => AggState::Quote(QuoteState {
                id,
                ..Default::default()
            }),
            StreamId::Booking(id) => AggState::Booking(BookingState {
                id,
                ..Default::default()
            }),
            StreamId::Project(id) => AggState::Project(ProjectState {
                id,
                ..Default::default()
            }),
            StreamId::Payment(id) => AggState::Payment(PaymentState {
                id,
                ..Default::default()
            }),
            StreamId::Wallet { .. } => AggState::Wallet(WalletState::default()),
            StreamId::Dispute(id) => AggState::Dispute(DisputeState {
                id,
                ..Default::default()
            }),
            StreamId::Suspense(id) => AggState::Suspense(SuspenseState {
                id,
                ..Default::default()
            }),
            StreamId::LedgerPolicy => AggState::LedgerPolicy(LedgerPolicyState::default()),
        }
    }
}

/// Folds one event into its aggregate's state. Total: a mismatched pair is a programming error.
pub fn evolve(state: AggState, event: &Event) -> AggState {
    match (state, event) {
        (AggState::ServiceRequest(s), Event::ServiceRequest(e)) => {
            AggState::ServiceRequest(ServiceRequest::evolve(s, e))
        }
        (AggState::Quote(s), Event::Quote(e)) => AggState::Quote(Quote::evolve(s, e)),
        (AggState::Booking(s), Event::Booking(e)) => AggState::Booking(Booking::evolve(s, e)),
        (AggState::Project(s), Event::Project(e)) => AggState::Project(Project::evolve(s, e)),
        (AggState::Payment(s), Event::Payment(e)) => AggState::Payment(Payment::evolve(s, e)),
        (AggState::Wallet(s), Event::Wallet(e)) => AggState::Wallet(Wallet::evolve(s, e)),
        (AggState::Dispute(s), Event::Dispute(e)) => AggState::Dispute(Dispute::evolve(s, e)),
        (AggState::Suspense(s), Event::Suspense(e)) => AggState::Suspense(Suspense::evolve(s, e)),
        (AggState::LedgerPolicy(s), Event::LedgerPolicy(e)) => {
            AggState::LedgerPolicy(LedgerPolicy::evolve(s, e))
        }
        (s, e) => panic!("event {e:?} does not belong to state {s:?}"),
    }
}

/// Every command the ledger accepts. JSON: `{"type": "fund_milestone", "project_id": ..., "milestone": 1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    OpenServiceRequest {
        request_id: Uuid,
        currency: Currency,
        title: String,
        expires_at: Option<DateTime<Utc>>,
    },
    CancelServiceRequest {
        request_id: Uuid,
    },
    ExpireServiceRequest {
        request_id: Uuid,
    },
    CreateQuote {
        quote_id: Uuid,
        request_id: Uuid,
        amount: Money,
        valid_until: DateTime<Utc>,
        #[serde(default)]
        fees: FeeTerms,
    },
    SendQuote {
        quote_id: Uuid,
    },
    AcceptQuote {
        quote_id: Uuid,
    },
    DeclineQuote {
        quote_id: Uuid,
    },
    WithdrawQuote {
        quote_id: Uuid,
    },
    ExpireQuote {
        quote_id: Uuid,
    },
    /// Process: an accepted quote opens a booking backed by a single-milestone project.
    OpenBooking {
        booking_id: Uuid,
        project_id: Uuid,
        quote_id: Uuid,
    },
    ConfirmBooking {
        booking_id: Uuid,
    },
    StartBooking {
        booking_id: Uuid,
    },
    DeliverBooking {
        booking_id: Uuid,
    },
    AcceptBooking {
        booking_id: Uuid,
    },
    AutoAcceptBooking {
        booking_id: Uuid,
    },
    SettleBooking {
        booking_id: Uuid,
    },
    MarkBookingDisputed {
        booking_id: Uuid,
    },
    CancelBooking {
        booking_id: Uuid,
    },
    /// Process: applies a booking's cancellation policy to its escrow.
    ApplyBookingCancellation {
        booking_id: Uuid,
        keep_rate: Rate,
    },
    CreateProject {
        project_id: Uuid,
        buyer: Uuid,
        seller: Uuid,
        currency: Currency,
        milestones: Vec<Money>,
        #[serde(default)]
        fees: FeeTerms,
    },
    SubmitProjectForAgreement {
        project_id: Uuid,
    },
    AgreeToProject {
        project_id: Uuid,
    },
    FundMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    SubmitMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    RequestChanges {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    ApproveMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    AutoApproveMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    ReleaseMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    RefundMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    CancelMilestone {
        project_id: Uuid,
        milestone: MilestoneNo,
    },
    CancelProject {
        project_id: Uuid,
    },
    CloseProject {
        project_id: Uuid,
    },
    /// Process: a settled dispute's split applied to the milestone's escrow.
    ApplyResolution {
        project_id: Uuid,
        milestone: MilestoneNo,
        release: Money,
        refund: Money,
        cause: Uuid,
    },
    /// Process: a withdrawn dispute gives the milestone back its previous status.
    ClearMilestoneDispute {
        project_id: Uuid,
        milestone: MilestoneNo,
        dispute_id: Uuid,
    },
    InitiateDeposit {
        payment_id: Uuid,
        amount: Money,
        gateway: Gateway,
        fund: Option<FundTarget>,
    },
    MarkPaymentProcessing {
        payment_id: Uuid,
    },
    ConfirmDeposit {
        payment_id: Uuid,
        amount: Money,
        gateway_fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
    },
    FailDeposit {
        payment_id: Uuid,
        reason: String,
    },
    CancelDeposit {
        payment_id: Uuid,
    },
    RequestPayout {
        payout_id: Uuid,
        amount: Money,
        fee: Option<Money>,
        gateway: Gateway,
    },
    RequestCardRefund {
        refund_id: Uuid,
        amount: Money,
        gateway: Gateway,
    },
    /// A payout or card refund confirmed by its gateway.
    ConfirmTransfer {
        payment_id: Uuid,
        gateway_fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
    },
    /// A payout or card refund failed at its gateway.
    FailTransfer {
        payment_id: Uuid,
        reason: String,
    },
    CancelPayout {
        payment_id: Uuid,
    },
    ReversePayout {
        payment_id: Uuid,
        occurred_at: Option<DateTime<Utc>>,
    },
    OpenChargeback {
        payment_id: Uuid,
        chargeback_id: Uuid,
        amount: Money,
        fee: Option<Money>,
        occurred_at: Option<DateTime<Utc>>,
    },
    WinChargeback {
        payment_id: Uuid,
        chargeback_id: Uuid,
    },
    LoseChargeback {
        payment_id: Uuid,
        chargeback_id: Uuid,
        recover_from_user: bool,
    },
    MaturePending {
        user: Uuid,
        amount: Money,
    },
    OpenDispute {
        dispute_id: Uuid,
        project_id: Uuid,
        milestone: MilestoneNo,
        reason: String,
        proposed_release: Money,
        respond_by: DateTime<Utc>,
    },
    AcceptDisputeProposal {
        dispute_id: Uuid,
    },
    ContestDispute {
        dispute_id: Uuid,
    },
    ResolveDispute {
        dispute_id: Uuid,
        release: Money,
    },
    WithdrawDispute {
        dispute_id: Uuid,
    },
    TimeOutDispute {
        dispute_id: Uuid,
    },
    RecordSuspense {
        suspense_id: Uuid,
        gateway: Gateway,
        amount: Money,
        reference: String,
        reason: String,
    },
    AssignSuspense {
        suspense_id: Uuid,
        user: Uuid,
    },
    ReturnSuspense {
        suspense_id: Uuid,
    },
    /// An operator sets the ledger's fee schedule (`aggregates::ledger_policy`).
    SetFeePolicy {
        commission: RateBounds,
        buyer_fee: RateBounds,
        payout_fee: RateBounds,
        overrides_allowed: bool,
    },
}

/// A command with its id (idempotency and event-id derivation), actor and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub command_id: Uuid,
    pub actor: Actor,
    pub at: DateTime<Utc>,
    pub command: Command,
}

/// One event to append to one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub stream: StreamId,
    pub event_id: Uuid,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The caller must load this stream and call `decide` again.
    #[error("stream {0} must be loaded first")]
    NeedStream(StreamId),
}

/// The states a caller has loaded. `None` means "not loaded"; a loaded stream with no events is
/// `AggState::initial`.
pub trait StateView {
    fn state(&self, stream: &StreamId) -> Option<&AggState>;
}

impl StateView for std::collections::HashMap<StreamId, AggState> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.get(stream)
    }
}

impl StateView for BTreeMap<StreamId, AggState> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.get(stream)
    }
}

macro_rules! typed_state {
    ($name:ident, $variant:ident, $ty:ty) => {
        fn $name(view: &dyn StateView, stream: StreamId) -> Result<&$ty, DecideError> {
            match view.state(&stream) {
                Some(AggState::$variant(s)) => Ok(s),
                Some(other) => panic!("stream {stream} holds {other:?}"),
                None => Err(DecideError::NeedStream(stream)),
            }
        }
    };
}
typed_state!(request_state, ServiceRequest, ServiceRequestState);
typed_state!(quote_state, Quote, QuoteState);
typed_state!(booking_state, Booking, BookingState);
typed_state!(project_state, Project, ProjectState);
typed_state!(payment_state, Payment, PaymentState);
typed_state!(wallet_state, Wallet, WalletState);
typed_state!(dispute_state, Dispute, DisputeState);
typed_state!(suspense_state, Suspense, SuspenseState);
typed_state!(policy_state, LedgerPolicy, LedgerPolicyState);

/// The streams a command certainly touches; `decide` asks for the rest (wallets, related aggregates).
pub fn primary_streams(command: &Command) -> Vec<StreamId> {
    use Command as C;
    match command {
        C::OpenServiceRequest { request_id, .. }
        | C::CancelServiceRequest { request_id }
        | C::ExpireServiceRequest { request_id } => {
            vec![StreamId::ServiceRequest(*request_id)]
        }
        C::CreateQuote {
            quote_id,
            request_id,
            ..
        } => vec![
            StreamId::Quote(*quote_id),
            StreamId::ServiceRequest(*request_id),
        ],
        C::SendQuote { quote_id }
        | C::AcceptQuote { quote_id }
        | C::DeclineQuote { quote_id }
        | C::WithdrawQuote { quote_id }
        | C::ExpireQuote { quote_id } => {
            vec![StreamId::Quote(*quote_id)]
        }
        C::OpenBooking {
            booking_id,
            project_id,
            quote_id,
        } => {
            vec![
                StreamId::Booking(*booking_id),
                StreamId::Project(*project_id),
                StreamId::Quote(*quote_id),
            ]
        }
        C::ConfirmBooking { booking_id }
        | C::StartBooking { booking_id }
        | C::DeliverBooking { booking_id }
        | C::AcceptBooking { booking_id }
        | C::AutoAcceptBooking { booking_id }
        | C::SettleBooking { booking_id }
        | C::MarkBookingDisputed { booking_id }
        | C::CancelBooking { booking_id }
        | C::ApplyBookingCancellation { booking_id, .. } => vec![StreamId::Booking(*booking_id)],
        C::CreateProject { project_id, .. }
        | C::SubmitProjectForAgreement { project_id }
        | C::AgreeToProject { project_id }
        | C::FundMilestone { project_id, .. }
        | C::SubmitMilestone { project_id, .. }
        | C::RequestChanges { project_id, .. }
        | C::ApproveMilestone { project_id, .. }
        | C::AutoApproveMilestone { project_id, .. }
        | C::ReleaseMilestone { project_id, .. }
        | C::RefundMilestone { project_id, .. }
        | C::CancelMilestone { project_id, .. }
        | C::CancelProject { project_id }
        | C::CloseProject { project_id }
        | C::ApplyResolution { project_id, .. }
        | C::ClearMilestoneDispute { project_id, .. } => {
            vec![StreamId::Project(*project_id)]
        }
        C::InitiateDeposit { payment_id, .. }
        | C::MarkPaymentProcessing { payment_id }
        | C::ConfirmDeposit { payment_id, .. }
        | C::FailDeposit { payment_id, .. }
        | C::CancelDeposit { payment_id }
        | C::ConfirmTransfer { payment_id, .. }
        | C::FailTransfer { payment_id, .. }
        | C::CancelPayout { payment_id }
        | C::ReversePayout { payment_id, .. }
        | C::OpenChargeback { payment_id, .. }
        | C::WinChargeback { payment_id, .. }
        | C::LoseChargeback { payment_id, .. } => {
            vec![StreamId::Payment(*payment_id)]
        }
        C::RequestPayout { payout_id, .. } => vec![StreamId::Payment(*payout_id)],
        C::RequestCardRefund { refund_id, .. } => vec![StreamId::Payment(*refund_id)],
        C::MaturePending { user, amount } => vec![StreamId::Wallet {
            user: *user,
            currency: amount.currency(),
        }],
        C::OpenDispute {
            dispute_id,
            project_id,
            ..
        } => vec![
            StreamId::Dispute(*dispute_id),
            StreamId::Project(*project_id),
        ],
        C::AcceptDisputeProposal { dispute_id }
        | C::ContestDispute { dispute_id }
        | C::ResolveDispute { dispute_id, .. }
        | C::WithdrawDispute { dispute_id }
        | C::TimeOutDispute { dispute_id } => vec![StreamId::Dispute(*dispute_id)],
        C::RecordSuspense { suspense_id, .. }
        | C::AssignSuspense { suspense_id, .. }
        | C::ReturnSuspense { suspense_id } => {
            vec![StreamId::Suspense(*suspense_id)]
        }
        C::SetFeePolicy { .. } => vec![StreamId::LedgerPolicy],
    }
}

/// Earliest `at` (and time of money movement) a command may carry: 2000-01-01T00:00:00Z. A ledger records
/// what happens now; a year-1 or year-9999 time is a client bug, and it would poison as-of reports.
pub const COMMAND_TIME_MIN_UNIX_SECONDS: i64 = 946_684_800;
/// First instant no command time may reach: 2200-01-01T00:00:00Z (exclusive).
pub const COMMAND_TIME_END_UNIX_SECONDS: i64 = 7_258_118_400;

impl Command {
    /// Every amount the command carries (each must be within the amount ceiling).
    fn amounts(&self) -> Vec<Money> {
        use Command as C;
        match self {
            C::CreateQuote { amount, .. }
            | C::InitiateDeposit { amount, .. }
            | C::RequestCardRefund { amount, .. }
            | C::MaturePending { amount, .. }
            | C::RecordSuspense { amount, .. } => vec![*amount],
            C::CreateProject { milestones, .. } => milestones.clone(),
            C::ApplyResolution {
                release, refund, ..
            } => vec![*release, *refund],
            C::ConfirmDeposit {
                amount,
                gateway_fee,
                ..
            } => [Some(*amount), *gateway_fee]
                .into_iter()
                .flatten()
                .collect(),
            C::RequestPayout { amount, fee, .. } | C::OpenChargeback { amount, fee, .. } => {
                [Some(*amount), *fee].into_iter().flatten().collect()
            }
            C::ConfirmTransfer { gateway_fee, .. } => gateway_fee.iter().copied().collect(),
            C::OpenDispute {
                proposed_release, ..
            } => vec![*proposed_release],
            C::ResolveDispute { release, .. } => vec![*release],
            // The rest carry no amount (a new command with one must be listed above).
            _ => vec![],
        }
    }

    /// Every time the command carries besides its `at`: when money moved, deadlines.
    fn times(&self) -> Vec<DateTime<Utc>> {
        use Command as C;
        match self {
            C::OpenServiceRequest { expires_at, .. } => expires_at.iter().copied().collect(),
            C::CreateQuote { valid_until, .. } => vec![*valid_until],
            C::OpenDispute { respond_by, .. } => vec![*respond_by],
            C::ConfirmDeposit { occurred_at, .. }
            | C::ConfirmTransfer { occurred_at, .. }
            | C::ReversePayout { occurred_at, .. }
            | C::OpenChargeback { occurred_at, .. } => occurred_at.iter().copied().collect(),
            _ => vec![],
        }
    }
}

/// The checks every command passes before any decider sees it: sane times, amounts within the ceiling.
fn check_envelope(env: &CommandEnvelope) -> Result<(), Rejection> {
    let min = DateTime::<Utc>::from_timestamp(COMMAND_TIME_MIN_UNIX_SECONDS, 0)
        .expect("a valid constant");
    let end = DateTime::<Utc>::from_timestamp(COMMAND_TIME_END_UNIX_SECONDS, 0)
        .expect("a valid constant");
    for (what, time) in std::iter::once(("at", env.at))
        .chain(env.command.times().into_iter().map(|t| ("a time", t)))
    {
        if time < min || time >= end {
            return Err(Rejection::InvalidCommand(format!(
                "{what} of {} is outside {} .. {} (exclusive)",
                time.to_rfc3339(),
                min.format("%Y-%m-%d"),
                end.format("%Y-%m-%d"),
            )));
        }
    }
    for amount in env.command.amounts() {
        crate::aggregates::require_within_ceiling(
            "an amount",
            i128::from(amount.minor()),
            amount.currency(),
        )?;
    }
    Ok(())
}

/// Decides a command against the loaded states: the events to append (with derived event and entry ids),
/// or a rejection. Pure and deterministic.
pub fn decide(env: &CommandEnvelope, view: &dyn StateView) -> Result<Vec<Change>, DecideError> {
    check_envelope(env)?;
    let mut changes = route(env, view)?;
    guard_wallets(env, view, &mut changes)?;
    for (index, change) in changes.iter_mut().enumerate() {
        change.event_id = event_id(env.command_id, index);
        if let Some(entry) = change.event.entry_mut() {
            entry.derive_id(change.event_id);
        }
    }
    Ok(changes)
}

fn ctx<C>(env: &CommandEnvelope, body: C) -> Ctx<C> {
    Ctx {
        actor: env.actor,
        at: env.at,
        body,
    }
}

fn wrap<E>(stream: StreamId, events: Vec<E>, to_event: fn(E) -> Event) -> Vec<Change> {
    events
        .into_iter()
        .map(|e| Change {
            stream,
            event_id: Uuid::nil(),
            event: to_event(e),
        })
        .collect()
}

/// Runs one aggregate's decider on its loaded state and wraps its events for its stream.
fn decide_on<D, C>(
    env: &CommandEnvelope,
    state: &D::State,
    stream: StreamId,
    body: C,
    to_event: fn(D::Event) -> Event,
) -> Result<Vec<Change>, DecideError>
where
    D: Decider<Command = Ctx<C>, Error = Rejection>,
{
    let events = D::decide(&ctx(env, body), state)?;
    Ok(wrap(stream, events, to_event))
}

fn project_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    project_id: Uuid,
    body: ProjectCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Project(project_id);
    decide_on::<Project, _>(
        env,
        project_state(view, stream)?,
        stream,
        body,
        Event::Project,
    )
}

fn payment_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    payment_id: Uuid,
    body: PaymentCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Payment(payment_id);
    decide_on::<Payment, _>(
        env,
        payment_state(view, stream)?,
        stream,
        body,
        Event::Payment,
    )
}

fn booking_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    booking_id: Uuid,
    body: BookingCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Booking(booking_id);
    decide_on::<Booking, _>(
        env,
        booking_state(view, stream)?,
        stream,
        body,
        Event::Booking,
    )
}

fn quote_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    quote_id: Uuid,
    body: QuoteCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Quote(quote_id);
    decide_on::<Quote, _>(env, quote_state(view, stream)?, stream, body, Event::Quote)
}

fn request_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    request_id: Uuid,
    body: ServiceRequestCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::ServiceRequest(request_id);
    decide_on::<ServiceRequest, _>(
        env,
        request_state(view, stream)?,
        stream,
        body,
        Event::ServiceRequest,
    )
}

fn dispute_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    dispute_id: Uuid,
    body: DisputeCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Dispute(dispute_id);
    decide_on::<Dispute, _>(
        env,
        dispute_state(view, stream)?,
        stream,
        body,
        Event::Dispute,
    )
}

fn suspense_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    suspense_id: Uuid,
    body: SuspenseCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Suspense(suspense_id);
    decide_on::<Suspense, _>(
        env,
        suspense_state(view, stream)?,
        stream,
        body,
        Event::Suspense,
    )
}

fn request_info(view: &dyn StateView, request_id: Uuid) -> Result<RequestInfo, DecideError> {
    let r = request_state(view, StreamId::ServiceRequest(request_id))?;
    if r.status == RequestStatus::None {
        return Err(Rejection::NotFound {
            aggregate: "service request",
            id: request_id.to_string(),
        }
        .into());
    }
    Ok(RequestInfo {
        request_id,
        client: r.client,
        currency: r.currency.expect("open request has a currency"),
        open: r.status == RequestStatus::Open,
    })
}

fn route(env: &CommandEnvelope, view: &dyn StateView) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    let at = env.at;
    match &env.command {
        C::OpenServiceRequest {
            request_id,
            currency,
            title,
            expires_at,
        } => request_cmd(
            env,
            view,
            *request_id,
            ServiceRequestCommand::Open {
                request_id: *request_id,
                currency: *currency,
                title: title.clone(),
                expires_at: *expires_at,
            },
        ),
        C::CancelServiceRequest { request_id } => {
            request_cmd(env, view, *request_id, ServiceRequestCommand::Cancel)
        }
        C::ExpireServiceRequest { request_id } => {
            request_cmd(env, view, *request_id, ServiceRequestCommand::Expire)
        }
        C::CreateQuote {
            quote_id,
            request_id,
            amount,
            valid_until,
            fees,
        } => {
            let fees = policy_state(view, StreamId::LedgerPolicy)?.resolve_terms(fees)?;
            let request = request_info(view, *request_id)?;
            quote_cmd(
                env,
                view,
                *quote_id,
                QuoteCommand::Create {
                    quote_id: *quote_id,
                    request,
                    amount: *amount,
                    valid_until: *valid_until,
                    fees,
                },
            )
        }
        C::SendQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Send),
        C::AcceptQuote { quote_id } => {
            let q = quote_state(view, StreamId::Quote(*quote_id))?;
            if q.request_id.is_nil() {
                return Err(Rejection::NotFound {
                    aggregate: "quote",
                    id: quote_id.to_string(),
                }
                .into());
            }
            let request = request_info(view, q.request_id)?;
            let mut changes = quote_cmd(env, view, *quote_id, QuoteCommand::Accept { request })?;
            // At most one accepted quote: the request moves to Booked in the same atomic append.
            let booked = ServiceRequestCommand::MarkBooked {
                quote_id: *quote_id,
            };
            changes.extend(request_cmd(env, view, request.request_id, booked)?);
            Ok(changes)
        }
        C::DeclineQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Decline),
        C::WithdrawQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Withdraw),
        C::ExpireQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Expire),
        C::OpenBooking {
            booking_id,
            project_id,
            quote_id,
        } => open_booking(env, view, *booking_id, *project_id, *quote_id),
        C::ConfirmBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::Confirm)
        }
        C::StartBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::Start)
        }
        C::DeliverBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::Deliver)
        }
        C::AcceptBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::Accept)
        }
        C::AutoAcceptBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::AutoAccept)
        }
        C::SettleBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::Settle)
        }
        C::MarkBookingDisputed { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::MarkDisputed)
        }
        C::CancelBooking { booking_id } => {
            booking_cmd(env, view, *booking_id, BookingCommand::Cancel)
        }
        C::ApplyBookingCancellation {
            booking_id,
            keep_rate,
        } => apply_booking_cancellation(env, view, *booking_id, *keep_rate),
        C::CreateProject {
            project_id,
            buyer,
            seller,
            currency,
            milestones,
            fees,
        } => {
            let fees = policy_state(view, StreamId::LedgerPolicy)?.resolve_terms(fees)?;
            let project = NewProject {
                project_id: *project_id,
                buyer: *buyer,
                seller: *seller,
                currency: *currency,
                milestones: milestones.clone(),
                fees,
            };
            project_cmd(env, view, *project_id, ProjectCommand::Create(project))
        }
        C::SubmitProjectForAgreement { project_id } => {
            project_cmd(env, view, *project_id, ProjectCommand::SubmitForAgreement)
        }
        C::AgreeToProject { project_id } => {
            project_cmd(env, view, *project_id, ProjectCommand::Agree)
        }
        C::FundMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::Fund {
                milestone: *milestone,
            },
        ),
        C::SubmitMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::Submit {
                milestone: *milestone,
            },
        ),
        C::RequestChanges {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::RequestChanges {
                milestone: *milestone,
            },
        ),
        C::ApproveMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::Approve {
                milestone: *milestone,
            },
        ),
        C::AutoApproveMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::AutoApprove {
                milestone: *milestone,
            },
        ),
        C::ReleaseMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::Release {
                milestone: *milestone,
            },
        ),
        C::RefundMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::Refund {
                milestone: *milestone,
            },
        ),
        C::CancelMilestone {
            project_id,
            milestone,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::CancelMilestone {
                milestone: *milestone,
            },
        ),
        C::CancelProject { project_id } => {
            project_cmd(env, view, *project_id, ProjectCommand::Cancel)
        }
        C::CloseProject { project_id } => {
            project_cmd(env, view, *project_id, ProjectCommand::Close)
        }
        C::ApplyResolution {
            project_id,
            milestone,
            release,
            refund,
            cause,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::Resolve {
                milestone: *milestone,
                release: *release,
                refund: *refund,
                cause: *cause,
            },
        ),
        C::ClearMilestoneDispute {
            project_id,
            milestone,
            dispute_id,
        } => project_cmd(
            env,
            view,
            *project_id,
            ProjectCommand::WithdrawDispute {
                milestone: *milestone,
                dispute_id: *dispute_id,
            },
        ),
        C::InitiateDeposit {
            payment_id,
            amount,
            gateway,
            fund,
        } => {
            if let Some(target) = fund {
                check_fund_target(env, view, target)?;
            }
            payment_cmd(
                env,
                view,
                *payment_id,
                PaymentCommand::InitiateDeposit {
                    payment_id: *payment_id,
                    amount: *amount,
                    gateway: *gateway,
                    fund: *fund,
                },
            )
        }
        C::MarkPaymentProcessing { payment_id } => {
            payment_cmd(env, view, *payment_id, PaymentCommand::MarkProcessing)
        }
        C::ConfirmDeposit {
            payment_id,
            amount,
            gateway_fee,
            occurred_at,
        } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::DepositSucceeded {
                amount: *amount,
                gateway_fee: gateway_fee.unwrap_or(Money::zero(amount.currency())),
                occurred_at: occurred_at.unwrap_or(at),
            },
        ),
        C::FailDeposit { payment_id, reason } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::DepositFailed {
                reason: reason.clone(),
            },
        ),
        C::CancelDeposit { payment_id } => {
            payment_cmd(env, view, *payment_id, PaymentCommand::CancelDeposit)
        }
        C::RequestPayout {
            payout_id,
            amount,
            fee,
            gateway,
        } => {
            let fee = policy_state(view, StreamId::LedgerPolicy)?.payout_fee(*amount, *fee)?;
            payment_cmd(
                env,
                view,
                *payout_id,
                PaymentCommand::RequestPayout {
                    payout_id: *payout_id,
                    amount: *amount,
                    fee,
                    gateway: *gateway,
                },
            )
        }
        C::RequestCardRefund {
            refund_id,
            amount,
            gateway,
        } => payment_cmd(
            env,
            view,
            *refund_id,
            PaymentCommand::RequestCardRefund {
                refund_id: *refund_id,
                amount: *amount,
                gateway: *gateway,
            },
        ),
        C::ConfirmTransfer {
            payment_id,
            gateway_fee,
            occurred_at,
        } => {
            let p = payment_state(view, StreamId::Payment(*payment_id))?;
            let currency = p.currency.ok_or(Rejection::NotFound {
                aggregate: "payment",
                id: payment_id.to_string(),
            })?;
            payment_cmd(
                env,
                view,
                *payment_id,
                PaymentCommand::Succeeded {
                    gateway_fee: gateway_fee.unwrap_or(Money::zero(currency)),
                    occurred_at: occurred_at.unwrap_or(at),
                },
            )
        }
        C::FailTransfer { payment_id, reason } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::Failed {
                reason: reason.clone(),
            },
        ),
        C::CancelPayout { payment_id } => {
            payment_cmd(env, view, *payment_id, PaymentCommand::CancelPayout)
        }
        C::ReversePayout {
            payment_id,
            occurred_at,
        } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::PayoutReversed {
                occurred_at: occurred_at.unwrap_or(at),
            },
        ),
        C::OpenChargeback {
            payment_id,
            chargeback_id,
            amount,
            fee,
            occurred_at,
        } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::OpenChargeback {
                chargeback_id: *chargeback_id,
                amount: *amount,
                fee: fee.unwrap_or(Money::zero(amount.currency())),
                occurred_at: occurred_at.unwrap_or(at),
            },
        ),
        C::WinChargeback {
            payment_id,
            chargeback_id,
        } => payment_cmd(
            env,
            view,
            *payment_id,
            PaymentCommand::WinChargeback {
                chargeback_id: *chargeback_id,
            },
        ),
        C::LoseChargeback {
            payment_id,
            chargeback_id,
            recover_from_user,
        } => {
            let p = payment_state(view, StreamId::Payment(*payment_id))?;
            let currency = p.currency.ok_or(Rejection::NotFound {
                aggregate: "payment",
                id: payment_id.to_string(),
            })?;
            let wallet = wallet_state(
                view,
                StreamId::Wallet {
                    user: p.user,
                    currency,
                },
            )?;
            let escrow_sources = escrow_sources(view, p.user, currency, &wallet.escrow_projects)?;
            let mut changes = payment_cmd(
                env,
                view,
                *payment_id,
                PaymentCommand::LoseChargeback {
                    chargeback_id: *chargeback_id,
                    recover_from_user: *recover_from_user,
                    buyer_available_minor: wallet.available_minor,
                    escrow_sources,
                },
            )?;
            charge_back_projects(env, view, &mut changes)?;
            Ok(changes)
        }
        C::MaturePending { user, amount } => {
            let stream = StreamId::Wallet {
                user: *user,
                currency: amount.currency(),
            };
            let events = Wallet::decide(
                &ctx(
                    env,
                    WalletCommand::MaturePending {
                        user: *user,
                        amount: *amount,
                    },
                ),
                wallet_state(view, stream)?,
            )?;
            Ok(wrap(stream, events, Event::Wallet))
        }
        C::OpenDispute {
            dispute_id,
            project_id,
            milestone,
            reason,
            proposed_release,
            respond_by,
        } => open_dispute(
            env,
            view,
            *dispute_id,
            *project_id,
            *milestone,
            reason,
            *proposed_release,
            *respond_by,
        ),
        C::AcceptDisputeProposal { dispute_id } => {
            dispute_cmd(env, view, *dispute_id, DisputeCommand::AcceptProposal)
        }
        C::ContestDispute { dispute_id } => {
            dispute_cmd(env, view, *dispute_id, DisputeCommand::Contest)
        }
        C::ResolveDispute {
            dispute_id,
            release,
        } => dispute_cmd(
            env,
            view,
            *dispute_id,
            DisputeCommand::Resolve { release: *release },
        ),
        C::WithdrawDispute { dispute_id } => {
            dispute_cmd(env, view, *dispute_id, DisputeCommand::Withdraw)
        }
        C::TimeOutDispute { dispute_id } => {
            dispute_cmd(env, view, *dispute_id, DisputeCommand::TimeOut)
        }
        C::RecordSuspense {
            suspense_id,
            gateway,
            amount,
            reference,
            reason,
        } => suspense_cmd(
            env,
            view,
            *suspense_id,
            SuspenseCommand::Record {
                suspense_id: *suspense_id,
                gateway: *gateway,
                amount: *amount,
                reference: reference.clone(),
                reason: reason.clone(),
            },
        ),
        C::AssignSuspense { suspense_id, user } => suspense_cmd(
            env,
            view,
            *suspense_id,
            SuspenseCommand::AssignToWallet { user: *user },
        ),
        C::ReturnSuspense { suspense_id } => {
            suspense_cmd(env, view, *suspense_id, SuspenseCommand::ReturnToSender)
        }
        C::SetFeePolicy {
            commission,
            buyer_fee,
            payout_fee,
            overrides_allowed,
        } => {
            let schedule = FeeSchedule {
                commission: *commission,
                buyer_fee: *buyer_fee,
                payout_fee: *payout_fee,
                overrides_allowed: *overrides_allowed,
            };
            let stream = StreamId::LedgerPolicy;
            decide_on::<LedgerPolicy, _>(
                env,
                policy_state(view, stream)?,
                stream,
                LedgerPolicyCommand::SetFees(schedule),
                Event::LedgerPolicy,
            )
        }
    }
}

fn open_booking(
    env: &CommandEnvelope,
    view: &dyn StateView,
    booking_id: Uuid,
    project_id: Uuid,
    quote_id: Uuid,
) -> Result<Vec<Change>, DecideError> {
    let q = quote_state(view, StreamId::Quote(quote_id))?;
    if q.status != crate::aggregates::quote::QuoteStatus::Accepted {
        return Err(Rejection::transition("quote", q.status, "open a booking").into());
    }
    let amount = q.amount.expect("an accepted quote has an amount");
    let mut changes = booking_cmd(
        env,
        view,
        booking_id,
        BookingCommand::Open {
            booking_id,
            project_id,
            quote_id,
            client: q.client,
            provider: q.provider,
            auto_accept_days: q.fees.auto_approve_days,
            late_cancel_keep_rate: q.fees.late_cancel_keep_rate,
        },
    )?;
    let project = NewProject {
        project_id,
        buyer: q.client,
        seller: q.provider,
        currency: amount.currency(),
        milestones: vec![amount],
        fees: q.fees,
    };
    changes.extend(project_cmd(
        env,
        view,
        project_id,
        ProjectCommand::CreateForBooking {
            project,
            booking_id,
        },
    )?);
    Ok(changes)
}

fn apply_booking_cancellation(
    env: &CommandEnvelope,
    view: &dyn StateView,
    booking_id: Uuid,
    keep_rate: Rate,
) -> Result<Vec<Change>, DecideError> {
    let b = booking_state(view, StreamId::Booking(booking_id))?;
    if b.status != BookingStatus::Cancelled {
        return Err(Rejection::transition("booking", b.status, "apply a cancellation").into());
    }
    let p = project_state(view, StreamId::Project(b.project_id))?;
    let held = Money::from_minor(p.milestone(1)?.held_minor(), p.currency());
    if held.is_zero() {
        return project_cmd(env, view, b.project_id, ProjectCommand::Cancel);
    }
    let (keep, refund) = held.split_fee(keep_rate);
    project_cmd(
        env,
        view,
        b.project_id,
        ProjectCommand::Resolve {
            milestone: 1,
            release: keep,
            refund,
            cause: booking_id,
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn open_dispute(
    env: &CommandEnvelope,
    view: &dyn StateView,
    dispute_id: Uuid,
    project_id: Uuid,
    milestone: MilestoneNo,
    reason: &str,
    proposed_release: Money,
    respond_by: DateTime<Utc>,
) -> Result<Vec<Change>, DecideError> {
    let p = project_state(view, StreamId::Project(project_id))?;
    if !p.exists() {
        return Err(Rejection::NotFound {
            aggregate: "project",
            id: project_id.to_string(),
        }
        .into());
    }
    let m = p.milestone(milestone)?;
    let target = DisputedMilestone {
        project_id,
        milestone,
        buyer: p.buyer,
        seller: p.seller,
        held: Money::from_minor(m.held_minor(), p.currency()),
    };
    let mut changes = dispute_cmd(
        env,
        view,
        dispute_id,
        DisputeCommand::Open {
            dispute_id,
            target,
            reason: reason.to_string(),
            proposed_release,
            respond_by,
        },
    )?;
    // The project decider checks the milestone is disputable; actor rights were checked by the dispute.
    let mark = Ctx {
        actor: Actor::System,
        at: env.at,
        body: ProjectCommand::MarkDisputed {
            milestone,
            dispute_id,
        },
    };
    let events = Project::decide(&mark, p)?;
    changes.extend(wrap(StreamId::Project(project_id), events, Event::Project));
    Ok(changes)
}

/// A deposit may only be earmarked for a milestone its payer is the buyer of: otherwise confirming it would
/// spend the buyer's wallet on the payer's say-so.
fn check_fund_target(
    env: &CommandEnvelope,
    view: &dyn StateView,
    target: &FundTarget,
) -> Result<(), DecideError> {
    let p = project_state(view, StreamId::Project(target.project_id))?;
    if !p.exists() {
        return Err(Rejection::NotFound {
            aggregate: "project",
            id: target.project_id.to_string(),
        }
        .into());
    }
    p.milestone(target.milestone)?;
    if !env.actor.is(p.buyer) {
        return Err(Rejection::not_party(
            &env.actor,
            "earmark a deposit for a milestone",
            "only its buyer",
        )
        .into());
    }
    Ok(())
}

/// Bound on the milestones a lost chargeback may take escrow from (each adds two postings to its entry).
pub const CHARGEBACK_ESCROW_SOURCES_MAX: usize = 6;

/// Bound on the projects a lost chargeback looks into for escrow still held for the buyer: the newest ones
/// the buyer's wallet remembers funding (`WalletState::escrow_projects`). Each is one stream to load, so this
/// keeps the command's work bounded however many projects a buyer ever funded; escrow held in older projects
/// is not clawed back, and what the wallet and these projects do not cover becomes a receivable or a loss,
/// in domain.md's order. An operator can still refund or resolve an older milestone first.
pub const CHARGEBACK_PROJECTS_MAX: usize = 8;

/// The most streams any single command, with all its follow-ups, reads or writes: what an executor must be
/// able to load (one `NeedStream` round per stream, after the primary streams). The largest today is a lost
/// chargeback: the payment, the buyer's wallet and `CHARGEBACK_PROJECTS_MAX` projects; accepting a quote or
/// confirming an earmarked deposit reaches five or six. The model-based property test checks every command it
/// runs against this bound (`MemoryLedger::streams_needed`).
pub const STREAMS_PER_COMMAND_MAX: usize = 16;
const _: () = assert!(2 + CHARGEBACK_PROJECTS_MAX <= STREAMS_PER_COMMAND_MAX);

/// The open escrow a user funded as buyer in the newest `CHARGEBACK_PROJECTS_MAX` projects the wallet
/// remembers, oldest of those first, within `CHARGEBACK_ESCROW_SOURCES_MAX` milestones.
fn escrow_sources(
    view: &dyn StateView,
    user: Uuid,
    currency: Currency,
    projects: &[Uuid],
) -> Result<Vec<EscrowSource>, DecideError> {
    let newest = &projects[projects.len().saturating_sub(CHARGEBACK_PROJECTS_MAX)..];
    let mut sources = Vec::new();
    for project_id in newest {
        let p = project_state(view, StreamId::Project(*project_id))?;
        if p.buyer != user || p.currency != Some(currency) {
            continue;
        }
        for (i, m) in p.milestones.iter().enumerate() {
            if m.status.is_held_open()
                && m.held_minor() > 0
                && sources.len() < CHARGEBACK_ESCROW_SOURCES_MAX
            {
                sources.push(EscrowSource {
                    project_id: *project_id,
                    milestone: (i + 1) as MilestoneNo,
                    held_minor: m.held_minor(),
                    buyer_fee_minor: m.buyer_fee_minor,
                });
            }
        }
    }
    Ok(sources)
}

/// Mirrors a lost chargeback's escrow postings into each project it took from.
fn charge_back_projects(
    env: &CommandEnvelope,
    view: &dyn StateView,
    changes: &mut Vec<Change>,
) -> Result<(), DecideError> {
    let taken: Vec<(EscrowTaken, Uuid)> = changes
        .iter()
        .filter_map(|c| match &c.event {
            Event::Payment(PaymentEvent::ChargebackLost {
                from_escrow,
                chargeback_id,
                ..
            }) => Some(
                from_escrow
                    .iter()
                    .map(|t| (*t, *chargeback_id))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    let mut overlay = Overlay::new(view);
    for (t, chargeback_id) in taken {
        let stream = StreamId::Project(t.project_id);
        let body = ProjectCommand::ChargeBack {
            milestone: t.milestone,
            escrow: t.escrow,
            buyer_fee: t.buyer_fee,
            chargeback_id,
        };
        let cmd = Ctx {
            actor: Actor::System,
            at: env.at,
            body,
        };
        let events = Project::decide(&cmd, project_state(&overlay, stream)?)?;
        let new = wrap(stream, events, Event::Project);
        new.iter().for_each(|c| overlay.apply(c));
        changes.extend(new);
    }
    Ok(())
}

/// Nets every entry's postings to user wallets and passes them through each wallet's guard.
fn guard_wallets(
    env: &CommandEnvelope,
    view: &dyn StateView,
    changes: &mut Vec<Change>,
) -> Result<(), DecideError> {
    let mut deltas: BTreeMap<(Uuid, Currency), (i64, i64)> = BTreeMap::new();
    let mut escrow_of: BTreeMap<(Uuid, Currency), Uuid> = BTreeMap::new();
    for change in changes
        .iter()
        .filter(|c| !matches!(c.stream, StreamId::Wallet { .. }))
    {
        let Some(entry) = change.event.entry() else {
            continue;
        };
        // Funding: the wallet remembers the project its money went into (a lost chargeback looks there).
        if let Event::Project(ProjectEvent::MilestoneFunded { .. }) = &change.event
            && let Some(AggState::Project(ProjectState { id, buyer, .. })) =
                view.state(&change.stream)
        {
            escrow_of.insert((*buyer, entry.currency()), *id);
        }
        for p in entry.postings() {
            let Some(user) = p.account.wallet_owner() else {
                continue;
            };
            let signed = if p.side == p.account.normal_side() {
                p.amount.minor()
            } else {
                -p.amount.minor()
            };
            let slot = deltas.entry((user, entry.currency())).or_insert((0, 0));
            match p.account {
                Account::UserAvailable { .. } => slot.0 += signed,
                _ => slot.1 += signed,
            }
        }
    }
    for ((user, currency), (available_delta, pending_delta)) in deltas {
        let stream = StreamId::Wallet { user, currency };
        let state = wallet_state(view, stream)?;
        let cmd = Ctx {
            actor: Actor::System,
            at: env.at,
            body: WalletCommand::Apply {
                user,
                currency,
                available_delta,
                pending_delta,
                escrow_project: escrow_of.get(&(user, currency)).copied(),
            },
        };
        let events = Wallet::decide(&cmd, state)?;
        changes.extend(wrap(stream, events, Event::Wallet));
    }
    Ok(())
}

/// The pure process logic: which follow-up commands an appended event causes. `after` holds the states
/// after the append (the caller's view). Follow-up ids derive from the causing event, so re-running the
/// process after a crash issues the same commands (idempotent under the executor's command ids).
pub fn react(
    change: &Change,
    env: &CommandEnvelope,
    after: &dyn StateView,
) -> Vec<CommandEnvelope> {
    let follow = |purpose: &str, actor: Actor, command: Command| CommandEnvelope {
        command_id: derived_id(change.event_id, purpose),
        actor,
        at: env.at,
        command,
    };
    let booking_of = |project_id: Uuid| match after.state(&StreamId::Project(project_id)) {
        Some(AggState::Project(p)) => p.booking,
        _ => None,
    };
    let booking_of = |project_id: Uuid| {
        // A booking that is already cancelled or settled needs no further step.
        booking_of(project_id).filter(|b| match after.state(&StreamId::Booking(*b)) {
            Some(AggState::Booking(b)) => {
                !matches!(b.status, BookingStatus::Cancelled | BookingStatus::Settled)
            }
            _ => true,
        })
    };
    match (&change.stream, &change.event) {
        (StreamId::Quote(quote_id), Event::Quote(QuoteEvent::QuoteAccepted)) => vec![follow(
            "open-booking",
            Actor::System,
            Command::OpenBooking {
                booking_id: derived_id(*quote_id, "booking"),
                project_id: derived_id(*quote_id, "project"),
                quote_id: *quote_id,
            },
        )],
        (
            StreamId::Payment(payment_id),
            Event::Payment(PaymentEvent::DepositSucceeded {
                fund: Some(target), ..
            }),
        ) => {
            // Funds as the payer, so the project's own "only the buyer funds" rule applies again.
            let Some(AggState::Payment(payment)) = after.state(&StreamId::Payment(*payment_id))
            else {
                return vec![];
            };
            vec![follow(
                "fund",
                Actor::User(payment.user),
                Command::FundMilestone {
                    project_id: target.project_id,
                    milestone: target.milestone,
                },
            )]
        }
        (StreamId::Project(project_id), Event::Project(e)) => {
            react_project(*project_id, e, booking_of(*project_id), &follow)
        }
        (StreamId::Booking(booking_id), Event::Booking(e)) => {
            let Some(AggState::Booking(b)) = after.state(&StreamId::Booking(*booking_id)) else {
                return vec![];
            };
            react_booking(b, e, &follow)
        }
        (StreamId::Dispute(dispute_id), Event::Dispute(e)) => {
            let Some(AggState::Dispute(d)) = after.state(&StreamId::Dispute(*dispute_id)) else {
                return vec![];
            };
            match e {
                DisputeEvent::DisputeSettled {
                    release, refund, ..
                } => vec![follow(
                    "resolve",
                    Actor::System,
                    Command::ApplyResolution {
                        project_id: d.project_id,
                        milestone: d.milestone,
                        release: *release,
                        refund: *refund,
                        cause: *dispute_id,
                    },
                )],
                DisputeEvent::DisputeWithdrawn => vec![follow(
                    "clear",
                    Actor::System,
                    Command::ClearMilestoneDispute {
                        project_id: d.project_id,
                        milestone: d.milestone,
                        dispute_id: *dispute_id,
                    },
                )],
                _ => vec![],
            }
        }
        _ => vec![],
    }
}

fn react_project(
    project_id: Uuid,
    e: &ProjectEvent,
    booking: Option<Uuid>,
    follow: &dyn Fn(&str, Actor, Command) -> CommandEnvelope,
) -> Vec<CommandEnvelope> {
    match (e, booking) {
        (ProjectEvent::MilestoneApproved { milestone, .. }, _) => {
            vec![follow(
                "release",
                Actor::System,
                Command::ReleaseMilestone {
                    project_id,
                    milestone: *milestone,
                },
            )]
        }
        (ProjectEvent::MilestoneFunded { .. }, Some(booking_id)) => vec![follow(
            "confirm",
            Actor::System,
            Command::ConfirmBooking { booking_id },
        )],
        (
            ProjectEvent::MilestoneReleased { .. } | ProjectEvent::MilestoneResolved { .. },
            Some(booking_id),
        ) => {
            vec![follow(
                "settle",
                Actor::System,
                Command::SettleBooking { booking_id },
            )]
        }
        (ProjectEvent::MilestoneDisputed { .. }, Some(booking_id)) => vec![follow(
            "disputed",
            Actor::System,
            Command::MarkBookingDisputed { booking_id },
        )],
        _ => vec![],
    }
}

fn react_booking(
    b: &BookingState,
    e: &BookingEvent,
    follow: &dyn Fn(&str, Actor, Command) -> CommandEnvelope,
) -> Vec<CommandEnvelope> {
    let project_id = b.project_id;
    match e {
        BookingEvent::BookingDelivered { .. } => vec![follow(
            "submit",
            Actor::User(b.provider),
            Command::SubmitMilestone {
                project_id,
                milestone: 1,
            },
        )],
        BookingEvent::BookingAccepted { auto: false } => vec![follow(
            "approve",
            Actor::User(b.client),
            Command::ApproveMilestone {
                project_id,
                milestone: 1,
            },
        )],
        BookingEvent::BookingAccepted { auto: true } => vec![follow(
            "auto-approve",
            Actor::System,
            Command::AutoApproveMilestone {
                project_id,
                milestone: 1,
            },
        )],
        BookingEvent::BookingCancelled { keep_rate, .. } => vec![follow(
            "cancel",
            Actor::System,
            Command::ApplyBookingCancellation {
                booking_id: b.id,
                keep_rate: *keep_rate,
            },
        )],
        _ => vec![],
    }
}

/// A command's full effect: its own events, then the follow-ups the process logic derived from them (run
/// to completion within fixed bounds), all to be appended atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub changes: Vec<Change>,
    /// Each follow-up with its events or its rejection (a rejected follow-up, such as funding from an
    /// underpaid deposit, leaves the command's own events standing).
    pub follow_ups: Vec<(CommandEnvelope, Result<Vec<Change>, Rejection>)>,
}

impl Decision {
    /// Every event to append, in order: the command's, then each accepted follow-up's.
    pub fn all_changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().chain(
            self.follow_ups
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok())
                .flatten(),
        )
    }
}

/// States after some changes, over the caller's loaded states.
pub struct Overlay<'a> {
    base: &'a dyn StateView,
    changed: std::collections::HashMap<StreamId, AggState>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn StateView) -> Overlay<'a> {
        Overlay {
            base,
            changed: std::collections::HashMap::new(),
        }
    }

    pub fn apply(&mut self, change: &Change) {
        let state = match self.changed.remove(&change.stream) {
            Some(s) => s,
            None => self
                .base
                .state(&change.stream)
                .cloned()
                .unwrap_or_else(|| AggState::initial(&change.stream)),
        };
        self.changed
            .insert(change.stream, evolve(state, &change.event));
    }

    /// The states this overlay changed (to write back into a cache after a successful append).
    pub fn into_changed(self) -> std::collections::HashMap<StreamId, AggState> {
        self.changed
    }
}

impl StateView for Overlay<'_> {
    fn state(&self, stream: &StreamId) -> Option<&AggState> {
        self.changed.get(stream).or_else(|| self.base.state(stream))
    }
}

/// Decides a command and, against the states its events produce, the follow-ups they cause (breadth first,
/// at most `FOLLOW_UPS_MAX`, depth at most `FOLLOW_UP_DEPTH_MAX`). A `NeedStream` anywhere asks the caller
/// to load that stream and decide again; the whole computation is pure, so redoing it is safe.
pub fn decide_all<'a>(
    env: &CommandEnvelope,
    view: &'a dyn StateView,
) -> Result<(Decision, Overlay<'a>), DecideError> {
    let changes = decide(env, view)?;
    let mut overlay = Overlay::new(view);
    changes.iter().for_each(|c| overlay.apply(c));
    let mut follow_ups = Vec::new();
    let mut frontier: Vec<(CommandEnvelope, Vec<Change>)> = vec![(env.clone(), changes.clone())];
    for _depth in 0..FOLLOW_UP_DEPTH_MAX {
        let mut next = Vec::new();
        for (cause, cause_changes) in &frontier {
            for change in cause_changes {
                for follow in react(change, cause, &overlay) {
                    assert!(
                        follow_ups.len() < FOLLOW_UPS_MAX,
                        "process logic exceeded {FOLLOW_UPS_MAX} follow-ups"
                    );
                    let result = match decide(&follow, &overlay) {
                        Ok(c) => Ok(c),
                        Err(DecideError::Rejected(r)) => Err(r),
                        Err(need @ DecideError::NeedStream(_)) => return Err(need),
                    };
                    if let Ok(c) = &result {
                        c.iter().for_each(|change| overlay.apply(change));
                        next.push((follow.clone(), c.clone()));
                    }
                    follow_ups.push((follow, result));
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok((
        Decision {
            changes,
            follow_ups,
        },
        overlay,
    ))
}
