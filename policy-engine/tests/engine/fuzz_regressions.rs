//! Inputs the fuzz targets of `fuzz/` found (SECURITY.md), kept as regression tests of the
//! normal suite; each fixture is the target's input as it found it.

use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `policy_compile`: a policy whose line breaks include lone carriage returns. YAML counts a
/// lone `\r` as a line break and `str::lines` does not, so the problem's position lies past what
/// `str::lines` counts but inside the file; the fuzz target's bound was wrong, not the position.
/// The target's check is [`doppel_engine::policy::check_refusal`], called here on its input.
#[test]
fn fuzz_policy_compile_lone_carriage_returns_position_inside_the_file() {
    let bytes = fixture("policy_compile-lone-cr.yaml");
    let text = std::str::from_utf8(&bytes).expect("UTF-8");
    assert!(
        text.replace("\r\n", "").contains('\r'),
        "the input has lone CRs"
    );
    let problems = doppel_engine::policy::parse(text).expect_err("the input is broken YAML");
    assert_eq!(
        doppel_engine::policy::check_refusal(text, &problems),
        Ok(())
    );
    assert_eq!(problems[0].code, "yaml", "{problems:?}");
}
