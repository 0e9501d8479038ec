//! A policy's `resources:` section: where Prometheus is, how to select each variant's series,
//! and which queries to run.

use std::collections::BTreeMap;

use doppel_filter::names::Variant;
use serde::Deserialize;

use super::ResourcesError;

/// The built-in queries, used unless `defaults: false`; a custom query of the same name
/// replaces one. `{{selector}}` becomes the config's `selector` (which names `{{variant}}`),
/// `{{window}}` the rate window.
pub const DEFAULT_QUERIES: [(&str, &str); 3] = [
    // CPU cores in use.
    (
        "cpu",
        "sum(rate(process_cpu_seconds_total{ {{selector}} }[{{window}}]))",
    ),
    // Resident memory, bytes.
    (
        "memory",
        "sum(process_resident_memory_bytes{ {{selector}} })",
    ),
    // Disk bytes read and written per second (cAdvisor's container metrics).
    (
        "io",
        "sum(rate(container_fs_reads_bytes_total{ {{selector}} }[{{window}}])) + sum(rate(container_fs_writes_bytes_total{ {{selector}} }[{{window}}]))",
    ),
];

/// The placeholders a query template may use.
const PLACEHOLDERS: [&str; 3] = ["{{variant}}", "{{selector}}", "{{window}}"];

/// The `resources:` section of a policy.
///
/// ```
/// use doppel_engine::resources::ResourcesConfig;
/// use doppel_filter::names::Variant;
/// let config: ResourcesConfig = serde_json::from_str(r#"{
///     "prometheus": "http://127.0.0.1:9090",
///     "variants": {"primary": "checkout-v1", "shadow": "checkout-v2"},
///     "queries": {"gc_pause": "max(gc_pause_seconds{job=\"{{variant}}\"})"}
/// }"#).unwrap();
/// config.validate().unwrap();
/// let queries = config.queries_for(Variant::Shadow);
/// assert_eq!(queries["gc_pause"], r#"max(gc_pause_seconds{job="checkout-v2"})"#);
/// assert_eq!(queries["memory"], r#"sum(process_resident_memory_bytes{ job="checkout-v2" })"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Prometheus' base URL, for example `http://prometheus:9090`.
    pub prometheus: String,
    /// The value `{{variant}}` takes for each variant.
    #[serde(default)]
    pub variants: VariantNames,
    /// The label matchers that pick one variant's series, `{{selector}}` in the queries.
    #[serde(default = "default_selector")]
    pub selector: String,
    /// The rate window, `{{window}}` in the queries (a PromQL duration such as `1m`).
    #[serde(default = "default_window")]
    pub window: String,
    /// Whether to run the built-in `cpu`, `memory` and `io` queries.
    #[serde(default = "default_true")]
    pub defaults: bool,
    /// More queries by name; the name is the field in `primary.resources` / `shadow.resources`.
    #[serde(default)]
    pub queries: BTreeMap<String, String>,
    /// Time limit of one query, in milliseconds (also passed to Prometheus as its `timeout`).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// What `{{variant}}` becomes for each variant (for example the scrape job or deployment name).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantNames {
    /// For the primary; defaults to `primary`.
    pub primary: String,
    /// For the shadow; defaults to `shadow`.
    pub shadow: String,
}

impl Default for VariantNames {
    fn default() -> Self {
        Self {
            primary: "primary".to_owned(),
            shadow: "shadow".to_owned(),
        }
    }
}

fn default_selector() -> String {
    r#"job="{{variant}}""#.to_owned()
}

fn default_window() -> String {
    "1m".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    2_000
}

impl ResourcesConfig {
    /// The name `{{variant}}` takes for `variant`.
    pub fn variant_name(&self, variant: Variant) -> &str {
        match variant {
            Variant::Primary => &self.variants.primary,
            Variant::Shadow => &self.variants.shadow,
        }
    }

    /// Every query by name, templates not yet filled: the defaults (if on), then the custom ones.
    pub fn templates(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        if self.defaults {
            for (name, template) in DEFAULT_QUERIES {
                all.insert(name.to_owned(), template.to_owned());
            }
        }
        all.extend(self.queries.clone());
        all
    }

    /// Every query by name, filled in for `variant`.
    pub fn queries_for(&self, variant: Variant) -> BTreeMap<String, String> {
        let selector = self
            .selector
            .replace("{{variant}}", self.variant_name(variant));
        self.templates()
            .into_iter()
            .map(|(name, template)| {
                let query = template
                    .replace("{{selector}}", &selector)
                    .replace("{{window}}", &self.window)
                    .replace("{{variant}}", self.variant_name(variant));
                (name, query)
            })
            .collect()
    }

    /// Checks the URL, the names (usable as CEL fields), the window, the variant names (safe
    /// inside a PromQL string) and that templates use only known placeholders.
    pub fn validate(&self) -> Result<(), ResourcesError> {
        let fail = |msg: String| Err(ResourcesError::Config(msg));
        let url = url::Url::parse(&self.prometheus)
            .map_err(|e| ResourcesError::Config(format!("resources.prometheus: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return fail(format!(
                "resources.prometheus: scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        if self.timeout_ms == 0 {
            return fail("resources.timeout_ms must be at least 1".to_owned());
        }
        if !is_promql_duration(&self.window) {
            return fail(format!(
                "resources.window: {:?} is not a PromQL duration such as 30s or 1m",
                self.window
            ));
        }
        for (field, name) in [
            ("primary", &self.variants.primary),
            ("shadow", &self.variants.shadow),
        ] {
            if name.is_empty() || name.contains(['"', '\\', '\n', '{', '}']) {
                return fail(format!(
                    "resources.variants.{field}: {name:?} must be non-empty without quotes, backslashes or braces"
                ));
            }
        }
        check_placeholders("resources.selector", &self.selector)?;
        let templates = self.templates();
        if templates.is_empty() {
            return fail("resources: no queries (defaults are off and none are named)".to_owned());
        }
        for (name, template) in &templates {
            let is_ident = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_ident {
                return fail(format!(
                    "resources.queries: name {name:?} must be an identifier (letters, digits, _)"
                ));
            }
            if template.trim().is_empty() {
                return fail(format!("resources.queries.{name}: the query is empty"));
            }
            check_placeholders(&format!("resources.queries.{name}"), template)?;
        }
        Ok(())
    }
}

/// Every `{{...}}` in `text` is a known placeholder.
fn check_placeholders(field: &str, text: &str) -> Result<(), ResourcesError> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let tail = &rest[start..];
        let end = tail.find("}}").map(|e| e + 2).unwrap_or(tail.len());
        let placeholder = &tail[..end];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(ResourcesError::Config(format!(
                "{field}: unknown placeholder {placeholder:?} (known: {})",
                PLACEHOLDERS.join(", ")
            )));
        }
        rest = &tail[end..];
    }
    Ok(())
}

/// A PromQL duration: one or more `<digits><unit>` with units ms, s, m, h, d, w, y.
fn is_promql_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}
