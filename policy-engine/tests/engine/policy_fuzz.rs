//! Property tests: whatever a policy file or a rule says, checking it never panics (a panic
//! in `doppel check` or in the engine's policy loader would take the engine down).

use doppel_engine::context::{RuleContext, Schema};
use doppel_engine::policy::{self, expr};
use proptest::prelude::*;

const BASE: &str = "service: svc\nprimary:\n  cluster: a\nshadow:\n  cluster: b\ntraffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 10s\n  min_sample: 100\n  alpha: 0.01\nrules:\n  - name: r\n    when: WHEN\n    action: alert\n";

fn cel_like() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "shadow",
        "primary",
        "compare",
        "mirror",
        "rollout",
        "errors",
        "latency",
        "p99",
        "error_rate",
        "requests",
        "worse",
        "custom",
        "db",
        "x",
        ".",
        " ",
        "&&",
        "||",
        "!",
        "(",
        ")",
        "[",
        "]",
        "'db'",
        "\"s\"",
        "1",
        "2.5",
        "0u",
        "-",
        "+",
        "*",
        "/",
        "%",
        ">",
        "<=",
        "==",
        "?",
        ":",
        "size(",
        "has(",
        ".exists(v, v",
        "true",
        "null",
        ",",
        "{",
        "}",
        "\n",
        "\\",
        "é",
    ]);
    prop::collection::vec(atoms, 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn policy_rule_check_never_panics(source in cel_like()) {
        let custom = vec!["db".to_string()];
        let _ = expr::check(&source, &Schema::of(&custom), &RuleContext::sample(&custom));
    }

    #[test]
    fn policy_with_any_rule_text_never_panics_and_points_inside_the_file(source in cel_like()) {
        let quoted = serde_json::to_string(&source).unwrap_or_default();
        let text = BASE.replace("WHEN", &quoted);
        if let Err(problems) = policy::parse(&text) {
            let lines = text.lines().count() as u64;
            for p in problems {
                prop_assert!(p.position.line >= 1 && p.position.line <= lines + 1, "{p:?}");
            }
        }
    }

    #[test]
    fn policy_parse_of_any_text_never_panics(text in "[a-z:\\- \\n\\[\\]{}'\"0-9.|>#&*!]{0,200}") {
        let _ = policy::parse(&text);
    }
}
