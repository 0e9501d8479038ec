//! The trace reader (`doppel replay --trace`) on any bytes: it never panics, a refusal names the
//! lines at fault, and a trace it accepts replays under a shipped policy without panicking.
#![no_main]

use std::sync::OnceLock;

use doppel_engine::policy::Policy;
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        doppel_engine::policy::parse(include_str!("../../../policies/checkout-split.yaml"))
            .expect("the shipped policy compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    match doppel_engine::replay::read_trace(data) {
        Ok(windows) => {
            let _ = doppel_engine::replay::replay(policy(), &windows, || {});
        }
        Err(errors) => assert!(!errors.is_empty(), "refused without a reason"),
    }
});
