//! How the upstream misbehaves: an error rate, a latency distribution, connection-level
//! faults (reset, hang), and a wrong answer body. Set from flags at start and changed at run time by `POST /admin/fault`.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// What the upstream does with a request's connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Answer every request (after the latency, with the error rate).
    #[default]
    Normal,
    /// Reset the connection (TCP RST) instead of answering.
    Reset,
    /// Hold the request for `hang_ms` (or until the client leaves) before answering.
    Hang,
}

/// The upstream's current behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Share of requests answered with 500, in [0, 1].
    pub error_rate: f64,
    /// Median latency added before answering, milliseconds.
    pub latency_ms: f64,
    /// Spread of the log-normal latency distribution (0: every request waits `latency_ms`).
    pub latency_sigma: f64,
    /// Connection-level behaviour.
    pub mode: Mode,
    /// How long a hanging request is held; `None` holds it until the client leaves.
    pub hang_ms: Option<u64>,
    /// The answer body instead of `<status> answered by <label>`; `None` keeps the normal one.
    #[serde(default)]
    pub body: Option<String>,
}

impl Default for Fault {
    fn default() -> Self {
        Fault {
            error_rate: 0.0,
            latency_ms: 0.0,
            latency_sigma: 0.0,
            mode: Mode::Normal,
            hang_ms: None,
            body: None,
        }
    }
}

/// A partial update of [`Fault`], the body of `POST /admin/fault`; absent fields keep their value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPatch {
    /// New error rate.
    pub error_rate: Option<f64>,
    /// New median latency.
    pub latency_ms: Option<f64>,
    /// New latency spread.
    pub latency_sigma: Option<f64>,
    /// New connection-level behaviour.
    pub mode: Option<Mode>,
    /// New hang duration; `0` means until the client leaves.
    pub hang_ms: Option<u64>,
    /// New answer body; `""` goes back to the normal one.
    pub body: Option<String>,
}

/// A fault setting outside its range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    /// The error rate is not a probability.
    #[error("error_rate: {0} is outside [0, 1]")]
    ErrorRate(f64),
    /// The latency is negative, not finite or longer than an hour.
    #[error("latency_ms: {0} is outside [0, 3600000]")]
    Latency(f64),
    /// The spread is negative, not finite or absurdly large.
    #[error("latency_sigma: {0} is outside [0, 5]")]
    Sigma(f64),
}

/// What to do with one request, drawn from a [`Fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Wait, then answer with this status.
    Answer {
        /// The status to answer with (200 or 500).
        status: u16,
        /// How long to wait first.
        delay: Duration,
    },
    /// Reset the connection.
    Reset,
    /// Hold the request, then answer 200; `None`: until the client leaves.
    Hang(Option<Duration>),
}

impl Outcome {
    /// A short label for the request log and metrics.
    pub fn label(&self) -> String {
        match self {
            Outcome::Answer { status, .. } => status.to_string(),
            Outcome::Reset => "reset".to_string(),
            Outcome::Hang(_) => "hang".to_string(),
        }
    }
}

impl Fault {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(FaultError::ErrorRate(self.error_rate));
        }
        if !(0.0..=3_600_000.0).contains(&self.latency_ms) {
            return Err(FaultError::Latency(self.latency_ms));
        }
        if !(0.0..=5.0).contains(&self.latency_sigma) {
            return Err(FaultError::Sigma(self.latency_sigma));
        }
        Ok(())
    }

    /// This fault with `patch` applied, validated; `self` is unchanged on error.
    pub fn patched(&self, patch: &FaultPatch) -> Result<Fault, FaultError> {
        let next = Fault {
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            latency_sigma: patch.latency_sigma.unwrap_or(self.latency_sigma),
            mode: patch.mode.unwrap_or(self.mode),
            hang_ms: match patch.hang_ms {
                Some(0) => None,
                Some(ms) => Some(ms),
                None => self.hang_ms,
            },
            body: match &patch.body {
                Some(b) if b.is_empty() => None,
                Some(b) => Some(b.clone()),
                None => self.body.clone(),
            },
        };
        next.validate()?;
        Ok(next)
    }

    /// Draws what to do with one request.
    pub fn draw(&self, rng: &mut impl Rng) -> Outcome {
        match self.mode {
            Mode::Reset => Outcome::Reset,
            Mode::Hang => Outcome::Hang(self.hang_ms.map(Duration::from_millis)),
            Mode::Normal => {
                let status = if rng.random::<f64>() < self.error_rate {
                    500
                } else {
                    200
                };
                Outcome::Answer {
                    status,
                    delay: self.latency(rng),
                }
            }
        }
    }

    /// A latency drawn from the log-normal distribution with median `latency_ms` and spread
    /// `latency_sigma`, capped at ten times the median.
    fn latency(&self, rng: &mut impl Rng) -> Duration {
        if self.latency_ms <= 0.0 {
            return Duration::ZERO;
        }
        let factor = if self.latency_sigma > 0.0 {
            (self.latency_sigma * standard_normal(rng)).exp().min(10.0)
        } else {
            1.0
        };
        Duration::from_secs_f64(self.latency_ms * factor / 1000.0)
    }
}

/// One draw from the standard normal distribution (Box-Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1], so ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn error_rate_is_honoured() {
        let fault = Fault {
            error_rate: 0.25,
            ..Fault::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let n = 40_000;
        let errors = (0..n)
            .filter(|_| matches!(fault.draw(&mut rng), Outcome::Answer { status: 500, .. }))
            .count();
        // 4 binomial standard deviations: sqrt(40000 * 0.25 * 0.75) = 86.6.
        assert!(
            (errors as f64 - 10_000.0).abs() < 4.0 * 86.6,
            "{errors} errors"
        );
    }

    #[test]
    fn latency_median_matches_the_setting() {
        let fault = Fault {
            latency_ms: 20.0,
            latency_sigma: 0.5,
            ..Fault::default()
        };
        let mut rng = StdRng::seed_from_u64(11);
        let mut delays: Vec<Duration> = (0..10_001)
            .map(|_| match fault.draw(&mut rng) {
                Outcome::Answer { delay, .. } => delay,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        delays.sort();
        let median = delays[5_000].as_secs_f64() * 1000.0;
        assert!((median - 20.0).abs() < 1.0, "median {median} ms");
        assert!(delays[9_900] > delays[5_000] * 2, "a spread gives a tail");
    }

    #[test]
    fn patch_keeps_absent_fields_and_refuses_bad_ranges() {
        let fault = Fault {
            latency_ms: 5.0,
            ..Fault::default()
        };
        let patch = FaultPatch {
            mode: Some(Mode::Hang),
            hang_ms: Some(10_000),
            ..FaultPatch::default()
        };
        let next = fault.patched(&patch).expect("valid patch");
        assert_eq!(next.latency_ms, 5.0);
        assert_eq!(next.mode, Mode::Hang);
        assert_eq!(next.hang_ms, Some(10_000));
        assert_eq!(next.body, None);
        let wrong = FaultPatch {
            body: Some("oops".into()),
            ..FaultPatch::default()
        };
        let wrong = next.patched(&wrong).expect("valid patch");
        assert_eq!(wrong.body.as_deref(), Some("oops"));
        assert_eq!(wrong.mode, Mode::Hang, "other fields kept");
        let back = FaultPatch {
            body: Some(String::new()),
            ..FaultPatch::default()
        };
        assert_eq!(wrong.patched(&back).expect("valid").body, None);

        let bad = FaultPatch {
            error_rate: Some(1.5),
            ..FaultPatch::default()
        };
        assert_eq!(fault.patched(&bad), Err(FaultError::ErrorRate(1.5)));
        let bad = FaultPatch {
            latency_ms: Some(f64::NAN),
            ..FaultPatch::default()
        };
        assert!(fault.patched(&bad).is_err());
    }
}
