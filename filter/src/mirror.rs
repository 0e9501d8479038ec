//! Mirror mode, the pure part: which requests may be copied, the copy's headers, and the
//! bookkeeping that compares the primary's answer with the shadow's.
//!
//! The request's HTTP context decides and collects; the copy is dispatched and answered in the
//! root context, which outlives the request (a callout answer sent to a finished HTTP context
//! would be dropped). Both sides report to one [`Book`] per VM, keyed by a per-VM sequence
//! number; whichever answer comes second completes the comparison. The book holds at most
//! `max_in_flight` entries, which bounds both the copies in flight and the memory they use.

use crate::config::{CONTROL_HEADERS, MirrorConfig};
use crate::decide::fnv1a;
use crate::ids::IdMap;

/// Why a chosen request is or is not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Safety {
    /// Copy it; wait for a body of exactly this many bytes first (0: no body).
    Copy {
        /// The body length announced by `content-length` (0 when the request has no body).
        body_len: u64,
    },
    /// The method is not on the allow-list.
    SkipMethod,
    /// The body is of unknown length or longer than `max_body_bytes`.
    SkipBody,
}

/// Decides whether a chosen request may be copied, from its method, its `content-length`
/// header (if any) and whether its headers ended the stream (no body at all).
///
/// ```
/// use doppel_filter::config::{ClusterName, MirrorConfig};
/// use doppel_filter::mirror::{safety, Safety};
/// let cfg = MirrorConfig::new(ClusterName::new("shadow").unwrap());
/// assert_eq!(safety(&cfg, b"GET", None, true), Safety::Copy { body_len: 0 });
/// assert_eq!(safety(&cfg, b"POST", Some(b"0"), false), Safety::SkipMethod);
/// assert_eq!(safety(&cfg, b"GET", None, false), Safety::SkipBody);
/// ```
pub fn safety(
    cfg: &MirrorConfig,
    method: &[u8],
    content_length: Option<&[u8]>,
    end_of_stream: bool,
) -> Safety {
    if !cfg.methods.iter().any(|m| m.as_str().as_bytes() == method) {
        return Safety::SkipMethod;
    }
    if end_of_stream {
        return Safety::Copy { body_len: 0 };
    }
    let Some(len) = content_length.and_then(parse_length) else {
        return Safety::SkipBody;
    };
    if len > cfg.max_body_bytes.get() {
        return Safety::SkipBody;
    }
    Safety::Copy { body_len: len }
}

/// A `content-length` value: ASCII digits only, at most 19 of them.
fn parse_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Request headers never forwarded on a copy: hop-by-hop headers, and the ones the copy sets.
const DROPPED_ON_COPY: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
];

/// The headers of a copy: the request's own, minus hop-by-hop and control headers, with the
/// authority replaced if configured, and the id and mirror marker added. Borrows from its
/// inputs: the copy is serialized ([`crate::pairs::encode`]) straight from this list.
pub fn copy_headers<'a>(
    request: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    authority: Option<&'a str>,
    control: [&str; CONTROL_HEADERS],
    id: (&'a str, &'a [u8]),
    marker: &'a str,
) -> Vec<(&'a [u8], &'a [u8])> {
    let dropped = |name: &[u8]| {
        (authority.is_some() && name == b":authority")
            || DROPPED_ON_COPY.iter().any(|d| d.as_bytes() == name)
            || control.iter().any(|c| c.as_bytes() == name)
    };
    let mut out: Vec<(&[u8], &[u8])> = request.into_iter().filter(|(k, _)| !dropped(k)).collect();
    if let Some(a) = authority {
        out.push((b":authority", a.as_bytes()));
    }
    out.push((id.0.as_bytes(), id.1));
    out.push((marker.as_bytes(), b"1"));
    out
}

/// Whether the copy headers carry what Envoy's `dispatch_http_call` requires.
pub fn has_required_pseudo_headers(headers: &[(&[u8], &[u8])]) -> bool {
    [":method", ":path", ":authority"].iter().all(|p| {
        headers
            .iter()
            .any(|(k, v)| *k == p.as_bytes() && !v.is_empty())
    })
}

/// A digest of the first `limit` bytes of a body, fed chunk by chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDigest {
    state: u64,
    seen: u64,
    limit: u64,
}

impl BodyDigest {
    /// A digest of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        BodyDigest {
            state: fnv1a(0xcbf2_9ce4_8422_2325, b""),
            seen: 0,
            limit,
        }
    }

    /// How many more bytes the digest wants.
    pub fn wants(&self) -> u64 {
        self.limit - self.seen
    }

    /// Feeds the next chunk; bytes past the limit are ignored.
    pub fn feed(&mut self, chunk: &[u8]) {
        let take = usize::try_from(self.wants())
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        self.state = fnv1a(self.state, &chunk[..take]);
        self.seen += take as u64;
    }

    /// The digest so far.
    pub fn value(&self) -> u64 {
        self.state
    }
}

/// What one variant answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Microseconds until the answer.
    pub latency_us: u64,
    /// Digest of the first `compare_body_bytes` of the body, when compared.
    pub digest: Option<u64>,
}

/// The kinds of difference between the two answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The status classes (2xx, 4xx, ...) differ.
    pub status: bool,
    /// The body digests differ.
    pub body: bool,
    /// The shadow was slower than the primary by more than the tolerance.
    pub latency: bool,
}

/// Compares the primary's and the shadow's answers.
pub fn compare(primary: &Answer, shadow: &Answer, tolerance_ms: u64) -> Verdict {
    Verdict {
        status: primary.status / 100 != shadow.status / 100,
        body: matches!((primary.digest, shadow.digest), (Some(a), Some(b)) if a != b),
        latency: shadow.latency_us > primary.latency_us.saturating_add(tolerance_ms * 1000),
    }
}

/// One side's report: an answer, or none (reset, timeout, client gone).
pub type Report = Option<Answer>;

/// What the book says once both sides of a copy are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Both answered: compared.
    Compared(Verdict),
    /// The shadow gave no answer.
    ShadowFailed,
    /// The primary gave no answer; nothing to compare against.
    PrimaryMissing,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    primary: Option<Report>,
    shadow: Option<Report>,
    opened_ns: u64,
}

/// The copies of one VM whose comparison is not finished.
#[derive(Debug)]
pub struct Book {
    entries: IdMap<u64, Entry>,
    next: u64,
    cap: usize,
    tolerance_ms: u64,
}

impl Book {
    /// A book holding at most `cap` open copies.
    pub fn new(cap: usize, tolerance_ms: u64) -> Self {
        Book {
            entries: IdMap::default(),
            next: 0,
            cap,
            tolerance_ms,
        }
    }

    /// Opens an entry for a new copy, or `None` if `cap` copies are already open.
    pub fn open(&mut self, now_ns: u64) -> Option<u64> {
        if self.entries.len() >= self.cap {
            return None;
        }
        self.next += 1;
        self.entries.insert(
            self.next,
            Entry {
                opened_ns: now_ns,
                ..Entry::default()
            },
        );
        Some(self.next)
    }

    /// How many copies are open.
    pub fn open_count(&self) -> usize {
        self.entries.len()
    }

    /// Records the primary's side; returns the resolution if the shadow's is known too.
    pub fn primary(&mut self, key: u64, report: Report) -> Option<Resolution> {
        self.entries.get_mut(&key)?.primary.get_or_insert(report);
        self.settle(key)
    }

    /// Records the shadow's side; returns the resolution if the primary's is known too.
    pub fn shadow(&mut self, key: u64, report: Report) -> Option<Resolution> {
        self.entries.get_mut(&key)?.shadow.get_or_insert(report);
        self.settle(key)
    }

    /// Drops an entry whose copy was never sent; returns whether it was open.
    pub fn cancel(&mut self, key: u64) -> bool {
        self.entries.remove(&key).is_some()
    }

    /// Forgets entries opened more than `max_age_ns` before `now_ns` (a side that never
    /// reported); returns how many.
    pub fn expire(&mut self, now_ns: u64, max_age_ns: u64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_ns.saturating_sub(e.opened_ns) <= max_age_ns);
        before - self.entries.len()
    }

    fn settle(&mut self, key: u64) -> Option<Resolution> {
        let entry = self.entries.get(&key)?;
        let (Some(primary), Some(shadow)) = (entry.primary, entry.shadow) else {
            return None;
        };
        self.entries.remove(&key);
        Some(match (primary, shadow) {
            (_, None) => Resolution::ShadowFailed,
            (None, Some(_)) => Resolution::PrimaryMissing,
            (Some(p), Some(s)) => Resolution::Compared(compare(&p, &s, self.tolerance_ms)),
        })
    }
}

#[cfg(test)]
mod tests;
