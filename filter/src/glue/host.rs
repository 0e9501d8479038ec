//! The host calls the filter makes (proxy-wasm ABI 0.2.1 imports), each failing soft: an error
//! becomes `None` or is ignored, so a host refusal never aborts the VM or the request.
//!
//! Every call crosses between Envoy and the VM, which costs far more than the work the filter
//! does itself; so does every value the host hands back, which it places in VM memory through
//! [`super::proxy_on_memory_allocate`]. The callers keep these to what a request needs.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::ptr::null_mut;

/// Which header map a call reads or writes (the ABI's `MapType`).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum HeaderMap {
    Request = 0,
    Response = 2,
    CallResponse = 6,
}

/// Which buffer a call reads (the ABI's `BufferType`).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    #[cfg(feature = "mirror")]
    RequestBody = 0,
    #[cfg(feature = "mirror")]
    ResponseBody = 1,
    CallResponseBody = 4,
    PluginConfiguration = 7,
}

/// The kind of a metric (the ABI's `MetricType`).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MetricKind {
    Counter = 0,
    Histogram = 2,
}

const OK: u32 = 0;
const LOG_ERROR: u32 = 4;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    /// WASI preview 1 `random_get(buf, buf_len) -> errno`.
    #[link_name = "random_get"]
    fn wasi_random_get(buf: i32, buf_len: i32) -> i32;
}

/// Runs a host call that returns bytes; `None` unless it answered Ok with data. With `scratch`,
/// the bytes may land in the scratch buffer (see [`allocate`]).
fn fetch(scratch: bool, call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<HostBytes> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    SCRATCH.with(|s| s.wanted.set(scratch));
    let status = call(&mut data, &mut size);
    SCRATCH.with(|s| s.wanted.set(false));
    // SAFETY: on any answer, the host only ever wrote a pointer it allocated for this call.
    let bytes = unsafe { HostBytes::take(data, size) };
    (status == OK).then_some(bytes).flatten()
}

/// Envoy's clock in nanoseconds since the epoch (0 if unavailable).
pub fn now_ns() -> u64 {
    let mut t = 0u64;
    // SAFETY: `t` outlives the call.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK { t } else { 0 }
}

/// A header's value, `None` when absent (or on any error).
pub fn header(map: HeaderMap, name: &str) -> Option<HostBytes> {
    // SAFETY: pointers and lengths describe live buffers.
    fetch(false, |d, s| unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, s)
    })
}

/// Every header of a map in one call, serialized as [`crate::pairs`] reads them (empty on any
/// error). Lands in the scratch buffer when it is free and the map fits, so the request's one
/// read costs no allocation.
pub fn header_pairs(map: HeaderMap) -> HostBytes {
    // SAFETY: pointers describe live out-parameters.
    fetch(true, |d, s| unsafe {
        proxy_get_header_map_pairs(map as u32, d, s)
    })
    .unwrap_or_default()
}

/// Size of the scratch buffer: a request's headers fit in it.
const SCRATCH_BYTES: usize = 8192;

/// One buffer, reused, for the header maps the filter reads in one call (one per request).
struct Scratch {
    bytes: UnsafeCell<[MaybeUninit<u8>; SCRATCH_BYTES]>,
    /// Set around a call whose answer may land here.
    wanted: Cell<bool>,
    /// Lent to a live [`HostBytes`].
    busy: Cell<bool>,
}

thread_local! {
    static SCRATCH: Scratch = const {
        Scratch {
            bytes: UnsafeCell::new([const { MaybeUninit::uninit() }; SCRATCH_BYTES]),
            wanted: Cell::new(false),
            busy: Cell::new(false),
        }
    };
}

impl Scratch {
    fn base(&self) -> *mut u8 {
        self.bytes.get().cast()
    }
}

/// Memory for `size` bytes the host hands over: the scratch buffer when a call asked for it and
/// it is free, else a boxed slice of exactly `size` bytes (taken back by [`HostBytes`] or
/// `Vec::from_raw_parts(ptr, size, size)`).
pub fn allocate(size: usize) -> *mut u8 {
    let scratch = SCRATCH.with(|s| {
        (s.wanted.get() && !s.busy.get() && size <= SCRATCH_BYTES).then(|| {
            s.wanted.set(false);
            s.busy.set(true);
            s.base()
        })
    });
    if let Some(ptr) = scratch {
        return ptr;
    }
    let mut bytes: Vec<MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: the capacity is `size`; the host writes every byte before the VM reads them.
    unsafe { bytes.set_len(size) };
    Box::into_raw(bytes.into_boxed_slice()) as *mut u8
}

/// Bytes the host placed in VM memory: in the scratch buffer (released on drop) or on the heap
/// (freed on drop).
pub struct HostBytes {
    ptr: *mut u8,
    len: usize,
    scratch: bool,
}

impl HostBytes {
    /// No bytes.
    pub fn empty() -> HostBytes {
        HostBytes {
            ptr: null_mut(),
            len: 0,
            scratch: false,
        }
    }

    /// Takes the bytes at `data`; `None` for a null pointer.
    ///
    /// # Safety
    /// `data` is null or was returned by [`allocate`] for this call, with `size`.
    unsafe fn take(data: *mut u8, size: usize) -> Option<HostBytes> {
        if data.is_null() {
            return None;
        }
        let scratch = SCRATCH.with(|s| s.base() == data);
        Some(HostBytes {
            ptr: data,
            len: size,
            scratch,
        })
    }
}

impl Default for HostBytes {
    fn default() -> HostBytes {
        HostBytes::empty()
    }
}

impl Deref for HostBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the host wrote `len` bytes at `ptr`, which stay ours (the scratch stays lent,
        // the heap slice unfreed) until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for HostBytes {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        if self.scratch {
            SCRATCH.with(|s| s.busy.set(false));
        } else {
            // SAFETY: a boxed slice of exactly `len` bytes from `allocate`, freed once.
            drop(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.len) });
        }
    }
}

/// Sets (or, with `None`, removes) a header.
pub fn set_header(map: HeaderMap, name: &str, value: Option<&[u8]>) {
    // SAFETY: pointers and lengths describe live buffers.
    let _ = unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    };
}

/// Up to `max` bytes of a buffer from its start.
pub fn buffer(kind: Buffer, max: usize) -> Option<HostBytes> {
    if max == 0 {
        return Some(HostBytes::empty());
    }
    // SAFETY: pointers describe live out-parameters.
    fetch(false, |d, s| unsafe {
        proxy_get_buffer_bytes(kind as u32, 0, max, d, s)
    })
}

/// A property of the current request (for example `response.code_details`).
pub fn property(path: &[&str]) -> Option<HostBytes> {
    let path = path.join("\0");
    // SAFETY: pointers and lengths describe live buffers.
    fetch(false, |d, s| unsafe {
        proxy_get_property(path.as_ptr(), path.len(), d, s)
    })
}

/// Stores a value in the request's filter state (`wasm.<name>`), where access logs read it.
pub fn set_filter_state(name: &str, value: &[u8]) {
    // SAFETY: pointers and lengths describe live buffers.
    let _ = unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
}

/// Asks for `on_tick` every `ms` milliseconds (0: never).
pub fn set_tick_ms(ms: u64) {
    // SAFETY: plain value.
    let _ = unsafe { proxy_set_tick_period_milliseconds(u32::try_from(ms).unwrap_or(u32::MAX)) };
}

/// Logs one line at error level.
pub fn error(message: &str) {
    // SAFETY: pointer and length describe a live buffer.
    let _ = unsafe { proxy_log(LOG_ERROR, message.as_ptr(), message.len()) };
}

/// Defines a metric; its id, `None` if the host refused.
pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: pointers and lengths describe live buffers.
    let status = unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

/// Adds `delta` to a counter.
pub fn increment_metric(id: u32, delta: i64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_increment_metric(id, delta) };
}

/// Records one value of a histogram.
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_record_metric(id, value) };
}

/// Sends a callout to `cluster` (headers already serialized by [`crate::pairs::encode`]); its
/// token, `None` if the host refused it.
pub fn http_call(cluster: &str, headers: &[u8], body: &[u8], timeout_ms: u64) -> Option<u32> {
    let no_trailers = crate::pairs::encode::<&str, &[u8]>(&[]);
    let mut token = 0u32;
    // SAFETY: pointers and lengths describe live buffers; `token` outlives the call.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            no_trailers.as_ptr(),
            no_trailers.len(),
            u32::try_from(timeout_ms).unwrap_or(u32::MAX),
            &mut token,
        )
    };
    (status == OK).then_some(token)
}

/// 16 random bytes from the host (WASI `random_get`); mixed from the clock and `salt` if the
/// host refuses, so the filter still works (ids then stay unique per VM, not across VMs).
pub fn random_seed(salt: u32) -> [u8; 16] {
    let mut seed = [0u8; 16];
    // SAFETY: the pointer and length describe `seed`, which lives across the call; wasm32
    // pointers fit in i32.
    let errno = unsafe { wasi_random_get(seed.as_mut_ptr() as i32, seed.len() as i32) };
    if errno != 0 {
        let t = now_ns();
        let a = crate::decide::mix64(t ^ u64::from(salt));
        let b = crate::decide::mix64(a ^ 0x9e37_79b9_7f4a_7c15);
        seed[..8].copy_from_slice(&a.to_le_bytes());
        seed[8..].copy_from_slice(&b.to_le_bytes());
    }
    seed
}
