//! The test host itself, against small hand-written WAT modules: Envoy's answers to hostcalls,
//! the stream lifecycle, callouts (answered and timed out), traps, and loud refusal of imports
//! the host does not implement.

use std::time::Duration;

use doppel_tests::host::{HeaderMap, Host, abi};

/// A tiny filter: on configure it reads the plugin configuration (true when non-empty); on
/// request headers it edits headers, checks Envoy's status codes (trapping on a surprise),
/// counts, and dispatches one valid callout after two invalid ones; when the stream is deleted
/// it finds its headers gone.
const PROBE: &str = r#"
(module
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $rq (mut i32) (i32.const 0))
  (global $answers (mut i32) (i32.const 0))
  (data (i32.const 1024) "x-added")
  (data (i32.const 1040) "yes")
  (data (i32.const 1056) "x-drop")
  (data (i32.const 1072) "wat.rq")
  (data (i32.const 1088) "primary")
  (data (i32.const 1104) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:path\00/\00:authority\00host\00")
  (data (i32.const 1200) "\02\00\00\00\07\00\00\00\03\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:authority\00host\00")
  (data (i32.const 1300) "nowhere")
  (data (i32.const 1320) "wat.answers")
  (data (i32.const 1340) ":path")
  (func $check (param i32 i32) (if (i32.ne (local.get 0) (local.get 1)) (then unreachable)))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get 0)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $check (call $define (i32.const 0) (i32.const 1072) (i32.const 6) (i32.const 896)) (i32.const 0))
    (global.set $rq (i32.load (i32.const 896)))
    (call $check (call $define (i32.const 0) (i32.const 1320) (i32.const 11) (i32.const 896)) (i32.const 0))
    (global.set $answers (i32.load (i32.const 896)))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (i32.store (i32.const 904) (i32.const 0))
    (call $check (call $buf (i32.const 7) (i32.const 0) (local.get 1) (i32.const 900) (i32.const 904)) (i32.const 0))
    (i32.ne (i32.load (i32.const 904)) (i32.const 0)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $check (call $replace (i32.const 0) (i32.const 1024) (i32.const 7) (i32.const 1040) (i32.const 3)) (i32.const 0))
    (call $check (call $remove (i32.const 0) (i32.const 1056) (i32.const 6)) (i32.const 0))
    ;; response headers do not exist during the request: BadArgument
    (call $check (call $get (i32.const 2) (i32.const 1024) (i32.const 7) (i32.const 900) (i32.const 904)) (i32.const 2))
    ;; a header that is absent: NotFound
    (call $check (call $get (i32.const 0) (i32.const 1056) (i32.const 6) (i32.const 900) (i32.const 904)) (i32.const 1))
    (call $check (call $inc (global.get $rq) (i64.const 1)) (i32.const 0))
    ;; a counter increment of 0 is refused
    (call $check (call $inc (global.get $rq) (i64.const 0)) (i32.const 2))
    ;; no :path, then an unknown cluster: BadArgument
    (call $check (call $call (i32.const 1088) (i32.const 7) (i32.const 1200) (i32.const 48) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 908)) (i32.const 2))
    (call $check (call $call (i32.const 1300) (i32.const 7) (i32.const 1104) (i32.const 64) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 908)) (i32.const 2))
    (call $check (call $call (i32.const 1088) (i32.const 7) (i32.const 1104) (i32.const 64) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 908)) (i32.const 0))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (call $check (call $inc (global.get $answers) (i64.const 1)) (i32.const 0)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  ;; the stream's headers are gone when it is deleted, as under Envoy 1.40: BadArgument
  (func (export "proxy_on_delete") (param i32)
    (call $check (call $get (i32.const 0) (i32.const 1340) (i32.const 5) (i32.const 900) (i32.const 904)) (i32.const 2)))
)
"#;

#[test]
fn host_runs_a_stream_with_envoy_answers() -> anyhow::Result<()> {
    let mut host = Host::from_wat(PROBE)?;
    assert!(
        host.configure("{}")?,
        "a non-empty configuration is accepted"
    );
    assert!(
        !host.configure("")?,
        "the probe refuses an empty configuration"
    );

    let done = host
        .request(&[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "cart"),
            ("x-drop", "1"),
        ])?
        .respond(200, &[])?
        .finish()?;
    let forwarded = done
        .forwarded
        .expect("the probe continues, so the request went upstream");
    assert_eq!(forwarded.get_str("x-added").as_deref(), Some("yes"));
    assert!(!forwarded.contains("x-drop"));
    assert_eq!(done.cluster.as_deref(), Some("primary"));
    assert!(done.done);
    assert_eq!(host.counter("wat.rq"), Some(1));
    assert_eq!(host.live_streams(), 0, "the stream's context is deleted");

    let callouts = host.callouts().to_vec();
    assert_eq!(
        callouts.len(),
        1,
        "only the valid callout is recorded: {callouts:?}"
    );
    assert_eq!(callouts[0].cluster, "primary");
    assert_eq!(callouts[0].dispatched_by, done.id);
    assert_eq!(callouts[0].headers.get_str(":path").as_deref(), Some("/"));
    host.answer(callouts[0].token, 200, &[], b"ok")?;
    assert_eq!(host.counter("wat.answers"), Some(1));
    assert!(
        host.answer(callouts[0].token, 200, &[], b"").is_err(),
        "an answered callout is not pending"
    );
    Ok(())
}

#[test]
fn host_times_out_callouts_on_the_virtual_clock() -> anyhow::Result<()> {
    let mut host = Host::from_wat(PROBE)?;
    host.request(&[(":path", "/")])?.finish()?;
    assert_eq!(host.pending_callouts().len(), 1);
    host.advance(Duration::from_millis(999))?;
    assert_eq!(
        host.pending_callouts().len(),
        1,
        "the 1000 ms timeout has not passed"
    );
    assert_eq!(host.counter("wat.answers"), Some(0));
    host.advance(Duration::from_millis(1))?;
    assert!(host.pending_callouts().is_empty());
    assert_eq!(
        host.counter("wat.answers"),
        Some(1),
        "a timeout is delivered as an empty answer"
    );
    Ok(())
}

#[test]
fn host_fails_the_vm_on_a_trap_and_keeps_it_failed() -> anyhow::Result<()> {
    let trapping = PROBE.replace(
        "(func (export \"proxy_on_done\") (param i32) (result i32) (i32.const 1))",
        "(func (export \"proxy_on_done\") (param i32) (result i32) unreachable)",
    );
    let mut host = Host::from_wat(&trapping)?;
    let error = match host.request(&[(":path", "/")])?.finish() {
        Ok(_) => panic!("on_done traps, so finishing must fail"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("wasm trap"), "{error}");
    assert!(host.failure().is_some());
    let again = host
        .request(&[(":path", "/")])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(again.contains("failed earlier"), "{again}");
    Ok(())
}

#[test]
fn host_refuses_imports_it_does_not_implement_naming_them() {
    let unknown = r#"(module
        (import "env" "proxy_resolve_dns" (func (param i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#;
    let error = Host::from_wat(unknown)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("env::proxy_resolve_dns"), "{error}");
    assert!(
        error.contains("wasi_snapshot_preview1::path_open"),
        "{error}"
    );

    let no_abi = r#"(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#;
    let error = Host::from_wat(no_abi)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("proxy_abi_version"), "{error}");
}

#[test]
fn host_header_maps_and_pairs_follow_envoy() {
    let mut map = HeaderMap::from_pairs(&[("X-A", "1"), ("x-b", "2"), ("x-a", "3")]);
    assert_eq!(
        map.get_str("x-a").as_deref(),
        Some("1"),
        "get answers the first value"
    );
    map.set("x-a", b"9");
    assert_eq!(
        map.get_all("x-a"),
        vec![b"9".as_slice()],
        "set replaces the first and drops the rest"
    );
    map.remove("absent");
    let encoded = map.encode();
    let decoded = abi::decode_pairs(&encoded);
    assert_eq!(
        decoded,
        vec![
            (b"x-a".to_vec(), b"9".to_vec()),
            (b"x-b".to_vec(), b"2".to_vec())
        ]
    );
    assert!(
        abi::decode_pairs(&encoded[..encoded.len() - 3]).is_empty(),
        "a truncated buffer decodes as nothing"
    );
    assert!(abi::decode_pairs(&[0xff, 0xff, 0xff, 0xff]).is_empty());
}
