//! docs/policy-context.md and the context cannot drift: every field documented exists with the
//! documented type, every field of the context is documented, and every example is a rule
//! `doppel check` accepts.

use std::collections::BTreeSet;
use std::path::Path;

use doppel_engine::context::{RuleContext, Schema};
use doppel_engine::policy::expr;

struct Row {
    path: String,
    ty: String,
    example: String,
}

fn rows() -> Vec<Row> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy-context.md");
    let text = std::fs::read_to_string(doc).expect("read docs/policy-context.md");
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let path = cells.first()?.trim_matches('`');
            if !path.contains('.') || cells.len() != 4 {
                return None; // the actions table
            }
            Some(Row {
                path: path.to_string(),
                ty: cells[1].to_string(),
                example: cells[3].trim_matches('`').to_string(),
            })
        })
        .collect()
}

#[test]
fn policy_context_doc_lists_exactly_the_context_fields() {
    let name = "<name>".to_string();
    let query = "<query>".to_string();
    let schema = Schema::with(std::slice::from_ref(&name), std::slice::from_ref(&query));
    let actual: BTreeSet<(String, String)> = schema
        .paths()
        .into_iter()
        .map(|(p, t)| (p, t.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    for row in rows() {
        let paths = if row.path.contains("<variant>") {
            vec![
                row.path.replace("<variant>", "primary"),
                row.path.replace("<variant>", "shadow"),
            ]
        } else {
            vec![row.path.clone()]
        };
        for p in paths {
            assert!(
                documented.insert((p.clone(), row.ty.clone())),
                "{p} is documented twice"
            );
        }
    }
    let missing: Vec<_> = actual.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty(),
        "in the context, not in the doc: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in the doc, not in the context (or wrong type): {extra:?}"
    );
}

#[test]
fn policy_context_doc_examples_are_valid_rules() {
    let custom = vec!["db".to_string()];
    let resources = vec!["cpu".to_string(), "memory".to_string()];
    let schema = Schema::with(&custom, &resources);
    let sample = RuleContext::sample_with(&custom, &resources);
    let rows = rows();
    assert!(rows.len() > 40, "the doc's tables were not found");
    for row in rows {
        if let Err(problems) = expr::check(&row.example, &schema, &sample) {
            panic!("example of {}: `{}`: {problems:?}", row.path, row.example);
        }
    }
}

#[test]
fn policy_file_doc_example_is_a_valid_policy() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy-file.md");
    let text = std::fs::read_to_string(doc).expect("read docs/policy-file.md");
    let example = text
        .split("```yaml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the doc's YAML example");
    let policy = doppel_engine::policy::parse(example).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.steps.len(), 1);
}
