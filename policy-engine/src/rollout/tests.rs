//! Unit tests and property tests of the rollout machine, its traffic states, rendering and store.

use proptest::prelude::*;

use super::filter_config::{FilterKind, filter_config};
use super::machine::*;
use super::render::{NodeInputs, ServiceInputs, render, route_units};
use super::store::{Change, LogEntry, NodeRecord, Store};
use super::traffic::{FilterMode, Steering, TrafficState};
use crate::policy::{Action, Policy, parse};
use crate::xds::ResourceType;

const POLICY: &str = r#"service: checkout
primary:
  cluster: checkout-v1
  previous: checkout-v0
shadow:
  cluster: checkout-v2
traffic:
  mode: split
  percent: 1
analysis:
  interval: 10s
  min_sample: 100
  alpha: 0.01
rules:
  - name: errors
    when: compare.errors.worse
    action: rollback
steps:
  - weight: 5
    hold: 1m
  - weight: 25
    hold: 2m
  - weight: 50
    hold: 2m
"#;

fn policy() -> Policy {
    parse(POLICY).expect("test policy parses")
}

fn rollout() -> Rollout {
    let p = policy();
    Rollout::new(
        &p.service,
        &p.steps,
        PlanStep {
            weight: 1.0,
            hold_ms: 0,
        },
    )
}

fn command(command: Command, now_ms: u64) -> Input {
    Input::Command { command, now_ms }
}

fn start(now_ms: u64) -> Input {
    command(
        Command::Start {
            version: "v2".to_owned(),
        },
        now_ms,
    )
}

fn pass(at_ms: u64) -> Input {
    Input::Event(RolloutEvent::pass(at_ms))
}

fn fired(at_ms: u64, action: Action) -> Input {
    Input::Event(RolloutEvent::fired(at_ms, "rule", action))
}

#[test]
fn rollout_plan_is_the_policy_steps() {
    let r = rollout();
    let weights: Vec<f64> = r.plan.iter().map(|s| s.weight).collect();
    assert_eq!(weights, vec![5.0, 25.0, 50.0]);
    assert_eq!(r.plan[0].hold_ms, 60_000);
    assert_eq!(r.phase, Phase::Pending);
}

#[test]
fn rollout_without_steps_uses_the_initial_share() {
    let r = Rollout::new(
        "svc",
        &[],
        PlanStep {
            weight: 2.0,
            hold_ms: 0,
        },
    );
    assert_eq!(
        r.plan,
        vec![PlanStep {
            weight: 2.0,
            hold_ms: 0
        }]
    );
}

#[test]
fn rollout_steps_advance_only_after_hold_and_a_pass() {
    let mut r = rollout();
    r.apply(&start(1_000)).unwrap();
    assert_eq!(
        r.phase,
        Phase::Shadowing {
            step: 0,
            since_ms: 1_000
        }
    );
    // Passing analyses before the hold time do nothing.
    let early = r.apply(&pass(30_000)).unwrap();
    assert!(!early.changed, "{early:?}");
    assert_eq!(r.phase.step(), Some(0));
    // Hold over, but no analysis yet: still step 1; the next pass advances.
    r.apply(&pass(61_000)).unwrap();
    assert_eq!(
        r.phase,
        Phase::Shadowing {
            step: 1,
            since_ms: 61_000
        }
    );
    r.apply(&pass(61_000 + 119_999)).unwrap();
    assert_eq!(r.phase.step(), Some(1));
    r.apply(&fired(61_000 + 120_000, Action::Shift)).unwrap();
    assert_eq!(r.phase.step(), Some(2));
    r.apply(&pass(181_000 + 120_000)).unwrap();
    assert_eq!(r.phase, Phase::Promoted { at_ms: 301_000 });
    assert_eq!(r.generation, 4);
}

#[test]
fn rollout_rule_actions() {
    let mut r = rollout();
    r.apply(&start(0)).unwrap();
    assert!(!r.apply(&fired(10, Action::Alert)).unwrap().changed);
    assert!(
        !r.apply(&fired(10, Action::Promote)).unwrap().changed,
        "hold first"
    );
    r.apply(&fired(20, Action::Pause)).unwrap();
    assert!(matches!(r.phase, Phase::Paused { step: 0, .. }));
    // Paused: passes and shifts wait for an operator, a rollback still acts.
    assert!(!r.apply(&pass(1_000_000)).unwrap().changed);
    assert!(!r.apply(&fired(1_000_000, Action::Shift)).unwrap().changed);
    r.apply(&fired(1_000_001, Action::Rollback)).unwrap();
    assert_eq!(
        r.phase,
        Phase::RolledBack {
            at_ms: 1_000_001,
            reason: "rule".to_owned()
        }
    );
    // Terminal: analysis no longer acts.
    assert!(!r.apply(&fired(1_000_002, Action::Promote)).unwrap().changed);
}

#[test]
fn rollout_commands_apply_only_where_they_mean_something() {
    let mut r = rollout();
    for c in [
        Command::Pause,
        Command::Resume,
        Command::Promote,
        Command::Rollback,
    ] {
        let name = c.name();
        assert_eq!(
            r.apply(&command(c, 0)),
            Err(Refused::NotNow {
                command: name,
                phase: "pending"
            })
        );
    }
    assert_eq!(
        r.apply(&command(
            Command::Start {
                version: " ".into()
            },
            0
        )),
        Err(Refused::EmptyVersion)
    );
    r.apply(&start(0)).unwrap();
    assert!(r.apply(&start(1)).is_err(), "one rollout at a time");
    r.apply(&command(Command::Pause, 5)).unwrap();
    assert!(r.apply(&command(Command::Pause, 6)).is_err());
    r.apply(&command(Command::Resume, 100_000)).unwrap();
    // The hold time starts again at resume.
    assert_eq!(
        r.phase,
        Phase::Shadowing {
            step: 0,
            since_ms: 100_000
        }
    );
    r.apply(&command(Command::Promote, 100_001)).unwrap();
    assert_eq!(r.phase.name(), "promoted");
    // A new version may start after a verdict.
    r.apply(&command(
        Command::Start {
            version: "v3".into(),
        },
        200_000,
    ))
    .unwrap();
    assert_eq!(r.version.as_deref(), Some("v3"));
    assert_eq!(r.phase.step(), Some(0));
}

#[test]
fn rollout_traffic_states() {
    let p = policy();
    let mut r = rollout();
    let state = |r: &Rollout, s| TrafficState::desired(r, &p, s);
    let pending = state(&r, Steering::FullAds);
    assert_eq!(
        (pending.route_weight, pending.filter_mode),
        (0.0, FilterMode::Off)
    );
    r.apply(&start(0)).unwrap();
    let full = state(&r, Steering::FullAds);
    assert_eq!(full.route_weight, 5.0);
    assert_eq!(
        (full.filter_mode, full.filter_percent),
        (FilterMode::Split, 1.0)
    );
    let only = state(&r, Steering::FilterOnly);
    assert_eq!((only.route_weight, only.filter_percent), (0.0, 5.0));
    r.apply(&fired(1, Action::Rollback)).unwrap();
    for steering in [Steering::FullAds, Steering::FilterOnly] {
        let back = state(&r, steering);
        assert_eq!(back.route_weight, 0.0);
        assert_eq!(
            (back.filter_mode, back.filter_percent),
            (FilterMode::Off, 0.0)
        );
        assert!(!back.mirroring());
        assert_eq!(
            back.primary_cluster, "checkout-v0",
            "previous stable version"
        );
    }
}

#[test]
fn rollout_mirror_steps_grow_the_copied_share_and_serve_nobody_from_the_shadow() {
    let p = parse(&POLICY.replace("mode: split", "mode: mirror\n  mirror:\n    methods: [GET]"))
        .expect("mirror policy parses");
    let mut r = rollout();
    r.apply(&start(0)).unwrap();
    r.apply(&pass(60_000)).unwrap();
    for steering in [Steering::FullAds, Steering::FilterOnly] {
        let state = TrafficState::desired(&r, &p, steering);
        assert_eq!(state.route_weight, 0.0, "{steering:?}");
        assert_eq!(
            (state.filter_mode, state.filter_percent),
            (FilterMode::Mirror, 25.0),
            "{steering:?}"
        );
        assert!(state.mirroring());
    }
    r.apply(&command(Command::Promote, 60_001)).unwrap();
    let promoted = TrafficState::desired(&r, &p, Steering::FullAds);
    assert_eq!(promoted.route_weight, 100.0);
}

#[test]
fn rollout_filter_config_follows_the_contract() {
    let p = policy();
    let mut r = rollout();
    r.apply(&start(0)).unwrap();
    let config = filter_config(&p, &TrafficState::desired(&r, &p, Steering::FilterOnly));
    assert_eq!(config["service"], "checkout");
    assert_eq!(config["mode"], "split");
    assert_eq!(config["percent"], 5.0);
    assert!(config.get("mirror").is_none());
}

fn inputs(steering: Steering, route_weight: f64) -> NodeInputs {
    let p = policy();
    let up = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    let state = TrafficState {
        service: "checkout".into(),
        primary_cluster: "checkout-v1".into(),
        shadow_cluster: "checkout-v2".into(),
        route_weight,
        filter_mode: FilterMode::Split,
        filter_percent: 1.0,
    };
    NodeInputs {
        steering,
        filter: FilterKind::Wasm {
            path: "/f.wasm".into(),
            split_path: None,
        },
        services: vec![ServiceInputs {
            filter_config: filter_config(&p, &state),
            state,
            variant_header: "x-doppel-variant".into(),
            listener: Some(up),
            endpoints: [
                ("checkout-v1".to_owned(), vec![up]),
                ("checkout-v2".to_owned(), vec![up]),
            ]
            .into_iter()
            .collect(),
        }],
        access_log: None,
    }
}

/// Whether `needle` occurs in the encoded listener `checkout` of `snapshot`.
fn listener_mentions(snapshot: &crate::xds::Snapshot, needle: &str) -> bool {
    let listener = snapshot
        .resources(ResourceType::Listener)
        .get("checkout")
        .expect("the checkout listener");
    listener
        .any()
        .value
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn rollout_render_streams_access_logs_with_the_doppel_id_only_when_asked() {
    let mut logged = inputs(Steering::FullAds, 25.0);
    logged.access_log = Some("doppel_engine".into());
    let with = render(&logged, 1).unwrap();
    for needle in [
        "envoy.access_loggers.http_grpc",
        "doppel_engine",
        "wasm.doppel_id",
        "wasm.doppel_variant",
    ] {
        assert!(listener_mentions(&with, needle), "{needle}");
    }
    let without = render(&inputs(Steering::FullAds, 25.0), 1).unwrap();
    assert!(!listener_mentions(&without, "http_grpc"));
}

#[test]
fn rollout_render_full_ads_and_filter_only() {
    let full = render(&inputs(Steering::FullAds, 25.0), 7).unwrap();
    assert_eq!(full.version(), 7);
    assert_eq!(full.resources(ResourceType::Cluster).items().len(), 2);
    assert_eq!(full.resources(ResourceType::Route).items().len(), 1);
    // The filter's config on its pool, and on every request (docs/rollout.md).
    let names: Vec<&String> = full
        .resources(ResourceType::ExtensionConfig)
        .items()
        .keys()
        .collect();
    assert_eq!(names, ["doppel.checkout", "doppel.checkout.pool"]);
    let only = render(&inputs(Steering::FilterOnly, 25.0), 1).unwrap();
    for kind in [
        ResourceType::Cluster,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        assert!(only.resources(kind).items().is_empty(), "{kind:?}");
    }
    assert!(
        only.resources(ResourceType::ExtensionConfig)
            .get("doppel.checkout")
            .is_some()
    );
    let mut missing = inputs(Steering::FullAds, 25.0);
    missing.services[0].endpoints.remove("checkout-v2");
    let error = render(&missing, 1).unwrap_err().to_string();
    assert!(error.contains("checkout-v2"), "{error}");
}

/// The routes of `checkout`'s rendered route configuration, in order.
fn checkout_routes(
    snapshot: &crate::xds::Snapshot,
) -> Vec<envoy_types::pb::envoy::config::route::v3::Route> {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use prost::Message;
    let route = snapshot
        .resources(ResourceType::Route)
        .get("checkout")
        .expect("the checkout route");
    let config = RouteConfiguration::decode(route.any().value.as_slice()).expect("decodes");
    config.virtual_hosts[0].routes.clone()
}

/// The mirror policies on `checkout`'s routes.
fn route_mirrors(
    snapshot: &crate::xds::Snapshot,
) -> Vec<envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy> {
    use envoy_types::pb::envoy::config::route::v3::route::Action as RouteKind;
    checkout_routes(snapshot)
        .into_iter()
        .filter_map(|r| match r.action {
            Some(RouteKind::Route(action)) => Some(action.request_mirror_policies),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The match of each of `checkout`'s routes, in order, as debug text.
fn route_matches(snapshot: &crate::xds::Snapshot) -> Vec<String> {
    checkout_routes(snapshot)
        .iter()
        .map(|r| format!("{:?}", r.r#match))
        .collect()
}

#[test]
fn rollout_render_has_envoy_copy_only_what_the_filter_marks_when_envoy_sends_copies() {
    let mirror = |sender: &str| {
        let text = POLICY.replace(
            "mode: split",
            &format!("mode: mirror\n  mirror:\n    sender: {sender}"),
        );
        let p = parse(&text).expect("mirror policy parses");
        let mut node = inputs(Steering::FullAds, 0.0);
        let service = &mut node.services[0];
        service.state.filter_mode = FilterMode::Mirror;
        service.filter_config = filter_config(&p, &service.state);
        render(&node, 1).unwrap()
    };
    let snapshot = mirror("envoy");
    let by_envoy = route_mirrors(&snapshot);
    assert_eq!(by_envoy.len(), 1, "{by_envoy:?}");
    // Only the requests the filter marked take the copying route.
    let routes = route_matches(&snapshot);
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert!(
        routes[1].contains("name: \"x-doppel-mirror-to\"")
            && routes[1].contains("PresentMatch(true)"),
        "{}",
        routes[1]
    );
    // Then the filter's pool and everyone else, neither copied.
    assert!(routes[2].contains("numerator: 59500"), "{}", routes[2]);
    assert!(routes[3].contains("headers: []"), "{}", routes[3]);
    let policy = &by_envoy[0];
    assert_eq!(policy.cluster_header, "x-doppel-mirror-to");
    assert!(policy.cluster.is_empty());
    assert!(policy.disable_shadow_host_suffix_append);
    let mutations = format!("{:?}", policy.request_headers_mutations);
    for needle in [
        "Remove(\"x-doppel-mirror-to\")",
        "key: \"x-doppel-mirror\"",
        "value: \"1\"",
    ] {
        assert!(mutations.contains(needle), "{needle} in {mutations}");
    }
    // The filter sends its own copies, or splits: the router copies nothing.
    assert!(route_mirrors(&mirror("filter")).is_empty());
    assert!(route_mirrors(&render(&inputs(Steering::FullAds, 25.0), 1).unwrap()).is_empty());
}

/// The connection manager of `checkout`'s listener in `snapshot`, if it has one (full ADS).
fn connection_manager(
    snapshot: &crate::xds::Snapshot,
) -> Option<envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager>{
    use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;
    let listener = snapshot.resources(ResourceType::Listener).get("checkout")?;
    let listener = Listener::decode(listener.any().value.as_slice()).expect("listener");
    let Some(ConfigType::TypedConfig(any)) = &listener.filter_chains[0].filters[0].config_type
    else {
        panic!("no connection manager: {listener:?}");
    };
    Some(HttpConnectionManager::decode(any.value.as_slice()).expect("hcm"))
}

/// The headers `checkout`'s connection manager removes before its filters run, and the filter
/// config pushed over ECDS for its listener's filter (`doppel.checkout` without a listener), in
/// `snapshot`.
fn stripping(snapshot: &crate::xds::Snapshot) -> (Vec<String>, serde_json::Value) {
    use envoy_types::pb::envoy::config::common::mutation_rules::v3::header_mutation::Action as Mutation;
    use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation;
    use prost::Message;
    let mut removed = Vec::new();
    let mut filter = "doppel.checkout".to_owned();
    if let Some(hcm) = connection_manager(snapshot) {
        filter = hcm.http_filters[0].name.clone();
        for extension in hcm.early_header_mutation_extensions {
            assert_eq!(
                extension.name,
                "envoy.http.early_header_mutation.header_mutation"
            );
            let any = extension.typed_config.expect("typed");
            for m in HeaderMutation::decode(any.value.as_slice())
                .expect("mutation")
                .mutations
            {
                match m.action {
                    Some(Mutation::Remove(name)) => removed.push(name),
                    other => panic!("not a removal: {other:?}"),
                }
            }
        }
    }
    (removed, served(snapshot, &filter))
}

/// The filter config the ECDS resource `name` of `snapshot` carries.
fn served(snapshot: &crate::xds::Snapshot, name: &str) -> serde_json::Value {
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    use envoy_types::pb::google::protobuf::StringValue;
    use prost::Message;
    let extension = snapshot
        .resources(ResourceType::ExtensionConfig)
        .get(name)
        .unwrap_or_else(|| panic!("no ECDS resource {name}"));
    let extension =
        TypedExtensionConfig::decode(extension.any().value.as_slice()).expect("extension");
    let wasm = Wasm::decode(extension.typed_config.expect("typed").value.as_slice()).expect("wasm");
    let plugin = wasm.config.expect("plugin");
    assert_eq!(plugin.name, name, "the plugin is named like its resource");
    let configuration = plugin.configuration.expect("configuration");
    let text = StringValue::decode(configuration.value.as_slice())
        .expect("string")
        .value;
    serde_json::from_str(&text).expect("json")
}

#[test]
fn rollout_render_full_ads_strips_control_headers_before_the_filter_and_tells_it() {
    let (removed, config) = stripping(&render(&inputs(Steering::FullAds, 25.0), 1).unwrap());
    assert_eq!(
        removed,
        [
            "x-doppel-variant",
            "x-doppel-id",
            "x-doppel-mirror",
            "x-doppel-mirror-to"
        ]
    );
    assert_eq!(config["strip_control"], "envoy", "{config}");
    // Filter-only: the connection manager is not doppel's, so the filter strips.
    let (removed, config) = stripping(&render(&inputs(Steering::FilterOnly, 25.0), 1).unwrap());
    assert!(removed.is_empty());
    assert!(config.get("strip_control").is_none(), "{config}");
    // Trusted control headers are kept by both.
    let trusted =
        parse(&POLICY.replace("  percent: 1\n", "  percent: 1\n  trusted_control: true\n"))
            .expect("trusted policy parses");
    let mut node = inputs(Steering::FullAds, 25.0);
    let service = &mut node.services[0];
    service.filter_config = filter_config(&trusted, &service.state);
    assert_eq!(service.filter_config["trusted_control"], true);
    let (removed, config) = stripping(&render(&node, 1).unwrap());
    assert!(removed.is_empty(), "{removed:?}");
    assert!(config.get("strip_control").is_none(), "{config}");
}

#[test]
fn rollout_render_full_ads_runs_the_filter_on_its_pool_only() {
    use envoy_types::pb::envoy::config::route::v3::FilterConfig;
    use prost::Message;
    let snapshot = render(&inputs(Steering::FullAds, 0.0), 1).unwrap();
    // 1 % chosen and 5 % of the rest measured: 5.95 % of requests go through the filter.
    let (_, config) = stripping(&snapshot);
    assert_eq!(config["pool_percent"], 5.95, "{config}");
    let hcm = connection_manager(&snapshot).expect("full ADS has a listener");
    assert_eq!(hcm.http_filters[0].name, "doppel.checkout.pool");
    assert!(
        hcm.http_filters[0].disabled,
        "skipped unless a route enables it"
    );
    // The config for the filter on every request is served beside it, so that a listener
    // switching setups never runs the other's config (nor one still draining).
    let every = served(&snapshot, "doppel.checkout");
    assert!(every.get("pool_percent").is_none(), "{every}");
    assert_eq!(every["strip_control"], "envoy", "{every}");
    let routes = checkout_routes(&snapshot);
    let matches = route_matches(&snapshot);
    assert_eq!(matches.len(), 3, "{matches:?}");
    assert!(matches[0].contains("x-doppel-variant"), "{}", matches[0]);
    assert!(
        matches[1].contains("numerator: 59500, denominator: Million"),
        "{}",
        matches[1]
    );
    let enable = &routes[1].typed_per_filter_config["doppel.checkout.pool"];
    let enable = FilterConfig::decode(enable.value.as_slice()).expect("a FilterConfig");
    assert!(enable.config.is_some() && !enable.disabled, "{enable:?}");
    assert!(routes[2].typed_per_filter_config.is_empty());
    assert!(
        matches[2].contains("runtime_fraction: None"),
        "{}",
        matches[2]
    );

    // A sticky key needs the filter on every request: no pool.
    let sticky = parse(&POLICY.replace(
        "  percent: 1\n",
        "  percent: 1\n  sticky:\n    header: x-user-id\n",
    ))
    .expect("sticky policy parses");
    let mut node = inputs(Steering::FullAds, 0.0);
    let service = &mut node.services[0];
    service.filter_config = filter_config(&sticky, &service.state);
    let snapshot = render(&node, 1).unwrap();
    let (_, config) = stripping(&snapshot);
    assert!(config.get("pool_percent").is_none(), "{config}");
    assert!(
        !connection_manager(&snapshot)
            .expect("listener")
            .http_filters[0]
            .disabled
    );
    assert_eq!(route_matches(&snapshot).len(), 2);
    // So does a share that leaves no request outside the pool (20 % chosen, 80 % measured).
    let mut node = inputs(Steering::FullAds, 0.0);
    let service = &mut node.services[0];
    service.state.filter_percent = 20.0;
    service.filter_config = filter_config(&policy(), &service.state);
    let (_, config) = stripping(&render(&node, 1).unwrap());
    assert!(config.get("pool_percent").is_none(), "{config}");
    // Filter-only steering: the routes are the mesh's.
    let (_, config) = stripping(&render(&inputs(Steering::FilterOnly, 0.0), 1).unwrap());
    assert!(config.get("pool_percent").is_none(), "{config}");
}

#[test]
fn rollout_render_routes_alone_have_no_route_a_client_could_steer_with_a_header() {
    let alone = |policy: &Policy| {
        let mut node = inputs(Steering::FullAds, 25.0);
        node.filter = FilterKind::None;
        let service = &mut node.services[0];
        service.filter_config = filter_config(policy, &service.state);
        render(&node, 1).unwrap()
    };
    // Nothing marks requests: only the weighted route, and nothing to strip.
    let snapshot = alone(&policy());
    let routes = route_matches(&snapshot);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert!(routes[0].contains("headers: []"), "{}", routes[0]);
    assert!(!listener_mentions(&snapshot, "early_header_mutation"));
    // A trusted hop in front marks them: its marks are routed on.
    let trusted =
        parse(&POLICY.replace("  percent: 1\n", "  percent: 1\n  trusted_control: true\n"))
            .expect("trusted policy parses");
    let routes = route_matches(&alone(&trusted));
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes[0].contains("x-doppel-variant"), "{}", routes[0]);
}

#[test]
fn rollout_route_units() {
    assert_eq!(route_units(0.0), (10_000, 0));
    assert_eq!(route_units(0.01), (9_999, 1));
    assert_eq!(route_units(25.0), (7_500, 2_500));
    assert_eq!(route_units(100.0), (0, 10_000));
    assert_eq!(route_units(f64::NAN).0 + route_units(f64::NAN).1, 10_000);
}

#[test]
fn rollout_store_round_trips_and_logs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doppel.redb");
    let mut r = rollout();
    r.apply(&start(5)).unwrap();
    let record = NodeRecord {
        version: 3,
        inputs: inputs(Steering::FullAds, 5.0),
    };
    {
        let store = Store::open(&path).unwrap();
        for i in 0..3 {
            let seq = store
                .commit(Change {
                    rollout: &r,
                    entry: LogEntry {
                        seq: 0,
                        input: pass(i),
                        changed: true,
                        note: format!("entry {i}"),
                        phase: "shadowing".into(),
                        step: Some(1),
                    },
                    nodes: vec![("envoy-1", &record)],
                })
                .unwrap();
            assert_eq!(seq, i + 1);
        }
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.rollouts().unwrap().get("checkout"), Some(&r));
    assert_eq!(store.nodes().unwrap().get("envoy-1"), Some(&record));
    let log = store.decisions("checkout", 2).unwrap();
    let notes: Vec<&str> = log.iter().map(|e| e.note.as_str()).collect();
    assert_eq!(notes, vec!["entry 1", "entry 2"]);
    assert!(store.decisions("other", 10).unwrap().is_empty());
}

fn any_input() -> impl Strategy<Value = Input> {
    let action = prop_oneof![
        Just(Action::Alert),
        Just(Action::Pause),
        Just(Action::Rollback),
        Just(Action::Shift),
        Just(Action::Promote),
    ];
    let command = prop_oneof![
        Just(Command::Start {
            version: "v".to_owned()
        }),
        Just(Command::Pause),
        Just(Command::Resume),
        Just(Command::Promote),
        Just(Command::Rollback),
    ];
    // Time moves forward by a random step before each input (see the test).
    prop_oneof![
        4 => Just(Verdict::Pass).prop_map(|v| Input::Event(RolloutEvent { at_ms: 0, verdict: v })),
        2 => action.prop_map(|a| Input::Event(RolloutEvent::fired(0, "r", a))),
        1 => command.prop_map(|c| Input::Command { command: c, now_ms: 0 }),
    ]
}

fn at(input: Input, now: u64) -> Input {
    match input {
        Input::Command { command, .. } => Input::Command {
            command,
            now_ms: now,
        },
        Input::Event(e) => Input::Event(RolloutEvent { at_ms: now, ..e }),
    }
}

proptest! {
    /// Whatever arrives: the step only moves by one, forwards, after its hold time and by an
    /// analysis; weights are only the plan's; a refused input changes nothing.
    #[test]
    fn rollout_never_skips_or_repeats_a_step(
        holds in proptest::collection::vec(0u64..5_000, 1..5),
        inputs in proptest::collection::vec((any_input(), 0u64..3_000), 1..80),
    ) {
        let p = policy();
        let steps: Vec<crate::policy::Step> = holds
            .iter()
            .enumerate()
            .map(|(i, hold)| crate::policy::Step {
                weight: crate::policy::Percent::new(10.0 * (i as f64 + 1.0)).unwrap(),
                hold_ms: *hold,
            })
            .collect();
        let mut r = Rollout::new("checkout", &steps, PlanStep { weight: 1.0, hold_ms: 0 });
        let mut now = 0;
        let mut visited: Vec<usize> = Vec::new();
        for (input, dt) in inputs {
            now += dt;
            let input = at(input, now);
            let before = r.clone();
            match r.apply(&input) {
                Err(_) => prop_assert_eq!(&r, &before),
                Ok(outcome) => {
                    prop_assert_eq!(outcome.changed, r.generation == before.generation + 1);
                    if !outcome.changed {
                        prop_assert_eq!(&r.phase, &before.phase);
                    }
                }
            }
            let weight = TrafficState::desired(&r, &p, Steering::FullAds).route_weight;
            prop_assert!(
                [0.0, 100.0].contains(&weight) || r.plan.iter().any(|s| s.weight == weight),
                "weight {} is not the plan's", weight
            );
            if let (Some(old), Some(new)) = (before.phase.step(), r.phase.step())
                && before.version == r.version
                && !matches!(input, Input::Command { command: Command::Start { .. }, .. })
            {
                prop_assert!(new == old || new == old + 1, "step {} -> {}", old, new);
                if new == old + 1 {
                    let Phase::Shadowing { since_ms, .. } = before.phase else {
                        return Err(TestCaseError::fail("advanced while paused"));
                    };
                    prop_assert!(now >= since_ms + r.plan[old].hold_ms, "advanced before the hold time");
                    prop_assert!(matches!(input, Input::Event(_)), "only an analysis advances");
                }
            }
            if let Some(step) = r.phase.step()
                && visited.last() != Some(&step)
            {
                visited.push(step);
            }
            if matches!(input, Input::Command { command: Command::Start { .. }, .. }) && r.generation != before.generation {
                visited = vec![0];
            }
        }
        // Within one rollout the steps visited are 0, 1, 2, ... in order.
        for (i, step) in visited.iter().enumerate() {
            prop_assert_eq!(*step, i);
        }
    }
}
