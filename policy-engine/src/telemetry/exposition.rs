//! A writer of the Prometheus text exposition format (version 0.0.4): one `# HELP` and one
//! `# TYPE` line per family, then its samples. Label values are escaped; names are the
//! caller's constants, checked in debug builds.

use std::fmt::Write;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A page of exposition text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    family: String,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `value` escaped for a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as the format writes it (`NaN`, `+Inf`, `-Inf` for the special ones).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts the family `name`: its help line and type. Samples written next belong to it.
    ///
    /// ```
    /// use doppel_engine::telemetry::exposition::{Exposition, Kind};
    /// let mut page = Exposition::new();
    /// page.family("doppel_looks_total", "Analysis looks.", Kind::Counter);
    /// page.sample(&[("outcome", "evaluated")], 3.0);
    /// assert_eq!(
    ///     page.finish(),
    ///     "# HELP doppel_looks_total Analysis looks.\n# TYPE doppel_looks_total counter\n\
    ///      doppel_looks_total{outcome=\"evaluated\"} 3\n"
    /// );
    /// ```
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self.family = name.to_owned();
    }

    /// One sample of the current family, with `labels` (name, value) in order.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        debug_assert!(!self.family.is_empty(), "a sample before any family");
        self.text.push_str(&self.family);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(name), "label name {name:?}");
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{name}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_special_numbers_spelled() {
        let mut page = Exposition::new();
        page.family("doppel_rollout_step", "Step.\nSecond line", Kind::Gauge);
        page.sample(&[("service", "a\"b\\c\nd"), ("x", "y")], f64::NAN);
        page.sample(&[], f64::INFINITY);
        page.sample(&[], 0.25);
        let text = page.finish();
        assert_eq!(
            text,
            "# HELP doppel_rollout_step Step.\\nSecond line\n# TYPE doppel_rollout_step gauge\n\
             doppel_rollout_step{service=\"a\\\"b\\\\c\\nd\",x=\"y\"} NaN\n\
             doppel_rollout_step +Inf\ndoppel_rollout_step 0.25\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("doppel_xds_pushes_total"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("doppel-x"));
        assert!(!valid_name(""));
    }
}
