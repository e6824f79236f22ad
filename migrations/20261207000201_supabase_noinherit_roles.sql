-- Supabase's roles are NOINHERIT (`anon`, `authenticated`, `service_role` NOLOGIN NOINHERIT; `authenticator`
-- LOGIN NOINHERIT): PostgREST logs in as `authenticator` and runs each request after `set local role
-- authenticated`. A grant of `escrow_reader` to `authenticated` (what the earlier migrations did) gives it
-- nothing then: every select answered "permission denied". So `authenticated` gets escrow_reader's rights
-- directly: USAGE on the schema, SELECT on what escrow_reader may read, EXECUTE on the functions its policies
-- and views call, and a place in each of escrow_reader's policies (the same row filter: its JWT's `sub` and
-- ledger claim). `anon` and `service_role` get nothing (`service_role` bypasses row-level security: through
-- these tables it would see every ledger's rows).
--
-- A function, because Supabase's roles may be made after the migrations ran: `ledger_store::migrate` (so
-- `escrow-ledger db migrate`) calls it every time, and `projections rebuild` keeps what it granted (a shadow
-- gets the live table's ACL and policies). Idempotent.
create or replace function escrow.adopt_supabase_roles() returns void
language plpgsql as $$
declare
    r record;
    v_roles text;
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    -- Every process that starts (serve replicas, projection workers) migrates: one at a time here, and only
    -- what is missing is granted, since two sessions rewriting the same ACL fail ("tuple concurrently
    -- updated").
    perform pg_advisory_xact_lock(hashtextextended('escrow.adopt_supabase_roles', 0));
    if not has_schema_privilege('authenticated', 'escrow', 'USAGE') then
        grant usage on schema escrow to authenticated;
    end if;
    for r in select c.relname
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'escrow' and c.relkind in ('r', 'v', 'p')
                and c.relname not like '%\_\_rb'
                and has_table_privilege('escrow_reader', c.oid, 'SELECT')
                and not has_table_privilege('authenticated', c.oid, 'SELECT') loop
        execute format('grant select on escrow.%I to authenticated', r.relname);
    end loop;
    for r in select p.oid::regprocedure as f
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'escrow'
                and has_function_privilege('escrow_reader', p.oid, 'EXECUTE')
                and not has_function_privilege('authenticated', p.oid, 'EXECUTE') loop
        execute format('grant execute on function %s to authenticated', r.f);
    end loop;
    for r in select p.polname, c.relname, p.polroles
               from pg_policy p join pg_class c on c.oid = p.polrelid
               join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'escrow'
                and (select oid from pg_roles where rolname = 'escrow_reader') = any (p.polroles)
                and not (select oid from pg_roles where rolname = 'authenticated') = any (p.polroles) loop
        select string_agg(quote_ident(ro.rolname), ', ') into v_roles
          from pg_roles ro
         where ro.oid = any (r.polroles) or ro.rolname = 'authenticated';
        execute format('alter policy %I on escrow.%I to %s', r.polname, r.relname, v_roles);
    end loop;
end;
$$;

select escrow.adopt_supabase_roles();
