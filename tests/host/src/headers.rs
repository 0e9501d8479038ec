//! A header map with Envoy's semantics: lower-case keys, insertion order, repeated keys allowed,
//! `get` answers the first value, `set` replaces the first value and drops the others.

use std::fmt;

/// An ordered multi-map of lower-case header names to byte values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of `pairs`, names lower-cased, in the order given.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        let mut map = Self::new();
        for (key, value) in pairs {
            map.add(key.as_ref(), value.as_ref());
        }
        map
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text (lossy), if any.
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a value (Envoy's `addCopy`).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Replaces the first value of `name` and removes the others, or appends it (`setCopy`).
    pub fn set(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        match self.entries.iter().position(|(k, _)| *k == name) {
            Some(first) => {
                self.entries[first].1 = value.to_vec();
                let mut index = 0;
                self.entries.retain(|(k, _)| {
                    index += 1;
                    index - 1 == first || *k != name
                });
            }
            None => self.entries.push((name, value.to_vec())),
        }
    }

    /// Removes every value of `name`; removing an absent name is not an error.
    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != name);
    }

    /// Number of entries (a repeated name counts once per value).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The entries in the ABI's pairs encoding.
    pub fn encode(&self) -> Vec<u8> {
        super::abi::encode_pairs(
            self.entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice())),
        )
    }

    /// Sum of name and value lengths (Envoy's `byteSize`).
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.entries
                    .iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(v))),
            )
            .finish()
    }
}
