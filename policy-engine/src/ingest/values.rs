//! The numbers of one metric, checked: a count is finite, whole, not negative and not huge; a
//! histogram has finite, strictly increasing bounds and counts that add up. Envoy's cumulative
//! bucket counts (each counts everything at or below its bound) become per-bucket counts.

use envoy_types::pb::io::prometheus::client as prom;

use super::error::IngestError;
use crate::metrics::Histogram;

/// The largest count accepted: 2^53, the largest integer an `f64` (the wire's type) holds
/// exactly. Windows add with saturation, so even many such counts never wrap.
pub const MAX_COUNT: u64 = 1 << 53;
/// The largest histogram sum accepted, in the metric's own unit.
pub const MAX_SUM: f64 = 1e18;
/// The most buckets a histogram may have (Envoy's default has 20).
pub const MAX_BUCKETS: usize = 64;

/// A count from a float: finite, not negative, whole, at most [`MAX_COUNT`].
pub(super) fn count(name: &str, value: f64) -> Result<u64, IngestError> {
    if !value.is_finite() {
        return Err(IngestError::NotFinite {
            name: name.to_owned(),
            value,
        });
    }
    if value < 0.0 {
        return Err(IngestError::NegativeValue {
            name: name.to_owned(),
            value,
        });
    }
    if value.fract() != 0.0 {
        return Err(IngestError::NotAnInteger {
            name: name.to_owned(),
            value,
        });
    }
    if value > MAX_COUNT as f64 {
        return Err(IngestError::TooLarge {
            name: name.to_owned(),
            value,
            limit: MAX_COUNT as f64,
        });
    }
    // Whole, finite and within [0, 2^53]: the cast is exact.
    Ok(value as u64)
}

/// Checks one histogram and turns its cumulative buckets into per-bucket counts, bounds and sum
/// multiplied by `scale`.
pub(super) fn convert_histogram(
    name: &str,
    histogram: prom::Histogram,
    scale: f64,
) -> Result<Histogram, IngestError> {
    let prom::Histogram {
        sample_count,
        sample_count_float,
        sample_sum,
        bucket,
        created_timestamp: _,
        schema,
        zero_threshold: _,
        zero_count,
        zero_count_float,
        negative_span,
        negative_delta,
        negative_count,
        positive_span,
        positive_delta,
        positive_count,
        exemplars: _,
    } = histogram;
    let unsupported = |reason| IngestError::UnsupportedHistogram {
        name: name.to_owned(),
        reason,
    };
    let bad = |reason: String| IngestError::BadHistogram {
        name: name.to_owned(),
        reason,
    };
    let native = schema.is_some()
        || zero_count.is_some_and(|c| c > 0)
        || zero_count_float.is_some_and(|c| c > 0.0)
        || !negative_span.is_empty()
        || !negative_delta.is_empty()
        || !negative_count.is_empty()
        || !positive_span.is_empty()
        || !positive_delta.is_empty()
        || !positive_count.is_empty();
    if native {
        return Err(unsupported("native (sparse) buckets"));
    }
    if sample_count_float.is_some() {
        return Err(unsupported("float counts"));
    }
    if bucket.len() > MAX_BUCKETS {
        return Err(unsupported("more than 64 buckets"));
    }
    let total = sample_count.ok_or_else(|| IngestError::MissingValue {
        name: name.to_owned(),
        expected: "sample_count",
    })?;
    let total = count(name, total as f64)?;
    let sum = sample_sum.unwrap_or(0.0);
    if !sum.is_finite() {
        return Err(IngestError::NotFinite {
            name: name.to_owned(),
            value: sum,
        });
    }
    if sum < 0.0 {
        return Err(IngestError::NegativeValue {
            name: name.to_owned(),
            value: sum,
        });
    }
    if sum > MAX_SUM {
        return Err(IngestError::TooLarge {
            name: name.to_owned(),
            value: sum,
            limit: MAX_SUM,
        });
    }

    let mut bounds = Vec::with_capacity(bucket.len());
    let mut counts = Vec::with_capacity(bucket.len() + 1);
    let mut below = 0u64;
    let mut saw_infinity = false;
    for (i, b) in bucket.into_iter().enumerate() {
        if saw_infinity {
            return Err(bad(format!("bucket {i} follows the +Inf bucket")));
        }
        let prom::Bucket {
            cumulative_count,
            cumulative_count_float,
            upper_bound,
            exemplar: _,
        } = b;
        if cumulative_count_float.is_some() && cumulative_count.is_none() {
            return Err(unsupported("float counts"));
        }
        let bound = upper_bound.ok_or_else(|| bad(format!("bucket {i} has no upper bound")))?;
        let cumulative = cumulative_count.ok_or_else(|| bad(format!("bucket {i} has no count")))?;
        let cumulative = count(name, cumulative as f64)?;
        if cumulative < below {
            return Err(bad(format!(
                "bucket {i} counts {cumulative}, fewer than the {below} below it"
            )));
        }
        if bound == f64::INFINITY {
            // The Prometheus `+Inf` bucket: it must hold everything, and the overflow count
            // below says the same.
            if cumulative != total {
                return Err(bad(format!(
                    "+Inf bucket counts {cumulative}, sample count is {total}"
                )));
            }
            saw_infinity = true;
            continue;
        }
        if !bound.is_finite() {
            return Err(bad(format!("bucket {i} has bound {bound}")));
        }
        let scaled = bound * scale;
        if bounds.last().is_some_and(|last| *last >= scaled) {
            return Err(bad(format!("bucket {i} bound {bound} does not increase")));
        }
        bounds.push(scaled);
        counts.push(cumulative - below);
        below = cumulative;
    }
    if total < below {
        return Err(bad(format!(
            "sample count {total} is below the {below} in its buckets"
        )));
    }
    counts.push(total - below);
    Ok(Histogram {
        bounds,
        counts,
        sum: sum * scale,
    })
}
