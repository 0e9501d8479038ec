//! End-to-end tests whose assertions are about time (latency ratios, decisions within analysis
//! intervals). They are a binary of their own so that cargo runs them after, not beside, the other
//! end-to-end tests.

mod demo_run;
mod e2e_shadow_faults;
mod rollout_fault;
