-- Deadlines the engine keeps (issue 11): the `deadlines` projection's read table, so an app can show a
-- countdown ("auto-approves on ..."), and the timer worker (`escrow-ledger timers run`) finds what is due.
--
-- One row per clock ever started: which command it fires (`kind`), on which stream and aggregate
-- (`target_id`, `milestone` for a project's milestone), when (`due_at`), from which stream version, and its
-- status: `pending` until an event stops the clock; `fired` when the stopping event came from the timer's
-- own command (its idempotency key is `deadline:<deadline_id>`); `cancelled` otherwise (the buyer approved,
-- the dispute got an answer). A deadline the timer found refused for good (the world moved on without an
-- event that stops the clock) stays `pending` here; the timer skips it by its recorded key.
-- The parties who see a row are `party_a` and `party_b` (buyer and seller, client and provider, the
-- dispute's two sides, the depositor).

create table escrow.deadlines (
    ledger_id             text        not null,
    deadline_id           uuid        not null,
    kind                  text        not null check (kind in ('auto_approve_milestone',
                              'auto_accept_booking', 'expire_quote', 'expire_service_request',
                              'mature_release', 'time_out_dispute', 'expire_deposit')),
    stream_id             text        not null,
    target_id             uuid        not null,
    milestone             int,
    due_at                timestamptz not null,
    computed_from_version bigint      not null,
    status                text        not null check (status in ('pending', 'fired', 'cancelled')),
    party_a               uuid,
    party_b               uuid,
    created_at            timestamptz not null,
    updated_at            timestamptz not null,
    position              bigint      not null,
    constraint deadlines_pkey primary key (ledger_id, deadline_id)
);
create index deadlines_due_idx on escrow.deadlines (ledger_id, status, due_at);
create index deadlines_party_a_idx on escrow.deadlines (ledger_id, party_a, status);
create index deadlines_party_b_idx on escrow.deadlines (ledger_id, party_b, status);

revoke all on escrow.deadlines from public;
grant select, insert, update, delete on escrow.deadlines to escrow_projector;
grant select on escrow.deadlines to escrow_reader, escrow_auditor;

alter table escrow.deadlines enable row level security;
alter table escrow.deadlines force row level security;
create policy projector_all on escrow.deadlines for all to escrow_projector using (true) with check (true);
create policy auditor_select on escrow.deadlines for select to escrow_auditor using (true);
create policy reader_select on escrow.deadlines for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or party_a = (select escrow.uid())
         or party_b = (select escrow.uid())));

-- The caller's pending deadlines, with a sentence an app can show as is.
create view escrow.my_deadlines with (security_invoker = true) as
select d.deadline_id, d.kind, d.target_id, d.milestone, d.due_at,
       case d.kind
           when 'auto_approve_milestone' then 'auto-approves on '
           when 'auto_accept_booking' then 'auto-accepts on '
           when 'expire_quote' then 'quote expires on '
           when 'expire_service_request' then 'request expires on '
           when 'mature_release' then 'becomes available on '
           when 'time_out_dispute' then 'dispute times out on '
           when 'expire_deposit' then 'deposit expires on '
       end || to_char(d.due_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"') as label
  from escrow.deadlines d
 where d.status = 'pending'
   and (select escrow.uid()) in (d.party_a, d.party_b);

revoke all on escrow.my_deadlines from public;
grant select on escrow.my_deadlines to escrow_reader;
