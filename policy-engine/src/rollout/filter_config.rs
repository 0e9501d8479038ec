//! The filter's JSON config (docs/filter-config.md) for a policy in a given traffic state, and
//! how it is wrapped for ECDS as the Wasm filter's `PluginConfig`.

use envoy_types::pb::envoy::config::core::v3::async_data_source::Specifier as AsyncSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{AsyncDataSource, DataSource, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
use envoy_types::pb::google::protobuf::StringValue;
use prost::Name;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::traffic::{FilterMode, TrafficState};
use crate::policy::{Mode, Policy};
use crate::xds::build::{extension_config, pack};

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
}

impl FilterKind {
    /// The type URL of the config this kind pushes, or `None` for no filter.
    pub fn type_url(&self) -> Option<String> {
        match self {
            FilterKind::None => None,
            FilterKind::Wasm { .. } => Some(Wasm::type_url()),
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
        }
    }
}

/// The filter's config for `policy` in `state`, as docs/filter-config.md defines it: the
/// policy's own builder ([`Policy::filter_config`]) at the state's mode, share and shadow
/// cluster.
pub fn filter_config(policy: &Policy, state: &TrafficState) -> Value {
    let mode = match state.filter_mode {
        FilterMode::Split => Mode::Split,
        FilterMode::Mirror => Mode::Mirror,
        FilterMode::Off => Mode::Off,
    };
    match policy.filter_config(mode, state.filter_percent, &state.shadow_cluster) {
        Ok(config) => serde_json::to_value(config).unwrap_or(Value::Null),
        // A loaded policy's traffic section passed the filter's parser (policy validation),
        // and the rollout only changes the mode and a share in [0, 100]; should that ever
        // fail, the filter is switched off rather than sent a config it would refuse.
        Err(e) => {
            tracing::error!(service = %policy.service, error = %e, "filter config refused; filter off");
            json!({ "service": policy.service, "mode": "off", "percent": 0.0 })
        }
    }
}
