//! The proxy-wasm ABI's serialized header maps: a little-endian `u32` count, then a `u32` name
//! length and a `u32` value length per pair, then each name and each value followed by a NUL.
//! The filter reads a request's headers in one host call in this form and sends mirror copies in
//! it. Decoding borrows from the buffer and refuses anything malformed rather than guessing.

/// Encodes `pairs` as the host expects them (for example the headers of a callout).
///
/// ```
/// use doppel_filter::pairs::{decode, encode};
/// let bytes = encode(&[(":method", b"GET".as_slice()), ("x-a", b"1")]);
/// assert_eq!(decode(&bytes), Some(vec![(b":method".as_slice(), b"GET".as_slice()), (b"x-a".as_slice(), b"1".as_slice())]));
/// ```
pub fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.as_ref().len() + v.as_ref().len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&len_u32(n.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.as_ref().len()).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The pairs in `bytes`, borrowed; `None` if the buffer is not a well-formed map (a length that
/// runs past the end, a missing NUL, or bytes left over). An empty buffer is an empty map.
pub fn decode(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    let sizes_end = count.checked_mul(8)?.checked_add(4)?;
    if sizes_end > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = sizes_end;
    for i in 0..count {
        let name_len = usize::try_from(read_u32(bytes, 4 + 8 * i)?).ok()?;
        let value_len = usize::try_from(read_u32(bytes, 8 + 8 * i)?).ok()?;
        let name = take(bytes, &mut at, name_len)?;
        let value = take(bytes, &mut at, value_len)?;
        pairs.push((name, value));
    }
    (at == bytes.len()).then_some(pairs)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// `len` bytes at `*at` followed by a NUL; advances past the NUL.
fn take<'b>(bytes: &'b [u8], at: &mut usize, len: usize) -> Option<&'b [u8]> {
    let end = at.checked_add(len)?;
    let field = bytes.get(*at..end)?;
    if bytes.get(end) != Some(&0) {
        return None;
    }
    *at = end + 1;
    Some(field)
}

/// The value of the first pair named `name` (names compare byte for byte: the host gives them
/// in lower case).
pub fn find<'b>(pairs: &[(&'b [u8], &'b [u8])], name: &str) -> Option<&'b [u8]> {
    pairs
        .iter()
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_map_round_trips_and_an_empty_buffer_is_empty() {
        let none: [(&str, &[u8]); 0] = [];
        assert_eq!(encode(&none), vec![0, 0, 0, 0]);
        assert_eq!(decode(&encode(&none)), Some(vec![]));
        assert_eq!(decode(&[]), Some(vec![]));
    }

    #[test]
    fn malformed_maps_are_refused() {
        let good = encode(&[("a", b"1".as_slice())]);
        // Truncated anywhere.
        for cut in 1..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        // A missing NUL after the value.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = b'x';
        assert_eq!(decode(&bad), None);
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), None);
        // A count far beyond the buffer must not allocate or overflow.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn find_returns_the_first_value_of_a_name() {
        let bytes = encode(&[("x-a", b"1".as_slice()), ("x-b", b""), ("x-a", b"2")]);
        let pairs = decode(&bytes).unwrap();
        assert_eq!(find(&pairs, "x-a"), Some(b"1".as_slice()));
        assert_eq!(find(&pairs, "x-b"), Some(b"".as_slice()));
        assert_eq!(find(&pairs, "x-c"), None);
    }

    proptest! {
        #[test]
        fn any_map_round_trips(pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..40)),
            0..20,
        )) {
            let bytes = encode(&pairs);
            let back: Vec<(Vec<u8>, Vec<u8>)> = decode(&bytes)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect();
            prop_assert_eq!(back, pairs);
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
