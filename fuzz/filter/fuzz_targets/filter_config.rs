//! The filter's config parser (`on_configure` runs it on whatever Envoy or the engine sends):
//! never panics, and a config it accepts survives `to_json` and a second parse unchanged, and
//! compiles into a decision.
#![no_main]

use doppel_filter::config::FilterConfig;
use doppel_filter::decide::Decider;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = FilterConfig::parse(data) else {
        return;
    };
    let json = config.to_json();
    let again = FilterConfig::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("to_json of an accepted config is refused: {e}: {json}"));
    assert_eq!(again, config, "{json}");
    let _ = Decider::new(&config);
});
