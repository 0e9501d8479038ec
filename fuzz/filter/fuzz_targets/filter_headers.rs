//! What the filter parses on every request: the serialized header map Envoy hands over, the
//! sticky cookie, `Server-Timing` durations, a copy's `content-length`. Never panics; a map that
//! is accepted reads back the same pairs however it is read; a cookie value is a slice of the
//! header; a duration is within the documented bound.
#![no_main]

use doppel_filter::config::{ClusterName, MirrorConfig};
use doppel_filter::decide::cookie_value;
use doppel_filter::mirror::{Safety, safety};
use doppel_filter::pairs::{Map, Names, encode};
use doppel_filter::timing::{MAX_DURATION_US, durations_us};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(map) = Map::new(data) {
        let pairs: Vec<(&[u8], &[u8])> = map.iter().collect();
        // (An empty buffer is the empty map, which encodes as a zero count.)
        if !data.is_empty() {
            assert_eq!(encode(&pairs), data, "an accepted map re-encodes to itself");
        }
        let names = [":path", "x-doppel-variant", "cookie"];
        let mut found = [None; 3];
        map.lookup(&Names::new(names), &mut found);
        for (name, value) in names.iter().zip(found) {
            assert_eq!(value, map.get(name), "{name}");
        }
    }
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
