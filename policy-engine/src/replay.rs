//! `doppel replay`: a policy run over a recorded metrics trace, as the live engine would run
//! it, printing the decision timeline.
//!
//! A trace is JSON Lines (docs/trace-format.md): one [`ServiceWindow`] per line, in time order.
//! Lines are wire types ([`TraceLine`]) checked at the edge: every bad line is reported with
//! its line number and the replay does not run, so nothing is dropped silently. Windows of
//! other services are counted and named in the report. The replay is deterministic: same
//! policy and trace, same output, byte for byte.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::analysis::{AnalysisError, Analyzer, Decision, End, Outcome};
use crate::metrics::{Histogram, MirrorWindow, ServiceWindow, VariantWindow};
use crate::policy::Policy;

/// One line of a trace, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceLine {
    /// The service.
    pub service: String,
    /// Window start, Unix milliseconds.
    pub start_ms: u64,
    /// Window end (exclusive), Unix milliseconds.
    pub end_ms: u64,
    /// The primary's metrics.
    pub primary: TraceVariant,
    /// The shadow's metrics.
    pub shadow: TraceVariant,
    /// The mirror comparison's counts.
    #[serde(default)]
    pub mirror: TraceMirror,
}

/// One variant's metrics in a trace line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceVariant {
    /// Requests answered.
    pub requests: u64,
    /// Answers with a 5xx status.
    #[serde(default)]
    pub errors_5xx: u64,
    /// Requests without an upstream answer.
    #[serde(default)]
    pub resets: u64,
    /// Latency histogram in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<TraceHistogram>,
    /// Custom histograms by name, in milliseconds.
    #[serde(default)]
    pub custom: BTreeMap<String, TraceHistogram>,
}

/// A histogram in a trace line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceHistogram {
    /// Upper bounds, strictly increasing.
    pub bounds: Vec<f64>,
    /// One count per bound plus the overflow count.
    pub counts: Vec<u64>,
    /// Sum of the observations.
    #[serde(default)]
    pub sum: f64,
}

/// The mirror counts in a trace line (all default to 0).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceMirror {
    /// Copies sent.
    pub sent: u64,
    /// Copies compared.
    pub compared: u64,
    /// Status class differed.
    pub mismatch_status: u64,
    /// Body digest differed.
    pub mismatch_body: u64,
    /// Shadow too slow.
    pub mismatch_latency: u64,
    /// Copies without an answer.
    pub failed: u64,
    /// Chosen requests not copied.
    pub skipped: u64,
}

fn histogram(h: TraceHistogram, what: &str) -> Result<Histogram, String> {
    if h.counts.len() != h.bounds.len() + 1 {
        return Err(format!(
            "{what}: {} counts for {} bounds (one more count than bounds: the last is the overflow)",
            h.counts.len(),
            h.bounds.len()
        ));
    }
    if h.bounds.iter().any(|b| !b.is_finite()) || h.bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "{what}: bounds must be finite and strictly increasing"
        ));
    }
    if !h.sum.is_finite() || h.sum < 0.0 {
        return Err(format!(
            "{what}: sum {} must be finite and not negative",
            h.sum
        ));
    }
    Ok(Histogram {
        bounds: h.bounds,
        counts: h.counts,
        sum: h.sum,
    })
}

fn variant(v: TraceVariant, name: &str) -> Result<VariantWindow, String> {
    if v.errors_5xx > v.requests {
        return Err(format!(
            "{name}: errors_5xx {} exceeds requests {}",
            v.errors_5xx, v.requests
        ));
    }
    let latency_ms = match v.latency_ms {
        Some(h) => histogram(h, &format!("{name}.latency_ms"))?,
        None => Histogram::default(),
    };
    let mut custom = BTreeMap::new();
    for (k, h) in v.custom {
        let h = histogram(h, &format!("{name}.custom.{k}"))?;
        custom.insert(k, h);
    }
    Ok(VariantWindow {
        requests: v.requests,
        errors_5xx: v.errors_5xx,
        resets: v.resets,
        latency_ms,
        custom,
    })
}

impl TryFrom<TraceLine> for ServiceWindow {
    type Error = String;

    fn try_from(line: TraceLine) -> Result<ServiceWindow, String> {
        let TraceLine {
            service,
            start_ms,
            end_ms,
            primary,
            shadow,
            mirror,
        } = line;
        if end_ms <= start_ms {
            return Err(format!("end_ms {end_ms} is not after start_ms {start_ms}"));
        }
        let TraceMirror {
            sent,
            compared,
            mismatch_status,
            mismatch_body,
            mismatch_latency,
            failed,
            skipped,
        } = mirror;
        Ok(ServiceWindow {
            service,
            start_ms,
            end_ms,
            primary: variant(primary, "primary")?,
            shadow: variant(shadow, "shadow")?,
            mirror: MirrorWindow {
                sent,
                compared,
                mismatch_status,
                mismatch_body,
                mismatch_latency,
                failed,
                skipped,
            },
        })
    }
}

/// A bad trace line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A window read from a trace, with its line number.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceWindow {
    /// Line number, from 1.
    pub line: usize,
    /// The window.
    pub window: ServiceWindow,
}

/// Reads a whole trace. Blank lines are skipped; every other line must be a valid window,
/// or it is reported (all bad lines are, not only the first).
pub fn read_trace(reader: impl BufRead) -> Result<Vec<TraceWindow>, Vec<TraceError>> {
    let mut windows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let text = match line {
            Ok(t) => t,
            Err(e) => {
                errors.push(TraceError {
                    line: number,
                    message: format!("unreadable: {e}"),
                });
                break;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<TraceLine>(&text)
            .map_err(|e| e.to_string())
            .and_then(ServiceWindow::try_from);
        match parsed {
            Ok(window) => windows.push(TraceWindow {
                line: number,
                window,
            }),
            Err(message) => errors.push(TraceError {
                line: number,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(windows)
    } else {
        Err(errors)
    }
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The policy's service.
    pub service: String,
    /// Windows of the service replayed.
    pub windows: usize,
    /// Windows of other services, by service, not replayed.
    pub other_services: BTreeMap<String, usize>,
    /// Start of the first window replayed, Unix milliseconds.
    pub start_ms: Option<u64>,
    /// Looks at the data (one per analysis interval).
    pub evaluations: usize,
    /// Looks with too little data to evaluate rules.
    pub inconclusive: usize,
    /// The first look that evaluated rules, Unix milliseconds.
    pub first_conclusive_ms: Option<u64>,
    /// Every rule that fired, in time order.
    pub decisions: Vec<Decision>,
    /// How the rollout ended, if it did.
    pub end: Option<End>,
    /// Windows ignored because the rollout had ended.
    pub after_end: usize,
}

/// A replay that could not finish: the window it stopped at and why.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ReplayError {
    /// The trace line of the window.
    pub line: usize,
    /// What went wrong.
    pub source: AnalysisError,
}

/// Replays `windows` under `policy`; `tick` is called after each window (for a progress bar).
pub fn replay(
    policy: &Policy,
    windows: &[TraceWindow],
    mut tick: impl FnMut(),
) -> Result<Report, ReplayError> {
    let mut analyzer = Analyzer::new(policy.clone()).map_err(|e| ReplayError {
        line: 0,
        source: e.into(),
    })?;
    let mut report = Report {
        service: policy.service.clone(),
        windows: 0,
        other_services: BTreeMap::new(),
        start_ms: None,
        evaluations: 0,
        inconclusive: 0,
        first_conclusive_ms: None,
        decisions: Vec::new(),
        end: None,
        after_end: 0,
    };
    for tw in windows {
        tick();
        let w = &tw.window;
        if w.service != policy.service {
            *report.other_services.entry(w.service.clone()).or_default() += 1;
            continue;
        }
        report.windows += 1;
        report.start_ms.get_or_insert(w.start_ms);
        if analyzer.ended().is_some() {
            report.after_end += 1;
        }
        let evaluation = analyzer.push(w).map_err(|source| ReplayError {
            line: tw.line,
            source,
        })?;
        if let Some(e) = evaluation {
            report.evaluations += 1;
            match e.outcome {
                Outcome::Inconclusive { .. } => report.inconclusive += 1,
                Outcome::Evaluated { .. } => {
                    report.first_conclusive_ms.get_or_insert(e.at_ms);
                }
            }
            report.decisions.extend(e.decisions);
        }
    }
    report.end = analyzer.ended();
    Ok(report)
}

/// The report as text, one decision per block, for people.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let start = report.start_ms.unwrap_or(0);
    let _ = writeln!(
        out,
        "service {}: {} windows, {} evaluations ({} inconclusive), {} decisions",
        report.service,
        report.windows,
        report.evaluations,
        report.inconclusive,
        report.decisions.len()
    );
    for (service, n) in &report.other_services {
        let _ = writeln!(
            out,
            "skipped {n} windows of service {service} (not this policy's)"
        );
    }
    if let Some(first) = report.first_conclusive_ms {
        let _ = writeln!(
            out,
            "rules first evaluated at {} ({})",
            timestamp(first),
            offset(first.saturating_sub(start))
        );
    }
    for d in &report.decisions {
        let _ = writeln!(
            out,
            "{} ({})  {:<8}  {} [{}]",
            timestamp(d.at_ms),
            offset(d.at_ms.saturating_sub(start)),
            d.action.as_str().to_uppercase(),
            d.rule,
            d.severity.as_str()
        );
        let values: Vec<String> = d
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", short(v)))
            .collect();
        let _ = writeln!(out, "    values: {}", values.join(", "));
        let _ = writeln!(out, "    why: {}", d.explanation);
    }
    let end = match report.end {
        Some(End::RolledBack) => "rolled back",
        Some(End::Promoted) => "promoted",
        None => "still running (no rollback or promotion)",
    };
    let _ = write!(out, "outcome: {end}");
    if report.after_end > 0 {
        let _ = write!(out, "; {} later windows not evaluated", report.after_end);
    }
    out.push('\n');
    out
}

/// A value for people: doubles with at most four significant decimals (JSON keeps them all).
fn short(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() && x.fract() != 0.0 => {
            if x.abs() >= 0.01 {
                let s = format!("{x:.4}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                format!("{x:.3e}")
            }
        }
        _ => v.to_string(),
    }
}

/// `+1h02m03s` style offset.
fn offset(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("+{h}h{m:02}m{s:02}s")
    } else {
        format!("+{m}m{s:02}s")
    }
}

/// RFC 3339 UTC time of Unix milliseconds (`2024-05-01T12:00:10.000Z`).
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_700_000_010_250), "2023-11-14T22:13:30.250Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let good = r#"{"service":"a","start_ms":0,"end_ms":10,"primary":{"requests":1},"shadow":{"requests":1}}"#;
        let trace = format!(
            "{good}\n\nnot json\n{}\n{}\n",
            good.replace("\"end_ms\":10", "\"end_ms\":0"),
            good.replace(
                "{\"requests\":1}}",
                "{\"requests\":1,\"latency_ms\":{\"bounds\":[1],\"counts\":[1]}}}"
            ),
        );
        let errors = read_trace(trace.as_bytes()).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5], "{errors:?}");
        assert!(
            errors[2].message.contains("shadow.latency_ms"),
            "{}",
            errors[2]
        );
    }
}
