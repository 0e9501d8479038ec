//! The engine's integration tests: the `doppel` binary, the gRPC servers, policies, statistics,
//! alerts, hosts and resources. One binary, so the engine is linked once.

mod accesslog_grpc;
mod alerts;
mod check;
mod faults_reload;
mod faults_sigkill;
mod fuzz_regressions;
mod grpc_tls;
mod hosts;
mod hosts_apportion;
mod ingest_fleet;
mod ingest_grpc;
mod policy_analysis;
mod policy_cel_paths;
mod policy_context_doc;
mod policy_fuzz;
mod replay;
mod resources;
mod rollout_bench;
mod rollout_istio;
mod serve_process;
mod stats_detection;
mod stats_properties;
mod stats_reference;
mod stats_sim;
mod xds_ads;
mod xds_cache;
