//! Host calls the filter makes, each failing soft: an error becomes `None` or is ignored, so a
//! host refusal never aborts the VM or the request.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use std::time::{Duration, UNIX_EPOCH};

/// Envoy's clock in nanoseconds since the epoch (0 if unavailable).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A header's value as bytes, `None` when absent (or on any error).
pub fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

/// Sets (or, with `None`, removes) a header.
pub fn set_header(map: MapType, name: &str, value: Option<&[u8]>) {
    let _ = hostcalls::set_map_value_bytes(map, name, value);
}

/// All headers of a map, as bytes.
pub fn headers(map: MapType) -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(map).unwrap_or_default()
}

/// Up to `max` bytes of a buffer from its start.
pub fn buffer(kind: BufferType, max: usize) -> Option<Vec<u8>> {
    if max == 0 {
        return Some(Vec::new());
    }
    hostcalls::get_buffer(kind, 0, max).ok().flatten()
}

/// A property of the current request (for example `response.code_details`).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// Stores a value in the request's filter state (`wasm.<name>`), where access logs read it.
pub fn set_filter_state(name: &str, value: &[u8]) {
    let _ = hostcalls::set_property(vec![name], Some(value));
}

/// Asks for `on_tick` every `ms` milliseconds (0: never).
pub fn set_tick_ms(ms: u64) {
    let _ = hostcalls::set_tick_period(Duration::from_millis(ms));
}

/// Logs one line at error level.
pub fn error(message: &str) {
    let _ = hostcalls::log(LogLevel::Error, message);
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    /// WASI preview 1 `random_get(buf, buf_len) -> errno`.
    #[link_name = "random_get"]
    fn wasi_random_get(buf: i32, buf_len: i32) -> i32;
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
