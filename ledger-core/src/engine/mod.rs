//! The ledger engine: one public `Command` set over all aggregates, routed to their deciders and composed
//! when a command spans streams (funding touches a project and a wallet). Still pure: the caller supplies
//! the states it has loaded, and `decide` asks for any stream it is missing (`DecideError::NeedStream`).
//!
//! Where things are: `command` (the command set, envelope checks, primary streams), `event` (`Event`,
//! `AggState`, `evolve`, stored form), `stream` (`StreamId`), `view` (`StateView`, `Change`, `DecideError`),
//! `route` (each command to its deciders, one module per family: `marketplace`, `escrow`, `payments`,
//! `chargeback`, `disputes`, `back_office`), `deciders` (one aggregate's decider on its loaded state),
//! `wallet_guard`, `react` (process logic), `overlay`; `decide` and `decide_all` below tie them together.
//!
//! Wallet guard: for every journal entry produced, the postings to `Liabilities:Users:<u>:{Available,
//! Pending}` are netted per wallet and passed through the wallet decider, which refuses to go below zero and
//! appends a mirror event to the wallet's stream. So every change of a user's money takes that wallet's
//! expected version, while unconstrained accounts (clearing, income, expenses) take none.

mod command;
mod deciders;
mod event;
mod overlay;
mod react;
mod route;
mod stream;
mod view;
mod wallet_guard;

pub use command::{
    COMMAND_TIME_END_UNIX_SECONDS, COMMAND_TIME_MIN_UNIX_SECONDS, Command, CommandEnvelope,
    primary_streams,
};
pub use event::{AggState, Event, EventDecodeError, SCHEMA_VERSION, evolve, upcast};
pub use overlay::Overlay;
pub use react::react;
pub use route::{CHARGEBACK_ESCROW_SOURCES_MAX, CHARGEBACK_PROJECTS_MAX};
pub use stream::{BadStreamId, StreamId};
pub use view::{Change, DecideError, StateView};

use crate::error::Rejection;
use crate::ids::event_id;

/// Bound on follow-up commands one command may cascade into (process logic), and on their depth.
pub const FOLLOW_UPS_MAX: usize = 32;
pub const FOLLOW_UP_DEPTH_MAX: usize = 6;

/// The most streams any single command, with all its follow-ups, reads or writes: what an executor must be
/// able to load (one `NeedStream` round per stream, after the primary streams). The largest today is a lost
/// chargeback: the payment, the buyer's wallet and `CHARGEBACK_PROJECTS_MAX` projects; accepting a quote or
/// confirming an earmarked deposit reaches five or six. The model-based property test checks every command it
/// runs against this bound (`MemoryLedger::streams_needed`).
/// Accepting a quote reads its quote, its request, the ledger policy, the booking and project it opens, and
/// declines the request's other quotes (at most `QUOTES_PER_REQUEST_MAX - 1`).
pub const STREAMS_PER_COMMAND_MAX: usize = 16;
const _: () = assert!(2 + CHARGEBACK_PROJECTS_MAX <= STREAMS_PER_COMMAND_MAX);
const _: () = assert!(
    5 + crate::aggregates::service_request::QUOTES_PER_REQUEST_MAX - 1 <= STREAMS_PER_COMMAND_MAX
);

/// Decides a command against the loaded states: the events to append (with derived event and entry ids),
/// or a rejection. Pure and deterministic.
pub fn decide(env: &CommandEnvelope, view: &dyn StateView) -> Result<Vec<Change>, DecideError> {
    command::check_envelope(env)?;
    let mut changes = route::route(env, view)?;
    wallet_guard::guard_wallets(env, view, &mut changes)?;
    wallet_guard::track_settled_escrow(view, &mut changes)?;
    route::out_of_closed_periods(view, &mut changes)?;
    for (index, change) in changes.iter_mut().enumerate() {
        change.event_id = event_id(env.command_id, index);
        if let Some(entry) = change.event.entry_mut() {
            entry.derive_id(change.event_id);
        }
    }
    Ok(changes)
}

/// The version of the rules (this crate) that decided a command: recorded with the command, so that
/// `verify --deep` can tell a rule change between versions from a forged event.
pub const RULES_VERSION: &str = env!("CARGO_PKG_VERSION");

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
                        Err(
                            need @ (DecideError::NeedStream(_) | DecideError::NeedBalance { .. }),
                        ) => {
                            return Err(need);
                        }
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
