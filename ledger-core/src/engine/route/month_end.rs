//! Month-end: settlements to the platform's bank, reconciliation runs, closing and re-opening periods; and the
//! rule that nothing posts into a closed period (`out_of_closed_periods`, applied to every decision).

use super::super::deciders::{decide_on, wrap};
use super::super::view::{periods_state, reconciliation_state, settlement_state};
use super::super::{Change, Command, CommandEnvelope, DecideError, Event, StateView, StreamId};
use super::misrouted;
use crate::aggregates::closed_periods::{Periods, PeriodsCommand};
use crate::aggregates::reconciliation::{Reconciliation, ReconciliationRun};
use crate::aggregates::settlement::{
    Settlement, SettlementCommand, SettlementEvent, clearing_guard_stream_id, settlement_stream_id,
};
use crate::journal::Account;

pub(super) fn route(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    use Command as C;
    match &env.command {
        C::RecordSettlement { .. } => record_settlement(env, view),
        C::RecordReconciliation { .. } => record_reconciliation(env, view),
        C::ClosePeriods { through } => {
            let body = PeriodsCommand::Close { through: *through };
            periods(env, view, body)
        }
        C::ReopenPeriods { from, reason } => {
            let body = PeriodsCommand::Reopen {
                from: *from,
                reason: reason.clone(),
            };
            periods(env, view, body)
        }
        other => misrouted("month-end", other),
    }
}

/// Money settled from a gateway's clearing to the platform's bank, serialized per clearing by its guard stream.
fn record_settlement(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    let Command::RecordSettlement {
        gateway,
        settlement_id,
        bank_account,
        amount,
        fee,
        occurred_at,
    } = &env.command
    else {
        misrouted("settlement", &env.command)
    };
    let stream = StreamId::Settlement(settlement_stream_id(*gateway, settlement_id));
    let clearing = Account::GatewayClearing(*gateway);
    let currency = amount.currency();
    // The guard's version is taken before the balance is: any settlement committed after it moves
    // the guard (this one then fails at append and is decided again), any before it is in the balance.
    let guard = StreamId::Settlement(clearing_guard_stream_id(*gateway, currency));
    settlement_state(view, guard)?;
    let clearing_balance_minor =
        view.account_balance(&clearing, currency)
            .ok_or(DecideError::NeedBalance {
                account: clearing,
                currency,
            })?;
    let body = SettlementCommand {
        clearing_balance_minor,
        gateway: *gateway,
        settlement_id: settlement_id.clone(),
        bank_account: *bank_account,
        amount: *amount,
        fee: *fee,
        occurred_at: *occurred_at,
    };
    let state = settlement_state(view, stream)?;
    let mut changes = decide_on::<Settlement, _>(env, state, stream, body, Event::Settlement)?;
    let booked = changes.iter().any(|c| {
        matches!(
            c.event,
            Event::Settlement(SettlementEvent::SettlementRecorded { .. })
        )
    });
    if booked {
        // Serializes settlements of this clearing: the balance above has no version, this stream has.
        let event = SettlementEvent::ClearingSettled {
            settlement_id: settlement_id.clone(),
            amount: *amount,
        };
        changes.extend(wrap(guard, vec![event], Event::Settlement));
    }
    Ok(changes)
}

/// That a statement was reconciled: one run, its own stream.
fn record_reconciliation(
    env: &CommandEnvelope,
    view: &dyn StateView,
) -> Result<Vec<Change>, DecideError> {
    let Command::RecordReconciliation {
        reconciliation_id,
        gateway,
        statement_sha256,
        format,
        from,
        to,
        counts,
    } = &env.command
    else {
        misrouted("reconciliation", &env.command)
    };
    let stream = StreamId::Reconciliation(*reconciliation_id);
    let body = ReconciliationRun {
        gateway: *gateway,
        statement_sha256: statement_sha256.clone(),
        format: format.clone(),
        from: *from,
        to: *to,
        counts: *counts,
    };
    let state = reconciliation_state(view, stream)?;
    decide_on::<Reconciliation, _>(env, state, stream, body, Event::Reconciliation)
}

fn periods(
    env: &CommandEnvelope,
    view: &dyn StateView,
    body: PeriodsCommand,
) -> Result<Vec<Change>, DecideError> {
    let stream = StreamId::Periods;
    decide_on::<Periods, _>(
        env,
        periods_state(view, stream)?,
        stream,
        body,
        Event::Periods,
    )
}

/// Nothing posts into a closed period: every journal entry of a decision that would be effective before the
/// start of the first open month is moved to that start, keeping the time the money moved
/// (`JournalEntry::redate_into`). A decision that moves money therefore reads the `periods` stream (and the
/// executor checks its version when appending, so a close racing the command makes it decide again).
pub(in super::super) fn out_of_closed_periods(
    view: &dyn StateView,
    changes: &mut [Change],
) -> Result<(), DecideError> {
    if changes.iter().all(|c| c.event.entry().is_none()) {
        return Ok(());
    }
    let Some(first_open) = periods_state(view, StreamId::Periods)?.first_open_start() else {
        return Ok(());
    };
    for change in changes.iter_mut() {
        if let Some(entry) = change.event.entry_mut() {
            entry.redate_into(first_open);
        }
    }
    Ok(())
}
