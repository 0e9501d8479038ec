//! Issue 2's must-show for ids: every shadowed request carries a distinct id (1,000,000 of them
//! without a duplicate), exposed to access logs as filter state, with `x-request-id` kept or
//! created; ids of two workers (two VMs) and of a restart do not collide either.

use std::collections::HashSet;

use doppel_tests::host::Host;
use doppel_tests::host::support::get;

fn shadow_everything() -> anyhow::Result<Host> {
    let mut host = Host::load_filter()?;
    anyhow::ensure!(host.configure(r#"{"service":"cart","mode":"split","percent":100}"#)?);
    Ok(host)
}

/// The id of one request through `host`, checked on the way.
fn one_id(host: &mut Host, request_id: Option<&str>) -> anyhow::Result<u128> {
    let extra: Vec<(&str, &str)> = request_id
        .map(|r| ("x-request-id", r))
        .into_iter()
        .collect();
    let done = host
        .request(&get("/", &extra))?
        .respond(200, &[])?
        .finish()?;
    let id = done
        .upstream_header("x-doppel-id")
        .expect("a shadowed request carries an id");
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id} is not 32 lower-case hex digits"
    );
    assert_eq!(
        done.filter_state.get("doppel_id").map(Vec::as_slice),
        Some(id.as_bytes())
    );
    assert_eq!(
        done.filter_state.get("doppel_variant").map(Vec::as_slice),
        Some(b"shadow".as_slice())
    );
    let request_id_upstream = done.upstream_header("x-request-id");
    match request_id {
        Some(r) => assert_eq!(
            request_id_upstream.as_deref(),
            Some(r),
            "x-request-id is kept"
        ),
        None => assert!(
            request_id_upstream.is_some_and(|r| !r.is_empty()),
            "x-request-id is created"
        ),
    }
    Ok(u128::from_str_radix(&id, 16)?)
}

#[test]
fn host_ids_a_million_shadowed_requests_have_no_duplicate() -> anyhow::Result<()> {
    let mut host = shadow_everything()?;
    let n = 1_000_000;
    let mut seen = HashSet::with_capacity(n);
    for i in 0..n {
        let request_id = (i % 2 == 0).then_some("client-chosen-request-id");
        let id = one_id(&mut host, request_id)?;
        assert!(seen.insert(id), "request {i} repeated id {id:032x}");
        if i % 50_000 == 0 {
            host.clear_logs();
        }
    }
    assert!(host.failure().is_none());
    Ok(())
}

#[test]
fn host_ids_of_two_workers_and_a_restart_do_not_collide() -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for worker in 0..3 {
        let mut host = shadow_everything()?;
        for _ in 0..20_000 {
            let id = one_id(&mut host, None)?;
            assert!(seen.insert(id), "worker {worker} repeated id {id:032x}");
        }
    }
    Ok(())
}
