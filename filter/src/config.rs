//! The filter's configuration: the one definition of the JSON document described in
//! `docs/filter-config.md`. Envoy hands it to `on_configure`; the engine builds it with these same
//! types and pushes it over ECDS.
//!
//! Every field is a type that validates itself when deserialized (a percent in range, a service
//! name that can be a metric-name segment, ...), unknown fields are refused, and
//! [`FilterConfig::parse`] is the one entry point. Its error names the field and the reason:
//!
//! ```
//! use doppel_filter::config::FilterConfig;
//! let err = FilterConfig::parse(br#"{"service": "cart", "mode": "split", "percent": 120}"#).unwrap_err();
//! assert_eq!(err.to_string(), "percent: 120 is outside [0, 100]");
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a config document was refused: the offending field (a path such as `match[1].prefix`,
/// or `config` for the document as a whole) and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, e.g. `percent` or `mirror.timeout_ms`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What the filter does with the requests it chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Chosen requests are served by the shadow (the filter writes the variant header).
    Split,
    /// Chosen requests are served by the primary and copied to the shadow.
    Mirror,
    /// Nobody is chosen; control headers are still stripped and stats kept.
    Off,
}

/// Without `primary_sample_percent`, the primary is measured on this many times the shadow's
/// share (at least 1 %): enough that most of the comparison's uncertainty comes from the
/// shadow (the variance of a difference is 1.2 times the shadow's own, against 1.1 at ten
/// times, for half the measuring).
pub const PRIMARY_SAMPLE_FACTOR: f64 = 5.0;

/// The filter's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The service this filter instance shadows; a segment of every metric name.
    pub service: ServiceName,
    /// Split, mirror or off.
    pub mode: Mode,
    /// Share of matching requests chosen, in percent.
    pub percent: Percent,
    /// Every matcher must hold for a request to be eligible (AND); empty: everyone is.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
    /// Where the user's key comes from, so one user always gets the same variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// The names of the headers doppel writes.
    #[serde(default)]
    pub headers: HeaderNames,
    /// `Server-Timing` names recorded per variant as histograms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_metrics: Vec<MetricLabel>,
    /// Keep client-sent copies of doppel's control headers (only for a trusted source).
    #[serde(default, skip_serializing_if = "is_false")]
    pub trusted_control: bool,
    /// Who removes client-sent copies of the control headers: the filter, or Envoy before the
    /// filter runs (the connection manager's early header mutation).
    #[serde(default, skip_serializing_if = "Stripper::is_filter")]
    pub strip_control: Stripper,
    /// Mirror settings; required when `mode` is `mirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorConfig>,
    /// Share of unchosen (primary) requests measured, in percent: their status, latency and
    /// custom metrics are what the primary's stats count. Absent: five times `percent`, at least
    /// 1 and at most 100. Chosen requests are always measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_sample_percent: Option<Percent>,
    /// Share of all requests Envoy runs the filter on, drawn at random by the route (a
    /// `runtime_fraction` match that enables the filter, disabled by default): the filter then
    /// sees only the requests it may choose or measure, and scales `percent` and
    /// `primary_sample_percent`, which stay shares of all requests, to it. Absent: Envoy runs
    /// the filter on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_percent: Option<Percent>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FilterConfig {
    /// A config with every optional field at its default (no matchers, no sticky key, default
    /// header names, no custom metrics, untrusted control headers, no mirror section).
    ///
    /// ```
    /// use doppel_filter::config::{FilterConfig, Mode, Percent, ServiceName};
    /// let c = FilterConfig::new(ServiceName::new("cart").unwrap(), Mode::Split, Percent::new(1.0).unwrap());
    /// assert_eq!(c.to_json(), r#"{"service":"cart","mode":"split","percent":1.0,"headers":{"variant":"x-doppel-variant","id":"x-doppel-id","mirror":"x-doppel-mirror","mirror_to":"x-doppel-mirror-to"}}"#);
    /// assert_eq!(FilterConfig::parse(c.to_json().as_bytes()), Ok(c));
    /// ```
    pub fn new(service: ServiceName, mode: Mode, percent: Percent) -> Self {
        FilterConfig {
            service,
            mode,
            percent,
            matchers: Vec::new(),
            sticky: None,
            headers: HeaderNames::default(),
            custom_metrics: Vec::new(),
            trusted_control: false,
            strip_control: Stripper::Filter,
            mirror: None,
            primary_sample_percent: None,
            pool_percent: None,
        }
    }

    /// The share of primary requests measured, in percent (see the field).
    ///
    /// ```
    /// use doppel_filter::config::{FilterConfig, Mode, Percent, ServiceName};
    /// let mut c = FilterConfig::new(ServiceName::new("cart").unwrap(), Mode::Split, Percent::new(1.0).unwrap());
    /// assert_eq!(c.primary_sample_percent(), 5.0);
    /// c.percent = Percent::new(20.0).unwrap();
    /// assert_eq!(c.primary_sample_percent(), 100.0);
    /// c.percent = Percent::new(0.0).unwrap();
    /// assert_eq!(c.primary_sample_percent(), 1.0);
    /// c.primary_sample_percent = Some(Percent::new(2.5).unwrap());
    /// assert_eq!(c.primary_sample_percent(), 2.5);
    /// ```
    pub fn primary_sample_percent(&self) -> f64 {
        match self.primary_sample_percent {
            Some(p) => p.get(),
            None => (self.percent.get() * PRIMARY_SAMPLE_FACTOR).clamp(1.0, 100.0),
        }
    }

    /// The smallest `pool_percent` that holds every request this config chooses or measures:
    /// `percent`, plus the measured share of the rest.
    ///
    /// ```
    /// use doppel_filter::config::{FilterConfig, Mode, Percent, ServiceName};
    /// let c = FilterConfig::new(ServiceName::new("cart").unwrap(), Mode::Split, Percent::new(1.0).unwrap());
    /// assert!((c.smallest_pool_percent() - 5.95).abs() < 1e-9);
    /// ```
    pub fn smallest_pool_percent(&self) -> f64 {
        let percent = self.chosen_percent();
        (percent + self.primary_sample_percent() * (100.0 - percent) / 100.0).min(100.0)
    }

    /// The share of all requests chosen: `percent`, or 0 when the mode is off.
    fn chosen_percent(&self) -> f64 {
        match self.mode {
            Mode::Off => 0.0,
            Mode::Split | Mode::Mirror => self.percent.get(),
        }
    }

    /// `(chosen, measured)`: the share of the requests the filter sees that it chooses, and of
    /// the unchosen ones it sees that it measures, in percent. Without a pool, `percent` and
    /// `primary_sample_percent`; in a pool (`pool_percent`), the same shares of all requests.
    ///
    /// ```
    /// use doppel_filter::config::{FilterConfig, Mode, Percent, ServiceName};
    /// let mut c = FilterConfig::new(ServiceName::new("cart").unwrap(), Mode::Split, Percent::new(1.0).unwrap());
    /// assert_eq!(c.shares_seen(), (1.0, 5.0));
    /// c.pool_percent = Some(Percent::new(5.95).unwrap());
    /// let (chosen, measured) = c.shares_seen();
    /// assert!((chosen - 100.0 / 5.95).abs() < 1e-9 && (measured - 100.0).abs() < 1e-9);
    /// ```
    pub fn shares_seen(&self) -> (f64, f64) {
        let (percent, sample) = (self.chosen_percent(), self.primary_sample_percent());
        let Some(pool) = self.pool_percent.map(Percent::get) else {
            return (percent, sample);
        };
        if pool <= percent {
            // Every request seen is chosen (none at all when nothing is).
            return (if percent > 0.0 { 100.0 } else { 0.0 }, 0.0);
        }
        // Of the primary's requests, (pool - percent) / (100 - percent) are in the pool.
        let measured = sample * (100.0 - percent) / (pool - percent);
        ((percent / pool * 100.0).min(100.0), measured.min(100.0))
    }

    /// Parses and validates a config document; the error names the field and why.
    pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let config: FilterConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = if path == "." || path.is_empty() {
                "config".to_string()
            } else {
                path
            };
            ConfigError::new(field, strip_position(&inner))
        })?;
        de.end()
            .map_err(|e| ConfigError::new("config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The config as the JSON document [`FilterConfig::parse`] reads.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The checks that hold across fields (each field checks itself when built); run by
    /// [`FilterConfig::parse`], and by the engine on a config it built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.trusted_control && self.strip_control == Stripper::Envoy {
            return Err(ConfigError::new(
                "strip_control",
                "Envoy would remove the control headers trusted_control keeps: choose one",
            ));
        }
        if let Some(pool) = self.pool_percent {
            self.check_pool(pool.get())?;
        }
        if self.mode == Mode::Mirror && self.mirror.is_none() {
            return Err(ConfigError::new("mirror", "required when mode is mirror"));
        }
        if let Some(m) = self.mirror.as_ref().filter(|m| m.sender == Sender::Envoy) {
            if m.compare_body_bytes.get() > 0 {
                return Err(ConfigError::new(
                    "mirror.compare_body_bytes",
                    "only a copy the filter sends is compared (mirror.sender is envoy)",
                ));
            }
            if m.authority.is_some() {
                return Err(ConfigError::new(
                    "mirror.authority",
                    "Envoy sends the copy (mirror.sender is envoy): set host_rewrite_literal in the route's request_mirror_policies instead",
                ));
            }
        }
        let h = &self.headers;
        let names = [
            ("headers.variant", &h.variant),
            ("headers.id", &h.id),
            ("headers.mirror", &h.mirror),
            ("headers.mirror_to", &h.mirror_to),
        ];
        for (i, (field, name)) in names.iter().enumerate() {
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                return Err(ConfigError::new(
                    *field,
                    format!("`{name}` is already used by {other}"),
                ));
            }
        }
        for (i, label) in self.custom_metrics.iter().enumerate() {
            if self.custom_metrics[..i].contains(label) {
                return Err(ConfigError::new(
                    format!("custom_metrics[{i}]"),
                    format!("`{label}` is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// A pool (`pool_percent`) is drawn at random, so it cannot keep a user's variant, holds
    /// every request the config chooses or measures, and leaves the requests outside it to
    /// Envoy, which must strip their control headers.
    fn check_pool(&self, pool: f64) -> Result<(), ConfigError> {
        let refuse = |reason: String| Err(ConfigError::new("pool_percent", reason));
        if self.sticky.is_some() {
            return refuse(
                "a sticky key needs the filter on every request (the pool is drawn at random)"
                    .to_owned(),
            );
        }
        if self.strip_control != Stripper::Envoy {
            return refuse(
                "the filter never sees requests outside the pool: set strip_control to envoy"
                    .to_owned(),
            );
        }
        let smallest = self.smallest_pool_percent();
        // The engine rounds the pool up to Envoy's precision; allow for float error below it.
        if pool + 1e-9 < smallest {
            return refuse(format!(
                "{pool} is below {smallest}, the share percent and primary_sample_percent need"
            ));
        }
        Ok(())
    }

    /// Who sends the copies: `None` unless the mode is mirror.
    pub fn sender(&self) -> Option<Sender> {
        match (self.mode, &self.mirror) {
            (Mode::Mirror, Some(m)) => Some(m.sender),
            _ => None,
        }
    }

    /// Whether `name` (lower-case) is one of doppel's control headers.
    pub fn is_control_header(&self, name: &str) -> bool {
        self.headers.control().contains(&name)
    }
}

/// serde_json appends ` at line L column C`; the path already says where.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if e.line() == 0 {
        return text;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(head) if !e.is_syntax() && !e.is_eof() => head.to_string(),
        _ => text,
    }
}

/// One condition on a request header; it never holds when the header is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMatcher", into = "RawMatcher")]
pub struct Matcher {
    /// The header tested.
    pub header: HeaderName,
    /// The test on its value.
    pub test: MatchTest,
}

/// The test a [`Matcher`] applies to a header value (bytes, case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchTest {
    /// The value is exactly this.
    Equals(String),
    /// The value starts with this.
    Prefix(String),
    /// The value is one of these.
    OneOf(Vec<String>),
}

/// The wire form of a [`Matcher`]: exactly one of the three tests is set.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    header: HeaderName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    one_of: Option<Vec<String>>,
}

impl TryFrom<RawMatcher> for Matcher {
    type Error = String;

    fn try_from(raw: RawMatcher) -> Result<Self, String> {
        let test = match (raw.equals, raw.prefix, raw.one_of) {
            (Some(v), None, None) => MatchTest::Equals(v),
            (None, Some(v), None) => MatchTest::Prefix(v),
            (None, None, Some(v)) if v.is_empty() => return Err("one_of must not be empty".into()),
            (None, None, Some(v)) => MatchTest::OneOf(v),
            _ => return Err("needs exactly one of equals, prefix, one_of".into()),
        };
        Ok(Matcher {
            header: raw.header,
            test,
        })
    }
}

impl From<Matcher> for RawMatcher {
    fn from(m: Matcher) -> Self {
        let mut raw = RawMatcher {
            header: m.header,
            equals: None,
            prefix: None,
            one_of: None,
        };
        match m.test {
            MatchTest::Equals(v) => raw.equals = Some(v),
            MatchTest::Prefix(v) => raw.prefix = Some(v),
            MatchTest::OneOf(v) => raw.one_of = Some(v),
        }
        raw
    }
}

/// Where a user's sticky key is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Sticky {
    /// The value of this request header.
    Header(HeaderName),
    /// The value of this cookie in the `Cookie` header.
    Cookie(CookieName),
}

/// The names of the request headers doppel writes (and strips from clients).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderNames {
    /// Set to `shadow` on a request routed to the shadow.
    #[serde(default = "default_variant_header")]
    pub variant: HeaderName,
    /// The unique id of a shadowed or mirrored request.
    #[serde(default = "default_id_header")]
    pub id: HeaderName,
    /// Set to `1` on mirrored copies.
    #[serde(default = "default_mirror_header")]
    pub mirror: HeaderName,
    /// Names the shadow's cluster on a request whose copy Envoy sends (`mirror.sender: envoy`);
    /// the route's `request_mirror_policies` entry reads it (`cluster_header`).
    #[serde(default = "default_mirror_to_header")]
    pub mirror_to: HeaderName,
}

/// How many control headers doppel writes and strips from clients.
pub const CONTROL_HEADERS: usize = 4;

impl HeaderNames {
    /// doppel's control headers: variant, id, mirror, mirror_to.
    pub fn control(&self) -> [&str; CONTROL_HEADERS] {
        [
            self.variant.as_str(),
            self.id.as_str(),
            self.mirror.as_str(),
            self.mirror_to.as_str(),
        ]
    }
}

fn default_variant_header() -> HeaderName {
    HeaderName(crate::names::DEFAULT_VARIANT_HEADER.to_string())
}
fn default_id_header() -> HeaderName {
    HeaderName(crate::names::DEFAULT_ID_HEADER.to_string())
}
fn default_mirror_header() -> HeaderName {
    HeaderName(crate::names::DEFAULT_MIRROR_HEADER.to_string())
}
fn default_mirror_to_header() -> HeaderName {
    HeaderName(crate::names::DEFAULT_MIRROR_TO_HEADER.to_string())
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            variant: default_variant_header(),
            id: default_id_header(),
            mirror: default_mirror_header(),
            mirror_to: default_mirror_to_header(),
        }
    }
}

/// Who removes client-sent copies of doppel's control headers from every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stripper {
    /// The filter: it reads every request's headers to find them.
    #[default]
    Filter,
    /// Envoy, before the filter runs: the connection manager's `early_header_mutation_extensions`
    /// removes the four names (docs/filter-config.md shows the entry). The filter then reads a
    /// request's headers only when its decision needs one or the request is chosen.
    Envoy,
}

impl Stripper {
    fn is_filter(&self) -> bool {
        *self == Stripper::Filter
    }
}

/// Who sends a chosen request's copy to the shadow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// The filter, with an HTTP callout from its root context; it compares the two answers.
    #[default]
    Filter,
    /// Envoy's router: the filter names the shadow's cluster in the `mirror_to` header, which
    /// the route's `request_mirror_policies` entry reads (`cluster_header`). No callout and no
    /// comparison in the filter: the shadow is judged on its cluster's stats.
    Envoy,
}

impl Sender {
    fn is_filter(&self) -> bool {
        *self == Sender::Filter
    }
}

/// How requests are copied to the shadow in mirror mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The Envoy cluster of the shadow.
    pub cluster: ClusterName,
    /// Who sends the copies.
    #[serde(default, skip_serializing_if = "Sender::is_filter")]
    pub sender: Sender,
    /// `:authority` of the copy; the request's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<Authority>,
    /// Methods that may be copied.
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    /// Longest request body copied; a body of unknown length is never copied.
    #[serde(default)]
    pub max_body_bytes: Ranged<0, MAX_BODY_BYTES>,
    /// How long a copy may take, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: Ranged<1, 60_000>,
    /// Copies in flight per worker; more are dropped and counted.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: Ranged<1, 10_000>,
    /// 0: compare status and latency only; else also a digest of the first N body bytes.
    #[serde(default)]
    pub compare_body_bytes: Ranged<0, MAX_BODY_BYTES>,
    /// A shadow slower than the primary by more than this is a latency mismatch.
    #[serde(default = "default_tolerance")]
    pub latency_tolerance_ms: Ranged<0, 600_000>,
}

/// The largest body bound the config accepts (1 MiB): copies and digests stay in VM memory.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

fn default_methods() -> Vec<Method> {
    ["GET", "HEAD", "OPTIONS"]
        .into_iter()
        .map(|m| Method(m.to_string()))
        .collect()
}
fn default_timeout() -> Ranged<1, 60_000> {
    Ranged(1000)
}
fn default_in_flight() -> Ranged<1, 10_000> {
    Ranged(64)
}
fn default_tolerance() -> Ranged<0, 600_000> {
    Ranged(250)
}

impl MirrorConfig {
    /// A mirror config for `cluster` with every other field at its default.
    pub fn new(cluster: ClusterName) -> Self {
        MirrorConfig {
            cluster,
            sender: Sender::Filter,
            authority: None,
            methods: default_methods(),
            max_body_bytes: Ranged(0),
            timeout_ms: default_timeout(),
            max_in_flight: default_in_flight(),
            compare_body_bytes: Ranged(0),
            latency_tolerance_ms: default_tolerance(),
        }
    }
}

/// A share in percent, in [0, 100].
///
/// ```
/// use doppel_filter::config::Percent;
/// assert_eq!(Percent::new(0.01).unwrap().get(), 0.01);
/// assert_eq!(Percent::new(120.0).unwrap_err(), "120 is outside [0, 100]");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Percent(f64);

impl Percent {
    /// A percent, refused unless finite and in [0, 100].
    pub fn new(value: f64) -> Result<Percent, String> {
        if value.is_finite() && (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(format!("{value} is outside [0, 100]"))
        }
    }

    /// The value in percent.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Percent {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        Percent::new(value)
    }
}

impl From<Percent> for f64 {
    fn from(p: Percent) -> f64 {
        p.0
    }
}

/// An integer in [MIN, MAX].
///
/// ```
/// use doppel_filter::config::Ranged;
/// assert_eq!(Ranged::<1, 10>::new(0).unwrap_err(), "0 is outside [1, 10]");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Ranged<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Ranged<MIN, MAX> {
    /// The value, refused unless in [MIN, MAX].
    pub fn new(value: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Ranged(value))
        } else {
            Err(format!("{value} is outside [{MIN}, {MAX}]"))
        }
    }

    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<const MIN: u64, const MAX: u64> Default for Ranged<MIN, MAX> {
    fn default() -> Self {
        Ranged(MIN)
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<u64> for Ranged<MIN, MAX> {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, String> {
        Ranged::new(value)
    }
}

impl<const MIN: u64, const MAX: u64> From<Ranged<MIN, MAX>> for u64 {
    fn from(r: Ranged<MIN, MAX>) -> u64 {
        r.0
    }
}

/// Defines a validated string newtype: `new` checks it, serde goes through `new`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value, refused (with the reason) unless valid.
            pub fn new(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value).map(|()| $name(value))
            }

            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Checks length and that every character satisfies `allowed`, naming what is allowed.
fn check_chars(
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
    described: &str,
) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!("`{value}` is longer than {max} characters"));
    }
    match value.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!("`{value}` contains {c:?}; allowed: {described}")),
        None => Ok(()),
    }
}

/// An HTTP token character (RFC 9110), lower-case letters only.
fn lower_token_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || "!#$%&'*+-.^_`|~".contains(c)
}

checked_string!(
    /// A service name: `[a-z0-9_-]`, 1 to 64 characters (a segment of metric names).
    ServiceName,
    |v| check_chars(v, 64, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-', "[a-z0-9_-]")
);

checked_string!(
    /// A lower-case HTTP header name, 1 to 128 characters, not a pseudo-header.
    HeaderName,
    |v| check_chars(v, 128, lower_token_char, "lower-case header name characters")
);

checked_string!(
    /// A cookie name (an HTTP token), 1 to 128 characters.
    CookieName,
    |v| check_chars(
        v,
        128,
        |c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c),
        "HTTP token characters"
    )
);

checked_string!(
    /// A custom metric name: `[a-z0-9_]`, 1 to 32 characters.
    MetricLabel,
    |v| check_chars(v, 32, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_', "[a-z0-9_]")
);

checked_string!(
    /// An Envoy cluster name: 1 to 256 visible ASCII characters.
    ClusterName,
    |v| check_chars(v, 256, |c| c.is_ascii_graphic(), "visible ASCII")
);

checked_string!(
    /// An `:authority` value: 1 to 256 visible ASCII characters.
    Authority,
    |v| check_chars(v, 256, |c| c.is_ascii_graphic(), "visible ASCII")
);

checked_string!(
    /// An HTTP method: `[A-Z-]`, 1 to 32 characters.
    Method,
    |v| check_chars(v, 32, |c| c.is_ascii_uppercase() || c == '-', "[A-Z-]")
);

#[cfg(test)]
mod tests;
