//! The binary's contract with the demo and the end-to-end tests, which start it as a process:
//! the bound address is the first line of stdout, answers carry the label, every request lands in
//! the log, bad flags are refused by name, and SIGTERM stops it cleanly.
//!
//! (Being an integration test also makes `cargo test` build the binary, which scripts/test then
//! hands to the end-to-end tests as `DOPPEL_UPSTREAM_BIN`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use doppel_demo_upstream::reqlog::read_log;

/// The running binary, killed if a test fails before stopping it.
struct Upstream {
    child: Child,
    addr: String,
}

impl Upstream {
    fn start(args: &[&str]) -> Upstream {
        let mut child = Command::new(env!("CARGO_BIN_EXE_doppel-demo-upstream"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting doppel-demo-upstream");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the bound address");
        let addr = line.trim().to_string();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "first line is not the bound address: {line:?}"
        );
        Upstream { child, addr }
    }

    /// One HTTP/1.1 request; the status and the whole answer.
    fn get(&self, path: &str, header: (&str, &str)) -> (u16, String) {
        let mut conn = TcpStream::connect(&self.addr).expect("connecting");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nhost: demo\r\n{}: {}\r\nconnection: close\r\n\r\n",
            header.0, header.1
        )
        .expect("sending");
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .expect("reading the answer");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        (status, answer)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn it_answers_with_its_label_logs_each_request_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("requests.jsonl");
    let mut upstream = Upstream::start(&[
        "--label",
        "v2",
        "--error-rate",
        "1",
        "--log",
        log.to_str().expect("utf-8 path"),
    ]);
    let (status, answer) = upstream.get("/cart?x=1", ("x-doppel-id", "abc"));
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-upstream-version: v2"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\n500 Internal Server Error answered by v2\n"),
        "{answer}"
    );

    let entries = read_log(&log).expect("reading the log");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].path, "/cart?x=1");
    assert_eq!(entries[0].label, "v2");
    assert_eq!(entries[0].outcome, "500");
    assert_eq!(entries[0].header("x-doppel-id"), Some("abc"));

    let pid = upstream.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = upstream.child.wait().expect("waiting for the upstream");
    assert!(status.success(), "SIGTERM should stop it cleanly: {status}");
}

#[test]
fn a_flag_out_of_range_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_doppel-demo-upstream"))
        .args(["--error-rate", "1.5"])
        .output()
        .expect("running doppel-demo-upstream");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error_rate: 1.5 is outside [0, 1]"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing bound, nothing printed");
}
