//! Prometheus text exposition, by hand: a few counters and one latency histogram, all atomics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];
/// Routes measured separately.
pub const ROUTES: [&str; 5] = ["callbacks", "commands", "outbox", "health", "other"];
const CLASSES: [&str; 4] = ["2xx", "4xx", "5xx", "other"];
pub const DISPOSITIONS: [&str; 6] = [
    "applied",
    "duplicate",
    "suspense",
    "anomaly",
    "ignored",
    "rejected",
];

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; 4]; 5],
    latency_buckets: [[AtomicU64; 12]; 5],
    latency_count: [AtomicU64; 5],
    latency_sum_us: [AtomicU64; 5],
    dispositions: [AtomicU64; 6],
    in_flight: AtomicU64,
}

impl Metrics {
    pub fn route_index(path: &str) -> usize {
        if path.contains("/callbacks/") {
            0
        } else if path.ends_with("/commands") {
            1
        } else if path.contains("/outbox") {
            2
        } else if path == "/healthz" || path == "/metrics" {
            3
        } else {
            4
        }
    }

    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self, route: usize, status: u16, micros: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let class = match status {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        };
        self.requests[route][class].fetch_add(1, Ordering::Relaxed);
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            if micros <= *bound {
                self.latency_buckets[route][i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count[route].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us[route].fetch_add(micros, Ordering::Relaxed);
    }

    pub fn disposition(&self, name: &str) {
        if let Some(i) = DISPOSITIONS.iter().position(|d| *d == name) {
            self.dispositions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# TYPE escrow_http_requests_total counter\n");
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "escrow_http_requests_total{{route=\"{route}\",status=\"{class}\"}} {}",
                    get(&self.requests[r][c])
                );
            }
        }
        out.push_str("# TYPE escrow_http_request_duration_seconds histogram\n");
        for (r, route) in ROUTES.iter().enumerate() {
            for (i, bound) in BUCKETS_US.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "escrow_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{}.{:06}\"}} {}",
                    bound / 1_000_000,
                    bound % 1_000_000,
                    get(&self.latency_buckets[r][i])
                );
            }
            let count = get(&self.latency_count[r]);
            let sum = get(&self.latency_sum_us[r]);
            let _ = writeln!(
                out,
                "escrow_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "escrow_http_request_duration_seconds_sum{{route=\"{route}\"}} {}.{:06}",
                sum / 1_000_000,
                sum % 1_000_000
            );
            let _ = writeln!(
                out,
                "escrow_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        out.push_str("# TYPE escrow_callbacks_total counter\n");
        for (i, d) in DISPOSITIONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "escrow_callbacks_total{{disposition=\"{d}\"}} {}",
                get(&self.dispositions[i])
            );
        }
        out.push_str("# TYPE escrow_http_in_flight gauge\n");
        let _ = writeln!(out, "escrow_http_in_flight {}", get(&self.in_flight));
        out
    }
}
