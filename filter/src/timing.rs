//! Reading durations out of an upstream's `Server-Timing` response header
//! (`db;dur=12.5, cache;desc="hit";dur=0.3`). Input is untrusted: anything malformed is skipped,
//! nothing panics, and only the names asked for are returned.

/// The longest duration accepted, in microseconds (one hour); larger values are ignored.
pub const MAX_DURATION_US: u64 = 3_600_000_000;

/// For each name in `wanted`, the `dur` of its first entry in `header`, in microseconds.
///
/// Names compare ASCII case-insensitively; a `dur` that is not a finite, non-negative number of
/// milliseconds (at most an hour) leaves that entry out.
///
/// ```
/// use doppel_filter::timing::durations_us;
/// let got = durations_us(b"db;dur=12.5, cache;desc=\"a,b\";dur=0.3, x;dur=oops", &["cache", "db", "x"]);
/// assert_eq!(got, [Some(300), Some(12_500), None]);
/// ```
pub fn durations_us<S: AsRef<str>>(header: &[u8], wanted: &[S]) -> Vec<Option<u64>> {
    let mut out = vec![None; wanted.len()];
    for entry in split_outside_quotes(header, b',') {
        let mut params = split_outside_quotes(entry, b';');
        let Some(name) = params.next().map(trim) else {
            continue;
        };
        let Some(slot) = wanted
            .iter()
            .position(|w| w.as_ref().as_bytes().eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if out[slot].is_some() {
            continue;
        }
        out[slot] = params.find_map(|p| {
            let p = trim(p);
            let eq = p.iter().position(|b| *b == b'=')?;
            if !trim(&p[..eq]).eq_ignore_ascii_case(b"dur") {
                return None;
            }
            parse_ms_as_us(unquote(trim(&p[eq + 1..])))
        });
    }
    out
}

fn parse_ms_as_us(text: &[u8]) -> Option<u64> {
    let ms: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    if !ms.is_finite() || ms < 0.0 {
        return None;
    }
    let us = (ms * 1000.0).round();
    (us <= MAX_DURATION_US as f64).then_some(us as u64)
}

/// Splits on `sep`, but not inside a double-quoted string (with backslash escapes).
fn split_outside_quotes(input: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, b) in s.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && *b == b'\\' {
                escaped = true;
            } else if *b == b'"' {
                quoted = !quoted;
            } else if !quoted && *b == sep {
                rest = Some(&s[i + 1..]);
                return Some(&s[..i]);
            }
        }
        rest = None;
        Some(s)
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_named_durations() {
        let h = b"cache;desc=\"Cache Read\";dur=23.2, db;dur=53, app;dur=47.2";
        assert_eq!(
            durations_us(h, &["db", "cache", "missing"]),
            [Some(53_000), Some(23_200), None]
        );
    }

    #[test]
    fn tolerates_odd_but_valid_forms() {
        assert_eq!(durations_us(b"DB ; DUR = \"7\"", &["db"]), [Some(7_000)]);
        assert_eq!(durations_us(b"db;dur=1, db;dur=2", &["db"]), [Some(1_000)]);
        assert_eq!(durations_us(b"db;dur=0", &["db"]), [Some(0)]);
        assert_eq!(durations_us(b"miss, db;dur=0.0004", &["db"]), [Some(0)]);
    }

    #[test]
    fn ignores_invalid_input() {
        for h in [
            &b"db;dur=-1"[..],
            b"db;dur=NaN",
            b"db;dur=inf",
            b"db;dur=1e300",
            b"db;dur=",
            b"db;dur",
            b"db",
            b";dur=5",
            b"\"db;dur=5",
            b"d\"b\";dur=5",
            b"db;dur=\xff",
        ] {
            assert_eq!(
                durations_us(h, &["db"]),
                [None],
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(header in any::<Vec<u8>>()) {
            for d in durations_us(&header, &["db", "cache"]).into_iter().flatten() {
                prop_assert!(d <= MAX_DURATION_US);
            }
        }

        #[test]
        fn finds_what_was_written(ms in 0u32..1_000_000, noise in "[a-z]{1,8}") {
            let h = format!("{noise};dur=1, db;desc=\"x, y\";dur={ms}");
            let want = if noise == "db" { 1_000 } else { u64::from(ms) * 1000 };
            prop_assert_eq!(durations_us(h.as_bytes(), &["db"]), vec![Some(want)]);
        }
    }
}
