-- Payment workers (issue 6): the callback inbox and the payout/refund outbox leases.
--
-- ledger.inbox: one row per AUTHENTIC callback delivery (forged or unparseable ones are never stored), with
-- the request body byte-exact for audit, the gateway's event id, our dedupe key and what became of it
-- (applied, duplicate, suspense, anomaly, ignored, rejected). The dedupe record itself is the executor's
-- idempotency row (ledger.idempotency, unique per ledger and key), written in the same transaction as the
-- events; the inbox row is written after that commit and before the 2xx, so every acknowledged delivery has
-- its raw body here (a crash in between means no 2xx, the gateway retries, and the retry writes the row).
-- Append-only like the log.
create table ledger.inbox (
    ledger_id        text        not null references ledger.ledgers (ledger_id),
    delivery_id      uuid        not null,
    gateway          text        not null,
    gateway_event_id text        not null,
    event_type       text        not null,
    dedupe_key       text        not null,
    payment_reference text,
    disposition      text        not null check (disposition in
                         ('applied', 'duplicate', 'suspense', 'anomaly', 'ignored', 'rejected')),
    detail           text        not null,
    command_id       uuid,
    correlation_id   uuid,
    raw_body         bytea       not null check (octet_length(raw_body) <= 1048576),
    received_at      timestamptz not null,
    recorded_at      timestamptz not null default now(),
    constraint inbox_pkey primary key (ledger_id, delivery_id)
);
create index inbox_dedupe_idx on ledger.inbox (ledger_id, dedupe_key);
create index inbox_disposition_idx on ledger.inbox (ledger_id, disposition, recorded_at)
    where disposition in ('anomaly', 'rejected');

create trigger inbox_no_update before update on ledger.inbox
    for each row execute function ledger.forbid_mutation();
create trigger inbox_no_delete before delete on ledger.inbox
    for each row execute function ledger.forbid_mutation();
create trigger inbox_no_truncate before truncate on ledger.inbox
    for each statement execute function ledger.forbid_mutation();

-- Leases on outbox items (payouts and card refunds the ledger decided and a worker must execute at the
-- gateway). Not ledger history: a lease is claimed, expires, and is claimed again, so rows are updated.
-- An item leaves the outbox when its payment stream has a terminal event (the gateway's callback closed it).
create table ledger.outbox_leases (
    ledger_id   text        not null references ledger.ledgers (ledger_id),
    stream_id   text        not null,
    worker      text        not null check (length(worker) between 1 and 128),
    lease_until timestamptz not null,
    claims      int         not null check (claims >= 1),
    constraint outbox_leases_pkey primary key (ledger_id, stream_id)
);

-- The outbox and the anomaly/suspense listings read a handful of event types.
create index events_payment_workers_idx on ledger.events (ledger_id, event_type, recorded_at)
    where event_type in ('PayoutRequested', 'CardRefundRequested', 'SuspenseRecorded',
                         'LateFailureIgnored', 'SuccessAfterFailure');

grant select, insert on ledger.inbox to escrow_writer;
grant select, insert, update on ledger.outbox_leases to escrow_writer;
