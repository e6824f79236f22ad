//! Running on Citus (distributed PostgreSQL): the schema distributed by ledger.
//!
//! [`crate::migrate`] calls [`distribute`] after the migrations. On a database without the `citus`
//! extension it does nothing. With it (run on the coordinator, as the owner or a superuser), every table of
//! the `ledger` and `escrow` schemas that is still local becomes a distributed table by `ledger_id`, all in
//! the colocation group of `ledger.events` (one ledger's rows of every table on one worker), except
//! `ledger.ledgers`, a small global table, which becomes a reference table (a copy on every node, so the
//! foreign keys and `escrow.sole_ledger()` stay local to the worker). Idempotent: a second run finds nothing
//! left to distribute and only re-asserts the worker logins and the distributed functions.
//!
//! What the step changes, and why (ARCHITECTURE.md "On Citus" says the same for readers):
//! - Foreign keys are dropped and added again around the distribution: Citus turns a local table that
//!   references a reference table into a "Citus local table", which can no longer be distributed because
//!   `ledger.events` has an identity column.
//! - Row-level security policies are written again without sub-queries (`(select escrow.uid())` becomes
//!   `escrow.uid()`): Citus refuses policies with sub-links on distributed tables. They are re-created
//!   before the table is distributed (Citus copies them to every shard).
//! - The queue trigger on `ledger.events` becomes the row trigger `events_queue_row`
//!   (`ledger.queue_appended_row`, migration `20261201000301`): a statement trigger's transition table is
//!   not visible to the distributed INSERT it would run on the worker.
//! - Triggers on distributed tables need `citus.enable_unsafe_triggers` when the table is distributed (only
//!   then: Citus checks it at DDL time). The append-only triggers (`forbid_mutation`) are copied to every
//!   shard and refuse UPDATE, DELETE and TRUNCATE there, on the worker, as on one server.
//! - `ledger.sequence`, `ledger.sequence_positions`, `ledger.save_snapshot`,
//!   `ledger.take_balance_snapshot` and `ledger.position_at_or_before` become distributed functions
//!   colocated by their ledger argument: a call runs on the worker that holds the ledger, as one local
//!   transaction there (the advisory lock, the chain head and the inserted links are all on that node; as-of
//!   resolution waits behind the same lock as the sequencer).
//! - Citus opens its connections to the workers as the current role (after `SET ROLE` too), so the
//!   run-time roles (`escrow_writer`, `escrow_projector`, `escrow_reader`, `escrow_auditor`,
//!   `escrow_definer`) get LOGIN, on every node (Citus copies a role's attributes from the coordinator).
//!   They have no password: the nodes' `pg_hba.conf` decides who may log in as them (on workers: the
//!   coordinator only, with a password in its `.pgpass` or a client certificate; on the coordinator: no
//!   one).

use sqlx::{Connection, PgConnection, PgPool};

use crate::error::{Result, StoreError};

/// Where the schema lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// One PostgreSQL server (no `citus` extension in the database).
    Single,
    /// A Citus coordinator with this many active worker nodes.
    Citus { workers: i64 },
}

impl std::fmt::Display for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deployment::Single => write!(f, "single server"),
            Deployment::Citus { workers } => {
                write!(f, "citus, {workers} workers, distributed by ledger_id")
            }
        }
    }
}

/// The run-time roles that Citus logs in as on the workers.
pub const WORKER_LOGIN_ROLES: [&str; 5] = [
    "escrow_writer",
    "escrow_projector",
    "escrow_reader",
    "escrow_auditor",
    "escrow_definer",
];

/// The table whose colocation group every distributed table joins.
pub const COLOCATION_TABLE: &str = "ledger.events";

/// Functions that run on the worker holding their ledger (first argument).
const DISTRIBUTED_FUNCTIONS: [&str; 5] = [
    "ledger.sequence(text,int)",
    "ledger.position_at_or_before(text,timestamptz)",
    "ledger.sequence_positions(text,int,bigint[])",
    "ledger.save_snapshot(text,text,bigint,int,jsonb,timestamptz)",
    "ledger.take_balance_snapshot(text,bigint)",
];

const HAS_CITUS: &str = "select exists (select 1 from pg_extension where extname = 'citus')";

/// Which deployment the database is.
pub async fn deployment(pool: &PgPool) -> Result<Deployment> {
    let citus: bool = sqlx::query_scalar(HAS_CITUS).fetch_one(pool).await?;
    if !citus {
        return Ok(Deployment::Single);
    }
    let workers: i64 = sqlx::query_scalar(
        "select count(*) from pg_dist_node where noderole = 'primary' and isactive and shouldhaveshards
            and groupid <> 0",
    )
    .fetch_one(pool)
    .await?;
    Ok(Deployment::Citus { workers })
}

/// The tables of the two schemas that are not in Citus' metadata yet (empty on one server).
pub async fn local_tables(pool: &PgPool) -> Result<Vec<String>> {
    if !sqlx::query_scalar::<_, bool>(HAS_CITUS)
        .fetch_one(pool)
        .await?
    {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(LOCAL_TABLES).fetch_all(pool).await?)
}

const LOCAL_TABLES: &str = "
    select c.oid::regclass::text
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('ledger', 'escrow') and c.relkind in ('r', 'p')
       and c.relname not like '%\\_\\_rb'
       and c.oid not in (select logicalrelid from pg_dist_partition)
     order by 1";

/// Distributes what is still local (see the module docs); nothing on a database without Citus.
pub async fn distribute(pool: &PgPool) -> Result<()> {
    distribute_on(pool).await.map_err(|e| match e {
        DistributeFailure::Db(error) => StoreError::Citus {
            reason: error.to_string(),
        },
        DistributeFailure::Worker(reason) => StoreError::Citus { reason },
    })
}

enum DistributeFailure {
    Db(sqlx::Error),
    Worker(String),
}

impl From<sqlx::Error> for DistributeFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(error)
    }
}

async fn distribute_on(pool: &PgPool) -> Result<(), DistributeFailure> {
    let mut conn = pool.acquire().await?;
    if !sqlx::query_scalar::<_, bool>(HAS_CITUS)
        .fetch_one(&mut *conn)
        .await?
    {
        return Ok(());
    }
    // Every CLI command migrates: concurrent first runs take turns (Citus' DDL on one object from two
    // sessions fails with "tuple concurrently updated"), and later runs only look.
    sqlx::query("select pg_advisory_lock(hashtextextended($1, 0))")
        .bind(DISTRIBUTE_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let result = distribute_locked(&mut conn).await;
    let unlocked = sqlx::query("select pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(DISTRIBUTE_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(())
}

/// The advisory lock key of [`distribute`] (per database).
const DISTRIBUTE_LOCK_KEY: &str = "escrow-ledger.citus-distribute";

async fn distribute_locked(conn: &mut PgConnection) -> Result<(), DistributeFailure> {
    let mut tx = conn.begin().await?;
    let distributed = distribute_tables(&mut tx).await?;
    tx.commit().await?;
    nested_reads(&mut *conn).await?;
    worker_logins(&mut *conn).await?;
    if distributed {
        worker_visibility(&mut *conn).await?;
    }
    custom_plans(&mut *conn).await?;
    distribute_functions(&mut *conn).await?;
    Ok(())
}

/// The sequencer's functions that plan generically on one server (migration 20261210000101).
const GENERIC_PLAN_FUNCTIONS: [&str; 2] = [
    "ledger.sequence(text,int)",
    "ledger.sequence_positions(text,int,bigint[])",
];

/// Citus cannot make a distributed plan from a generic plan with parameters ("could not create distributed
/// plan"): here the sequencer's functions plan per call again, as before that migration.
async fn custom_plans(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for function in GENERIC_PLAN_FUNCTIONS {
        if has_setting(conn, function, "plan_cache_mode=force_generic_plan").await? {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "alter function {function} reset plan_cache_mode"
            )))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Whether `function` (a `regprocedure` text) carries `setting` (`name=value`) in its SET clauses.
async fn has_setting(
    conn: &mut PgConnection,
    function: &str,
    setting: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce($2 = any(proconfig), false) from pg_proc where oid = $1::regprocedure",
    )
    .bind(function)
    .bind(setting)
    .fetch_one(&mut *conn)
    .await
}

/// One transaction: foreign keys out, policies rewritten, queue trigger per row, tables distributed, keys
/// back in. True when there was something to distribute.
async fn distribute_tables(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let local: Vec<String> = sqlx::query_scalar(LOCAL_TABLES)
        .fetch_all(&mut *conn)
        .await?;
    if local.is_empty() {
        return Ok(false);
    }
    sqlx::raw_sql(
        "set local citus.enable_unsafe_triggers = on;
         set local citus.multi_shard_modify_mode = 'sequential';",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql(DISTRIBUTE_TABLES).execute(&mut *conn).await?;
    Ok(true)
}

/// The distribution itself, as one block of SQL (read it top to bottom; see the module docs for why).
const DISTRIBUTE_TABLES: &str = r#"
do $distribute$
declare
    r record;
    v_local regclass[];
begin
    select coalesce(array_agg(c.oid::regclass), '{}') into v_local
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('ledger', 'escrow') and c.relkind in ('r', 'p')
       and c.relname not like '%\_\_rb'
       and c.oid not in (select logicalrelid from pg_dist_partition);

    -- Foreign keys that touch a local table: dropped now, added again at the end.
    create temp table distribute_fks on commit drop as
    select c.conrelid::regclass as rel, c.conname, pg_get_constraintdef(c.oid) as def
      from pg_constraint c
     where c.contype = 'f'
       and (c.conrelid = any(v_local) or c.confrelid = any(v_local));
    for r in select * from distribute_fks loop
        execute format('alter table %s drop constraint %I', r.rel, r.conname);
    end loop;

    -- Policies without sub-queries (Citus refuses sub-links in policies of distributed tables).
    for r in
        select p.polrelid::regclass as rel, p.polname,
               format('create policy %I on %s as %s for %s to %s%s%s', p.polname, p.polrelid::regclass,
                      case when p.polpermissive then 'permissive' else 'restrictive' end,
                      case p.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                                    when 'd' then 'delete' else 'all' end,
                      (select string_agg(case when o = 0 then 'public' else quote_ident(o::regrole::text) end,
                                         ', ')
                         from unnest(p.polroles) o),
                      case when p.polqual is null then ''
                           else ' using (' || regexp_replace(pg_get_expr(p.polqual, p.polrelid),
                                '\( SELECT (escrow\.[a-z_]+\(\)) AS [a-z_]+\)', '\1', 'g') || ')' end,
                      case when p.polwithcheck is null then ''
                           else ' with check (' || regexp_replace(pg_get_expr(p.polwithcheck, p.polrelid),
                                '\( SELECT (escrow\.[a-z_]+\(\)) AS [a-z_]+\)', '\1', 'g') || ')' end)
                   as def
          from pg_policy p
         where p.polrelid = any(v_local)
    loop
        execute format('drop policy %I on %s', r.polname, r.rel);
        execute r.def;
    end loop;

    -- The queue trigger, one row at a time (migration 20261201000301 says why). Created once every table is
    -- distributed: a log that already holds events is copied into the shards by the distribution, and a
    -- queue trigger on the new shard would fire for every copied row, before the queue's shards exist.
    if 'ledger.events'::regclass = any(v_local)
       and exists (select 1 from pg_trigger where tgrelid = 'ledger.events'::regclass
                                             and tgname = 'events_queue') then
        drop trigger events_queue on ledger.events;
    end if;

    -- The trigger that stamps `recorded_at` (migration 20261204000102), likewise: copying a log that already
    -- holds events into the shards would re-stamp every copied row (and break its chain link).
    if 'ledger.events'::regclass = any(v_local)
       and exists (select 1 from pg_trigger where tgrelid = 'ledger.events'::regclass
                                             and tgname = 'events_recorded_now') then
        drop trigger events_recorded_now on ledger.events;
    end if;

    -- The outcome checks (migration 20261205000102) read the log from a trigger: not on shards (see there).
    drop trigger if exists idempotency_logged on ledger.idempotency;
    drop trigger if exists inbox_logged on ledger.inbox;

    if 'ledger.ledgers'::regclass = any(v_local) then
        perform create_reference_table('ledger.ledgers');
    end if;
    if 'ledger.events'::regclass = any(v_local) then
        perform create_distributed_table('ledger.events', 'ledger_id', colocate_with => 'none');
    end if;
    for r in select t from unnest(v_local) t
              where t not in ('ledger.ledgers'::regclass, 'ledger.events'::regclass)
              order by t::text loop
        perform create_distributed_table(r.t::text, 'ledger_id', colocate_with => 'ledger.events');
    end loop;

    if not exists (select 1 from pg_trigger where tgrelid = 'ledger.events'::regclass
                                              and tgname in ('events_queue', 'events_queue_row')) then
        create trigger events_queue_row after insert on ledger.events
            for each row execute function ledger.queue_appended_row();
    end if;

    if exists (select 1 from pg_proc where oid = to_regproc('ledger.stamp_recorded_at'))
       and not exists (select 1 from pg_trigger where tgrelid = 'ledger.events'::regclass
                                                 and tgname = 'events_recorded_now') then
        create trigger events_recorded_now before insert on ledger.events
            for each row execute function ledger.stamp_recorded_at();
    end if;

    for r in select * from distribute_fks loop
        execute format('alter table %s add constraint %I %s', r.rel, r.conname, r.def);
    end loop;

    -- A read table distributed with rows in it (a database that held rows before Citus was added) keeps a
    -- hidden local copy of them in the coordinator's shell table: free it (the log's tables are distributed
    -- when the schema is new, and their triggers refuse a TRUNCATE).
    for r in select t from unnest(v_local) t join pg_class c on c.oid = t
               join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'escrow' loop
        perform truncate_local_data_after_distributing_table(r.t);
    end loop;
end
$distribute$;
"#;

/// `escrow.sole_ledger()` reads the reference table `ledger.ledgers` from inside the read tables' policies,
/// which Citus evaluates on the worker, inside a query on a shard: a nested distributed query, which Citus
/// refuses unless allowed. Allowed for that one function only: it reads a reference table, whose copy is
/// local on every node, so nothing is pushed anywhere.
async fn nested_reads(conn: &mut PgConnection) -> Result<(), DistributeFailure> {
    if has_setting(
        conn,
        "escrow.sole_ledger()",
        "citus.allow_nested_distributed_execution=on",
    )
    .await?
    {
        return Ok(());
    }
    sqlx::raw_sql(
        "alter function escrow.sole_ledger() set citus.allow_nested_distributed_execution = on",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The run-time roles may log in (Citus connects to the workers as the current role). Altered on the
/// coordinator, so that Citus carries the attribute to every node, including nodes added later (Citus
/// copies a role's attributes from the coordinator whenever it syncs it: a LOGIN granted only on a worker
/// would be taken back). Only roles that cannot log in yet are altered (roles are shared by every database
/// of the cluster).
async fn worker_logins(conn: &mut PgConnection) -> Result<(), DistributeFailure> {
    for role in WORKER_LOGIN_ROLES {
        let can_login: bool =
            sqlx::query_scalar("select rolcanlogin from pg_roles where rolname = $1")
                .bind(role)
                .fetch_one(&mut *conn)
                .await?;
        if !can_login {
            // A constant role name: nothing from outside is formatted into the statement.
            let alter = format!("alter role {role} login");
            sqlx::raw_sql(sqlx::AssertSqlSafe(alter))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Shards are visible in the workers' catalogs to every client (Citus hides them from all but its own by
/// default): an operator on a worker sees which ledgers' shards it holds (`\d ledger.*`).
async fn worker_visibility(conn: &mut PgConnection) -> Result<(), DistributeFailure> {
    let failed: Vec<String> = sqlx::query_scalar(
        "select nodename || ':' || nodeport || ': ' || result
           from run_command_on_workers(format(
                'set citus.enable_ddl_propagation = off; '
                || 'alter database %I set citus.show_shards_for_app_name_prefixes = %L; '
                || 'reset citus.enable_ddl_propagation', current_database(), '*'))
          where not success",
    )
    .fetch_all(&mut *conn)
    .await?;
    match failed.first() {
        Some(failure) => Err(DistributeFailure::Worker(format!(
            "cannot show shards on a worker: {failure}"
        ))),
        None => Ok(()),
    }
}

/// The per-ledger functions run where their ledger lives.
async fn distribute_functions(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for function in DISTRIBUTED_FUNCTIONS {
        let distributed: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_dist_object
                             where objid = $1::regprocedure and distribution_argument_index is not null)",
        )
        .bind(function)
        .fetch_one(&mut *conn)
        .await?;
        if !distributed {
            sqlx::query(
                "select create_distributed_function($1::regprocedure, '$1', colocate_with => $2)",
            )
            .bind(function)
            .bind(COLOCATION_TABLE)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
