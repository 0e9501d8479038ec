//! CEL rules over the full context the engine builds at a look: the checkout policy's 7 rules
//! (errors, latency, a custom metric, probes, resources, the rollout) against a context with
//! both variants' stats, the comparison, custom metrics, synthetic and resource sections, and
//! the search mirror policy's 3 rules against the same context with mirror counts.
//!
//! Per rule: `Program::execute` on the context converted once per look (`RuleContext::to_cel`),
//! as the analysis does (`cel_rule`), and on the roots alone (`RuleContext::to_cel_roots`,
//! `cel_rule_roots`): the baseline the leaf variables are measured against. Per look:
//! converting the context both ways, its JSON (for the values a decision quotes), and a whole
//! `Analyzer` look.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion};
use doppel_engine::analysis::Analyzer;
use doppel_engine::context::{Comparer, LookInputs, MirrorContext, RolloutContext, RuleContext};
use doppel_engine::metrics::{MirrorWindow, ServiceWindow};
use doppel_engine::resources::{ResourceSample, VariantResources};
use doppel_engine::synthetic::{SyntheticRecord, SyntheticVariant};

use crate::data;

/// Requests per 10 s interval (1,000 requests/s), 5% to the shadow as the policy says.
const REQUESTS: u64 = 10_000;
const SHARE: f64 = 0.05;
/// Intervals since the step began (5 minutes): the analysed data is their sum.
const INTERVALS: u64 = 30;
const INTERVAL_MS: u64 = 10_000;

/// What the engine measured itself at this look: both probes passed, three resource numbers.
fn inputs() -> LookInputs {
    let probes = |latency: f64| SyntheticVariant {
        runs: 1,
        passed: 1,
        failed: 0,
        failing: 0,
        pass_rate: 1.0,
        latency_mean_ms: latency,
        latency_max_ms: latency,
    };
    let resources = |cpu: f64| VariantResources {
        values: BTreeMap::from([
            ("cpu".to_owned(), cpu),
            ("io".to_owned(), 1.5e6),
            ("memory".to_owned(), 3.2e8),
        ]),
        missing: BTreeMap::new(),
    };
    LookInputs {
        synthetic: Some(SyntheticRecord {
            primary: probes(41.0),
            shadow: probes(45.5),
            failures: Vec::new(),
        }),
        resources: Some(ResourceSample {
            primary: resources(0.42),
            shadow: resources(0.47),
        }),
    }
}

/// The windows of `INTERVALS` intervals of traffic, in order.
fn windows() -> Vec<ServiceWindow> {
    let sim = data::simulator(REQUESTS, SHARE);
    let mut rng = data::rng();
    (0..INTERVALS)
        .map(|i| data::window(&sim.interval(&mut rng), i * INTERVAL_MS, INTERVAL_MS))
        .collect()
}

/// The context of the look after `INTERVALS` intervals, as the analysis builds it.
fn context(policy: &doppel_engine::policy::Policy, windows: &[ServiceWindow]) -> RuleContext {
    let a = &policy.analysis;
    let mut comparer = match Comparer::new(a.alpha, a.min_sample) {
        Ok(c) => c,
        Err(e) => panic!("comparer: {e}"),
    };
    let mut analysed = ServiceWindow::default();
    let mut comparison = None;
    for w in windows {
        if let Err(e) = analysed.merge(w) {
            panic!("merge: {e}");
        }
        comparison = Some(comparer.look(w, &analysed).expect("look"));
    }
    let comparison = comparison.expect("at least one window");
    let rollout = RolloutContext {
        step: 1,
        weight: 10.0,
        age_s: 300.0,
        paused: false,
    };
    RuleContext::new(
        &analysed,
        &comparison,
        a.min_sample,
        rollout,
        &policy.traffic.custom_metrics,
        &inputs(),
    )
}

/// The mirror counts of the same look in mirror mode: 5% of GETs copied, 0.4% differing.
fn mirrored(context: &RuleContext) -> RuleContext {
    let mirror = MirrorWindow {
        sent: 15_000,
        compared: 14_900,
        mismatch_status: 12,
        mismatch_body: 40,
        mismatch_latency: 8,
        failed: 100,
        skipped: 300,
    };
    RuleContext {
        mirror: MirrorContext::of(&mirror),
        ..context.clone()
    }
}

pub fn benches(c: &mut Criterion) {
    let policy = data::checkout();
    let windows = windows();
    let context = context(&policy, &windows);
    let mirror_policy = data::search_mirror();
    let mirror_context = mirrored(&context);

    // `cel_rule`: the context as the analysis builds it (roots plus a variable per leaf path);
    // `cel_rule_roots`: the roots alone, the baseline, measured in the same run. The checkout
    // policy's 7 rules, then the search mirror's 3.
    type ToCel =
        fn(&RuleContext) -> Result<cel::Context<'static, 'static>, cel::SerializationError>;
    let forms: [(&str, ToCel); 2] = [
        ("cel_rule", RuleContext::to_cel),
        ("cel_rule_roots", RuleContext::to_cel_roots),
    ];
    for (name, to_cel) in forms {
        let cel = to_cel(&context).expect("the context converts to CEL");
        let mirror_cel = to_cel(&mirror_context).expect("the context converts to CEL");
        let mut group = c.benchmark_group(name);
        let rules = policy.rules.iter().map(|r| (r, &cel));
        for (rule, cel) in rules.chain(mirror_policy.rules.iter().map(|r| (r, &mirror_cel))) {
            // Every rule must evaluate to a bool on this context, as in a live look.
            match rule.program.execute(cel) {
                Ok(cel::Value::Bool(_)) => {}
                other => panic!("rule {} gave {other:?}", rule.name),
            }
            group.bench_function(&rule.name, |b| {
                b.iter(|| rule.program.execute(black_box(cel)))
            });
        }
        group.bench_function("all_7", |b| {
            b.iter(|| {
                policy
                    .rules
                    .iter()
                    .filter(|r| matches!(r.program.execute(&cel), Ok(cel::Value::Bool(true))))
                    .count()
            })
        });
        group.finish();
    }

    let mut group = c.benchmark_group("look");
    group.bench_function("rule_context_to_cel", |b| b.iter(|| context.to_cel()));
    group.bench_function("rule_context_to_cel_roots", |b| {
        b.iter(|| context.to_cel_roots())
    });
    group.bench_function("rule_context_to_json", |b| b.iter(|| context.to_json()));
    // The whole look of the analysis (statistics, context, 7 rules, explanations) on the
    // 2nd interval of a fresh analyzer (the setup, not measured, makes it and runs the 1st).
    let (first, second) = (windows[0].clone(), windows[1].clone());
    group.bench_function("analyzer_look_7_rules", |b| {
        b.iter_batched(
            || {
                let mut analyzer = Analyzer::new(policy.clone()).expect("analyzer");
                analyzer.set_inputs(inputs());
                analyzer.push(&first).expect("first look");
                analyzer
            },
            |mut analyzer| analyzer.push(&second).expect("second look"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}
