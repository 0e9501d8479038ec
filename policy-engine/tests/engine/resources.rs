//! Resource metrics from a real Prometheus (Debian's `prometheus`, installed by
//! `scripts/setup prometheus`) that the test starts on 127.0.0.1, scraping two small exporters
//! the test also starts: one plays the primary, one the shadow, with different numbers.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use doppel_engine::analysis::{Analyzer, End, Outcome};
use doppel_engine::context::LookInputs;
use doppel_engine::metrics::ServiceWindow;
use doppel_engine::policy::Action;
use doppel_engine::resources::{
    NoData, PrometheusSource, ResourceSample, ResourcesConfig, VariantResources,
};
use serde_json::json;
use tokio::task::JoinHandle;

/// The Prometheus binary: `$DOPPEL_PROMETHEUS_BIN`, else Debian's.
fn prometheus_bin() -> PathBuf {
    let path = std::env::var_os("DOPPEL_PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        path.is_file(),
        "Prometheus not found at {}: install Debian's package with `scripts/setup prometheus` \
         (scripts/test does) or point DOPPEL_PROMETHEUS_BIN at a binary",
        path.display()
    );
    path
}

/// What one exporter reports.
#[derive(Clone, Copy)]
struct Exporter {
    /// CPU seconds used per second of wall time: the slope of `process_cpu_seconds_total`.
    cpu_cores: f64,
    memory_bytes: f64,
    saturation: f64,
}

/// A `/metrics` endpoint on 127.0.0.1:0 in the Prometheus text format; stopped on drop.
struct ExporterServer {
    addr: String,
    task: JoinHandle<()>,
}

impl Drop for ExporterServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_exporter(exporter: Exporter) -> ExporterServer {
    let started = Instant::now();
    let metrics = move || async move {
        let cpu = exporter.cpu_cores * started.elapsed().as_secs_f64();
        format!(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {cpu}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n\
             # HELP demo_saturation_ratio Share of worker slots busy.\n\
             # TYPE demo_saturation_ratio gauge\n\
             demo_saturation_ratio{{pool=\"a\"}} {}\n\
             demo_saturation_ratio{{pool=\"b\"}} {}\n",
            exporter.memory_bytes, exporter.saturation, exporter.saturation
        )
    };
    let app = Router::new().route("/metrics", get(metrics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an exporter");
    let addr = listener.local_addr().expect("local addr").to_string();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("exporter serves");
    });
    ExporterServer { addr, task }
}

/// A Prometheus process with its own config and storage in a temp dir; killed on drop.
struct Prometheus {
    url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `primary` and `shadow` every second, and waits until it is
    /// ready. The port is ephemeral (bind, read, release, hand over); if another process takes
    /// it in between, Prometheus exits and we try again with another.
    async fn start(primary: &str, shadow: &str) -> Self {
        let mut attempt = 1;
        loop {
            let mut prometheus = Self::spawn(primary, shadow);
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(why) if attempt < 3 => {
                    eprintln!("Prometheus did not start ({why}); trying another port");
                    attempt += 1;
                }
                Err(why) => panic!("Prometheus did not start: {why}"),
            }
        }
    }

    /// Writes a config into a new temp dir and starts the process on a free port.
    fn spawn(primary: &str, shadow: &str) -> Self {
        let bin = prometheus_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n\
                 \x20 - job_name: primary\n    static_configs: [{{targets: ['{primary}']}}]\n\
                 \x20 - job_name: shadow\n    static_configs: [{{targets: ['{shadow}']}}]\n"
            ),
        )
        .expect("write the config");
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        }
    }

    /// Waits for `/-/ready`; an error if the process exits first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready in 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// Samples until both variants satisfy `complete`, or panics after 30 s.
async fn sample_until(
    source: &PrometheusSource,
    complete: impl Fn(&VariantResources) -> bool,
) -> ResourceSample {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sample = source.sample().await;
        if complete(&sample.primary) && complete(&sample.shadow) {
            return sample;
        }
        assert!(
            Instant::now() < deadline,
            "no complete sample in 30 s: {sample:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected.abs()
}

/// Must show: the numbers per variant come from Prometheus, which scraped two exporters with
/// different values; missing data stays missing, never zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_variant_resources_come_from_a_real_prometheus() {
    let primary = start_exporter(Exporter {
        cpu_cores: 0.2,
        memory_bytes: 150e6,
        saturation: 0.2,
    })
    .await;
    let shadow = start_exporter(Exporter {
        cpu_cores: 0.9,
        memory_bytes: 420e6,
        saturation: 0.9,
    })
    .await;
    let prometheus = Prometheus::start(&primary.addr, &shadow.addr).await;

    let config: ResourcesConfig = serde_json::from_value(json!({
        "prometheus": prometheus.url,
        "window": "5s",
        "queries": {
            "saturation": "max(demo_saturation_ratio{ {{selector}} })",
            "saturation_per_pool": "demo_saturation_ratio{job=\"{{variant}}\"}",
            "gc_seconds": "sum(rate(go_gc_duration_seconds_sum{job=\"{{variant}}\"}[{{window}}]))",
            "broken": "sum(rate(process_cpu_seconds_total{job=\"{{variant}}\"}[5s]",
            "scrapes": "sum(count_over_time(process_cpu_seconds_total{ {{selector}} }[{{window}}]))",
        },
        "timeout_ms": 3000,
    }))
    .expect("valid resources config");
    let source = PrometheusSource::new(&config).expect("source builds");
    // rate() underestimates until its window holds several scrapes: wait for five.
    let sample = sample_until(&source, |r| {
        ["cpu", "memory", "saturation"]
            .iter()
            .all(|n| r.values.contains_key(*n))
            && r.values.get("scrapes").is_some_and(|&n| n >= 5.0)
    })
    .await;

    let (p, s) = (&sample.primary.values, &sample.shadow.values);
    assert_eq!(s["saturation"], 0.9, "{sample:#?}");
    assert_eq!(p["saturation"], 0.2, "{sample:#?}");
    assert_eq!(s["memory"], 420e6);
    assert_eq!(p["memory"], 150e6);
    // rate() over 1 s scrapes of a counter growing 0.2 and 0.9 per second.
    assert!(close(p["cpu"], 0.2, 0.1), "primary cpu {}", p["cpu"]);
    assert!(close(s["cpu"], 0.9, 0.1), "shadow cpu {}", s["cpu"]);

    // A policy rule over the CEL context decides from these numbers; missing ones are absent.
    let mut context = cel::Context::default();
    for (name, variant) in [("primary", &sample.primary), ("shadow", &sample.shadow)] {
        context
            .add_variable(name, json!({"resources": variant.values}))
            .expect("context variable");
    }
    let rule = |expr: &str| {
        cel::Program::compile(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .execute(&context)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    };
    assert_eq!(
        rule("shadow.resources.cpu > 3.0 * primary.resources.cpu"),
        true.into()
    );
    assert_eq!(rule("shadow.resources.cpu > 2.0"), false.into());
    assert_eq!(
        rule("has(shadow.resources.io)"),
        false.into(),
        "no data is not zero"
    );

    decide_through_the_analysis(&prometheus.url, &source).await;

    for variant in [&sample.primary, &sample.shadow] {
        // Not exported at all: no data, not zero.
        assert_eq!(variant.missing.get("gc_seconds"), Some(&NoData::Empty));
        assert!(!variant.values.contains_key("gc_seconds"));
        assert_eq!(variant.missing.get("io"), Some(&NoData::Empty));
        // Two series (one per pool): ambiguous, not summed behind the user's back.
        assert!(
            matches!(
                variant.missing.get("saturation_per_pool"),
                Some(NoData::Ambiguous { series: 2, .. })
            ),
            "{:?}",
            variant.missing
        );
        // A syntax error comes back as Prometheus' own message.
        match variant.missing.get("broken") {
            Some(NoData::QueryError { kind, message }) => {
                assert_eq!(kind, "bad_data");
                assert!(message.contains("parse error"), "{message}");
            }
            other => panic!("broken query gave {other:?}"),
        }
    }
}

/// Must show: a policy whose rule reads `shadow.resources.cpu` decides, through the analyzer
/// the engine runs, from numbers that came from Prometheus, with no user traffic at all.
async fn decide_through_the_analysis(url: &str, source: &PrometheusSource) {
    let text = format!(
        "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
         traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 100\n  alpha: 0.01\n\
         resources:\n  prometheus: {url}\n  window: 5s\n  timeout_ms: 3000\n\
         rules:\n\
         \x20 - name: shadow-burns-cpu\n    when: shadow.resources.cpu > 3.0 * primary.resources.cpu\n    action: rollback\n\
         \x20 - name: shadow-over-two-cores\n    when: shadow.resources.cpu > 2.0\n    action: pause\n\
         \x20 - name: shadow-io\n    when: shadow.resources.io > 0.0\n    action: pause\n"
    );
    let policy = doppel_engine::policy::parse(&text).expect("valid policy");
    let mut analyzer = Analyzer::new(policy).expect("analyzer");
    analyzer.sync(0, 1.0, 0, false);
    // The numbers the engine's loop hands the analyzer before a look.
    let sample = source.sample().await;
    let cpu = (sample.primary.values["cpu"], sample.shadow.values["cpu"]);
    analyzer.set_inputs(LookInputs {
        synthetic: None,
        resources: Some(sample),
    });
    // No user traffic: an empty window that reaches the first look.
    let window = ServiceWindow {
        service: "checkout".into(),
        start_ms: 0,
        end_ms: 1_000,
        ..ServiceWindow::default()
    };
    let evaluation = analyzer
        .push(&window)
        .expect("the look runs")
        .expect("one look per interval");
    assert!(
        matches!(&evaluation.outcome, Outcome::Inconclusive { holding, .. } if holding == &["shadow-burns-cpu"]),
        "too few requests for traffic rules, but the resource rules were evaluated: {:?}",
        evaluation.outcome
    );
    assert_eq!(evaluation.decisions.len(), 1, "{:?}", evaluation.decisions);
    let decision = &evaluation.decisions[0];
    assert_eq!(decision.rule, "shadow-burns-cpu");
    assert_eq!(decision.action, Action::Rollback);
    assert_eq!(decision.values["shadow.resources.cpu"], json!(cpu.1));
    assert_eq!(decision.values["primary.resources.cpu"], json!(cpu.0));
    assert!(close(cpu.1, 0.9, 0.1) && close(cpu.0, 0.2, 0.1), "{cpu:?}");
    // `io` has no series: the rule reading it did not hold, it did not fail the look.
    let record = evaluation
        .resources
        .expect("the look's record keeps the sample");
    assert_eq!(record.shadow.missing.get("io"), Some(&NoData::Empty));
    assert_eq!(analyzer.ended(), Some(End::RolledBack));
}

#[tokio::test]
async fn a_hanging_or_absent_prometheus_gives_no_data_in_bounded_time() {
    // Accepts connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hanging_url = format!("http://{}", hanging.local_addr().expect("addr"));
    let _accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let config: ResourcesConfig = serde_json::from_value(json!({
        "prometheus": hanging_url,
        "timeout_ms": 300,
        "queries": {"custom": "up{job=\"{{variant}}\"}"},
    }))
    .expect("valid");
    let source = PrometheusSource::new(&config).expect("source builds");
    let started = Instant::now();
    let sample = source.sample().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    for variant in [&sample.primary, &sample.shadow] {
        assert!(variant.values.is_empty());
        assert_eq!(variant.missing.len(), 4, "cpu, memory, io, custom");
        assert!(
            variant.missing.values().all(|r| *r == NoData::Timeout),
            "{variant:?}"
        );
    }

    // Nothing listening: unreachable, at once.
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = ResourcesConfig {
        prometheus: format!("http://127.0.0.1:{port}"),
        ..config
    };
    let sample = PrometheusSource::new(&config)
        .expect("source builds")
        .sample()
        .await;
    assert!(
        sample
            .shadow
            .missing
            .values()
            .all(|r| matches!(r, NoData::Unreachable(_))),
        "{:?}",
        sample.shadow.missing
    );
}

#[test]
fn bad_resource_configs_are_refused_naming_the_field() {
    let refuse = |value: serde_json::Value| -> String {
        match serde_json::from_value::<ResourcesConfig>(value) {
            Err(e) => e.to_string(),
            Ok(config) => config.validate().expect_err("invalid").to_string(),
        }
    };
    let url = "http://127.0.0.1:9090";
    assert!(refuse(json!({"prometheus": url, "querys": {}})).contains("querys"));
    assert!(refuse(json!({"prometheus": "ftp://x"})).contains("ftp"));
    assert!(refuse(json!({"prometheus": url, "window": "5 minutes"})).contains("window"));
    let name = refuse(json!({"prometheus": url, "queries": {"cpu-total": "x"}}));
    assert!(name.contains("cpu-total"), "{name}");
    let placeholder =
        refuse(json!({"prometheus": url, "queries": {"q": "up{job=\"{{service}}\"}"}}));
    assert!(
        placeholder.contains("{{service}}") && placeholder.contains("queries.q"),
        "{placeholder}"
    );
    let quote = refuse(json!({"prometheus": url, "variants": {"primary": "a\"b", "shadow": "s"}}));
    assert!(quote.contains("variants.primary"), "{quote}");
    assert!(refuse(json!({"prometheus": url, "defaults": false})).contains("no queries"));
}

/// The section embeds in a YAML policy as `resources:`.
#[test]
fn the_config_reads_from_a_yaml_policy_section() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Policy {
        resources: ResourcesConfig,
    }
    let yaml = r#"
resources:
  prometheus: http://prometheus.monitoring:9090
  variants: {primary: checkout-v1, shadow: checkout-v2}
  selector: 'namespace="shop", deployment="{{variant}}"'
  window: 2m
  queries:
    open_fds: 'sum(process_open_fds{ {{selector}} })'
  timeout_ms: 1500
"#;
    let policy: Policy = serde_saphyr::from_str(yaml).expect("valid YAML section");
    policy.resources.validate().expect("valid");
    let shadow = policy
        .resources
        .queries_for(doppel_filter::names::Variant::Shadow);
    assert_eq!(
        shadow["cpu"],
        r#"sum(rate(process_cpu_seconds_total{ namespace="shop", deployment="checkout-v2" }[2m]))"#
    );
    assert_eq!(
        shadow["open_fds"],
        r#"sum(process_open_fds{ namespace="shop", deployment="checkout-v2" })"#
    );
    assert_eq!(shadow.len(), 4);
}
