//! A private PostgreSQL cluster run from the server binaries on this machine, for the first run
//! of the CLI (`db start` / `db stop`) and for tests when no server answers.
//!
//! Default data directory ([`PrivateCluster::default_data_dir`]): `$ESCROW_LEDGER_HOME/pg`;
//! otherwise, when running as root, `/var/lib/escrow-ledger/pg` (PostgreSQL refuses to run as
//! root, so the directory is handed to the `postgres` OS user, who must be able to reach it);
//! otherwise `~/.local/share/escrow-ledger/pg`. Default port: `$ESCROW_LEDGER_PG_PORT` or 54329.
//! The cluster listens on 127.0.0.1 only (no Unix socket) and asks every connection for a password
//! (scram-sha-256): user `postgres`, with a password generated at `initdb` and kept in the data directory
//! (`escrow-ledger.password`, mode 0600, in a directory only its owner can enter), so another OS user of
//! the machine cannot connect. A cluster made by an earlier version (trust) is given a password and
//! scram-sha-256 the next time it starts. [`PrivateCluster::url`] carries the password.

use crate::error::{Result, StoreError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const DEFAULT_PORT: u16 = 54329;
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECONDS: &str = "60";
/// The superuser's password, in the data directory.
const PASSWORD_FILE: &str = "escrow-ledger.password";
/// Random bytes in a generated password (written as hex).
const PASSWORD_BYTES: usize = 24;

/// Whether the cluster's server is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterStatus {
    NotInitialized,
    Stopped,
    Running { port: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateCluster {
    pub data_dir: PathBuf,
    pub port: u16,
}

fn cluster_error(reason: impl Into<String>) -> StoreError {
    StoreError::Cluster {
        reason: reason.into(),
    }
}

pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn server_bin_dir() -> Result<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| d.join("pg_ctl").is_file()) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        cluster_error(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package \
             `postgresql`",
        )
    })
}

impl PrivateCluster {
    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            data_dir: data_dir.into(),
            port,
        }
    }

    /// The CLI's cluster: default data directory and port (see the module docs).
    pub fn with_defaults() -> Self {
        let port = std::env::var("ESCROW_LEDGER_PG_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PORT);
        Self::new(Self::default_data_dir(), port)
    }

    pub fn default_data_dir() -> PathBuf {
        if let Some(home) = std::env::var_os("ESCROW_LEDGER_HOME") {
            return PathBuf::from(home).join("pg");
        }
        if running_as_root() {
            return PathBuf::from("/var/lib/escrow-ledger/pg");
        }
        let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        home.join(".local/share/escrow-ledger/pg")
    }

    /// Connection URL of the `postgres` database as user `postgres`, with the cluster's password (none for
    /// a cluster that has no password file yet).
    pub fn url(&self) -> String {
        match self.password() {
            Some(password) => format!(
                "postgres://postgres:{password}@127.0.0.1:{}/postgres",
                self.port
            ),
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    fn password_path(&self) -> PathBuf {
        self.data_dir.join(PASSWORD_FILE)
    }

    /// The generated password (hex, so it needs no escaping in a URL).
    fn password(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.password_path()).ok()?;
        let password = text.trim();
        (!password.is_empty() && password.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| password.to_string())
    }

    /// Runs a server binary, as the `postgres` OS user when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
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

    fn data_dir_str(&self) -> Result<&str> {
        self.data_dir
            .to_str()
            .ok_or_else(|| cluster_error("the data directory path is not UTF-8"))
    }

    pub fn status(&self) -> Result<ClusterStatus> {
        if !self.data_dir.join("PG_VERSION").is_file() {
            return Ok(ClusterStatus::NotInitialized);
        }
        let output = self.run("pg_ctl", &["status", "-D", self.data_dir_str()?])?;
        if !output.status.success() {
            return Ok(ClusterStatus::Stopped);
        }
        let port = postmaster_port(&self.data_dir).unwrap_or(self.port);
        Ok(ClusterStatus::Running { port })
    }

    /// Initializes the data directory when needed and starts the server (no-op when running).
    pub fn start(&self) -> Result<()> {
        match self.status()? {
            ClusterStatus::Running { .. } => return Ok(()),
            ClusterStatus::NotInitialized => self.init()?,
            ClusterStatus::Stopped => {}
        }
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            self.port
        );
        let log = self.data_dir.join("server.log");
        let log = log
            .to_str()
            .ok_or_else(|| cluster_error("log path is not UTF-8"))?;
        let args = [
            "start",
            "-w",
            "-t",
            PG_CTL_WAIT_SECONDS,
            "-D",
            self.data_dir_str()?,
            "-l",
            log,
        ];
        let mut args = args.to_vec();
        args.extend(["-o", options.as_str()]);
        check(self.run("pg_ctl", &args)?, "pg_ctl start")?;
        if self.password().is_none() {
            self.require_password()?;
        }
        Ok(())
    }

    /// Gives a cluster initialized with trust authentication (an earlier version) a generated password and
    /// scram-sha-256 for every connection, then reloads its configuration.
    fn require_password(&self) -> Result<()> {
        let password = generate_password();
        let sql_file = self.data_dir.join("escrow-ledger.set-password.sql");
        write_private(
            &sql_file,
            &format!("alter role postgres password '{password}';\n"),
        )?;
        let port = self.port.to_string();
        let sql_path = path_str(&sql_file)?;
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
            "-f",
            sql_path,
        ];
        let altered = self.run("psql", &args);
        let _ = std::fs::remove_file(&sql_file);
        check(altered?, "psql alter role")?;
        let hba = self.data_dir.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)
            .map_err(|e| cluster_error(format!("cannot read {}: {e}", hba.display())))?;
        let scram: String = text
            .lines()
            .map(|line| match line.trim_end().strip_suffix("trust") {
                Some(rest) if !line.trim_start().starts_with('#') => {
                    format!("{rest}scram-sha-256\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&hba, scram)
            .map_err(|e| cluster_error(format!("cannot write {}: {e}", hba.display())))?;
        write_private(&self.password_path(), &password)?;
        check(
            self.run("pg_ctl", &["reload", "-D", self.data_dir_str()?])?,
            "pg_ctl reload",
        )
    }

    pub fn stop(&self) -> Result<()> {
        if !matches!(self.status()?, ClusterStatus::Running { .. }) {
            return Ok(());
        }
        let args = ["stop", "-w", "-t", PG_CTL_WAIT_SECONDS, "-m", "fast", "-D"];
        let mut args = args.to_vec();
        args.push(self.data_dir_str()?);
        check(self.run("pg_ctl", &args)?, "pg_ctl stop")
    }

    fn init(&self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            cluster_error(format!("cannot create {}: {e}", self.data_dir.display()))
        })?;
        if running_as_root() {
            let output = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.data_dir)
                .output()
                .map_err(|e| cluster_error(format!("cannot run chown: {e}")))?;
            check(output, "chown postgres")?;
        }
        // initdb wants an empty directory: the password goes to a file beside it, then into it.
        let password = generate_password();
        let pwfile = self.data_dir.with_extension("pwfile");
        write_private(&pwfile, &password)?;
        let pwfile_arg = format!("--pwfile={}", path_str(&pwfile)?);
        let args = [
            "-D",
            self.data_dir_str()?,
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            pwfile_arg.as_str(),
            "-E",
            "UTF8",
        ];
        let initialized = self.run("initdb", &args);
        let _ = std::fs::remove_file(&pwfile);
        check(initialized?, "initdb")?;
        write_private(&self.password_path(), &password)
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| cluster_error(format!("{} is not UTF-8", path.display())))
}

fn generate_password() -> String {
    let bytes: [u8; PASSWORD_BYTES] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file only its owner can read (0600); as root, owned by the `postgres` OS user, who runs the
/// server binaries that read it.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| cluster_error(format!("cannot write {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    if running_as_root() {
        let output = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .map_err(|e| cluster_error(format!("cannot run chown: {e}")))?;
        check(output, "chown postgres")?;
    }
    Ok(())
}

pub(crate) fn check(output: Output, what: &str) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    Err(cluster_error(format!(
        "{what} failed: {} {}",
        stderr.trim(),
        stdout.trim()
    )))
}

/// The port a running server wrote to `postmaster.pid` (its fourth line).
pub fn postmaster_port(data_dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}
