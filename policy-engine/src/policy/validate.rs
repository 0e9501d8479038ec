//! Turns a [`RawPolicy`] into a [`Policy`], collecting every problem with its position rather
//! than stopping at the first. The ranges follow the filter's config (docs/filter-config.md).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use doppel_filter::config::{Sender, Stripper};
use serde_saphyr::Spanned;

use super::expr;
use super::model::*;
use super::raw::*;
use super::{Position, Problem, position_in_value};
use crate::context::{RuleContext, Schema};
use crate::hosts::select;

mod sections;
pub use sections::{endpoint_overlap, normalize_address, parse_rate};

/// Validates a raw policy whose source is `text`; with the policy file's `dir`, a `hosts:`
/// section's inventory is read and the shadow's hosts chosen too.
pub fn validate(raw: RawPolicy, text: &str, dir: Option<&Path>) -> Result<Policy, Vec<Problem>> {
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let service = v.name(&raw.service, "service", 64, "[a-z0-9_-]", |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
    });
    let primary = Primary {
        cluster: v.cluster(&raw.primary.cluster, "primary.cluster"),
        previous: raw
            .primary
            .previous
            .as_ref()
            .map(|p| v.cluster(p, "primary.previous")),
    };
    let shadow_cluster = v.cluster(&raw.shadow.cluster, "shadow.cluster");
    if shadow_cluster == primary.cluster && !shadow_cluster.is_empty() {
        v.problem(
            &raw.shadow.cluster,
            "cluster",
            format!("shadow.cluster `{shadow_cluster}` is the primary's cluster"),
        );
    }
    let traffic = v.traffic(&raw.traffic);
    let analysis = v.analysis(&raw.analysis);
    let alerts = raw
        .alerts
        .as_ref()
        .and_then(|a| v.section(a, "alerts", a.value.validate().map_err(|e| e.to_string())));
    let resources = raw.resources.as_ref().and_then(|r| {
        v.section(
            r,
            "resources",
            r.value.validate().map_err(|e| e.to_string()),
        )
    });
    let hosts = raw.hosts.as_ref().and_then(|h| {
        let checked = match dir {
            Some(dir) => h
                .value
                .load_inventory(dir)
                .and_then(|inventory| select(&inventory, &h.value))
                .map(|_| ()),
            None => h.value.validate(),
        };
        v.section(h, "hosts", checked.map_err(|e| e.to_string()))
    });
    let isolation = v.isolation(raw.isolation.as_ref());
    let synthetic = v.probes(&raw.synthetic, isolation.isolated);
    let rules = v.rules(
        &raw.rules,
        &traffic.custom_metrics,
        &resource_names(resources.as_ref()),
        !synthetic.is_empty(),
        traffic
            .mirror
            .as_ref()
            .is_some_and(|m| m.sender == Some(Sender::Envoy)),
    );
    let steps = v.steps(&raw.steps);
    let mut problems = v.problems;
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.position);
        return Err(problems);
    }
    let policy = Policy {
        service,
        primary,
        shadow_cluster,
        traffic,
        analysis,
        rules,
        steps,
        alerts,
        resources,
        hosts,
        synthetic,
        isolation,
    };
    // The filter's own parser has the last word on the config this policy pushes.
    let percent = policy.traffic.percent.get();
    if let Err(e) = policy.filter_config(policy.traffic.mode, percent, &policy.shadow_cluster) {
        return Err(vec![Problem::new(
            at(&raw.traffic.mode),
            "filter",
            format!("the filter refuses the config this traffic section makes: {e}"),
        )]);
    }
    Ok(policy)
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

fn at<T>(s: &Spanned<T>) -> Position {
    Position::of(&s.referenced)
}

impl Validator<'_> {
    fn problem<T>(&mut self, s: &Spanned<T>, code: &'static str, message: String) {
        self.problems.push(Problem::new(at(s), code, message));
    }

    fn name(
        &mut self,
        s: &Spanned<String>,
        field: &str,
        max: usize,
        charset: &str,
        ok: impl Fn(char) -> bool,
    ) -> String {
        let value = &s.value;
        let len = value.chars().count();
        if len == 0 || len > max || !value.chars().all(ok) {
            self.problem(
                s,
                "name",
                format!("{field} `{value}` must be 1 to {max} characters of {charset}"),
            );
        }
        value.clone()
    }

    fn cluster(&mut self, s: &Spanned<String>, field: &str) -> String {
        if s.value.trim().is_empty() {
            self.problem(s, "cluster", format!("{field} must name an Envoy cluster"));
        }
        s.value.clone()
    }

    fn header(&mut self, s: &Spanned<String>, field: &str) -> String {
        let ok = !s.value.is_empty()
            && s.value.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.!#$%&'*+^`|~".contains(c)
            });
        if !ok {
            self.problem(
                s,
                "header",
                format!("{field} `{}` must be a lower-case header name", s.value),
            );
        }
        s.value.clone()
    }

    fn percent(&mut self, s: &Spanned<f64>, field: &str) -> Percent {
        Percent::new(s.value).unwrap_or_else(|| {
            self.problem(
                s,
                "percent",
                format!("{field}: {} is outside [0, 100]", s.value),
            );
            Percent::ZERO
        })
    }

    fn duration(&mut self, s: &Spanned<String>, field: &str) -> u64 {
        match parse_duration(&s.value) {
            Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            None => {
                self.problem(
                    s,
                    "duration",
                    format!(
                        "{field}: `{}` is not a duration such as 500ms, 10s, 5m, 1h30m (more than 0, at most a week)",
                        s.value
                    ),
                );
                0
            }
        }
    }

    fn range(&mut self, s: &Option<Spanned<u64>>, field: &str, min: u64, max: u64) -> Option<u64> {
        let s = s.as_ref()?;
        if !(min..=max).contains(&s.value) {
            self.problem(
                s,
                "range",
                format!("{field}: {} is outside [{min}, {max}]", s.value),
            );
        }
        Some(s.value)
    }

    fn traffic(&mut self, t: &RawTraffic) -> Traffic {
        let mode = match t.mode.value.as_str() {
            "split" => Mode::Split,
            "mirror" => Mode::Mirror,
            "off" => Mode::Off,
            other => {
                self.problem(
                    &t.mode,
                    "mode",
                    format!("traffic.mode `{other}` must be split, mirror or off"),
                );
                Mode::Off
            }
        };
        let percent = self.percent(&t.percent, "traffic.percent");
        let matchers = t.matchers.iter().filter_map(|m| self.matcher(m)).collect();
        let sticky = t
            .sticky
            .as_ref()
            .and_then(|s| match (&s.value.header, &s.value.cookie) {
                (Some(h), None) => Some(Sticky::Header(self.header(h, "traffic.sticky.header"))),
                (None, Some(c)) if !c.value.is_empty() => Some(Sticky::Cookie(c.value.clone())),
                _ => {
                    self.problem(
                        s,
                        "sticky",
                        "traffic.sticky needs exactly one of `header` or a non-empty `cookie`"
                            .into(),
                    );
                    None
                }
            });
        let mut seen = BTreeSet::new();
        let mut custom_metrics = Vec::new();
        for m in &t.custom_metrics {
            let name = self.name(m, "traffic.custom_metrics entry", 32, "[a-z0-9_]", |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
            });
            if !seen.insert(name.clone()) {
                self.problem(
                    m,
                    "duplicate",
                    format!("custom metric `{name}` is declared twice"),
                );
            }
            custom_metrics.push(name);
        }
        let headers = match &t.headers {
            Some(h) => Headers {
                variant: h
                    .variant
                    .as_ref()
                    .map(|x| self.header(x, "traffic.headers.variant")),
                id: h.id.as_ref().map(|x| self.header(x, "traffic.headers.id")),
                mirror: h
                    .mirror
                    .as_ref()
                    .map(|x| self.header(x, "traffic.headers.mirror")),
                mirror_to: h
                    .mirror_to
                    .as_ref()
                    .map(|x| self.header(x, "traffic.headers.mirror_to")),
            },
            None => Headers::default(),
        };
        let mirror = match (&t.mirror, mode) {
            (Some(m), Mode::Mirror) => Some(self.mirror(m)),
            (None, Mode::Mirror) => Some(Mirror::default()),
            (Some(_), _) => {
                self.problem(
                    &t.mode,
                    "mirror",
                    format!(
                        "traffic.mirror is set but traffic.mode is `{}`, not mirror",
                        t.mode.value
                    ),
                );
                None
            }
            (None, _) => None,
        };
        let strip_control = t.strip_control.as_ref().and_then(|x| {
            self.filter_or_envoy(
                x,
                "traffic.strip_control",
                "strip_control",
                [Stripper::Filter, Stripper::Envoy],
            )
        });
        Traffic {
            mode,
            percent,
            matchers,
            sticky,
            custom_metrics,
            trusted_control: t.trusted_control,
            strip_control,
            headers,
            mirror,
        }
    }

    /// `x`, one of the filter's `filter` | `envoy` choices, as `choices[0]` or `choices[1]`; a
    /// problem `code` naming `field` otherwise.
    fn filter_or_envoy<T>(
        &mut self,
        x: &Spanned<String>,
        field: &str,
        code: &'static str,
        choices: [T; 2],
    ) -> Option<T> {
        let [filter, envoy] = choices;
        match x.value.as_str() {
            "filter" => Some(filter),
            "envoy" => Some(envoy),
            other => {
                self.problem(
                    x,
                    code,
                    format!("{field}: `{other}` is neither filter nor envoy"),
                );
                None
            }
        }
    }

    fn matcher(&mut self, m: &Spanned<RawMatcher>) -> Option<Matcher> {
        let header = self.header(&m.value.header, "traffic.match header");
        let test = match (&m.value.equals, &m.value.prefix, &m.value.one_of) {
            (Some(e), None, None) => MatchTest::Equals(e.clone()),
            (None, Some(p), None) => MatchTest::Prefix(p.clone()),
            (None, None, Some(l)) if !l.is_empty() => MatchTest::OneOf(l.clone()),
            _ => {
                self.problem(
                    m,
                    "matcher",
                    format!(
                        "traffic.match on `{header}` needs exactly one of equals, prefix, or a non-empty one_of"
                    ),
                );
                return None;
            }
        };
        Some(Matcher { header, test })
    }

    fn mirror(&mut self, m: &RawMirror) -> Mirror {
        let methods = m.methods.as_ref().map(|ms| {
            ms.iter()
                .map(|x| {
                    if x.value.is_empty() || !x.value.chars().all(|c| c.is_ascii_uppercase()) {
                        self.problem(
                            x,
                            "method",
                            format!(
                                "traffic.mirror.methods: `{}` is not an upper-case HTTP method",
                                x.value
                            ),
                        );
                    }
                    x.value.clone()
                })
                .collect()
        });
        let sender = m.sender.as_ref().and_then(|x| {
            self.filter_or_envoy(
                x,
                "traffic.mirror.sender",
                "sender",
                [Sender::Filter, Sender::Envoy],
            )
        });
        Mirror {
            sender,
            authority: m.authority.as_ref().map(|a| a.value.clone()),
            methods,
            max_body_bytes: m.max_body_bytes.as_ref().map(|x| x.value),
            timeout_ms: self.range(&m.timeout_ms, "traffic.mirror.timeout_ms", 1, 60_000),
            max_in_flight: self.range(&m.max_in_flight, "traffic.mirror.max_in_flight", 1, 10_000),
            compare_body_bytes: m.compare_body_bytes.as_ref().map(|x| x.value),
            latency_tolerance_ms: m.latency_tolerance_ms.as_ref().map(|x| x.value),
        }
    }

    fn analysis(&mut self, a: &RawAnalysis) -> Analysis {
        let interval_ms = self.duration(&a.interval, "analysis.interval");
        if a.min_sample.value == 0 {
            self.problem(
                &a.min_sample,
                "range",
                "analysis.min_sample must be at least 1".into(),
            );
        }
        if !(a.alpha.value > 0.0 && a.alpha.value <= 0.5) {
            self.problem(
                &a.alpha,
                "range",
                format!("analysis.alpha: {} is outside (0, 0.5]", a.alpha.value),
            );
        }
        let data = match (a.data.as_ref().map(|d| d.value.as_str()), &a.window) {
            (None | Some("cumulative"), None) => DataScope::Cumulative,
            (Some("sliding"), Some(w)) => {
                let window_ms = self.duration(w, "analysis.window");
                if window_ms != 0 && window_ms < interval_ms {
                    self.problem(
                        w,
                        "range",
                        format!(
                            "analysis.window `{}` is shorter than analysis.interval",
                            w.value
                        ),
                    );
                }
                DataScope::Sliding { window_ms }
            }
            (Some("sliding"), None) => {
                if let Some(d) = &a.data {
                    self.problem(d, "window", "sliding data needs analysis.window".into());
                }
                DataScope::Cumulative
            }
            (None | Some("cumulative"), Some(w)) => {
                self.problem(
                    w,
                    "window",
                    "analysis.window is only used with `data: sliding`".into(),
                );
                DataScope::Cumulative
            }
            (Some(other), _) => {
                if let Some(d) = &a.data {
                    self.problem(
                        d,
                        "data",
                        format!("analysis.data `{other}` must be cumulative or sliding"),
                    );
                }
                DataScope::Cumulative
            }
        };
        Analysis {
            interval_ms,
            min_sample: a.min_sample.value,
            alpha: a.alpha.value,
            data,
        }
    }

    fn rules(
        &mut self,
        rules: &Spanned<Vec<RawRule>>,
        custom: &[String],
        resources: &[String],
        probes: bool,
        envoy_copies: bool,
    ) -> Vec<Rule> {
        if rules.value.is_empty() {
            self.problem(rules, "rules", "a policy needs at least one rule".into());
        }
        let schema = Schema::with(custom, resources);
        let sample = RuleContext::sample_with(custom, resources);
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for r in &rules.value {
            let name = r.name.value.clone();
            if name.trim().is_empty() {
                self.problem(&r.name, "name", "a rule needs a name".into());
            } else if !names.insert(name.clone()) {
                self.problem(
                    &r.name,
                    "duplicate",
                    format!("rule `{name}` is defined twice"),
                );
            }
            let action = Action::parse(&r.action.value);
            if action.is_none() {
                let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                self.problem(
                    &r.action,
                    "unknown_action",
                    format!(
                        "unknown action `{}`: expected one of {}",
                        r.action.value,
                        all.join(", ")
                    ),
                );
            }
            let for_intervals = match &r.for_intervals {
                Some(f) if f.value == 0 || f.value > 10_000 => {
                    self.problem(
                        f,
                        "range",
                        format!(
                            "`for` of rule `{name}`: {} is outside [1, 10000] intervals",
                            f.value
                        ),
                    );
                    1
                }
                Some(f) => u32::try_from(f.value).unwrap_or(1),
                None => 1,
            };
            let severity = match &r.severity {
                Some(s) => Severity::parse(&s.value).or_else(|| {
                    self.problem(
                        s,
                        "severity",
                        format!("severity `{}` must be info, warning or critical", s.value),
                    );
                    None
                }),
                None => action.map(Action::default_severity),
            };
            let checked = match expr::check(&r.when.value, &schema, &sample) {
                Ok(c) if !probes && c.fields.iter().any(|f| f.starts_with("synthetic.")) => {
                    self.problem(
                        &r.when,
                        "synthetic",
                        format!(
                            "rule `{name}` reads synthetic.* but the policy has no `synthetic:` probes"
                        ),
                    );
                    None
                }
                Ok(ref c)
                    if envoy_copies
                        && let Some(field) = c.fields.iter().find(|f| reads_an_answer(f)) =>
                {
                    self.problem(
                        &r.when,
                        "mirror",
                        format!(
                            "rule `{name}` reads {field}, but with traffic.mirror.sender: envoy the filter never sees a copy's answer (mirror.compared, mismatches and failed stay 0): judge the shadow with shadow.* and compare.*"
                        ),
                    );
                    None
                }
                Ok(c) => Some(c),
                Err(problems) => {
                    for p in problems {
                        let position = position_in_value(
                            self.text,
                            &r.when.referenced,
                            &r.when.value,
                            p.offset,
                        );
                        self.problems.push(Problem::new(
                            position,
                            p.code,
                            format!("rule `{name}`: {}", p.message),
                        ));
                    }
                    None
                }
            };
            if let (Some(action), Some(severity), Some(checked)) = (action, severity, checked) {
                out.push(Rule {
                    name,
                    when: r.when.value.clone(),
                    program: Arc::new(checked.program),
                    fields: checked.fields,
                    action,
                    for_intervals,
                    severity,
                    position: at(&r.when),
                });
            }
        }
        out
    }

    fn steps(&mut self, steps: &[RawStep]) -> Vec<Step> {
        let mut out: Vec<Step> = Vec::new();
        let mut last: Option<f64> = None;
        for (i, s) in steps.iter().enumerate() {
            let field = format!("steps[{i}].weight");
            let weight = self.percent(&s.weight, &field);
            if s.weight.value <= 0.0 {
                self.problem(
                    &s.weight,
                    "steps",
                    format!("{field}: a step's weight must be above 0"),
                );
            } else if let Some(prev) = last
                && s.weight.value <= prev
            {
                self.problem(
                    &s.weight,
                    "steps",
                    format!(
                        "{field}: {} does not increase on the previous step's {prev}: steps must strictly increase",
                        s.weight.value
                    ),
                );
            }
            last = Some(s.weight.value);
            let hold_ms = self.duration(&s.hold, &format!("steps[{i}].hold"));
            out.push(Step { weight, hold_ms });
        }
        out
    }

    /// A section whose own type checks itself: its error, if any, at the section's position.
    fn section<T: Clone>(
        &mut self,
        s: &Spanned<T>,
        field: &str,
        checked: Result<(), String>,
    ) -> Option<T> {
        match checked {
            Ok(()) => Some(s.value.clone()),
            Err(e) => {
                self.problem(s, "section", format!("{field}: {e}"));
                None
            }
        }
    }
}

/// Whether a rule field counts what the filter learns from a copy's answer, which it only gets
/// when it sends the copy itself.
fn reads_an_answer(field: &str) -> bool {
    ["mirror.compared", "mirror.mismatch", "mirror.failed"]
        .iter()
        .any(|prefix| field.starts_with(prefix))
}
