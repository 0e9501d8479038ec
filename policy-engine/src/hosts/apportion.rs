//! Largest-remainder (Hamilton) apportionment of `n` seats over strata in proportion to their
//! populations, with every stratum covered. Exact integer arithmetic: no float rounding decides
//! who gets a seat.

use super::HostsError;

/// Splits `n` seats over strata with the given (non-zero) populations.
///
/// Each stratum's quota is `population * n / total`. Every stratum gets its quota rounded down
/// or up (so it is always within one seat of its quota), every stratum gets at least one seat,
/// and the seats sum to `n`. Strata whose quota is below one seat get their seat first; the
/// rest of the leftover seats go to the largest remainders (ties: larger population, then
/// the earlier stratum).
///
/// Errors when `n` is smaller than the number of strata, larger than the population, or too
/// small to give every small stratum a seat while keeping everyone within one of its quota.
///
/// ```
/// use doppel_engine::hosts::apportion;
/// assert_eq!(apportion(&[50, 30, 20], 10).unwrap(), vec![5, 3, 2]);
/// assert_eq!(apportion(&[7, 7, 6], 4).unwrap(), vec![2, 1, 1]);
/// assert!(apportion(&[5, 5, 5], 2).is_err());
/// ```
pub fn apportion(populations: &[usize], n: usize) -> Result<Vec<usize>, HostsError> {
    let strata = populations.len();
    let total: usize = populations.iter().sum();
    if let Some(index) = populations.iter().position(|&p| p == 0) {
        return Err(HostsError::EmptyStratum { index });
    }
    if n > total {
        return Err(HostsError::TooManyHosts {
            size: n,
            available: total,
        });
    }
    if n < strata {
        return Err(HostsError::TooFewHosts { size: n, strata });
    }
    let (total_w, n_w) = (total as u128, n as u128);
    let mut seats: Vec<usize> = Vec::with_capacity(strata);
    let mut remainders: Vec<u128> = Vec::with_capacity(strata);
    for &p in populations {
        let share = p as u128 * n_w;
        seats.push((share / total_w) as usize);
        remainders.push(share % total_w);
    }
    let mut left = n - seats.iter().sum::<usize>();
    let below_one: Vec<usize> = (0..strata).filter(|&i| seats[i] == 0).collect();
    if below_one.len() > left {
        return Err(HostsError::CannotCover {
            size: n,
            strata,
            below_one: below_one.len(),
            leftover: left,
        });
    }
    for &i in &below_one {
        seats[i] = 1;
    }
    left -= below_one.len();
    let mut order: Vec<usize> = (0..strata)
        .filter(|&i| remainders[i] > 0 && !below_one.contains(&i))
        .collect();
    order.sort_by(|&a, &b| {
        remainders[b]
            .cmp(&remainders[a])
            .then(populations[b].cmp(&populations[a]))
            .then(a.cmp(&b))
    });
    for &i in order.iter().take(left) {
        seats[i] += 1;
    }
    Ok(seats)
}

/// Each stratum's exact proportional share of `n` seats (`population * n / total`).
pub fn quotas(populations: &[usize], n: usize) -> Vec<f64> {
    let total: usize = populations.iter().sum();
    if total == 0 {
        return vec![0.0; populations.len()];
    }
    populations
        .iter()
        .map(|&p| p as f64 * n as f64 / total as f64)
        .collect()
}
