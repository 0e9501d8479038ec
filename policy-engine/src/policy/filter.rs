//! The filter's config (docs/filter-config.md) built from a policy's traffic section: what
//! the engine pushes to Envoy (ECDS) for this policy's service, in whatever mode and share the
//! rollout has reached.
//!
//! The document is built as JSON and read back by the filter's own parser
//! ([`FilterConfig::parse`], which also runs its cross-field checks): the filter crate holds the
//! one definition of the config, and a policy that would give the filter a config it refuses is
//! refused at `doppel check`. Fields the policy leaves out are left out, so the filter's defaults
//! apply.

use doppel_filter::config::{ConfigError, FilterConfig};
use serde_json::{Map, Value, json};

use super::model::{MatchTest, Mode, Policy, Sticky};

impl Policy {
    /// The filter's config for this policy with the filter in `mode` at `percent` (the
    /// rollout's current share); in mirror mode copies go to `shadow_cluster`.
    ///
    /// ```
    /// use doppel_engine::policy::Mode;
    /// let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/search-mirror.yaml")).unwrap();
    /// let policy = doppel_engine::policy::parse(&text).unwrap();
    /// let config = policy.filter_config(Mode::Mirror, 20.0, "search-next").unwrap();
    /// assert_eq!(config.percent.get(), 20.0);
    /// assert_eq!(config.mirror.unwrap().cluster.as_str(), "search-next");
    /// ```
    pub fn filter_config(
        &self,
        mode: Mode,
        percent: f64,
        shadow_cluster: &str,
    ) -> Result<FilterConfig, ConfigError> {
        let document = self.filter_document(mode, percent, shadow_cluster);
        FilterConfig::parse(document.to_string().as_bytes())
    }

    /// The JSON document [`Policy::filter_config`] parses.
    fn filter_document(&self, mode: Mode, percent: f64, shadow_cluster: &str) -> Value {
        let t = &self.traffic;
        let mut doc = Map::new();
        doc.insert("service".into(), json!(self.service));
        let mode_name = match mode {
            Mode::Split => "split",
            Mode::Mirror => "mirror",
            Mode::Off => "off",
        };
        doc.insert("mode".into(), json!(mode_name));
        doc.insert("percent".into(), json!(percent));
        if !t.matchers.is_empty() {
            let matchers: Vec<Value> = t
                .matchers
                .iter()
                .map(|m| match &m.test {
                    MatchTest::Equals(v) => json!({"header": m.header, "equals": v}),
                    MatchTest::Prefix(v) => json!({"header": m.header, "prefix": v}),
                    MatchTest::OneOf(v) => json!({"header": m.header, "one_of": v}),
                })
                .collect();
            doc.insert("match".into(), Value::Array(matchers));
        }
        match &t.sticky {
            Some(Sticky::Header(h)) => {
                doc.insert("sticky".into(), json!({"header": h}));
            }
            Some(Sticky::Cookie(c)) => {
                doc.insert("sticky".into(), json!({"cookie": c}));
            }
            None => {}
        }
        let mut headers = Map::new();
        for (key, value) in [
            ("variant", &t.headers.variant),
            ("id", &t.headers.id),
            ("mirror", &t.headers.mirror),
            ("mirror_to", &t.headers.mirror_to),
        ] {
            if let Some(v) = value {
                headers.insert(key.into(), json!(v));
            }
        }
        if !headers.is_empty() {
            doc.insert("headers".into(), Value::Object(headers));
        }
        if !t.custom_metrics.is_empty() {
            doc.insert("custom_metrics".into(), json!(t.custom_metrics));
        }
        if t.trusted_control {
            doc.insert("trusted_control".into(), json!(true));
        }
        if let Some(stripper) = t.strip_control {
            doc.insert("strip_control".into(), json!(stripper));
        }
        if mode == Mode::Mirror {
            let mut mirror = Map::new();
            mirror.insert("cluster".into(), json!(shadow_cluster));
            if let Some(m) = &t.mirror {
                let optional = [
                    ("sender", m.sender.as_ref().map(|v| json!(v))),
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
                for (key, value) in optional {
                    if let Some(v) = value {
                        mirror.insert(key.into(), v);
                    }
                }
            }
            doc.insert("mirror".into(), Value::Object(mirror));
        }
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    /// Every key of `value`, as dotted paths (array items share their array's path).
    fn keys(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(path.clone());
                    keys(&path, v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| keys(prefix, v, out)),
            _ => {}
        }
    }

    fn documented_keys() -> BTreeSet<String> {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/filter-config.md"
        ))
        .expect("read docs/filter-config.md");
        let json = doc
            .split("```json")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the doc's JSON example");
        let example: Value = serde_json::from_str(json).expect("the doc's example is JSON");
        let mut out = BTreeSet::new();
        keys("", &example, &mut out);
        // Documented in the table, not the example.
        out.insert("trusted_control".into());
        out.insert("strip_control".into());
        out
    }

    #[test]
    fn policy_filter_config_uses_only_documented_fields() {
        let documented = documented_keys();
        for name in ["checkout-split.yaml", "search-mirror.yaml"] {
            let path = format!("{}/../policies/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).expect("read policy");
            let policy = super::super::parse(&text).expect("valid policy");
            let config = policy.filter_document(
                policy.traffic.mode,
                policy.traffic.percent.get(),
                &policy.shadow_cluster,
            );
            let mut used = BTreeSet::new();
            keys("", &config, &mut used);
            let unknown: Vec<_> = used.difference(&documented).collect();
            assert!(
                unknown.is_empty(),
                "{name}: {unknown:?} not in docs/filter-config.md"
            );
        }
    }

    #[test]
    fn policy_mirror_sender_and_its_header_reach_the_filter_config() {
        let path = format!(
            "{}/../policies/search-mirror.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("read policy");
        // What only a filter-sent copy has goes.
        let text: String = text
            .lines()
            .filter(|l| !l.contains("authority:") && !l.contains("compare_body_bytes:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let envoy = text.replace("  mirror:\n", "  mirror:\n    sender: envoy\n");
        assert_ne!(
            envoy, text,
            "the example policy has a traffic.mirror section"
        );
        let envoy = envoy.replace(
            "traffic:\n",
            "traffic:\n  headers:\n    mirror_to: x-copy-to\n",
        );
        // Its rules read the comparison, which a copy Envoy sends never reaches: refused,
        // naming the rule.
        let problems = super::super::parse(&envoy).expect_err("rules on answers never seen");
        assert!(
            problems.iter().any(|p| p.code == "mirror"
                && p.message
                    .contains("rule `answers-differ` reads mirror.compared")),
            "{problems:?}"
        );
        let rules = envoy.find("rules:\n").expect("a rules section");
        let alerts = envoy.find("alerts:\n").expect("an alerts section");
        let envoy = format!(
            "{}rules:\n  - name: shadow-errors\n    when: compare.errors.worse && mirror.sent > 0\n    action: rollback\n{}",
            &envoy[..rules],
            &envoy[alerts..]
        );
        let policy = super::super::parse(&envoy).expect("valid policy");
        let config = policy
            .filter_config(super::Mode::Mirror, 5.0, "search-next")
            .expect("the filter's parser takes it");
        let mirror = config.mirror.expect("a mirror section");
        assert_eq!(mirror.sender, doppel_filter::config::Sender::Envoy);
        assert_eq!(config.headers.mirror_to.as_str(), "x-copy-to");

        let problems =
            super::super::parse(&text.replace("  mirror:\n", "  mirror:\n    sender: router\n"))
                .expect_err("an unknown sender");
        assert!(
            problems
                .iter()
                .any(|p| p.code == "sender" && p.message.contains("`router`")),
            "{problems:?}"
        );
        // What only a filter-sent copy can do is refused, with the filter's reason.
        let compared = envoy.replace(
            "    sender: envoy\n",
            "    sender: envoy\n    compare_body_bytes: 64\n",
        );
        let problems = super::super::parse(&compared).expect_err("nothing to compare");
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("mirror.compare_body_bytes")),
            "{problems:?}"
        );
    }

    #[test]
    fn policy_strip_control_reaches_the_filter_config_and_is_checked() {
        let path = format!(
            "{}/../policies/checkout-split.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("read policy");
        let with = |line: &str| text.replace("traffic:\n", &format!("traffic:\n  {line}\n"));
        let policy = super::super::parse(&with("strip_control: envoy")).expect("valid policy");
        let config = policy
            .filter_config(super::Mode::Split, 1.0, "checkout-v2")
            .expect("the filter's parser takes it");
        assert_eq!(config.strip_control, doppel_filter::config::Stripper::Envoy);
        // Left out, the filter's default: the filter strips.
        let policy = super::super::parse(&text).expect("valid policy");
        let document = policy.filter_document(super::Mode::Split, 1.0, "checkout-v2");
        assert!(document.get("strip_control").is_none(), "{document}");

        let problems =
            super::super::parse(&with("strip_control: nobody")).expect_err("an unknown stripper");
        assert!(
            problems
                .iter()
                .any(|p| p.code == "strip_control" && p.message.contains("`nobody`")),
            "{problems:?}"
        );
        // Envoy would remove what the filter is told to trust: refused, with the filter's reason.
        let problems = super::super::parse(&with("strip_control: envoy\n  trusted_control: true"))
            .expect_err("stripped and trusted");
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("trusted_control keeps")),
            "{problems:?}"
        );
    }

    #[test]
    fn policy_filter_config_carries_traffic_and_weight() {
        let path = format!(
            "{}/../policies/checkout-split.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("read policy");
        let policy = super::super::parse(&text).expect("valid policy");
        let config = policy.filter_document(super::Mode::Split, 25.0, "unused");
        assert_eq!(config["service"], "checkout");
        assert_eq!(config["mode"], "split");
        assert_eq!(config["percent"], 25.0);
        assert_eq!(config["match"][0]["one_of"][1], "at");
        assert_eq!(config["sticky"]["header"], "x-user-id");
        assert_eq!(config["custom_metrics"][0], "db");
        assert!(config.get("mirror").is_none());
        let typed = policy
            .filter_config(super::Mode::Split, 25.0, "unused")
            .expect("the filter's parser takes it");
        assert_eq!(typed.percent.get(), 25.0);
    }
}
