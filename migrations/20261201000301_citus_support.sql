-- Citus support (issue 13). Nothing here changes behaviour on one PostgreSQL server: both functions are
-- only what `ledger_store::citus::distribute` (run by `migrate` when the `citus` extension exists) and the
-- readers need on a Citus cluster. See ARCHITECTURE.md "On Citus".
--
-- 1. `ledger.queue_appended_row()`: the queue trigger, one row at a time. On Citus a trigger on a distributed
--    table runs on the worker, on the shard; the statement trigger `events_queue` reads its transition table
--    from an INSERT into another distributed table, which Citus plans as a distributed INSERT ... SELECT that
--    cannot see the trigger's tuplestore ("could not find named tuplestore"). A row trigger inserts one
--    VALUES row into the colocated queue shard (the same worker: local execution). On one server the
--    statement trigger stays (one INSERT per statement is cheaper).
-- 2. `escrow.set_claims(claims)`: sets `request.jwt.claims` for the rest of the transaction with SET LOCAL,
--    and asks Citus to carry SET LOCAL to the workers (`citus.propagate_set_commands = 'local'`), where the
--    policies are evaluated: `set_config(.., true)` is a function call, which Citus never propagates. On one
--    server it is `set_config('request.jwt.claims', claims, true)` (the `citus.` setting is then an unused
--    placeholder for the transaction).

create function ledger.queue_appended_row() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into ledger.unsequenced (ledger_id, local_id, tx_id)
    values (new.ledger_id, new.local_id, new.tx_id)
    on conflict do nothing;
    return null;
end
$$;

alter function ledger.queue_appended_row() owner to escrow_definer;
revoke all on function ledger.queue_appended_row() from public;

create function escrow.set_claims(p_claims text) returns void
language plpgsql
set search_path = pg_catalog
as $$
begin
    execute 'set local citus.propagate_set_commands = ''local''';
    execute format('set local "request.jwt.claims" = %L', p_claims);
end
$$;

revoke all on function escrow.set_claims(text) from public;
grant execute on function escrow.set_claims(text) to escrow_reader, escrow_projector, escrow_auditor;
