//! What the demo shows while it runs: the rollout's status from the engine's API, what each
//! upstream saw (from their request logs), and one line per decision as the engine logs it.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use serde_json::Value;

/// Counts the lines of a demo upstream's request log as it grows: requests and 5xx answers.
pub struct LogCounter {
    path: PathBuf,
    offset: u64,
    /// Requests seen.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
}

impl LogCounter {
    /// A counter for the log at `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> LogCounter {
        LogCounter {
            path,
            offset: 0,
            requests: 0,
            errors: 0,
        }
    }

    /// Reads the complete lines added since the last call.
    pub fn update(&mut self) {
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while let Ok(n) = reader.read_line(&mut line) {
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                self.requests += 1;
                if entry["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with('5'))
                {
                    self.errors += 1;
                }
            }
            line.clear();
        }
    }

    /// The 5xx share in percent (0 with no requests).
    pub fn error_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            100.0 * self.errors as f64 / self.requests as f64
        }
    }
}

/// The rollout's phase name (`pending`, `shadowing`, `paused`, `promoted`, `rolled_back`).
pub fn phase(status: &Value) -> &str {
    status["rollout"]["phase"]["phase"].as_str().unwrap_or("?")
}

/// One line about the rollout: phase, step and where traffic goes.
pub fn describe(status: &Value) -> String {
    let steps = status["rollout"]["plan"].as_array().map_or(0, Vec::len);
    let traffic = &status["traffic"];
    let weight = traffic["route_weight"].as_f64().unwrap_or(0.0);
    let mode = traffic["filter_mode"].as_str().unwrap_or("off");
    let filter = traffic["filter_percent"].as_f64().unwrap_or(0.0);
    let step = match status["step"].as_u64() {
        Some(step) => format!(" step {step}/{steps}"),
        None => String::new(),
    };
    format!(
        "{phase}{step}, route {weight:.0}% to shadow, filter {mode} {filter:.0}%",
        phase = phase(status)
    )
}

/// The decision-log entries after `seen` (by `seq`), oldest first, as printable lines.
pub fn new_decisions(status: &Value, seen: &mut u64) -> Vec<String> {
    let mut entries: Vec<&Value> = status["decisions"]
        .as_array()
        .map(|all| all.iter().collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e["seq"].as_u64().unwrap_or(0));
    let mut lines = Vec::new();
    for entry in entries {
        let seq = entry["seq"].as_u64().unwrap_or(0);
        if seq <= *seen {
            continue;
        }
        *seen = seq;
        let note = entry["note"].as_str().unwrap_or("");
        let after = entry["phase"].as_str().unwrap_or("?");
        let step = entry["step"]
            .as_u64()
            .map_or(String::new(), |s| format!(" step {s}"));
        lines.push(format!("decision #{seq}: {note} -> {after}{step}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn demo_log_counter_reads_only_complete_new_lines() {
        let dir = std::env::temp_dir().join(format!("doppel-demo-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("log.jsonl");
        std::fs::write(
            &path,
            "{\"outcome\":\"200\"}\n{\"outcome\":\"500\"}\n{\"outc",
        )
        .expect("log");
        let mut counter = LogCounter::new(path.clone());
        counter.update();
        assert_eq!((counter.requests, counter.errors), (2, 1));
        let mut text = std::fs::read_to_string(&path).expect("read");
        text += "ome\":\"503\"}\n{\"outcome\":\"200\"}\n";
        std::fs::write(&path, text).expect("log");
        counter.update();
        assert_eq!((counter.requests, counter.errors), (4, 2));
        assert!((counter.error_percent() - 50.0).abs() < 1e-9);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn demo_decisions_are_printed_once_in_order() {
        let status = json!({ "decisions": [
            { "seq": 3, "note": "rule shadow-errors-worse fired", "phase": "rolled_back", "step": null },
            { "seq": 2, "note": "step 2", "phase": "shadowing", "step": 2 },
        ]});
        let mut seen = 1;
        let lines = new_decisions(&status, &mut seen);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("decision #2: step 2 -> shadowing step 2"),
            "{lines:?}"
        );
        assert!(lines[1].contains("rolled_back"), "{lines:?}");
        assert!(new_decisions(&status, &mut seen).is_empty());
    }
}
