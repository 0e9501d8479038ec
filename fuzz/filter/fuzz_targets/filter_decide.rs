//! The per-request decision on hostile header values: `decide` never panics, is deterministic
//! for a given PRNG state, and with a sticky key present ignores the PRNG altogether.
//!
//! Input: an optional config (JSON up to the first NUL byte; one of the fixed configs below when
//! absent or refused), then the values of the headers the decision needs, separated by `\n`
//! (an empty value stands for a missing header).
#![no_main]

use doppel_filter::config::FilterConfig;
use doppel_filter::decide::{Decider, Rng};
use libfuzzer_sys::fuzz_target;

const CONFIGS: [&str; 4] = [
    r#"{"service":"cart","mode":"split","percent":50,"sticky":{"cookie":"uid"},"match":[{"header":"x-geo","prefix":"d"}]}"#,
    r#"{"service":"cart","mode":"split","percent":0.01,"sticky":{"header":"x-user-id"}}"#,
    r#"{"service":"cart","mode":"mirror","percent":10,"match":[{"header":"x-geo","one_of":["de","fr"]},{"header":"user-agent","equals":"a"}],"mirror":{"cluster":"shadow"}}"#,
    r#"{"service":"cart","mode":"split","percent":100,"sticky":{"cookie":"s"}}"#,
];

fuzz_target!(|data: &[u8]| {
    let (head, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let config = FilterConfig::parse(head).unwrap_or_else(|_| {
        let pick = data.first().copied().unwrap_or(0) as usize % CONFIGS.len();
        FilterConfig::parse(CONFIGS[pick].as_bytes()).expect("fixed config")
    });
    let decider = Decider::new(&config);
    let mut values: Vec<Option<&[u8]>> = rest
        .split(|b| *b == b'\n')
        .map(|v| (!v.is_empty()).then_some(v))
        .collect();
    values.resize(decider.needed().len(), None);
    let first = decider.decide(&values, &mut Rng::new(7));
    assert_eq!(first, decider.decide(&values, &mut Rng::new(7)));
    if decider.sticky_key(&values).is_some() {
        assert_eq!(first, decider.decide(&values, &mut Rng::new(0xdead_beef)));
    }
    // Fewer values than needed (a host that lost one) must not panic either.
    let _ = decider.decide(&values[..values.len() / 2], &mut Rng::new(1));
});
