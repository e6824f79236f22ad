-- Tenancy in row-level security, exact ACLs after a rebuild, and the read-only reporting role.
--
-- 1. The ledger of a reader is the JWT's `app_metadata.ledger`. The setting `escrow.ledger` is no longer
--    read (any session, a JWT-reached one included, could set it) and there is no fallback for a JWT
--    with an application role: an admin, accountant or provider token without the claim sees no row. A
--    plain party's token (no application role) without the claim sees its own rows only while the
--    database holds a single ledger (`escrow.sole_ledger()`): there is then no other tenant to confuse
--    it with; from a second ledger on, it sees nothing. Only `escrow_reader`'s policies use
--    `current_ledger()`; the projector and the auditor see every row through their own policies, and
--    neither can be reached from a JWT (never grant them to `authenticated` or `anon`).
-- 2. A rebuilt shadow table gets exactly the live table's ACL: whatever it received at creation (default
--    privileges such as Supabase's `grant all on tables to authenticated`) is revoked from every grantee
--    first, in `make_shadow` and again in `swap_shadow`.
-- 3. `escrow_auditor`: what `verify` and the reports run as. SELECT on the log and on every read table,
--    a policy that shows it every row of every ledger; no write, no DDL, not BYPASSRLS, owns nothing.

-- The only ledger of the database, or null when there are none or several. Security definer: readers
-- have no access to schema ledger; this reveals one name, and only when there is nothing to hide it from.
create function escrow.sole_ledger() returns text
language sql stable security definer
set search_path = pg_catalog
as $$
    select min(ledger_id) from ledger.ledgers having count(*) = 1
$$;
revoke all on function escrow.sole_ledger() from public;
grant execute on function escrow.sole_ledger() to escrow_reader;

create or replace function escrow.current_ledger() returns text
language sql stable
set search_path = pg_catalog
as $$
    select coalesce(
        nullif(escrow.claims() -> 'app_metadata' ->> 'ledger', ''),
        case when escrow.app_role() is null and escrow.uid() is not null then escrow.sole_ledger() end)
$$;

-- Revokes every privilege any role other than the owner holds on a relation (PUBLIC included).
create function escrow.revoke_all_grants(p_relation regclass) returns void
language plpgsql
set search_path = pg_catalog
as $$
declare
    r record;
begin
    execute format('revoke all on %s from public cascade', p_relation);
    for r in select distinct ro.rolname
               from pg_class c
               cross join lateral aclexplode(c.relacl) a
               join pg_roles ro on ro.oid = a.grantee
              where c.oid = p_relation and a.grantee <> c.relowner loop
        execute format('revoke all on %s from %I cascade', p_relation, r.rolname);
    end loop;
end
$$;

create or replace function escrow.make_shadow(p_table text) returns void
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
    perform escrow.revoke_all_grants(format('escrow.%I', v_shadow)::regclass);
end
$$;

create or replace function escrow.swap_shadow(p_table text) returns void
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
    -- Grants: exactly the live table's ACL (every grantee's privileges revoked first).
    perform escrow.revoke_all_grants(v_shadow);
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

revoke all on function escrow.make_shadow(text), escrow.swap_shadow(text),
    escrow.revoke_all_grants(regclass) from public;

-- The reporting role (cluster-wide, created race-safely like the others).
do $$
begin
    create role escrow_auditor nologin;
exception
    when duplicate_object or unique_violation then null;
end
$$;

grant usage on schema ledger, escrow to escrow_auditor;
grant select on all tables in schema ledger to escrow_auditor;
grant select on all tables in schema escrow to escrow_auditor;
-- Tables the log gains later (created by the migrating role) are readable by the auditor too.
alter default privileges in schema ledger grant select on tables to escrow_auditor;

do $$
declare
    t text;
begin
    for t in select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'escrow' and c.relkind = 'r' loop
        execute format('create policy auditor_select on escrow.%I for select to escrow_auditor using (true)', t);
    end loop;
end
$$;

-- A migrating role without superuser rights runs the commands too: it needs membership to reduce its
-- sessions to the run-time roles (SET ROLE). A superuser needs none.
do $$
begin
    if not (select rolsuper from pg_roles where rolname = current_user) then
        execute format('grant escrow_writer, escrow_auditor, escrow_projector to %I', current_user);
    end if;
exception
    when unique_violation or duplicate_object then null;
end
$$;

-- Supabase: a project created before this migration ran may have granted escrow_reader to
-- `authenticated` already; nothing else is ever granted to the JWT-reached roles.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        grant escrow_reader to authenticated;
    end if;
exception
    when unique_violation then null;
end
$$;
