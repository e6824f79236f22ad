-- The sequencer, same contract and same chain as in 20250101000001, made set-based where it can be:
-- the canonical bytes of each event are computed by one query (all but the position), the loop only
-- chains the hashes, and the sequence rows go in with one INSERT instead of one per event. Per-row
-- INSERTs inside the loop made the sequencer, which runs under the per-ledger lock, the slowest step of
-- a group commit.
create or replace function ledger.sequence(p_ledger text, p_max int) returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_position     bigint;
    v_hash         bytea;
    v_last_at      timestamptz;
    v_sequenced_at timestamptz;
    v_prefix       bytea := ledger.chain_field(p_ledger);
    v_positions    bigint[] := '{}';
    v_local_ids    bigint[] := '{}';
    v_hashes       bytea[] := '{}';
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

    for r in
        with taken as (
            delete from ledger.unsequenced u
             where u.ledger_id = p_ledger
               and u.local_id in (select q.local_id from ledger.unsequenced q
                                   where q.ledger_id = p_ledger
                                   order by q.local_id
                                   limit p_max)
            returning u.local_id
        )
        select e.local_id,
               -- canonical bytes after the position (see the header of 20250101000001)
               ledger.chain_field(e.stream_id)
               || int8send(e.stream_version)
               || uuid_send(e.event_id)
               || ledger.chain_field(e.event_type)
               || int4send(e.schema_version)
               || ledger.chain_field(e.payload::text)
               || ledger.chain_field(e.metadata::text)
               || int8send((extract(epoch from e.recorded_at) * 1000000)::bigint) as rest
          from taken t
          join ledger.events e on e.ledger_id = p_ledger and e.local_id = t.local_id
         order by e.tx_id, e.local_id
    loop
        v_position := v_position + 1;
        v_hash := sha256(v_hash || v_prefix || int8send(v_position) || r.rest);
        v_positions := v_positions || v_position;
        v_local_ids := v_local_ids || r.local_id;
        v_hashes := v_hashes || v_hash;
    end loop;

    if cardinality(v_positions) > 0 then
        insert into ledger.sequence (ledger_id, position, local_id, hash, sequenced_at)
        select p_ledger, p, l, h, v_sequenced_at
          from unnest(v_positions, v_local_ids, v_hashes) as u(p, l, h);
        -- Only a wake-up for subscribers: they always re-read from their own cursor.
        perform pg_notify('ledger_sequenced', p_ledger);
    end if;
    return cardinality(v_positions);
end
$$;

revoke all on function ledger.sequence(text, int) from public;
grant execute on function ledger.sequence(text, int) to escrow_writer;
