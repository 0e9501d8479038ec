//! One synthetic probe as the policy declares it, validated, and how an answer is judged.

use std::fmt;

/// Methods that cannot change state: probes with any other method need an isolated shadow.
pub const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// A probe: one request and what a good answer looks like.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Unique name within the policy.
    pub name: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Extra request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Request body, if any.
    pub body: Option<String>,
    /// The status a good answer has.
    pub status: u16,
    /// What a good answer's body holds, if checked.
    pub body_match: Option<BodyMatch>,
    /// The longest a good answer may take, milliseconds; also the request's time limit.
    pub latency_budget_ms: u64,
    /// Time between two runs, milliseconds (from the policy's `rate`).
    pub every_ms: u64,
}

/// A check on the answer's body.
#[derive(Clone, Debug)]
pub enum BodyMatch {
    /// The body contains this text.
    Contains(String),
    /// The body matches this regular expression (anywhere, unless anchored).
    Regex(regex::Regex),
}

impl fmt::Display for BodyMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyMatch::Contains(text) => write!(f, "contain {text:?}"),
            BodyMatch::Regex(re) => write!(f, "match /{}/", re.as_str()),
        }
    }
}

/// Why a probe run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer: connection refused, reset, or the budget ran out before the answer.
    NoAnswer(String),
    /// The status was not the expected one.
    Status {
        /// Expected.
        expected: u16,
        /// Got.
        got: u16,
    },
    /// The body did not match.
    Body(String),
    /// The answer was good but slower than the budget.
    Slow {
        /// Milliseconds taken.
        took_ms: u64,
        /// The budget.
        budget_ms: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoAnswer(why) => write!(f, "no answer: {why}"),
            Failure::Status { expected, got } => write!(f, "status {got}, expected {expected}"),
            Failure::Body(why) => f.write_str(why),
            Failure::Slow { took_ms, budget_ms } => {
                write!(f, "took {took_ms} ms, over the {budget_ms} ms budget")
            }
        }
    }
}

impl Probe {
    /// Whether the method cannot change state (GET, HEAD, OPTIONS).
    pub fn is_safe(&self) -> bool {
        SAFE_METHODS.contains(&self.method.as_str())
    }

    /// Judges an answer: the status first, then the body, then the latency budget.
    ///
    /// ```
    /// use doppel_engine::synthetic::{BodyMatch, Probe};
    /// let probe = Probe {
    ///     name: "home".into(), method: "GET".into(), path: "/".into(), headers: vec![],
    ///     body: None, status: 200, body_match: Some(BodyMatch::Contains("ok".into())),
    ///     latency_budget_ms: 500, every_ms: 1000,
    /// };
    /// assert!(probe.judge(200, b"all ok", 20).is_ok());
    /// assert!(probe.judge(200, b"oops", 20).is_err());
    /// assert!(probe.judge(503, b"ok", 20).is_err());
    /// assert!(probe.judge(200, b"ok", 900).is_err());
    /// ```
    pub fn judge(&self, status: u16, body: &[u8], took_ms: u64) -> Result<(), Failure> {
        if status != self.status {
            return Err(Failure::Status {
                expected: self.status,
                got: status,
            });
        }
        if let Some(check) = &self.body_match {
            let text = String::from_utf8_lossy(body);
            let ok = match check {
                BodyMatch::Contains(want) => text.contains(want.as_str()),
                BodyMatch::Regex(re) => re.is_match(&text),
            };
            if !ok {
                let shown: String = text.chars().take(80).collect();
                return Err(Failure::Body(format!(
                    "body does not {check}: got {shown:?}"
                )));
            }
        }
        if took_ms > self.latency_budget_ms {
            return Err(Failure::Slow {
                took_ms,
                budget_ms: self.latency_budget_ms,
            });
        }
        Ok(())
    }
}
