//! Service requests, quotes and bookings. Cross-stream rules: accepting a quote books its request in the
//! same append; opening a booking creates the single-milestone project behind it; a cancelled booking's
//! policy is applied to that project's escrow.

use chrono::Duration;
use uuid::Uuid;

use super::super::deciders::{booking_cmd, project_cmd, quote_cmd, request_cmd, request_info};
use super::super::view::{booking_state, policy_state, project_state, quote_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, StateView, StreamId};
use super::misrouted;
use crate::aggregates::booking::{BookingCommand, BookingStatus};
use crate::aggregates::project::{MilestoneStatus, NewProject, ProjectCommand};
use crate::aggregates::quote::{QuoteCommand, QuoteStatus};
use crate::aggregates::service_request::ServiceRequestCommand;
use crate::error::Rejection;
use crate::money::{Money, Rate};

pub(super) fn route_request_or_quote(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    match &env.command {
        C::OpenServiceRequest {
            request_id,
            currency,
            title,
            expires_at,
        } => {
            // A request opened without an expiry expires after the policy's duration; a stated one must lie
            // ahead (a clock never starts already past its due time).
            if let Some(stated) = expires_at
                && *stated <= env.at
            {
                return Err(Rejection::DeadlineTooSoon {
                    what: "expires_at",
                    stated: stated.to_rfc3339(),
                    earliest: env.at.to_rfc3339(),
                }
                .into());
            }
            let policy = policy_state(view, StreamId::LedgerPolicy)?.deadline_policy();
            let after = Duration::hours(i64::from(policy.request_expiry_hours.default));
            let open = ServiceRequestCommand::Open {
                request_id: *request_id,
                currency: *currency,
                title: title.clone(),
                expires_at: Some(expires_at.unwrap_or(env.at + after)),
            };
            request_cmd(env, view, *request_id, open)
        }
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
            let create = QuoteCommand::Create {
                quote_id: *quote_id,
                request,
                amount: *amount,
                valid_until: *valid_until,
                fees,
            };
            let mut changes = quote_cmd(env, view, *quote_id, create)?;
            // The request remembers its quotes: accepting one declines the others.
            let record = ServiceRequestCommand::RecordQuote {
                quote_id: *quote_id,
            };
            changes.extend(request_cmd(env, view, *request_id, record)?);
            Ok(changes)
        }
        C::SendQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Send),
        C::AcceptQuote { quote_id } => accept_quote(env, view, *quote_id),
        C::DeclineQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Decline),
        C::WithdrawQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Withdraw),
        C::ExpireQuote { quote_id } => quote_cmd(env, view, *quote_id, QuoteCommand::Expire),
        other => misrouted("request or quote", other),
    }
}

fn accept_quote(
    env: &CommandEnvelope,
    view: &dyn StateView,
    quote_id: Uuid,
) -> Result<Vec<Change>, DecideError> {
    let q = quote_state(view, StreamId::Quote(quote_id))?;
    if q.request_id.is_nil() {
        return Err(Rejection::NotFound {
            aggregate: "quote",
            id: quote_id.to_string(),
        }
        .into());
    }
    let request = request_info(view, q.request_id)?;
    let mut changes = quote_cmd(env, view, quote_id, QuoteCommand::Accept { request })?;
    // At most one accepted quote: the request moves to Booked in the same atomic append.
    let booked = ServiceRequestCommand::MarkBooked { quote_id };
    changes.extend(request_cmd(env, view, request.request_id, booked)?);
    Ok(changes)
}

pub(super) fn route_booking(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use BookingCommand as B;
    use Command as C;
    let (booking_id, body) = match &env.command {
        C::OpenBooking {
            booking_id,
            project_id,
            quote_id,
        } => return open_booking(env, view, *booking_id, *project_id, *quote_id),
        C::ApplyBookingCancellation {
            booking_id,
            keep_rate,
        } => return apply_booking_cancellation(env, view, *booking_id, *keep_rate),
        C::ConfirmBooking { booking_id }
        | C::SettleBooking { booking_id }
        | C::MarkBookingDisputed { booking_id } => {
            // Only the process may take these steps (the booking decider refuses anyone else first).
            if env.actor == crate::ids::Actor::System {
                check_booking_step(view, *booking_id, &env.command)?;
            }
            let body = match env.command {
                C::ConfirmBooking { .. } => B::Confirm,
                C::SettleBooking { .. } => B::Settle,
                _ => B::MarkDisputed,
            };
            return booking_cmd(env, view, *booking_id, body);
        }
        C::StartBooking { booking_id } => (booking_id, B::Start),
        C::DeliverBooking { booking_id } => (booking_id, B::Deliver),
        C::AcceptBooking { booking_id } => (booking_id, B::Accept),
        C::AutoAcceptBooking { booking_id } => (booking_id, B::AutoAccept),
        C::CancelBooking { booking_id } => (booking_id, B::Cancel),
        other => misrouted("booking", other),
    };
    booking_cmd(env, view, *booking_id, body)
}

fn open_booking(
    env: &CommandEnvelope,
    view: &dyn StateView,
    booking_id: Uuid,
    project_id: Uuid,
    quote_id: Uuid,
) -> Result<Vec<Change>, DecideError> {
    let q = quote_state(view, StreamId::Quote(quote_id))?;
    if q.status != QuoteStatus::Accepted {
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
            auto_accept_hours: Some(auto_accept_hours(view, q.fees.auto_approve_days)?),
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

/// A booking's silence before auto-acceptance: the quote's `auto_approve_days` when it states one other than
/// the policy's default for milestones (checked against the policy when the quote was created), else the
/// policy's hours for bookings.
fn auto_accept_hours(view: &dyn StateView, quote_days: u32) -> Result<u32, DecideError> {
    let policy = policy_state(view, StreamId::LedgerPolicy)?.deadline_policy();
    if quote_days == policy.auto_approve_days.default {
        return Ok(policy.auto_accept_hours.default);
    }
    Ok(quote_days.saturating_mul(24))
}

/// The booking steps the process takes follow its project's milestone, never run ahead of it: confirmed
/// once the milestone is funded, disputed while it is, settled once its escrow is. (Whoever sends them: a
/// booking settled on someone's say-so would stop its auto-acceptance while the escrow stays held.)
fn check_booking_step(
    view: &dyn StateView,
    booking_id: Uuid,
    command: &Command,
) -> Result<(), DecideError> {
    let b = booking_state(view, StreamId::Booking(booking_id))?;
    if b.status == BookingStatus::None {
        return Ok(()); // the booking decider says not found
    }
    let p = project_state(view, StreamId::Project(b.project_id))?;
    let status = p.milestone(1)?.status;
    let follows = match command {
        Command::ConfirmBooking { .. } => status != MilestoneStatus::Unfunded,
        Command::SettleBooking { .. } => status.is_settled(),
        _ => status == MilestoneStatus::Disputed,
    };
    if follows {
        Ok(())
    } else {
        Err(Rejection::transition("booking's milestone", status, "take this booking step").into())
    }
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
    // Only the split the cancellation itself recorded: nobody picks another keep rate.
    if b.cancel_keep_rate
        .is_some_and(|recorded| recorded != keep_rate)
    {
        return Err(Rejection::InvalidCommand(format!(
            "the booking's cancellation keeps {}, not {}",
            b.cancel_keep_rate
                .map_or_else(String::new, |r| r.as_decimal().to_string()),
            keep_rate.as_decimal()
        ))
        .into());
    }
    let p = project_state(view, StreamId::Project(b.project_id))?;
    let held = Money::from_minor(p.milestone(1)?.held_minor(), p.currency());
    if held.is_zero() {
        return project_cmd(env, view, b.project_id, ProjectCommand::Cancel);
    }
    let (keep, refund) = held.split_fee(keep_rate);
    let resolve = ProjectCommand::Resolve {
        milestone: 1,
        release: keep,
        refund,
        cause: booking_id,
    };
    let mut changes = project_cmd(env, view, b.project_id, resolve)?;
    super::escrow::stamp_maturity(env, view, &mut changes)?;
    Ok(changes)
}
