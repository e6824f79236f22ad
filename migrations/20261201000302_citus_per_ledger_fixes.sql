-- Per-ledger operations that failed or lost a guarantee on Citus (issue 13). On one PostgreSQL server
-- behaviour is unchanged.
--
-- 1. `ledger.position_at_or_before(ledger, time)`: "as of a time" resolved behind the sequencer's lock.
--    The sequencer stamps `sequenced_at` under the per-ledger advisory lock and commits before releasing
--    it; taking that lock (shared) first means no sequencing transaction is in flight any more whose stamp
--    is older than now, so the next statement's snapshot sees every link stamped before this moment and a
--    time in the past resolves to the same position on every run. The reader used to take the lock in its
--    own transaction on the node it is connected to; on Citus that is the coordinator, while `ledger.sequence`
--    takes it on the worker holding the ledger, so the two never met. As a function distributed by its
--    ledger argument (`ledger_store::citus::distribute`) the lock and the read run on that worker. Each
--    statement of a volatile PL/pgSQL function takes a new snapshot: the read sees what committed before
--    the lock was granted. Invoker's rights: it reads only what the caller may read already.
-- 2. `ledger.save_balance_snapshot`: the upsert sets `taken_at` from the inserted row, not `now()` in
--    DO UPDATE. Citus refuses a non-immutable function in DO UPDATE on a distributed table, so on Citus
--    every balance snapshot failed (a logged warning) and as-of reports replayed the log from its start.
-- 3. `ledger.outbox_leases.claimed_at`: when the lease was last taken. The claim compares an existing lease
--    with `excluded.claimed_at` (the statement's `now()`, inserted) instead of calling `now()` in DO UPDATE
--    ... WHERE, for the same reason: on Citus every claim of the payout worker failed.

create function ledger.position_at_or_before(p_ledger text, p_time timestamptz) returns bigint
language plpgsql volatile
set search_path = pg_catalog
as $$
declare
    v_position bigint;
begin
    perform pg_advisory_xact_lock_shared(hashtextextended('escrow-ledger.sequence:' || p_ledger, 0));
    select max(s.position) into v_position
      from ledger.sequence s
     where s.ledger_id = p_ledger and s.sequenced_at <= p_time;
    return coalesce(v_position, 0);
end
$$;

create or replace function ledger.save_balance_snapshot(p_ledger text, p_position bigint, p_balances jsonb)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_position > 0 and not exists (select 1 from ledger.sequence s
                                        where s.ledger_id = p_ledger and s.position = p_position) then
        raise exception 'ledger % has no position %', p_ledger, p_position using errcode = '22023';
    end if;
    insert into ledger.balance_snapshots as b (ledger_id, position, balances, taken_at, digest)
    values (p_ledger, p_position, p_balances, now(),
            sha256(ledger.chain_field(p_ledger) || int8send(p_position)
                   || ledger.chain_field(p_balances::text)))
    on conflict (ledger_id, position) do update
       set balances = excluded.balances, taken_at = excluded.taken_at, digest = excluded.digest;
end
$$;

alter table ledger.outbox_leases add column claimed_at timestamptz;
