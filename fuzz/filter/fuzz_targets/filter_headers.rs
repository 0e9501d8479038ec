//! The header values the filter parses on every request: the sticky cookie, `Server-Timing`
//! durations, a copy's `content-length`. Never panics; a cookie value is a slice of the header;
//! a duration is within the documented bound.
#![no_main]

use doppel_filter::config::{ClusterName, MirrorConfig};
use doppel_filter::decide::cookie_value;
use doppel_filter::mirror::{Safety, safety};
use doppel_filter::timing::{MAX_DURATION_US, durations_us};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in [&b"uid"[..], b"s", b""] {
        if let Some(value) = cookie_value(data, name) {
            let range = data.as_ptr_range();
            assert!(value.is_empty() || range.contains(&value.as_ptr()));
            assert!(value.len() <= data.len());
        }
    }
    let durations = durations_us(data, &["db", "cache", "DB", ""]);
    assert_eq!(durations.len(), 4);
    for us in durations.into_iter().flatten() {
        assert!(us <= MAX_DURATION_US, "{us}");
    }
    let mirror = MirrorConfig::new(ClusterName::new("shadow").expect("name"));
    if let Safety::Copy { body_len } = safety(&mirror, b"GET", Some(data), false) {
        assert!(body_len <= mirror.max_body_bytes.get());
    }
});
