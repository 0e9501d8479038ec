//! A probe filter for the instruction benchmark, speaking the proxy-wasm ABI directly. What it
//! does per request is fixed at build time by `DOPPEL_PROBE`:
//!
//! - `none` (built without the `callbacks` feature): exports no request callback at all (the
//!   cost of having a Wasm filter);
//! - `callback`: `proxy_on_request_headers` that returns at once (one call into the VM);
//! - `clock`: that callback reads the clock (one call out, no data back);
//! - `absent`: it reads a header the request does not have (a lookup, no data back);
//! - `present`: it reads `x-user-id`, which the benchmark always sends (the host allocates VM
//!   memory for the value: a nested call back into the VM);
//! - `pairs`: it reads every request header in one call;
//! - `remove`: it removes three headers the request does not have (no data back).

#![allow(dead_code)]

const PROBE: &str = match option_env!("DOPPEL_PROBE") {
    Some(p) => p,
    None => "none",
};

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut bytes: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: the capacity is `size`; the host writes every byte before anyone reads them.
    unsafe { bytes.set_len(size) };
    Box::into_raw(bytes.into_boxed_slice()) as *mut u8
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> u32 {
    1
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
}

/// Frees what the host handed over (allocated by `proxy_on_memory_allocate`).
fn release(data: *mut u8, size: usize) {
    if !data.is_null() {
        // SAFETY: the host allocated exactly `size` bytes at `data` with our allocator.
        drop(unsafe { Vec::from_raw_parts(data, size, size) });
    }
}

fn header(name: &str) {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: pointers describe live buffers and out-parameters.
    unsafe { proxy_get_header_map_value(0, name.as_ptr(), name.len(), &mut data, &mut size) };
    release(data, size);
}

/// Exported only by the probes that do something per request.
#[cfg(feature = "callbacks")]
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_id: u32, _headers: usize, _end: u32) -> u32 {
    match PROBE {
        "clock" => {
            let mut t = 0u64;
            // SAFETY: `t` outlives the call.
            unsafe { proxy_get_current_time_nanoseconds(&mut t) };
        }
        "absent" => header("x-doppel-probe-absent"),
        "present" => header("x-user-id"),
        "pairs" => {
            let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
            // SAFETY: pointers describe live out-parameters.
            unsafe { proxy_get_header_map_pairs(0, &mut data, &mut size) };
            release(data, size);
        }
        "remove" => {
            for name in ["x-doppel-variant", "x-doppel-id", "x-doppel-mirror"] {
                // SAFETY: `name` outlives the call.
                unsafe { proxy_remove_header_map_value(0, name.as_ptr(), name.len()) };
            }
        }
        _ => {}
    }
    0
}
