//! What the host knows and records while the guest runs: contexts, metrics, logs, callouts,
//! shared data and queues. Hostcalls change it; the driver and tests read it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{Memory, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::abi::LogLevel;
use super::headers::HeaderMap;

/// The host's virtual clock in nanoseconds since the Unix epoch, shared with the WASI clocks.
#[derive(Clone, Debug)]
pub struct Clock(Arc<AtomicU64>);

impl Clock {
    /// A clock that starts at the real time now.
    pub fn starting_now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock(Arc::new(AtomicU64::new(now)))
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the clock (never backwards).
    pub fn set(&self, ns: u64) {
        self.0.fetch_max(ns, Ordering::SeqCst);
    }
}

/// One line the guest logged (through `proxy_log`, or stdout/stderr as Envoy maps them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its level (stdout is `Info`, stderr `Error`, as in Envoy).
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// The context that was running.
    pub context: u32,
}

/// The kind of a metric the guest defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// Records samples.
    Histogram,
}

/// A metric's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Its kind.
    pub kind: MetricKind,
    /// A counter's or gauge's value.
    pub value: i64,
    /// A histogram's samples, in recording order.
    pub samples: Vec<u64>,
    /// How many times the guest defined it (Envoy's advice: once per VM).
    pub definitions: u32,
}

/// Metrics by name, and Envoy's id scheme (the low two bits of an id are its kind).
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) by_name: BTreeMap<String, Metric>,
    pub(crate) by_id: HashMap<u32, String>,
    next_id: [u32; 3],
}

impl Metrics {
    /// Defines (or re-defines) a metric and returns a fresh id for it, as Envoy does.
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str) -> u32 {
        let slot = kind as usize;
        self.next_id[slot] += 4;
        let id = self.next_id[slot] | slot as u32;
        let metric = self
            .by_name
            .entry(name.to_string())
            .or_insert_with(|| Metric {
                kind,
                value: 0,
                samples: Vec::new(),
                definitions: 0,
            });
        metric.definitions += 1;
        self.by_id.insert(id, name.to_string());
        id
    }

    /// The kind encoded in an id.
    pub(crate) fn kind_of(id: u32) -> Option<MetricKind> {
        match id & 3 {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }

    /// The metric an id names.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let name = self.by_id.get(&id)?;
        self.by_name.get_mut(name)
    }
}

/// An HTTP call the guest dispatched (`proxy_http_call`).
#[derive(Clone, Debug)]
pub struct Callout {
    /// The token the guest got back.
    pub token: u32,
    /// The cluster it targets.
    pub cluster: String,
    /// Its request headers.
    pub headers: HeaderMap,
    /// Its request body.
    pub body: Vec<u8>,
    /// Its request trailers.
    pub trailers: HeaderMap,
    /// Its timeout in milliseconds (0: none).
    pub timeout_ms: u32,
    /// The context that was running (or effective) when it was dispatched.
    pub dispatched_by: u32,
    /// Virtual time of dispatch, nanoseconds since the epoch.
    pub at_ns: u64,
}

/// The answer to a callout while `proxy_on_http_call_response` runs.
pub(crate) struct CallResponse {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: HeaderMap,
}

/// A local response the guest sent (`proxy_send_local_response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// Its status code.
    pub status: u32,
    /// Its details string.
    pub details: String,
    /// Its body.
    pub body: Vec<u8>,
    /// Its extra headers.
    pub headers: HeaderMap,
}

/// One HTTP stream's state, as the host keeps it for the guest's HTTP context.
#[derive(Default)]
pub(crate) struct HttpCtx {
    pub(crate) request_headers: HeaderMap,
    pub(crate) request_trailers: Option<HeaderMap>,
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_headers: Option<HeaderMap>,
    pub(crate) response_trailers: Option<HeaderMap>,
    pub(crate) response_body: Vec<u8>,
    pub(crate) started_ns: u64,
    pub(crate) finished_ns: Option<u64>,
    /// Set before `proxy_on_delete`: Envoy 1.40 no longer shows the stream's header maps then (a
    /// filter build that read the response's headers there found none under the real Envoy).
    pub(crate) maps_gone: bool,
    /// The request headers as they went upstream, once the filter let them go.
    pub(crate) forwarded: Option<HeaderMap>,
    /// The response headers as they went to the client, once the filter let them go.
    pub(crate) delivered: Option<HeaderMap>,
    pub(crate) request_paused: bool,
    pub(crate) response_paused: bool,
    pub(crate) local_response: Option<LocalResponse>,
    /// `response.code_details`: `via_upstream`, or why Envoy's router answered itself.
    pub(crate) code_details: Option<String>,
    pub(crate) closed: Vec<u32>,
    pub(crate) filter_state: BTreeMap<String, Vec<u8>>,
}

impl HttpCtx {
    /// Records that the request headers left the filter (only the first time counts).
    pub(crate) fn release_request(&mut self) {
        self.request_paused = false;
        if self.forwarded.is_none() && self.local_response.is_none() {
            self.forwarded = Some(self.request_headers.clone());
        }
    }

    /// Records that the response headers left the filter.
    pub(crate) fn release_response(&mut self) {
        self.response_paused = false;
        if self.delivered.is_none() {
            self.delivered = self.response_headers.clone();
        }
    }
}

/// A named shared queue.
pub(crate) struct Queue {
    pub(crate) vm_id: String,
    pub(crate) name: String,
    pub(crate) owner: u32,
    pub(crate) items: VecDeque<Vec<u8>>,
}

/// How the host routes a request to a cluster (`xds.cluster_name`): the first route whose header
/// has the given value wins, else the default cluster.
#[derive(Clone, Debug)]
pub struct Routes {
    /// `(header, value, cluster)` rules in order.
    pub rules: Vec<(String, String, String)>,
    /// The cluster when no rule matches.
    pub default_cluster: String,
}

impl Routes {
    /// The cluster `headers` route to.
    pub fn cluster_for(&self, headers: &HeaderMap) -> &str {
        self.rules
            .iter()
            .find(|(h, v, _)| headers.get(h) == Some(v.as_bytes()))
            .map(|(_, _, c)| c.as_str())
            .unwrap_or(&self.default_cluster)
    }
}

/// Calls between the host and the VM so far: what a request costs a filter in Envoy is mostly
/// their number (BENCHMARKS.md prices each kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crossings {
    /// Calls into the VM: callbacks, and memory allocations the host asks for.
    pub into_vm: u64,
    /// Calls out of the VM: hostcalls, WASI included.
    pub out_of_vm: u64,
}

impl std::ops::Sub for Crossings {
    type Output = Crossings;
    fn sub(self, earlier: Crossings) -> Crossings {
        Crossings {
            into_vm: self.into_vm - earlier.into_vm,
            out_of_vm: self.out_of_vm - earlier.out_of_vm,
        }
    }
}

/// Everything the host keeps in the wasmtime store.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<u32, u32>>,
    pub(crate) clock: Clock,
    /// The context whose callback is running (0: the VM itself).
    pub(crate) current: u32,
    /// The context set by `proxy_set_effective_context` during this callback (0: none).
    pub(crate) effective: u32,
    pub(crate) root_id: u32,
    pub(crate) root_alive: bool,
    pub(crate) http: HashMap<u32, HttpCtx>,
    pub(crate) vm_config: Vec<u8>,
    /// The plugin configuration, present only while `proxy_on_configure` runs.
    pub(crate) plugin_config: Option<Vec<u8>>,
    pub(crate) metrics: Metrics,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) echo_logs: bool,
    pub(crate) log_level: u32,
    pub(crate) next_token: u32,
    pub(crate) pending_calls: BTreeMap<u32, Callout>,
    pub(crate) callouts: Vec<Callout>,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) shared_data: HashMap<String, (Vec<u8>, u32)>,
    pub(crate) next_cas: u32,
    pub(crate) queues: Vec<Queue>,
    pub(crate) ready_queues: VecDeque<(u32, u32)>,
    pub(crate) tick_period_ms: u32,
    /// When the tick timer was last armed or fired; the next tick is one period later.
    pub(crate) tick_base_ns: u64,
    pub(crate) clusters: BTreeSet<String>,
    pub(crate) routes: Routes,
    pub(crate) crossings: Crossings,
}

impl HostState {
    /// A fresh state around a WASI context.
    pub(crate) fn new(wasi: WasiP1Ctx, clock: Clock) -> Self {
        HostState {
            wasi,
            memory: None,
            alloc: None,
            clock,
            current: 0,
            effective: 0,
            root_id: 0,
            root_alive: false,
            http: HashMap::new(),
            vm_config: Vec::new(),
            plugin_config: None,
            metrics: Metrics::default(),
            logs: Vec::new(),
            echo_logs: std::env::var_os("DOPPEL_HOST_LOG").is_some(),
            log_level: 0,
            next_token: 1,
            pending_calls: BTreeMap::new(),
            callouts: Vec::new(),
            call_response: None,
            shared_data: HashMap::new(),
            next_cas: 0,
            queues: Vec::new(),
            ready_queues: VecDeque::new(),
            tick_period_ms: 0,
            tick_base_ns: 0,
            clusters: ["primary", "shadow"]
                .into_iter()
                .map(String::from)
                .collect(),
            routes: Routes {
                rules: vec![(
                    doppel_filter::names::DEFAULT_VARIANT_HEADER.to_string(),
                    doppel_filter::names::SHADOW_VALUE.to_string(),
                    "shadow".to_string(),
                )],
                default_cluster: "primary".to_string(),
            },
            crossings: Crossings::default(),
        }
    }

    /// Whether a context id is alive.
    pub(crate) fn exists(&self, id: u32) -> bool {
        (id == self.root_id && self.root_alive) || self.http.contains_key(&id)
    }

    /// The context hostcalls act on: the effective context if one is set and alive, else the
    /// running one (Envoy's `contextOrEffectiveContext`).
    pub(crate) fn active(&self) -> u32 {
        if self.effective != 0 && self.exists(self.effective) {
            self.effective
        } else {
            self.current
        }
    }

    /// The HTTP stream of the active context, if it is one.
    pub(crate) fn active_http(&mut self) -> Option<&mut HttpCtx> {
        let id = self.active();
        self.http.get_mut(&id)
    }

    /// Records a log line (and echoes it to stderr when `DOPPEL_HOST_LOG` is set).
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        if self.echo_logs {
            eprintln!("wasm log [{level:?}] ctx {}: {message}", self.current);
        }
        self.logs.push(LogEntry {
            level,
            message,
            context: self.current,
        });
    }
}
