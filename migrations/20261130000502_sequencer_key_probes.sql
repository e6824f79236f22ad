-- The sequencer and the writer's position lookup by full-key probes, whatever plan a session has cached.
--
-- 20261130000501 looked events and positions up with `local_id = any(array)`. A session caches its plans
-- (PL/pgSQL and sqlx both prepare); after five runs PostgreSQL may keep a generic plan made with the
-- statistics of that moment. Planned while a new ledger is tiny, `ledger_id = $1` looks like one row and
-- an array of 500 ids looks unselective, so the cached plan took `ledger_id` alone as the index condition
-- and filtered `local_id`: every call read the whole ledger (auto_explain during `bench append`: 90,168 rows
-- removed by the filter to find 377 events; the writer's lookup read 91,176 index entries for 542 positions;
-- 8 times slower than the previous release). Test: ledger-store/tests/plans.rs.
--
-- Here every lookup is one probe of a unique key, (ledger_id, local_id), per event: a LATERAL subquery with
-- LIMIT 1 over the array of ids (a nested loop; LIMIT keeps PostgreSQL from pulling it up into a join whose
-- plan could again scan by ledger_id), and an equality on every column of a unique index expects one row,
-- so no other index can look cheaper.
-- Same function contract, same chain bytes (v2), same rules as 20261130000501: whole transactions per batch,
-- already-sequenced events dropped, `sequenced_at` monotone and taken under the lock.

create or replace function ledger.sequence(p_ledger text, p_max int) returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp
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
    r              record;
begin
    perform pg_advisory_xact_lock(hashtextextended('escrow-ledger.sequence:' || p_ledger, 0));

    -- The chain's head: the primary key read backwards, one row (LIMIT keeps it an ordered index scan).
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

    -- Whole transactions from the head of the queue (the queue holds only what is not sequenced yet, so
    -- it stays small), in commit-independent (tx_id, local_id) order.
    with head as (
        select q.tx_id from ledger.unsequenced q
         where q.ledger_id = p_ledger
         order by q.local_id
         limit greatest(p_max, 1)
    ), taken as (
        delete from ledger.unsequenced u
         where u.ledger_id = p_ledger
           and u.tx_id in (select distinct h.tx_id from head h)
        returning u.local_id, u.tx_id
    )
    select coalesce(array_agg(t.local_id order by t.tx_id, t.local_id), '{}') into v_taken
      from taken t;

    -- One probe per event, each a LATERAL subquery with LIMIT (never pulled up into a join, so always a
    -- nested loop over the dequeued ids): the event's canonical bytes, and whether it is sequenced already.
    for r in
        select t.id,
               -- canonical v1 bytes after the position (see 20250101000001)
               e.rest
          from unnest(v_taken) with ordinality as t(id, ord)
          cross join lateral (
              select ledger.chain_field(x.stream_id)
                     || int8send(x.stream_version)
                     || uuid_send(x.event_id)
                     || ledger.chain_field(x.event_type)
                     || int4send(x.schema_version)
                     || ledger.chain_field(x.payload::text)
                     || ledger.chain_field(x.metadata::text)
                     || int8send((extract(epoch from x.recorded_at) * 1000000)::bigint) as rest
                from ledger.events x
               where x.ledger_id = p_ledger and x.local_id = t.id
               limit 1) e
          left join lateral (
              select true as done
                from ledger.sequence s
               where s.ledger_id = p_ledger and s.local_id = t.id
               limit 1) d on true
         -- A queued event that is already sequenced is dropped, never sequenced twice.
         where d.done is null
         order by t.ord
    loop
        v_position := v_position + 1;
        v_hash := sha256(v_hash || v_prefix || int8send(v_position) || r.rest || v_at_bytes);
        v_positions := v_positions || v_position;
        v_local_ids := v_local_ids || r.id;
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

-- The writer's call after its commit: sequences (one batch) and answers the positions of its own events
-- in the same round trip. Events another writer's sequencer took are committed and visible by the time
-- this call holds the ledger's lock. An id with no position yet (beyond this batch) is left out: the caller
-- calls again.
create function ledger.sequence_positions(p_ledger text, p_max int, p_local_ids bigint[])
returns table (local_id bigint, event_position bigint)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform ledger.sequence(p_ledger, p_max);
    return query
        select t.id, p.position
          from unnest(p_local_ids) as t(id)
          cross join lateral (
              select s.position
                from ledger.sequence s
               where s.ledger_id = p_ledger and s.local_id = t.id
               limit 1) p;
end
$$;

alter function ledger.sequence_positions(text, int, bigint[]) owner to escrow_definer;
revoke all on function ledger.sequence_positions(text, int, bigint[]) from public;
grant execute on function ledger.sequence_positions(text, int, bigint[]) to escrow_writer, escrow_projector;
