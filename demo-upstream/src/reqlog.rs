//! The request log: one JSON line per request the upstream received, written before it answers,
//! so a test can prove which requests reached which variant and with which headers.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One received request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it arrived, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The version label of the upstream that received it.
    pub label: String,
    /// The request method.
    pub method: String,
    /// The request path with its query.
    pub path: String,
    /// `host` and every `x-*` header (lower-case names; values decoded lossily as UTF-8).
    pub headers: BTreeMap<String, String>,
    /// Length of the request body in bytes.
    pub body_bytes: u64,
    /// What the upstream did: the status it answered, `reset` or `hang`.
    pub outcome: String,
}

impl LogEntry {
    /// The value of header `name` (lower-case), if the request carried it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Whether a header belongs in the log.
pub fn is_logged_header(name: &str) -> bool {
    name == "host" || name.starts_with("x-")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An append-only JSON-lines file; each entry is one `write` call. A reader may still see the
/// last line half-written (a write is not atomic to a concurrent read): `read_log` leaves a line
/// without its newline for the next read.
#[derive(Debug)]
pub struct RequestLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl RequestLog {
    /// Opens (creating or appending to) the log at `path`.
    pub fn open(path: &Path) -> io::Result<RequestLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry.
    pub fn append(&self, entry: &LogEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("request log lock poisoned"))?;
        file.write_all(&line)
    }
}

/// Reads every complete entry of the log at `path`; a missing file is an empty log. A last line
/// without its newline is an entry still being written: it is left for the next read, not an
/// error.
pub fn read_log(path: &Path) -> io::Result<Vec<LogEntry>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => &[],
    };
    let mut entries = Vec::new();
    for (n, line) in complete.split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let entry = serde_json::from_slice(line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), n + 1),
            )
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("requests.jsonl");
        let log = RequestLog::open(&path).expect("open");
        let mut headers = BTreeMap::new();
        headers.insert("x-doppel-id".to_string(), "ab".repeat(16));
        let entry = LogEntry {
            ts_ms: now_ms(),
            label: "v2".into(),
            method: "GET".into(),
            path: "/a?b=1".into(),
            headers,
            body_bytes: 0,
            outcome: "200".into(),
        };
        log.append(&entry).expect("append");
        log.append(&entry).expect("append");
        let read = read_log(&path).expect("read");
        assert_eq!(read, vec![entry.clone(), entry]);
        assert_eq!(read[0].header("x-doppel-id").map(str::len), Some(32));
        assert!(
            read_log(&dir.path().join("missing"))
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn a_half_written_last_line_waits_for_its_newline_and_a_broken_line_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("requests.jsonl");
        let entry = LogEntry {
            ts_ms: 1,
            label: "v1".into(),
            method: "GET".into(),
            path: "/é".into(),
            headers: BTreeMap::new(),
            body_bytes: 0,
            outcome: "200".into(),
        };
        let line = serde_json::to_vec(&entry).expect("encode");
        // A write cut inside the two bytes of "é": not even valid UTF-8 yet.
        let cut = line.iter().position(|&b| b == 0xc3).expect("é in the line") + 1;
        let mut file = line.clone();
        file.push(b'\n');
        file.extend_from_slice(&line[..cut]);
        std::fs::write(&path, &file).expect("write");
        assert_eq!(read_log(&path).expect("read"), vec![entry.clone()]);

        file.extend_from_slice(&line[cut..]);
        file.push(b'\n');
        std::fs::write(&path, &file).expect("write");
        assert_eq!(read_log(&path).expect("read"), vec![entry.clone(), entry]);

        // A finished line that is not an entry is still an error, naming the line.
        file.extend_from_slice(b"{\"ts_ms\": 1}\n");
        std::fs::write(&path, &file).expect("write");
        let err = read_log(&path).expect_err("a broken line");
        assert!(err.to_string().contains("requests.jsonl:3:"), "{err}");
    }
}
