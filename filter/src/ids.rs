//! Request ids: 128 bits written as 32 lower-case hex digits.
//!
//! Each VM draws a 128-bit random seed once (WASI `random_get` in the filter). The high 64 bits
//! of every id are the VM's random prefix; the low 64 bits are a bijective mix of a per-VM
//! counter, so ids never repeat within a VM (for 2^64 ids), and two VMs (two workers, or a
//! restart) share a prefix only with probability 2^-64.

use crate::decide::mix64;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A doppel request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u128);

impl Id {
    /// The id as 32 lower-case hex digits.
    ///
    /// ```
    /// use doppel_filter::ids::Id;
    /// assert_eq!(Id(0xab).hex().as_str(), "000000000000000000000000000000ab");
    /// ```
    pub fn hex(self) -> IdHex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        // Half by half: 64-bit shifts (a 128-bit shift is a library call on wasm32).
        let halves = [(self.0 >> 64) as u64, self.0 as u64];
        for (half, digits) in halves.into_iter().zip(out.chunks_exact_mut(16)) {
            for (i, slot) in digits.iter_mut().enumerate() {
                *slot = DIGITS[((half >> (60 - 4 * i)) & 0xf) as usize];
            }
        }
        IdHex(out)
    }
}

/// An id rendered as hex, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdHex([u8; 32]);

impl IdHex {
    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The 32 hex digits as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Makes ids for one VM.
#[derive(Clone, Debug)]
pub struct IdGen {
    prefix: u64,
    base: u64,
    counter: u64,
}

impl IdGen {
    /// A generator from a 16-byte random seed drawn once per VM.
    pub fn new(seed: [u8; 16]) -> IdGen {
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&seed[..8]);
        lo.copy_from_slice(&seed[8..]);
        IdGen {
            prefix: u64::from_le_bytes(hi),
            base: u64::from_le_bytes(lo),
            counter: 0,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> Id {
        self.counter = self.counter.wrapping_add(1);
        let low = mix64(self.base.wrapping_add(self.counter));
        Id((u128::from(self.prefix) << 64) | u128::from(low))
    }
}

/// Hashes the small distinct integers the filter keys its maps by (context ids, callout tokens,
/// comparison sequence numbers) with one multiplication (Fibonacci hashing): a keyed hash would
/// only cost time on every lookup, and no key comes from a client.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
        self.0 = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by such integers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_million_ids_from_several_vms_are_distinct_hex() {
        let mut seen = HashSet::new();
        for vm in 0u8..4 {
            let mut seed = [vm; 16];
            seed[0] = vm.wrapping_mul(77);
            let mut g = IdGen::new(seed);
            for _ in 0..250_000 {
                let hex = g.next_id().hex();
                assert!(
                    hex.as_bytes()
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
                assert!(seen.insert(hex.0));
            }
        }
        assert_eq!(seen.len(), 1_000_000);
    }

    #[test]
    fn id_maps_keep_every_key_sequential_or_sparse() {
        let mut map: IdMap<u64, u64> = IdMap::default();
        let keys: Vec<u64> = (0..5_000).chain((1..=5_000).map(|i| i << 40 | 7)).collect();
        for &k in &keys {
            assert!(map.insert(k, k ^ 1).is_none(), "{k} twice");
        }
        assert_eq!(map.len(), keys.len());
        for &k in &keys {
            assert_eq!(map.remove(&k), Some(k ^ 1));
        }
        assert!(map.is_empty());
    }

    #[test]
    fn hex_is_big_endian_and_padded() {
        assert_eq!(
            Id(u128::MAX).hex().as_str(),
            "ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(
            Id(0x0123_4567_89ab_cdef_0011_2233_4455_6677).hex().as_str(),
            "0123456789abcdef0011223344556677"
        );
    }
}
