//! Booking: PendingPayment -> Confirmed (escrow funded) -> InProgress -> Delivered -> {Accepted,
//! AutoAccepted} -> Settled; Cancelled; Disputed. Backed by a single-milestone project: bookings and projects
//! share one money path, and the process logic keeps the two in step.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ctx;
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;
use crate::money::Rate;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BookingStatus {
    #[default]
    None,
    PendingPayment,
    Confirmed,
    InProgress,
    Delivered,
    Accepted,
    AutoAccepted,
    Settled,
    Cancelled,
    Disputed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingState {
    pub id: Uuid,
    pub status: BookingStatus,
    pub project_id: Uuid,
    pub quote_id: Uuid,
    pub client: Uuid,
    pub provider: Uuid,
    pub delivered_at: Option<DateTime<Utc>>,
    pub auto_accept_days: u32,
    pub late_cancel_keep_rate: Rate,
    /// The silence before auto-acceptance in hours (bookings opened before the deadline policy: `None`,
    /// `auto_accept_days` applies).
    #[serde(default)]
    pub auto_accept_hours: Option<u32>,
    /// What the provider keeps of the escrow, as the cancellation recorded it (once cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_keep_rate: Option<Rate>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BookingCommand {
    Open {
        booking_id: Uuid,
        project_id: Uuid,
        quote_id: Uuid,
        client: Uuid,
        provider: Uuid,
        auto_accept_days: u32,
        late_cancel_keep_rate: Rate,
        auto_accept_hours: Option<u32>,
    },
    Confirm,
    Start,
    Deliver,
    Accept,
    AutoAccept,
    Settle,
    MarkDisputed,
    Cancel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum BookingEvent {
    BookingOpened {
        booking_id: Uuid,
        project_id: Uuid,
        quote_id: Uuid,
        client: Uuid,
        provider: Uuid,
        auto_accept_days: u32,
        late_cancel_keep_rate: Rate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_accept_hours: Option<u32>,
    },
    BookingConfirmed,
    BookingStarted,
    BookingDelivered {
        at: DateTime<Utc>,
    },
    BookingAccepted {
        auto: bool,
    },
    BookingSettled,
    BookingDisputed,
    /// `keep_rate` is what the provider keeps of the escrow (0 unless the client cancels after confirmation).
    BookingCancelled {
        by: Uuid,
        was_confirmed: bool,
        keep_rate: Rate,
    },
}

impl BookingState {
    /// The silence after delivery before the booking is auto-accepted.
    pub fn auto_accept_after(&self) -> Duration {
        match self.auto_accept_hours {
            Some(hours) => Duration::hours(i64::from(hours)),
            None => Duration::days(i64::from(self.auto_accept_days)),
        }
    }
}

pub struct Booking;

const AGG: &str = "booking";

/// Only the process logic drives the steps that follow the booking's milestone.
fn require_process(actor: &Actor) -> Result<(), Rejection> {
    if *actor == Actor::System {
        Ok(())
    } else {
        Err(Rejection::not_party(
            actor,
            "drive a booking",
            "only the process logic",
        ))
    }
}

/// Only the provider works on a booking.
fn require_provider(actor: &Actor, s: &BookingState) -> Result<(), Rejection> {
    if actor.is(s.provider) {
        Ok(())
    } else {
        Err(Rejection::not_party(
            actor,
            "work on a booking",
            "only the provider",
        ))
    }
}

impl Booking {
    fn step(
        s: &BookingState,
        from: &[BookingStatus],
        action: &'static str,
        event: BookingEvent,
    ) -> Result<Vec<BookingEvent>, Rejection> {
        if from.contains(&s.status) {
            Ok(vec![event])
        } else {
            Err(Rejection::transition(AGG, s.status, action))
        }
    }

    /// The process logic opens a booking for an accepted quote (once per booking id).
    fn open(cmd: &Ctx<BookingCommand>, s: &BookingState) -> Result<Vec<BookingEvent>, Rejection> {
        let BookingCommand::Open {
            booking_id,
            project_id,
            quote_id,
            client,
            provider,
            auto_accept_days,
            late_cancel_keep_rate,
            auto_accept_hours,
        } = &cmd.body
        else {
            unreachable!("open is only called for Open")
        };
        if s.status != BookingStatus::None {
            return Err(Rejection::AlreadyExists {
                aggregate: AGG,
                id: booking_id.to_string(),
            });
        }
        if cmd.actor != Actor::System {
            return Err(Rejection::not_party(
                &cmd.actor,
                "open a booking",
                "only the process logic",
            ));
        }
        Ok(vec![BookingEvent::BookingOpened {
            booking_id: *booking_id,
            project_id: *project_id,
            quote_id: *quote_id,
            client: *client,
            provider: *provider,
            auto_accept_days: *auto_accept_days,
            late_cancel_keep_rate: *late_cancel_keep_rate,
            auto_accept_hours: *auto_accept_hours,
        }])
    }

    /// The steps the process logic takes: confirmed once funded, auto-accepted after the silence that
    /// follows delivery, settled, disputed.
    fn process_step(
        cmd: &Ctx<BookingCommand>,
        s: &BookingState,
    ) -> Result<Vec<BookingEvent>, Rejection> {
        use BookingCommand as C;
        use BookingStatus as S;
        require_process(&cmd.actor)?;
        match cmd.body {
            C::Confirm => Booking::step(
                s,
                &[S::PendingPayment],
                "confirm",
                BookingEvent::BookingConfirmed,
            ),
            C::AutoAccept => {
                if s.status != S::Delivered {
                    return Err(Rejection::transition(AGG, s.status, "auto-accept"));
                }
                let due = s.delivered_at.expect("delivered has a time") + s.auto_accept_after();
                if cmd.at < due {
                    return Err(Rejection::TooEarly {
                        what: "auto-acceptance",
                        due: due.to_rfc3339(),
                    });
                }
                Ok(vec![BookingEvent::BookingAccepted { auto: true }])
            }
            C::Settle => Booking::step(
                s,
                &[
                    S::Accepted,
                    S::AutoAccepted,
                    S::Disputed,
                    S::Confirmed,
                    S::InProgress,
                    S::Delivered,
                ],
                "settle",
                BookingEvent::BookingSettled,
            ),
            C::MarkDisputed => Booking::step(
                s,
                &[S::Confirmed, S::InProgress, S::Delivered],
                "dispute",
                BookingEvent::BookingDisputed,
            ),
            _ => unreachable!("process_step is only called for the process logic's steps"),
        }
    }

    /// The provider's work: started, then delivered.
    fn provider_step(
        cmd: &Ctx<BookingCommand>,
        s: &BookingState,
    ) -> Result<Vec<BookingEvent>, Rejection> {
        use BookingStatus as S;
        require_provider(&cmd.actor, s)?;
        match cmd.body {
            BookingCommand::Start => {
                Booking::step(s, &[S::Confirmed], "start", BookingEvent::BookingStarted)
            }
            BookingCommand::Deliver => Booking::step(
                s,
                &[S::Confirmed, S::InProgress],
                "deliver",
                BookingEvent::BookingDelivered { at: cmd.at },
            ),
            _ => unreachable!("provider_step is only called for the provider's steps"),
        }
    }

    /// The client accepts the delivery.
    fn accept(cmd: &Ctx<BookingCommand>, s: &BookingState) -> Result<Vec<BookingEvent>, Rejection> {
        if !cmd.actor.is(s.client) {
            return Err(Rejection::not_party(
                &cmd.actor,
                "accept delivery",
                "only the client",
            ));
        }
        Booking::step(
            s,
            &[BookingStatus::Delivered],
            "accept",
            BookingEvent::BookingAccepted { auto: false },
        )
    }

    fn cancel(cmd: &Ctx<BookingCommand>, s: &BookingState) -> Result<Vec<BookingEvent>, Rejection> {
        let by = cmd
            .actor
            .user()
            .filter(|u| *u == s.client || *u == s.provider)
            .ok_or_else(|| {
                Rejection::not_party(
                    &cmd.actor,
                    "cancel a booking",
                    "only its client or provider",
                )
            })?;
        let was_confirmed = match s.status {
            BookingStatus::PendingPayment => false,
            BookingStatus::Confirmed => true,
            other => {
                return Err(Rejection::transition(
                    AGG,
                    other,
                    "cancel (work has started: open a dispute)",
                ));
            }
        };
        let keep_rate = if was_confirmed && by == s.client {
            s.late_cancel_keep_rate
        } else {
            Rate::ZERO
        };
        Ok(vec![BookingEvent::BookingCancelled {
            by,
            was_confirmed,
            keep_rate,
        }])
    }
}

impl Decider for Booking {
    type Command = Ctx<BookingCommand>;
    type Event = BookingEvent;
    type State = BookingState;
    type Error = Rejection;

    fn decide(cmd: &Ctx<BookingCommand>, s: &BookingState) -> Result<Vec<BookingEvent>, Rejection> {
        use BookingCommand as C;
        if let C::Open { .. } = cmd.body {
            return Booking::open(cmd, s);
        }
        if s.status == BookingStatus::None {
            return Err(Rejection::NotFound {
                aggregate: AGG,
                id: s.id.to_string(),
            });
        }
        match &cmd.body {
            C::Open { .. } => unreachable!("handled above"),
            C::Confirm | C::AutoAccept | C::Settle | C::MarkDisputed => {
                Booking::process_step(cmd, s)
            }
            C::Start | C::Deliver => Booking::provider_step(cmd, s),
            C::Accept => Booking::accept(cmd, s),
            C::Cancel => Booking::cancel(cmd, s),
        }
    }

    fn evolve(mut s: BookingState, event: &BookingEvent) -> BookingState {
        use BookingEvent as E;
        match event {
            E::BookingOpened {
                booking_id,
                project_id,
                quote_id,
                client,
                provider,
                auto_accept_days,
                late_cancel_keep_rate,
                auto_accept_hours,
            } => {
                s = BookingState {
                    id: *booking_id,
                    status: BookingStatus::PendingPayment,
                    project_id: *project_id,
                    quote_id: *quote_id,
                    client: *client,
                    provider: *provider,
                    delivered_at: None,
                    auto_accept_days: *auto_accept_days,
                    late_cancel_keep_rate: *late_cancel_keep_rate,
                    auto_accept_hours: *auto_accept_hours,
                    cancel_keep_rate: None,
                };
            }
            E::BookingConfirmed => s.status = BookingStatus::Confirmed,
            E::BookingStarted => s.status = BookingStatus::InProgress,
            E::BookingDelivered { at } => {
                s.status = BookingStatus::Delivered;
                s.delivered_at = Some(*at);
            }
            E::BookingAccepted { auto } => {
                s.status = if *auto {
                    BookingStatus::AutoAccepted
                } else {
                    BookingStatus::Accepted
                };
            }
            E::BookingSettled => s.status = BookingStatus::Settled,
            E::BookingDisputed => s.status = BookingStatus::Disputed,
            E::BookingCancelled { keep_rate, .. } => {
                s.status = BookingStatus::Cancelled;
                s.cancel_keep_rate = Some(*keep_rate);
            }
        }
        s
    }

    fn is_terminal(s: &BookingState) -> bool {
        matches!(s.status, BookingStatus::Settled | BookingStatus::Cancelled)
    }
}
