//! The policy compiler on any text: YAML parsing, validation and CEL compilation never panic; a
//! refusal names at least one problem with a position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = doppel_engine::policy::parse(text) {
        assert!(!problems.is_empty(), "refused without a reason");
        let lines = u64::try_from(text.lines().count()).unwrap_or(u64::MAX).max(1) + 1;
        for problem in &problems {
            let position = &problem.position;
            assert!(position.line >= 1 && position.column >= 1, "{problem:?}");
            assert!(
                position.line <= lines,
                "{problem:?} past the end of {lines} lines"
            );
        }
    }
});
