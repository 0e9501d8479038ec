//! The filter's JSON config (docs/filter-config.md) for a policy in a given traffic state, and
//! how it is wrapped for ECDS: the Wasm filter, or a Lua stand-in for tests and hosts without
//! the built `.wasm` (it echoes the config in a response header).

use envoy_types::pb::envoy::config::core::v3::async_data_source::Specifier as AsyncSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{AsyncDataSource, DataSource, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::filters::http::lua::v3::Lua;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
use envoy_types::pb::google::protobuf::StringValue;
use prost::Name;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::traffic::{FilterMode, TrafficState};
use crate::policy::{MatchTest, Policy, Sticky};
use crate::xds::build::{extension_config, pack};

/// The response header the Lua stand-in writes the config it runs into.
pub const STAND_IN_HEADER: &str = "x-doppel-filter-config";

/// How the filter's config is packed for ECDS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FilterKind {
    /// No filter in the listener (full ADS only): routes alone steer.
    #[default]
    None,
    /// The doppel Wasm filter loaded from `path`.
    Wasm {
        /// The `.wasm` file on Envoy's host.
        path: String,
    },
    /// A Lua filter that adds the config as the response header [`STAND_IN_HEADER`].
    LuaStandIn,
}

impl FilterKind {
    /// The type URL of the config this kind pushes, or `None` for no filter.
    pub fn type_url(&self) -> Option<String> {
        match self {
            FilterKind::None => None,
            FilterKind::Wasm { .. } => Some(Wasm::type_url()),
            FilterKind::LuaStandIn => Some(Lua::type_url()),
        }
    }

    /// The ECDS resource `name` carrying `config`, or `None` for no filter.
    pub fn extension(&self, name: &str, config: &Value) -> Option<TypedExtensionConfig> {
        let text = config.to_string();
        match self {
            FilterKind::None => None,
            FilterKind::Wasm { path } => {
                let vm = VmConfig {
                    vm_id: "doppel".to_owned(),
                    runtime: "envoy.wasm.runtime.v8".to_owned(),
                    code: Some(AsyncDataSource {
                        specifier: Some(AsyncSpecifier::Local(DataSource {
                            specifier: Some(Specifier::Filename(path.clone())),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                };
                let wasm = Wasm {
                    config: Some(PluginConfig {
                        name: name.to_owned(),
                        configuration: Some(pack(&StringValue { value: text })),
                        vm: Some(plugin_config::Vm::VmConfig(vm)),
                        ..Default::default()
                    }),
                };
                Some(extension_config(name, &wasm))
            }
            FilterKind::LuaStandIn => {
                // A Lua long string ends at its own closing bracket: pick a level the text lacks.
                let level = (0..)
                    .map(|n| "=".repeat(n))
                    .find(|eq| !text.contains(&format!("]{eq}]")))
                    .unwrap_or_default();
                let code = format!(
                    "function envoy_on_response(handle)\n  handle:headers():add(\"{STAND_IN_HEADER}\", [{level}[{text}]{level}])\nend\n"
                );
                let lua = Lua {
                    default_source_code: Some(DataSource {
                        specifier: Some(Specifier::InlineString(code)),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                Some(extension_config(name, &lua))
            }
        }
    }
}

/// The filter's config for `policy` in `state`, as docs/filter-config.md defines it.
pub fn filter_config(policy: &Policy, state: &TrafficState) -> Value {
    let traffic = &policy.traffic;
    let mode = state.filter_mode.as_str();
    let matchers: Vec<Value> = traffic
        .matchers
        .iter()
        .map(|m| match &m.test {
            MatchTest::Equals(v) => json!({ "header": m.header, "equals": v }),
            MatchTest::Prefix(v) => json!({ "header": m.header, "prefix": v }),
            MatchTest::OneOf(v) => json!({ "header": m.header, "one_of": v }),
        })
        .collect();
    let mut config = json!({
        "service": policy.service,
        "mode": mode,
        "percent": state.filter_percent,
        "match": matchers,
        "custom_metrics": traffic.custom_metrics,
        "trusted_control": traffic.trusted_control,
    });
    let mut headers = serde_json::Map::new();
    for (key, value) in [
        ("variant", &traffic.headers.variant),
        ("id", &traffic.headers.id),
        ("mirror", &traffic.headers.mirror),
    ] {
        if let Some(value) = value {
            headers.insert(key.to_owned(), json!(value));
        }
    }
    if !headers.is_empty() {
        config["headers"] = Value::Object(headers);
    }
    match &traffic.sticky {
        Some(Sticky::Header(h)) => config["sticky"] = json!({ "header": h }),
        Some(Sticky::Cookie(c)) => config["sticky"] = json!({ "cookie": c }),
        None => {}
    }
    if state.filter_mode == FilterMode::Mirror {
        let mut mirror = json!({ "cluster": state.shadow_cluster });
        if let Some(m) = &traffic.mirror {
            let fields = [
                ("authority", m.authority.as_ref().map(|v| json!(v))),
                ("methods", m.methods.as_ref().map(|v| json!(v))),
                ("max_body_bytes", m.max_body_bytes.map(|v| json!(v))),
                ("timeout_ms", m.timeout_ms.map(|v| json!(v))),
                ("max_in_flight", m.max_in_flight.map(|v| json!(v))),
                ("compare_body_bytes", m.compare_body_bytes.map(|v| json!(v))),
                (
                    "latency_tolerance_ms",
                    m.latency_tolerance_ms.map(|v| json!(v)),
                ),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    mirror[key] = value;
                }
            }
        }
        config["mirror"] = mirror;
    }
    config
}
