//! Small helpers the host tests share: typical request headers and a binomial bound.

/// Headers of a plain `GET <path>` to `cart`, plus `extra`.
pub fn get<'a>(path: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "cart"),
        (":scheme", "http"),
    ];
    headers.extend_from_slice(extra);
    headers
}

/// Whether `observed` successes out of `n` trials are within `sigmas` binomial standard
/// deviations of the expected `n * p`; returns the expected count and the allowed deviation too.
pub fn within_binomial(n: u64, p: f64, observed: u64, sigmas: f64) -> (bool, f64, f64) {
    let expected = n as f64 * p;
    let allowed = sigmas * (n as f64 * p * (1.0 - p)).sqrt();
    (
        (observed as f64 - expected).abs() <= allowed,
        expected,
        allowed,
    )
}
