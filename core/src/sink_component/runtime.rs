//! The wasmtime side of sink components: one async engine (started on the
//! first load), its linker, the compile cache, and each loaded component's
//! pool of instances and its calls.
//!
//! A call's CPU budget counts the time its future is polled (the guest, and
//! host calls that return at once), not the time it waits suspended in the
//! host (the network, a sleep): when the epoch deadline fires, the budget
//! is checked against that ([`CpuMeter`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outbound::{OutboundClients, OutboundHooks};
use super::{ComponentSinkSpec, RequestView};
use crate::filter::shared::{
    CapturedOutput, CompileCache, DeadlineTicker, EPOCH_TICK, ImportRules, LOG_LINES_PER_CALL, LOG_MESSAGE_CAP,
    SandboxLimits, check_component_imports, deny_all_wasi, describe_trap, truncate,
};
use crate::settings::FilterSettings;

/// Host bindings of the `hookline:sink` world (`sdk/wit/sink.wit`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: [
            "../sdk/wit/deps/io.wit",
            "../sdk/wit/deps/clocks.wit",
            "../sdk/wit/deps/random.wit",
            "../sdk/wit/deps/filesystem.wit",
            "../sdk/wit/deps/sockets.wit",
            "../sdk/wit/deps/cli.wit",
            "../sdk/wit/deps/http.wit",
            "../sdk/wit/filter.wit",
            "../sdk/wit/sink.wit",
        ],
        world: "hookline:sink/sink",
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
        },
    });
}

use bindings::hookline::sink::types::{Outcome, Retry};

/// The WIT package this host implements.
pub(crate) const WIT_PACKAGE: &str = "hookline:sink";
pub(crate) const WIT_VERSION: &str = "0.1.0";
/// Interfaces a sink component may import (by package), besides the
/// world's own. Filesystem, environment and sockets are linked granting
/// nothing (no directory, no variable, every socket call denied): the
/// standard libraries of Rust and JavaScript import them.
const ALLOWED_PACKAGES: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "hookline:filter/types",
];
/// WASI resources an instance may hold at once.
const MAX_RESOURCES: usize = 4096;
/// An instance holding more than this after a call is not reused.
const MAX_POOLED_RESOURCES: usize = 64;
/// Longest reason kept from an outcome.
const REASON_CAP: usize = 2048;
/// The longest `validate-config` may take, sleeps and all (it runs at load
/// time, where nothing else bounds it).
const VALIDATE_TIME: Duration = Duration::from_secs(10);
/// Most random bytes one `wasi:random` call returns: a call is host time,
/// which the CPU budget does not count.
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// Loads sink components; the engine starts on the first load, so a daemon
/// without sink components pays nothing for them.
pub struct SinkComponentHost {
    cache_dir: Option<PathBuf>,
    defaults: FilterSettings,
    runtime: OnceLock<Result<Arc<Runtime>, String>>,
}

impl std::fmt::Debug for SinkComponentHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkComponentHost")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<SinkState>,
    cache: CompileCache,
    ticker: DeadlineTicker,
    clients: OutboundClients,
}

impl SinkComponentHost {
    /// The daemon's host: compiled components cached in
    /// `data_dir/sink-cache`, `cpu_ms` and `memory_mb` defaulting to
    /// `[filters]`'s.
    pub fn for_daemon(settings: &crate::Settings) -> Arc<Self> {
        Self::new(settings.filters.clone(), Some(settings.data_dir.join("sink-cache")))
    }

    /// A host whose compiled components are cached under `cache_dir`
    /// (memory only without one).
    pub fn new(defaults: FilterSettings, cache_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            cache_dir,
            defaults,
            runtime: OnceLock::new(),
        })
    }

    /// The `cpu_ms` and `memory_mb` a `sink` object that sets none gets.
    pub fn defaults(&self) -> &FilterSettings {
        &self.defaults
    }

    /// Forgets compiled components no loaded sink uses (by digest).
    pub fn forget_unused(&self, in_use: &std::collections::HashSet<&str>) -> usize {
        match self.runtime.get() {
            Some(Ok(runtime)) => runtime.cache.forget_unused(in_use),
            _ => 0,
        }
    }

    fn runtime(&self) -> Result<Arc<Runtime>, String> {
        self.runtime
            .get_or_init(|| Runtime::start(self.cache_dir.clone()).map(Arc::new))
            .clone()
    }

    /// Loads a component for one webhook: compiles it (or takes it from
    /// the cache), checks its imports, and runs `validate-config`.
    pub(crate) fn load(&self, spec: ComponentSinkSpec, app_id: &str) -> Result<Arc<LoadedSink>, String> {
        let runtime = self.runtime()?;
        let (component, digest) = runtime.cache.component(&runtime.engine, &spec.path)?;
        check_imports(&runtime.engine, &component)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot be linked: {e:#}"))?;
        let pre = bindings::SinkPre::new(pre).map_err(|e| {
            format!(
                "does not implement the {WIT_PACKAGE}@{WIT_VERSION} `sink` world (build it with the hookline-sink SDK): {e:#}"
            )
        })?;
        let file_name = spec
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loaded = Arc::new(LoadedSink {
            label: Arc::from(format!("{app_id}/{file_name}")),
            file_name,
            digest,
            spec,
            pre,
            runtime,
            pool: Mutex::default(),
        });
        loaded.validate_config()?;
        Ok(loaded)
    }
}

impl Runtime {
    fn start(cache_dir: Option<PathBuf>) -> Result<Self, String> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| format!("cannot start wasmtime for sink components: {e:#}"))?;
        let linker = sink_linker(&engine).map_err(|e| format!("cannot link the sink sandbox: {e:#}"))?;
        let cache_text = cache_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
        let cache = CompileCache::open(cache_dir, None, "sink component")
            .map_err(|e| format!("cannot set up the sink component cache {cache_text}: {e}"))?;
        let ticker = DeadlineTicker::start(&engine).map_err(|e| format!("cannot start the deadline ticker: {e}"))?;
        let clients = OutboundClients::new().map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        Ok(Self {
            engine,
            linker,
            cache,
            ticker,
            clients,
        })
    }
}

/// Refuses any import outside the sandbox's allowlist, naming it.
fn check_imports(engine: &Engine, component: &wasmtime::component::Component) -> Result<(), String> {
    check_component_imports(
        engine,
        component,
        &ImportRules {
            allowed: ALLOWED_PACKAGES,
            package: WIT_PACKAGE,
            version: WIT_VERSION,
            sdk: "hookline-sink",
            what: "sink components",
            allowed_text: "wasi:http/outgoing-handler to the webhook's allowed_hosts, wasi:io, wasi:clocks, wasi:random, wasi:cli, wasi:filesystem with nothing opened, wasi:sockets with every operation denied, and the world's `log`",
        },
    )
}

/// A call's CPU time: the time its future spends being polled. That is
/// the guest running, and the host working for it in calls that return at
/// once; a call waiting in the host (on the network, in a sleep) is
/// suspended, not polled, and does not count. Two clock reads per poll, not
/// per host call: a call hook would also run for every string lowered.
#[derive(Debug)]
struct CpuMeter {
    base: Instant,
    /// Nanoseconds polled in finished polls of the current call.
    spent: AtomicU64,
    /// When the poll under way began (nanoseconds past `base`, plus one);
    /// 0 between polls.
    polling_since: AtomicU64,
    budget: AtomicU64,
}

impl CpuMeter {
    fn new(budget: Duration) -> Self {
        Self {
            base: Instant::now(),
            spent: AtomicU64::new(0),
            polling_since: AtomicU64::new(0),
            budget: AtomicU64::new(nanos(budget)),
        }
    }

    fn start_call(&self, budget: Duration) {
        self.spent.store(0, Ordering::Relaxed);
        self.budget.store(nanos(budget), Ordering::Relaxed);
    }

    fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget.load(Ordering::Relaxed))
    }

    fn now(&self) -> u64 {
        nanos(self.base.elapsed())
    }

    fn used(&self) -> Duration {
        let since = self.polling_since.load(Ordering::Relaxed);
        let polling = if since == 0 {
            0
        } else {
            self.now().saturating_sub(since - 1)
        };
        Duration::from_nanos(self.spent.load(Ordering::Relaxed) + polling)
    }

    /// Runs `call`, counting the time spent polling it.
    async fn meter<F: std::future::Future>(&self, call: F) -> F::Output {
        let mut call = std::pin::pin!(call);
        std::future::poll_fn(|cx| {
            let start = self.now();
            self.polling_since.store(start + 1, Ordering::Relaxed);
            let result = call.as_mut().poll(cx);
            self.polling_since.store(0, Ordering::Relaxed);
            self.spent
                .fetch_add(self.now().saturating_sub(start), Ordering::Relaxed);
            result
        })
        .await
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Why a call was stopped by the host.
#[derive(Debug, thiserror::Error)]
#[error("ran past its CPU budget of {0} ms (cpu_ms; time waiting on the network does not count)")]
struct CpuBudgetSpent(u128);

/// A call still running at the attempt's deadline (a guest that keeps
/// waiting in the host, which the CPU budget leaves out).
#[derive(Debug, thiserror::Error)]
#[error("was still running when the attempt's time ran out (timeout_ms)")]
struct AttemptTimeSpent;

/// Per-instance state.
pub(crate) struct SinkState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    limits: SandboxLimits,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    label: Arc<str>,
    log_budget: u32,
    cpu: Arc<CpuMeter>,
}

impl WasiView for SinkState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for SinkState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl bindings::SinkImports for SinkState {
    fn log(&mut self, level: bindings::hookline::filter::types::Level, message: String) {
        use bindings::hookline::filter::types::Level;
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let message = truncate(&message, LOG_MESSAGE_CAP);
        let sink = &*self.label;
        match level {
            Level::Debug => tracing::debug!(sink, "{message}"),
            Level::Info => tracing::info!(sink, "{message}"),
            Level::Warn => tracing::warn!(sink, "{message}"),
            Level::Error => tracing::error!(sink, "{message}"),
        }
    }
}

impl bindings::hookline::filter::types::Host for SinkState {}
impl bindings::hookline::sink::types::Host for SinkState {}

struct HasState;
impl HasData for HasState {
    type Data<'a> = &'a mut SinkState;
}

/// Every WASI interface, linked against a context that grants nothing (no
/// directory, no variable, no socket), then outgoing HTTP through
/// [`OutboundHooks`], then the world's own imports.
fn sink_linker(engine: &Engine) -> wasmtime::Result<Linker<SinkState>> {
    let mut linker = Linker::<SinkState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::Sink::add_to_linker_imports::<SinkState, HasState>(&mut linker, &Default::default(), |s| s)?;
    bindings::hookline::filter::types::add_to_linker::<SinkState, HasState>(&mut linker, |s| s)?;
    bindings::hookline::sink::types::add_to_linker::<SinkState, HasState>(&mut linker, |s| s)?;
    Ok(linker)
}

/// A sink component loaded for one webhook, with its reusable instances.
pub(crate) struct LoadedSink {
    pub(crate) spec: ComponentSinkSpec,
    pub(crate) digest: String,
    pub(crate) file_name: String,
    label: Arc<str>,
    pre: bindings::SinkPre<SinkState>,
    runtime: Arc<Runtime>,
    /// Instances whose last call ended cleanly.
    pool: Mutex<Vec<Instance>>,
}

struct Instance {
    store: Store<SinkState>,
    bindings: bindings::Sink,
    deliver: wasmtime::component::Func,
}

/// What became of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The component said `delivered`.
    Delivered,
    /// The component said `retry`.
    Retry {
        /// Its least wait, when it named one.
        after: Option<Duration>,
        /// Why.
        reason: String,
    },
    /// The component said `reject`.
    Reject(String),
    /// The call failed: a trap, the CPU budget, the memory cap. Retried.
    Failed(String),
}

type DeliverParams<'a> = (RequestView<'a>,);
type DeliverResults = (Outcome,);

#[allow(unsafe_code)]
fn deliver_func<'a>(
    func: wasmtime::component::Func,
) -> wasmtime::component::TypedFunc<DeliverParams<'a>, DeliverResults> {
    // SAFETY: every `Func` passed here passed `Func::typed` with these
    // parameter and result types in `LoadedSink::instantiate`; lifetimes do
    // not change how a type lowers.
    unsafe { wasmtime::component::TypedFunc::new_unchecked(func) }
}

impl LoadedSink {
    fn budget(&self) -> Duration {
        Duration::from_millis(self.spec.cpu_ms.max(1))
    }

    fn ticks(duration: Duration) -> u64 {
        u64::try_from(duration.as_micros() / EPOCH_TICK.as_micros().max(1))
            .unwrap_or(u64::MAX)
            .max(1)
    }

    async fn instantiate(&self) -> Result<Instance, String> {
        let (stdout, stderr) = (CapturedOutput::default(), CapturedOutput::default());
        let wasi = deny_all_wasi(stdout.clone(), stderr.clone())
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let memory = usize::try_from(self.spec.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = SinkState {
            wasi,
            table,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                origins: self.spec.allowed_hosts.clone(),
                clients: self.runtime.clients.clone(),
                deadline: tokio::time::Instant::now(),
                max_response_bytes: self.spec.max_response_bytes,
                offline: true,
                label: self.label.clone(),
                max_request_bytes: memory.min(16 << 20),
                open: Arc::default(),
                refusals: Arc::default(),
            },
            limits: SandboxLimits::new(memory),
            stdout,
            stderr,
            label: self.label.clone(),
            log_budget: LOG_LINES_PER_CALL,
            cpu: Arc::new(CpuMeter::new(self.budget())),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|store| {
            let state = store.data();
            let now = tokio::time::Instant::now();
            if now >= state.hooks.deadline {
                return Err(AttemptTimeSpent.into());
            }
            let (used, budget) = (state.cpu.used(), state.cpu.budget());
            if used >= budget {
                return Err(CpuBudgetSpent(budget.as_millis()).into());
            }
            // The epoch also advances while the call waits, which is not
            // CPU: check again when the rest of the budget could be spent
            // (or the deadline comes), yielding the worker meanwhile.
            let next = (budget - used).min(state.hooks.deadline - now);
            Ok(UpdateDeadline::Yield(Self::ticks(next)))
        });
        store.set_epoch_deadline(Self::ticks(self.budget()));
        let cpu = store.data().cpu.clone();
        let bindings = cpu
            .meter(self.pre.instantiate_async(&mut store))
            .await
            .map_err(|e| format!("cannot be instantiated: {}", describe_error(&e)))?;
        let deliver = *bindings.func_deliver().func();
        deliver
            .typed::<DeliverParams<'static>, DeliverResults>(&store)
            .map_err(|e| format!("has a `deliver` export of an unexpected type: {e:#}"))?;
        Ok(Instance {
            store,
            bindings,
            deliver,
        })
    }

    /// Prepares an instance for a call that may run until `deadline`.
    fn start_call(&self, instance: &mut Instance, deadline: tokio::time::Instant, offline: bool) {
        let budget = self.budget();
        let state = instance.store.data_mut();
        state.log_budget = LOG_LINES_PER_CALL;
        state.cpu.start_call(budget);
        state.hooks.deadline = deadline;
        state.hooks.offline = offline;
        state.hooks.refusals.store(0, std::sync::atomic::Ordering::Relaxed);
        instance.store.set_epoch_deadline(Self::ticks(budget));
    }

    /// After a call: logs what the guest printed and what was refused, and
    /// pools the instance when the call ended cleanly.
    fn finish_call(&self, mut instance: Instance, clean: bool) {
        let state = instance.store.data_mut();
        for (stream, output) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            let (bytes, _) = output.take();
            for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.is_empty()) {
                if state.log_budget == 0 {
                    break;
                }
                state.log_budget -= 1;
                tracing::info!(sink = &*self.label, stream, "{}", truncate(line, LOG_MESSAGE_CAP));
            }
        }
        let held = state.table.iter_mut().count();
        if clean && held <= MAX_POOLED_RESOURCES {
            self.pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(instance);
        }
    }

    async fn take_instance(&self) -> Result<Instance, String> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match pooled {
            Some(instance) => Ok(instance),
            None => self.instantiate().await,
        }
    }

    /// Runs `validate-config` (offline: no request may go out), blocking
    /// the calling thread; loads are synchronous.
    fn validate_config(&self) -> Result<(), String> {
        let run = async {
            let _ticking = self.runtime.ticker.hold();
            let mut instance = self.take_instance().await?;
            self.start_call(&mut instance, tokio::time::Instant::now() + VALIDATE_TIME, true);
            let cpu = instance.store.data().cpu.clone();
            let result = cpu
                .meter(
                    instance
                        .bindings
                        .call_validate_config(&mut instance.store, &self.spec.config),
                )
                .await;
            let result = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(format!(
                    "config refused by the sink: {}",
                    truncate(&message, REASON_CAP)
                )),
                Err(e) => Err(format!("trapped in validate-config: {}", describe_error(&e))),
            };
            // Never pooled: it ran on this throwaway runtime, which a task
            // it left behind would not outlive.
            self.finish_call(instance, false);
            result
        };
        let run = async {
            tokio::time::timeout(VALIDATE_TIME, run).await.unwrap_or_else(|_| {
                Err(format!(
                    "validate-config did not return within {} s (it runs when the app loads and may not wait on anything)",
                    VALIDATE_TIME.as_secs()
                ))
            })
        };
        // Its own thread and runtime: this runs inside and outside tokio.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot start a runtime for validate-config: {e}"))?
                        .block_on(run)
                })
                .join()
                .unwrap_or_else(|_| Err("validate-config panicked".to_string()))
        })
    }

    /// Delivers one request: runs `deliver` on a pooled (or new) instance.
    pub(crate) async fn deliver(&self, request: RequestView<'_>, timeout: Duration) -> CallOutcome {
        let _ticking = self.runtime.ticker.hold();
        let mut instance = match self.take_instance().await {
            Ok(instance) => instance,
            Err(e) => return CallOutcome::Failed(e),
        };
        self.start_call(&mut instance, tokio::time::Instant::now() + timeout, false);
        let func = deliver_func(instance.deliver);
        let cpu = instance.store.data().cpu.clone();
        let result = cpu
            .meter(func.call_async(&mut instance.store, (request,)))
            .await
            .map(|(outcome,)| outcome);
        let (clean, outcome) = match result {
            Ok(Outcome::Delivered) => (true, CallOutcome::Delivered),
            Ok(Outcome::Retry(Retry { after_ms, reason })) => (
                true,
                CallOutcome::Retry {
                    after: after_ms.map(Duration::from_millis),
                    reason: truncate(&reason, REASON_CAP).to_string(),
                },
            ),
            Ok(Outcome::Reject(reason)) => (true, CallOutcome::Reject(truncate(&reason, REASON_CAP).to_string())),
            Err(e) => (false, CallOutcome::Failed(describe_error(&e))),
        };
        self.finish_call(instance, clean);
        outcome
    }
}

/// A failed call in words: the CPU budget, or the trap as filters name it.
fn describe_error(error: &wasmtime::Error) -> String {
    if let Some(spent) = error.downcast_ref::<CpuBudgetSpent>() {
        return spent.to_string();
    }
    if let Some(spent) = error.downcast_ref::<AttemptTimeSpent>() {
        return spent.to_string();
    }
    describe_trap(error)
}
