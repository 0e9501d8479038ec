//! `doppel check` run as a binary: broken policy fixtures fail with the right
//! `file:line:column`, every shipped policy passes.
//!
//! Each fixture in `tests/fixtures/policy/` states what it must produce in its first lines,
//! `# expect: LINE:COLUMN: message start`, so the expectation sits beside the input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn doppel(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
        .arg("check")
        .args(args)
        .output()
        .expect("run doppel")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy")
}

fn expectations(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read fixture");
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|e| format!("{}:{e}", file.display()))
        .collect()
}

fn check_fixture(name: &str) {
    let file = fixtures().join(name);
    let expected = expectations(&file);
    assert!(!expected.is_empty(), "{name} states no expectation");
    let out = doppel(&[&file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: exit code; stdout:\n{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "{name}: one line per problem:\n{stdout}"
    );
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "{name}:\n  got  {line}\n  want {want}..."
        );
    }
}

#[test]
fn check_refuses_yaml_syntax_errors() {
    check_fixture("yaml-syntax.yaml");
}

#[test]
fn check_refuses_unknown_fields() {
    check_fixture("unknown-field.yaml");
}

#[test]
fn check_refuses_missing_fields() {
    check_fixture("missing-field.yaml");
}

#[test]
fn check_refuses_cel_syntax_errors_inside_the_expression() {
    check_fixture("cel-syntax.yaml");
}

#[test]
fn check_refuses_references_the_context_does_not_have() {
    check_fixture("unknown-reference.yaml");
}

#[test]
fn check_refuses_non_boolean_rules() {
    check_fixture("not-boolean.yaml");
}

#[test]
fn check_refuses_unknown_actions() {
    check_fixture("unknown-action.yaml");
}

#[test]
fn check_refuses_bad_percentages() {
    check_fixture("bad-percent.yaml");
}

#[test]
fn check_refuses_steps_not_increasing_or_above_100() {
    check_fixture("bad-steps.yaml");
}

#[test]
fn check_refuses_hold_times_that_do_not_parse() {
    check_fixture("bad-hold.yaml");
}

#[test]
fn check_passes_every_shipped_policy() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let out = doppel(&[&policies]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_of_a_directory_reports_every_broken_file_and_no_good_one() {
    let out = doppel(&[&fixtures()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut expected = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("list fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for f in files {
        expected.extend(expectations(&f));
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "got {line}, want {want}");
    }
}

#[test]
fn check_of_a_missing_path_fails() {
    let out = doppel(&[Path::new("/nonexistent/policy.yaml")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/nonexistent/policy.yaml:1:1: "));
}
