//! Closing a deadline whose firing was refused for good: the deadline's own command is decided again at its
//! due time, and only a refusal that time cannot undo closes the clock (`DeadlineClosed` on its stream).

use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView};
use crate::deadlines::{Deadline, DeadlineEvent, DeadlineKind};
use crate::error::Rejection;
use crate::ids::Actor;

/// Refusals that say "not yet", not "never": a deadline refused this way stays open.
const NOT_YET: [&str; 2] = ["too_early", "not_found"];

pub(super) fn close(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    let Command::CloseDeadline {
        deadline_id,
        kind,
        stream,
        milestone,
        due_at,
    } = &env.command
    else {
        super::misrouted("deadline", &env.command)
    };
    if env.actor != Actor::System {
        return Err(Rejection::not_party(&env.actor, "close a deadline", "only the timer").into());
    }
    let known = DeadlineKind::from_name(kind).ok_or_else(|| {
        Rejection::InvalidCommand(format!("{kind:?} is not a deadline's command"))
    })?;
    let deadline = Deadline {
        id: *deadline_id,
        kind: known,
        stream: *stream,
        milestone: *milestone,
        due_at: *due_at,
        version: 0,
        parties: Vec::new(),
    };
    let firing = deadline.envelope();
    if firing.command.primary_stream() != *stream {
        return Err(Rejection::InvalidCommand(format!(
            "a {kind} deadline does not run on stream {stream}"
        ))
        .into());
    }
    let refusal = match super::super::decide(&firing, view) {
        Ok(_) => {
            return Err(Rejection::InvalidCommand(format!(
                "deadline {deadline_id} can still fire: its {kind} is accepted"
            ))
            .into());
        }
        Err(DecideError::Rejected(r)) if NOT_YET.contains(&r.code()) => return Err(r.into()),
        Err(DecideError::Rejected(r)) => r,
        Err(need) => return Err(need),
    };
    let event = DeadlineEvent::DeadlineClosed {
        deadline_id: *deadline_id,
        kind: kind.clone(),
        milestone: *milestone,
        code: refusal.code().to_string(),
        reason: refusal.to_string(),
    };
    Ok(vec![Change {
        stream: *stream,
        event_id: uuid::Uuid::nil(),
        event: Event::Deadline(event),
    }])
}
