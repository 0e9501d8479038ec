//! Fills the templates in `envoy/` (the same rules as `scripts/render-envoy`): every
//! placeholder, a name in double braces, needs a value, and every value a placeholder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::procs::{RunDir, filter_wasm, workspace_root};

/// The folder of Envoy templates.
pub fn envoy_dir() -> PathBuf {
    workspace_root().join("envoy")
}

/// `template` with each placeholder replaced by its value from `values`.
///
/// ```
/// use doppel_tests::envoy_config::render;
/// let out = render("port: {{port}}", &[("port", "80".to_string())]).unwrap();
/// assert_eq!(out, "port: 80");
/// assert!(render("port: {{port}}", &[]).is_err());
/// assert!(render("port: 1", &[("port", "80".to_string())]).is_err());
/// ```
pub fn render(template: &str, values: &[(&str, String)]) -> Result<String> {
    let values: BTreeMap<&str, &String> = values.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = String::with_capacity(template.len());
    let mut used = BTreeMap::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            bail!("an unclosed placeholder at {:?}", &rest[start..]);
        };
        let name = &rest[start + 2..start + 2 + len];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            bail!("{{{{{name}}}}} is not a placeholder name ([a-z_]+)");
        }
        let Some(value) = values.get(name) else {
            bail!("no value for placeholder {name}");
        };
        out.push_str(&rest[..start]);
        out.push_str(value);
        used.insert(name, ());
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    if let Some(unused) = values.keys().find(|k| !used.contains_key(*k)) {
        bail!("no placeholder named {unused}");
    }
    Ok(out)
}

/// The template `envoy/<name>` filled with `values`.
pub fn render_file(name: &str, values: &[(&str, String)]) -> Result<String> {
    let path = envoy_dir().join(name);
    let template =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    render(&template, values).with_context(|| format!("rendering {}", path.display()))
}

/// `text` as one quoted string that YAML and JSON both read back as `text`.
pub fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// A filter config, compacted and quoted: the value of the `filter_config` placeholder.
pub fn filter_config_value(config: &Value) -> String {
    quoted(&config.to_string())
}

/// A rendered bootstrap ready for [`crate::envoy::Envoy::start`].
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The rendered file.
    pub path: PathBuf,
    /// Where its JSON access log goes.
    pub access_log: PathBuf,
}

/// The ports of the two upstreams a bootstrap routes to.
#[derive(Clone, Copy, Debug)]
pub struct Upstreams {
    /// The primary's port on 127.0.0.1.
    pub primary: u16,
    /// The shadow's port on 127.0.0.1.
    pub shadow: u16,
}

fn common_values(
    dir: &RunDir,
    name: &str,
    up: Upstreams,
) -> (PathBuf, Vec<(&'static str, String)>) {
    let access_log = dir.join(&format!("access-{name}.jsonl"));
    let values = vec![
        ("admin_port", "0".to_string()),
        ("listen_port", "0".to_string()),
        ("primary_port", up.primary.to_string()),
        ("shadow_port", up.shadow.to_string()),
        ("access_log", quoted(&access_log.to_string_lossy())),
    ];
    (access_log, values)
}

fn write(dir: &RunDir, name: &str, text: &str, access_log: PathBuf) -> Result<Bootstrap> {
    let path = dir.join(&format!("envoy-{name}.yaml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(Bootstrap { path, access_log })
}

/// Renders `envoy/<template>` (`split.yaml` or `mirror.yaml`) with the built filter and
/// `filter_config` into `dir`, as `envoy-<name>.yaml`.
pub fn inline_bootstrap(
    dir: &RunDir,
    name: &str,
    template: &str,
    up: Upstreams,
    filter_config: &Value,
) -> Result<Bootstrap> {
    let (access_log, mut values) = common_values(dir, name, up);
    values.push(("wasm_path", quoted(&filter_wasm().to_string_lossy())));
    values.push(("filter_config", filter_config_value(filter_config)));
    let text = render_file(template, &values)?;
    write(dir, name, &text, access_log)
}

/// Renders `envoy/split-ecds.yaml` into `dir`: the filter's config comes from `ecds_dir`, which
/// [`write_ecds_resource`] must fill before Envoy starts.
pub fn ecds_bootstrap(
    dir: &RunDir,
    name: &str,
    up: Upstreams,
    ecds_dir: &Path,
) -> Result<Bootstrap> {
    let (access_log, mut values) = common_values(dir, name, up);
    values.push(("ecds_dir", quoted(&ecds_dir.to_string_lossy())));
    values.push((
        "ecds_path",
        quoted(&ecds_dir.join("doppel.yaml").to_string_lossy()),
    ));
    let text = render_file("split-ecds.yaml", &values)?;
    write(dir, name, &text, access_log)
}

/// Writes version `version` of the doppel filter's ECDS resource into `ecds_dir` atomically
/// (a temporary file renamed over `doppel.yaml`), which is what Envoy's file watch reacts to.
pub fn write_ecds_resource(ecds_dir: &Path, version: &str, filter_config: &Value) -> Result<()> {
    let text = render_file(
        "ecds/doppel.yaml",
        &[
            ("version", version.to_string()),
            ("wasm_path", quoted(&filter_wasm().to_string_lossy())),
            ("filter_config", filter_config_value(filter_config)),
        ],
    )?;
    std::fs::create_dir_all(ecds_dir)
        .with_context(|| format!("creating {}", ecds_dir.display()))?;
    let tmp = ecds_dir.join(format!(".doppel.yaml.{version}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let path = ecds_dir.join("doppel.yaml");
    std::fs::rename(&tmp, &path).with_context(|| format!("moving into {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_survive_yaml_and_json() {
        let config = serde_json::json!({"service": "a\"b", "percent": 1.0});
        let value = filter_config_value(&config);
        let back: String = serde_json::from_str(&value).expect("a JSON string");
        assert_eq!(serde_json::from_str::<Value>(&back).expect("JSON"), config);
    }

    #[test]
    fn every_shipped_template_names_only_known_placeholders() {
        let known = [
            "admin_port",
            "listen_port",
            "primary_port",
            "shadow_port",
            "access_log",
            "wasm_path",
            "filter_config",
            "ecds_dir",
            "ecds_path",
            "version",
        ];
        for name in [
            "split.yaml",
            "mirror.yaml",
            "split-ecds.yaml",
            "ecds/doppel.yaml",
        ] {
            let text = std::fs::read_to_string(envoy_dir().join(name)).expect("template");
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").expect("closed") + start;
                let placeholder = &rest[start + 2..end];
                assert!(known.contains(&placeholder), "{name}: {placeholder}");
                rest = &rest[end + 2..];
            }
        }
    }
}
