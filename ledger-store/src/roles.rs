//! Run-time roles: migrations run as the owner of the schema; everything else runs as a role that cannot
//! alter a table, disable a trigger or bypass row-level security.
//!
//! - [`RunRole::Writer`] (`escrow_writer`): appends events, idempotency records, inbox rows and outbox
//!   leases; sequencing and snapshots only through the definer functions. `serve`, `apply`, `ingest`,
//!   `outbox`, `suspense`, `sequencer run`, `projections run`.
//! - [`RunRole::Projector`] (`escrow_projector`): reads the log, writes the read tables. `projections run`
//!   takes it per batch (`set local role`) from writer sessions, which also run its background sequencer.
//! - [`RunRole::Auditor`] (`escrow_auditor`): reads the log and every row of every read table, writes
//!   nothing. `verify`, `seal`, the reports and exports, `projections status`.
//!
//! A URL whose user is privileged (superuser, BYPASSRLS, or owner of a table of the schemas) is reduced:
//! every session of the pool starts with `role` set to the run-time role (the startup option `-c role=..`,
//! the same as `SET ROLE` before the first statement), so existing command lines keep working with less
//! power. A URL whose user is none of these is used as it is (an operator who made a login role for it).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::error::{Result, StoreError};
use crate::postgres::{IDLE_IN_TRANSACTION_TIMEOUT, POOL_CONNECTIONS_MAX, STATEMENT_TIMEOUT};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunRole {
    Writer,
    Projector,
    Auditor,
}

impl RunRole {
    pub fn name(self) -> &'static str {
        match self {
            RunRole::Writer => "escrow_writer",
            RunRole::Projector => "escrow_projector",
            RunRole::Auditor => "escrow_auditor",
        }
    }
}

/// Whether the URL's user may do more than the run-time roles (superuser, BYPASSRLS, owner of a table in
/// `ledger` or `escrow`), and whether it can take `role`.
const PRIVILEGE_SQL: &str = "select r.rolsuper or r.rolbypassrls or exists (
        select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname in ('ledger', 'escrow') and pg_has_role(current_user, c.relowner, 'MEMBER')),
       pg_has_role(current_user, $1, 'MEMBER')
  from pg_roles r where r.rolname = current_user";

/// A pool on `url` whose sessions run as `role` when the URL's user is privileged (see the module docs).
/// The schema must be migrated (the roles are created by the migrations).
pub async fn connect_as(url: &str, role: RunRole) -> Result<PgPool> {
    let base = PgConnectOptions::from_str(url)?;
    let mut probe = base.connect().await?;
    let (privileged, member): (bool, bool) = sqlx::query_as(PRIVILEGE_SQL)
        .bind(role.name())
        .fetch_one(&mut probe)
        .await?;
    probe.close().await?;
    let mut settings = vec![
        ("statement_timeout", STATEMENT_TIMEOUT),
        (
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        ),
    ];
    if privileged {
        if !member {
            return Err(StoreError::RunRoleUnavailable { role: role.name() });
        }
        settings.push(("role", role.name()));
    }
    let pool = PgPoolOptions::new()
        .max_connections(POOL_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(base.options(settings))
        .await?;
    Ok(pool)
}
