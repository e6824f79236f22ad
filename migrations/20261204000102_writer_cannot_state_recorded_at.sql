-- Issue 19 (finding 6): the database stamps when an event was recorded, and the transaction that wrote it. The
-- writer role inserts every other column of an event but not `recorded_at` (a value 30 days ahead hid an
-- unsequenced event from `verify`'s staleness finding) nor `tx_id` (which groups a transaction's events for
-- the sequencer): their defaults, `now()` and `pg_current_xact_id()`, always apply.
revoke insert on ledger.events from escrow_writer;
grant insert (ledger_id, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
    on ledger.events to escrow_writer;
