//! Choosing a variant for a request: pure, deterministic given its inputs, no host calls.
//!
//! A request is *eligible* when every matcher holds. An eligible request is chosen for the shadow
//! when its draw falls below the threshold for the configured percent (of the requests it sees:
//! in a pool, `pool_percent`, the percent is scaled to the pool). The draw is a hash of the
//! user's sticky key (salted with the service name, so it is the same in every VM and every
//! restart) or, without a key, the next number of a fast PRNG that lives in VM memory.
//!
//! The threshold is a 64-bit fraction, so 0.01 % and smaller shares are honoured exactly; 0 never
//! chooses anyone and 100 chooses every eligible request.

use crate::config::{FilterConfig, MatchTest, Sticky};
use crate::names::Variant;

/// The request headers a decision needs, in the order [`Decider::decide`] expects their values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needed {
    /// Lower-case header names, each once.
    pub headers: Vec<String>,
}

impl Needed {
    fn index_of(&mut self, name: &str) -> usize {
        match self.headers.iter().position(|h| h == name) {
            Some(i) => i,
            None => {
                self.headers.push(name.to_string());
                self.headers.len() - 1
            }
        }
    }
}

/// A matcher compiled against [`Needed`]: the index of its header's value and the test.
#[derive(Clone, Debug)]
struct CompiledMatcher {
    value: usize,
    test: MatchTest,
}

/// Where the sticky key is found among the needed values.
#[derive(Clone, Debug)]
enum StickyKey {
    Header(usize),
    Cookie { value: usize, name: Vec<u8> },
}

/// The share of eligible requests chosen, as a comparison on a uniform 64-bit draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// Nobody is chosen.
    Never,
    /// Every eligible request is chosen.
    Always,
    /// A draw strictly below this value is chosen.
    Below(u64),
}

impl Threshold {
    /// The threshold for `percent` (clamped to [0, 100]).
    ///
    /// ```
    /// use doppel_filter::decide::Threshold;
    /// assert_eq!(Threshold::from_percent(0.0), Threshold::Never);
    /// assert_eq!(Threshold::from_percent(100.0), Threshold::Always);
    /// assert_eq!(Threshold::from_percent(50.0), Threshold::Below(1 << 63));
    /// ```
    pub fn from_percent(percent: f64) -> Threshold {
        if percent.is_nan() || percent <= 0.0 {
            Threshold::Never
        } else if percent >= 100.0 {
            Threshold::Always
        } else {
            // 2^64 * percent / 100; `as` saturates, and the value is below 2^64 here.
            let below = (percent / 100.0 * 18_446_744_073_709_551_616.0) as u64;
            if below == 0 {
                Threshold::Never
            } else {
                Threshold::Below(below)
            }
        }
    }

    /// Whether a draw is chosen.
    pub fn chooses(self, draw: u64) -> bool {
        match self {
            Threshold::Never => false,
            Threshold::Always => true,
            Threshold::Below(t) => draw < t,
        }
    }
}

/// Decides primary or shadow for each request of one config.
#[derive(Clone, Debug)]
pub struct Decider {
    needed: Needed,
    matchers: Vec<CompiledMatcher>,
    sticky: Option<StickyKey>,
    threshold: Threshold,
    salt: u64,
}

impl Decider {
    /// Compiles the decision for `config`. In `off` mode, or at 0 %, nobody is chosen and no
    /// header is needed (the share chosen, [`FilterConfig::shares_seen`], is 0 then).
    pub fn new(config: &FilterConfig) -> Decider {
        let threshold = Threshold::from_percent(config.shares_seen().0);
        let mut needed = Needed::default();
        let mut matchers = Vec::new();
        let mut sticky = None;
        if threshold != Threshold::Never {
            for m in &config.matchers {
                matchers.push(CompiledMatcher {
                    value: needed.index_of(m.header.as_str()),
                    test: m.test.clone(),
                });
            }
            // At 100 % the key does not change the outcome: do not read it.
            if threshold != Threshold::Always {
                sticky = config.sticky.as_ref().map(|s| match s {
                    Sticky::Header(h) => StickyKey::Header(needed.index_of(h.as_str())),
                    Sticky::Cookie(c) => StickyKey::Cookie {
                        value: needed.index_of("cookie"),
                        name: c.as_str().as_bytes().to_vec(),
                    },
                });
            }
        }
        Decider {
            needed,
            matchers,
            sticky,
            threshold,
            salt: salt_for(config.service.as_str()),
        }
    }

    /// The headers whose values [`Decider::decide`] takes, in order.
    pub fn needed(&self) -> &[String] {
        &self.needed.headers
    }

    /// Whether anyone can be chosen at all.
    pub fn can_choose(&self) -> bool {
        self.threshold != Threshold::Never
    }

    /// Whether every matcher holds for these header values (aligned with [`Decider::needed`]).
    pub fn eligible<V: AsRef<[u8]>>(&self, values: &[Option<V>]) -> bool {
        self.matchers.iter().all(|m| {
            let Some(Some(value)) = values.get(m.value) else {
                return false;
            };
            let value = value.as_ref();
            match &m.test {
                MatchTest::Equals(want) => value == want.as_bytes(),
                MatchTest::Prefix(p) => value.starts_with(p.as_bytes()),
                MatchTest::OneOf(list) => list.iter().any(|w| value == w.as_bytes()),
            }
        })
    }

    /// The sticky key of a request, if configured and present (an empty key counts as absent).
    pub fn sticky_key<'v, V: AsRef<[u8]>>(&self, values: &'v [Option<V>]) -> Option<&'v [u8]> {
        let key = match self.sticky.as_ref()? {
            StickyKey::Header(i) => values.get(*i)?.as_ref()?.as_ref(),
            StickyKey::Cookie { value, name } => {
                cookie_value(values.get(*value)?.as_ref()?.as_ref(), name)?
            }
        };
        (!key.is_empty()).then_some(key)
    }

    /// The variant for a request, given the values of [`Decider::needed`] (`None`: missing).
    /// The PRNG is used only when there is no sticky key.
    pub fn decide<V: AsRef<[u8]>>(&self, values: &[Option<V>], rng: &mut Rng) -> Variant {
        if self.threshold == Threshold::Never || !self.eligible(values) {
            return Variant::Primary;
        }
        let draw = match self.sticky_key(values) {
            Some(key) => sticky_hash(self.salt, key),
            None if self.threshold == Threshold::Always => 0,
            None => rng.next_u64(),
        };
        if self.threshold.chooses(draw) {
            Variant::Shadow
        } else {
            Variant::Primary
        }
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b="2"`), quotes removed. Malformed
/// pairs are skipped; the first pair with that name wins.
///
/// ```
/// use doppel_filter::decide::cookie_value;
/// assert_eq!(cookie_value(b"a=1; uid=\"u42\"; b", b"uid"), Some(&b"u42"[..]));
/// assert_eq!(cookie_value(b";;=;uid", b"uid"), None);
/// ```
pub fn cookie_value<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (k, v) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        if k != name {
            return None;
        }
        Some(match v {
            [b'"', inner @ .., b'"'] => inner,
            _ => v,
        })
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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `state`.
pub fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        state ^= u64::from(*b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// A bijective 64-bit finaliser (MurmurHash3's fmix64): spreads every input bit over the output.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The salt of a service: sticky keys hash differently per service.
pub fn salt_for(service: &str) -> u64 {
    fnv1a(fnv1a(FNV_OFFSET, service.as_bytes()), &[0xff])
}

/// The draw for a sticky key: the same in every VM, worker and restart.
pub fn sticky_hash(salt: u64, key: &[u8]) -> u64 {
    mix64(fnv1a(salt, key))
}

/// A small, fast PRNG (SplitMix64) kept in VM memory; seeded once per VM. Only 64-bit
/// arithmetic: wasm32 has no 64x64-bit to 128-bit multiply, which a generator like wyrand
/// needs (a library call per draw).
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next uniformly distributed 64-bit number.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests;
