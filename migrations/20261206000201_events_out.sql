-- Events out (ledger-events): each sink's durable cursor in the log, and the signed webhooks' endpoints and
-- deliveries. Not ledger history: cursors advance, leases are taken again, deliveries are retried, so rows
-- are updated (never the log itself). Every table is keyed by ledger first (distributed by it on Citus).

-- One row per (ledger, sink): the last position delivered to that sink, and which relay holds it now. Two
-- relays for one sink take turns: the lease is taken where it is free or expired, and every advance checks
-- that the advancing relay still holds it.
create table ledger.event_cursors (
    ledger_id   text        not null references ledger.ledgers (ledger_id),
    sink        text        not null check (length(sink) between 1 and 200),
    position    bigint      not null default 0 check (position >= 0),
    delivered   bigint      not null default 0 check (delivered >= 0),
    leased_by   text        check (length(leased_by) between 1 and 200),
    lease_until timestamptz,
    updated_at  timestamptz not null default now(),
    constraint event_cursors_pkey primary key (ledger_id, sink)
);

-- Signed HTTP webhooks (Standard Webhooks). Two secrets during a rotation: both signatures are sent.
create table ledger.webhook_endpoints (
    ledger_id   text        not null references ledger.ledgers (ledger_id),
    endpoint_id uuid        not null,
    url         text        not null check (length(url) between 8 and 2048),
    secrets     text[]      not null check (cardinality(secrets) between 1 and 2),
    types       text[]      not null default '{}',
    created_at  timestamptz not null default now(),
    disabled_at timestamptz,
    constraint webhook_endpoints_pkey primary key (ledger_id, endpoint_id)
);

-- One delivery per (endpoint, event), enqueued with the cursor's advance in one transaction: its id is the
-- `webhook-id` header (stable across retries). Retried on its own schedule until delivered or dead, so a
-- slow or dead endpoint holds up neither the others nor the ledger.
create table ledger.webhook_deliveries (
    ledger_id       text        not null,
    delivery_id     uuid        not null,
    endpoint_id     uuid        not null,
    event_id        uuid        not null,
    position        bigint      not null,
    event_type      text        not null,
    body            text        not null,
    attempts        int         not null default 0 check (attempts >= 0),
    next_attempt_at timestamptz not null default now(),
    status          text        not null default 'pending'
                                check (status in ('pending', 'delivered', 'dead')),
    last_status     int,
    last_error      text        check (length(last_error) <= 1000),
    delivered_at    timestamptz,
    created_at      timestamptz not null default now(),
    constraint webhook_deliveries_pkey primary key (ledger_id, delivery_id)
);
create index webhook_deliveries_due_idx on ledger.webhook_deliveries (ledger_id, next_attempt_at)
    where status = 'pending';
create index webhook_deliveries_endpoint_idx on ledger.webhook_deliveries (ledger_id, endpoint_id, position);

grant select, insert, update on ledger.event_cursors, ledger.webhook_endpoints, ledger.webhook_deliveries
    to escrow_writer;
-- The auditor sees how far each sink is (`db status`), never an endpoint's secrets.
grant select on ledger.event_cursors to escrow_auditor;

-- Balance monitors: a condition on one account's balance (normal side) in one currency. The relay emits
-- `monitor.triggered` when it becomes true and `monitor.cleared` when it stops being true, for positions
-- after `since_position` (the head when the monitor was added: its state there is where edges start).
create table ledger.event_monitors (
    ledger_id      text        not null references ledger.ledgers (ledger_id),
    monitor_id     uuid        not null,
    name           text        not null check (length(name) between 1 and 200),
    account        text        not null check (length(account) between 1 and 300),
    currency       text        not null check (length(currency) = 3),
    op             text        not null check (op in ('<', '<=', '>', '>=', '=', '!=')),
    threshold      numeric     not null,
    since_position bigint      not null check (since_position >= 0),
    created_at     timestamptz not null default now(),
    constraint event_monitors_pkey primary key (ledger_id, monitor_id)
);
grant select, insert on ledger.event_monitors to escrow_writer;
