//! Summaries of one bucketed histogram (quantiles, mean) and putting two histograms on
//! common bucket bounds.
//!
//! Quantiles follow Prometheus' `histogram_quantile`: find the first bucket whose cumulative
//! count reaches `q * total` and interpolate linearly inside it, the first bucket starting at 0.
//! A quantile that falls in the overflow bucket is reported as the highest finite bound and
//! flagged, since the histogram cannot say more.

use serde::Serialize;

use super::StatsError;
use crate::metrics::Histogram;

/// Checks a histogram's shape: finite, strictly increasing bounds and one more count than bounds.
pub fn validate(h: &Histogram, variant: &'static str) -> Result<(), StatsError> {
    let bad = |reason: String| StatsError::BadHistogram { variant, reason };
    if h.counts.len() != h.bounds.len() + 1 {
        return Err(bad(format!(
            "{} counts for {} bounds (expected one more count than bounds)",
            h.counts.len(),
            h.bounds.len()
        )));
    }
    if let Some(b) = h.bounds.iter().find(|b| !b.is_finite()) {
        return Err(bad(format!("bound {b} is not finite")));
    }
    if let Some(w) = h.bounds.windows(2).find(|w| w[0] >= w[1]) {
        return Err(bad(format!(
            "bounds not strictly increasing ({} then {})",
            w[0], w[1]
        )));
    }
    Ok(())
}

/// Total observations in a histogram.
pub fn total(h: &Histogram) -> u64 {
    h.counts.iter().sum()
}

/// The two histograms on the same bounds: the bounds both have, each bucket of either
/// histogram merged into the first common bucket that contains it. Exact (no counts are
/// split), coarser when the bounds differ. Refuses histograms with no bound in common.
pub fn common_bounds(
    primary: &Histogram,
    shadow: &Histogram,
) -> Result<(Histogram, Histogram), StatsError> {
    validate(primary, "primary")?;
    validate(shadow, "shadow")?;
    if primary.bounds == shadow.bounds {
        return Ok((primary.clone(), shadow.clone()));
    }
    let common: Vec<f64> = primary
        .bounds
        .iter()
        .copied()
        .filter(|b| shadow.bounds.contains(b))
        .collect();
    if common.is_empty() {
        return Err(StatsError::NoCommonBounds {
            primary: primary.bounds.clone(),
            shadow: shadow.bounds.clone(),
        });
    }
    Ok((rebucket(primary, &common), rebucket(shadow, &common)))
}

/// Moves every bucket of `h` into the first bucket of `bounds` whose upper bound is at or
/// above the bucket's own (the overflow bucket when there is none).
fn rebucket(h: &Histogram, bounds: &[f64]) -> Histogram {
    let mut counts = vec![0u64; bounds.len() + 1];
    for (i, &c) in h.counts.iter().enumerate() {
        let target = match h.bounds.get(i) {
            Some(upper) => bounds.partition_point(|b| b < upper),
            None => bounds.len(),
        };
        counts[target] += c;
    }
    Histogram {
        bounds: bounds.to_vec(),
        counts,
        sum: h.sum,
    }
}

/// One quantile estimate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quantile {
    /// The estimate, in the histogram's unit.
    pub value: f64,
    /// True when the quantile lies in the overflow bucket: `value` is then only a lower bound.
    pub in_overflow: bool,
}

/// The `q` quantile (0 <= q <= 1) by linear interpolation in its bucket; `None` for an empty
/// histogram, a histogram without bounds, or `q` out of range.
pub fn quantile(h: &Histogram, q: f64) -> Option<Quantile> {
    let n = total(h);
    if n == 0 || h.bounds.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * n as f64;
    let mut before = 0u64;
    for (i, &c) in h.counts.iter().enumerate() {
        let after = before + c;
        if c > 0 && after as f64 >= rank {
            let Some(&upper) = h.bounds.get(i) else {
                break;
            };
            let lower = if i == 0 { 0.0f64.min(upper) } else { h.bounds[i - 1] };
            let value = lower + (upper - lower) * ((rank - before as f64) / c as f64).max(0.0);
            return Some(Quantile {
                value,
                in_overflow: false,
            });
        }
        before = after;
    }
    Some(Quantile {
        value: *h.bounds.last()?,
        in_overflow: true,
    })
}

/// The mean (from the exact sum), `None` when empty.
pub fn mean(h: &Histogram) -> Option<f64> {
    let n = total(h);
    (n > 0).then(|| h.sum / n as f64)
}

/// What the policy context shows of a latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Observations.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: Quantile,
    /// 90th percentile.
    pub p90: Quantile,
    /// 95th percentile.
    pub p95: Quantile,
    /// 99th percentile.
    pub p99: Quantile,
}

/// Count, mean and the usual quantiles; `None` for an empty histogram.
pub fn summarize(h: &Histogram) -> Option<Summary> {
    Some(Summary {
        count: total(h),
        mean: mean(h)?,
        p50: quantile(h, 0.5)?,
        p90: quantile(h, 0.9)?,
        p95: quantile(h, 0.95)?,
        p99: quantile(h, 0.99)?,
    })
}
