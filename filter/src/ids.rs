//! Request ids: 128 bits written as 32 lower-case hex digits.
//!
//! Each VM draws a 128-bit random seed once (WASI `random_get` in the filter). The high 64 bits
//! of every id are the VM's random prefix; the low 64 bits are a bijective mix of a per-VM
//! counter, so ids never repeat within a VM (for 2^64 ids), and two VMs (two workers, or a
//! restart) share a prefix only with probability 2^-64.

use crate::decide::mix64;

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
        for (i, slot) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (124 - 4 * i)) & 0xf;
            *slot = DIGITS[nibble as usize];
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
