//! xDS snapshot building for a rollout step, as the controller does on every decision: the
//! traffic state of the step, the filter's config for it, the node's snapshot (listener with
//! the ECDS filter and the access log, the variant route, both clusters and their endpoints,
//! the Wasm filter config), and setting it in the cache.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use criterion::{BatchSize, Criterion};
use doppel_engine::policy::Policy;
use doppel_engine::rollout::filter_config::{FilterKind, filter_config};
use doppel_engine::rollout::render::{NodeInputs, ServiceInputs, render};
use doppel_engine::rollout::{Command, Input, PlanStep, Rollout, Steering, TrafficState};
use doppel_engine::xds::SnapshotCache;

use crate::data;

/// The checkout rollout started: at its first step (10%).
fn started(policy: &Policy) -> Rollout {
    let initial = PlanStep {
        weight: policy.traffic.percent.get(),
        hold_ms: 0,
    };
    let mut rollout = Rollout::new(&policy.service, &policy.steps, initial);
    let start = Input::Command {
        command: Command::Start {
            version: "v42".to_owned(),
        },
        now_ms: 0,
    };
    if let Err(e) = rollout.apply(&start) {
        panic!("start: {e:?}");
    }
    rollout
}

/// One service's part of a node's inputs under full ADS with the Wasm filter.
fn service(policy: &Policy, rollout: &Rollout, port: u16) -> ServiceInputs {
    let state = TrafficState::desired(rollout, policy, Steering::FullAds);
    let host = |last: u8| SocketAddr::from(([10, 0, 0, last], 8080));
    ServiceInputs {
        filter_config: filter_config(policy, &state),
        endpoints: BTreeMap::from([
            (
                state.primary_cluster.clone(),
                vec![host(1), host(2), host(3)],
            ),
            (state.shadow_cluster.clone(), vec![host(4)]),
        ]),
        state,
        variant_header: "x-doppel-variant".to_owned(),
        listener: Some(SocketAddr::from(([0, 0, 0, 0], port))),
    }
}

fn node(services: Vec<ServiceInputs>) -> NodeInputs {
    NodeInputs {
        steering: Steering::FullAds,
        filter: FilterKind::Wasm {
            path: "/etc/envoy/doppel_filter.wasm".to_owned(),
            split_path: None,
        },
        services,
        access_log: Some("doppel_accesslog".to_owned()),
    }
}

pub fn benches(c: &mut Criterion) {
    let policy = data::checkout();
    let rollout = started(&policy);
    let mut group = c.benchmark_group("xds");
    group.bench_function("traffic_state_and_filter_config", |b| {
        b.iter(|| {
            let state = TrafficState::desired(&rollout, &policy, Steering::FullAds);
            filter_config(&policy, &state)
        })
    });
    let one = node(vec![service(&policy, &rollout, 10_000)]);
    group.bench_function("render_1_service", |b| b.iter(|| render(&one, 2)));
    // Ten services on one node, each with its own policy name (and so its own clusters).
    let ten = node(
        (0..10u16)
            .map(|i| {
                let mut p = policy.clone();
                p.service = format!("checkout{i}");
                p.primary.cluster = format!("checkout{i}-v41");
                p.shadow_cluster = format!("checkout{i}-v42");
                service(&p, &started(&p), 10_000 + i)
            })
            .collect(),
    );
    group.bench_function("render_10_services", |b| b.iter(|| render(&ten, 2)));
    let cache = SnapshotCache::new();
    group.bench_function("set_snapshot_1_service", |b| {
        b.iter_batched(
            || render(&one, cache.next_version("envoy-7")).expect("renders"),
            |snapshot| cache.set_snapshot("envoy-7", snapshot),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}
