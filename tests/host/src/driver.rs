//! The lifecycle driver: a [`Host`] owns one VM (one Envoy worker's copy of the filter), runs its
//! root lifecycle, and calls into it the way Envoy does, recording what the filter did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use wasmtime::{CallHook, Instance, Module, Store, TypedFunc, WasmParams, WasmResults};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::abi::LogLevel;
use super::headers::HeaderMap;
use super::link;
use super::state::{
    CallResponse, Callout, Clock, Crossings, HostState, LogEntry, Metric, MetricKind, Routes,
};

/// Where the filter is built: `$DOPPEL_WASM`, else `<workspace>/target/wasm32-wasip1/wasm/doppel_filter.wasm`.
pub fn filter_path() -> PathBuf {
    if let Some(path) = std::env::var_os("DOPPEL_WASM") {
        return PathBuf::from(path);
    }
    // This crate is `<workspace>/tests/host`.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("wasm32-wasip1/wasm/doppel_filter.wasm")
}

/// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The exported entry points, each optional: Envoy skips a callback the module does not export.
struct Exports {
    on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    on_configure: Option<TypedFunc<(u32, u32), u32>>,
    on_tick: Option<TypedFunc<u32, ()>>,
    on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    pub(crate) on_request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) on_response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_http_call_response: Option<CallResponseFn>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_delete: Option<TypedFunc<u32, ()>>,
}

impl Exports {
    fn find(instance: &Instance, store: &mut Store<HostState>) -> Result<Exports> {
        fn get<P: WasmParams, R: WasmResults>(
            instance: &Instance,
            store: &mut Store<HostState>,
            name: &str,
        ) -> Result<Option<TypedFunc<P, R>>> {
            match instance.get_func(&mut *store, name) {
                None => Ok(None),
                Some(f) => f
                    .typed(&*store)
                    .map(Some)
                    .map_err(|e| anyhow!("export {name} has an unexpected signature: {e:?}")),
            }
        }
        Ok(Exports {
            on_context_create: get(instance, store, "proxy_on_context_create")?,
            on_vm_start: get(instance, store, "proxy_on_vm_start")?,
            on_configure: get(instance, store, "proxy_on_configure")?,
            on_tick: get(instance, store, "proxy_on_tick")?,
            on_queue_ready: get(instance, store, "proxy_on_queue_ready")?,
            on_request_headers: get(instance, store, "proxy_on_request_headers")?,
            on_request_body: get(instance, store, "proxy_on_request_body")?,
            on_response_headers: get(instance, store, "proxy_on_response_headers")?,
            on_response_body: get(instance, store, "proxy_on_response_body")?,
            on_http_call_response: get(instance, store, "proxy_on_http_call_response")?,
            on_done: get(instance, store, "proxy_on_done")?,
            on_log: get(instance, store, "proxy_on_log")?,
            on_delete: get(instance, store, "proxy_on_delete")?,
        })
    }
}

/// One VM running a proxy-wasm module, driven like Envoy drives a worker's copy of a filter.
pub struct Host {
    pub(crate) store: Store<HostState>,
    exports: Exports,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    seen: (usize, usize),
    next_context: u32,
    failure: Option<String>,
}

impl Host {
    /// Loads the built filter from [`filter_path`]; if it is missing, says how to build it.
    pub fn load_filter() -> Result<Host> {
        let path = filter_path();
        if !path.exists() {
            bail!(
                "the filter is not built at {}: run `cargo build -p doppel-filter --target wasm32-wasip1 --profile wasm` (or set DOPPEL_WASM)",
                path.display()
            );
        }
        Host::load(&path)
    }

    /// Loads a module from a `.wasm` file and starts its VM and root context (no configure yet).
    pub fn load(path: impl AsRef<Path>) -> Result<Host> {
        let path = path.as_ref();
        let module = link::compile_file(path)?;
        Host::start(&module).with_context(|| format!("starting {}", path.display()))
    }

    /// Loads a module from WebAssembly text (for testing the host itself).
    pub fn from_wat(text: &str) -> Result<Host> {
        let module =
            Module::new(link::engine(), text).map_err(|e| anyhow!("compiling WAT: {e:?}"))?;
        Host::start(&module)
    }

    fn start(module: &Module) -> Result<Host> {
        link::check_module(module)?;
        let stdout = MemoryOutputPipe::new(1 << 20);
        let stderr = MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let clock = Clock::starting_now();
        let mut store = Store::new(link::engine(), HostState::new(wasi, clock));
        store.call_hook(|mut state, hook| {
            let crossings = &mut state.data_mut().crossings;
            match hook {
                CallHook::CallingWasm => crossings.into_vm += 1,
                CallHook::CallingHost => crossings.out_of_vm += 1,
                CallHook::ReturningFromWasm | CallHook::ReturningFromHost => {}
            }
            Ok(())
        });
        let instance = link::linker()?
            .instantiate(&mut store, module)
            .map_err(|e| anyhow!("instantiating: {e:?}"))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .context("the module exports no memory")?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .map_err(|e| anyhow!("no usable allocator export: {e:?}"))?;
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        let exports = Exports::find(&instance, &mut store)?;
        let mut host = Host {
            store,
            exports,
            stdout,
            stderr,
            seen: (0, 0),
            next_context: 1,
            failure: None,
        };
        // Envoy starts a reactor with `_initialize` (or a command's `_start`).
        for name in ["_initialize", "_start"] {
            if let Ok(init) = instance.get_typed_func::<(), ()>(&mut host.store, name) {
                host.enter(0, |s| init.call(s, ()))?;
                break;
            }
        }
        let root = host.new_context_id();
        host.store.data_mut().root_id = root;
        host.store.data_mut().root_alive = true;
        if let Some(f) = host.exports.on_context_create.clone() {
            host.enter(root, |s| f.call(s, (root, 0)))?;
        }
        if let Some(f) = host.exports.on_vm_start.clone() {
            let size = host.store.data().vm_config.len() as u32;
            let started = host.enter(root, |s| f.call(s, (root, size)))?;
            if started == 0 {
                bail!("proxy_on_vm_start returned false");
            }
        }
        Ok(host)
    }

    pub(crate) fn new_context_id(&mut self) -> u32 {
        let id = self.next_context;
        self.next_context += 1;
        id
    }

    /// The root context's id.
    pub fn root_id(&self) -> u32 {
        self.store.data().root_id
    }

    /// Runs `proxy_on_configure` with `config` as the plugin configuration; its answer.
    pub fn configure(&mut self, config: impl AsRef<[u8]>) -> Result<bool> {
        let root = self.root_id();
        let config = config.as_ref().to_vec();
        let size = config.len() as u32;
        self.store.data_mut().plugin_config = Some(config);
        let result = match self.exports.on_configure.clone() {
            Some(f) => self
                .enter(root, |s| f.call(s, (root, size)))
                .map(|r| r != 0),
            None => Ok(true),
        };
        self.store.data_mut().plugin_config = None;
        result
    }

    /// Calls into the VM as context `context`, then collects stdout/stderr as logs and runs
    /// what Envoy would run next on its event loop (ready queues). A trap fails the VM for good,
    /// as in Envoy; the error carries the guest's last stderr lines (a Rust panic message).
    pub(crate) fn enter<R>(
        &mut self,
        context: u32,
        run: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let result = self.enter_one(context, run)?;
        self.run_ready_queues()?;
        Ok(result)
    }

    fn enter_one<R>(
        &mut self,
        context: u32,
        run: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        if let Some(failure) = &self.failure {
            bail!("the VM failed earlier and Envoy would not call it again: {failure}");
        }
        let state = self.store.data_mut();
        let saved = (state.current, state.effective);
        state.current = context;
        state.effective = 0;
        let result = run(&mut self.store);
        let state = self.store.data_mut();
        (state.current, state.effective) = saved;
        let stderr_tail = self.collect_output();
        result.map_err(|trap| {
            let failure =
                format!("wasm trap in context {context}: {trap:?}; guest stderr: {stderr_tail:?}");
            self.failure = Some(failure.clone());
            anyhow!(failure)
        })
    }

    fn run_ready_queues(&mut self) -> Result<()> {
        let mut budget = 100_000;
        while let Some((owner, token)) = self.store.data_mut().ready_queues.pop_front() {
            budget -= 1;
            if budget == 0 {
                bail!("queue-ready notifications do not stop: the guest keeps enqueueing");
            }
            if !self.store.data().exists(owner) {
                continue;
            }
            if let Some(f) = self.exports.on_queue_ready.clone() {
                self.enter_one(owner, |s| f.call(s, (owner, token)))?;
            }
        }
        Ok(())
    }

    /// Turns new stdout (info) and stderr (error) output into log entries, as Envoy does;
    /// returns the stderr text seen in this call.
    fn collect_output(&mut self) -> String {
        let out = self.stdout.contents();
        let err = self.stderr.contents();
        let new_out = String::from_utf8_lossy(&out[self.seen.0.min(out.len())..]).into_owned();
        let new_err = String::from_utf8_lossy(&err[self.seen.1.min(err.len())..]).into_owned();
        self.seen = (out.len(), err.len());
        for line in new_out.lines().filter(|l| !l.is_empty()) {
            self.store.data_mut().log(LogLevel::Info, line.to_string());
        }
        for line in new_err.lines().filter(|l| !l.is_empty()) {
            self.store.data_mut().log(LogLevel::Error, line.to_string());
        }
        new_err
    }

    /// The trap that failed this VM, if one did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Runs one `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<()> {
        let root = self.root_id();
        if let Some(f) = self.exports.on_tick.clone() {
            self.enter(root, |s| f.call(s, root))?;
        }
        Ok(())
    }

    /// Stops the VM as Envoy does: `proxy_on_done` then `proxy_on_delete` on the root context
    /// (the filter publishes what it has not yet published). Returns `on_done`'s answer.
    pub fn shutdown(&mut self) -> Result<bool> {
        let root = self.root_id();
        let done = match self.exports.on_done.clone() {
            Some(f) => self.enter(root, |s| f.call(s, root))? != 0,
            None => true,
        };
        if let Some(f) = self.exports.on_delete.clone() {
            self.enter(root, |s| f.call(s, root))?;
        }
        self.store.data_mut().root_alive = false;
        Ok(done)
    }

    /// The tick period the filter asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        match self.store.data().tick_period_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms.into())),
        }
    }

    /// Moves the virtual clock forward, stopping at each event on the way: a tick fires once per
    /// elapsed period (the period the filter asks for at that moment), and a callout whose
    /// timeout passes gets Envoy's answer to a timeout (see [`Host::time_out`]).
    pub fn advance(&mut self, by: Duration) -> Result<()> {
        let target = self.now_ns() + by.as_nanos() as u64;
        loop {
            let base = self.store.data().tick_base_ns;
            let next_tick = self.tick_period().map(|p| base + p.as_nanos() as u64);
            let next_timeout = self
                .store
                .data()
                .pending_calls
                .values()
                .filter(|c| c.timeout_ms > 0)
                .map(|c| (c.at_ns + u64::from(c.timeout_ms) * 1_000_000, c.token))
                .min();
            let tick_first = match (next_tick, next_timeout) {
                (Some(t), Some((d, _))) => t <= d,
                (Some(_), None) => true,
                _ => false,
            };
            match (next_tick, next_timeout) {
                (Some(t), _) if tick_first && t <= target => {
                    self.store.data().clock.set(t.max(self.now_ns()));
                    self.store.data_mut().tick_base_ns = t;
                    self.tick()?;
                }
                (_, Some((deadline, token))) if deadline <= target => {
                    self.store.data().clock.set(deadline.max(self.now_ns()));
                    self.time_out(token)?;
                }
                _ => break,
            }
        }
        self.store.data().clock.set(target);
        Ok(())
    }

    /// The virtual clock, nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.store.data().clock.now_ns()
    }

    /// Every callout the filter dispatched, in order.
    pub fn callouts(&self) -> &[Callout] {
        &self.store.data().callouts
    }

    /// Callouts not yet answered, failed or timed out.
    pub fn pending_callouts(&self) -> Vec<Callout> {
        self.store.data().pending_calls.values().cloned().collect()
    }

    /// The upstream answers callout `token` with a status, headers and body; like Envoy's router,
    /// the host adds `x-envoy-upstream-service-time`.
    pub fn answer(
        &mut self,
        token: u32,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let sent = self
            .store
            .data()
            .pending_calls
            .get(&token)
            .map_or(0, |c| c.at_ns);
        let elapsed_ms = (self.now_ns().saturating_sub(sent) / 1_000_000).to_string();
        let mut map = HeaderMap::new();
        map.set(":status", status.to_string().as_bytes());
        for (k, v) in headers {
            map.add(k, v.as_bytes());
        }
        map.add("x-envoy-upstream-service-time", elapsed_ms.as_bytes());
        let response = CallResponse {
            headers: map,
            body: body.to_vec(),
            trailers: HeaderMap::new(),
        };
        self.deliver(token, Some(response))
    }

    /// The upstream answers callout `token` with exactly these headers (`:status` included, or
    /// not: a garbled answer) and body.
    pub fn answer_map(&mut self, token: u32, headers: HeaderMap, body: &[u8]) -> Result<()> {
        let response = CallResponse {
            headers,
            body: body.to_vec(),
            trailers: HeaderMap::new(),
        };
        self.deliver(token, Some(response))
    }

    /// Callout `token` times out: Envoy's router answers it itself with a 504 and the body
    /// `upstream request timeout` (no `x-envoy-upstream-service-time`).
    pub fn time_out(&mut self, token: u32) -> Result<()> {
        let body = b"upstream request timeout".to_vec();
        let mut map = HeaderMap::new();
        map.set(":status", b"504");
        map.add("content-length", body.len().to_string().as_bytes());
        map.add("content-type", b"text/plain");
        let response = CallResponse {
            headers: map,
            body,
            trailers: HeaderMap::new(),
        };
        self.deliver(token, Some(response))
    }

    /// Callout `token` fails without an answer (a reset): Envoy calls the filter with no
    /// headers, no body and no trailers.
    pub fn fail_callout(&mut self, token: u32) -> Result<()> {
        self.deliver(token, None)
    }

    fn deliver(&mut self, token: u32, response: Option<CallResponse>) -> Result<()> {
        let state = self.store.data_mut();
        if state.pending_calls.remove(&token).is_none() {
            bail!("callout {token} is not pending");
        }
        let root = state.root_id;
        if !state.root_alive {
            return Ok(());
        }
        let sizes = response
            .as_ref()
            .map(|r| {
                (
                    r.headers.len() as u32,
                    r.body.len() as u32,
                    r.trailers.len() as u32,
                )
            })
            .unwrap_or((0, 0, 0));
        state.call_response = response;
        let result = match self.exports.on_http_call_response.clone() {
            Some(f) => self.enter(root, |s| {
                f.call(s, (root, token, sizes.0, sizes.1, sizes.2))
            }),
            None => Ok(()),
        };
        self.store.data_mut().call_response = None;
        result
    }

    /// The metric named `name` (as defined by the filter, without Envoy's `wasmcustom.` prefix).
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.store.data().metrics.by_name.get(name)
    }

    /// A counter's or gauge's value; `None` if no such metric was defined.
    pub fn counter(&self, name: &str) -> Option<i64> {
        self.metric(name)
            .filter(|m| m.kind != MetricKind::Histogram)
            .map(|m| m.value)
    }

    /// A histogram's samples; `None` if no such histogram was defined.
    pub fn histogram(&self, name: &str) -> Option<&[u64]> {
        self.metric(name)
            .filter(|m| m.kind == MetricKind::Histogram)
            .map(|m| m.samples.as_slice())
    }

    /// Every metric the filter defined, by name.
    pub fn metrics(&self) -> &BTreeMap<String, Metric> {
        &self.store.data().metrics.by_name
    }

    /// Calls between the host and the VM so far (compare two readings around a request).
    pub fn crossings(&self) -> Crossings {
        self.store.data().crossings
    }

    /// Every log line so far.
    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    /// Forgets the log lines so far (long runs keep memory flat).
    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// Whether a log line at `level` or above contains `text`.
    pub fn logged(&self, level: LogLevel, text: &str) -> bool {
        self.logs()
            .iter()
            .any(|l| l.level >= level && l.message.contains(text))
    }

    /// A shared-data value, if set.
    pub fn shared_data(&self, key: &str) -> Option<&[u8]> {
        self.store
            .data()
            .shared_data
            .get(key)
            .map(|(v, _)| v.as_slice())
    }

    /// Makes `name` a cluster `dispatch_http_call` accepts (`primary` and `shadow` exist already).
    pub fn add_cluster(&mut self, name: &str) {
        self.store.data_mut().clusters.insert(name.to_string());
    }

    /// Replaces the routing that decides `xds.cluster_name` (by default the variant header
    /// `x-doppel-variant: shadow` routes to `shadow`, anything else to `primary`).
    pub fn set_routes(&mut self, routes: Routes) {
        self.store.data_mut().routes = routes;
    }

    /// The cluster the current routing picks for `headers`.
    pub fn route(&self, headers: &HeaderMap) -> String {
        self.store.data().routes.cluster_for(headers).to_string()
    }

    /// Number of HTTP contexts alive (created and not yet deleted).
    pub fn live_streams(&self) -> usize {
        self.store.data().http.len()
    }

    pub(crate) fn exports_on_context_create(&self) -> Option<TypedFunc<(u32, u32), ()>> {
        self.exports.on_context_create.clone()
    }

    pub(crate) fn stream_callbacks(&self) -> StreamCallbacks {
        StreamCallbacks {
            request_headers: self.exports.on_request_headers.clone(),
            request_body: self.exports.on_request_body.clone(),
            response_headers: self.exports.on_response_headers.clone(),
            response_body: self.exports.on_response_body.clone(),
            done: self.exports.on_done.clone(),
            log: self.exports.on_log.clone(),
            delete: self.exports.on_delete.clone(),
        }
    }
}

/// The HTTP-stream callbacks, cloned out for one exchange.
pub(crate) struct StreamCallbacks {
    pub(crate) request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub(crate) done: Option<TypedFunc<u32, u32>>,
    pub(crate) log: Option<TypedFunc<u32, ()>>,
    pub(crate) delete: Option<TypedFunc<u32, ()>>,
}
