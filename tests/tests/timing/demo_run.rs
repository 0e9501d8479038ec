//! `doppel demo` as a user runs it: the real binary starts two demo upstreams, `doppel serve`
//! and Envoy with the filter, drives traffic, and the engine decides. It must reach the
//! scenario's verdict in under two minutes and leave no process behind, also when it is
//! interrupted with Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use doppel_tests::procs::{RunDir, demo_upstream_bin, envoy_bin, filter_wasm};
use doppel_tests::rollout_support::doppel_bin;

/// Kills the demo if the test fails before it exits.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Demo {
    fn start(dir: &Path, args: &[&str]) -> Demo {
        let mut child = Command::new(doppel_bin())
            .arg("demo")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .arg("--envoy")
            .arg(envoy_bin())
            .arg("--wasm")
            .arg(filter_wasm())
            .arg("--upstream")
            .arg(demo_upstream_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting doppel demo");
        let (send, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Demo {
            child,
            lines,
            output: Vec::new(),
        }
    }

    /// Collects output until a line contains `text`; panics after `timeout` or at exit.
    fn wait_for_line(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(text);
                self.output.push(line);
                if found {
                    return;
                }
            }
        }
        panic!(
            "no line with `{text}` within {timeout:?}:\n{}",
            self.output.join("\n")
        );
    }

    /// Waits for the exit (collecting all output); panics after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.output.push(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader threads end with the pipes; take what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.output.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "doppel demo still running after {timeout:?}:\n{}",
                self.output.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self) -> String {
        self.output.join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose command line mentions `dir` (every process the demo starts does).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

#[test]
fn demo_errors_scenario_rolls_back_in_under_two_minutes_and_leaves_nothing_behind() {
    let dir = RunDir::new("demo-errors").expect("run dir");
    let started = Instant::now();
    let mut demo = Demo::start(
        dir.path(),
        &["--scenario", "errors", "--healthy-seconds", "15"],
    );
    // The demo itself (without its `--dir`) must not be counted below: it has exited by then.
    let status = demo.wait_exit(Duration::from_secs(150));
    let took = started.elapsed();
    let text = demo.text();
    assert!(status.success(), "doppel demo failed ({status}):\n{text}");
    assert!(took < Duration::from_secs(120), "took {took:?}:\n{text}");
    assert!(text.contains("shadow now answers 20%"), "{text}");
    assert!(text.contains("verdict: rolled_back"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("decision") && l.contains("shadow-errors-worse")),
        "the rule that fired is named:\n{text}"
    );
    // Envoy's gRPC access log reached the engine: the decision names tagged shadow requests.
    assert!(
        text.lines().any(|l| l.contains("shadow-errors-worse")
            && l.contains("sample shadow requests (doppel id): ")),
        "the decision names sample requests by doppel id:\n{text}"
    );
    assert!(
        text.contains("answered by the primary (0 5xx)") && text.contains(", 0 unanswered"),
        "no client request answered by the primary failed:\n{text}"
    );
    assert_eq!(processes_using(dir.path()), Vec::<String>::new(), "{text}");
}

#[test]
fn demo_ctrl_c_stops_every_process_it_started() {
    let dir = RunDir::new("demo-interrupt").expect("run dir");
    let mut demo = Demo::start(dir.path(), &["--scenario", "promote"]);
    demo.wait_for_line("rollout of checkout v2 started", Duration::from_secs(90));
    let running = processes_using(dir.path());
    assert!(
        running.len() >= 5,
        "demo, two upstreams, engine and Envoy: {running:?}"
    );
    let sent = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = demo.wait_exit(Duration::from_secs(15));
    assert!(
        !status.success(),
        "an interrupted demo reports it: {status}"
    );
    assert!(demo.text().contains("interrupted"), "{}", demo.text());
    assert_eq!(
        processes_using(dir.path()),
        Vec::<String>::new(),
        "{}",
        demo.text()
    );
}
