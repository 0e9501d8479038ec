//! The proxy-wasm ABI's serialized header maps: a little-endian `u32` count, then a `u32` name
//! length and a `u32` value length per pair, then each name and each value followed by a NUL.
//! The filter reads a request's headers in one host call in this form and sends mirror copies in
//! it. Reading borrows from the buffer and refuses anything malformed rather than guessing.

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

/// A serialized map, checked once, read in place: lookups and iteration walk the buffer and
/// never allocate (a request's headers are read this way on every request).
#[derive(Clone, Copy, Debug)]
pub struct Map<'b> {
    bytes: &'b [u8],
    count: usize,
}

impl<'b> Map<'b> {
    /// The map in `bytes`; `None` if it is not well formed (a length that runs past the end, a
    /// missing NUL, or bytes left over). An empty buffer is an empty map.
    pub fn new(bytes: &'b [u8]) -> Option<Map<'b>> {
        if bytes.is_empty() {
            return Some(Map { bytes, count: 0 });
        }
        let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
        let sizes_end = count.checked_mul(8)?.checked_add(4)?;
        if sizes_end > bytes.len() {
            return None;
        }
        let mut at = sizes_end;
        for i in 0..count {
            for field in 0..2 {
                let len = usize::try_from(read_u32(bytes, 4 + 8 * i + 4 * field)?).ok()?;
                take(bytes, &mut at, len)?;
            }
        }
        (at == bytes.len()).then_some(Map { bytes, count })
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + use<'b> {
        let bytes = self.bytes;
        let mut at = 4 + 8 * self.count;
        (0..self.count).map(move |i| {
            // Checked by `new`: every length and NUL is where it should be.
            let mut field = |f: usize| {
                let len = read_u32(bytes, 4 + 8 * i + 4 * f).unwrap_or(0) as usize;
                let value = bytes.get(at..at + len).unwrap_or_default();
                at += len + 1;
                value
            };
            let name = field(0);
            (name, field(1))
        })
    }

    /// The value of the first pair named `name` (names compare byte for byte: the host gives
    /// them in lower case).
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// For each of `names`, the value of its first pair, into `found` (same length), in one
    /// pass over the map.
    ///
    /// ```
    /// use doppel_filter::pairs::{encode, Map};
    /// let bytes = encode(&[("a", b"1".as_slice()), ("b", b"2"), ("a", b"3")]);
    /// let mut found = [None; 3];
    /// Map::new(&bytes).unwrap().lookup(&["a", "c", "b"], &mut found);
    /// assert_eq!(found, [Some(b"1".as_slice()), None, Some(b"2".as_slice())]);
    /// ```
    pub fn lookup(&self, names: &[&str], found: &mut [Option<&'b [u8]>]) {
        found.fill(None);
        for (name, value) in self.iter() {
            for (wanted, slot) in names.iter().zip(found.iter_mut()) {
                if slot.is_none() && wanted.as_bytes() == name {
                    *slot = Some(value);
                }
            }
        }
    }
}

/// The pairs in `bytes`, borrowed, in order; `None` if malformed (see [`Map::new`]).
pub fn decode(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    Map::new(bytes).map(|m| m.iter().collect())
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
    fn get_returns_the_first_value_of_a_name() {
        let bytes = encode(&[("x-a", b"1".as_slice()), ("x-b", b""), ("x-a", b"2")]);
        let map = Map::new(&bytes).unwrap();
        assert_eq!(map.get("x-a"), Some(b"1".as_slice()));
        assert_eq!(map.get("x-b"), Some(b"".as_slice()));
        assert_eq!(map.get("x-c"), None);
        assert_eq!(Map::new(&[]).unwrap().get("x-a"), None);
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
        fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(map) = Map::new(&bytes) {
                let _ = map.get("x");
                let _ = map.iter().count();
            }
        }
    }
}
