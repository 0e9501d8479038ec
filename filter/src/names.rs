//! The one written scheme for everything doppel's filter names: the headers it writes and the
//! metrics it defines. The engine parses metric names with [`parse_metric`], so the two sides
//! cannot drift apart.
//!
//! # Metrics
//! Every metric the filter defines is named `doppel.<service>.<scope>.<stat>`, where `<service>`
//! is the configured service name (`[a-z0-9_-]`, at most 64 characters, so it never contains a
//! dot) and `<scope>` is a variant (`primary`, `shadow`) or `mirror`. Envoy reports them with the
//! prefix `wasmcustom.` (see [`ENVOY_PREFIX`]).
//!
//! | scope   | stat                 | kind      | meaning |
//! |---------|----------------------|-----------|---------|
//! | variant | `rq_total`           | counter   | requests of that variant measured: all of the shadow's (in mirror mode: its copies), a random sample of the primary's (`primary_sample_percent`) |
//! | variant | `rq_5xx`             | counter   | measured requests answered with a 5xx status |
//! | variant | `rq_reset`           | counter   | measured requests with local resets and timeouts: no upstream answer at all |
//! | variant | `rq_time_us`         | histogram | latency of measured requests, from request headers to response headers, microseconds |
//! | variant | `custom.<name>_us`   | histogram | `Server-Timing: <name>;dur=<ms>` of measured answers, microseconds |
//! | mirror  | `sent`               | counter   | copies dispatched to the shadow |
//! | mirror  | `skipped_method`     | counter   | chosen requests not copied: method not allowed |
//! | mirror  | `skipped_body`       | counter   | chosen requests not copied: body unbounded or too large |
//! | mirror  | `dropped_in_flight`  | counter   | chosen requests not copied: too many copies in flight |
//! | mirror  | `failed`             | counter   | copies that got no answer (timeout, reset, no cluster) |
//! | mirror  | `compared`           | counter   | copies whose answer was compared with the primary's |
//! | mirror  | `mismatch_status`    | counter   | compared, and the status class differed |
//! | mirror  | `mismatch_body`      | counter   | compared, and the body digest differed |
//! | mirror  | `mismatch_latency`   | counter   | compared, and the shadow was slower than the tolerance allows |

/// The prefix Envoy puts before every metric a Wasm filter defines.
pub const ENVOY_PREFIX: &str = "wasmcustom.";
/// The first segment of every doppel metric name.
pub const NAMESPACE: &str = "doppel";

/// Default request header that marks a request the filter chose for the shadow (`shadow`).
pub const DEFAULT_VARIANT_HEADER: &str = "x-doppel-variant";
/// Default request header that carries the unique id of a shadowed or mirrored request.
pub const DEFAULT_ID_HEADER: &str = "x-doppel-id";
/// Default request header that marks a mirrored copy (`1`), so the shadow's backends can tell.
pub const DEFAULT_MIRROR_HEADER: &str = "x-doppel-mirror";
/// Default request header in which the filter names the shadow's cluster on a request whose copy
/// Envoy's router sends (`mirror.sender: envoy`): the route's mirror policy reads it
/// (`cluster_header`).
pub const DEFAULT_MIRROR_TO_HEADER: &str = "x-doppel-mirror-to";
/// The variant header's value on a request routed to the shadow.
pub const SHADOW_VALUE: &str = "shadow";

/// Filter-state key (`wasm.` is added by Envoy) holding the variant, for access logs.
pub const STATE_VARIANT: &str = "doppel_variant";
/// Filter-state key (`wasm.` is added by Envoy) holding the doppel id, for access logs.
pub const STATE_ID: &str = "doppel_id";

/// Which deployment answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// The live, stable deployment.
    Primary,
    /// The candidate running beside it.
    Shadow,
}

impl Variant {
    /// Both variants, primary first.
    pub const ALL: [Variant; 2] = [Variant::Primary, Variant::Shadow];

    /// The name used in metric names, headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Primary => "primary",
            Variant::Shadow => "shadow",
        }
    }
}

/// The scope segment of a metric name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Stats of one variant.
    Variant(Variant),
    /// Stats of the mirror comparison.
    Mirror,
}

impl Scope {
    /// The name used in metric names.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Variant(v) => v.as_str(),
            Scope::Mirror => "mirror",
        }
    }
}

/// The full name the filter defines for `stat` of `service` in `scope`, without Envoy's prefix.
///
/// ```
/// use doppel_filter::names::{metric_name, Scope, Variant};
/// assert_eq!(metric_name("cart", Scope::Variant(Variant::Shadow), "rq_5xx"), "doppel.cart.shadow.rq_5xx");
/// ```
pub fn metric_name(service: &str, scope: Scope, stat: &str) -> String {
    format!("{NAMESPACE}.{service}.{}.{stat}", scope.as_str())
}

/// The stat name of a custom Server-Timing histogram.
///
/// ```
/// assert_eq!(doppel_filter::names::custom_stat("db"), "custom.db_us");
/// ```
pub fn custom_stat(name: &str) -> String {
    format!("custom.{name}_us")
}

/// A doppel metric name taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricName<'a> {
    /// The service the metric belongs to.
    pub service: &'a str,
    /// The variant or the mirror comparison.
    pub scope: Scope,
    /// The stat, for example `rq_total` or `custom.db_us`.
    pub stat: &'a str,
}

/// Parses a metric name as Envoy reports it (with or without `wasmcustom.`); `None` for any name
/// that is not one of doppel's.
///
/// ```
/// use doppel_filter::names::{parse_metric, Scope, Variant};
/// let m = parse_metric("wasmcustom.doppel.cart.primary.custom.db_us").unwrap();
/// assert_eq!((m.service, m.scope, m.stat), ("cart", Scope::Variant(Variant::Primary), "custom.db_us"));
/// assert!(parse_metric("cluster.primary.upstream_rq_total").is_none());
/// ```
pub fn parse_metric(name: &str) -> Option<MetricName<'_>> {
    let name = name.strip_prefix(ENVOY_PREFIX).unwrap_or(name);
    let rest = name.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
    let (service, rest) = rest.split_once('.')?;
    let (scope, stat) = rest.split_once('.')?;
    let scope = match scope {
        "primary" => Scope::Variant(Variant::Primary),
        "shadow" => Scope::Variant(Variant::Shadow),
        "mirror" => Scope::Mirror,
        _ => return None,
    };
    if service.is_empty() || stat.is_empty() {
        return None;
    }
    Some(MetricName {
        service,
        scope,
        stat,
    })
}
