//! The proxy-wasm ABI 0.2.1 seen from the host: status codes, the enums the guest passes as
//! integers, the pairs encoding of header maps, and moving bytes in and out of guest memory.

use wasmtime::Caller;

use super::state::HostState;

/// A hostcall's result code (`WasmResult` in Envoy's proxy-wasm-cpp-host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// The call succeeded.
    Ok = 0,
    /// The thing asked for does not exist.
    NotFound = 1,
    /// An argument is invalid (for example a header map that does not exist yet).
    BadArgument = 2,
    /// A value could not be serialised.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// A pointer or length points outside the guest's memory.
    InvalidMemoryAccess = 6,
    /// A shared queue is empty.
    Empty = 7,
    /// A shared-data write lost a compare-and-swap race.
    CasMismatch = 8,
    /// The host failed.
    InternalFailure = 10,
}

/// Why a hostcall stopped early: a status for the guest, or a trap that ends the VM call.
pub(crate) enum Fault {
    /// Return this status to the guest.
    Status(Status),
    /// Propagate this trap (for example the guest's allocator trapped).
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Fault::Status(status)
    }
}

/// What a hostcall body returns; [`finish`] turns it into the wasm return value.
pub(crate) type Outcome = Result<(), Fault>;

/// Converts a hostcall body's outcome into the status code the guest sees, or a trap.
pub(crate) fn finish(outcome: Outcome) -> wasmtime::Result<u32> {
    match outcome {
        Ok(()) => Ok(Status::Ok as u32),
        Err(Fault::Status(status)) => Ok(status as u32),
        Err(Fault::Trap(trap)) => Err(trap),
    }
}

/// The log levels of the ABI, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `critical`
    Critical,
}

impl LogLevel {
    /// The level for an ABI integer, `None` when out of range.
    pub fn from_abi(level: u32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

/// `MapType`: which header map a hostcall addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    /// The map type for an ABI integer; Envoy answers `BadArgument` past the last one.
    pub(crate) fn from_abi(value: u32) -> Result<MapType, Status> {
        Ok(match value {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// `BufferType`: which byte buffer a hostcall addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    CallResponseBody,
    GrpcReceive,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    /// The buffer type for an ABI integer; `BadArgument` past the last one.
    pub(crate) fn from_abi(value: u32) -> Result<BufferType, Status> {
        Ok(match value {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::CallResponseBody,
            5 => BufferType::GrpcReceive,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// Decodes the ABI's pairs encoding (a count, then key and value lengths, then NUL-terminated
/// keys and values). Like Envoy, a malformed buffer decodes as no pairs at all.
pub fn decode_pairs(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let word = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let Some(count) = word(0) else {
        return Vec::new();
    };
    let Some(mut data) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return Vec::new();
    };
    if data > bytes.len() {
        return Vec::new();
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let (Some(key_len), Some(value_len)) = (word(4 + i * 8), word(8 + i * 8)) else {
            return Vec::new();
        };
        let Some(key) = bytes.get(data..data + key_len) else {
            return Vec::new();
        };
        data += key_len + 1;
        let Some(value) = bytes.get(data..data + value_len) else {
            return Vec::new();
        };
        data += value_len + 1;
        pairs.push((key.to_vec(), value.to_vec()));
    }
    pairs
}

/// Encodes pairs in the ABI's pairs encoding.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let mut out = Vec::new();
    let count = pairs.clone().into_iter().count() as u32;
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in pairs.clone() {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Reads `len` bytes at `ptr` of the guest's memory.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Reads guest bytes as a string, replacing invalid UTF-8 (names and keys are ASCII in practice).
pub(crate) fn read_string(
    caller: &Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<String, Status> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// Writes `bytes` at `ptr` of the guest's memory.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data_mut(caller)
        .get_mut(start..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` (a wasm32 pointer or size) at `ptr`.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u32,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u64,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest the way Envoy's `copyToPointerSize` does: an empty value is a null
/// pointer and size 0; anything else is copied into memory the guest allocates (its
/// `proxy_on_memory_allocate` or `malloc`), which the guest then owns.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> Outcome {
    let mut pointer = 0;
    if !bytes.is_empty() {
        let alloc = caller.data().alloc.clone().ok_or(Status::InternalFailure)?;
        pointer = alloc
            .call(&mut *caller, bytes.len() as u32)
            .map_err(Fault::Trap)?;
        if pointer == 0 {
            return Err(Status::InvalidMemoryAccess.into());
        }
        write(caller, pointer, bytes)?;
    }
    write_u32(caller, ptr_ptr, pointer)?;
    write_u32(caller, size_ptr, bytes.len() as u32)?;
    Ok(())
}
