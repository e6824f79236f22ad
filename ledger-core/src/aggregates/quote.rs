//! Quote: Draft -> Sent -> {Accepted, Declined, Withdrawn, Expired}. Only the provider sends or withdraws;
//! only the requester accepts or declines; accepting needs `at < valid_until` and a positive amount in the
//! request's currency. The process logic turns an accepted quote into a booking.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::project::FeePolicy;
use super::{Ctx, require_currency, require_positive};
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;
use crate::money::{Currency, Money};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum QuoteStatus {
    #[default]
    None,
    Draft,
    Sent,
    Accepted,
    Declined,
    Withdrawn,
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteState {
    pub id: Uuid,
    pub status: QuoteStatus,
    pub request_id: Uuid,
    pub provider: Uuid,
    pub client: Uuid,
    pub amount: Option<Money>,
    pub valid_until: Option<DateTime<Utc>>,
    pub fees: FeePolicy,
}

/// What the engine knows of the request a quote answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub request_id: Uuid,
    pub client: Uuid,
    pub currency: Currency,
    pub open: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum QuoteCommand {
    Create {
        quote_id: Uuid,
        request: RequestInfo,
        amount: Money,
        valid_until: DateTime<Utc>,
        fees: FeePolicy,
    },
    Send,
    Accept {
        request: RequestInfo,
    },
    Decline,
    Withdraw,
    Expire,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum QuoteEvent {
    QuoteDrafted {
        quote_id: Uuid,
        request_id: Uuid,
        provider: Uuid,
        client: Uuid,
        amount: Money,
        valid_until: DateTime<Utc>,
        fees: FeePolicy,
    },
    QuoteSent,
    QuoteAccepted,
    QuoteDeclined,
    QuoteWithdrawn,
    QuoteExpired,
}

pub struct Quote;

const AGG: &str = "quote";

impl Quote {
    fn create(cmd: &Ctx<QuoteCommand>, s: &QuoteState) -> Result<Vec<QuoteEvent>, Rejection> {
        let QuoteCommand::Create {
            quote_id,
            request,
            amount,
            valid_until,
            fees,
        } = &cmd.body
        else {
            unreachable!("create is only called for Create")
        };
        if s.status != QuoteStatus::None {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: quote_id.to_string(),
            });
        }
        let provider = cmd
            .actor
            .user()
            .ok_or_else(|| Rejection::not_party(&cmd.actor, "quote", "only a provider"))?;
        if provider == request.client {
            return Err(Rejection::not_party(
                &cmd.actor,
                "quote",
                "a client cannot quote on their own request",
            ));
        }
        if !request.open {
            return Err(Rejection::transition(
                "service request",
                "not open",
                "receive a quote",
            ));
        }
        require_currency(request.currency, *amount)?;
        require_positive(*amount)?;
        if *valid_until <= cmd.at {
            return Err(Rejection::QuoteExpired(valid_until.to_rfc3339()));
        }
        Ok(vec![QuoteEvent::QuoteDrafted {
            quote_id: *quote_id,
            request_id: request.request_id,
            provider,
            client: request.client,
            amount: *amount,
            valid_until: *valid_until,
            fees: *fees,
        }])
    }

    fn accept(
        cmd: &Ctx<QuoteCommand>,
        s: &QuoteState,
        request: &RequestInfo,
    ) -> Result<Vec<QuoteEvent>, Rejection> {
        if !cmd.actor.is(s.client) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "accept a quote",
                "only the requester",
            ));
        }
        if s.status != QuoteStatus::Sent {
            return Err(Rejection::transition(AGG, s.status, "accept"));
        }
        let valid_until = s.valid_until.expect("a sent quote has a validity");
        if cmd.at >= valid_until {
            return Err(Rejection::QuoteExpired(valid_until.to_rfc3339()));
        }
        if !request.open {
            return Err(Rejection::transition(
                "service request",
                "not open",
                "accept a quote",
            ));
        }
        let amount = s.amount.expect("a sent quote has an amount");
        require_currency(request.currency, amount)?;
        require_positive(amount)?;
        Ok(vec![QuoteEvent::QuoteAccepted])
    }
}

impl Decider for Quote {
    type Command = Ctx<QuoteCommand>;
    type Event = QuoteEvent;
    type State = QuoteState;
    type Error = Rejection;

    fn decide(cmd: &Ctx<QuoteCommand>, s: &QuoteState) -> Result<Vec<QuoteEvent>, Rejection> {
        use QuoteCommand as C;
        if !matches!(cmd.body, C::Create { .. }) && s.status == QuoteStatus::None {
            return Err(Rejection::NotFound {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        let provider_only = |action| {
            if cmd.actor.is(s.provider) {
                Ok(())
            } else {
                Err(Rejection::not_party(
                    &cmd.actor,
                    action,
                    "only the provider",
                ))
            }
        };
        match &cmd.body {
            C::Create { .. } => Quote::create(cmd, s),
            C::Send => {
                provider_only("send a quote")?;
                if s.status != QuoteStatus::Draft {
                    return Err(Rejection::transition(AGG, s.status, "send"));
                }
                Ok(vec![QuoteEvent::QuoteSent])
            }
            C::Accept { request } => Quote::accept(cmd, s, request),
            C::Decline => {
                if !cmd.actor.is(s.client) {
                    return Err(Rejection::not_party(
                        &cmd.actor,
                        "decline a quote",
                        "only the requester",
                    ));
                }
                if s.status != QuoteStatus::Sent {
                    return Err(Rejection::transition(AGG, s.status, "decline"));
                }
                Ok(vec![QuoteEvent::QuoteDeclined])
            }
            C::Withdraw => {
                provider_only("withdraw a quote")?;
                if !matches!(s.status, QuoteStatus::Draft | QuoteStatus::Sent) {
                    return Err(Rejection::transition(AGG, s.status, "withdraw"));
                }
                Ok(vec![QuoteEvent::QuoteWithdrawn])
            }
            C::Expire => {
                if cmd.actor != Actor::System {
                    return Err(Rejection::not_party(
                        &cmd.actor,
                        "expire a quote",
                        "only the timer",
                    ));
                }
                if !matches!(s.status, QuoteStatus::Draft | QuoteStatus::Sent) {
                    return Err(Rejection::transition(AGG, s.status, "expire"));
                }
                let due = s.valid_until.expect("a quote has a validity");
                if cmd.at < due {
                    return Err(Rejection::TooEarly {
                        what: "quote expiry",
                        due: due.to_rfc3339(),
                    });
                }
                Ok(vec![QuoteEvent::QuoteExpired])
            }
        }
    }

    fn evolve(mut s: QuoteState, event: &QuoteEvent) -> QuoteState {
        use QuoteEvent as E;
        match event {
            E::QuoteDrafted {
                quote_id,
                request_id,
                provider,
                client,
                amount,
                valid_until,
                fees,
            } => {
                s = QuoteState {
                    id: *quote_id,
                    status: QuoteStatus::Draft,
                    request_id: *request_id,
                    provider: *provider,
                    client: *client,
                    amount: Some(*amount),
                    valid_until: Some(*valid_until),
                    fees: *fees,
                };
            }
            E::QuoteSent => s.status = QuoteStatus::Sent,
            E::QuoteAccepted => s.status = QuoteStatus::Accepted,
            E::QuoteDeclined => s.status = QuoteStatus::Declined,
            E::QuoteWithdrawn => s.status = QuoteStatus::Withdrawn,
            E::QuoteExpired => s.status = QuoteStatus::Expired,
        }
        s
    }

    fn is_terminal(s: &QuoteState) -> bool {
        !matches!(
            s.status,
            QuoteStatus::None | QuoteStatus::Draft | QuoteStatus::Sent
        )
    }
}
