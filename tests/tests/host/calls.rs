//! What a request costs the filter in calls between the host and the VM, counted exactly by the
//! test host. In Envoy these calls, not the filter's own work, are most of its cost per request
//! (BENCHMARKS.md prices each kind), so their number is part of the filter's behaviour: these
//! tests fail if a change adds one to the common path.

use doppel_tests::host::support::get;
use doppel_tests::host::{Crossings, Host};
use doppel_tests::procs::filter_split_wasm;

/// A split config keyed by `x-user-id` at 1%, measuring `sample` percent of primary requests.
fn configured(sample: f64) -> anyhow::Result<Host> {
    configure(Host::load_filter()?, sample)
}

/// `host`'s filter with [`configured`]'s config.
fn configure(mut host: Host, sample: f64) -> anyhow::Result<Host> {
    let config = format!(
        r#"{{"service":"cart","mode":"split","percent":1,"sticky":{{"header":"x-user-id"}},"primary_sample_percent":{sample}}}"#
    );
    anyhow::ensure!(host.configure(&config)?, "refused: {:?}", host.logs());
    Ok(host)
}

/// The calls one request of user `user` makes, answered 200 with a body; whether it was chosen.
fn one_request(host: &mut Host, user: &str) -> anyhow::Result<(Crossings, bool)> {
    let before = host.crossings();
    let done = host
        .request(&get("/cart", &[("x-user-id", user)]))?
        .respond_with_body(200, &[], b"ok")?
        .finish()?;
    let chosen = done.cluster.as_deref() == Some("shadow");
    Ok((host.crossings() - before, chosen))
}

/// A user the 1% split does not choose (the key is hashed: the same user, the same answer).
fn unchosen_user(host: &mut Host) -> anyhow::Result<String> {
    for i in 0..100 {
        let user = format!("user-{i}");
        if !one_request(host, &user)?.1 {
            return Ok(user);
        }
    }
    anyhow::bail!("no unchosen user among 100 at 1%")
}

/// The calls of one unchosen request, with `sample` percent of primary requests measured.
fn unchosen_calls(sample: f64) -> anyhow::Result<Crossings> {
    unchosen_calls_of(configured(sample)?)
}

/// The calls of one unchosen request through `host`.
fn unchosen_calls_of(mut host: Host) -> anyhow::Result<Crossings> {
    let user = unchosen_user(&mut host)?;
    let (calls, chosen) = one_request(&mut host, &user)?;
    assert!(!chosen, "{user} was chosen the second time");
    Ok(calls)
}

#[test]
fn host_calls_an_unmeasured_request_reads_its_headers_once_and_nothing_else() -> anyhow::Result<()>
{
    assert_eq!(
        unchosen_calls(0.0)?,
        Crossings {
            // context create, request headers, the host's allocation for the headers it hands
            // over, response headers, response body, delete
            into_vm: 6,
            // every request header in one call
            out_of_vm: 1,
        }
    );
    Ok(())
}

#[test]
fn host_calls_the_split_only_build_is_not_called_for_the_body() -> anyhow::Result<()> {
    let host = configure(Host::load(filter_split_wasm())?, 0.0)?;
    assert_eq!(
        unchosen_calls_of(host)?,
        Crossings {
            // as the full build, without the response body's callback
            into_vm: 5,
            out_of_vm: 1,
        }
    );
    Ok(())
}

#[test]
fn host_calls_a_measured_primary_request_adds_clock_status_and_one_histogram() -> anyhow::Result<()>
{
    assert_eq!(
        unchosen_calls(100.0)?,
        Crossings {
            // as unmeasured, plus the allocation for the status
            into_vm: 7,
            // headers, clock at request and at response, status, latency
            out_of_vm: 5,
        }
    );
    Ok(())
}

/// The split-only build splitting `percent` at random, with Envoy stripping the control headers
/// (`strip_control: envoy`) and no primary request measured.
fn stripped_by_envoy(percent: f64) -> anyhow::Result<Host> {
    let mut host = Host::load(filter_split_wasm())?;
    let config = format!(
        r#"{{"service":"cart","mode":"split","percent":{percent},"strip_control":"envoy","primary_sample_percent":0}}"#
    );
    anyhow::ensure!(host.configure(&config)?, "refused: {:?}", host.logs());
    Ok(host)
}

/// One request with a client `x-request-id` through `host`: its calls and how it ended.
fn traced_request(host: &mut Host) -> anyhow::Result<(Crossings, doppel_tests::host::Finished)> {
    let before = host.crossings();
    let done = host
        .request(&get("/cart", &[("x-request-id", "client-trace-1")]))?
        .respond_with_body(200, &[], b"ok")?
        .finish()?;
    Ok((host.crossings() - before, done))
}

#[test]
fn host_calls_when_envoy_strips_an_unchosen_random_request_reads_nothing() -> anyhow::Result<()> {
    let mut host = stripped_by_envoy(1.0)?;
    let mut unchosen = None;
    for _ in 0..100 {
        let (calls, done) = traced_request(&mut host)?;
        if done.cluster.as_deref() != Some("shadow") {
            unchosen = Some(calls);
            break;
        }
    }
    assert_eq!(
        unchosen.expect("an unchosen request among 100 at 1%"),
        Crossings {
            // context create, request headers, response headers, delete
            into_vm: 4,
            // nothing to strip, nothing the decision reads
            out_of_vm: 0,
        }
    );
    Ok(())
}

#[test]
fn host_calls_when_envoy_strips_a_chosen_request_reads_its_headers_once_chosen()
-> anyhow::Result<()> {
    let mut host = stripped_by_envoy(100.0)?;
    let (calls, done) = traced_request(&mut host)?;
    assert_eq!(done.cluster.as_deref(), Some("shadow"), "{done:?}");
    // Read after the decision: the client's trace id is seen and kept.
    assert_eq!(
        done.upstream_header("x-request-id").as_deref(),
        Some("client-trace-1")
    );
    let id = done.upstream_header("x-doppel-id").expect("an id");
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(
        calls.into_vm, 6,
        "four callbacks and two allocations (request headers once chosen, response headers): {calls:?}"
    );
    Ok(())
}
