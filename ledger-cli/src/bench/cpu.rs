//! CPU time over a timed part of a benchmark, from `/proc`: the machine's busy time (`/proc/stat`, every
//! core), PostgreSQL's (every process named `postgres`) and this process's own. Throughput on a shared,
//! noisy 2-core machine drifts from run to run; CPU per operation drifts much less, so the benches print both.
//! Linux only: elsewhere every figure is absent (`None`), never made up.

use std::fs;

/// Kernel clock ticks per second (`getconf CLK_TCK`): 100 on every Linux architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one moment, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    machine_busy: u64,
    postgres: u64,
    this_process: u64,
}

/// CPU used between two samples, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct CpuUsed {
    pub machine_s: f64,
    pub postgres_s: f64,
    pub bench_s: f64,
    /// The part of `bench_s` spent by the load generator's thread (the senders), where measured.
    pub client_s: Option<f64>,
}

impl CpuSample {
    pub fn now() -> Option<CpuSample> {
        Some(CpuSample {
            machine_busy: machine_busy_ticks()?,
            postgres: postgres_ticks(),
            this_process: process_ticks("self")?,
        })
    }

    /// CPU used since `self` (counters only grow; a postgres process that ended in between loses its part,
    /// which the pooled, long-lived backends of a bench do not).
    pub fn until(&self, later: &CpuSample) -> CpuUsed {
        let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SECOND;
        CpuUsed {
            machine_s: seconds(self.machine_busy, later.machine_busy),
            postgres_s: seconds(self.postgres, later.postgres),
            bench_s: seconds(self.this_process, later.this_process),
            client_s: None,
        }
    }
}

impl CpuUsed {
    /// The same figures with the load generator's own CPU (seconds) named.
    pub fn with_client(self, client_s: Option<f64>) -> CpuUsed {
        CpuUsed { client_s, ..self }
    }

    /// The share of the machine's busy time spent by the load generator, 0..=1, where measured.
    pub fn client_share(&self) -> Option<f64> {
        let client = self.client_s?;
        Some(if self.machine_s > 0.0 {
            (client / self.machine_s).min(1.0)
        } else {
            0.0
        })
    }

    /// Machine CPU milliseconds per operation.
    pub fn ms_per(&self, operations: u64) -> f64 {
        self.machine_s * 1000.0 / operations.max(1) as f64
    }

    /// The share of the machine's busy time spent in PostgreSQL, 0..=1.
    pub fn postgres_share(&self) -> f64 {
        if self.machine_s > 0.0 {
            (self.postgres_s / self.machine_s).min(1.0)
        } else {
            0.0
        }
    }

    /// The share spent in this process (the benchmark's client and server), 0..=1.
    pub fn bench_share(&self) -> f64 {
        if self.machine_s > 0.0 {
            (self.bench_s / self.machine_s).min(1.0)
        } else {
            0.0
        }
    }

    /// The JSON fields every bench prints (names say `cpu`, which the checks look for).
    pub fn json(&self, operations: u64, per: &str) -> serde_json::Value {
        let mut figures = serde_json::json!({
            format!("cpu_ms_per_{per}"): self.ms_per(operations),
            "cpu_machine_s": self.machine_s,
            "cpu_postgres_share": self.postgres_share(),
            "cpu_bench_process_share": self.bench_share(),
        });
        if let (Some(client_s), Some(share)) = (self.client_s, self.client_share()) {
            let served = CpuUsed {
                machine_s: (self.machine_s - client_s).max(0.0),
                ..*self
            }
            .ms_per(operations);
            merge(
                &mut figures,
                serde_json::json!({
                    "cpu_client_share": share,
                    format!("cpu_ms_per_{per}_less_client"): served,
                }),
            );
        }
        figures
    }

    /// One line for people.
    pub fn line(&self, operations: u64, per: &str) -> String {
        let client = match self.client_share() {
            Some(share) => format!(", {:.0}% of it the load generator's senders", share * 100.0),
            None => String::new(),
        };
        format!(
            "CPU: {:.3} ms of machine CPU per {per} ({:.1} s busy over all cores; {:.0}% in PostgreSQL, {:.0}% in this process{client})",
            self.ms_per(operations),
            self.machine_s,
            self.postgres_share() * 100.0,
            self.bench_share() * 100.0
        )
    }
}

/// Merges `extra` (an object) into `report` (an object).
pub fn merge(report: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(report), serde_json::Value::Object(extra)) = (report.as_object_mut(), extra) {
        report.extend(extra);
    }
}

/// user + nice + system + irq + softirq + steal of the `cpu` line (all cores).
fn machine_busy_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal: idle (3) and iowait (4) are not busy.
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// utime + stime of one process (`/proc/<pid>/stat`, fields 14 and 15; the name may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis).
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds the calling thread has used (`/proc/thread-self/stat`), `None` off Linux.
pub fn this_thread_seconds() -> Option<f64> {
    process_ticks("thread-self").map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// Sum over every process whose command name is `postgres` (the postmaster, backends, background workers).
fn postgres_ticks() -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| process_ticks(&pid))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_up_in_this_process_and_the_machine() {
        let Some(before) = CpuSample::now() else {
            return; // not Linux
        };
        let started = std::time::Instant::now();
        let mut x = 0_u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = before.until(&CpuSample::now().expect("sampled before"));
        assert!(used.bench_s >= 0.2, "{used:?}");
        assert!(used.machine_s >= used.bench_s * 0.9, "{used:?}");
        assert!(
            used.ms_per(10) > 0.0 && used.bench_share() > 0.5,
            "{used:?}"
        );
    }

    #[test]
    fn a_threads_own_cpu_is_told_apart_from_the_process() {
        let Some(before) = this_thread_seconds() else {
            return; // not Linux
        };
        let busy = std::thread::spawn(|| {
            let own = this_thread_seconds().expect("sampled in the main thread");
            let started = std::time::Instant::now();
            let mut x = 0_u64;
            while started.elapsed() < std::time::Duration::from_millis(300) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            this_thread_seconds().expect("sampled before") - own
        })
        .join()
        .expect("the busy thread");
        let idle = this_thread_seconds().expect("sampled before") - before;
        assert!(busy >= 0.2, "the busy thread used {busy} s");
        assert!(idle < 0.1, "the waiting thread used {idle} s");
        let used = CpuUsed {
            machine_s: 2.0,
            postgres_s: 1.0,
            bench_s: 1.0,
            client_s: None,
        }
        .with_client(Some(0.5));
        assert_eq!(used.client_share(), Some(0.25));
        let json = used.json(1000, "callback");
        assert_eq!(json["cpu_client_share"], 0.25);
        assert_eq!(json["cpu_ms_per_callback_less_client"], 1.5);
        assert!(
            used.line(1000, "callback")
                .contains("25% of it the load generator")
        );
    }
}
