//! The policy file as written: serde types that mirror the YAML one to one, with the source
//! position of every value that validation may refuse. Nothing here is checked beyond YAML
//! syntax, field names and scalar types; [`super::validate`] turns it into a [`super::Policy`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::alerts::AlertsConfig;
use crate::hosts::HostSelectionConfig;
use crate::resources::ResourcesConfig;

/// A whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The service name, as in the filter config and metric names.
    pub service: Spanned<String>,
    /// The live deployment.
    pub primary: RawPrimary,
    /// The candidate.
    pub shadow: RawShadow,
    /// Which requests reach the shadow, and how.
    pub traffic: RawTraffic,
    /// How often and on how much data rules are evaluated.
    pub analysis: RawAnalysis,
    /// The rules, in evaluation order.
    pub rules: Spanned<Vec<RawRule>>,
    /// Promotion steps (shadow weights with hold times).
    #[serde(default)]
    pub steps: Vec<RawStep>,
    /// Alert sinks, retries and limits (docs/alerts.md).
    pub alerts: Option<Spanned<AlertsConfig>>,
    /// Resource metrics from Prometheus (docs/resources.md).
    pub resources: Option<Spanned<ResourcesConfig>>,
    /// Stratified choice of the shadow's hosts (docs/hosts.md).
    pub hosts: Option<Spanned<HostSelectionConfig>>,
    /// Synthetic probes (docs/synthetic.md).
    #[serde(default)]
    pub synthetic: Vec<Spanned<RawProbe>>,
    /// What the shadow must not share with the primary.
    pub isolation: Option<RawIsolation>,
}

/// One synthetic probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Unique name.
    pub name: Spanned<String>,
    /// HTTP method (default GET).
    pub method: Option<Spanned<String>>,
    /// Path and query, from `/`.
    pub path: Spanned<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Request body.
    pub body: Option<String>,
    /// What a good answer looks like.
    pub expect: Option<RawExpect>,
    /// The longest a good answer may take (default 1s).
    pub latency_budget: Option<Spanned<String>>,
    /// Runs per time (`1/s`, `6/m`; default `1/10s`).
    pub rate: Option<Spanned<String>>,
}

/// A probe's expectations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    /// Expected status (default 200).
    pub status: Option<Spanned<u64>>,
    /// The body must contain this.
    pub body_contains: Option<Spanned<String>>,
    /// The body must match this regular expression.
    pub body_matches: Option<Spanned<String>>,
}

/// The isolation section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIsolation {
    /// The shadow shares no state with the primary: state-changing probes are allowed.
    pub isolated: Option<Spanned<bool>>,
    /// Named backends whose primary and shadow addresses must differ.
    #[serde(default)]
    pub backends: Vec<Spanned<RawBackend>>,
}

/// A backend (database, queue...) that each variant reaches at its own addresses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Its name.
    pub name: Spanned<String>,
    /// Addresses the primary uses.
    pub primary: Vec<Spanned<String>>,
    /// Addresses the shadow uses.
    pub shadow: Vec<Spanned<String>>,
}

/// The primary: its cluster and, optionally, the previous stable version to roll back to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrimary {
    /// The Envoy cluster of the live deployment.
    pub cluster: Spanned<String>,
    /// The Envoy cluster of the previous stable version, if it is kept around.
    pub previous: Option<Spanned<String>>,
}

/// The shadow: its cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    /// The Envoy cluster of the candidate.
    pub cluster: Spanned<String>,
}

/// The traffic section: the filter's config (docs/filter-config.md) minus what the engine fills.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraffic {
    /// `split`, `mirror` or `off`.
    pub mode: Spanned<String>,
    /// Share of matching requests chosen, in [0, 100].
    pub percent: Spanned<f64>,
    /// Matchers that must all hold.
    #[serde(default, rename = "match")]
    pub matchers: Vec<Spanned<RawMatcher>>,
    /// The user's key for sticky choice.
    pub sticky: Option<Spanned<RawSticky>>,
    /// Server-Timing names recorded per variant.
    #[serde(default)]
    pub custom_metrics: Vec<Spanned<String>>,
    /// Whether client-sent doppel headers are trusted.
    #[serde(default)]
    pub trusted_control: bool,
    /// Who strips client-sent doppel headers: `filter` or `envoy`.
    pub strip_control: Option<Spanned<String>>,
    /// Header names, when not the defaults.
    pub headers: Option<RawHeaders>,
    /// Mirror settings (mirror mode).
    pub mirror: Option<RawMirror>,
}

/// One header matcher: `header` and exactly one of `equals`, `prefix`, `one_of`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatcher {
    /// Lower-case header name.
    pub header: Spanned<String>,
    /// The value must equal this.
    pub equals: Option<String>,
    /// The value must start with this.
    pub prefix: Option<String>,
    /// The value must be one of these.
    pub one_of: Option<Vec<String>>,
}

/// The sticky key: exactly one of a header or a cookie.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    /// Header carrying the user's key.
    pub header: Option<Spanned<String>>,
    /// Cookie carrying the user's key.
    pub cookie: Option<Spanned<String>>,
}

/// Header names the filter writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// The variant header.
    pub variant: Option<Spanned<String>>,
    /// The request id header.
    pub id: Option<Spanned<String>>,
    /// The mirror marker header.
    pub mirror: Option<Spanned<String>>,
    /// The header naming the shadow's cluster for Envoy's mirror policy.
    pub mirror_to: Option<Spanned<String>>,
}

/// Mirror settings; the shadow cluster defaults to `shadow.cluster`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    /// Who sends the copies: `filter` or `envoy`.
    pub sender: Option<Spanned<String>>,
    /// `:authority` of the copy.
    pub authority: Option<Spanned<String>>,
    /// Methods that may be copied.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Largest body copied.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// How long a copy may take.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Copies in flight per worker.
    pub max_in_flight: Option<Spanned<u64>>,
    /// Bytes of both bodies compared by digest.
    pub compare_body_bytes: Option<Spanned<u64>>,
    /// Extra latency a copy may take before it counts as a mismatch.
    pub latency_tolerance_ms: Option<Spanned<u64>>,
}

/// The analysis section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    /// How often rules are evaluated (`10s`, `1m`).
    pub interval: Spanned<String>,
    /// Requests each variant needs before rules are evaluated.
    pub min_sample: Spanned<u64>,
    /// False-alarm rate of the statistical tests.
    pub alpha: Spanned<f64>,
    /// `cumulative` (everything since the current step began) or `sliding`.
    pub data: Option<Spanned<String>>,
    /// Length of the sliding window (`5m`).
    pub window: Option<Spanned<String>>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name.
    pub name: Spanned<String>,
    /// CEL condition.
    pub when: Spanned<String>,
    /// What happens when it holds.
    pub action: Spanned<String>,
    /// Consecutive intervals it must hold before it fires.
    #[serde(rename = "for")]
    pub for_intervals: Option<Spanned<u64>>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<Spanned<String>>,
}

/// One promotion step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Shadow weight in percent, in (0, 100].
    pub weight: Spanned<f64>,
    /// Minimum time at this weight (`5m`).
    pub hold: Spanned<String>,
}
