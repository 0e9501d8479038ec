//! Properties of largest-remainder apportionment: the seats sum to N, every stratum is within
//! one seat of its quota and covered, and it fails only when that is impossible.

use doppel_engine::hosts::{HostsError, apportion};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn seats_sum_to_n_and_stay_within_one_of_the_quota(
        populations in prop::collection::vec(1usize..500, 1..30),
        pick in 0.0f64..=1.0,
    ) {
        let total: usize = populations.iter().sum();
        let n = ((total as f64) * pick).round() as usize;
        let strata = populations.len();
        match apportion(&populations, n) {
            Ok(seats) => {
                prop_assert_eq!(seats.iter().sum::<usize>(), n);
                for (&p, &s) in populations.iter().zip(&seats) {
                    // Exact: |s - p*n/total| < 1  <=>  |s*total - p*n| < total.
                    let lhs = (s as i128 * total as i128 - p as i128 * n as i128).abs();
                    prop_assert!(lhs < total as i128, "p={} s={} n={} total={}", p, s, n, total);
                    prop_assert!(s >= 1 && s <= p);
                }
            }
            Err(HostsError::TooFewHosts { size, strata: k }) => {
                prop_assert_eq!((size, k), (n, strata));
                prop_assert!(n < strata);
            }
            Err(HostsError::CannotCover { below_one, leftover, .. }) => {
                prop_assert!(n >= strata);
                // Really impossible: more strata due less than one seat than seats left over.
                let floors: usize = populations.iter().map(|&p| p * n / total).sum();
                let tiny = populations.iter().filter(|&&p| p * n < total).count();
                prop_assert_eq!((tiny, n - floors), (below_one, leftover));
                prop_assert!(below_one > leftover);
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }

    #[test]
    fn equal_strata_get_equal_seats_up_to_one(k in 1usize..20, each in 1usize..50, n in 1usize..1000) {
        let populations = vec![each; k];
        if let Ok(seats) = apportion(&populations, n.min(k * each)) {
            let (lo, hi) = (seats.iter().min().copied(), seats.iter().max().copied());
            prop_assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1));
        }
    }
}

#[test]
fn zero_population_is_rejected() {
    assert_eq!(
        apportion(&[3, 0], 1),
        Err(HostsError::EmptyStratum { index: 1 })
    );
}
