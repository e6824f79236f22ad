-- Escrow-age monitors (`escrow older than 30 days`): op `older_than`, the threshold in seconds, account the
-- escrow prefix and currency `*` (any). What they need that the balances do not say (each escrow account
-- holding money, since when, and the monitors it triggered) is saved with each sink's cursor, in the same
-- statement that advances it, so a relay restarted anywhere continues the same edges.
alter table ledger.event_monitors drop constraint event_monitors_op_check;
alter table ledger.event_monitors add constraint event_monitors_op_check
    check (op in ('<', '<=', '>', '>=', '=', '!=', 'older_than'));
alter table ledger.event_monitors drop constraint event_monitors_currency_check;
alter table ledger.event_monitors add constraint event_monitors_currency_check
    check (length(currency) = 3 or (currency = '*' and op = 'older_than'));
alter table ledger.event_cursors add column escrow_holds jsonb;
