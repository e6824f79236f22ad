//! The tests' local Citus cluster (`ESCROW_TEST_CITUS=1`, see [`crate::testdb`]): a coordinator and
//! [`WORKERS`] workers started from the server binaries on this machine with Citus preloaded, under the
//! temp directory, shared by concurrent test processes (a lock file serializes the start) and left running.
//!
//! Test-only choices: trust authentication on 127.0.0.1 (the nodes connect to each other as the run-time
//! roles, which have no password), `fsync` off, and four shards per table (`citus.shard_count`; enough to
//! spread ledgers over both workers, cheap to create for every test database). The run-time roles are
//! created with LOGIN on every node before any database exists, and Citus does not re-apply a role's
//! attributes to the workers (`citus.enable_alter_role_propagation` off): every test database registers
//! the workers and distributes its tables, and each time Citus would otherwise ALTER the shared roles on the
//! workers, so parallel tests failed with "tuple concurrently updated".

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::citus::WORKER_LOGIN_ROLES;
use crate::cluster::{check, postmaster_port, running_as_root, server_bin_dir};
use crate::error::{Result, StoreError};

/// Worker nodes besides the coordinator.
pub const WORKERS: usize = 2;
/// Shards per distributed table in the tests' cluster.
const SHARD_COUNT: u16 = 4;
/// Connections per node (each test database opens pools on the coordinator, which opens its own to
/// the workers).
const CONNECTIONS_MAX: u16 = 300;

/// Ports of the running nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CitusNodes {
    pub coordinator: u16,
    pub workers: Vec<u16>,
}

impl CitusNodes {
    /// The `postgres` database of the node on `port`, as the superuser (trust authentication).
    pub fn admin_url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }
}

fn cluster_error(reason: impl Into<String>) -> StoreError {
    StoreError::Cluster {
        reason: reason.into(),
    }
}

/// Where the tests' Citus nodes live.
pub fn root() -> PathBuf {
    std::env::temp_dir().join("escrow-ledger-test-citus")
}

/// Starts (or reuses) the coordinator and the workers, under a lock file.
pub fn ensure() -> Result<CitusNodes> {
    require_citus()?;
    let root = root();
    std::fs::create_dir_all(&root)
        .map_err(|e| cluster_error(format!("{}: {e}", root.display())))?;
    chown_postgres(&root)?;
    let lock = std::fs::File::create(root.join("lock"))
        .map_err(|e| cluster_error(format!("lock file: {e}")))?;
    lock.lock()
        .map_err(|e| cluster_error(format!("lock file: {e}")))?;
    let mut ports = Vec::with_capacity(WORKERS + 1);
    for node in 0..=WORKERS {
        ports.push(ensure_node(&root.join(format!("n{node}")))?);
    }
    Ok(CitusNodes {
        coordinator: ports[0],
        workers: ports[1..].to_vec(),
    })
}

fn require_citus() -> Result<()> {
    let pkglibdir = Command::new("pg_config")
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = match pkglibdir {
        Some(dir) => dir.join("citus.so").is_file(),
        None => std::fs::read_dir("/usr/lib/postgresql")
            .map(|dirs| {
                dirs.flatten()
                    .any(|d| d.path().join("lib/citus.so").is_file())
            })
            .unwrap_or(false),
    };
    if installed {
        return Ok(());
    }
    Err(cluster_error(
        "ESCROW_TEST_CITUS=1 but Citus is not installed for this PostgreSQL: run \
         ../shared/vendor/citus/install.sh as root (or install Citus Data's package)",
    ))
}

fn run(program: &str, args: &[&str]) -> Result<std::process::Output> {
    let bin = server_bin_dir()?.join(program);
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    command
        .args(args)
        .output()
        .map_err(|e| cluster_error(format!("cannot run {}: {e}", bin.display())))
}

fn chown_postgres(path: &Path) -> Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let output = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .output()
        .map_err(|e| cluster_error(format!("cannot run chown: {e}")))?;
    check(output, "chown postgres")
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| cluster_error(format!("{} is not UTF-8", path.display())))
}

/// A running node's port: the one it already runs on, else a fresh start on a free port.
fn ensure_node(data_dir: &Path) -> Result<u16> {
    let data = path_str(data_dir)?;
    if data_dir.join("PG_VERSION").is_file() {
        if run("pg_ctl", &["status", "-D", data])?.status.success()
            && let Some(port) = postmaster_port(data_dir)
        {
            if started_with_settings(data_dir) {
                return Ok(port);
            }
            // Started by an older harness with other settings: restarted with today's, on its port.
            check(
                run("pg_ctl", &["stop", "-w", "-m", "fast", "-D", data])?,
                "pg_ctl stop (citus node with old settings)",
            )?;
            return start_node(data_dir, port);
        }
    } else {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| cluster_error(format!("{}: {e}", data_dir.display())))?;
        chown_postgres(data_dir)?;
        let initdb = run(
            "initdb",
            &["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
        check(initdb, "initdb (citus node)")?;
    }
    start_node(data_dir, free_port()?)
}

/// The server settings of every node. `wal_level=logical` (with slots and senders) lets Citus move and split
/// shards without blocking writes (`shard_transfer_mode => 'force_logical'`).
fn node_settings() -> Vec<String> {
    let mut settings: Vec<String> = vec![
        "listen_addresses=127.0.0.1".into(),
        "unix_socket_directories=".into(),
        "shared_preload_libraries=citus".into(),
        format!("max_connections={CONNECTIONS_MAX}"),
        format!("citus.shard_count={SHARD_COUNT}"),
        "citus.enable_alter_role_propagation=off".into(),
        "fsync=off".into(),
        "max_worker_processes=64".into(),
        "wal_level=logical".into(),
        "max_replication_slots=64".into(),
        "max_wal_senders=64".into(),
    ];
    // Builds that restrict logical decoding output plugins (PostgreSQL 15.20 here) must allow Citus' own,
    // which `isolate_tenant_to_new_shard` uses without blocking writes.
    if server_knows_setting("output_plugin_libraries") {
        settings.push("output_plugin_libraries=pgoutput,test_decoding,citus".into());
    }
    settings
}

/// Whether this machine's server has the setting `name` (`postgres --describe-config`, which runs as root
/// too).
fn server_knows_setting(name: &str) -> bool {
    let Ok(bin) = server_bin_dir() else {
        return false;
    };
    Command::new(bin.join("postgres"))
        .arg("--describe-config")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|line| line.split('\t').next() == Some(name))
        })
        .unwrap_or(false)
}

/// Whether the running node was started with [`node_settings`] (its `postmaster.opts` names each).
fn started_with_settings(data_dir: &Path) -> bool {
    let Ok(opts) = std::fs::read_to_string(data_dir.join("postmaster.opts")) else {
        return false;
    };
    node_settings()
        .iter()
        .all(|setting| opts.contains(&format!("\"{setting}\"")))
}

fn start_node(data_dir: &Path, port: u16) -> Result<u16> {
    let data = path_str(data_dir)?;
    let mut options = format!("-p {port}");
    for setting in node_settings() {
        match setting.split_once('=') {
            Some((name, "")) => options.push_str(&format!(" -c {name}=''")),
            _ => options.push_str(&format!(" -c {setting}")),
        }
    }
    let log = data_dir.with_extension("log");
    let started = run(
        "pg_ctl",
        &[
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            data,
            "-l",
            path_str(&log)?,
            "-o",
            &options,
        ],
    )?;
    check(started, "pg_ctl start (citus node)")?;
    create_login_roles(port)?;
    Ok(port)
}

/// The run-time roles, with LOGIN, on a node (in its `postgres` database, where Citus is not installed,
/// so nothing is propagated).
fn create_login_roles(port: u16) -> Result<()> {
    let mut sql = String::new();
    for role in WORKER_LOGIN_ROLES {
        sql.push_str(&format!(
            "do $$ begin create role {role} login; exception when duplicate_object then \
             alter role {role} login; end $$;\n"
        ));
    }
    let port = port.to_string();
    let args = [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-c",
        &sql,
    ];
    check(run("psql", &args)?, "psql create roles (citus node)")
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| cluster_error(format!("no free port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| cluster_error(e.to_string()))?
        .port())
}
