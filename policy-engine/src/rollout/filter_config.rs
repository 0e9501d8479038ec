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

use doppel_filter::config::{FilterConfig, Sender};

use super::traffic::{FilterMode, TrafficState};
use crate::policy::{Mode, Policy};
use crate::xds::build::{extension_config, pack};

/// How the filter's config is packed for ECDS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterKind {
    /// No filter in the listener (full ADS only): routes alone steer.
    #[default]
    None,
    /// The doppel Wasm filter loaded from `path`.
    Wasm {
        /// The `.wasm` file on Envoy's host (doppel_filter.wasm: splits and mirrors).
        path: String,
        /// The split-only build on Envoy's host (doppel_filter_split.wasm), pushed instead of
        /// `path` unless the filter sends copies itself (it splits, is off, or mirrors with
        /// `mirror.sender: envoy`): it exports no body callbacks, so Envoy calls into it one
        /// time less per request with a body. A switch to or from the filter sending copies then
        /// loads the other module (Envoy starts a new VM for it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split_path: Option<String>,
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

    /// The ECDS resource `name` carrying `config`, or `None` for no filter. `parsed` is the
    /// filter's reading of `config` ([`parsed`]), which picks the module.
    pub fn extension(
        &self,
        name: &str,
        config: &Value,
        parsed: Option<&FilterConfig>,
    ) -> Option<TypedExtensionConfig> {
        let text = config.to_string();
        match self {
            FilterKind::None => None,
            FilterKind::Wasm { path, split_path } => {
                let code = match split_path {
                    Some(split) if !sends_copies(parsed) => split,
                    _ => path,
                };
                let vm = VmConfig {
                    vm_id: "doppel".to_owned(),
                    runtime: "envoy.wasm.runtime.v8".to_owned(),
                    code: Some(AsyncDataSource {
                        specifier: Some(AsyncSpecifier::Local(DataSource {
                            specifier: Some(Specifier::Filename(code.clone())),
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

/// The filter's own reading of a config document (`None`: it would refuse it).
pub fn parsed(config: &Value) -> Option<FilterConfig> {
    FilterConfig::parse(config.to_string().as_bytes()).ok()
}

/// Whether a filter config has the filter send copies itself (mirror mode, unless
/// `mirror.sender` is `envoy`): only the full build can. A config the filter would refuse
/// (`None`) gets the full build, which refuses every config the split-only one does.
fn sends_copies(config: Option<&FilterConfig>) -> bool {
    config.is_none_or(|c| c.sender() == Some(Sender::Filter))
}

/// When a filter config has Envoy's router send the copies (mirror mode, `mirror.sender:
/// envoy`): the header the filter names the shadow's cluster in and the header that marks a copy,
/// for the route's mirror policy ([`crate::xds::build::header_mirror`]).
pub fn envoy_mirror(config: &FilterConfig) -> Option<(String, String)> {
    let h = &config.headers;
    (config.sender() == Some(Sender::Envoy)).then(|| {
        (
            h.mirror_to.as_str().to_owned(),
            h.mirror.as_str().to_owned(),
        )
    })
}

/// `config` for a filter whose control headers Envoy's connection manager strips before it runs
/// (`strip_control: envoy`: it no longer reads every request's headers to find them) and, with
/// `pool` (per million, [`pool_per_million`]), that Envoy's route runs on that share of requests
/// only (`pool_percent`).
pub fn stripped_by_envoy(config: &Value, pool: Option<u32>) -> Value {
    let mut pushed = config.clone();
    if let Some(fields) = pushed.as_object_mut() {
        fields.insert("strip_control".to_owned(), json!("envoy"));
        if let Some(per_million) = pool {
            fields.insert("pool_percent".to_owned(), json!(pool_percent(per_million)));
        }
    }
    pushed
}

/// A pool's share of requests per million as a percent.
pub fn pool_percent(per_million: u32) -> f64 {
    f64::from(per_million) / 10_000.0
}

/// The pool Envoy's route draws for a filter whose control headers Envoy strips, in requests
/// per million: the smallest that holds every request `config` chooses or measures, rounded up
/// to the route's precision. `None` when the filter must see every request: a sticky key keeps a
/// user's variant, which a random pool cannot, and a pool of every request saves nothing.
///
/// ```
/// # use doppel_engine::rollout::filter_config::pool_per_million;
/// use doppel_filter::config::{FilterConfig, Mode, Percent, ServiceName};
/// let mut c = FilterConfig::new(ServiceName::new("cart").unwrap(), Mode::Split, Percent::new(1.0).unwrap());
/// assert_eq!(pool_per_million(&c), Some(59_500)); // 1 % chosen, 5 % of the rest measured
/// c.percent = Percent::new(20.0).unwrap();
/// assert_eq!(pool_per_million(&c), None); // 20 % chosen, all the rest measured
/// ```
pub fn pool_per_million(config: &FilterConfig) -> Option<u32> {
    if config.sticky.is_some() {
        return None;
    }
    // In (0, 1e6] after the clamp: the cast cannot truncate.
    let per_million = (config.smallest_pool_percent() * 10_000.0)
        .ceil()
        .clamp(1.0, 1e6) as u32;
    (per_million < 1_000_000).then_some(per_million)
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The module file the pushed extension loads for a filter in `mode` (`mirror/envoy`: mirror
    /// mode with `mirror.sender: envoy`).
    fn module(kind: &FilterKind, mode: &str) -> String {
        let mut config = json!({ "service": "cart", "mode": mode, "percent": 1.0 });
        if let Some((mode, sender)) = mode.split_once('/') {
            config["mode"] = json!(mode);
            config["mirror"] = json!({ "cluster": "cart-next", "sender": sender });
        }
        let extension = kind
            .extension("doppel-cart", &config, parsed(&config).as_ref())
            .expect("a Wasm filter");
        let any = extension.typed_config.expect("typed config");
        assert_eq!(any.type_url, Wasm::type_url());
        let wasm = Wasm::decode(any.value.as_slice()).expect("decodes");
        let plugin = wasm.config.expect("plugin config");
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else {
            panic!("no VM config");
        };
        let code = vm.code.and_then(|c| c.specifier);
        let Some(AsyncSpecifier::Local(DataSource {
            specifier: Some(Specifier::Filename(file)),
            ..
        })) = code
        else {
            panic!("no local file: {code:?}");
        };
        file
    }

    #[test]
    fn the_split_build_is_pushed_unless_the_filter_sends_copies() {
        let both = FilterKind::Wasm {
            path: "/f/doppel_filter.wasm".into(),
            split_path: Some("/f/doppel_filter_split.wasm".into()),
        };
        assert_eq!(module(&both, "split"), "/f/doppel_filter_split.wasm");
        assert_eq!(module(&both, "off"), "/f/doppel_filter_split.wasm");
        assert_eq!(module(&both, "mirror"), "/f/doppel_filter.wasm");
        assert_eq!(module(&both, "mirror/filter"), "/f/doppel_filter.wasm");
        assert_eq!(module(&both, "mirror/envoy"), "/f/doppel_filter_split.wasm");
        let one = FilterKind::Wasm {
            path: "/f/doppel_filter.wasm".into(),
            split_path: None,
        };
        for mode in ["split", "off", "mirror", "mirror/envoy"] {
            assert_eq!(module(&one, mode), "/f/doppel_filter.wasm", "{mode}");
        }
        assert!(
            FilterKind::None
                .extension("doppel-cart", &json!({}), None)
                .is_none()
        );
    }
}
