-- escrow-ledger event store schema.
--
-- Every object lives in schema `ledger`; every table leads its primary and unique keys with
-- `ledger_id`, so several independent ledgers share one database without sharing an order.
--
-- Ordering: appends never take a global lock. Each append inserts its events and, in the same
-- transaction, one row per event into the queue `ledger.unsequenced`. After committing, the writer
-- calls `ledger.sequence(ledger_id, max)`, which serializes only the sequencers of that ledger
-- (advisory transaction lock), takes committed queued events in (tx_id, local_id) order, and gives
-- each a gapless `position` and the next link of the hash chain in `ledger.sequence`. Readers read
-- only sequenced events, ordered by position, so a reader never skips an event that commits late.
-- Positions are plain numbers stored in a table: they survive pg_dump/restore, and events appended
-- after a restore get later positions (xid values are used only to order one sequencer batch).
--
-- Hash chain (must match ledger_store::chain in Rust):
--   field(text)     = int4 big-endian byte length || UTF-8 bytes
--   canonical(e)    = field(ledger_id) || int8(position) || field(stream_id) || int8(stream_version)
--                     || uuid(event_id, 16 bytes) || field(event_type) || int4(schema_version)
--                     || field(payload::text) || field(metadata::text)
--                     || int8(recorded_at as microseconds since the Unix epoch)
--   hash(position)  = sha256(hash(position - 1) || canonical(e))
--   hash(0)         = 32 zero bytes (the genesis link of every ledger).

create schema if not exists ledger;

create table ledger.ledgers (
    ledger_id  text        not null,
    created_at timestamptz not null default now(),
    constraint ledgers_pkey primary key (ledger_id)
);

insert into ledger.ledgers (ledger_id) values ('default');

create table ledger.events (
    ledger_id      text        not null references ledger.ledgers (ledger_id),
    stream_id      text        not null,
    stream_version bigint      not null check (stream_version >= 1),
    event_id       uuid        not null,
    event_type     text        not null,
    schema_version int         not null,
    payload        jsonb       not null,
    metadata       jsonb       not null,
    recorded_at    timestamptz not null default now(),
    tx_id          xid8        not null default pg_current_xact_id(),
    local_id       bigint      not null generated always as identity,
    constraint events_pkey primary key (ledger_id, stream_id, stream_version),
    constraint events_event_id_key unique (ledger_id, event_id),
    constraint events_local_id_key unique (ledger_id, local_id)
);

-- Committed-but-not-yet-sequenced events. Not append-only: the sequencer deletes what it takes.
create table ledger.unsequenced (
    ledger_id text   not null,
    local_id  bigint not null,
    constraint unsequenced_pkey primary key (ledger_id, local_id)
);

create table ledger.sequence (
    ledger_id    text        not null,
    position     bigint      not null check (position >= 1),
    local_id     bigint      not null,
    hash         bytea       not null check (octet_length(hash) = 32),
    sequenced_at timestamptz not null,
    constraint sequence_pkey primary key (ledger_id, position),
    constraint sequence_local_id_key unique (ledger_id, local_id),
    constraint sequence_event_fkey foreign key (ledger_id, local_id)
        references ledger.events (ledger_id, local_id)
);

create index sequence_sequenced_at_idx on ledger.sequence (ledger_id, sequenced_at);

create table ledger.idempotency (
    ledger_id       text        not null references ledger.ledgers (ledger_id),
    idempotency_key text        not null,
    request         jsonb       not null,
    outcome         jsonb       not null,
    recorded_at     timestamptz not null default now(),
    constraint idempotency_pkey primary key (ledger_id, idempotency_key)
);

-- Snapshots are a cache of a fold at a stream version; replacing one is allowed (not append-only).
create table ledger.snapshots (
    ledger_id      text        not null references ledger.ledgers (ledger_id),
    stream_id      text        not null,
    stream_version bigint      not null,
    fold_version   int         not null,
    state          jsonb       not null,
    taken_at       timestamptz not null default now(),
    constraint snapshots_pkey primary key (ledger_id, stream_id, fold_version)
);

-- Append-only enforcement. SQLSTATE EL001 lets the Rust side map it to AppendOnlyViolation.
create function ledger.forbid_mutation() returns trigger
language plpgsql as $$
begin
    raise exception '%.% is append-only: % is not allowed', tg_table_schema, tg_table_name, tg_op
        using errcode = 'EL001';
end
$$;

create trigger events_no_update before update on ledger.events
    for each row execute function ledger.forbid_mutation();
create trigger events_no_delete before delete on ledger.events
    for each row execute function ledger.forbid_mutation();
create trigger events_no_truncate before truncate on ledger.events
    for each statement execute function ledger.forbid_mutation();

create trigger sequence_no_update before update on ledger.sequence
    for each row execute function ledger.forbid_mutation();
create trigger sequence_no_delete before delete on ledger.sequence
    for each row execute function ledger.forbid_mutation();
create trigger sequence_no_truncate before truncate on ledger.sequence
    for each statement execute function ledger.forbid_mutation();

create trigger idempotency_no_update before update on ledger.idempotency
    for each row execute function ledger.forbid_mutation();
create trigger idempotency_no_delete before delete on ledger.idempotency
    for each row execute function ledger.forbid_mutation();
create trigger idempotency_no_truncate before truncate on ledger.idempotency
    for each statement execute function ledger.forbid_mutation();

-- Length-prefixed text, so that no two different field lists share canonical bytes.
create function ledger.chain_field(p text) returns bytea
language sql immutable strict as $$
    select int4send(octet_length(convert_to(p, 'UTF8'))) || convert_to(p, 'UTF8')
$$;

create function ledger.canonical_event_bytes(e ledger.events, p_position bigint) returns bytea
language sql stable strict as $$
    select ledger.chain_field(e.ledger_id)
        || int8send(p_position)
        || ledger.chain_field(e.stream_id)
        || int8send(e.stream_version)
        || uuid_send(e.event_id)
        || ledger.chain_field(e.event_type)
        || int4send(e.schema_version)
        || ledger.chain_field(e.payload::text)
        || ledger.chain_field(e.metadata::text)
        || int8send((extract(epoch from e.recorded_at) * 1000000)::bigint)
$$;

-- The per-ledger sequencer (see the header). SECURITY DEFINER so that the writer role needs no
-- DELETE right on the queue. Returns how many events it sequenced.
create function ledger.sequence(p_ledger text, p_max int) returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_position     bigint;
    v_hash         bytea;
    v_last_at      timestamptz;
    v_sequenced_at timestamptz;
    v_count        bigint := 0;
    r              ledger.events;
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
    -- sequenced_at never decreases, even if the wall clock steps back.
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
        select e.*
          from taken t
          join ledger.events e on e.ledger_id = p_ledger and e.local_id = t.local_id
         order by e.tx_id, e.local_id
    loop
        v_position := v_position + 1;
        v_hash := sha256(v_hash || ledger.canonical_event_bytes(r, v_position));
        insert into ledger.sequence (ledger_id, position, local_id, hash, sequenced_at)
        values (p_ledger, v_position, r.local_id, v_hash, v_sequenced_at);
        v_count := v_count + 1;
    end loop;

    if v_count > 0 then
        -- Only a wake-up for subscribers: they always re-read from their own cursor.
        perform pg_notify('ledger_sequenced', p_ledger);
    end if;
    return v_count;
end
$$;

-- The application role: INSERT and SELECT on the append-only tables, nothing that rewrites
-- history. Roles are cluster-wide and parallel test databases migrate at the same moment, so the
-- creation tolerates both a clean duplicate and the catalog's unique-index race.
do $$
begin
    create role escrow_writer nologin;
exception
    when duplicate_object or unique_violation then null;
end
$$;

grant usage on schema ledger to escrow_writer;
grant select, insert on ledger.events, ledger.sequence, ledger.idempotency, ledger.unsequenced,
    ledger.ledgers to escrow_writer;
grant select, insert, update on ledger.snapshots to escrow_writer;
revoke all on function ledger.sequence(text, int) from public;
grant execute on function ledger.sequence(text, int) to escrow_writer;
