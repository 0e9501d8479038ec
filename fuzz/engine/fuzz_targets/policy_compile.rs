//! The policy compiler on any text: YAML parsing, validation and CEL compilation never panic; a
//! refusal names at least one problem with a position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Lines as YAML counts them: `\n`, `\r\n` and a lone `\r` each end one (Rust's
/// `str::lines` does not count a lone `\r`; this target's first crash was that difference).
fn yaml_lines(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    u64::try_from(breaks).unwrap_or(u64::MAX) + 1
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = doppel_engine::policy::parse(text) {
        assert!(!problems.is_empty(), "refused without a reason");
        let lines = yaml_lines(text) + 1;
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
