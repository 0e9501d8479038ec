//! The `isolation:` and `synthetic:` sections of a policy, validated: probes (with the
//! state-changing check) and backends the shadow must not share; the rate and address helpers
//! they use.

use std::collections::BTreeSet;

use serde_saphyr::Spanned;

use super::{Validator, at};
use crate::policy::Problem;
use crate::policy::model::{Backend, Isolation, parse_duration};
use crate::policy::raw::{RawIsolation, RawProbe};
use crate::synthetic::{BodyMatch, Probe};

impl Validator<'_> {
    pub(super) fn isolation(&mut self, raw: Option<&RawIsolation>) -> Isolation {
        let Some(raw) = raw else {
            return Isolation::default();
        };
        let mut names = BTreeSet::new();
        let mut backends = Vec::new();
        for b in &raw.backends {
            let name = b.value.name.value.clone();
            if name.trim().is_empty() {
                self.problem(&b.value.name, "name", "a backend needs a name".into());
            } else if !names.insert(name.clone()) {
                self.problem(
                    &b.value.name,
                    "duplicate",
                    format!("backend `{name}` is listed twice"),
                );
            }
            for (side, list) in [("primary", &b.value.primary), ("shadow", &b.value.shadow)] {
                if list.is_empty() {
                    self.problem(
                        b,
                        "backend",
                        format!("backend `{name}` lists no {side} address"),
                    );
                }
                for a in list.iter().filter(|a| a.value.trim().is_empty()) {
                    self.problem(
                        a,
                        "backend",
                        format!("backend `{name}`: empty {side} address"),
                    );
                }
            }
            let primary: BTreeSet<String> = b
                .value
                .primary
                .iter()
                .map(|a| normalize_address(&a.value))
                .collect();
            for a in &b.value.shadow {
                if primary.contains(&normalize_address(&a.value)) {
                    self.problem(
                        a,
                        "isolation",
                        format!(
                            "backend `{name}`: the shadow's address {} is also the primary's: the shadow must not share it",
                            a.value
                        ),
                    );
                }
            }
            backends.push(Backend {
                name,
                primary: b.value.primary.iter().map(|a| a.value.clone()).collect(),
                shadow: b.value.shadow.iter().map(|a| a.value.clone()).collect(),
            });
        }
        Isolation {
            isolated: raw.isolated.as_ref().is_some_and(|i| i.value),
            backends,
        }
    }

    pub(super) fn probes(&mut self, raw: &[Spanned<RawProbe>], isolated: bool) -> Vec<Probe> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for p in raw {
            let r = &p.value;
            let name = self.name(&r.name, "synthetic probe name", 64, "[a-z0-9_-]", |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
            });
            if !names.insert(name.clone()) {
                self.problem(
                    &r.name,
                    "duplicate",
                    format!("synthetic probe `{name}` is defined twice"),
                );
            }
            let method = match &r.method {
                Some(m) => {
                    if m.value.is_empty() || !m.value.chars().all(|c| c.is_ascii_uppercase()) {
                        self.problem(
                            m,
                            "method",
                            format!(
                                "probe `{name}`: `{}` is not an upper-case HTTP method",
                                m.value
                            ),
                        );
                    }
                    m.value.clone()
                }
                None => "GET".to_owned(),
            };
            let path = r.path.value.clone();
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.problem(
                    &r.path,
                    "path",
                    format!("probe `{name}`: path `{path}` must start with / and hold no spaces"),
                );
            }
            let mut headers = Vec::new();
            for (h, value) in &r.headers {
                let ok = !h.is_empty()
                    && h.chars().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || "-_.!#$%&'*+^`|~".contains(c)
                    });
                if !ok {
                    self.problem(
                        value,
                        "header",
                        format!("probe `{name}`: header `{h}` must be a lower-case header name"),
                    );
                }
                if value.value.chars().any(|c| c.is_control()) {
                    self.problem(
                        value,
                        "header",
                        format!(
                            "probe `{name}`: the value of header `{h}` holds a control character"
                        ),
                    );
                }
                headers.push((h.clone(), value.value.clone()));
            }
            let (status, body_match) = match &r.expect {
                None => (200, None),
                Some(e) => {
                    let status = match &e.status {
                        Some(s) if !(100..=599).contains(&s.value) => {
                            self.problem(
                                s,
                                "range",
                                format!("probe `{name}`: status {} is outside [100, 599]", s.value),
                            );
                            200
                        }
                        Some(s) => u16::try_from(s.value).unwrap_or(200),
                        None => 200,
                    };
                    let body_match = match (&e.body_contains, &e.body_matches) {
                        (Some(c), None) => Some(BodyMatch::Contains(c.value.clone())),
                        (None, Some(m)) => match regex::Regex::new(&m.value) {
                            Ok(re) => Some(BodyMatch::Regex(re)),
                            Err(err) => {
                                self.problem(
                                    m,
                                    "regex",
                                    format!(
                                        "probe `{name}`: body_matches is not a regular expression: {err}"
                                    ),
                                );
                                None
                            }
                        },
                        (Some(c), Some(_)) => {
                            self.problem(
                                c,
                                "expect",
                                format!(
                                    "probe `{name}`: give one of body_contains or body_matches, not both"
                                ),
                            );
                            None
                        }
                        (None, None) => None,
                    };
                    (status, body_match)
                }
            };
            let latency_budget_ms = match &r.latency_budget {
                Some(b) => {
                    let ms = self.duration(b, &format!("probe `{name}` latency_budget"));
                    if ms > 60_000 {
                        self.problem(
                            b,
                            "range",
                            format!("probe `{name}`: latency_budget is above 60s"),
                        );
                    }
                    ms
                }
                None => 1_000,
            };
            let every_ms = match &r.rate {
                Some(rate) => parse_rate(&rate.value).unwrap_or_else(|| {
                    self.problem(
                        rate,
                        "rate",
                        format!(
                            "probe `{name}`: rate `{}` is not N/s, N/m, N/h or 1/<duration> (at most 10/s, at least 1/h)",
                            rate.value
                        ),
                    );
                    10_000
                }),
                None => 10_000,
            };
            let probe = Probe {
                name,
                method,
                path,
                headers,
                body: r.body.clone(),
                status,
                body_match,
                latency_budget_ms,
                every_ms,
            };
            if !probe.is_safe() && !isolated {
                let at = r.method.as_ref().map_or_else(|| at(&r.name), at);
                self.problems.push(Problem::new(
                    at,
                    "isolation",
                    format!(
                        "probe `{}`: method {} can change state, and the shadow is not isolated: set `isolation: {{ isolated: true }}` once the shadow shares no data with the primary, or probe with GET, HEAD or OPTIONS",
                        probe.name, probe.method
                    ),
                ));
            }
            out.push(probe);
        }
        out
    }
}

/// The first shadow endpoint that is also one of the primary's, if any: a shadow that shares
/// an endpoint with the primary is not a shadow.
pub fn endpoint_overlap(
    primary: &[std::net::SocketAddr],
    shadow: &[std::net::SocketAddr],
) -> Option<std::net::SocketAddr> {
    shadow.iter().find(|a| primary.contains(a)).copied()
}

/// `host:port` in lower case without spaces, so `DB.internal:5432` and `db.internal:5432` are
/// one address.
pub fn normalize_address(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

/// A probe rate as the time between runs in milliseconds: `N/s`, `N/m`, `N/h`, or
/// `1/<duration>` (`1/10s`); between 10 per second and 1 per hour.
///
/// ```
/// use doppel_engine::policy::validate::parse_rate;
/// assert_eq!(parse_rate("2/s"), Some(500));
/// assert_eq!(parse_rate("6/m"), Some(10_000));
/// assert_eq!(parse_rate("1/30s"), Some(30_000));
/// assert!(parse_rate("100/s").is_none() && parse_rate("fast").is_none());
/// ```
pub fn parse_rate(text: &str) -> Option<u64> {
    let (count, per) = text.trim().split_once('/')?;
    let count: u64 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let per_ms = match per.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => u64::try_from(parse_duration(other)?.as_millis()).ok()?,
    };
    let every = per_ms / count;
    (100..=3_600_000).contains(&every).then_some(every)
}
