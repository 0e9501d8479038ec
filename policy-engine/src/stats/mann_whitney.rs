//! Mann-Whitney U on bucketed latency: is the shadow slower than the primary?
//!
//! A histogram only says which bucket each request fell in, so every bucket is one tie group:
//! two requests in the same bucket count half for each side. The U statistic counts, over all
//! (shadow, primary) pairs, the pairs where the shadow request is slower, plus half the ties.
//! The p-values use the normal approximation with the tie-corrected variance and a continuity
//! correction of 0.5, exactly as `scipy.stats.mannwhitneyu(method="asymptotic")` does on the
//! expanded samples; with histograms, the counts are large enough for it.

use serde::Serialize;

use super::quantiles::{common_bounds, total};
use super::special::norm_sf;
use super::{Evidence, Inconclusive, StatsError};
use crate::metrics::Histogram;

/// The Mann-Whitney comparison of shadow latency with primary latency.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MannWhitney {
    /// U of the shadow: slower pairs plus half the tied pairs.
    pub u: f64,
    /// The standardized statistic `(U - n1 n2 / 2) / sigma` (no continuity correction); positive
    /// when the shadow is slower.
    pub z: f64,
    /// One-sided p-value for "the shadow is slower" (stochastically greater).
    pub p_slower: f64,
    /// Two-sided p-value for "the distributions differ in location".
    pub p_two_sided: f64,
    /// Common-language effect size: P(shadow > primary) + P(tie) / 2, in [0, 1]; 0.5 is none.
    pub cles: f64,
    /// Rank-biserial correlation `2 * cles - 1`, in [-1, 1].
    pub rank_biserial: f64,
    /// Hodges-Lehmann estimate of the shift (shadow minus primary), from bucket midpoints:
    /// the weighted median of all pairwise differences. Resolution is the bucket width.
    pub hodges_lehmann: f64,
    /// Shadow observations.
    pub shadow_n: u64,
    /// Primary observations.
    pub primary_n: u64,
    /// The bucket bounds the comparison used (common to both histograms).
    pub bounds: Vec<f64>,
    /// Whether the data suffices.
    pub evidence: Evidence,
}

/// The U statistic and its null moments, from bucket counts on common bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankSums {
    /// U of the first sample (the shadow).
    pub u: f64,
    /// `n1 * n2 / 2`.
    pub mean: f64,
    /// Tie-corrected null variance of U.
    pub variance: f64,
    /// First sample size.
    pub n1: u64,
    /// Second sample size.
    pub n2: u64,
}

/// U and its tie-corrected null variance for counts `a` (first sample) and `b` (second sample)
/// over the same ordered buckets.
pub fn rank_sums(a: &[u64], b: &[u64]) -> RankSums {
    let n1: u64 = a.iter().sum();
    let n2: u64 = b.iter().sum();
    let mut below_b = 0u64;
    let mut u = 0.0;
    let mut ties = 0.0;
    for (&ai, &bi) in a.iter().zip(b) {
        u += ai as f64 * (below_b as f64 + 0.5 * bi as f64);
        below_b += bi;
        let t = (ai + bi) as f64;
        ties += t * t * t - t;
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let n = f1 + f2;
    let variance = if n > 1.0 {
        f1 * f2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
    } else {
        0.0
    };
    RankSums {
        u,
        mean: f1 * f2 / 2.0,
        variance: variance.max(0.0),
        n1,
        n2,
    }
}

/// Compares latency histograms. Histograms on different bounds are put on their common
/// bounds first; none in common is an error. Fewer than `min_samples` observations on either
/// side is inconclusive.
///
/// ```
/// use doppel_engine::metrics::Histogram;
/// use doppel_engine::stats::mann_whitney::mann_whitney;
/// let h = |counts: Vec<u64>| Histogram { bounds: vec![10.0, 20.0, 50.0], counts, sum: 0.0 };
/// let r = mann_whitney(&h(vec![50, 40, 10, 0]), &h(vec![10, 40, 50, 0]), 20).unwrap();
/// assert!(r.p_slower < 1e-6 && r.cles > 0.6);
/// ```
pub fn mann_whitney(
    primary: &Histogram,
    shadow: &Histogram,
    min_samples: u64,
) -> Result<MannWhitney, StatsError> {
    let (primary, shadow) = common_bounds(primary, shadow)?;
    let (n1, n2) = (total(&shadow), total(&primary));
    let evidence = if n1 == 0 || n2 == 0 {
        Evidence::Inconclusive(Inconclusive::no_data(&format!(
            "primary has {n2} latency samples, shadow {n1}"
        )))
    } else if n1 < min_samples {
        Evidence::Inconclusive(Inconclusive::too_few("shadow", n1, min_samples, "samples"))
    } else if n2 < min_samples {
        Evidence::Inconclusive(Inconclusive::too_few("primary", n2, min_samples, "samples"))
    } else {
        Evidence::Sufficient
    };

    let r = rank_sums(&shadow.counts, &primary.counts);
    let sd = r.variance.sqrt();
    let (z, p_slower, p_two_sided) = if sd > 0.0 {
        let d = r.u - r.mean;
        let two = 2.0 * norm_sf((d.abs() - 0.5) / sd);
        (d / sd, norm_sf((d - 0.5) / sd), two.min(1.0))
    } else {
        (0.0, 1.0, 1.0)
    };
    let pairs = n1 as f64 * n2 as f64;
    let cles = if pairs > 0.0 { r.u / pairs } else { 0.5 };
    Ok(MannWhitney {
        u: r.u,
        z,
        p_slower: p_slower.min(1.0),
        p_two_sided,
        cles,
        rank_biserial: 2.0 * cles - 1.0,
        hodges_lehmann: hodges_lehmann(&primary, &shadow),
        shadow_n: n1,
        primary_n: n2,
        bounds: primary.bounds,
        evidence,
    })
}

/// A representative value per bucket: the midpoint, 0 to the first bound for the first bucket,
/// and the last bound for the overflow bucket (whose upper end is unknown).
fn midpoints(bounds: &[f64]) -> Vec<f64> {
    let mut mids = Vec::with_capacity(bounds.len() + 1);
    let mut lower = 0.0f64;
    for &b in bounds {
        let lo = lower.min(b);
        mids.push((lo + b) / 2.0);
        lower = b;
    }
    mids.push(bounds.last().copied().unwrap_or(0.0));
    mids
}

/// Weighted median of the pairwise differences of bucket midpoints (shadow minus primary).
fn hodges_lehmann(primary: &Histogram, shadow: &Histogram) -> f64 {
    let mids = midpoints(&primary.bounds);
    let mut diffs: Vec<(f64, f64)> = Vec::new();
    for (i, &a) in shadow.counts.iter().enumerate() {
        for (j, &b) in primary.counts.iter().enumerate() {
            if a > 0 && b > 0 {
                diffs.push((mids[i] - mids[j], a as f64 * b as f64));
            }
        }
    }
    if diffs.is_empty() {
        return 0.0;
    }
    diffs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let half = diffs.iter().map(|d| d.1).sum::<f64>() / 2.0;
    let mut acc = 0.0;
    for (k, &(d, w)) in diffs.iter().enumerate() {
        acc += w;
        if acc > half {
            return d;
        }
        if acc == half {
            // Exactly half below: the median sits between this difference and the next.
            return diffs.get(k + 1).map_or(d, |n| (d + n.0) / 2.0);
        }
    }
    diffs[diffs.len() - 1].0
}
