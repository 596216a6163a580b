//! Counters and gauges the server keeps, and their Prometheus text rendering.
//!
//! Plain atomics updated by the request handlers, the writer and the spool monitor;
//! this module only stores and renders them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Lowest and highest status code counted one by one.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

/// Everything `/metrics` and `/status` report.
pub struct Metrics {
    by_status: Vec<AtomicU64>,
    /// Request body bytes received on the submission path.
    pub bytes_in: AtomicU64,
    /// Records appended.
    pub records_written: AtomicU64,
    /// Files handed over to `ready/`.
    pub files_rotated: AtomicU64,
    /// Batches that could not be appended.
    pub write_errors: AtomicU64,
    /// Whether the last append failed.
    pub write_failing: AtomicBool,
    /// The last append error, for `/status`.
    pub last_write_error: Mutex<String>,
    /// Files in `ready/` and `claimed/` (scanned, plus hand-overs since the scan).
    pub backlog_files: AtomicU64,
    /// Their bytes.
    pub backlog_bytes: AtomicU64,
    /// Files rotated but not yet renamed into `ready/` (counted in the backlog, since
    /// a scan cannot see them).
    pub in_transit_files: AtomicU64,
    /// Their bytes.
    pub in_transit_bytes: AtomicU64,
    /// Age of the oldest file in `ready/`, seconds.
    pub oldest_ready_secs: AtomicU64,
    /// Free bytes on the spool's file system.
    pub free_bytes: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_status: (STATUS_MIN..=STATUS_MAX)
                .map(|_| AtomicU64::new(0))
                .collect(),
            bytes_in: AtomicU64::new(0),
            records_written: AtomicU64::new(0),
            files_rotated: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            write_failing: AtomicBool::new(false),
            last_write_error: Mutex::new(String::new()),
            backlog_files: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            in_transit_files: AtomicU64::new(0),
            in_transit_bytes: AtomicU64::new(0),
            oldest_ready_secs: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
            connections: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn count_status(&self, status: u16) {
        if (STATUS_MIN..=STATUS_MAX).contains(&status) {
            self.by_status[usize::from(status - STATUS_MIN)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        out.push_str(
            "# HELP ingest_requests_total Requests answered by the server, by HTTP status.\n",
        );
        out.push_str("# TYPE ingest_requests_total counter\n");
        for (i, c) in self.by_status.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "ingest_requests_total{{status=\"{}\"}} {n}",
                    STATUS_MIN + i as u16
                );
            }
        }
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "ingest_received_bytes_total",
            "counter",
            "Submission body bytes received.",
            g(&self.bytes_in),
        );
        one(
            "ingest_records_written_total",
            "counter",
            "Records appended to raw logs.",
            g(&self.records_written),
        );
        one(
            "ingest_files_rotated_total",
            "counter",
            "Raw logs handed over to the spool's ready/ folder.",
            g(&self.files_rotated),
        );
        one(
            "ingest_write_errors_total",
            "counter",
            "Appends that failed and were cut off again.",
            g(&self.write_errors),
        );
        one(
            "ingest_spool_backlog_files",
            "gauge",
            "Raw logs in ready/ and claimed/.",
            g(&self.backlog_files),
        );
        one(
            "ingest_spool_backlog_bytes",
            "gauge",
            "Bytes of raw logs in ready/ and claimed/.",
            g(&self.backlog_bytes),
        );
        one(
            "ingest_spool_oldest_unclaimed_age_seconds",
            "gauge",
            "Age of the oldest raw log in ready/ (0 when none).",
            g(&self.oldest_ready_secs),
        );
        one(
            "ingest_spool_free_bytes",
            "gauge",
            "Free bytes on the spool's file system.",
            g(&self.free_bytes),
        );
        one(
            "ingest_connections_open",
            "gauge",
            "Client connections open.",
            g(&self.connections),
        );
        out
    }
}
