-- Balance snapshots: the trial balance of a ledger at a position, so that "as of any moment" replays only
-- the tail after the nearest snapshot. A cache, not history: `verify` recomputes every snapshot from the
-- log and reports one that disagrees. Rows may be replaced (not append-only).
create table ledger.balance_snapshots (
    ledger_id  text        not null references ledger.ledgers (ledger_id),
    position   bigint      not null check (position >= 0),
    -- [[account, currency, debits_minor, credits_minor], ...] with amounts as decimal strings
    balances   jsonb       not null,
    taken_at   timestamptz not null default now(),
    constraint balance_snapshots_pkey primary key (ledger_id, position)
);

grant select, insert, update on ledger.balance_snapshots to escrow_writer;
