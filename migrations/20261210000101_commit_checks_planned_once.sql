-- Statements a batch ran again for every transaction, planned once per connection instead (issue 23).
--
-- A group commit's cost is per callback and per batch; `bench callbacks --batch-size 1` puts the per-batch
-- part at about 3 ms of machine CPU, of which PostgreSQL's statements account for 1.3 ms. Part of the rest
-- was the parser: a SQL-language function that PostgreSQL cannot inline (its body has sub-queries, or it
-- is immutable around a stable `convert_to`) is parsed, analysed and planned again for every query that calls
-- it; from PL/pgSQL that is once per transaction. Three such functions ran in every batch:
--
-- 1. `ledger.idempotency_is_logged` and `ledger.inbox_is_logged`, called by the commit-time trigger
--    `ledger.outcome_is_logged` for each idempotency and inbox row. Now PL/pgSQL with the same bodies: a
--    PL/pgSQL function keeps its plan for the connection. Measured with pgbench over 20 inbox rows per
--    transaction: 0.90 -> 0.61 ms per transaction (the per-row cost unchanged, 16 us). Same signatures, same
--    answers; `verify` keeps its own copy of the rules (`ledger_store::postgres::read`), as before.
-- 2. `ledger.chain_field(p_ledger)` in `ledger.sequence`, once per call for the chain's ledger prefix: the
--    same bytes written inline (`int4(octet length) || UTF-8 bytes`). The rest of `ledger.sequence` is
--    20261208000101's, unchanged.
-- 3. `ledger.lock_streams` took its locks one PL/pgSQL statement per stream (a batch of 22 callbacks names
--    about 57 streams): now one statement takes them all, still in key order (the rows of the ordered
--    sub-query are locked as they come), exclusive or shared as before.

create or replace function ledger.idempotency_is_logged(p_ledger text, p_key text, p_outcome jsonb)
returns boolean
language plpgsql stable as $$
begin
    if p_outcome->>'status' = 'accepted' and jsonb_array_length(coalesce(p_outcome->'events', '[]')) > 0 then
        return exists (select 1 from ledger.events e
                        where e.ledger_id = p_ledger
                          and e.event_id = (p_outcome->'events'->0->>'event_id')::uuid
                          and e.metadata->>'correlation_id' = p_outcome->>'command_id'
                          and e.metadata->>'idempotency_key' = p_key);
    end if;
    return exists (select 1 from ledger.events e
                    where e.ledger_id = p_ledger
                      and e.stream_id = 'outcome-' || (p_outcome->>'command_id')
                      and e.stream_version = 1
                      and e.event_type = 'CommandOutcomeRecorded'
                      and e.payload->>'idempotency_key' = p_key
                      and e.payload->'command'->>'command_id' = p_outcome->>'command_id'
                      and (e.payload->'rejection'->>'code') is not distinct from (p_outcome->'rejection'->>'code'));
end
$$;

create or replace function ledger.inbox_is_logged(p_ledger text, p_delivery uuid, p_disposition text,
                                                  p_dedupe_key text, p_command uuid, p_raw_body bytea)
returns boolean
language plpgsql stable as $$
begin
    -- Each probe is its own statement behind a test of the arguments alone: folded into one condition, a
    -- custom plan reduces to `false` for most rows, and PostgreSQL would keep planning it again per row.
    if p_command is null then
        return exists (select 1 from ledger.events e
                        where e.ledger_id = p_ledger
                          and e.stream_id = 'outcome-' || p_delivery
                          and e.stream_version = 1
                          and e.event_type = 'DeliveryRecorded'
                          and e.payload->>'disposition' = p_disposition
                          and e.payload->>'dedupe_key' = p_dedupe_key
                          and e.payload->>'command_id' is null
                          and e.payload->>'body_sha256' = encode(sha256(p_raw_body), 'hex'));
    end if;
    -- A replayed duplicate: the outcome recorded under its own dedupe key, for the same command.
    if p_disposition = 'duplicate' then
        if exists (select 1 from ledger.idempotency i
                    where i.ledger_id = p_ledger
                      and i.idempotency_key = p_dedupe_key
                      and i.outcome->>'command_id' = p_command::text) then
            return true;
        end if;
    end if;
    -- Carried by the first event of its command's outcome (20261209000101).
    if exists (select 1 from ledger.idempotency i
                    where i.ledger_id = p_ledger
                      and i.idempotency_key = p_dedupe_key
                      and i.outcome->>'status' = 'accepted'
                      and i.outcome->>'command_id' = p_command::text
                      and exists (select 1 from ledger.events e
                                   where e.ledger_id = p_ledger
                                     and e.event_id = (i.outcome->'events'->0->>'event_id')::uuid
                                     and e.metadata->>'correlation_id' = p_command::text
                                     and e.metadata->'delivery'->>'delivery_id' = p_delivery::text
                                     and e.metadata->'delivery'->>'disposition' = p_disposition
                                     and e.metadata->'delivery'->>'dedupe_key' = p_dedupe_key
                                     and e.metadata->'delivery'->>'body_sha256'
                                         = encode(sha256(p_raw_body), 'hex'))) then
        return true;
    end if;
    -- Its own DeliveryRecorded.
    return exists (select 1 from ledger.events e
                    where e.ledger_id = p_ledger
                      and e.stream_id = 'outcome-' || p_delivery
                      and e.stream_version = 1
                      and e.event_type = 'DeliveryRecorded'
                      and e.payload->>'disposition' = p_disposition
                      and e.payload->>'dedupe_key' = p_dedupe_key
                      and (e.payload->>'command_id')::uuid = p_command
                      and e.payload->>'body_sha256' = encode(sha256(p_raw_body), 'hex'));
end
$$;

create or replace function ledger.lock_streams(p_ledger text, p_streams text[], p_exclusive boolean[])
returns void
language plpgsql as $$
begin
    if cardinality(p_streams) is distinct from cardinality(p_exclusive) then
        raise exception 'lock_streams: % streams but % lock modes',
            cardinality(p_streams), cardinality(p_exclusive) using errcode = '22023';
    end if;
    -- The sub-query cannot be flattened (GROUP BY): its sorted rows are locked one by one, in key order.
    perform case when k.exclusive then pg_advisory_xact_lock(1917, k.key)
                 else pg_advisory_xact_lock_shared(1917, k.key) end
       from (select hashtext(p_ledger || chr(31) || s.stream_id) as key, bool_or(s.exclusive) as exclusive
               from unnest(p_streams, p_exclusive) as s(stream_id, exclusive)
              group by 1
              order by 1) k;
end
$$;
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
    -- ledger.chain_field(p_ledger), inline: int4(octet length) || UTF-8 bytes.
    v_prefix       bytea := int4send(octet_length(convert_to(p_ledger, 'UTF8'))) || convert_to(p_ledger, 'UTF8');
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

-- 4. Generic plans for the sequencer's statements. Their parameters are the ledger and arrays of ids; a
--    custom plan, made because the array's length is known, was chosen again at every call (the events'
--    rendering: 126 us to plan, 40 us to run, per batch). `pg_stat_statements` with `track_planning` over
--    `bench callbacks --batch-size 1`: 1,669 plans for 2,487 calls before. The writer's transaction sets the
--    same for its own statements (`ledger_store::postgres::append::lock_streams`). Not under Citus, which
--    cannot make a distributed plan from a generic one with parameters: `ledger_store::citus::distribute`
--    resets both (and the writer does not set it when `pg_dist_partition` exists).
alter function ledger.sequence(text, int) set plan_cache_mode = force_generic_plan;
alter function ledger.sequence_positions(text, int, bigint[]) set plan_cache_mode = force_generic_plan;
