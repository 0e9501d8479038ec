//! Loading a filter: compile once per file, check every import against what the host provides
//! (failing loudly, naming the import), and link the proxy-wasm hostcalls plus WASI preview 1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context as _, Result, bail};
use wasmtime::{Caller, Engine, Linker, Module};

use super::state::HostState;
use super::{calls_maps, calls_net, calls_props, calls_stats};

/// The WASI preview 1 functions Envoy 1.40 (proxy-wasm-cpp-host) provides. A filter that imports
/// any other WASI function does not load in Envoy, so it does not load here either.
const ENVOY_WASI: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "sched_yield",
    "poll_oneoff",
    "proc_exit",
];

/// The ABI versions a module may declare by exporting `proxy_abi_version_<v>`.
const ABI_VERSIONS: &[&str] = &[
    "proxy_abi_version_0_2_1",
    "proxy_abi_version_0_2_0",
    "proxy_abi_version_0_1_0",
];

/// The one engine every host shares (compiled code is tied to it).
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// A file by path, length and modification time: a rebuilt filter is compiled again.
type FileKey = (PathBuf, u64, Option<std::time::SystemTime>);

/// Compiles the module at `path`, once per file version for the whole test process.
pub(crate) fn compile_file(path: &Path) -> Result<Module> {
    static CACHE: OnceLock<Mutex<HashMap<FileKey, Module>>> = OnceLock::new();
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    // Held while compiling, so parallel tests of one binary compile the module once.
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| anyhow::anyhow!("module cache poisoned"))?;
    if let Some(module) = cache.get(&key) {
        return Ok(module.clone());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let module = Module::new(engine(), &bytes)
        .map_err(|e| anyhow::anyhow!("compiling {}: {e:?}", path.display()))?;
    cache.insert(key, module.clone());
    Ok(module)
}

/// Refuses a module that imports anything the host does not implement, or declares no ABI version.
pub(crate) fn check_module(module: &Module) -> Result<()> {
    let provided: Vec<&str> = [
        calls_maps::PROVIDES,
        calls_props::PROVIDES,
        calls_stats::PROVIDES,
        calls_net::PROVIDES,
    ]
    .concat();
    let mut missing = Vec::new();
    for import in module.imports() {
        let known = match import.module() {
            "env" => provided.contains(&import.name()),
            "wasi_snapshot_preview1" | "wasi_unstable" => ENVOY_WASI.contains(&import.name()),
            _ => false,
        };
        if !known {
            missing.push(format!("{}::{}", import.module(), import.name()));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the module imports what this proxy-wasm host does not implement: {}",
            missing.join(", ")
        );
    }
    let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
    if !ABI_VERSIONS.iter().any(|v| exports.contains(v)) {
        bail!("the module exports no proxy_abi_version_* function: Envoy would refuse it");
    }
    if !exports.contains(&"proxy_on_memory_allocate") && !exports.contains(&"malloc") {
        bail!(
            "the module exports neither proxy_on_memory_allocate nor malloc: the host cannot hand it data"
        );
    }
    Ok(())
}

/// A linker with every hostcall and WASI preview 1, whose clock is the host's virtual clock.
pub(crate) fn linker() -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)
        .map_err(|e| anyhow::anyhow!("adding WASI: {e:?}"))?;
    linker.allow_shadowing(true);
    // Envoy answers only the realtime clock (id 0), from its time source; others are ENOTSUP.
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "clock_time_get",
            |mut c: Caller<'_, HostState>, id: u32, _precision: u64, ret: u32| -> u32 {
                const ENOTSUP: u32 = 58;
                const EFAULT: u32 = 21;
                if id != 0 {
                    return ENOTSUP;
                }
                let now = c.data().clock.now_ns();
                match super::abi::write_u64(&mut c, ret, now) {
                    Ok(()) => 0,
                    Err(_) => EFAULT,
                }
            },
        )
        .map_err(|e| anyhow::anyhow!("linking clock_time_get: {e:?}"))?;
    linker.allow_shadowing(false);
    let register = [
        calls_maps::register,
        calls_props::register,
        calls_stats::register,
        calls_net::register,
    ];
    for add in register {
        add(&mut linker).map_err(|e| anyhow::anyhow!("linking hostcalls: {e:?}"))?;
    }
    Ok(linker)
}
