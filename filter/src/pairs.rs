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
        let sizes = bytes.get(4..sizes_end)?;
        let mut at = sizes_end;
        for pair in sizes.as_chunks::<8>().0 {
            let (name, value) = lengths(pair);
            // The name, its NUL, the value, its NUL.
            let name_end = at.checked_add(name)?;
            let value_end = name_end.checked_add(1)?.checked_add(value)?;
            if bytes.get(name_end) != Some(&0) || bytes.get(value_end) != Some(&0) {
                return None;
            }
            at = value_end + 1;
        }
        (at == bytes.len()).then_some(Map { bytes, count })
    }

    /// The table of lengths (8 bytes per pair) and where the first name starts.
    fn sizes(&self) -> (&'b [[u8; 8]], usize) {
        let end = 4 + 8 * self.count;
        let table = self.bytes.get(4..end).unwrap_or_default();
        (table.as_chunks::<8>().0, end)
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + use<'b> {
        let bytes = self.bytes;
        let (sizes, mut at) = self.sizes();
        sizes.iter().map(move |pair| {
            // Checked by `new`: every length and NUL is where it should be.
            let (name_len, value_len) = lengths(pair);
            let name = bytes.get(at..at + name_len).unwrap_or_default();
            at += name_len + 1;
            let value = bytes.get(at..at + value_len).unwrap_or_default();
            at += value_len + 1;
            (name, value)
        })
    }

    /// The value of the first pair named `name` (names compare byte for byte: the host gives
    /// them in lower case).
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// For each of `names`, the value of its first pair, into `found` (as long as `names`), in
    /// one pass over the map. A pair whose name has none of the wanted lengths is passed over
    /// without reading it: most of a request's headers are.
    ///
    /// ```
    /// use doppel_filter::pairs::{encode, Map, Names};
    /// let bytes = encode(&[("a", b"1".as_slice()), ("bb", b"2"), ("a", b"3")]);
    /// let mut found = [None; 3];
    /// Map::new(&bytes).unwrap().lookup(&Names::new(["a", "c", "bb"]), &mut found);
    /// assert_eq!(found, [Some(b"1".as_slice()), None, Some(b"2".as_slice())]);
    /// ```
    pub fn lookup(&self, names: &Names, found: &mut [Option<&'b [u8]>]) {
        found.fill(None);
        let bytes = self.bytes;
        let (sizes, mut at) = self.sizes();
        for pair in sizes {
            let (name_len, value_len) = lengths(pair);
            if names.may_hold(name_len) {
                let name = bytes.get(at..at + name_len).unwrap_or_default();
                let value_at = at + name_len + 1;
                for (wanted, slot) in names.names.iter().zip(found.iter_mut()) {
                    if slot.is_none() && same(wanted.as_bytes(), name) {
                        *slot = bytes.get(value_at..value_at + value_len);
                    }
                }
            }
            at += name_len + value_len + 2;
        }
    }
}

/// Names to look up in a [`Map`], prepared once: with the set of their lengths, which rules out
/// most other names without comparing a byte.
///
/// ```
/// use doppel_filter::pairs::Names;
/// let names = Names::new(["x-doppel-id", "cookie"]);
/// assert_eq!(names.len(), 2);
/// assert_eq!(names.iter().collect::<Vec<_>>(), ["x-doppel-id", "cookie"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    names: Vec<String>,
    /// Bit `n` is set when a name is `n` bytes long (bit 63: 63 bytes or longer).
    lengths: u64,
}

impl Names {
    /// The names, in the order [`Map::lookup`] fills its answers.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Names {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let lengths = names.iter().fold(0, |bits, n| bits | length_bit(n.len()));
        Names { names, lengths }
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether a name `len` bytes long may be one of these.
    fn may_hold(&self, len: usize) -> bool {
        self.lengths & length_bit(len) != 0
    }
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The name and value lengths of one entry of the table of lengths.
fn lengths(pair: &[u8; 8]) -> (usize, usize) {
    let [n0, n1, n2, n3, v0, v1, v2, v3] = *pair;
    (
        u32::from_le_bytes([n0, n1, n2, n3]) as usize,
        u32::from_le_bytes([v0, v1, v2, v3]) as usize,
    )
}

/// Whether two names are equal, compared eight bytes at a time (`==` on slices is a byte loop
/// in wasm32's `memcmp`; header names are short).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    a_words
        .iter()
        .zip(b_words)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_rest.iter().zip(b_rest).all(|(x, y)| x == y)
}

/// The pairs in `bytes`, borrowed, in order; `None` if malformed (see [`Map::new`]).
pub fn decode(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    Map::new(bytes).map(|m| m.iter().collect())
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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

    #[test]
    fn lookup_finds_the_first_value_of_each_name_whatever_its_length() {
        let long = "x".repeat(70);
        let longer = "x".repeat(80);
        let bytes = encode(&[
            ("ab", b"1".as_slice()),
            ("ac", b"2"),
            (long.as_str(), b"long"),
            ("ab", b"3"),
            (longer.as_str(), b"longer"),
            ("", b"empty"),
        ]);
        let map = Map::new(&bytes).unwrap();
        // Same length as a present name but absent; two names of 63 bytes or more; a name twice.
        let names = Names::new(["ad", "ac", longer.as_str(), long.as_str(), "ab", "", "ab"]);
        let mut found = [Some(b"stale".as_slice()); 7];
        map.lookup(&names, &mut found);
        let want: [Option<&[u8]>; 7] = [
            None,
            Some(b"2"),
            Some(b"longer"),
            Some(b"long"),
            Some(b"1"),
            Some(b"empty"),
            Some(b"1"),
        ];
        assert_eq!(found, want);
        // Fewer slots than names: only those are filled.
        let mut two = [None; 2];
        map.lookup(&names, &mut two);
        assert_eq!(two, [None, Some(b"2".as_slice())]);
    }

    proptest! {
        #[test]
        fn same_is_equality(a in proptest::collection::vec(0u8..3, 0..20), b in proptest::collection::vec(0u8..3, 0..20)) {
            prop_assert_eq!(same(&a, &b), a == b);
            prop_assert!(same(&a, &a.clone()));
        }

        #[test]
        fn lookup_agrees_with_get(
            pairs in proptest::collection::vec(("[a-c]{0,3}", "[a-z]{0,4}"), 0..12),
            names in proptest::collection::vec("[a-c]{0,3}", 0..6),
        ) {
            let bytes = encode(&pairs);
            let map = Map::new(&bytes).unwrap();
            let mut found = vec![None; names.len()];
            map.lookup(&Names::new(names.clone()), &mut found);
            for (name, value) in names.iter().zip(found) {
                prop_assert_eq!(value, map.get(name));
            }
        }

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
