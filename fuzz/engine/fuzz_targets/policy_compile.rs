//! The policy compiler on any text: YAML parsing, validation and CEL compilation never panic; a
//! refusal names at least one problem, each at a position inside the text
//! (`doppel_engine::policy::check_refusal`, which the regression tests call too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = doppel_engine::policy::parse(text) {
        assert_eq!(
            doppel_engine::policy::check_refusal(text, &problems),
            Ok(())
        );
    }
});
