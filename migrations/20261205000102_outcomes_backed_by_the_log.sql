-- Every recorded outcome is in the chain (issue 19, finding 2). An idempotency row or an inbox row decides how
-- a later request is answered ("duplicate", "rejected"): one written beside the engine under a future
-- callback's key made a genuine deposit answer `duplicate` and never book. Each row now exists only together
-- with a log entry that records the same outcome, in the same transaction:
--   * an accepted outcome with events: its first event, with the same command id and idempotency key;
--   * any other keyed outcome (a rejection, an accepted no-op): `CommandOutcomeRecorded` in the stream
--     `outcome-<command id>`, with the same key and rejection code (ledger_core::outcomes);
--   * an inbox row: `DeliveryRecorded` in `outcome-<delivery id>`, with the same disposition, dedupe key,
--     command and the SHA-256 of the raw body.
-- Checked at COMMIT by deferred constraint triggers (the engine writes the row before or after its events,
-- whichever it needs). A forger must then also forge a log entry: hashed in the chain, named by `verify`
-- (which checks both tables row by row) and decided again by `verify --deep`.
--
-- Under Citus the tables are distributed and a trigger on a shard cannot read another distributed table
-- safely: the triggers are not created there (`ledger_store::citus` drops them before distributing); the
-- row-by-row check of `verify` still names an unbacked row.
-- Whether an idempotency row is backed by the log: used by the commit-time trigger and by `verify`.
create function ledger.idempotency_is_logged(p_ledger text, p_key text, p_outcome jsonb) returns boolean
language sql stable as $$
    select case
        when p_outcome->>'status' = 'accepted' and jsonb_array_length(coalesce(p_outcome->'events', '[]')) > 0 then
            exists (select 1 from ledger.events e
                     where e.ledger_id = p_ledger
                       and e.event_id = (p_outcome->'events'->0->>'event_id')::uuid
                       and e.metadata->>'correlation_id' = p_outcome->>'command_id'
                       and e.metadata->>'idempotency_key' = p_key)
        else
            exists (select 1 from ledger.events e
                     where e.ledger_id = p_ledger
                       and e.stream_id = 'outcome-' || (p_outcome->>'command_id')
                       and e.stream_version = 1
                       and e.event_type = 'CommandOutcomeRecorded'
                       and e.payload->>'idempotency_key' = p_key
                       and e.payload->'command'->>'command_id' = p_outcome->>'command_id'
                       and (e.payload->'rejection'->>'code') is not distinct from (p_outcome->'rejection'->>'code'))
    end
$$;

-- Whether an inbox row is backed by the log (same uses): by its DeliveryRecorded, or, for a delivery answered
-- with the outcome already recorded under its own dedupe key (disposition `duplicate`, the same command), by
-- that outcome, which is in the chain: a duplicate appends no event
-- (`ledger_store::outcome_log::is_replayed_duplicate`).
create function ledger.inbox_is_logged(p_ledger text, p_delivery uuid, p_disposition text, p_dedupe_key text,
                                       p_command uuid, p_raw_body bytea) returns boolean
language sql stable as $$
    select (p_disposition = 'duplicate' and p_command is not null
            and exists (select 1 from ledger.idempotency i
                         where i.ledger_id = p_ledger
                           and i.idempotency_key = p_dedupe_key
                           and i.outcome->>'command_id' = p_command::text))
        or exists (select 1 from ledger.events e
                    where e.ledger_id = p_ledger
                      and e.stream_id = 'outcome-' || p_delivery
                      and e.stream_version = 1
                      and e.event_type = 'DeliveryRecorded'
                      and e.payload->>'disposition' = p_disposition
                      and e.payload->>'dedupe_key' = p_dedupe_key
                      and (e.payload->>'command_id')::uuid is not distinct from p_command
                      and e.payload->>'body_sha256' = encode(sha256(p_raw_body), 'hex'))
$$;

create function ledger.outcome_is_logged() returns trigger
language plpgsql as $$
begin
    if tg_table_name = 'idempotency' then
        if not ledger.idempotency_is_logged(new.ledger_id, new.idempotency_key, new.outcome) then
            raise exception 'idempotency row % of ledger % is not backed by a log entry recording the same outcome',
                new.idempotency_key, new.ledger_id
                using errcode = 'EL003', hint = 'outcomes are recorded by the engine with their log entry';
        end if;
    elsif not ledger.inbox_is_logged(new.ledger_id, new.delivery_id, new.disposition, new.dedupe_key,
                                     new.command_id, new.raw_body) then
        raise exception 'inbox row % of ledger % is not backed by a log entry recording the same outcome',
            new.delivery_id, new.ledger_id
            using errcode = 'EL003', hint = 'deliveries are recorded by the engine with their log entry';
    end if;
    return null;
end
$$;

grant execute on function ledger.idempotency_is_logged(text, text, jsonb),
                          ledger.inbox_is_logged(text, uuid, text, text, uuid, bytea)
   to escrow_writer, escrow_auditor;

do $$
declare
    v_distributed boolean := false;
begin
    if to_regclass('pg_catalog.pg_dist_partition') is not null then
        execute 'select exists (select 1 from pg_dist_partition where logicalrelid = ''ledger.idempotency''::regclass)'
           into v_distributed;
    end if;
    if not v_distributed then  -- a database distributed before this migration keeps verify's check only
        create constraint trigger idempotency_logged after insert on ledger.idempotency
            deferrable initially deferred for each row execute function ledger.outcome_is_logged();
        create constraint trigger inbox_logged after insert on ledger.inbox
            deferrable initially deferred for each row execute function ledger.outcome_is_logged();
    end if;
end
$$;
