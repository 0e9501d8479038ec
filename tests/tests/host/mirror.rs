//! The real filter in mirror mode through the test host: copies go out only for allowed methods,
//! carry the id and mirror headers, are compared with the primary's answer (a 500 against a 200 is
//! a status mismatch, an identical answer a match), never hold the client's response back, and
//! respect the in-flight cap. Copies are dispatched from the root context on its tick, so their
//! answers arrive after the client's stream is gone, as in Envoy.

use std::time::Duration;

use doppel_tests::host::support::get;
use doppel_tests::host::{Action, Finished, Host};
use doppel_tests::procs::{filter_split_wasm, filter_wasm};

const MS: Duration = Duration::from_millis(1);

fn mirror(extra: &str) -> String {
    format!(
        r#"{{"service":"cart","mode":"mirror","percent":100,"mirror":{{"cluster":"shadow","authority":"shadow.internal","timeout_ms":1000{extra}}}}}"#
    )
}

fn configured(config: &str) -> anyhow::Result<Host> {
    let mut host = Host::load_filter()?;
    anyhow::ensure!(
        host.configure(config)?,
        "refused {config}: {:?}",
        host.logs()
    );
    Ok(host)
}

/// One client request answered by the primary with `status` and `body`; then 1 ms passes so
/// the root's dispatch tick runs.
fn primary(host: &mut Host, method: &str, status: u16, body: &[u8]) -> anyhow::Result<Finished> {
    let headers = [
        (":method", method),
        (":path", "/cart/7"),
        (":authority", "cart"),
        (":scheme", "http"),
    ];
    let done = host
        .request(&headers)?
        .respond_with_body(status, &[], body)?
        .finish()?;
    host.advance(MS)?;
    Ok(done)
}

fn count(host: &Host, stat: &str) -> i64 {
    host.counter(&format!("doppel.cart.mirror.{stat}"))
        .unwrap_or(-1)
}

/// Publishes the filter's counters (its tick runs every second).
fn publish(host: &mut Host) -> anyhow::Result<()> {
    host.advance(Duration::from_millis(1100))
}

#[test]
fn host_mirror_copies_only_allowed_methods_with_id_and_mirror_headers() -> anyhow::Result<()> {
    let mut host = configured(&mirror(""))?;
    for method in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"] {
        let before = host.callouts().len();
        let done = primary(&mut host, method, 200, b"")?;
        let copies = &host.callouts()[before..];
        let allowed = matches!(method, "GET" | "HEAD" | "OPTIONS");
        assert_eq!(copies.len(), usize::from(allowed), "{method}: {copies:?}");
        // The primary serves the request either way, untouched by the mirror.
        assert_eq!(done.cluster.as_deref(), Some("primary"), "{method}");
        assert!(done.upstream_header("x-doppel-mirror").is_none());
        if let Some(copy) = copies.first() {
            assert_eq!(copy.cluster, "shadow");
            assert_eq!(copy.headers.get_str(":method").as_deref(), Some(method));
            assert_eq!(copy.headers.get_str(":path").as_deref(), Some("/cart/7"));
            assert_eq!(
                copy.headers.get_str(":authority").as_deref(),
                Some("shadow.internal")
            );
            assert_eq!(
                copy.headers.get_str("x-doppel-mirror").as_deref(),
                Some("1")
            );
            let id = copy.headers.get_str("x-doppel-id").unwrap_or_default();
            assert_eq!(id.len(), 32, "{copy:?}");
            assert_eq!(
                done.filter_state.get("doppel_id").map(Vec::as_slice),
                Some(id.as_bytes())
            );
            assert!(copy.timeout_ms == 1000, "{copy:?}");
        }
    }
    publish(&mut host)?;
    assert_eq!(count(&host, "sent"), 3);
    assert_eq!(count(&host, "skipped_method"), 4);

    // A client cannot smuggle its own mirror or id header into the copy.
    let spoofed = get(
        "/",
        &[
            ("x-doppel-mirror", "0"),
            ("x-doppel-id", "ffffffffffffffffffffffffffffffff"),
        ],
    );
    let before = host.callouts().len();
    let done = host.request(&spoofed)?.respond(200, &[])?.finish()?;
    host.advance(MS)?;
    assert!(
        done.upstream_header("x-doppel-id").is_none()
            && done.upstream_header("x-doppel-mirror").is_none()
    );
    let copy = &host.callouts()[before];
    assert_eq!(
        copy.headers.get_all("x-doppel-mirror"),
        vec![b"1".as_slice()]
    );
    assert_ne!(
        copy.headers.get_str("x-doppel-id").as_deref(),
        Some("ffffffffffffffffffffffffffffffff")
    );
    Ok(())
}

#[test]
fn host_mirror_never_holds_the_client_response_back() -> anyhow::Result<()> {
    let mut host = configured(&mirror(""))?;
    let exchange = host.request(&get("/", &[]))?;
    assert!(
        exchange.forwarded().is_some(),
        "the request goes to the primary at once"
    );
    let done = exchange.respond_with_body(200, &[], b"hello")?.finish()?;
    assert!(
        done.actions.iter().all(|(_, a)| *a == Action::Continue),
        "{:?}",
        done.actions
    );
    assert!(done.delivered.is_some(), "the client got its answer");
    assert!(done.local_response.is_none());
    // The copy is still waiting for the next root tick; the client did not wait for it.
    assert!(
        host.callouts().is_empty(),
        "the copy leaves from the root's tick, after the client's answer"
    );
    host.advance(MS)?;
    assert_eq!(host.pending_callouts().len(), 1);
    Ok(())
}

#[test]
fn host_mirror_compares_a_500_as_a_mismatch_and_identical_answers_as_a_match() -> anyhow::Result<()>
{
    let mut host = configured(&mirror(r#","compare_body_bytes":1024"#))?;
    // The shadow fails where the primary succeeds.
    primary(&mut host, "GET", 200, b"{\"items\":[]}")?;
    let token = host.pending_callouts()[0].token;
    host.answer(token, 500, &[], b"oops")?;
    publish(&mut host)?;
    assert_eq!(count(&host, "compared"), 1);
    assert_eq!(count(&host, "mismatch_status"), 1);
    assert_eq!(host.counter("doppel.cart.shadow.rq_5xx"), Some(1));
    // (The bodies differed too; what counts below is that equal answers add nothing.)
    let body_mismatches = count(&host, "mismatch_body");

    // The same answer from both: compared, no mismatch of any kind.
    primary(&mut host, "GET", 200, b"{\"items\":[]}")?;
    let token = host.pending_callouts()[0].token;
    host.answer(token, 200, &[], b"{\"items\":[]}")?;
    publish(&mut host)?;
    assert_eq!(count(&host, "compared"), 2);
    assert_eq!(count(&host, "mismatch_status"), 1);
    assert_eq!(count(&host, "mismatch_body"), body_mismatches);
    assert_eq!(count(&host, "mismatch_latency"), 0);

    // Same status, different body: a body mismatch only.
    primary(&mut host, "GET", 200, b"{\"items\":[]}")?;
    let token = host.pending_callouts()[0].token;
    host.answer(token, 200, &[], b"{\"items\":[1]}")?;
    publish(&mut host)?;
    assert_eq!(count(&host, "compared"), 3);
    assert_eq!(count(&host, "mismatch_body"), body_mismatches + 1);
    assert_eq!(count(&host, "mismatch_status"), 1);
    assert_eq!(host.counter("doppel.cart.shadow.rq_total"), Some(3));
    Ok(())
}

#[test]
fn host_mirror_counts_a_copy_envoy_answered_itself_as_failed() -> anyhow::Result<()> {
    let mut host = configured(&mirror(""))?;
    primary(&mut host, "GET", 200, b"")?;
    // Nobody answers: after the 1000 ms timeout Envoy's router answers 504 itself.
    host.advance(Duration::from_millis(1000))?;
    assert!(host.pending_callouts().is_empty());
    publish(&mut host)?;
    assert_eq!(count(&host, "failed"), 1);
    assert_eq!(count(&host, "compared"), 0);
    assert_eq!(host.counter("doppel.cart.shadow.rq_reset"), Some(1));
    Ok(())
}

#[test]
fn host_mirror_respects_the_in_flight_cap() -> anyhow::Result<()> {
    let mut host = configured(&mirror(r#","max_in_flight":2"#))?;
    for _ in 0..5 {
        primary(&mut host, "GET", 200, b"")?;
    }
    assert_eq!(
        host.pending_callouts().len(),
        2,
        "only two copies may be in flight"
    );
    for callout in host.pending_callouts() {
        host.answer(callout.token, 200, &[], b"")?;
    }
    publish(&mut host)?;
    assert_eq!(count(&host, "sent"), 2);
    assert_eq!(count(&host, "dropped_in_flight"), 3);
    assert_eq!(count(&host, "compared"), 2);
    // Once the copies in flight are answered, copies go out again.
    primary(&mut host, "GET", 200, b"")?;
    assert_eq!(host.pending_callouts().len(), 1);
    Ok(())
}

#[test]
fn host_mirror_steady_copies_publish_counters_once_a_period_not_on_every_dispatch_tick()
-> anyhow::Result<()> {
    let mut host = configured(&mirror(""))?;
    // A copy every millisecond: every tick is a dispatch tick, and the one-second publish tick
    // never comes on its own.
    let copy = |host: &mut Host| -> anyhow::Result<()> {
        primary(host, "GET", 200, b"")?;
        let token = host.callouts().last().map(|c| c.token).expect("a copy");
        host.answer(token, 200, &[], b"")
    };
    copy(&mut host)?;
    let first = count(&host, "sent");
    assert!(first >= 1, "the first dispatch tick publishes: {first}");
    for _ in 0..500 {
        copy(&mut host)?;
    }
    assert_eq!(
        count(&host, "sent"),
        first,
        "half a second of dispatch ticks publishes nothing"
    );
    for _ in 0..600 {
        copy(&mut host)?;
    }
    let later = count(&host, "sent");
    assert!(
        later > 500,
        "within a publish period counters are published even though every tick dispatches: {later}"
    );
    Ok(())
}

#[test]
fn host_mirror_sent_by_envoy_marks_the_request_and_sends_nothing_itself() -> anyhow::Result<()> {
    let config = r#"{"service":"cart","mode":"mirror","percent":100,"mirror":{"cluster":"shadow","sender":"envoy"}}"#;
    // Both builds carry it: the split-only one, which the engine pushes, and the full one.
    for module in [filter_split_wasm(), filter_wasm()] {
        let mut host = Host::load(&module)?;
        anyhow::ensure!(
            host.configure(config)?,
            "{module:?} refused: {:?}",
            host.logs()
        );
        let mut ids = Vec::new();
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            // A client's own x-doppel-mirror-to never names a cluster.
            let spoofed = [
                ("x-doppel-mirror-to", "elsewhere"),
                ("x-doppel-mirror", "1"),
            ];
            let headers = [
                (":method", method),
                (":path", "/cart/7"),
                (":authority", "cart"),
                (":scheme", "http"),
                spoofed[0],
                spoofed[1],
            ];
            let done = host.request(&headers)?.respond(200, &[])?.finish()?;
            host.advance(MS)?;
            assert!(
                host.callouts().is_empty(),
                "{module:?}: Envoy sends the copy"
            );
            assert_eq!(done.cluster.as_deref(), Some("primary"), "{method}");
            // Only Envoy's mirror policy writes the copy's marker.
            assert!(
                done.upstream_header("x-doppel-mirror").is_none(),
                "{method}"
            );
            let to = done.upstream_header("x-doppel-mirror-to");
            let id = done.upstream_header("x-doppel-id");
            if matches!(method, "GET" | "HEAD") {
                assert_eq!(to.as_deref(), Some("shadow"), "{method}");
                let id = id.expect("the request carries the id its copy keeps");
                assert_eq!(id.len(), 32, "{id}");
                assert_eq!(
                    done.filter_state.get("doppel_id").map(Vec::as_slice),
                    Some(id.as_bytes())
                );
                assert_eq!(
                    done.filter_state.get("doppel_variant").map(Vec::as_slice),
                    Some(b"primary".as_slice())
                );
                ids.push(id);
            } else {
                assert_eq!((to, id), (None, None), "{method}: not copied");
            }
        }
        assert_ne!(ids[0], ids[1]);
        publish(&mut host)?;
        assert_eq!(count(&host, "sent"), 2, "{module:?}");
        assert_eq!(count(&host, "skipped_method"), 2, "{module:?}");
        assert_eq!(count(&host, "compared"), 0, "{module:?}");
    }
    Ok(())
}

#[test]
fn host_mirror_when_envoy_strips_reads_a_chosen_request_once_chosen_and_copies_it()
-> anyhow::Result<()> {
    let mut host = configured(&mirror("").replace(
        r#""percent":100,"#,
        r#""percent":100,"strip_control":"envoy","#,
    ))?;
    for method in ["GET", "POST"] {
        let before = host.callouts().len();
        let done = primary(&mut host, method, 200, b"")?;
        let copies = &host.callouts()[before..];
        // Read after the decision: the method is known, and only GET is copied.
        assert_eq!(
            copies.len(),
            usize::from(method == "GET"),
            "{method}: {copies:?}"
        );
        assert_eq!(done.cluster.as_deref(), Some("primary"), "{method}");
        if let Some(copy) = copies.first() {
            assert_eq!(copy.headers.get_str(":path").as_deref(), Some("/cart/7"));
            assert_eq!(
                copy.headers.get_str("x-doppel-mirror").as_deref(),
                Some("1")
            );
        }
    }
    publish(&mut host)?;
    assert_eq!(count(&host, "sent"), 1);
    assert_eq!(count(&host, "skipped_method"), 1);
    Ok(())
}
