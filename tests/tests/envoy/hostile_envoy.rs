//! The real filter in the real Envoy under hostile input, sent as raw bytes: header values that
//! are not UTF-8, values near Envoy's size limit, more headers than Envoy allows, malformed
//! cookies, spoofed doppel control headers, a primary whose `Server-Timing` is garbage, and a
//! mirror shadow that answers garbage or never answers.
//!
//! Envoy's HTTP/1 codec refuses what is beyond its limits (100 headers, 60 KiB of headers) with
//! 431 before any filter runs; everything within them reaches the filter. After each barrage an
//! ordinary request still goes through the filter (it is chosen, tagged and counted): the Wasm VM
//! did not abort (with `FAIL_OPEN` a dead VM passes requests on untagged and uncounted).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use doppel_tests::envoy::Envoy;
use doppel_tests::envoy_config::{Upstreams, inline_bootstrap};
use doppel_tests::envoy_stack::{PUBLISH_WAIT, Stack, StackSpec, filter_stat};
use doppel_tests::procs::RunDir;
use doppel_tests::upstream::DemoUpstream;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One raw HTTP/1.1 exchange on a fresh connection: `head` is the request line and headers
/// (without the blank line). Returns the status and the whole raw answer.
async fn raw(front: SocketAddr, head: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(front).await.expect("connect to envoy");
    let mut request = head.to_vec();
    request.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    stream.write_all(&request).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    // A reset after the answer is fine; no answer at all is not.
    let _ = read.await.expect("envoy answers within 10 s");
    let status = answer
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// `GET path` with `headers` (raw lines without CRLF).
fn get(path: &str, headers: &[Vec<u8>]) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: cart").into_bytes();
    for line in headers {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(line);
    }
    head
}

fn line(name: &str, value: &[u8]) -> Vec<u8> {
    [name.as_bytes(), b": ", value].concat()
}

/// Header values that are not UTF-8 (HTTP/1 allows bytes 0x80-0xFF as obs-text).
fn not_utf8() -> Vec<Vec<u8>> {
    vec![
        vec![0x80],
        vec![0xff, 0xfe, 0xfd],
        b"user-\xc3".to_vec(),
        vec![0xc0, 0xaf],
        vec![0xed, 0xa0, 0x80],
        b"shadow\xff".to_vec(),
    ]
}

async fn counter(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stats(&format!("^{}$", regex_escape(name)))
        .await
        .ok()
        .and_then(|s| s.get(name))
        .unwrap_or(0)
}

fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.")
}

/// The filter still works: `n` requests carrying `x-pick: yes` are all chosen (routed to the
/// shadow, tagged with an id) and counted.
async fn assert_filter_alive(stack: &Stack, service: &str, n: u64) {
    let stat = filter_stat(service, "shadow", "rq_total");
    let before = counter(&stack.envoy, &stat).await;
    for i in 0..n {
        let (status, answer) = raw(
            stack.front,
            &get(&format!("/alive/{i}"), &[line("x-pick", b"yes")]),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert!(
            String::from_utf8_lossy(&answer).contains("answered by v2"),
            "not routed to the shadow: the filter is gone\n{}",
            stack.envoy.log_tail(40)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&stack.envoy, &stat).await < before + n {
        assert!(
            Instant::now() < deadline,
            "{stat} stays below {}\n{}",
            before + n,
            stack.envoy.log_tail(40)
        );
        tokio::time::sleep(PUBLISH_WAIT / 4).await;
    }
    let log = stack.envoy.log_tail(2000);
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_hostile_requests_never_abort_the_filter_nor_steer_it() {
    let service = "hostile";
    let stack = Stack::start(StackSpec {
        test: "hostile_split",
        template: "split.yaml",
        filter_config: json!({
            "service": service, "mode": "split", "percent": 100.0,
            "match": [{"header": "x-pick", "equals": "yes"}],
            "sticky": {"cookie": "uid"},
            "custom_metrics": ["work"]
        }),
        primary_args: &[],
        shadow_args: &[],
    })
    .await
    .expect("stack");

    // Spoofed control headers on requests the filter does not choose: all reach the primary,
    // none carries a doppel header, the shadow sees none of them.
    let spoofs: [&[(&str, &[u8])]; 4] = [
        &[("x-doppel-variant", b"shadow")],
        &[
            ("x-doppel-variant", b"shadow"),
            ("x-doppel-variant", b"shadow"),
            ("x-doppel-id", b"0123456789abcdef0123456789abcdef"),
            ("x-doppel-mirror", b"1"),
            ("x-doppel-mirror-to", b"shadow"),
        ],
        &[
            ("X-Doppel-Variant", b"shadow"),
            ("x-doppel-id", b"\xff\xfe"),
        ],
        &[("x-doppel-variant", b"shadow\xff"), ("x-pick", b"no")],
    ];
    for (i, spoof) in spoofs.iter().enumerate() {
        let headers: Vec<Vec<u8>> = spoof.iter().map(|(n, v)| line(n, v)).collect();
        let (status, answer) = raw(stack.front, &get(&format!("/spoof/{i}"), &headers)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert!(
            String::from_utf8_lossy(&answer).contains("answered by v1"),
            "a spoofed header steered request {i} to the shadow"
        );
    }
    let primary_log = stack
        .primary
        .wait_for_requests(spoofs.len(), Duration::from_secs(5))
        .await
        .expect("primary log");
    for entry in primary_log.iter().filter(|e| e.path.starts_with("/spoof/")) {
        for name in [
            "x-doppel-variant",
            "x-doppel-id",
            "x-doppel-mirror",
            "x-doppel-mirror-to",
        ] {
            assert!(
                entry.header(name).is_none(),
                "{name} reached the primary: {entry:?}"
            );
        }
    }

    // Values that are not UTF-8 in every header the filter reads, and malformed cookies.
    let cookies: [&[u8]; 8] = [
        b"",
        b";;;;",
        b"==;==",
        b"uid",
        b"uid=",
        b"uid=\"unterminated; other=2",
        b"other=1; uid=1; uid=2; uid=3",
        b"uid=\xff\xfe; \xc3=\xc3",
    ];
    let mut sent = 0;
    for bad in not_utf8() {
        for pick in [b"yes".as_slice(), &bad] {
            let headers = vec![
                line("x-pick", pick),
                line("cookie", &[b"uid=".as_slice(), &bad].concat()),
                line("user-agent", &bad),
                line("x-doppel-variant", &bad),
            ];
            let (status, answer) = raw(stack.front, &get("/utf8", &headers)).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            sent += 1;
        }
    }
    for cookie in cookies {
        let headers = vec![
            line("x-pick", b"yes"),
            line("cookie", cookie),
            line("cookie", cookie),
        ];
        let (status, answer) = raw(stack.front, &get("/cookie", &headers)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        sent += 1;
    }

    // Near Envoy's limits: a 50 KiB sticky cookie, and 90 headers, half of them spoofs.
    let big = [b"uid=".as_slice(), &vec![b'x'; 50 << 10]].concat();
    let (status, _) = raw(
        stack.front,
        &get("/big", &[line("x-pick", b"yes"), line("cookie", &big)]),
    )
    .await;
    assert_eq!(status, 200);
    let many: Vec<Vec<u8>> = (0..90)
        .map(|i| match i % 2 {
            0 => line("x-doppel-variant", b"shadow"),
            _ => line(&format!("x-filler-{i}"), b"v"),
        })
        .collect();
    let (status, answer) = raw(stack.front, &get("/many", &many)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("answered by v1"));
    sent += 2;

    // Beyond Envoy's limits (thousands of headers, a 1 MiB value): refused by Envoy's codec
    // with 431 (or the connection closed) before any filter runs.
    let thousands: Vec<Vec<u8>> = (0..3_000).map(|i| line(&format!("x-h{i}"), b"v")).collect();
    let (status, _) = raw(stack.front, &get("/thousands", &thousands)).await;
    assert!(matches!(status, 431 | 0), "3,000 headers answered {status}");
    let (status, _) = raw(
        stack.front,
        &get("/huge", &[line("cookie", &vec![b'a'; 1 << 20])]),
    )
    .await;
    assert!(
        matches!(status, 431 | 0),
        "a 1 MiB header answered {status}"
    );
    assert!(sent > 0);

    assert_filter_alive(&stack, service, 20).await;
}

/// A raw upstream: every connection gets `answer` (then the connection closes), or, with
/// `None`, is held open and never answered.
async fn raw_upstream(answer: Option<Vec<u8>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0; 64 << 10];
            let _ = stream.read(&mut buf).await;
            match &answer {
                Some(bytes) => {
                    let _ = stream.write_all(bytes).await;
                    let _ = stream.shutdown().await;
                }
                None => held.push(stream),
            }
        }
    });
    (address, task)
}

/// A mirror setup whose primary is the demo upstream `v1` and whose shadow is `shadow`.
async fn mirror_envoy(
    dir: &RunDir,
    name: &str,
    primary: &DemoUpstream,
    shadow: SocketAddr,
) -> Envoy {
    let config = json!({
        "service": "hostilemirror", "mode": "mirror", "percent": 100.0,
        "custom_metrics": ["work"],
        "mirror": {"cluster": "shadow", "timeout_ms": 2000, "max_in_flight": 64, "compare_body_bytes": 64}
    });
    let up = Upstreams {
        primary: primary.port(),
        shadow: shadow.port(),
    };
    let bootstrap = inline_bootstrap(dir, name, "mirror.yaml", up, &config).expect("bootstrap");
    Envoy::start(dir, name, &bootstrap).await.expect("envoy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_hostile_mirror_shadow_garbage_or_silence_never_touches_the_primary() {
    let dir = RunDir::new("hostile_mirror").expect("run dir");
    let primary = DemoUpstream::start(&dir, "v1", &[]).expect("primary");
    let garbage: Vec<u8> = [
        b"HTTP/1.1 2x0 \xff\xfe\r\nserver-timing: work;dur=\xff\r\ncontent-length: 99999\r\n\r\n"
            .as_slice(),
        &[0xff; 4096],
    ]
    .concat();
    for (name, answer) in [("garbage", Some(garbage)), ("silent", None)] {
        let (shadow, task) = raw_upstream(answer).await;
        let envoy = mirror_envoy(&dir, name, &primary, shadow).await;
        let front = envoy.listener("ingress").await.expect("listener");
        for i in 0..20 {
            let started = Instant::now();
            let (status, answer) = raw(front, &get(&format!("/{name}/{i}"), &[])).await;
            let text = String::from_utf8_lossy(&answer);
            assert_eq!(status, 200, "{name}: {text}");
            assert!(text.contains("answered by v1"), "{name}: {text}");
            assert!(
                // A client that waited for the copy would wait its whole timeout_ms (2 s).
                started.elapsed() < Duration::from_millis(1000),
                "{name}: the client waited {:?} for the shadow",
                started.elapsed()
            );
        }
        // Every copy fails (garbage, or no answer within timeout_ms) and is counted as such;
        // the VM is alive to count it.
        let failed = filter_stat("hostilemirror", "mirror", "failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        while counter(&envoy, &failed).await < 20 {
            assert!(
                Instant::now() < deadline,
                "{name}: {failed} = {}\n{}",
                counter(&envoy, &failed).await,
                envoy.log_tail(40)
            );
            tokio::time::sleep(PUBLISH_WAIT / 4).await;
        }
        assert_eq!(
            counter(&envoy, &filter_stat("hostilemirror", "mirror", "compared")).await,
            0,
            "{name}: a failed copy was compared"
        );
        let log = envoy.log_tail(2000);
        assert!(!log.contains("panicked"), "{log}");
        drop(envoy);
        task.abort();
    }
}
