use super::Rng;
use super::*;
use crate::config::FilterConfig;
use proptest::prelude::*;

fn config(extra: &str, percent: f64) -> FilterConfig {
    let doc = format!(r#"{{"service":"cart","mode":"split","percent":{percent}{extra}}}"#);
    FilterConfig::parse(doc.as_bytes()).unwrap()
}

fn values(v: &[Option<&str>]) -> Vec<Option<Vec<u8>>> {
    v.iter().map(|o| o.map(|s| s.as_bytes().to_vec())).collect()
}

#[test]
fn needed_headers_are_listed_once_in_order() {
    let c = config(
        r#","match":[{"header":"x-geo","equals":"de"},{"header":"user-agent","prefix":"M"},
           {"header":"x-geo","one_of":["de","fr"]}],"sticky":{"cookie":"uid"}"#,
        1.0,
    );
    let d = Decider::new(&c);
    assert_eq!(d.needed(), ["x-geo", "user-agent", "cookie"]);
}

#[test]
fn nothing_is_read_when_nobody_can_be_chosen() {
    let c = config(r#","match":[{"header":"x-geo","equals":"de"}]"#, 0.0);
    assert!(Decider::new(&c).needed().is_empty());
    let off = FilterConfig::parse(
        br#"{"service":"a","mode":"off","percent":50,"sticky":{"header":"x-u"}}"#,
    )
    .unwrap();
    let d = Decider::new(&off);
    assert!(d.needed().is_empty());
    assert!(!d.can_choose());
}

#[test]
fn matchers_are_anded_and_missing_headers_never_match() {
    let c = config(
        r#","match":[{"header":"x-geo","one_of":["de","fr"]},{"header":"user-agent","prefix":"Moz"}]"#,
        100.0,
    );
    let d = Decider::new(&c);
    let mut rng = Rng::new(1);
    let cases = [
        (values(&[Some("de"), Some("Mozilla/5")]), Variant::Shadow),
        (values(&[Some("fr"), Some("Moz")]), Variant::Shadow),
        (values(&[Some("it"), Some("Mozilla/5")]), Variant::Primary),
        (values(&[Some("de"), Some("curl")]), Variant::Primary),
        (values(&[None, Some("Mozilla/5")]), Variant::Primary),
        (values(&[Some("DE"), Some("Mozilla/5")]), Variant::Primary),
        (values(&[Some("de")]), Variant::Primary),
    ];
    for (v, want) in cases {
        assert_eq!(d.decide(&v, &mut rng), want, "{v:?}");
    }
}

#[test]
fn cookies_are_parsed_without_panicking() {
    assert_eq!(cookie_value(b"uid=7", b"uid"), Some(&b"7"[..]));
    assert_eq!(cookie_value(b" a = 1 ;\tuid = 8 ", b"uid"), Some(&b"8"[..]));
    assert_eq!(cookie_value(b"xuid=1; uid=2", b"uid"), Some(&b"2"[..]));
    assert_eq!(cookie_value(b"uid=\"", b"uid"), Some(&b"\""[..]));
    assert_eq!(cookie_value(b"uid=\"\"", b"uid"), Some(&b""[..]));
    assert_eq!(cookie_value(b"uid", b"uid"), None);
    assert_eq!(cookie_value(b"", b"uid"), None);
    assert_eq!(cookie_value(b"=", b""), Some(&b""[..]));
}

#[test]
fn an_empty_sticky_key_counts_as_missing() {
    let d = Decider::new(&config(r#","sticky":{"header":"x-user"}"#, 50.0));
    assert_eq!(d.sticky_key(&values(&[Some("")])), None);
    assert_eq!(d.sticky_key(&values(&[Some("u1")])), Some(&b"u1"[..]));
}

#[test]
fn tiny_percents_have_nonzero_thresholds() {
    for p in [0.01, 0.001, 1e-9] {
        match Threshold::from_percent(p) {
            Threshold::Below(t) => {
                let share = t as f64 / 18_446_744_073_709_551_616.0 * 100.0;
                assert!((share - p).abs() / p < 1e-6, "{p}: {share}");
            }
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[test]
fn the_sticky_hash_is_fixed() {
    // Pinned so that a change of hash (which would move users between variants) is noticed.
    assert_eq!(
        sticky_hash(salt_for("cart"), b"user-1"),
        sticky_hash(salt_for("cart"), b"user-1")
    );
    assert_ne!(
        sticky_hash(salt_for("cart"), b"user-1"),
        sticky_hash(salt_for("shop"), b"user-1")
    );
    assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
}

/// The share of `n` draws the decider sends to the shadow, each request with a fresh key.
fn shadow_share(d: &Decider, n: u32, seed: u64, sticky: bool) -> f64 {
    let mut rng = Rng::new(seed);
    let mut hits = 0u32;
    for i in 0..n {
        let v = if sticky {
            vec![Some(format!("user-{seed}-{i}").into_bytes())]
        } else {
            vec![]
        };
        if d.decide(&v, &mut rng) == Variant::Shadow {
            hits += 1;
        }
    }
    f64::from(hits) / f64::from(n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn share_converges(percent in 0.5f64..99.5, seed in any::<u64>(), sticky in any::<bool>()) {
        let extra = if sticky { r#","sticky":{"header":"x-user"}"# } else { "" };
        let d = Decider::new(&config(extra, percent));
        let n = 40_000;
        let p = percent / 100.0;
        let sd = (p * (1.0 - p) / f64::from(n)).sqrt();
        let share = shadow_share(&d, n, seed, sticky);
        prop_assert!((share - p).abs() < 5.0 * sd, "share {share} for {p}");
    }

    #[test]
    fn sticky_is_stable(percent in 0.0f64..=100.0, key in proptest::collection::vec(1u8..=255, 1..40),
                        seed_a in any::<u64>(), seed_b in any::<u64>()) {
        let d = Decider::new(&config(r#","sticky":{"header":"x-user"}"#, percent));
        let v = vec![Some(key)];
        // Two VMs with different PRNG seeds agree, and so does a rebuilt decider.
        let a = d.decide(&v, &mut Rng::new(seed_a));
        let b = Decider::new(&config(r#","sticky":{"header":"x-user"}"#, percent)).decide(&v, &mut Rng::new(seed_b));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn non_matching_is_never_chosen(value in proptest::collection::vec(any::<u8>(), 0..12), seed in any::<u64>()) {
        prop_assume!(value != b"de");
        let d = Decider::new(&config(r#","match":[{"header":"x-geo","equals":"de"}]"#, 100.0));
        let mut rng = Rng::new(seed);
        prop_assert_eq!(d.decide(&[Some(value)], &mut rng), Variant::Primary);
        prop_assert_eq!(d.decide::<Vec<u8>>(&[None], &mut rng), Variant::Primary);
    }

    #[test]
    fn zero_never_and_hundred_always(seed in any::<u64>(), key in proptest::option::of(any::<Vec<u8>>())) {
        let mut rng = Rng::new(seed);
        let zero = Decider::new(&config(r#","sticky":{"header":"x-user"}"#, 0.0));
        let all = Decider::new(&config(r#","sticky":{"header":"x-user"}"#, 100.0));
        for _ in 0..100 {
            prop_assert_eq!(zero.decide(std::slice::from_ref(&key), &mut rng), Variant::Primary);
            prop_assert_eq!(all.decide(std::slice::from_ref(&key), &mut rng), Variant::Shadow);
        }
    }

    #[test]
    fn cookie_parsing_never_panics(header in any::<Vec<u8>>(), name in any::<Vec<u8>>()) {
        if let Some(v) = cookie_value(&header, &name) {
            prop_assert!(v.len() <= header.len());
        }
    }
}
