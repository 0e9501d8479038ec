use super::*;
use crate::config::{ClusterName, Method, Ranged};
use proptest::prelude::*;

fn cfg(max_body: u64) -> MirrorConfig {
    let mut c = MirrorConfig::new(ClusterName::new("shadow").unwrap());
    c.max_body_bytes = Ranged::new(max_body).unwrap();
    c
}

#[test]
fn only_allowed_methods_are_copied() {
    let c = cfg(0);
    for m in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(
            safety(&c, m.as_bytes(), None, true),
            Safety::Copy { body_len: 0 }
        );
    }
    for m in ["POST", "PUT", "PATCH", "DELETE", "get", "", "GETX"] {
        assert_eq!(
            safety(&c, m.as_bytes(), None, true),
            Safety::SkipMethod,
            "{m}"
        );
    }
    let mut opted = cfg(0);
    opted.methods.push(Method::new("POST").unwrap());
    assert_eq!(
        safety(&opted, b"POST", None, true),
        Safety::Copy { body_len: 0 }
    );
}

#[test]
fn bodies_must_be_bounded_and_announced() {
    let c = cfg(100);
    assert_eq!(
        safety(&c, b"GET", Some(b"100"), false),
        Safety::Copy { body_len: 100 }
    );
    assert_eq!(safety(&c, b"GET", Some(b"101"), false), Safety::SkipBody);
    assert_eq!(safety(&c, b"GET", None, false), Safety::SkipBody);
    for bad in [
        &b""[..],
        b"-1",
        b"1 0",
        b"0x10",
        b"99999999999999999999",
        b"+5",
    ] {
        assert_eq!(safety(&c, b"GET", Some(bad), false), Safety::SkipBody);
    }
    // The default bound is 0: any body at all is refused.
    assert_eq!(safety(&cfg(0), b"GET", Some(b"1"), false), Safety::SkipBody);
    assert_eq!(
        safety(&cfg(0), b"GET", Some(b"0"), false),
        Safety::Copy { body_len: 0 }
    );
}

#[test]
fn copy_headers_drop_hop_by_hop_and_control_and_add_marks() {
    let req: [(&[u8], &[u8]); 7] = [
        (b":method", b"GET"),
        (b":path", b"/a"),
        (b":authority", b"front"),
        (b"connection", b"keep-alive"),
        (b"x-doppel-variant", b"shadow"),
        (b"x-doppel-mirror-to", b"shadow"),
        (b"x-user", b"u1"),
    ];
    let out = copy_headers(
        req,
        Some("shadow.internal"),
        [
            "x-doppel-variant",
            "x-doppel-id",
            "x-doppel-mirror",
            "x-doppel-mirror-to",
        ],
        ("x-doppel-id", b"abc"),
        "x-doppel-mirror",
    );
    let names: Vec<&[u8]> = out.iter().map(|(k, _)| *k).collect();
    let want: [&[u8]; 6] = [
        b":method",
        b":path",
        b"x-user",
        b":authority",
        b"x-doppel-id",
        b"x-doppel-mirror",
    ];
    assert_eq!(names, want);
    assert_eq!(out[3].1, b"shadow.internal");
    assert!(has_required_pseudo_headers(&out));
    assert!(!has_required_pseudo_headers(&out[1..]));
}

#[test]
fn digest_stops_at_the_limit() {
    let mut a = BodyDigest::new(4);
    a.feed(b"ab");
    a.feed(b"cdef");
    let mut b = BodyDigest::new(4);
    b.feed(b"abcdXYZ");
    assert_eq!(a.value(), b.value());
    assert_eq!(a.wants(), 0);
    let mut c = BodyDigest::new(4);
    c.feed(b"abce");
    assert_ne!(a.value(), c.value());
}

fn ans(status: u16, latency_ms: u64, digest: Option<u64>) -> Answer {
    Answer {
        status,
        latency_us: latency_ms * 1000,
        digest,
    }
}

#[test]
fn compare_finds_each_kind_of_mismatch() {
    let p = ans(200, 10, Some(1));
    assert_eq!(
        compare(&p, &ans(204, 260, Some(1)), 250),
        Verdict::default()
    );
    assert!(compare(&p, &ans(500, 10, Some(1)), 250).status);
    assert!(compare(&p, &ans(200, 10, Some(2)), 250).body);
    assert!(!compare(&p, &ans(200, 10, None), 250).body);
    assert!(compare(&p, &ans(200, 261, Some(1)), 250).latency);
    assert!(!compare(&ans(200, 500, None), &ans(200, 10, None), 0).latency);
}

#[test]
fn the_book_resolves_in_either_order_and_caps_entries() {
    let mut book = Book::new(2, 250);
    let a = book.open(0).unwrap();
    let b = book.open(0).unwrap();
    assert_eq!(book.open(0), None);
    assert_eq!(book.primary(a, Some(ans(200, 1, None))), None);
    assert_eq!(
        book.shadow(a, Some(ans(503, 1, None))),
        Some(Resolution::Compared(Verdict {
            status: true,
            ..Verdict::default()
        }))
    );
    assert_eq!(book.shadow(b, None), None);
    assert_eq!(
        book.primary(b, Some(ans(200, 1, None))),
        Some(Resolution::ShadowFailed)
    );
    assert_eq!(book.open_count(), 0);
    let c = book.open(10).unwrap();
    assert_eq!(book.shadow(c, Some(ans(200, 1, None))), None);
    assert_eq!(book.primary(c, None), Some(Resolution::PrimaryMissing));
    // A late or repeated report for a settled entry is ignored.
    assert_eq!(book.primary(c, None), None);
}

#[test]
fn the_book_expires_forgotten_entries() {
    let mut book = Book::new(10, 0);
    let old = book.open(0).unwrap();
    book.open(5_000).unwrap();
    assert_eq!(book.expire(6_000, 2_000), 1);
    assert_eq!(book.primary(old, None), None);
    assert_eq!(book.open_count(), 1);
}

proptest! {
    #[test]
    fn safety_never_copies_an_unannounced_or_oversized_body(
        max in 0u64..1000, len in proptest::option::of(any::<Vec<u8>>()), eos in any::<bool>()
    ) {
        let c = cfg(max);
        if let Safety::Copy { body_len } = safety(&c, b"GET", len.as_deref(), eos) {
            prop_assert!(body_len <= max);
            if !eos {
                prop_assert!(len.is_some());
            }
        }
    }

    #[test]
    fn book_never_exceeds_its_cap(cap in 1usize..20, ops in proptest::collection::vec(0u8..3, 0..200)) {
        let mut book = Book::new(cap, 0);
        let mut open = Vec::new();
        for op in ops {
            match op {
                0 => { if let Some(k) = book.open(0) { open.push(k); } }
                1 => { if let Some(k) = open.pop() { book.primary(k, None); book.shadow(k, None); } }
                _ => { if let Some(k) = open.first().copied() { book.shadow(k, None); } }
            }
            prop_assert!(book.open_count() <= cap);
        }
    }
}
