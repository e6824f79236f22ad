-- The write path's work per event, cut without changing what is stored or hashed (issue 23).
--
-- Measured with pg_stat_statements (track = all) over `bench append --writers 8` (104,000 events): the
-- sequencer spent 24 us of its 55 us per event rendering the canonical bytes, most of it in four calls per
-- event of `ledger.chain_field`, a SQL function PostgreSQL does not inline here (its argument is used
-- twice), so each call ran its own little executor (416,127 calls). And each position's row re-read and
-- row-locked its event (the foreign key `sequence_event_fkey`: `select 1 ... for key share` per event, which
-- also writes the lock into the event's tuple).
--
-- 1. `ledger.sequence` renders the same bytes inline: each text field converted once (`convert_to`, in a
--    subquery kept apart by OFFSET 0 so the planner does not copy the expression into both uses), then
--    `int4(length) || bytes` as `chain_field` does. Same chain (v2), same contract, same rules as
--    20261130000502; `ledger.chain_field` stays for the snapshot digests and `verify`'s SQL.
--    (104,000 stored events rendered both ways: identical bytes; 1.64 s with `chain_field`, 0.51 s inline.)
-- 2. `sequence_event_fkey` goes. Only the sequencer (security definer) writes `ledger.sequence`, and it
--    positions only events it has just read by their key in the same statement; `verify` names a position
--    whose event is missing or differs (it re-hashes every event from the log).
-- 3. `ledger.stamp_recorded_at` without its `set search_path` clause: a SET clause saves and restores the
--    setting around every call (2.4 us per row, against 0.6 us without, in a 200,000-row insert); the body
--    names `pg_catalog.now()` so no search path can put another `now` in its place.
-- 4. One queue row per inserting statement, not per event: `ledger.unsequenced.local_ids` holds the
--    statement's events (its `local_id` is the first of them, the queue's order and key). A group commit's
--    batch is one row to insert and one to delete instead of one per event (the queue's insert and delete
--    were 10% of PostgreSQL's time in `bench append`). A row without `local_ids` queues its `local_id` alone:
--    rows queued before this migration, the one-row-per-event trigger used on Citus
--    (`ledger.queue_appended_row`), and an owner's repair. The sequencer takes each queued id once, however
--    many rows name it. When a statement's row cannot be inserted (its first id is queued already, by an
--    owner in the same statement), each of its events is queued alone, as before.

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
    v_txs          xid8[];
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

    -- Whole transactions from the head of the queue, in (tx_id, local_id) order (see 20261130000502): the
    -- transactions of the queue's first rows up to `p_max` events, then every row of those transactions.
    select coalesce(array_agg(distinct h.tx_id), '{}') into v_txs
      from (select q.tx_id,
                   sum(coalesce(cardinality(q.local_ids), 1)) over (order by q.local_id) as upto,
                   coalesce(cardinality(q.local_ids), 1) as own
              from ledger.unsequenced q
             where q.ledger_id = p_ledger
             order by q.local_id
             limit greatest(p_max, 1)) h
     where h.upto - h.own < greatest(p_max, 1);
    with taken as (
        delete from ledger.unsequenced u
         where u.ledger_id = p_ledger and u.tx_id = any(v_txs)
        returning u.tx_id, coalesce(u.local_ids, array[u.local_id]) as ids
    )
    select coalesce(array_agg(k.id order by k.tx_id, k.id), '{}') into v_taken
      from (select distinct t.tx_id, i.id
              from taken t cross join lateral unnest(t.ids) as i(id)) k;

    -- One probe per event by its full key (LATERAL with LIMIT: always a nested loop over the dequeued
    -- ids), its canonical v1 bytes after the position rendered inline (the fields of `chain_field`:
    -- int4(octet length) || UTF-8 bytes), and whether it is sequenced already.
    for r in
        select t.id, e.rest
          from unnest(v_taken) with ordinality as t(id, ord)
          cross join lateral (
              select int4send(length(f.stream)) || f.stream
                     || int8send(x.stream_version)
                     || uuid_send(x.event_id)
                     || int4send(length(f.type)) || f.type
                     || int4send(x.schema_version)
                     || int4send(length(f.payload)) || f.payload
                     || int4send(length(f.metadata)) || f.metadata
                     || int8send((extract(epoch from x.recorded_at) * 1000000)::bigint) as rest
                from ledger.events x
               cross join lateral (
                   select convert_to(x.stream_id, 'UTF8') as stream,
                          convert_to(x.event_type, 'UTF8') as type,
                          convert_to(x.payload::text, 'UTF8') as payload,
                          convert_to(x.metadata::text, 'UTF8') as metadata
                   offset 0) f
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

alter table ledger.sequence drop constraint if exists sequence_event_fkey;

create or replace function ledger.stamp_recorded_at() returns trigger
language plpgsql
as $$
begin
    new.recorded_at := pg_catalog.now();
    return new;
end
$$;

alter table ledger.unsequenced add column local_ids bigint[];

create or replace function ledger.queue_appended() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    r record;
begin
    -- One group per statement (its ledger, its transaction), unless a statement wrote to several ledgers.
    for r in
        select i.ledger_id, i.tx_id, array_agg(i.local_id order by i.local_id) as ids
          from appended i
         group by i.ledger_id, i.tx_id
    loop
        insert into ledger.unsequenced (ledger_id, local_id, tx_id, local_ids)
        values (r.ledger_id, r.ids[1], r.tx_id, r.ids)
        on conflict do nothing;
        if not found then
            -- The statement's first id is queued already: queue each of its events alone (an id queued
            -- twice is taken once).
            insert into ledger.unsequenced (ledger_id, local_id, tx_id)
            select r.ledger_id, i.id, r.tx_id from unnest(r.ids) as i(id)
            on conflict do nothing;
        end if;
    end loop;
    return null;
end
$$;
