//! Micro-benchmarks of the filter's per-request path, natively: choosing a variant
//! ([`Decider::decide`]) for the configs people write, the request id, the in-VM counters, the
//! mirror's safety check and copy headers, and reading `Server-Timing`.
//!
//! `cargo bench -p doppel-filter --bench filter` (BENCHMARKS.md has the figures). Under
//! `cargo test --all-targets` each benchmark runs once, as a smoke test. The filter also builds
//! for wasm32, where this file is an empty program (criterion is a native-only dev-dependency).

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::hint::black_box;

    use criterion::Criterion;
    use doppel_filter::config::{FilterConfig, MirrorConfig};
    use doppel_filter::decide::{Decider, Rng};
    use doppel_filter::ids::IdGen;
    use doppel_filter::mirror::{copy_headers, safety};
    use doppel_filter::names::Variant;
    use doppel_filter::pairs::{Map, encode};
    use doppel_filter::tally::{Counter, Tally};
    use doppel_filter::timing::durations_us;

    /// Distinct requests each benchmark cycles through, so no input is constant.
    const REQUESTS: usize = 256;

    fn config(json: &str) -> FilterConfig {
        match FilterConfig::parse(json.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("bench config {json}: {e}"),
        }
    }

    /// A browser's `User-Agent`, varied per request.
    fn user_agent(i: usize) -> Vec<u8> {
        let agents = [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "curl/8.11.0",
        ];
        agents[i % agents.len()].as_bytes().to_vec()
    }

    fn geo(i: usize) -> Vec<u8> {
        ["de", "at", "fr", "us", "de"][i % 5].as_bytes().to_vec()
    }

    /// A realistic `Cookie` header with the user's id in the middle.
    fn cookie(i: usize) -> Vec<u8> {
        format!(
            "_ga=GA1.2.1234567890.1733500000; session=9f2c1e7a4b6d8e0f1a2b3c4d5e6f7a8b; \
             uid=user-{i:08}; consent=\"analytics,ads\"; theme=dark; lang=de-DE"
        )
        .into_bytes()
    }

    /// One decision benchmark: a config and the needed header values of `REQUESTS` requests.
    struct Case {
        name: &'static str,
        decider: Decider,
        requests: Vec<Vec<Option<Vec<u8>>>>,
    }

    impl Case {
        fn new(name: &'static str, json: &str, value: impl Fn(&str, usize) -> Vec<u8>) -> Case {
            let decider = Decider::new(&config(json));
            let requests = (0..REQUESTS)
                .map(|i| decider.needed().iter().map(|h| Some(value(h, i))).collect())
                .collect();
            Case {
                name,
                decider,
                requests,
            }
        }
    }

    fn header_value(name: &str, i: usize) -> Vec<u8> {
        match name {
            "user-agent" => user_agent(i),
            "x-geo" => geo(i),
            "x-user-id" => format!("user-{i:08}").into_bytes(),
            "x-beta" => if i.is_multiple_of(4) { "1" } else { "0" }
                .as_bytes()
                .to_vec(),
            "cookie" => cookie(i),
            other => panic!("no bench value for header {other}"),
        }
    }

    fn decide(c: &mut Criterion) {
        let cases = [
            // No matcher, no sticky key: one PRNG draw.
            Case::new(
                "random_1pct",
                r#"{"service":"checkout","mode":"split","percent":1}"#,
                header_value,
            ),
            // One header must equal a value.
            Case::new(
                "header_equals_1pct",
                r#"{"service":"checkout","mode":"split","percent":1,
                   "match":[{"header":"x-beta","equals":"1"}]}"#,
                header_value,
            ),
            // Geo (one of) and user agent (prefix), as policies/checkout-split.yaml.
            Case::new(
                "geo_user_agent_5pct",
                r#"{"service":"checkout","mode":"split","percent":5,
                   "match":[{"header":"x-geo","one_of":["de","at"]},
                            {"header":"user-agent","prefix":"Mozilla/"}]}"#,
                header_value,
            ),
            // The same with a sticky user header: the hash replaces the PRNG.
            Case::new(
                "geo_user_agent_sticky_header_5pct",
                r#"{"service":"checkout","mode":"split","percent":5,
                   "match":[{"header":"x-geo","one_of":["de","at"]},
                            {"header":"user-agent","prefix":"Mozilla/"}],
                   "sticky":{"header":"x-user-id"}}"#,
                header_value,
            ),
            // Sticky on a cookie inside a ~170-byte Cookie header.
            Case::new(
                "sticky_cookie_1pct",
                r#"{"service":"checkout","mode":"split","percent":1,
                   "sticky":{"cookie":"uid"}}"#,
                header_value,
            ),
        ];
        let mut group = c.benchmark_group("decide");
        for case in &cases {
            let mut rng = Rng::new(0x5eed);
            let mut i = 0usize;
            group.bench_function(case.name, |b| {
                b.iter(|| {
                    i = (i + 1) % REQUESTS;
                    case.decider.decide(black_box(&case.requests[i]), &mut rng)
                })
            });
        }
        group.finish();
        // Sanity: the share chosen is about what the config says (a benchmark of a decider
        // that never chooses would measure nothing).
        let mut rng = Rng::new(1);
        let random = &cases[0];
        let shadow = (0..100_000)
            .filter(|_| random.decider.decide(&random.requests[0], &mut rng) == Variant::Shadow)
            .count();
        assert!((500..1500).contains(&shadow), "random 1% chose {shadow}");
    }

    fn tagging(c: &mut Criterion) {
        let mut ids = IdGen::new(*b"0123456789abcdef");
        c.bench_function("ids/next_id_hex", |b| {
            b.iter(|| {
                let hex = ids.next_id().hex();
                black_box(hex.as_bytes()[31])
            })
        });
        let mut tally = Tally::default();
        c.bench_function("tally/add", |b| {
            b.iter(|| tally.add(black_box(Counter::RqTotal(Variant::Primary))))
        });
    }

    /// A browser GET as Envoy hands it to the filter: pseudo-headers first, 16 headers.
    fn request_headers() -> Vec<(String, Vec<u8>)> {
        [
            (":authority", "shop.example.com"),
            (":path", "/api/search?q=running+shoes&page=2"),
            (":method", "GET"),
            (":scheme", "https"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            ),
            ("accept", "application/json"),
            ("accept-encoding", "gzip, deflate, br"),
            ("accept-language", "de-DE,de;q=0.9,en;q=0.8"),
            (
                "cookie",
                "session=9f2c1e7a4b6d8e0f1a2b3c4d5e6f7a8b; uid=user-00000042",
            ),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "6f1c2a9e-4b3d-4c5e-9f8a-1b2c3d4e5f60"),
            ("x-envoy-expected-rq-timeout-ms", "15000"),
            ("connection", "keep-alive"),
            ("x-geo", "de"),
            ("x-user-id", "user-00000042"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
    }

    fn mirror(c: &mut Criterion) {
        let json = r#"{"service":"search","mode":"mirror","percent":20,
            "mirror":{"cluster":"search-next","authority":"search-next.internal",
                      "methods":["GET","HEAD"],"max_body_bytes":65536}}"#;
        let cfg = config(json);
        let Some(m): Option<MirrorConfig> = cfg.mirror.clone() else {
            panic!("mirror section missing")
        };
        let mut group = c.benchmark_group("mirror");
        group.bench_function("safety_get_no_body", |b| {
            b.iter(|| safety(&m, black_box(b"GET"), None, true))
        });
        group.bench_function("safety_post_skipped", |b| {
            b.iter(|| safety(&m, black_box(b"POST"), Some(b"512"), false))
        });
        group.bench_function("safety_head_with_length", |b| {
            b.iter(|| safety(&m, black_box(b"HEAD"), Some(black_box(b"4096")), false))
        });
        let headers = request_headers();
        let h = &cfg.headers;
        let id = IdGen::new([7; 16]).next_id().hex();
        // The request's headers as the glue reads them: borrowed from the serialized map the
        // host hands over; the copy is serialized for the callout from the borrowed list.
        let map = encode(&headers);
        let map = Map::new(&map).expect("a valid map");
        group.bench_function("copy_headers_16", |b| {
            b.iter(|| {
                let copied = copy_headers(
                    black_box(map).iter(),
                    m.authority.as_ref().map(|a| a.as_str()),
                    h.control(),
                    (h.id.as_str(), id.as_bytes()),
                    h.mirror.as_str(),
                );
                encode(&copied)
            })
        });
        group.finish();
    }

    fn server_timing(c: &mut Criterion) {
        let header: &[u8] =
            b"cache;desc=\"Cache Read\";dur=23.2, db;dur=53, app;dur=47.2, total;dur=131.5";
        let mut group = c.benchmark_group("server_timing");
        group.bench_function("durations_us_1_of_4", |b| {
            b.iter(|| durations_us(black_box(header), &["db"]))
        });
        group.bench_function("durations_us_2_of_4", |b| {
            b.iter(|| durations_us(black_box(header), &["db", "cache"]))
        });
        group.finish();
    }

    criterion::criterion_group!(benches, decide, tagging, mirror, server_timing);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

#[cfg(target_arch = "wasm32")]
fn main() {}
