//! Inputs the fuzz targets of `fuzz/` found (SECURITY.md), kept as regression tests of the
//! normal suite; each fixture is the target's input as it found it.

use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines as YAML counts them: a lone `\r` ends a line too.
fn yaml_lines(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    breaks as u64 + 1
}

/// `policy_compile`: a policy whose line breaks include lone carriage returns. The problem's
/// position counts lines as YAML does (a lone `\r` is a line break), so it lies past what
/// `str::lines` counts but inside the file; the fuzz target's bound was wrong, not the position.
#[test]
fn fuzz_policy_compile_lone_carriage_returns_position_inside_the_file() {
    let bytes = fixture("policy_compile-lone-cr.yaml");
    let text = std::str::from_utf8(&bytes).expect("UTF-8");
    let problems = doppel_engine::policy::parse(text).expect_err("the input is broken YAML");
    assert!(!problems.is_empty());
    let lines = yaml_lines(text);
    assert!(
        lines > text.lines().count() as u64,
        "the input has lone CRs"
    );
    for problem in &problems {
        assert!(problem.position.line >= 1 && problem.position.column >= 1);
        assert!(
            problem.position.line <= lines,
            "{problem:?} is past the {lines} lines of the file"
        );
    }
    assert_eq!(problems[0].code, "yaml", "{problems:?}");
}
