//! ServiceRequest: Open -> {Booked, Cancelled, Expired}. At most one accepted quote (Booked is terminal).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ctx;
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;
use crate::money::Currency;

pub const TITLE_BYTES_MAX: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RequestStatus {
    #[default]
    None,
    Open,
    Booked,
    Cancelled,
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRequestState {
    pub id: Uuid,
    pub status: RequestStatus,
    pub client: Uuid,
    pub currency: Option<Currency>,
    pub expires_at: Option<DateTime<Utc>>,
    pub accepted_quote: Option<Uuid>,
    /// The quotes created for this request, in order (at most `QUOTES_PER_REQUEST_MAX`): accepting one
    /// declines the others that are still open.
    #[serde(default)]
    pub quotes: Vec<Uuid>,
}

/// Bound on the quotes one request receives: accepting one declines the others in the same command, so
/// this bounds that command's streams (`engine::STREAMS_PER_COMMAND_MAX`).
pub const QUOTES_PER_REQUEST_MAX: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub enum ServiceRequestCommand {
    Open {
        request_id: Uuid,
        currency: Currency,
        title: String,
        expires_at: Option<DateTime<Utc>>,
    },
    Cancel,
    Expire,
    /// Engine-internal: a quote for this request was accepted in the same command.
    MarkBooked {
        quote_id: Uuid,
    },
    /// Engine-internal: a quote for this request was created in the same command.
    RecordQuote {
        quote_id: Uuid,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServiceRequestEvent {
    ServiceRequestOpened {
        request_id: Uuid,
        client: Uuid,
        currency: Currency,
        title: String,
        expires_at: Option<DateTime<Utc>>,
    },
    ServiceRequestBooked {
        quote_id: Uuid,
    },
    ServiceRequestCancelled,
    ServiceRequestExpired,
    QuoteReceived {
        quote_id: Uuid,
    },
}

pub struct ServiceRequest;

const AGG: &str = "service request";

impl ServiceRequest {
    /// A client opens a request for quotes (once per request id).
    fn open(
        cmd: &Ctx<ServiceRequestCommand>,
        s: &ServiceRequestState,
    ) -> Result<Vec<ServiceRequestEvent>, Rejection> {
        let ServiceRequestCommand::Open {
            request_id,
            currency,
            title,
            expires_at,
        } = &cmd.body
        else {
            unreachable!("open is only called for Open")
        };
        if s.status != RequestStatus::None {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: request_id.to_string(),
            });
        }
        let client = cmd
            .actor
            .user()
            .ok_or_else(|| Rejection::not_party(&cmd.actor, "open a request", "only a client"))?;
        if title.trim().is_empty() || title.len() > TITLE_BYTES_MAX {
            return Err(Rejection::InvalidCommand(format!(
                "title must be 1..={TITLE_BYTES_MAX} bytes"
            )));
        }
        Ok(vec![ServiceRequestEvent::ServiceRequestOpened {
            request_id: *request_id,
            client,
            currency: *currency,
            title: title.clone(),
            expires_at: *expires_at,
        }])
    }

    /// Its client (or an operator) cancels an open request.
    fn cancel(
        cmd: &Ctx<ServiceRequestCommand>,
        s: &ServiceRequestState,
    ) -> Result<Vec<ServiceRequestEvent>, Rejection> {
        if !(cmd.actor.is(s.client) || matches!(cmd.actor, Actor::Admin(_))) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "cancel a request",
                "only its client",
            ));
        }
        Ok(vec![ServiceRequestEvent::ServiceRequestCancelled])
    }

    /// The timer expires an open request once its expiry has come.
    fn expire(
        cmd: &Ctx<ServiceRequestCommand>,
        s: &ServiceRequestState,
    ) -> Result<Vec<ServiceRequestEvent>, Rejection> {
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "expire a request",
                "only the timer",
            ));
        }
        match s.expires_at {
            Some(due) if cmd.at >= due => Ok(vec![ServiceRequestEvent::ServiceRequestExpired]),
            Some(due) => Err(Rejection::TooEarly {
                what: "request expiry",
                due: due.to_rfc3339(),
            }),
            None => Err(Rejection::InvalidCommand(
                "this request has no expiry".into(),
            )),
        }
    }

    /// A quote created for this request is recorded, up to `QUOTES_PER_REQUEST_MAX`.
    fn record_quote(
        s: &ServiceRequestState,
        quote_id: Uuid,
    ) -> Result<Vec<ServiceRequestEvent>, Rejection> {
        if s.quotes.len() >= QUOTES_PER_REQUEST_MAX {
            return Err(Rejection::InvalidCommand(format!(
                "a request takes at most {QUOTES_PER_REQUEST_MAX} quotes"
            )));
        }
        Ok(vec![ServiceRequestEvent::QuoteReceived { quote_id }])
    }
}

impl Decider for ServiceRequest {
    type Command = Ctx<ServiceRequestCommand>;
    type Event = ServiceRequestEvent;
    type State = ServiceRequestState;
    type Error = Rejection;

    fn decide(
        cmd: &Ctx<ServiceRequestCommand>,
        s: &ServiceRequestState,
    ) -> Result<Vec<ServiceRequestEvent>, Rejection> {
        use ServiceRequestCommand as C;
        if let C::Open { .. } = cmd.body {
            return ServiceRequest::open(cmd, s);
        }
        if s.status == RequestStatus::None {
            return Err(Rejection::NotFound {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        if s.status != RequestStatus::Open {
            return Err(Rejection::transition(AGG, s.status, "change"));
        }
        match &cmd.body {
            C::Open { .. } => unreachable!("handled above"),
            C::Cancel => ServiceRequest::cancel(cmd, s),
            C::Expire => ServiceRequest::expire(cmd, s),
            C::MarkBooked { quote_id } => Ok(vec![ServiceRequestEvent::ServiceRequestBooked {
                quote_id: *quote_id,
            }]),
            C::RecordQuote { quote_id } => ServiceRequest::record_quote(s, *quote_id),
        }
    }

    fn evolve(mut s: ServiceRequestState, event: &ServiceRequestEvent) -> ServiceRequestState {
        use ServiceRequestEvent as E;
        match event {
            E::ServiceRequestOpened {
                request_id,
                client,
                currency,
                expires_at,
                ..
            } => {
                s = ServiceRequestState {
                    id: *request_id,
                    status: RequestStatus::Open,
                    client: *client,
                    currency: Some(*currency),
                    expires_at: *expires_at,
                    accepted_quote: None,
                    quotes: Vec::new(),
                };
            }
            E::ServiceRequestBooked { quote_id } => {
                s.status = RequestStatus::Booked;
                s.accepted_quote = Some(*quote_id);
            }
            E::ServiceRequestCancelled => s.status = RequestStatus::Cancelled,
            E::ServiceRequestExpired => s.status = RequestStatus::Expired,
            E::QuoteReceived { quote_id } => s.quotes.push(*quote_id),
        }
        s
    }

    fn is_terminal(s: &ServiceRequestState) -> bool {
        matches!(
            s.status,
            RequestStatus::Booked | RequestStatus::Cancelled | RequestStatus::Expired
        )
    }
}
