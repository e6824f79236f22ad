-- The sequencer's batch query, planned the same way whatever the statistics say.
--
-- 20261130000201 joined the dequeued ids with ledger.events and ledger.sequence; on a ledger whose tables had
-- grown since they were last analyzed, the cached generic plan kept only `ledger_id` as the index condition
-- and filtered `local_id` row by row (an EXPLAIN of one call: 7,995,136 rows removed by the join filter,
-- 3 s for 512 events; `bench append` calls hit the 30 s statement timeout). Same function, same chain bytes,
-- same rules (whole transactions, already-sequenced events dropped, `sequenced_at` monotone and taken under
-- the lock); the dequeued ids are kept in an array and every lookup is `local_id = any(array)`, one index
-- scan each, with bitmap scans off inside the function (see its SET clause). Ownership (escrow_definer) and grants are kept by `create or replace`.

create or replace function ledger.sequence(p_ledger text, p_max int) returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp
-- Bitmap scans off inside this function only: a bitmap scan let the planner keep `ledger_id` alone as the
-- index condition (it thought the tables tiny); a plain index scan always uses (ledger_id, local_id).
set enable_bitmapscan = off
as $$
declare
    v_position     bigint;
    v_hash         bytea;
    v_last_at      timestamptz;
    v_sequenced_at timestamptz;
    v_at_bytes     bytea;
    v_prefix       bytea := ledger.chain_field(p_ledger);
    v_positions    bigint[] := '{}';
    v_local_ids    bigint[] := '{}';
    v_hashes       bytea[] := '{}';
    v_taken        bigint[];
    v_done         bigint[];
    r              record;
begin
    perform pg_advisory_xact_lock(hashtextextended('escrow-ledger.sequence:' || p_ledger, 0));

    select s.position, s.hash, s.sequenced_at into v_position, v_hash, v_last_at
      from ledger.sequence s
     where s.ledger_id = p_ledger
     order by s.position desc
     limit 1;
    if not found then
        v_position := 0;
        v_hash := decode(repeat('00', 32), 'hex');
        v_last_at := '-infinity';
    end if;
    v_sequenced_at := greatest(clock_timestamp(), v_last_at);
    v_at_bytes := int8send((extract(epoch from v_sequenced_at) * 1000000)::bigint);

    -- Arrays, not joins: every lookup below is one index scan with `= any(array)`, whatever the planner
    -- believes of the tables' sizes (with a join it once kept only ledger_id as the index condition and
    -- filtered local_id per row: quadratic in the ledger's size, 25 s per call at 100,000 events).
    with head as (
        select q.tx_id from ledger.unsequenced q
         where q.ledger_id = p_ledger
         order by q.local_id
         limit greatest(p_max, 1)
    ), taken as (
        delete from ledger.unsequenced u
         where u.ledger_id = p_ledger
           and u.tx_id in (select distinct h.tx_id from head h)
        returning u.local_id
    )
    select coalesce(array_agg(t.local_id), '{}') into v_taken from taken t;
    -- A queued event that is already sequenced is dropped, never sequenced twice.
    select coalesce(array_agg(s.local_id), '{}') into v_done
      from ledger.sequence s
     where s.ledger_id = p_ledger and s.local_id = any(v_taken);

    for r in
        select e.local_id,
               -- canonical v1 bytes after the position (see 20250101000001)
               ledger.chain_field(e.stream_id)
               || int8send(e.stream_version)
               || uuid_send(e.event_id)
               || ledger.chain_field(e.event_type)
               || int4send(e.schema_version)
               || ledger.chain_field(e.payload::text)
               || ledger.chain_field(e.metadata::text)
               || int8send((extract(epoch from e.recorded_at) * 1000000)::bigint) as rest
          from ledger.events e
         where e.ledger_id = p_ledger
           and e.local_id = any(v_taken)
           and not (e.local_id = any(v_done))
         order by e.tx_id, e.local_id
    loop
        v_position := v_position + 1;
        v_hash := sha256(v_hash || v_prefix || int8send(v_position) || r.rest || v_at_bytes);
        v_positions := v_positions || v_position;
        v_local_ids := v_local_ids || r.local_id;
        v_hashes := v_hashes || v_hash;
    end loop;

    if cardinality(v_positions) > 0 then
        insert into ledger.sequence (ledger_id, position, local_id, hash, sequenced_at, chain_version)
        select p_ledger, p, l, h, v_sequenced_at, 2
          from unnest(v_positions, v_local_ids, v_hashes) as u(p, l, h);
        -- Only a wake-up for subscribers: they always re-read from their own cursor.
        perform pg_notify('ledger_sequenced', p_ledger);
    end if;
    return cardinality(v_positions);
end
$$;
