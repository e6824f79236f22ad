//! The process logic: which follow-up commands an appended event causes (accepted quote -> booking +
//! project; confirmed deposit with a target -> fund; approval -> release; dispute settled -> resolution;
//! booking steps <-> milestone steps).

use uuid::Uuid;

use super::{AggState, Change, Command, CommandEnvelope, Event, StateView, StreamId};
use crate::aggregates::booking::{BookingEvent, BookingState, BookingStatus};
use crate::aggregates::dispute::{DisputeEvent, DisputeState};
use crate::aggregates::payment::{FundTarget, PaymentEvent};
use crate::aggregates::project::ProjectEvent;
use crate::aggregates::quote::{QuoteEvent, QuoteStatus};
use crate::ids::{Actor, derived_id};

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
        (StreamId::Quote(quote_id), Event::Quote(QuoteEvent::QuoteAccepted)) => {
            react_quote_accepted(*quote_id, after, &follow)
        }
        (
            StreamId::Payment(payment_id),
            Event::Payment(PaymentEvent::DepositSucceeded {
                fund: Some(target), ..
            }),
        ) => react_deposit(*payment_id, target, after, &follow),
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
            react_dispute(*dispute_id, d, e, &follow)
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

/// A confirmed deposit earmarked for a milestone funds it, as the payer, so the project's own "only the
/// buyer funds" rule applies again.
fn react_deposit(
    payment_id: Uuid,
    target: &FundTarget,
    after: &dyn StateView,
    follow: &dyn Fn(&str, Actor, Command) -> CommandEnvelope,
) -> Vec<CommandEnvelope> {
    let Some(AggState::Payment(payment)) = after.state(&StreamId::Payment(payment_id)) else {
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

/// A settled dispute's split is applied to its milestone; a withdrawn one gives the milestone back.
fn react_dispute(
    dispute_id: Uuid,
    d: &DisputeState,
    e: &DisputeEvent,
    follow: &dyn Fn(&str, Actor, Command) -> CommandEnvelope,
) -> Vec<CommandEnvelope> {
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
                cause: dispute_id,
            },
        )],
        DisputeEvent::DisputeWithdrawn => vec![follow(
            "clear",
            Actor::System,
            Command::ClearMilestoneDispute {
                project_id: d.project_id,
                milestone: d.milestone,
                dispute_id,
            },
        )],
        _ => vec![],
    }
}

/// An accepted quote opens its booking, and the requester declines the request's other quotes (those no
/// longer open refuse, which leaves the acceptance standing).
fn react_quote_accepted(
    quote_id: Uuid,
    after: &dyn StateView,
    follow: &dyn Fn(&str, Actor, Command) -> CommandEnvelope,
) -> Vec<CommandEnvelope> {
    let mut out = vec![follow(
        "open-booking",
        Actor::System,
        Command::OpenBooking {
            booking_id: derived_id(quote_id, "booking"),
            project_id: derived_id(quote_id, "project"),
            quote_id,
        },
    )];
    let Some(AggState::Quote(q)) = after.state(&StreamId::Quote(quote_id)) else {
        return out;
    };
    let Some(AggState::ServiceRequest(r)) = after.state(&StreamId::ServiceRequest(q.request_id))
    else {
        return out;
    };
    for other in r.quotes.iter().filter(|id| **id != quote_id) {
        let still_open = match after.state(&StreamId::Quote(*other)) {
            Some(AggState::Quote(o)) => o.status == QuoteStatus::Sent,
            _ => true,
        };
        if still_open {
            out.push(follow(
                &format!("decline-{other}"),
                Actor::User(r.client),
                Command::DeclineQuote { quote_id: *other },
            ));
        }
    }
    out
}
