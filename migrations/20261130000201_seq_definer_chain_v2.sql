-- Sequencer v2, chain v2, a definer role, and digested snapshots (issue 10, items 4-6).
--
-- Trust model (see ARCHITECTURE.md "Trust model"): `escrow_writer` appends events and nothing else.
-- Everything that gives events their order (ledger.unsequenced, ledger.sequence) or caches folds
-- (ledger.snapshots, ledger.balance_snapshots) is written only by SECURITY DEFINER functions owned by
-- `escrow_definer`, a NOLOGIN role, each with a fixed search_path:
--   ledger.queue_appended()          trigger on ledger.events: queues every inserted event (so the writer
--                                    needs no right on the queue and cannot re-queue a sequenced event)
--   ledger.sequence(ledger, max)     the sequencer (whole transactions per batch, chain v2)
--   ledger.save_snapshot(...)        a stream snapshot with its digest
--   ledger.save_balance_snapshot(...) a balance snapshot with its digest
--
-- Chain v2 (ledger.sequence.chain_version = 2; rows hashed before this migration keep version 1 and
-- stay verifiable):
--   canonical_v2(e) = canonical_v1(e) || int8(sequenced_at as microseconds since the Unix epoch)
-- so that `sequenced_at`, which resolves `--as-of`, is held by the chain and by seals. Every other column a
-- report reads (stream, version, id, type, schema, payload, metadata, recorded_at, position) was already
-- covered by v1. Along the log the version never goes back from 2 to 1 and `sequenced_at` never decreases
-- (the verifier checks both).
--
-- Snapshot digests (recomputed by the loader in Rust, which ignores a row whose digest differs):
--   stream:  sha256(field(ledger) || field(stream) || int8(stream_version) || int4(fold_version)
--                   || field(state::text))
--   balance: sha256(field(ledger) || int8(position) || field(balances::text))

do $$
begin
    create role escrow_definer nologin;
exception
    when duplicate_object or unique_violation then null;
end
$$;

-- Without superuser rights the migrating role must be a member to hand functions to the definer.
do $$
begin
    if not (select rolsuper from pg_roles where rolname = current_user) then
        execute format('grant escrow_definer to %I', current_user);
    end if;
exception
    when unique_violation or duplicate_object then null;
end
$$;

-- The queue remembers the transaction of each event, so that a batch can take whole transactions.
alter table ledger.unsequenced add column tx_id xid8;
update ledger.unsequenced u
   set tx_id = e.tx_id
  from ledger.events e
 where e.ledger_id = u.ledger_id and e.local_id = u.local_id;
alter table ledger.unsequenced alter column tx_id set default pg_current_xact_id();
alter table ledger.unsequenced alter column tx_id set not null;
create index unsequenced_tx_idx on ledger.unsequenced (ledger_id, tx_id);

alter table ledger.sequence add column chain_version smallint not null default 1
    check (chain_version in (1, 2));

alter table ledger.snapshots add column digest bytea;
alter table ledger.balance_snapshots add column digest bytea;

-- Queues what a statement inserted into ledger.events (one INSERT per statement, not one per row).
-- ON CONFLICT: a superuser script may still queue explicitly in the same statement.
create function ledger.queue_appended() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into ledger.unsequenced (ledger_id, local_id, tx_id)
    select i.ledger_id, i.local_id, i.tx_id from appended i
    on conflict do nothing;
    return null;
end
$$;

create trigger events_queue after insert on ledger.events
    referencing new table as appended
    for each statement execute function ledger.queue_appended();

-- The sequencer. Same contract as before (see 20250101000001): serializes the sequencers of one ledger
-- with an advisory transaction lock and gives committed queued events gapless positions and chain links.
-- Changes:
--   * a batch takes whole transactions: the transactions of the first `p_max` queued events, with all of
--     their events (a batch may exceed `p_max` by the rest of its last transaction, never split it);
--   * a queued event that is already sequenced is dropped from the queue instead of failing every
--     later call on the unique key;
--   * links are chain v2 (they hold sequenced_at);
--   * sequenced_at is read under the lock and never decreases. A reader that resolves an as-of time takes
--     the same lock shared first (ledger_store's position_at_or_before), so no sequencing transaction is in
--     flight with a sequenced_at older than the moment that reader looked: an as-of time in the past
--     always resolves to the same position.
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

    for r in
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
          from taken t
          join ledger.events e on e.ledger_id = p_ledger and e.local_id = t.local_id
         where not exists (select 1 from ledger.sequence s
                            where s.ledger_id = p_ledger and s.local_id = t.local_id)
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

-- A stream snapshot, only of a version the stream has reached, with its digest (see the header).
create function ledger.save_snapshot(p_ledger text, p_stream text, p_version bigint, p_fold int,
                                     p_state jsonb, p_taken_at timestamptz) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select 1 from ledger.events e
                    where e.ledger_id = p_ledger and e.stream_id = p_stream
                      and e.stream_version = p_version) then
        raise exception 'stream % has no version %', p_stream, p_version using errcode = '22023';
    end if;
    insert into ledger.snapshots as s
           (ledger_id, stream_id, stream_version, fold_version, state, taken_at, digest)
    values (p_ledger, p_stream, p_version, p_fold, p_state, p_taken_at,
            sha256(ledger.chain_field(p_ledger) || ledger.chain_field(p_stream)
                   || int8send(p_version) || int4send(p_fold) || ledger.chain_field(p_state::text)))
    on conflict (ledger_id, stream_id, fold_version) do update
       set stream_version = excluded.stream_version, state = excluded.state,
           taken_at = excluded.taken_at, digest = excluded.digest;
end
$$;

-- A balance snapshot at a sequenced position, with its digest (see the header).
create function ledger.save_balance_snapshot(p_ledger text, p_position bigint, p_balances jsonb)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_position > 0 and not exists (select 1 from ledger.sequence s
                                        where s.ledger_id = p_ledger and s.position = p_position) then
        raise exception 'ledger % has no position %', p_ledger, p_position using errcode = '22023';
    end if;
    insert into ledger.balance_snapshots as b (ledger_id, position, balances, digest)
    values (p_ledger, p_position, p_balances,
            sha256(ledger.chain_field(p_ledger) || int8send(p_position)
                   || ledger.chain_field(p_balances::text)))
    on conflict (ledger_id, position) do update
       set balances = excluded.balances, taken_at = now(), digest = excluded.digest;
end
$$;

-- The definer's own rights: exactly what the functions above touch.
grant usage on schema ledger to escrow_definer;
grant select on ledger.events, ledger.ledgers to escrow_definer;
grant select, insert on ledger.sequence to escrow_definer;
grant select, insert, delete on ledger.unsequenced to escrow_definer;
grant select, insert, update on ledger.snapshots, ledger.balance_snapshots to escrow_definer;
grant execute on function ledger.chain_field(text) to escrow_definer;

alter function ledger.queue_appended() owner to escrow_definer;
alter function ledger.sequence(text, int) owner to escrow_definer;
alter function ledger.save_snapshot(text, text, bigint, int, jsonb, timestamptz) owner to escrow_definer;
alter function ledger.save_balance_snapshot(text, bigint, jsonb) owner to escrow_definer;

revoke all on function ledger.queue_appended() from public;
revoke all on function ledger.sequence(text, int) from public;
revoke all on function ledger.save_snapshot(text, text, bigint, int, jsonb, timestamptz) from public;
revoke all on function ledger.save_balance_snapshot(text, bigint, jsonb) from public;

-- The writer: append events (events, idempotency, inbox, outbox leases) and read; sequencing and
-- snapshots only through the functions. Nothing that orders or caches is writable directly.
revoke insert, update, delete, truncate on ledger.sequence, ledger.unsequenced from escrow_writer;
revoke insert, update, delete, truncate on ledger.snapshots, ledger.balance_snapshots from escrow_writer;
grant select on ledger.sequence, ledger.unsequenced, ledger.snapshots, ledger.balance_snapshots
    to escrow_writer;
grant execute on function ledger.sequence(text, int) to escrow_writer, escrow_projector;
grant execute on function ledger.save_snapshot(text, text, bigint, int, jsonb, timestamptz)
    to escrow_writer;
grant execute on function ledger.save_balance_snapshot(text, bigint, jsonb)
    to escrow_writer, escrow_projector;
