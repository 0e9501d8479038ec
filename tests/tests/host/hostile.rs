//! The real filter under hostile input, through the test host: header values that are not
//! UTF-8 or are megabytes long, thousands of headers, malformed cookies and `Server-Timing`,
//! spoofed doppel control headers, and a shadow that answers garbage or never answers.
//!
//! Each test asserts the same three things: the VM never traps (a Rust panic aborts it, and
//! Envoy then fails every later request open, without the filter), the filter keeps working for
//! the next ordinary request, and the primary's side is untouched: the request still goes
//! upstream and the client gets the primary's answer exactly as sent.

use std::time::Duration;

use doppel_tests::host::support::get;
use doppel_tests::host::{Finished, HeaderMap, Host};

const MS: Duration = Duration::from_millis(1);

/// A split config for `cart` at `percent`, keyed by `sticky`, recording `Server-Timing: db`,
/// measuring every primary request.
fn split(percent: f64, sticky: &str) -> String {
    format!(
        r#"{{"service":"cart","mode":"split","percent":{percent},"sticky":{sticky},"match":[{{"header":"x-geo","prefix":"d"}}],"custom_metrics":["db","cache"],"primary_sample_percent":100}}"#
    )
}

fn mirror() -> String {
    r#"{"service":"cart","mode":"mirror","percent":100,"custom_metrics":["db"],"mirror":{"cluster":"shadow","timeout_ms":1000,"max_in_flight":4,"compare_body_bytes":64}}"#.to_owned()
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

/// The request headers of a plain GET plus `extra` raw pairs.
fn request(extra: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::from_pairs(&get("/items", &[("x-geo", "de")]));
    for (name, value) in extra {
        map.add(name, value);
    }
    map
}

/// Sends `headers` through the filter, the primary answering 200 with `response` headers.
fn send(host: &mut Host, headers: HeaderMap, response: HeaderMap) -> anyhow::Result<Finished> {
    let sent = response.clone();
    let done = host
        .open_map(headers, true)?
        .response_map(200, response, true)?
        .finish()?;
    assert_primary_untouched(&done, &sent);
    Ok(done)
}

/// The request went upstream, and the client got the primary's answer header for header.
fn assert_primary_untouched(done: &Finished, sent: &HeaderMap) {
    assert!(done.forwarded.is_some(), "the request never went upstream");
    assert!(done.local_response.is_none(), "{:?}", done.local_response);
    let delivered = done
        .delivered
        .as_ref()
        .expect("an answer reached the client");
    assert_eq!(delivered.get(":status"), Some(&b"200"[..]));
    for (name, value) in sent.iter() {
        assert!(
            delivered.get_all(name).contains(&value),
            "response header {name} was changed or dropped"
        );
    }
    assert_eq!(
        delivered.len(),
        sent.len() + 1,
        "headers added to the answer"
    );
}

/// After the hostile input: no trap, and an ordinary request (no `x-geo`, so never chosen in
/// split mode) still goes through the filter and is counted on the next tick.
fn assert_still_working(host: &mut Host) -> anyhow::Result<()> {
    assert_eq!(host.failure(), None, "the VM trapped");
    host.advance(Duration::from_millis(1100))?;
    let before = total(host);
    send(
        host,
        HeaderMap::from_pairs(&get("/ok", &[])),
        HeaderMap::new(),
    )?;
    host.advance(Duration::from_millis(1100))?;
    assert_eq!(total(host), before + 1, "the filter stopped counting");
    assert_eq!(host.failure(), None, "the VM trapped");
    Ok(())
}

/// Requests the primary answered, as the filter counts them.
fn total(host: &Host) -> i64 {
    host.counter("doppel.cart.primary.rq_total").unwrap_or(0)
}

/// Byte strings that are not UTF-8: lone continuation bytes, truncated sequences, overlong
/// encodings, surrogates, 0xFF.
fn not_utf8() -> Vec<Vec<u8>> {
    vec![
        vec![0x80],
        vec![0xff, 0xfe, 0xfd],
        b"user-\xc3".to_vec(),
        vec![0xc0, 0xaf],
        vec![0xed, 0xa0, 0x80],
        vec![0xf4, 0x90, 0x80, 0x80],
        b"db;dur=\xff1".to_vec(),
        [b"shadow".as_slice(), &[0xff]].concat(),
    ]
}

#[test]
fn host_hostile_invalid_utf8_everywhere_never_traps() -> anyhow::Result<()> {
    for sticky in [r#"{"header":"x-user-id"}"#, r#"{"cookie":"uid"}"#] {
        let mut host = configured(&split(50.0, sticky))?;
        for bad in not_utf8() {
            let cookie = [b"uid=".as_slice(), &bad, b"; other=\xff"].concat();
            let headers = request(&[
                ("x-user-id", &bad),
                ("cookie", &cookie),
                ("x-geo", &bad),
                ("x-doppel-variant", &bad),
                ("user-agent", &bad),
            ]);
            let mut response = HeaderMap::new();
            response.add("server-timing", &bad);
            response.add("content-type", &bad);
            send(&mut host, headers, response)?;
        }
        // Not UTF-8 in the pseudo-headers too.
        let mut headers = HeaderMap::new();
        headers.add(":method", b"G\xffT");
        headers.add(":path", b"/\xc3(");
        headers.add(":authority", b"\xfe");
        headers.add("x-geo", b"de");
        send(&mut host, headers, HeaderMap::new())?;
        assert_still_working(&mut host)?;
    }
    Ok(())
}

#[test]
fn host_hostile_huge_header_values_and_thousands_of_headers() -> anyhow::Result<()> {
    let mut host = configured(&split(50.0, r#"{"header":"x-user-id"}"#))?;
    let huge = vec![b'a'; 1 << 20];
    let huge_timing = [b"db;dur=".as_slice(), &vec![b'9'; 1 << 20]].concat();
    let mut response = HeaderMap::new();
    response.add("server-timing", &huge_timing);
    let done = send(
        &mut host,
        request(&[("x-user-id", &huge), ("cookie", &huge), ("x-geo", &huge)]),
        response,
    )?;
    assert!(done.forwarded.is_some());

    // 5,000 request headers (with many copies of the ones the filter reads) and 5,000 response
    // headers, 2,000 of them Server-Timing.
    let mut headers = request(&[]);
    for i in 0..5_000 {
        let name = match i % 4 {
            0 => "x-user-id".to_owned(),
            1 => "x-doppel-variant".to_owned(),
            _ => format!("x-filler-{i}"),
        };
        headers.add(&name, format!("value-{i}").as_bytes());
    }
    let mut response = HeaderMap::new();
    for i in 0..5_000 {
        let name = if i % 5 < 2 {
            "server-timing".to_owned()
        } else {
            format!("x-answer-{i}")
        };
        response.add(&name, format!("db;dur={i}").as_bytes());
    }
    let done = send(&mut host, headers, response)?;
    let forwarded = done.forwarded.as_ref().expect("forwarded");
    assert!(
        forwarded
            .get_all("x-doppel-variant")
            .iter()
            .all(|v| *v == b"shadow"),
        "a spoofed copy of the variant header survived among thousands"
    );
    assert_still_working(&mut host)
}

#[test]
fn host_hostile_malformed_cookies_still_decide() -> anyhow::Result<()> {
    let mut host = configured(&split(50.0, r#"{"cookie":"uid"}"#))?;
    let cookies: [&[u8]; 14] = [
        b"",
        b";",
        b";;;;",
        b"=",
        b"==;==",
        b"uid",
        b"uid=",
        b"uid==",
        b"=uid=1",
        b"uid=\"",
        b"uid=\"unterminated; other=2",
        b"  uid  =  1  ",
        b"other=1; uid=1; uid=2; uid=3",
        b"\x00uid=\x00",
    ];
    for cookie in cookies {
        send(&mut host, request(&[("cookie", cookie)]), HeaderMap::new())?;
        // The same cookie twice in separate headers.
        send(
            &mut host,
            request(&[("cookie", cookie), ("cookie", cookie)]),
            HeaderMap::new(),
        )?;
    }
    // 10,000 cookies in one header, and one that is 1 MiB of separators.
    let many: Vec<u8> = (0..10_000)
        .flat_map(|i| format!("c{i}=v{i}; ").into_bytes())
        .chain(b"uid=last".iter().copied())
        .collect();
    send(&mut host, request(&[("cookie", &many)]), HeaderMap::new())?;
    send(
        &mut host,
        request(&[("cookie", &vec![b';'; 1 << 20])]),
        HeaderMap::new(),
    )?;
    // A sticky key still decides the same way every time, whatever else the header holds.
    let first = send(
        &mut host,
        request(&[("cookie", b"uid=alice")]),
        HeaderMap::new(),
    )?;
    for noise in [
        b"a=1; uid=alice".as_slice(),
        b"uid=alice; ;;=;",
        b"x; uid=alice",
    ] {
        let again = send(&mut host, request(&[("cookie", noise)]), HeaderMap::new())?;
        assert_eq!(
            again.cluster,
            first.cluster,
            "{:?}",
            String::from_utf8_lossy(noise)
        );
    }
    assert_still_working(&mut host)
}

#[test]
fn host_hostile_malformed_server_timing_records_only_sane_durations() -> anyhow::Result<()> {
    let mut host = configured(&split(0.0, r#"{"header":"x-user-id"}"#))?;
    let timings: [&[u8]; 22] = [
        b"",
        b",,,,",
        b";;;;",
        b"db",
        b"db;",
        b"db;dur",
        b"db;dur=",
        b"db;dur=NaN",
        b"db;dur=inf",
        b"db;dur=-infinity",
        b"db;dur=-1",
        b"db;dur=1e309",
        b"db;dur=99999999999999999999999",
        b"db;dur=0x10",
        b"db;dur=\"",
        b"db;desc=\"unterminated, cache;dur=1",
        b"db;desc=\"\\\\\\\";dur=2",
        b"db;dur=1;dur=2;dur=3",
        b"DB;DUR=4",
        b"db ; dur = 5 , cache;dur=6",
        b"\xff;dur=7",
        b"db;dur=3600001",
    ];
    for timing in timings {
        let mut response = HeaderMap::new();
        response.add("server-timing", timing);
        send(&mut host, request(&[]), response)?;
    }
    for name in ["db", "cache"] {
        let samples = host
            .histogram(&format!("doppel.cart.primary.custom.{name}_us"))
            .unwrap_or(&[])
            .to_vec();
        // Only well-formed, finite, non-negative durations within an hour were recorded.
        assert!(
            samples.iter().all(|us| *us <= 3_600_000_000),
            "{name}: {samples:?}"
        );
        let want: &[u64] = if name == "db" {
            &[4_000, 5_000]
        } else {
            &[6_000]
        };
        for us in want {
            assert!(
                samples.contains(us),
                "{name}: {us} missing from {samples:?}"
            );
        }
    }
    assert_still_working(&mut host)
}

#[test]
fn host_hostile_spoofed_control_headers_are_stripped() -> anyhow::Result<()> {
    // At 0% nothing is chosen: every doppel header that reaches the upstream was spoofed.
    let mut host = configured(&split(0.0, r#"{"header":"x-user-id"}"#))?;
    let spoofs: [&[(&str, &[u8])]; 4] = [
        &[("x-doppel-variant", b"shadow")],
        &[
            ("x-doppel-variant", b"shadow"),
            ("x-doppel-variant", b"shadow"),
            ("x-doppel-id", b"0123456789abcdef0123456789abcdef"),
            ("x-doppel-mirror", b"1"),
        ],
        &[
            ("x-doppel-variant", b"\xffshadow"),
            ("x-doppel-id", &[0xff; 64]),
        ],
        &[
            ("x-doppel-variant", b""),
            ("x-doppel-mirror", b""),
            ("x-doppel-mirror-to", b"shadow"),
        ],
    ];
    for spoof in spoofs {
        let done = send(&mut host, request(spoof), HeaderMap::new())?;
        assert_eq!(done.cluster.as_deref(), Some("primary"), "{spoof:?}");
        let forwarded = done.forwarded.as_ref().expect("forwarded");
        for name in [
            "x-doppel-variant",
            "x-doppel-id",
            "x-doppel-mirror",
            "x-doppel-mirror-to",
        ] {
            assert!(!forwarded.contains(name), "{name} survived: {spoof:?}");
        }
    }
    host.advance(Duration::from_millis(1100))?;
    assert_eq!(host.counter("doppel.cart.shadow.rq_total").unwrap_or(0), 0);

    // At 100%, the variant and id on the request are the filter's own, never the client's.
    let mut host = configured(&split(100.0, r#"{"header":"x-user-id"}"#))?;
    let done = send(
        &mut host,
        request(&[
            ("x-doppel-id", b"spoofed-id"),
            ("x-doppel-variant", b"primary"),
            ("x-doppel-mirror", b"1"),
        ]),
        HeaderMap::new(),
    )?;
    let forwarded = done.forwarded.as_ref().expect("forwarded");
    assert_eq!(forwarded.get_all("x-doppel-variant"), vec![&b"shadow"[..]]);
    let ids = forwarded.get_all("x-doppel-id");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], b"spoofed-id");
    assert!(!forwarded.contains("x-doppel-mirror"));
    assert_still_working(&mut host)
}

/// Mirror mode: one GET the primary answers 200 with `body`; the copy is dispatched on the
/// next millisecond tick. Returns the copy's callout token.
fn mirrored(host: &mut Host, body: &[u8]) -> anyhow::Result<u32> {
    let before = host.callouts().len();
    let mut response = HeaderMap::new();
    response.add("server-timing", b"db;dur=1");
    let done = host
        .open_map(request(&[]), true)?
        .response_map(200, response.clone(), false)?
        .response_body(body, true)?
        .finish()?;
    assert_primary_untouched(&done, &response);
    host.advance(MS)?;
    let copies = &host.callouts()[before..];
    anyhow::ensure!(copies.len() == 1, "expected one copy, got {copies:?}");
    Ok(copies[0].token)
}

#[test]
fn host_hostile_shadow_answering_garbage_or_never_leaves_the_primary_alone() -> anyhow::Result<()> {
    let mut host = configured(&mirror())?;
    let garbage: Vec<(HeaderMap, Vec<u8>)> = vec![
        // No :status at all.
        (HeaderMap::new(), b"???".to_vec()),
        // A status that is not a number, not UTF-8, out of range, or huge.
        (HeaderMap::from_pairs(&[(":status", "abc")]), Vec::new()),
        (
            HeaderMap::from_pairs(&[(":status", b"\xff\xfe".as_slice())]),
            Vec::new(),
        ),
        (
            HeaderMap::from_pairs(&[(":status", "99999999999")]),
            Vec::new(),
        ),
        (HeaderMap::from_pairs(&[(":status", "-200")]), Vec::new()),
        // Thousands of headers that are not UTF-8, and a 4 MiB body of noise.
        (
            {
                let mut map = HeaderMap::from_pairs(&[(":status", "200")]);
                for i in 0..3_000 {
                    map.add(&format!("x-{i}"), &[0xff, 0x00, 0xfe]);
                }
                map.add("server-timing", b"db;dur=\xff");
                map
            },
            (0..(4 << 20)).map(|i| (i * 7 % 251) as u8).collect(),
        ),
    ];
    for (headers, body) in garbage {
        let token = mirrored(&mut host, b"primary body")?;
        host.answer_map(token, headers, &body)?;
        assert_eq!(host.failure(), None);
    }
    // A shadow that never answers: the copy times out; one that resets.
    let token = mirrored(&mut host, b"primary body")?;
    host.time_out(token)?;
    let token = mirrored(&mut host, b"primary body")?;
    host.fail_callout(token)?;
    // More copies than max_in_flight left hanging: the rest are dropped and counted, and the
    // primary is served all the same.
    let mut hanging = Vec::new();
    for _ in 0..4 {
        hanging.push(mirrored(&mut host, b"primary body")?);
    }
    let before = host.callouts().len();
    let done = host
        .open_map(request(&[]), true)?
        .response_map(200, HeaderMap::new(), true)?
        .finish()?;
    assert_primary_untouched(&done, &HeaderMap::new());
    host.advance(MS)?;
    assert_eq!(
        host.callouts().len(),
        before,
        "no copy beyond max_in_flight"
    );
    // A copy that never gets any answer is forgotten after timeout_ms + 60 s.
    host.advance(Duration::from_secs(62))?;
    assert_eq!(host.failure(), None);
    assert!(
        host.counter("doppel.cart.mirror.dropped_in_flight")
            .unwrap_or(0)
            >= 1,
        "{:?}",
        host.metrics().keys().collect::<Vec<_>>()
    );
    assert!(host.counter("doppel.cart.mirror.failed").unwrap_or(0) >= 2);
    for token in hanging {
        // Answers that arrive after everything was forgotten change nothing and trap nothing.
        if host.pending_callouts().iter().any(|c| c.token == token) {
            host.answer(token, 200, &[], b"late")?;
        }
    }
    // And mirroring works again once the hanging copies are gone.
    let token = mirrored(&mut host, b"primary body")?;
    host.answer(token, 200, &[], b"primary body")?;
    assert_still_working(&mut host)
}
