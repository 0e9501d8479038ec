//! `RuleContext::to_cel` binds a variable per leaf field path (`shadow.custom.db.p99`) beside
//! the roots, so that `cel` resolves a path in one lookup instead of selecting field by field.
//! These tests hold it to meaning exactly what the roots alone mean (`to_cel_roots`): every
//! rule of every shipped policy, and expressions that exercise `has()`, absent fields,
//! indexing, comprehensions and a comprehension variable named like a root, give the same
//! result, value or error, both ways, on sample, partial and randomly varied contexts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use doppel_engine::context::{LatencyContext, RuleContext};
use doppel_engine::policy::{Policy, load};
use proptest::prelude::*;

/// Every shipped policy, `policies/*.yaml`, parsed and checked.
fn shipped() -> Vec<(PathBuf, Policy)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "policies/*.yaml: {files:?}");
    files
        .into_iter()
        .map(|f| {
            let policy = load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f, policy)
        })
        .collect()
}

/// Expressions beyond the shipped rules, over the checkout policy's names (the custom metric
/// `db`, the resource `cpu`) and names no context has (`cache`, `gpu`): presence tests, absent
/// fields, indexing, comprehensions, selections past a leaf, absolute names.
const EXTRA: &[&str] = &[
    "has(shadow.custom.db)",
    "has(shadow.custom.cache)",
    "has(shadow.resources.cpu)",
    "has(primary.resources.gpu)",
    "has(shadow.custom.db.p99)",
    "shadow.custom.db.p99",
    "shadow.custom.cache.p99 > 1.0",
    "shadow.resources.cpu",
    "shadow.resources.gpu > 1.0",
    "shadow.custom['db'].p99 > primary.custom['db'].p99",
    "shadow.custom.db['count']",
    "shadow.requests.x > 1",
    "shadow.custom.db.p99.x",
    "size(shadow.custom) + size(shadow.resources)",
    "shadow.custom.exists(k, shadow.custom[k].p99 > 2.0 * primary.custom[k].p99)",
    "shadow.resources.all(k, shadow.resources[k] >= 0.0)",
    "[primary, shadow].all(v, v.requests > 100 && v.latency.p99 < 500.0)",
    "[1, 2].exists(shadow, shadow == 2)",
    "[{'requests': 7}].exists(shadow, shadow.requests == 7)",
    "[primary].exists(shadow, shadow.requests == primary.requests)",
    ".shadow.latency.p99 > .primary.latency.p99",
    "compare.errors.test == 'fisher_exact' ? compare.errors.p_value : compare.latency.p_value",
    "synthetic.shadow.pass_rate < synthetic.primary.pass_rate || mirror.mismatches.total > 0",
    "rollout",
    "shadow.latency",
];

/// Every shipped rule and every expression of [`EXTRA`], compiled.
static PROGRAMS: LazyLock<Vec<(String, Arc<cel::Program>)>> = LazyLock::new(programs);

fn programs() -> Vec<(String, Arc<cel::Program>)> {
    let mut out: Vec<(String, Arc<cel::Program>)> = shipped()
        .iter()
        .flat_map(|(file, p)| {
            p.rules.iter().map(move |r| {
                (
                    format!("{}: {}", file.display(), r.name),
                    Arc::clone(&r.program),
                )
            })
        })
        .collect();
    for e in EXTRA {
        let program = cel::Program::compile(e).unwrap_or_else(|err| panic!("{e}: {err}"));
        out.push((e.to_string(), Arc::new(program)));
    }
    out
}

/// Asserts each program gives the same result on the context both ways.
fn same_both_ways(programs: &[(String, Arc<cel::Program>)], context: &RuleContext, label: &str) {
    let fast = context.to_cel().expect("to_cel");
    let roots = context.to_cel_roots().expect("to_cel_roots");
    for (name, program) in programs {
        assert_eq!(
            program.execute(&fast),
            program.execute(&roots),
            "{name} on {label}"
        );
    }
}

/// The custom metrics and resource queries of every shipped policy, and the sample context
/// `doppel check` builds from them.
fn samples() -> Vec<(String, RuleContext)> {
    shipped()
        .iter()
        .map(|(file, p)| {
            let context = RuleContext::sample_with(&p.traffic.custom_metrics, &p.resource_names());
            (file.display().to_string(), context)
        })
        .collect()
}

#[test]
fn policy_cel_paths_shipped_rules_agree_on_sample_and_partial_contexts() {
    let programs = &*PROGRAMS;
    assert!(programs.len() > EXTRA.len() + 7, "{}", programs.len());
    for (label, sample) in samples() {
        same_both_ways(programs, &sample, &format!("{label} sample"));

        // A resource query without a number leaves its field out, in one variant or both.
        let mut partial = sample.clone();
        partial.shadow.resources.clear();
        same_both_ways(
            programs,
            &partial,
            &format!("{label} without shadow resources"),
        );
        partial.primary.resources.clear();
        same_both_ways(programs, &partial, &format!("{label} without resources"));

        // A context without the custom metrics the rules read.
        let mut partial = sample.clone();
        partial.shadow.custom.clear();
        same_both_ways(
            programs,
            &partial,
            &format!("{label} without shadow custom"),
        );
        partial.primary.custom.clear();
        same_both_ways(programs, &partial, &format!("{label} without custom"));
    }
}

#[test]
fn policy_cel_paths_a_missing_field_reads_as_before() {
    let custom = vec!["db".to_string()];
    let mut context = RuleContext::sample_with(&custom, &["cpu".to_string()]);
    context.shadow.resources.clear();
    context.shadow.custom.clear();
    let fast = context.to_cel().expect("to_cel");
    let run = |e: &str| cel::Program::compile(e).expect("compiles").execute(&fast);
    assert_eq!(run("has(shadow.resources.cpu)"), Ok(false.into()));
    assert_eq!(run("has(primary.resources.cpu)"), Ok(true.into()));
    assert_eq!(run("has(shadow.custom.db)"), Ok(false.into()));
    assert_eq!(
        run("shadow.resources.cpu > 2.0 * primary.resources.cpu"),
        Err(cel::ExecutionError::NoSuchKey("cpu".to_string().into()))
    );
    assert_eq!(
        run("shadow.custom.db.p99 > 1.0"),
        Err(cel::ExecutionError::NoSuchKey("db".to_string().into()))
    );
}

#[test]
fn policy_cel_paths_every_plain_leaf_is_bound_and_no_dotted_key() {
    let custom = vec!["db".to_string()];
    let mut context = RuleContext::sample_with(&custom, &["cpu".to_string()]);
    // A key holding a dot (the engine's names never do) must not become the path
    // `shadow.custom.a.b.p99`, which on the roots selects `a`, then `b`: absent.
    context
        .shadow
        .custom
        .insert("a.b".to_string(), LatencyContext::default());
    let fast = context.to_cel().expect("to_cel");
    for path in [
        "shadow.custom.db.p99",
        "primary.resources.cpu",
        "compare.errors.sequential_p_value",
        "synthetic.shadow.failed",
        "rollout.step",
        "mirror.mismatches.total",
    ] {
        assert!(fast.get_variable(path).is_some(), "{path} is not bound");
    }
    for name in ["shadow.custom.a.b.p99", "shadow.custom", "shadow.custom.db"] {
        assert!(fast.get_variable(name).is_none(), "{name} is bound");
    }
    let program = cel::Program::compile("shadow.custom.a.b.p99 == 0.0").expect("compiles");
    assert_eq!(
        program.execute(&fast),
        Err(cel::ExecutionError::NoSuchKey("a".to_string().into()))
    );
    assert_eq!(
        program.execute(&fast),
        program.execute(&context.to_cel_roots().expect("to_cel_roots"))
    );
}

/// Values around the shipped rules' thresholds, so that each holds on some contexts and not
/// on others.
fn ints() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(prop_oneof![Just(0i64), Just(1), Just(3), 0i64..1_000], 24)
}

fn doubles() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![Just(0.0f64), Just(0.55), Just(300.0), 0.0f64..600.0],
        24,
    )
}

/// The sample context with its numbers and flags replaced by `ints`, `doubles` and `bools`,
/// and the custom metrics and resources that `present` says are absent removed.
fn varied(
    sample: &RuleContext,
    ints: &[i64],
    doubles: &[f64],
    bools: &[bool],
    present: &[bool],
) -> RuleContext {
    let mut c = sample.clone();
    let (mut i, mut d, mut b) = (ints.iter().copied(), doubles.iter().copied(), bools.iter());
    let mut int = move || i.next().expect("enough ints");
    let mut double = move || d.next().expect("enough doubles");
    let mut flag = move || *b.next().expect("enough bools");
    for v in [&mut c.primary, &mut c.shadow] {
        v.requests = int();
        v.errors = int();
        v.error_rate = double() / 600.0;
        v.latency.p99 = double();
        for m in v.custom.values_mut() {
            m.count = int();
            m.p99 = double();
        }
        for r in v.resources.values_mut() {
            *r = double() / 100.0;
        }
    }
    c.compare.errors.sufficient = flag();
    c.compare.errors.worse = flag();
    c.compare.errors.difference = double() / 600.0 - 0.5;
    c.compare.latency.slower = flag();
    c.compare.latency.effect = double() / 600.0;
    c.mirror.compared = int();
    c.mirror.failed = int();
    c.mirror.mismatches.status = int();
    c.mirror.mismatch_rate = double() / 6_000.0;
    c.rollout.step = int() % 5;
    c.rollout.age_s = double();
    c.rollout.paused = flag();
    c.synthetic.primary.failed = int();
    c.synthetic.shadow.failed = int();
    let mut present = present.iter().copied().cycle();
    for v in [&mut c.primary, &mut c.shadow] {
        v.custom.retain(|_, _| present.next().unwrap_or(true));
        v.resources.retain(|_, _| present.next().unwrap_or(true));
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn policy_cel_paths_agree_on_varied_contexts(
        ints in ints(),
        doubles in doubles(),
        bools in prop::collection::vec(any::<bool>(), 8),
        present in prop::collection::vec(prop::bool::weighted(0.8), 1..16),
    ) {
        for (label, sample) in samples() {
            let context = varied(&sample, &ints, &doubles, &bools, &present);
            same_both_ways(&PROGRAMS, &context, &format!("{label} varied {context:?}"));
        }
    }
}
