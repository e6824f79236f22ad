-- A delivery answered with the outcome already recorded under its own dedupe key (disposition `duplicate`,
-- the same command) is backed by that outcome, which is in the chain: a duplicate appends no event
-- (`ledger_store::outcome_log::is_replayed_duplicate`). Every other inbox row still needs its DeliveryRecorded.
create or replace function ledger.inbox_is_logged(p_ledger text, p_delivery uuid, p_disposition text,
                                                  p_dedupe_key text, p_command uuid, p_raw_body bytea)
returns boolean
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
