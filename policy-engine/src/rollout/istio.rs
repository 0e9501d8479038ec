//! Istio manifests for a policy: a WasmPlugin carrying the filter's config, a VirtualService
//! (the variant-header route to the shadow subset, then the weighted split) and a
//! DestinationRule with the `primary` and `shadow` subsets. Pods are told apart by the label
//! `version`, set to the policy's cluster names; weights are whole percent (Istio's unit).

use serde_json::{Value, json};

use super::filter_config::filter_config;
use super::machine::{PlanStep, Rollout};
use super::traffic::{Steering, TrafficState};
use crate::policy::Policy;

/// What the manifests need besides the policy.
#[derive(Clone, Debug)]
pub struct IstioOptions {
    /// The Kubernetes service host (default: the policy's service).
    pub host: String,
    /// The namespace of the three resources.
    pub namespace: String,
    /// Where Istio fetches the filter (`oci://...`, `https://...`, `file://...`).
    pub wasm_url: String,
    /// The shadow's share in the weighted route, whole percent.
    pub shadow_weight: u32,
}

/// The three documents, in apply order (DestinationRule first: the subsets must exist).
pub fn manifests(policy: &Policy, options: &IstioOptions) -> Vec<Value> {
    let name = format!("doppel-{}", policy.service);
    let metadata = json!({ "name": name, "namespace": options.namespace });
    let host = &options.host;
    let variant = policy
        .traffic
        .headers
        .variant
        .clone()
        .unwrap_or_else(|| "x-doppel-variant".to_owned());
    let mut rollout = Rollout::new(
        &policy.service,
        &policy.steps,
        PlanStep {
            weight: policy.traffic.percent.get(),
            hold_ms: 0,
        },
    );
    // The filter as a started rollout runs it: the policy's mode and share.
    let _ = rollout.apply(&super::machine::Input::Command {
        command: super::machine::Command::Start {
            version: "render".to_owned(),
        },
        now_ms: 0,
    });
    let state = TrafficState::desired(&rollout, policy, Steering::FullAds);
    let shadow = options.shadow_weight.min(100);
    let subset = |name: &str| json!({ "host": host, "subset": name });
    vec![
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": metadata,
            "spec": {
                "host": host,
                "subsets": [
                    { "name": "primary", "labels": { "version": policy.primary.cluster } },
                    { "name": "shadow", "labels": { "version": policy.shadow_cluster } },
                ],
            },
        }),
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": metadata,
            "spec": {
                "hosts": [host],
                "http": [
                    {
                        "name": "doppel-shadow",
                        "match": [{ "headers": { variant: { "exact": "shadow" } } }],
                        "route": [{ "destination": subset("shadow") }],
                    },
                    {
                        "name": "doppel-split",
                        "route": [
                            { "destination": subset("primary"), "weight": 100 - shadow },
                            { "destination": subset("shadow"), "weight": shadow },
                        ],
                    },
                ],
            },
        }),
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": metadata,
            "spec": {
                "selector": { "matchLabels": { "app": policy.service } },
                "url": options.wasm_url,
                "pluginName": "doppel",
                "failStrategy": "FAIL_OPEN",
                "pluginConfig": filter_config(policy, &state),
            },
        }),
    ]
}

/// `value` as a YAML document: block maps and lists, every string double-quoted (JSON string
/// syntax is YAML's double-quoted scalar syntax).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Object(m) if m.is_empty() => "{}".to_owned(),
        Value::Array(a) if a.is_empty() => "[]".to_owned(),
        other => other.to_string(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn emit(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                let key = Value::String(key.clone()).to_string();
                if is_block(item) {
                    out.push_str(&format!("{pad}{key}:\n"));
                    emit(item, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(item)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    out.push_str(&format!("{pad}-\n"));
                    emit(item, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}
