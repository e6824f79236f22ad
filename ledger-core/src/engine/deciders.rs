//! Running one aggregate's decider on its loaded state and wrapping its events for its stream: one helper
//! per aggregate, used by the routing (`route`) and the cross-stream rules.

use uuid::Uuid;

use super::view::{
    booking_state, dispute_state, payment_state, project_state, quote_state, request_state,
    suspense_state,
};
use super::{Change, CommandEnvelope, DecideError, Event, StateView, StreamId};
use crate::aggregates::Ctx;
use crate::aggregates::booking::{Booking, BookingCommand};
use crate::aggregates::dispute::{Dispute, DisputeCommand};
use crate::aggregates::payment::{Payment, PaymentCommand};
use crate::aggregates::project::{Project, ProjectCommand};
use crate::aggregates::quote::{Quote, QuoteCommand, RequestInfo};
use crate::aggregates::service_request::{RequestStatus, ServiceRequest, ServiceRequestCommand};
use crate::aggregates::suspense::{Suspense, SuspenseCommand};
use crate::decider::Decider;
use crate::error::Rejection;

pub(super) fn ctx<C>(env: &CommandEnvelope, body: C) -> Ctx<C> {
    Ctx {
        actor: env.actor,
        at: env.at,
        body,
    }
}

pub(super) fn wrap<E>(stream: StreamId, events: Vec<E>, to_event: fn(E) -> Event) -> Vec<Change> {
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
pub(super) fn decide_on<D, C>(
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

pub(super) fn project_cmd(
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

pub(super) fn payment_cmd(
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

pub(super) fn booking_cmd(
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

pub(super) fn quote_cmd(
    env: &CommandEnvelope,
    view: &dyn StateView,
    quote_id: Uuid,
    body: QuoteCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Quote(quote_id);
    decide_on::<Quote, _>(env, quote_state(view, stream)?, stream, body, Event::Quote)
}

pub(super) fn request_cmd(
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

pub(super) fn dispute_cmd(
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

pub(super) fn suspense_cmd(
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

pub(super) fn request_info(
    view: &dyn StateView,
    request_id: Uuid,
) -> Result<RequestInfo, DecideError> {
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
