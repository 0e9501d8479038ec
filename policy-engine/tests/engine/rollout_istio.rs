//! `doppel render istio`: each document validates against Istio's CRD OpenAPI schema
//! (`../shared/schemas/istio/`, see its SOURCE.md) and says what the policy says.

use std::path::PathBuf;

use doppel_engine::policy::parse;
use doppel_engine::rollout::istio::{IstioOptions, manifests, to_yaml};
use serde_json::Value;

const POLICY: &str = r#"service: checkout
primary:
  cluster: checkout-v1
shadow:
  cluster: checkout-v2
traffic:
  mode: split
  percent: 2.5
  headers:
    variant: x-canary
analysis:
  interval: 10s
  min_sample: 100
  alpha: 0.01
rules:
  - name: errors
    when: compare.errors.worse
    action: rollback
steps:
  - weight: 10
    hold: 5m
"#;

fn schema_dir() -> PathBuf {
    // CI has shared/ beside the clone; a worktree has it at /work/shared.
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas/istio");
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/schemas/istio")
    }
}

fn validate(document: &Value, schema_file: &str) {
    let path = schema_dir().join(schema_file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema_file}: {errors:#?}\n{document:#}"
    );
}

#[test]
fn rollout_istio_manifests_validate_against_istio_schemas() {
    let policy = parse(POLICY).expect("policy");
    let options = IstioOptions {
        host: "checkout.shop.svc.cluster.local".into(),
        namespace: "shop".into(),
        wasm_url: "oci://ghcr.io/doppel/filter:0.1.0".into(),
        shadow_weight: 10,
    };
    let docs = manifests(&policy, &options);
    let yaml: String = docs
        .iter()
        .map(|d| format!("---\n{}", to_yaml(d)))
        .collect();
    // What a user applies is the YAML: parse it back and validate that.
    let parsed: Vec<Value> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).expect("rendered YAML parses"))
        .collect();
    assert_eq!(parsed, docs, "YAML round trip");
    let kinds: Vec<&str> = parsed.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["DestinationRule", "VirtualService", "WasmPlugin"]);
    validate(&parsed[0], "destinationrule_v1.json");
    validate(&parsed[1], "virtualservice_v1.json");
    validate(&parsed[2], "wasmplugin_v1alpha1.json");

    let vs = &parsed[1]["spec"]["http"];
    assert_eq!(vs[0]["match"][0]["headers"]["x-canary"]["exact"], "shadow");
    assert_eq!(vs[1]["route"][0]["weight"], 90);
    assert_eq!(vs[1]["route"][1]["weight"], 10);
    assert_eq!(
        parsed[0]["spec"]["subsets"][1]["labels"]["version"],
        "checkout-v2"
    );
    let config = &parsed[2]["spec"]["pluginConfig"];
    assert_eq!(
        (config["mode"].as_str(), config["percent"].as_f64()),
        (Some("split"), Some(2.5))
    );
}

#[test]
fn rollout_istio_schema_refuses_a_broken_document() {
    // The validator is live: a VirtualService whose weight is a string fails.
    let policy = parse(POLICY).expect("policy");
    let options = IstioOptions {
        host: "checkout".into(),
        namespace: "default".into(),
        wasm_url: "oci://x/y:1".into(),
        shadow_weight: 0,
    };
    let mut vs = manifests(&policy, &options).remove(1);
    vs["spec"]["http"][1]["route"][0]["weight"] = Value::String("ninety".into());
    let text =
        std::fs::read_to_string(schema_dir().join("virtualservice_v1.json")).expect("schema");
    let schema: Value = serde_json::from_str(&text).expect("json");
    assert!(
        !jsonschema::validator_for(&schema)
            .expect("compiles")
            .is_valid(&vs)
    );
}
