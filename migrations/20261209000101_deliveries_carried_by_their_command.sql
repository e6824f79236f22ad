-- A delivery whose command appended events is backed by that command's first event (issue 23).
--
-- Until now every inbox row came with a `DeliveryRecorded` event of its own (migration 20261205000102): in
-- `bench callbacks` that is 8,000 of 34,000 events, each inserted, sequenced, hashed and positioned. When
-- the delivery ran a command that appended events under the delivery's own dedupe key, the engine now writes
-- the same facts into the metadata of the event the command's idempotency record names first
-- (`metadata.delivery`: delivery id, disposition, dedupe key, SHA-256 of the raw body; the command is the
-- event's `correlation_id`). That event is in the chain like any other, so a forged row still needs a
-- forged log entry; and one event carries one delivery (the row's key is its delivery id). Every other row
-- (a duplicate, a delivery that ran no command, one whose command was refused or appended nothing) keeps its
-- `DeliveryRecorded`, and rows written before this migration keep theirs.
--
-- Same signature: the commit-time trigger `ledger.outcome_is_logged` and `verify` (its own copy of the rule,
-- `ledger_store::postgres::read`) accept the third case.
create or replace function ledger.inbox_is_logged(p_ledger text, p_delivery uuid, p_disposition text,
                                                  p_dedupe_key text, p_command uuid, p_raw_body bytea)
returns boolean
language sql stable as $$
    select (p_disposition = 'duplicate' and p_command is not null
            and exists (select 1 from ledger.idempotency i
                         where i.ledger_id = p_ledger
                           and i.idempotency_key = p_dedupe_key
                           and i.outcome->>'command_id' = p_command::text))
        or (p_command is not null
            and exists (select 1 from ledger.idempotency i
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
                                              = encode(sha256(p_raw_body), 'hex'))))
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
