-- Issue 18: a deadline whose firing was refused for good is closed in the log (`DeadlineClosed`, appended by
-- `close_deadline` only after the engine decided the deadline's own command again and saw it refused), and
-- `escrow.deadlines` shows it as `closed`: the timer's batch reads `pending` rows only, so no number of
-- refused firings delays a due one.
alter table escrow.deadlines drop constraint deadlines_status_check;
alter table escrow.deadlines add constraint deadlines_status_check
    check (status in ('pending', 'fired', 'cancelled', 'closed'));
