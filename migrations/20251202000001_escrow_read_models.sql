-- Read models of escrow-ledger (written only by ledger-projections), their roles and row-level security.
--
-- Schema `escrow` (not `public`: Supabase projects already have `public.projects` and friends). Every
-- table leads its keys with `ledger_id`. Each table belongs to one named projection, whose checkpoint
-- (`escrow.projection_checkpoints`) is written in the same transaction as its rows.
--
-- Roles (cluster-wide, created race-safely because parallel test databases migrate at the same moment):
--   escrow_projector  the only role with write rights on read tables (the projection runner takes it
--                     with SET LOCAL ROLE); a policy lets it see and write every row.
--   escrow_reader     what end users' connections use (granted to Supabase's `authenticated` when that
--                     role exists): SELECT only, under forced RLS.
-- Neither is superuser, owner or BYPASSRLS.
--
-- Identity, the Supabase way (see escrow.claims()): the caller is `request.jwt.claims ->> 'sub'`;
-- application roles come from `app_metadata.role` (admin and accountant see everything, provider sees
-- open service requests); the ledger is `app_metadata.ledger`, else the setting `escrow.ledger`, else
-- 'default'. The top-level `role` claim is ignored (Supabase's API layer uses it to pick the Postgres
-- role, users can mint tokens with arbitrary top-level claims in some setups). No claims, no rows.

create schema if not exists escrow;

do $$
begin
    create role escrow_projector nologin;
exception
    when duplicate_object or unique_violation then null;
end
$$;

do $$
begin
    create role escrow_reader nologin;
exception
    when duplicate_object or unique_violation then null;
end
$$;

-- Identity helpers. Plain SQL, security invoker, stable: evaluated once per statement when wrapped
-- in a scalar subquery in the policies.
create function escrow.claims() returns jsonb
language sql stable
set search_path = pg_catalog
as $$
    select case
        when coalesce(current_setting('request.jwt.claims', true), '') = '' then null
        when left(ltrim(current_setting('request.jwt.claims', true)), 1) <> '{' then null
        else current_setting('request.jwt.claims', true)::jsonb
    end
$$;

create function escrow.uid() returns uuid
language sql stable
set search_path = pg_catalog
as $$
    select case
        when escrow.claims() ->> 'sub' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        then (escrow.claims() ->> 'sub')::uuid
    end
$$;

-- The application role from app_metadata only (never the top-level `role` claim).
create function escrow.app_role() returns text
language sql stable
set search_path = pg_catalog
as $$
    select escrow.claims() -> 'app_metadata' ->> 'role'
$$;

create function escrow.is_staff() returns boolean
language sql stable
set search_path = pg_catalog
as $$
    select coalesce(escrow.app_role() in ('admin', 'accountant'), false)
$$;

create function escrow.current_ledger() returns text
language sql stable
set search_path = pg_catalog
as $$
    select coalesce(
        escrow.claims() -> 'app_metadata' ->> 'ledger',
        nullif(current_setting('escrow.ledger', true), ''),
        'default')
$$;

create table escrow.projection_checkpoints (
    ledger_id      text        not null,
    projection     text        not null,
    position       bigint      not null check (position >= 0),
    events_applied bigint      not null default 0,
    updated_at     timestamptz not null default now(),
    constraint projection_checkpoints_pkey primary key (ledger_id, projection)
);

create table escrow.service_requests (
    ledger_id         text        not null,
    request_id        uuid        not null,
    client_id         uuid        not null,
    title             text        not null,
    currency          text        not null,
    status            text        not null,
    expires_at        timestamptz,
    accepted_quote_id uuid,
    created_at        timestamptz not null,
    updated_at        timestamptz not null,
    position          bigint      not null,
    constraint service_requests_pkey primary key (ledger_id, request_id)
);
create index service_requests_client_idx on escrow.service_requests (ledger_id, client_id);
create index service_requests_status_idx on escrow.service_requests (ledger_id, status, created_at);

create table escrow.quotes (
    ledger_id   text        not null,
    quote_id    uuid        not null,
    request_id  uuid        not null,
    provider_id uuid        not null,
    client_id   uuid        not null,
    amount      numeric     not null,
    currency    text        not null,
    status      text        not null,
    valid_until timestamptz,
    created_at  timestamptz not null,
    updated_at  timestamptz not null,
    position    bigint      not null,
    constraint quotes_pkey primary key (ledger_id, quote_id)
);
create index quotes_request_idx on escrow.quotes (ledger_id, request_id);
create index quotes_provider_idx on escrow.quotes (ledger_id, provider_id, status);
create index quotes_client_idx on escrow.quotes (ledger_id, client_id, status);

create table escrow.bookings (
    ledger_id    text        not null,
    booking_id   uuid        not null,
    project_id   uuid        not null,
    quote_id     uuid        not null,
    client_id    uuid        not null,
    provider_id  uuid        not null,
    status       text        not null,
    delivered_at timestamptz,
    created_at   timestamptz not null,
    updated_at   timestamptz not null,
    position     bigint      not null,
    constraint bookings_pkey primary key (ledger_id, booking_id)
);
create index bookings_client_idx on escrow.bookings (ledger_id, client_id, status);
create index bookings_provider_idx on escrow.bookings (ledger_id, provider_id, status);
create index bookings_status_idx on escrow.bookings (ledger_id, status);

create table escrow.projects (
    ledger_id       text        not null,
    project_id      uuid        not null,
    creator_id      uuid        not null,
    buyer_id        uuid        not null,
    seller_id       uuid        not null,
    booking_id      uuid,
    currency        text        not null,
    status          text        not null,
    milestone_count int         not null,
    total_amount    numeric     not null,
    funded          numeric     not null,
    released        numeric     not null,
    refunded        numeric     not null,
    held            numeric     not null,
    commission_rate numeric     not null,
    buyer_fee_rate  numeric     not null,
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    position        bigint      not null,
    constraint projects_pkey primary key (ledger_id, project_id)
);
create index projects_buyer_idx on escrow.projects (ledger_id, buyer_id, status);
create index projects_seller_idx on escrow.projects (ledger_id, seller_id, status);
create index projects_creator_idx on escrow.projects (ledger_id, creator_id);
create index projects_status_idx on escrow.projects (ledger_id, status, updated_at);

create table escrow.milestones (
    ledger_id    text        not null,
    project_id   uuid        not null,
    milestone    int         not null,
    creator_id   uuid        not null,
    buyer_id     uuid        not null,
    seller_id    uuid        not null,
    currency     text        not null,
    amount       numeric     not null,
    buyer_fee    numeric     not null,
    status       text        not null,
    funded       numeric     not null,
    released     numeric     not null,
    refunded     numeric     not null,
    charged_back numeric     not null,
    held         numeric     not null,
    submitted_at timestamptz,
    updated_at   timestamptz not null,
    position     bigint      not null,
    constraint milestones_pkey primary key (ledger_id, project_id, milestone)
);
create index milestones_buyer_idx on escrow.milestones (ledger_id, buyer_id, status);
create index milestones_seller_idx on escrow.milestones (ledger_id, seller_id, status);
create index milestones_status_idx on escrow.milestones (ledger_id, status, updated_at);

-- Each money movement: deposit / withdrawal / refund (card) follow their payment's status; escrow_hold,
-- escrow_release, refund (escrow), fee and commission are completed when they happen.
create table escrow.transactions (
    ledger_id      text        not null,
    transaction_id uuid        not null,
    type           text        not null check (type in ('deposit', 'escrow_hold', 'escrow_release',
                                   'refund', 'fee', 'commission', 'withdrawal')),
    status         text        not null check (status in ('pending', 'processing', 'completed',
                                   'failed', 'cancelled', 'reversed')),
    user_id        uuid,
    project_id     uuid,
    milestone      int,
    creator_id     uuid,
    buyer_id       uuid,
    seller_id      uuid,
    amount         numeric     not null,
    fee            numeric     not null,
    currency       text        not null,
    gateway        text,
    source_id      uuid        not null,
    created_at     timestamptz not null,
    updated_at     timestamptz not null,
    position       bigint      not null,
    constraint transactions_pkey primary key (ledger_id, transaction_id)
);
create index transactions_user_idx on escrow.transactions (ledger_id, user_id, created_at);
create index transactions_project_idx on escrow.transactions (ledger_id, project_id, milestone);
create index transactions_buyer_idx on escrow.transactions (ledger_id, buyer_id);
create index transactions_seller_idx on escrow.transactions (ledger_id, seller_id);
create index transactions_status_idx on escrow.transactions (ledger_id, status, type, created_at);

create table escrow.disputes (
    ledger_id        text        not null,
    dispute_id       uuid        not null,
    project_id       uuid        not null,
    milestone        int         not null,
    opened_by        uuid        not null,
    counterparty     uuid        not null,
    creator_id       uuid,
    buyer_id         uuid,
    seller_id        uuid,
    status           text        not null,
    currency         text        not null,
    held             numeric     not null,
    proposed_release numeric     not null,
    released         numeric,
    refunded         numeric,
    reason           text        not null,
    respond_by       timestamptz,
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    position         bigint      not null,
    constraint disputes_pkey primary key (ledger_id, dispute_id)
);
create index disputes_project_idx on escrow.disputes (ledger_id, project_id, milestone);
create index disputes_opened_by_idx on escrow.disputes (ledger_id, opened_by);
create index disputes_counterparty_idx on escrow.disputes (ledger_id, counterparty);
create index disputes_status_idx on escrow.disputes (ledger_id, status);

create table escrow.accounts (
    ledger_id      text        not null,
    account        text        not null,
    kind           text        not null,
    normal_side    text        not null,
    constrained    boolean     not null,
    owner_id       uuid,
    first_position bigint      not null,
    opened_at      timestamptz not null,
    constraint accounts_pkey primary key (ledger_id, account)
);
create index accounts_owner_idx on escrow.accounts (ledger_id, owner_id);

create table escrow.journal_entries (
    ledger_id    text        not null,
    entry_id     uuid        not null,
    event_id     uuid        not null,
    position     bigint      not null,
    stream_id    text        not null,
    event_type   text        not null,
    currency     text        not null,
    total        numeric     not null,
    effective_at timestamptz not null,
    recorded_at  timestamptz not null,
    constraint journal_entries_pkey primary key (ledger_id, entry_id)
);
create index journal_entries_position_idx on escrow.journal_entries (ledger_id, position);
create index journal_entries_effective_idx on escrow.journal_entries (ledger_id, effective_at);

create table escrow.postings (
    ledger_id    text        not null,
    entry_id     uuid        not null,
    posting_no   int         not null,
    account      text        not null,
    owner_id     uuid,
    currency     text        not null,
    side         text        not null check (side in ('debit', 'credit')),
    amount       numeric     not null check (amount > 0),
    position     bigint      not null,
    effective_at timestamptz not null,
    constraint postings_pkey primary key (ledger_id, entry_id, posting_no)
);
create index postings_account_idx on escrow.postings (ledger_id, account, effective_at);
create index postings_owner_idx on escrow.postings (ledger_id, owner_id, position);
create index postings_position_idx on escrow.postings (ledger_id, position);

-- balance is on the account's normal side; pending is the part not yet spendable (a user's Pending
-- bucket, payouts and refunds in transit), available = balance - pending. as_of_position is the log
-- position of the last posting included.
create table escrow.account_balances (
    ledger_id      text        not null,
    account        text        not null,
    currency       text        not null,
    owner_id       uuid,
    debits         numeric     not null,
    credits        numeric     not null,
    balance        numeric     not null,
    pending        numeric     not null,
    available      numeric     not null,
    postings       bigint      not null,
    as_of_position bigint      not null,
    constraint account_balances_pkey primary key (ledger_id, account, currency)
);
create index account_balances_owner_idx on escrow.account_balances (ledger_id, owner_id);

create table escrow.audit_log (
    ledger_id       text        not null,
    position        bigint      not null,
    event_id        uuid        not null,
    stream_id       text        not null,
    stream_version  bigint      not null,
    event_type      text        not null,
    actor           text,
    correlation_id  uuid,
    causation_id    uuid,
    idempotency_key text,
    recorded_at     timestamptz not null,
    sequenced_at    timestamptz not null,
    constraint audit_log_pkey primary key (ledger_id, position)
);
create index audit_log_stream_idx on escrow.audit_log (ledger_id, stream_id);
create index audit_log_correlation_idx on escrow.audit_log (ledger_id, correlation_id);
create index audit_log_recorded_idx on escrow.audit_log (ledger_id, recorded_at);

-- Privileges: nothing by default (a Supabase-like setup's default grants are revoked below), then
-- exactly what each role needs.
revoke all on all tables in schema escrow from public;
do $$
declare
    r text;
begin
    foreach r in array array['anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on all tables in schema escrow from %I', r);
        end if;
    end loop;
end
$$;

grant usage on schema escrow to escrow_projector, escrow_reader;
grant usage on schema ledger to escrow_projector;
grant select on ledger.events, ledger.sequence, ledger.ledgers to escrow_projector;
grant select, insert, update, delete on all tables in schema escrow to escrow_projector;
grant select on escrow.service_requests, escrow.quotes, escrow.bookings, escrow.projects,
    escrow.milestones, escrow.transactions, escrow.disputes, escrow.accounts, escrow.journal_entries,
    escrow.postings, escrow.account_balances, escrow.audit_log to escrow_reader;

-- Row-level security: enabled and forced on every table of the schema (the owner is subject too).
do $$
declare
    t text;
begin
    for t in select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'escrow' and c.relkind = 'r' loop
        execute format('alter table escrow.%I enable row level security', t);
        execute format('alter table escrow.%I force row level security', t);
        execute format('create policy projector_all on escrow.%I for all to escrow_projector using (true) with check (true)', t);
    end loop;
end
$$;

create policy reader_select on escrow.service_requests for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or client_id = (select escrow.uid())
         or ((select escrow.app_role()) = 'provider' and (select escrow.uid()) is not null
             and status = 'open')));

create policy reader_select on escrow.quotes for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or provider_id = (select escrow.uid())
         or client_id = (select escrow.uid())));

create policy reader_select on escrow.bookings for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or client_id = (select escrow.uid())
         or provider_id = (select escrow.uid())));

create policy reader_select on escrow.projects for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or creator_id = (select escrow.uid())
         or buyer_id = (select escrow.uid())
         or seller_id = (select escrow.uid())));

create policy reader_select on escrow.milestones for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or creator_id = (select escrow.uid())
         or buyer_id = (select escrow.uid())
         or seller_id = (select escrow.uid())));

create policy reader_select on escrow.transactions for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or user_id = (select escrow.uid())
         or creator_id = (select escrow.uid())
         or buyer_id = (select escrow.uid())
         or seller_id = (select escrow.uid())));

create policy reader_select on escrow.disputes for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff())
         or opened_by = (select escrow.uid())
         or counterparty = (select escrow.uid())
         or creator_id = (select escrow.uid())
         or buyer_id = (select escrow.uid())
         or seller_id = (select escrow.uid())));

create policy reader_select on escrow.accounts for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff()) or owner_id = (select escrow.uid())));

create policy reader_select on escrow.postings for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff()) or owner_id = (select escrow.uid())));

create policy reader_select on escrow.account_balances for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger())
    and ((select escrow.is_staff()) or owner_id = (select escrow.uid())));

-- Journal entries and the audit log are for admins and accountants (users see their own postings).
create policy reader_select on escrow.journal_entries for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger()) and (select escrow.is_staff()));

create policy reader_select on escrow.audit_log for select to escrow_reader using (
    ledger_id = (select escrow.current_ledger()) and (select escrow.is_staff()));

-- Views for end users: security_invoker, so the policies above apply to the caller.
create view escrow.my_balances with (security_invoker = true) as
select b.ledger_id, b.currency,
       sum(b.balance) filter (where b.account like 'Liabilities:Users:%:Available') as available,
       sum(b.balance) filter (where b.account like 'Liabilities:Users:%:Pending') as pending,
       max(b.as_of_position) as as_of_position
  from escrow.account_balances b
 where b.owner_id = (select escrow.uid())
 group by b.ledger_id, b.currency;

create view escrow.my_projects with (security_invoker = true) as
select p.*,
       case when p.buyer_id = (select escrow.uid()) then 'buyer'
            when p.seller_id = (select escrow.uid()) then 'seller'
            else 'creator' end as my_role
  from escrow.projects p
 where (select escrow.uid()) in (p.creator_id, p.buyer_id, p.seller_id);

create view escrow.my_milestones with (security_invoker = true) as
select m.*
  from escrow.milestones m
 where (select escrow.uid()) in (m.creator_id, m.buyer_id, m.seller_id);

create view escrow.my_transactions with (security_invoker = true) as
select t.*
  from escrow.transactions t
 where (select escrow.uid()) in (t.user_id, t.creator_id, t.buyer_id, t.seller_id);

create view escrow.my_bookings with (security_invoker = true) as
select b.*,
       case when b.client_id = (select escrow.uid()) then 'client' else 'provider' end as my_role
  from escrow.bookings b
 where (select escrow.uid()) in (b.client_id, b.provider_id);

revoke all on escrow.my_balances, escrow.my_projects, escrow.my_milestones, escrow.my_transactions,
    escrow.my_bookings from public;
grant select on escrow.my_balances, escrow.my_projects, escrow.my_milestones, escrow.my_transactions,
    escrow.my_bookings to escrow_reader;

-- The migrating role runs the projections: without superuser rights it needs membership to take the
-- projector role (SET LOCAL ROLE).
do $$
begin
    if not (select rolsuper from pg_roles where rolname = current_user) then
        execute format('grant escrow_projector to %I', current_user);
    end if;
exception
    when unique_violation or duplicate_object then null;
end
$$;

-- Supabase: end users connect as `authenticated`; they read through escrow_reader's rights.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        grant escrow_reader to authenticated;
    end if;
exception
    when unique_violation then null;
end
$$;

-- Rebuild support: a shadow copy of a read table is built unindexed (`escrow.make_shadow`), filled with
-- COPY, indexed like the live table (`escrow.index_shadow`), then swapped in (`escrow.swap_shadow`) in one
-- short transaction that carries over grants, RLS flags, policies and dependent views. Nothing is dropped
-- with CASCADE: a dependency the swap does not know about makes it fail and roll back.
create function escrow.make_shadow(p_table text) returns void
language plpgsql
set search_path = pg_catalog
as $$
declare
    v_shadow text := p_table || '__rb';
begin
    execute format('drop table if exists escrow.%I', v_shadow);
    execute format('create table escrow.%I (like escrow.%I including defaults including constraints)',
                   v_shadow, p_table);
    -- Whatever default privileges granted at creation is revoked; the swap copies the live ACL.
    execute format('revoke all on escrow.%I from public', v_shadow);
end
$$;

create function escrow.index_shadow(p_table text) returns void
language plpgsql
set search_path = pg_catalog
as $$
declare
    v_shadow text := p_table || '__rb';
    r record;
begin
    for r in select i.indexrelid, ic.relname as index_name, con.conname, con.contype
               from pg_index i
               join pg_class ic on ic.oid = i.indexrelid
               left join pg_constraint con on con.conindid = i.indexrelid
                    and con.conrelid = i.indrelid
              where i.indrelid = format('escrow.%I', p_table)::regclass loop
        execute regexp_replace(pg_get_indexdef(r.indexrelid),
                               '^(CREATE (UNIQUE )?INDEX )(\S+)( ON )(\S+)',
                               '\1' || quote_ident(r.index_name || '__rb') || '\4'
                                   || 'escrow.' || quote_ident(v_shadow));
        if r.contype = 'p' then
            execute format('alter table escrow.%I add constraint %I primary key using index %I',
                           v_shadow, r.conname || '__rb', r.index_name || '__rb');
        elsif r.contype = 'u' then
            execute format('alter table escrow.%I add constraint %I unique using index %I',
                           v_shadow, r.conname || '__rb', r.index_name || '__rb');
        end if;
    end loop;
    execute format('analyze escrow.%I', v_shadow);
end
$$;

create function escrow.swap_shadow(p_table text) returns void
language plpgsql
set search_path = pg_catalog
as $$
declare
    v_live   regclass := format('escrow.%I', p_table)::regclass;
    v_shadow regclass := format('escrow.%I', p_table || '__rb')::regclass;
    v_views  text[];
    r        record;
    v_roles  text;
begin
    -- Grants: exactly the live table's ACL.
    execute format('revoke all on %s from public', v_shadow);
    for r in select a.privilege_type, a.grantee, a.is_grantable
               from pg_class c, aclexplode(c.relacl) a
              where c.oid = v_live loop
        execute format('grant %s on %s to %s%s', r.privilege_type, v_shadow,
                       case when r.grantee = 0 then 'public' else quote_ident(r.grantee::regrole::text) end,
                       case when r.is_grantable then ' with grant option' else '' end);
    end loop;
    -- RLS flags and policies.
    if (select relrowsecurity from pg_class where oid = v_live) then
        execute format('alter table %s enable row level security', v_shadow);
    end if;
    if (select relforcerowsecurity from pg_class where oid = v_live) then
        execute format('alter table %s force row level security', v_shadow);
    end if;
    for r in select p.polname, p.polcmd, p.polpermissive, p.polroles,
                    pg_get_expr(p.polqual, p.polrelid) as qual,
                    pg_get_expr(p.polwithcheck, p.polrelid) as with_check
               from pg_policy p where p.polrelid = v_live loop
        select string_agg(case when role_oid = 0 then 'public' else quote_ident(role_oid::regrole::text) end, ', ')
          into v_roles from unnest(r.polroles) as role_oid;
        execute format('create policy %I on %s as %s for %s to %s%s%s', r.polname, v_shadow,
                       case when r.polpermissive then 'permissive' else 'restrictive' end,
                       case r.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                                     when 'd' then 'delete' else 'all' end,
                       v_roles,
                       case when r.qual is null then '' else ' using (' || r.qual || ')' end,
                       case when r.with_check is null then '' else ' with check (' || r.with_check || ')' end);
    end loop;
    -- Views on the live table: their definitions are captured now (they name escrow.<table>) and
    -- re-created after the rename, which points them at the new table.
    select array_agg(format('create or replace view %s%s as %s', v.oid::regclass,
                            case when v.reloptions is null then ''
                                 else ' with (' || array_to_string(v.reloptions, ', ') || ')' end,
                            pg_get_viewdef(v.oid)))
      into v_views
      from (select distinct v.oid, v.reloptions
              from pg_depend d
              join pg_rewrite rw on rw.oid = d.objid
              join pg_class v on v.oid = rw.ev_class
             where d.refobjid = v_live and d.classid = 'pg_rewrite'::regclass and v.oid <> v_live) v;
    execute format('alter table %s rename to %I', v_live, p_table || '__old');
    execute format('alter table %s rename to %I', v_shadow, p_table);
    if v_views is not null then
        for i in 1 .. array_length(v_views, 1) loop
            execute v_views[i];
        end loop;
    end if;
    execute format('drop table escrow.%I', p_table || '__old');
    -- Give the constraints and indexes their usual names back.
    for r in select con.conname from pg_constraint con
              where con.conrelid = format('escrow.%I', p_table)::regclass and con.conname like '%\_\_rb' loop
        execute format('alter table escrow.%I rename constraint %I to %I', p_table, r.conname,
                       left(r.conname, length(r.conname) - 4));
    end loop;
    for r in select ic.relname from pg_index i join pg_class ic on ic.oid = i.indexrelid
              where i.indrelid = format('escrow.%I', p_table)::regclass and ic.relname like '%\_\_rb' loop
        execute format('alter index escrow.%I rename to %I', r.relname, left(r.relname, length(r.relname) - 4));
    end loop;
end
$$;

revoke all on function escrow.make_shadow(text), escrow.index_shadow(text), escrow.swap_shadow(text)
    from public;
