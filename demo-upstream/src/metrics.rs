//! The upstream's own counters and its `/metrics` page in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what the upstream did.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    resets: AtomicU64,
    hangs: AtomicU64,
}

impl Counters {
    /// Records one request's outcome label (a status, `reset` or `hang`).
    pub fn record(&self, outcome: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            "reset" => &self.resets,
            "hang" => &self.hangs,
            status if status.starts_with('5') => &self.errors,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the counters and the process gauges for the upstream labelled `label`.
    pub fn render(&self, label: &str) -> String {
        let label = label.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        let counters = [
            (
                "doppel_demo_requests_total",
                "Requests received.",
                &self.requests,
            ),
            (
                "doppel_demo_errors_total",
                "Requests answered with a 5xx status.",
                &self.errors,
            ),
            (
                "doppel_demo_resets_total",
                "Requests answered by resetting the connection.",
                &self.resets,
            ),
            (
                "doppel_demo_hangs_total",
                "Requests held in hang mode.",
                &self.hangs,
            ),
        ];
        for (name, help, value) in counters {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{version=\"{label}\"}} {value}");
        }
        if let Some(cpu) = process_cpu_seconds() {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time spent.\n\
                 # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
            );
        }
        if let Some(rss) = process_resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        out
    }
}

/// User plus system CPU time of this process, from `/proc/self/stat` (Linux only). The clock
/// tick is taken as 100 Hz, the value of `USER_HZ` on every mainstream Linux build.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident set size of this process, from `VmRSS` in `/proc/self/status` (Linux only).
fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outcomes_and_renders_them() {
        let c = Counters::default();
        for outcome in ["200", "500", "503", "reset", "hang", "200"] {
            c.record(outcome);
        }
        let text = c.render("v2");
        assert!(text.contains("doppel_demo_requests_total{version=\"v2\"} 6\n"));
        assert!(text.contains("doppel_demo_errors_total{version=\"v2\"} 2\n"));
        assert!(text.contains("doppel_demo_resets_total{version=\"v2\"} 1\n"));
        assert!(text.contains("doppel_demo_hangs_total{version=\"v2\"} 1\n"));
        if cfg!(target_os = "linux") {
            assert!(text.contains("process_resident_memory_bytes "));
            assert!(text.contains("process_cpu_seconds_total "));
        }
    }
}
