//! Where the database is, and the `db` subcommands.
//!
//! With `--database-url` (or `DATABASE_URL`) the CLI uses that database. Without one it never touches a
//! server it did not start: it runs its own private cluster (see `ledger_store::cluster`), started on demand
//! in its data directory (`$ESCROW_LEDGER_HOME/pg`; as root `/var/lib/escrow-ledger/pg`; else
//! `~/.local/share/escrow-ledger/pg`), with a database named `escrow_ledger`, stopped by `db stop`; it asks
//! for the password it generated and keeps in that directory.
//!
//! Run-time roles: the migrations run as the URL's user; then every command but `db`, `ledgers`,
//! `projections rebuild`, `demo` and `bench` reduces a privileged user to `escrow_writer`,
//! `escrow_projector` or `escrow_auditor` ([`Global::pool_as`], `ledger_store::roles`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use ledger_store::cluster::{ClusterStatus, PrivateCluster};
use ledger_store::roles::RunRole;
use ledger_store::{EventStore, Executor, ExecutorConfig, PgEventStore};
use sqlx::PgPool;

use crate::exit::{CliError, Context};

/// Name of the database the CLI creates in its private cluster.
pub const PRIVATE_DATABASE: &str = "escrow_ledger";

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// PostgreSQL URL. Without it, a private cluster is started on demand (see `db start`).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The ledger (marketplace) to work on.
    #[arg(long, env = "ESCROW_LEDGER", default_value = ledger_store::DEFAULT_LEDGER, global = true)]
    pub ledger: String,
}

impl Global {
    /// The URL to use: the configured one, else the private cluster's database (started if needed).
    pub async fn url(&self) -> Result<String, CliError> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        let cluster = PrivateCluster::with_defaults();
        if !matches!(
            cluster.status().context("private cluster")?,
            ClusterStatus::Running { .. }
        ) {
            eprintln!(
                "escrow-ledger: no DATABASE_URL; starting the private cluster in {}",
                cluster.data_dir.display()
            );
            cluster
                .start()
                .context("cannot start the private PostgreSQL cluster")?;
        }
        let admin = ledger_store::connect(&cluster.url())
            .await
            .context("cannot connect to the private cluster")?;
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(PRIVATE_DATABASE)
                .fetch_one(&admin)
                .await
                .context("private cluster")?;
        if !exists {
            // The name is a constant, so formatting it into the statement is safe.
            let create = format!("create database {PRIVATE_DATABASE}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&admin)
                .await
                .context("cannot create the database")?;
        }
        Ok(ledger_store::testdb::url_with_database(
            &cluster.url(),
            PRIVATE_DATABASE,
        ))
    }

    /// A pool on a migrated database (migrations are idempotent and cheap when current).
    pub async fn pool(&self) -> Result<PgPool, CliError> {
        let url = self.url().await?;
        probe(&url).await?;
        let pool = ledger_store::connect(&url)
            .await
            .context(format!("cannot connect to {}", redact(&url)))?;
        ledger_store::migrate(&pool)
            .await
            .context("cannot migrate the database")?;
        Ok(pool)
    }

    /// A pool on a migrated database whose sessions run as `role` (see `ledger_store::roles`): the
    /// migrations run first as the URL's user (the owner), then a privileged user is reduced with the
    /// role, so no command but `db migrate`, `ledgers`, `projections rebuild`, `demo` and the benchmarks can
    /// alter a table, disable a trigger or bypass row-level security.
    pub async fn pool_as(&self, role: RunRole) -> Result<PgPool, CliError> {
        let url = self.url().await?;
        self.pool().await?.close().await;
        ledger_store::roles::connect_as(&url, role)
            .await
            .context(format!(
                "cannot connect to {} as {}",
                redact(&url),
                role.name()
            ))
    }

    /// The store and an executor on the selected ledger, which must exist, as the owner (benchmarks and
    /// the demo).
    pub async fn executor(&self) -> Result<(PgPool, Arc<Executor>), CliError> {
        let pool = self.pool().await?;
        self.executor_on(pool).await
    }

    /// [`Global::executor`] whose sessions run as `role`.
    pub async fn executor_as(&self, role: RunRole) -> Result<(PgPool, Arc<Executor>), CliError> {
        let pool = self.pool_as(role).await?;
        self.executor_on(pool).await
    }

    async fn executor_on(&self, pool: PgPool) -> Result<(PgPool, Arc<Executor>), CliError> {
        let store = PgEventStore::new(pool.clone());
        let ledgers = store.list_ledgers().await.context("cannot list ledgers")?;
        if !ledgers.contains(&self.ledger) {
            return Err(CliError::environment(format!(
                "unknown ledger {:?} (known: {}); create it with `escrow-ledger ledgers create {}`",
                self.ledger,
                ledgers.join(", "),
                self.ledger
            )));
        }
        let executor = Executor::new(
            Arc::new(store),
            self.ledger.clone(),
            ExecutorConfig::default(),
        );
        Ok((pool, Arc::new(executor)))
    }
}

/// Refuses a ledger that does not exist, naming the known ones.
pub async fn require_ledger(store: &PgEventStore, ledger: &str) -> Result<(), CliError> {
    let ledgers = store.list_ledgers().await.context("cannot list ledgers")?;
    if ledgers.iter().any(|l| l == ledger) {
        return Ok(());
    }
    Err(CliError::environment(format!(
        "unknown ledger {ledger:?} (known: {}); create it with `escrow-ledger ledgers create {ledger}`",
        ledgers.join(", ")
    )))
}

/// Hides a password in a URL shown to humans.
/// How long the first connection may take before the command says why it cannot reach the database.
const CONNECT_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// One connection first, with a short deadline, so that an unreachable or missing database is reported
/// with its real cause and what to do, not as a pool timeout 30 s later.
async fn probe(url: &str) -> Result<(), CliError> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
        CliError::environment(format!("{} is not a PostgreSQL URL: {e}", redact(url)))
    })?;
    let (host, port) = (options.get_host().to_string(), options.get_port());
    let database = options
        .get_database()
        .unwrap_or("(the user's name)")
        .to_string();
    let user = options.get_username().to_string();
    let embedded = "or leave --database-url (and DATABASE_URL) out to use the embedded cluster (`escrow-ledger db start`)";
    let cannot = format!("cannot connect to {}", redact(url));
    match tokio::time::timeout(CONNECT_PROBE, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(_) => Err(CliError::environment(format!(
            "{cannot}: no answer from PostgreSQL at {host}:{port} within {} s: is it running and reachable from here? \
             ({embedded})",
            CONNECT_PROBE.as_secs()
        ))),
        Ok(Err(e)) => Err(CliError::environment(match &e {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
                "{cannot}: connection refused at {host}:{port}: no PostgreSQL listens there; start it (e.g. \
                 `pg_ctlcluster <version> main start`) or fix the URL's host and port, {embedded}"
            ),
            sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => format!(
                "{cannot}: database {database:?} does not exist at {host}:{port}: create it with \
                 `createdb -h {host} -p {port} -U {user} {database}` (or `create database \"{database}\"` in psql), \
                 {embedded}"
            ),
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("28P01" | "28000")) =>
            {
                format!(
                    "{cannot}: PostgreSQL at {host}:{port} refused user {user:?}: {} (check the URL's user and password)",
                    db.message()
                )
            }
            other => format!("{cannot}: {other}"),
        })),
    }
}

pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Applies the schema migrations (creates the ledger named `default`).
    Migrate,
    /// Shows the applied migrations, the ledgers and their heads.
    Status,
    /// Starts the private cluster (used when no database URL is configured).
    Start,
    /// Stops the private cluster.
    Stop,
}

pub async fn run(global: &Global, command: DbCommand) -> Result<ExitCode, CliError> {
    match command {
        DbCommand::Migrate => {
            let pool = global.pool().await?;
            let applied: i64 =
                sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
                    .fetch_one(&pool)
                    .await
                    .context("cannot read the migrations table")?;
            println!(
                "migrated: {applied} migrations applied; ledger {:?} exists",
                ledger_store::DEFAULT_LEDGER
            );
        }
        DbCommand::Status => status(global).await?,
        DbCommand::Start => {
            let cluster = PrivateCluster::with_defaults();
            cluster
                .start()
                .context("cannot start the private cluster")?;
            println!(
                "private cluster running in {} at {}",
                cluster.data_dir.display(),
                redact(&cluster.url())
            );
        }
        DbCommand::Stop => {
            let cluster = PrivateCluster::with_defaults();
            cluster.stop().context("cannot stop the private cluster")?;
            println!("private cluster stopped ({})", cluster.data_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(global: &Global) -> Result<(), CliError> {
    let mut lines = Vec::new();
    let result = status_lines(global, &mut lines).await;
    print_lines(&lines);
    result
}

/// Prints `lines` to stdout. A reader that went away (`db status | head -1`) ends the output quietly, as
/// other Unix tools do, instead of a panic from `println!`.
fn print_lines(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// What `db status` says, line by line (kept when a later step fails, so the error follows what was found).
async fn status_lines(global: &Global, lines: &mut Vec<String>) -> Result<(), CliError> {
    if global.database_url.is_none() {
        let cluster = PrivateCluster::with_defaults();
        let state = cluster.status().context("private cluster")?;
        lines.push(format!(
            "private cluster: {} ({state:?})",
            cluster.data_dir.display()
        ));
        if !matches!(state, ClusterStatus::Running { .. }) {
            return Ok(());
        }
    }
    let url = global.url().await?;
    probe(&url).await?;
    let pool = ledger_store::connect(&url)
        .await
        .context(format!("cannot connect to {}", redact(&url)))?;
    lines.push(format!("database: {}", redact(&url)));
    let deployment = ledger_store::citus::deployment(&pool)
        .await
        .context("cannot tell whether the database is a Citus cluster")?;
    lines.push(format!("mode: {deployment}"));
    let local = ledger_store::citus::local_tables(&pool)
        .await
        .context("cannot read Citus' metadata")?;
    if !local.is_empty() {
        lines.push(format!(
            "  not distributed yet (run `escrow-ledger db migrate`): {}",
            local.join(", ")
        ));
    }
    // `_sqlx_migrations` does not exist before the first migrate: nothing is applied then.
    let migrated: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(&pool)
        .await
        .context("cannot read the catalog")?;
    let migrations: Vec<(i64, String)> = if migrated {
        sqlx::query_as(
            "select version, description from _sqlx_migrations where success order by version",
        )
        .fetch_all(&pool)
        .await
        .context("cannot read the migrations table")?
    } else {
        Vec::new()
    };
    lines.push(format!("migrations applied: {}", migrations.len()));
    for (version, description) in migrations {
        lines.push(format!("  {version} {description}"));
    }
    let has_log: bool = sqlx::query_scalar("select to_regclass('ledger.unsequenced') is not null")
        .fetch_one(&pool)
        .await
        .context("cannot read the catalog")?;
    if !has_log {
        lines.push("no ledger schema yet: run `escrow-ledger db migrate`".to_string());
        return Ok(());
    }
    let backlog = ledger_store::sequencer::backlog(&pool)
        .await
        .context("cannot read the unsequenced backlog")?;
    let store = PgEventStore::new(pool);
    for ledger in store.list_ledgers().await.context("cannot list ledgers")? {
        let head = store
            .head_position(&ledger)
            .await
            .context("cannot read the head")?;
        // Committed events waiting for a position: readers do not see them yet.
        let waiting = match backlog.iter().find(|b| b.ledger_id == ledger) {
            Some(b) => format!(
                "{} unsequenced, the oldest for {} ms",
                b.events, b.oldest_age_ms
            ),
            None => "0 unsequenced".to_string(),
        };
        lines.push(format!("ledger {ledger}: {head} events; {waiting}"));
    }
    // Events out: each sink's position, backlog and lease (none before the first `events run`).
    let has_sinks: bool =
        sqlx::query_scalar("select to_regclass('ledger.event_cursors') is not null")
            .fetch_one(store.pool())
            .await
            .context("cannot read the catalog")?;
    if has_sinks {
        let sinks = ledger_events::cursor::status(store.pool())
            .await
            .context("cannot read the event sinks' cursors")?;
        for s in sinks {
            lines.push(format!(
                "events to {} of ledger {}: position {} of {} (backlog {}, lag {:.1}s), {} delivered, last advanced {}, lease {}",
                s.sink,
                s.ledger,
                s.position,
                s.head,
                s.backlog,
                s.lag_seconds,
                s.delivered,
                s.updated_at.to_rfc3339(),
                s.leased_by.as_deref().unwrap_or("free")
            ));
        }
    }
    Ok(())
}
