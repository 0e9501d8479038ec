use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<FilterConfig, ConfigError> {
    FilterConfig::parse(text.as_bytes())
}

fn refused(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("accepted {text}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_documented_example_parses() {
    let doc = r#"{
      "service": "checkout", "mode": "mirror", "percent": 1.0,
      "match": [
        { "header": "x-geo", "equals": "de" },
        { "header": "user-agent", "prefix": "Mozilla/" },
        { "header": "x-geo", "one_of": ["de", "fr"] }
      ],
      "sticky": { "header": "x-user-id" },
      "headers": { "variant": "x-doppel-variant", "id": "x-doppel-id", "mirror": "x-doppel-mirror" },
      "custom_metrics": ["db", "cache"],
      "mirror": { "cluster": "shadow", "authority": "shadow.internal",
        "methods": ["GET", "HEAD", "OPTIONS"], "max_body_bytes": 0, "timeout_ms": 1000,
        "max_in_flight": 64, "compare_body_bytes": 65536, "latency_tolerance_ms": 250 }
    }"#;
    let c = parse(doc).unwrap();
    assert_eq!(c.service.as_str(), "checkout");
    assert_eq!(c.mode, Mode::Mirror);
    assert_eq!(c.matchers.len(), 3);
    assert_eq!(c.matchers[1].test, MatchTest::Prefix("Mozilla/".into()));
    assert_eq!(
        c.sticky,
        Some(Sticky::Header(HeaderName::new("x-user-id").unwrap()))
    );
    let m = c.mirror.unwrap();
    assert_eq!(m.compare_body_bytes.get(), 65536);
    assert_eq!(m.authority.unwrap().as_str(), "shadow.internal");
}

#[test]
fn defaults_fill_in() {
    let c =
        parse(r#"{"service":"a","mode":"mirror","percent":5,"mirror":{"cluster":"s"}}"#).unwrap();
    assert_eq!(c.headers, HeaderNames::default());
    assert!(!c.trusted_control);
    let m = c.mirror.unwrap();
    assert_eq!(m, MirrorConfig::new(ClusterName::new("s").unwrap()));
    let methods: Vec<&str> = m.methods.iter().map(Method::as_str).collect();
    assert_eq!(methods, ["GET", "HEAD", "OPTIONS"]);
    assert_eq!(m.timeout_ms.get(), 1000);
    assert_eq!(m.max_in_flight.get(), 64);
    assert_eq!(m.latency_tolerance_ms.get(), 250);
}

#[test]
fn errors_name_the_field_and_why() {
    let base = |extra: &str| format!(r#"{{"service":"cart","mode":"split","percent":1{extra}}}"#);
    let cases = [
        (
            r#"{"service":"cart","mode":"split","percent":120}"#.to_string(),
            "percent: 120 is outside [0, 100]",
        ),
        (
            r#"{"service":"cart","mode":"split","percent":-0.5}"#.into(),
            "percent: -0.5 is outside [0, 100]",
        ),
        (
            r#"{"service":"","mode":"split","percent":1}"#.into(),
            "service: must not be empty",
        ),
        (
            r#"{"service":"Cart","mode":"split","percent":1}"#.into(),
            "service: `Cart` contains 'C'; allowed: [a-z0-9_-]",
        ),
        (
            r#"{"service":"cart","mode":"canary","percent":1}"#.into(),
            "mode: unknown variant `canary`, expected one of `split`, `mirror`, `off`",
        ),
        (
            r#"{"service":"cart","mode":"split","percent":"1"}"#.into(),
            "percent: invalid type: string \"1\", expected f64",
        ),
        (
            r#"{"service":"cart","mode":"split"}"#.into(),
            "config: missing field `percent`",
        ),
        (
            base(r#","colour":"red""#),
            "colour: unknown field `colour`, expected one of `service`, `mode`, `percent`, `match`, `sticky`, `headers`, `custom_metrics`, `trusted_control`, `strip_control`, `mirror`, `primary_sample_percent`, `pool_percent`",
        ),
        (
            base(r#","match":[{"header":"x-a","equals":"1","prefix":"2"}]"#),
            "match[0]: needs exactly one of equals, prefix, one_of",
        ),
        (
            base(r#","match":[{"header":"X-A","equals":"1"}]"#),
            "match[0].header: `X-A` contains 'X'; allowed: lower-case header name characters",
        ),
        (
            base(r#","match":[{"header":"x-a","one_of":[]}]"#),
            "match[0]: one_of must not be empty",
        ),
        (
            base(r#","sticky":{"cookie":""}"#),
            "sticky.cookie: must not be empty",
        ),
        (
            base(r#","headers":{"variant":"x-a","id":"x-a"}"#),
            "headers.id: `x-a` is already used by headers.variant",
        ),
        (
            base(r#","custom_metrics":["db","db"]"#),
            "custom_metrics[1]: `db` is listed twice",
        ),
        (
            base(r#","custom_metrics":["d.b"]"#),
            "custom_metrics[0]: `d.b` contains '.'; allowed: [a-z0-9_]",
        ),
        (
            r#"{"service":"cart","mode":"mirror","percent":1}"#.into(),
            "mirror: required when mode is mirror",
        ),
        (
            base(r#","mirror":{"cluster":"s","timeout_ms":0}"#),
            "mirror.timeout_ms: 0 is outside [1, 60000]",
        ),
        (
            base(r#","mirror":{"cluster":"s","max_in_flight":20000}"#),
            "mirror.max_in_flight: 20000 is outside [1, 10000]",
        ),
        (
            base(r#","mirror":{"cluster":""}"#),
            "mirror.cluster: must not be empty",
        ),
        (
            base(r#","mirror":{"cluster":"s","methods":["get"]}"#),
            "mirror.methods[0]: `get` contains 'g'; allowed: [A-Z-]",
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(refused(&doc), want, "for {doc}");
    }
}

#[test]
fn non_json_is_refused_as_a_whole() {
    assert!(refused("service: cart").starts_with("config: "));
    assert!(refused("").starts_with("config: "));
    assert!(
        refused(r#"{"service":"a","mode":"off","percent":1} trailing"#).starts_with("config: ")
    );
}

#[test]
fn a_copy_envoy_sends_is_neither_compared_nor_readdressed() {
    let envoy = r#"{"service":"a","mode":"mirror","percent":1,"mirror":{"cluster":"shadow","sender":"envoy""#;
    let c = parse(&format!("{envoy}}}}}")).unwrap();
    assert_eq!(c.sender(), Some(Sender::Envoy));
    assert!(c.to_json().contains(r#""sender":"envoy""#));
    assert_eq!(
        refused(&format!(r#"{envoy},"compare_body_bytes":64}}}}"#)),
        "mirror.compare_body_bytes: only a copy the filter sends is compared (mirror.sender is envoy)"
    );
    assert!(
        refused(&format!(r#"{envoy},"authority":"s.internal"}}}}"#))
            .starts_with("mirror.authority: Envoy sends the copy")
    );
    let router = envoy.replace("envoy", "router");
    assert!(
        refused(&format!("{router}}}}}")).starts_with("mirror.sender: unknown variant `router`"),
        "{}",
        refused(&format!("{router}}}}}"))
    );
    // The default is the filter, and it is not written out.
    let filter =
        parse(r#"{"service":"a","mode":"mirror","percent":1,"mirror":{"cluster":"s"}}"#).unwrap();
    assert_eq!(filter.sender(), Some(Sender::Filter));
    // Outside mirror mode nobody sends copies.
    let split = parse(r#"{"service":"a","mode":"split","percent":1}"#).unwrap();
    assert_eq!(split.sender(), None);
    assert!(!filter.to_json().contains("sender"));
}

#[test]
fn envoy_may_strip_the_control_headers_unless_they_are_trusted() {
    let split = r#"{"service":"a","mode":"split","percent":1"#;
    let c = parse(&format!(r#"{split},"strip_control":"envoy"}}"#)).unwrap();
    assert_eq!(c.strip_control, Stripper::Envoy);
    assert!(c.to_json().contains(r#""strip_control":"envoy""#));
    // The default is the filter, and it is not written out.
    let default = parse(&format!("{split}}}")).unwrap();
    assert_eq!(default.strip_control, Stripper::Filter);
    assert!(!default.to_json().contains("strip_control"));
    assert_eq!(
        refused(&format!(
            r#"{split},"strip_control":"envoy","trusted_control":true}}"#
        )),
        "strip_control: Envoy would remove the control headers trusted_control keeps: choose one"
    );
    assert!(
        refused(&format!(r#"{split},"strip_control":"nobody"}}"#))
            .starts_with("strip_control: unknown variant `nobody`")
    );
}

#[test]
fn a_pool_holds_what_the_filter_chooses_and_measures() {
    let split = r#"{"service":"a","mode":"split","percent":1,"strip_control":"envoy""#;
    let c = parse(&format!(r#"{split},"pool_percent":5.95}}"#)).unwrap();
    // 1 % of all requests is 1/5.95 of the pool; the other 4.95 % measure the primary's 5 %.
    let (chosen, measured) = c.shares_seen();
    assert!((chosen - 100.0 / 5.95).abs() < 1e-9, "{chosen}");
    assert!((measured - 100.0).abs() < 1e-9, "{measured}");
    // A larger pool measures a share of its unchosen requests: still 5 % of the primary's.
    let c = parse(&format!(r#"{split},"pool_percent":10.9}}"#)).unwrap();
    let (chosen, measured) = c.shares_seen();
    assert!((chosen - 100.0 / 10.9).abs() < 1e-9, "{chosen}");
    assert!(
        (measured * (10.9 - 1.0) / 99.0 - 5.0).abs() < 1e-9,
        "{measured}"
    );
    // Off: nobody chosen, the pool is the primary's sample.
    let off = parse(
        r#"{"service":"a","mode":"off","percent":0,"strip_control":"envoy","pool_percent":1}"#,
    )
    .unwrap();
    assert_eq!(off.shares_seen(), (0.0, 100.0));
    // Without a pool the shares are the config's own.
    let plain = parse(&format!("{split}}}")).unwrap();
    assert_eq!(plain.shares_seen(), (1.0, 5.0));
    assert!(!plain.to_json().contains("pool_percent"));
}

#[test]
fn a_pool_is_refused_where_the_filter_must_see_every_request() {
    let split = r#"{"service":"a","mode":"split","percent":1"#;
    assert_eq!(
        refused(&format!(
            r#"{split},"strip_control":"envoy","pool_percent":5}}"#
        )),
        "pool_percent: 5 is below 5.95, the share percent and primary_sample_percent need"
    );
    assert_eq!(
        refused(&format!(r#"{split},"pool_percent":20}}"#)),
        "pool_percent: the filter never sees requests outside the pool: set strip_control to envoy"
    );
    assert_eq!(
        refused(&format!(
            r#"{split},"strip_control":"envoy","sticky":{{"header":"x-user"}},"pool_percent":20}}"#
        )),
        "pool_percent: a sticky key needs the filter on every request (the pool is drawn at random)"
    );
}

#[test]
fn control_headers_are_recognised() {
    let c =
        parse(r#"{"service":"a","mode":"off","percent":0,"headers":{"id":"x-trace-id"}}"#).unwrap();
    assert!(c.is_control_header("x-doppel-variant"));
    assert!(c.is_control_header("x-trace-id"));
    assert!(c.is_control_header("x-doppel-mirror-to"));
    assert!(!c.is_control_header("x-doppel-id"));
}

fn name(charset: &'static str, max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{charset}{{1,{max}}}")).unwrap()
}

fn arb_matcher() -> impl Strategy<Value = Matcher> {
    let test = prop_oneof![
        any::<String>().prop_map(MatchTest::Equals),
        any::<String>().prop_map(MatchTest::Prefix),
        proptest::collection::vec(any::<String>(), 1..4).prop_map(MatchTest::OneOf),
    ];
    (name("[a-z0-9-]", 20), test).prop_map(|(h, test)| Matcher {
        header: HeaderName::new(h).unwrap(),
        test,
    })
}

fn arb_mirror() -> impl Strategy<Value = MirrorConfig> {
    (
        name("[a-z_.]", 30),
        proptest::option::of(name("[a-z.:0-9]", 30)),
        proptest::collection::vec(name("[A-Z]", 8), 0..4),
        (0..=MAX_BODY_BYTES, 1..=60_000u64, 1..=10_000u64),
        (0..=MAX_BODY_BYTES, 0..=600_000u64),
        prop_oneof![Just(Sender::Filter), Just(Sender::Envoy)],
    )
        .prop_map(
            |(cluster, authority, methods, (body, timeout, fl), (cmp, tol), sender)| MirrorConfig {
                cluster: ClusterName::new(cluster).unwrap(),
                sender,
                // What only a filter-sent copy has.
                authority: authority
                    .filter(|_| sender == Sender::Filter)
                    .map(|a| Authority::new(a).unwrap()),
                methods: methods
                    .into_iter()
                    .map(|m| Method::new(m).unwrap())
                    .collect(),
                max_body_bytes: Ranged::new(body).unwrap(),
                timeout_ms: Ranged::new(timeout).unwrap(),
                max_in_flight: Ranged::new(fl).unwrap(),
                compare_body_bytes: Ranged::new(if sender == Sender::Filter { cmp } else { 0 })
                    .unwrap(),
                latency_tolerance_ms: Ranged::new(tol).unwrap(),
            },
        )
}

fn arb_config() -> impl Strategy<Value = FilterConfig> {
    (
        name("[a-z0-9_-]", 64),
        prop_oneof![Just(Mode::Split), Just(Mode::Off), Just(Mode::Mirror)],
        0.0..=100.0f64,
        proptest::collection::vec(arb_matcher(), 0..4),
        proptest::option::of(prop_oneof![
            name("[a-z-]", 12).prop_map(|h| Sticky::Header(HeaderName::new(h).unwrap())),
            name("[A-Za-z_]", 12).prop_map(|c| Sticky::Cookie(CookieName::new(c).unwrap())),
        ]),
        proptest::collection::btree_set(name("[a-z_]", 32), 0..4),
        // trusted_control and strip_control: only the filter strips what it trusts.
        prop_oneof![
            Just((false, Stripper::Filter)),
            Just((false, Stripper::Envoy)),
            Just((true, Stripper::Filter)),
        ],
        arb_mirror(),
        proptest::option::of(0.0..=100.0f64),
    )
        .prop_map(
            |(service, mode, percent, matchers, sticky, custom, trusted, mirror, latency)| {
                FilterConfig {
                    service: ServiceName::new(service).unwrap(),
                    mode,
                    percent: Percent::new(percent).unwrap(),
                    matchers,
                    sticky,
                    headers: HeaderNames::default(),
                    custom_metrics: custom
                        .into_iter()
                        .map(|m| MetricLabel::new(m).unwrap())
                        .collect(),
                    trusted_control: trusted.0,
                    strip_control: trusted.1,
                    mirror: (mode == Mode::Mirror).then_some(mirror),
                    primary_sample_percent: latency.map(|p| Percent::new(p).unwrap()),
                    pool_percent: None,
                }
            },
        )
        .prop_map(|mut config| {
            // A pool where the config allows one: the smallest, as the engine pushes it.
            if config.sticky.is_none() && config.strip_control == Stripper::Envoy {
                config.pool_percent = Percent::new(config.smallest_pool_percent()).ok();
            }
            config
        })
}

proptest! {
    #[test]
    fn round_trips(config in arb_config()) {
        let json = config.to_json();
        prop_assert_eq!(FilterConfig::parse(json.as_bytes()), Ok(config));
    }

    #[test]
    fn out_of_range_percent_is_refused(p in prop_oneof![100.000_001f64..1e300, -1e300..-1e-9f64]) {
        let doc = format!(r#"{{"service":"a","mode":"split","percent":{p}}}"#);
        let err = FilterConfig::parse(doc.as_bytes()).unwrap_err();
        prop_assert_eq!(err.field, "percent");
        prop_assert!(err.reason.contains("outside [0, 100]"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = FilterConfig::parse(&bytes);
    }

    #[test]
    fn mangled_valid_documents_never_panic(config in arb_config(), cut in 0usize..400, byte in any::<u8>()) {
        let mut json = config.to_json().into_bytes();
        let at = cut % json.len().max(1);
        if at < json.len() {
            json[at] = byte;
        }
        let _ = FilterConfig::parse(&json);
    }
}
