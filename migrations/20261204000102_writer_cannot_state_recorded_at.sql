-- Issue 19 (finding 6): the database stamps when an event was recorded. A writer's INSERT could state
-- `recorded_at` (a value 30 days ahead hid an unsequenced event from `verify`'s staleness finding); the row
-- trigger `events_recorded_now` overwrites it with the inserting transaction's `now()`, whatever the
-- INSERT said. (A column-level INSERT privilege would say it more directly, but Citus does not carry
-- column privileges to the shards; this trigger is copied to every shard like the append-only ones.)
create function ledger.stamp_recorded_at() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    new.recorded_at := now();
    return new;
end
$$;

create trigger events_recorded_now
    before insert on ledger.events
    for each row execute function ledger.stamp_recorded_at();
