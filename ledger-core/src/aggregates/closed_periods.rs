//! Closed periods: one stream per ledger (`periods`). An operator closes every calendar month (UTC) up to and
//! including one (`close_periods`), and may re-open from a month on (`reopen_periods`); both are events in the
//! log, so a report of a closed month replays the same forever. While a month is closed nothing posts into
//! it: the engine moves the effective time of an entry that would land there to the start of the first open
//! month and keeps the original time on the entry (`JournalEntry::redate_into`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ctx;
use crate::calendar::Month;
use crate::decider::Decider;
use crate::error::Rejection;
use crate::ids::Actor;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodsState {
    /// Every month up to and including this one is closed; `None`: all open.
    pub closed_through: Option<Month>,
}

impl PeriodsState {
    /// The first instant an entry may be effective at: the start of the first open month.
    pub fn first_open_start(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.closed_through.map(|m| m.end())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum PeriodsCommand {
    Close { through: Month },
    Reopen { from: Month, reason: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PeriodsEvent {
    /// Every month up to and including `through` is closed, by `operator`.
    PeriodsClosed { through: Month, operator: Uuid },
    /// Months from `from` on are open again; `closed_through` is what stays closed.
    PeriodsReopened {
        from: Month,
        closed_through: Option<Month>,
        operator: Uuid,
        reason: String,
    },
}

/// Longest reason a re-opening may carry.
pub const REOPEN_REASON_BYTES_MAX: usize = 500;

pub struct Periods;

impl Decider for Periods {
    type Command = Ctx<PeriodsCommand>;
    type Event = PeriodsEvent;
    type State = PeriodsState;
    type Error = Rejection;

    fn decide(cmd: &Ctx<PeriodsCommand>, s: &PeriodsState) -> Result<Vec<PeriodsEvent>, Rejection> {
        let Actor::Admin(operator) = cmd.actor else {
            return Err(Rejection::not_party(
                &cmd.actor,
                "close or re-open periods",
                "only an operator",
            ));
        };
        match &cmd.body {
            PeriodsCommand::Close { through } => {
                if cmd.at < through.end() {
                    return Err(Rejection::InvalidCommand(format!(
                        "{through} cannot be closed before it ends ({})",
                        through.end().to_rfc3339()
                    )));
                }
                if s.closed_through.is_some_and(|c| c >= *through) {
                    return Ok(vec![]); // already closed: closing again changes nothing
                }
                Ok(vec![PeriodsEvent::PeriodsClosed {
                    through: *through,
                    operator,
                }])
            }
            PeriodsCommand::Reopen { from, reason } => {
                if reason.trim().is_empty() || reason.len() > REOPEN_REASON_BYTES_MAX {
                    return Err(Rejection::InvalidCommand(format!(
                        "a re-opening needs a reason of 1 to {REOPEN_REASON_BYTES_MAX} bytes"
                    )));
                }
                match s.closed_through {
                    Some(closed) if *from <= closed => {}
                    _ => {
                        return Err(Rejection::InvalidCommand(format!(
                            "{from} is not closed (closed through {})",
                            s.closed_through
                                .map(|m| m.to_string())
                                .unwrap_or_else(|| "nothing".into())
                        )));
                    }
                }
                Ok(vec![PeriodsEvent::PeriodsReopened {
                    from: *from,
                    closed_through: month_before(*from),
                    operator,
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn evolve(mut s: PeriodsState, e: &PeriodsEvent) -> PeriodsState {
        match e {
            PeriodsEvent::PeriodsClosed { through, .. } => s.closed_through = Some(*through),
            PeriodsEvent::PeriodsReopened { closed_through, .. } => {
                s.closed_through = *closed_through
            }
        }
        s
    }
}

/// The month before, if it is within the core's bounds.
fn month_before(month: Month) -> Option<Month> {
    let start = month.start();
    Some(Month::of(start - chrono::Duration::days(1)))
        .filter(|m| *m < month && Month::new(2000, 1).is_some_and(|min| *m >= min))
}
