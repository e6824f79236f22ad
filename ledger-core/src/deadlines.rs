//! Deadlines are data: each event that starts a clock yields a deadline (kind, stream, due time, the stream
//! version it was computed from), and a later event that stops the clock cancels it. `clocks` derives both
//! from one event and its stream's state before and after; the durations were applied when the starting
//! event was decided (the engine stamps due times and durations into events from the ledger's
//! `DeadlinePolicy`), so this is a function of the stream alone, and a policy change never moves a running
//! clock.
//!
//! A deadline fires exactly one command (`Deadline::envelope`: actor `System`, `at` = its due time, a
//! command id derived from the deadline id) under one idempotency key (`Deadline::idempotency_key`), so two
//! workers, a restart or a replay cannot fire it twice. `Book` folds a log into the pending deadlines
//! (tests, replays; the `escrow.deadlines` read table is the same fold in ledger-projections).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregates::booking::{BookingEvent, BookingState, BookingStatus};
use crate::aggregates::dispute::{DisputeEvent, DisputeState, DisputeStatus};
use crate::aggregates::payment::{PaymentEvent, PaymentState, PaymentStatus};
use crate::aggregates::project::{MilestoneStatus, ProjectEvent, ProjectState};
use crate::aggregates::quote::{QuoteEvent, QuoteState, QuoteStatus};
use crate::aggregates::service_request::{RequestStatus, ServiceRequestEvent, ServiceRequestState};
use crate::engine::{AggState, Change, Command, CommandEnvelope, Event, StreamId, evolve};
use crate::ids::{Actor, MilestoneNo, derived_id};

/// What a deadline fires, named after the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadlineKind {
    AutoApproveMilestone,
    AutoAcceptBooking,
    ExpireQuote,
    ExpireServiceRequest,
    MatureRelease,
    TimeOutDispute,
    ExpireDeposit,
}

impl DeadlineKind {
    pub const ALL: [DeadlineKind; 7] = [
        DeadlineKind::AutoApproveMilestone,
        DeadlineKind::AutoAcceptBooking,
        DeadlineKind::ExpireQuote,
        DeadlineKind::ExpireServiceRequest,
        DeadlineKind::MatureRelease,
        DeadlineKind::TimeOutDispute,
        DeadlineKind::ExpireDeposit,
    ];

    /// The `type` of the command it fires.
    pub fn name(self) -> &'static str {
        match self {
            DeadlineKind::AutoApproveMilestone => "auto_approve_milestone",
            DeadlineKind::AutoAcceptBooking => "auto_accept_booking",
            DeadlineKind::ExpireQuote => "expire_quote",
            DeadlineKind::ExpireServiceRequest => "expire_service_request",
            DeadlineKind::MatureRelease => "mature_release",
            DeadlineKind::TimeOutDispute => "time_out_dispute",
            DeadlineKind::ExpireDeposit => "expire_deposit",
        }
    }

    pub fn from_name(name: &str) -> Option<DeadlineKind> {
        DeadlineKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Which clock: a kind on a stream (and a milestone of a project).
pub type ClockKey = (DeadlineKind, StreamId, Option<MilestoneNo>);

/// One running clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// Derived from the id of the event that started it and the kind.
    pub id: Uuid,
    pub kind: DeadlineKind,
    pub stream: StreamId,
    pub milestone: Option<MilestoneNo>,
    pub due_at: DateTime<Utc>,
    /// The stream version of the event that started it.
    pub version: i64,
    /// Who may see it (parties of the aggregate).
    pub parties: Vec<Uuid>,
}

impl Deadline {
    pub fn key(&self) -> ClockKey {
        (self.kind, self.stream, self.milestone)
    }

    /// The command it fires.
    pub fn command(&self) -> Command {
        let id = |s: &StreamId| match *s {
            StreamId::ServiceRequest(id)
            | StreamId::Quote(id)
            | StreamId::Booking(id)
            | StreamId::Project(id)
            | StreamId::Payment(id)
            | StreamId::Dispute(id)
            | StreamId::Suspense(id) => id,
            StreamId::Wallet { user, .. } => user,
            _ => Uuid::nil(),
        };
        let target = id(&self.stream);
        let milestone = self.milestone.unwrap_or(1);
        match self.kind {
            DeadlineKind::AutoApproveMilestone => Command::AutoApproveMilestone {
                project_id: target,
                milestone,
            },
            DeadlineKind::AutoAcceptBooking => Command::AutoAcceptBooking { booking_id: target },
            DeadlineKind::ExpireQuote => Command::ExpireQuote { quote_id: target },
            DeadlineKind::ExpireServiceRequest => {
                Command::ExpireServiceRequest { request_id: target }
            }
            DeadlineKind::MatureRelease => Command::MatureRelease {
                project_id: target,
                milestone,
            },
            DeadlineKind::TimeOutDispute => Command::TimeOutDispute { dispute_id: target },
            DeadlineKind::ExpireDeposit => Command::ExpireDeposit { payment_id: target },
        }
    }

    /// The command as the timer sends it: by the system, at the due time, with a command id of its own.
    pub fn envelope(&self) -> CommandEnvelope {
        CommandEnvelope {
            command_id: derived_id(self.id, "fire"),
            actor: Actor::System,
            at: self.due_at,
            command: self.command(),
        }
    }

    /// The idempotency key every firing of this deadline uses.
    pub fn idempotency_key(&self) -> String {
        deadline_key(self.id)
    }
}

/// The idempotency key of the deadline with this id.
pub fn deadline_key(id: Uuid) -> String {
    format!("deadline:{id}")
}

/// The one event that may be appended to any stream that keeps a clock: the timer's firing of one of its
/// deadlines was refused for good (the world moved on), so the clock is closed. No state changes; the
/// engine appends it only after deciding the deadline's own command again and seeing it refused
/// (`close_deadline`), so it cannot silence a clock that could still fire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeadlineEvent {
    DeadlineClosed {
        deadline_id: Uuid,
        /// The command the deadline fires (`DeadlineKind::name`).
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        milestone: Option<MilestoneNo>,
        /// Why its command was refused: the rejection's code and message.
        code: String,
        reason: String,
    },
}

/// What one event does to the clocks of its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clock {
    Start(Deadline),
    Stop(ClockKey),
}

/// The clocks `event` (the `version`th of `stream`, id `event_id`) starts and stops, given its stream's
/// state before and after it.
pub fn clocks(
    stream: &StreamId,
    before: &AggState,
    after: &AggState,
    event: &Event,
    event_id: Uuid,
    version: i64,
) -> Vec<Clock> {
    let start = |kind: DeadlineKind, milestone, due_at, parties: Vec<Uuid>| {
        Clock::Start(Deadline {
            id: derived_id(event_id, kind.name()),
            kind,
            stream: *stream,
            milestone,
            due_at: ceil_to_microsecond(due_at),
            version,
            parties,
        })
    };
    let stop = |kind: DeadlineKind| Clock::Stop((kind, *stream, None));
    let mut out = Vec::new();
    if let Event::Deadline(DeadlineEvent::DeadlineClosed {
        kind, milestone, ..
    }) = event
    {
        if let Some(kind) = DeadlineKind::from_name(kind) {
            out.push(Clock::Stop((kind, *stream, *milestone)));
        }
        return out;
    }
    match (before, after, event) {
        (AggState::Project(b), AggState::Project(a), Event::Project(e)) => {
            out = project_clocks(stream, b, a, e, &start);
        }
        (AggState::Booking(b), AggState::Booking(a), Event::Booking(e)) => {
            out = booking_clocks(b, a, e, &start, stop(DeadlineKind::AutoAcceptBooking));
        }
        (AggState::Quote(b), AggState::Quote(a), Event::Quote(e)) => {
            out = quote_clocks(b, a, e, &start, stop(DeadlineKind::ExpireQuote));
        }
        (AggState::ServiceRequest(b), AggState::ServiceRequest(a), Event::ServiceRequest(e)) => {
            out = request_clocks(b, a, e, &start, stop(DeadlineKind::ExpireServiceRequest));
        }
        (AggState::Dispute(b), AggState::Dispute(a), Event::Dispute(e)) => {
            out = dispute_clocks(b, a, e, &start, stop(DeadlineKind::TimeOutDispute));
        }
        (AggState::Payment(b), AggState::Payment(a), Event::Payment(e)) => {
            out = deposit_clocks(b, a, e, &start, stop(DeadlineKind::ExpireDeposit));
        }
        _ => {}
    }
    out
}

/// A delivered booking's auto-acceptance (stopped when it leaves `Delivered`).
fn booking_clocks(
    before: &BookingState,
    after: &BookingState,
    event: &BookingEvent,
    start: &Starter<'_>,
    stop: Clock,
) -> Vec<Clock> {
    let mut out = Vec::new();
    if let BookingEvent::BookingDelivered { at } = event {
        let due = *at + after.auto_accept_after();
        let parties = vec![after.client, after.provider];
        out.push(start(DeadlineKind::AutoAcceptBooking, None, due, parties));
    }
    if before.status == BookingStatus::Delivered && after.status != BookingStatus::Delivered {
        out.push(stop);
    }
    out
}

/// A drafted quote's expiry, when it has one (stopped when it is no longer a draft or sent).
fn quote_clocks(
    before: &QuoteState,
    after: &QuoteState,
    event: &QuoteEvent,
    start: &Starter<'_>,
    stop: Clock,
) -> Vec<Clock> {
    let open = |s: QuoteStatus| matches!(s, QuoteStatus::Draft | QuoteStatus::Sent);
    let mut out = Vec::new();
    if let (QuoteEvent::QuoteDrafted { .. }, Some(due)) = (event, after.valid_until) {
        let parties = vec![after.provider, after.client];
        out.push(start(DeadlineKind::ExpireQuote, None, due, parties));
    }
    if open(before.status) && !open(after.status) {
        out.push(stop);
    }
    out
}

/// An opened request's expiry, when it has one (stopped when it is no longer open).
fn request_clocks(
    before: &ServiceRequestState,
    after: &ServiceRequestState,
    event: &ServiceRequestEvent,
    start: &Starter<'_>,
    stop: Clock,
) -> Vec<Clock> {
    let mut out = Vec::new();
    if let (ServiceRequestEvent::ServiceRequestOpened { .. }, Some(due)) = (event, after.expires_at)
    {
        let kind = DeadlineKind::ExpireServiceRequest;
        out.push(start(kind, None, due, vec![after.client]));
    }
    if before.status == RequestStatus::Open && after.status != RequestStatus::Open {
        out.push(stop);
    }
    out
}

/// An opened dispute's response deadline (stopped when it no longer awaits a response).
fn dispute_clocks(
    before: &DisputeState,
    after: &DisputeState,
    event: &DisputeEvent,
    start: &Starter<'_>,
    stop: Clock,
) -> Vec<Clock> {
    let waiting = DisputeStatus::AwaitingResponse;
    let mut out = Vec::new();
    if let (DisputeEvent::DisputeOpened { .. }, Some(due)) = (event, after.respond_by) {
        let parties = vec![after.opened_by, after.counterparty];
        out.push(start(DeadlineKind::TimeOutDispute, None, due, parties));
    }
    if before.status == waiting && after.status != waiting {
        out.push(stop);
    }
    out
}

/// An unpaid deposit's expiry: it runs while the deposit waits for the payer (pending, or after failed
/// attempts) and stops while an attempt is processing, whose outcome it waits for (a processing deposit is
/// never expired under the gateway's feet); an attempt that then fails starts it again, due at the original
/// expiry or at the failure, whichever is later. Paid or cancelled, it stops for good.
fn deposit_clocks(
    before: &PaymentState,
    after: &PaymentState,
    event: &PaymentEvent,
    start: &Starter<'_>,
    stop: Clock,
) -> Vec<Clock> {
    let waiting = |s: PaymentStatus| matches!(s, PaymentStatus::Pending | PaymentStatus::Failed);
    let mut out = Vec::new();
    match event {
        PaymentEvent::DepositInitiated {
            expires_at: Some(due),
            ..
        } => out.push(start(
            DeadlineKind::ExpireDeposit,
            None,
            *due,
            vec![after.user],
        )),
        PaymentEvent::DepositAttemptFailed { at: Some(at), .. }
            if before.status == PaymentStatus::Processing =>
        {
            if let Some(expiry) = after.expires_at {
                let due = expiry.max(*at);
                out.push(start(
                    DeadlineKind::ExpireDeposit,
                    None,
                    due,
                    vec![after.user],
                ));
            }
        }
        _ => {}
    }
    if waiting(before.status) && !waiting(after.status) {
        out.push(stop);
    }
    out
}

/// A due time as PostgreSQL keeps it: microseconds, rounded up, so a command sent at the stored due time
/// is never before the exact one (a `too_early` refusal would otherwise repeat forever).
pub fn ceil_to_microsecond(at: DateTime<Utc>) -> DateTime<Utc> {
    let below = at.timestamp_subsec_nanos() % 1_000;
    if below == 0 {
        at
    } else {
        at + Duration::nanoseconds(i64::from(1_000 - below))
    }
}

type Starter<'a> =
    dyn Fn(DeadlineKind, Option<MilestoneNo>, DateTime<Utc>, Vec<Uuid>) -> Clock + 'a;

/// A submitted milestone's auto-approval (stopped when it leaves `Submitted`), and the maturation of a
/// release's pending proceeds (stopped when they mature).
fn project_clocks(
    stream: &StreamId,
    before: &ProjectState,
    after: &ProjectState,
    event: &ProjectEvent,
    start: &Starter<'_>,
) -> Vec<Clock> {
    let parties = vec![after.buyer, after.seller];
    let mut out = Vec::new();
    match event {
        // A booking's milestone runs on the booking's clock (auto-acceptance), not one of its own.
        ProjectEvent::MilestoneSubmitted { milestone, at } if after.booking.is_none() => {
            let due = *at + Duration::days(i64::from(after.fees.auto_approve_days));
            let kind = DeadlineKind::AutoApproveMilestone;
            out.push(start(kind, Some(*milestone), due, parties));
        }
        // A withdrawn dispute puts a submitted milestone back under review: its approval clock restarts from
        // the withdrawal (escrow is never left held with no clock running).
        ProjectEvent::MilestoneDisputeWithdrawn {
            milestone,
            at: Some(at),
            ..
        } if after.booking.is_none()
            && after
                .milestone(*milestone)
                .is_ok_and(|m| m.status == MilestoneStatus::Submitted) =>
        {
            let due = *at + Duration::days(i64::from(after.fees.auto_approve_days));
            let kind = DeadlineKind::AutoApproveMilestone;
            out.push(start(kind, Some(*milestone), due, parties));
        }
        ProjectEvent::MilestoneReleased {
            milestone,
            matures_at: Some(due),
            seller_bucket_pending: true,
            ..
        }
        | ProjectEvent::MilestoneResolved {
            milestone,
            matures_at: Some(due),
            ..
        } => {
            let kind = DeadlineKind::MatureRelease;
            out.push(start(kind, Some(*milestone), *due, vec![after.seller]));
        }
        ProjectEvent::MilestoneProceedsMatured { milestone, .. } => {
            let key = (DeadlineKind::MatureRelease, *stream, Some(*milestone));
            out.push(Clock::Stop(key));
        }
        _ => {}
    }
    for (i, (b, a)) in before.milestones.iter().zip(&after.milestones).enumerate() {
        if b.status == MilestoneStatus::Submitted && a.status != MilestoneStatus::Submitted {
            let milestone = Some((i + 1) as MilestoneNo);
            out.push(Clock::Stop((
                DeadlineKind::AutoApproveMilestone,
                *stream,
                milestone,
            )));
        }
    }
    out
}

/// The pending deadlines of a log, folded change by change (its own copy of each stream's state).
#[derive(Default, Clone)]
pub struct Book {
    states: HashMap<StreamId, (AggState, i64)>,
    pending: BTreeMap<ClockKey, Deadline>,
}

impl Book {
    pub fn new() -> Book {
        Book::default()
    }

    /// Folds one appended change: the clocks it starts replace any pending one of the same key; the
    /// clocks it stops are dropped.
    pub fn apply(&mut self, change: &Change) {
        let (before, version) = self
            .states
            .remove(&change.stream)
            .unwrap_or_else(|| (AggState::initial(&change.stream), 0));
        let after = evolve(before.clone(), &change.event);
        let version = version + 1;
        let found = clocks(
            &change.stream,
            &before,
            &after,
            &change.event,
            change.event_id,
            version,
        );
        for clock in found {
            match clock {
                Clock::Start(deadline) => {
                    self.pending.insert(deadline.key(), deadline);
                }
                Clock::Stop(key) => {
                    self.pending.remove(&key);
                }
            }
        }
        self.states.insert(change.stream, (after, version));
    }

    /// Every pending deadline.
    pub fn pending(&self) -> impl Iterator<Item = &Deadline> {
        self.pending.values()
    }

    /// The pending deadlines due at `now`, in due order (then by id).
    pub fn due(&self, now: DateTime<Utc>) -> Vec<Deadline> {
        let mut due: Vec<Deadline> = self
            .pending
            .values()
            .filter(|d| d.due_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|d| (d.due_at, d.id));
        due
    }

    /// Drops a deadline whose command was refused for good (the world moved on).
    pub fn close(&mut self, key: &ClockKey) {
        self.pending.remove(key);
    }
}
