//! The wasmtime side: the engine, loading filters (through the compile
//! cache and the sandbox's linker), and each loaded filter's pool of
//! instances and its calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Store};

use super::cache::CompileCache;
use super::convert::{BatchView, ContextView, event_views, from_wit};
use super::lift::{BoundedString, Budget, FilterResult, Overrun, VerdictOut, with_budget};
use super::output::CALL_OUTPUT_CAP;
use super::sandbox::{
    HostState, LOG_LINES_PER_CALL, LOG_MESSAGE_CAP, WIT_PACKAGE, WIT_VERSION, bindings, check_imports, sandbox_linker,
    truncate,
};
use super::ticker::{DeadlineTicker, EPOCH_TICK};
use super::{FilterError, FilterSpec};
use crate::event::Event;
use crate::metrics::{Metrics, VerdictLabels};
use crate::settings::FilterSettings;

/// The `verdict` label values of `hookline_filter_calls_total`.
const VERDICT_LABELS: [&str; 5] = ["keep", "drop", "select", "replace", "error"];
/// Largest total of event bytes a filter may return.
const OUTPUT_BYTES_CAP: usize = 64 << 20;

/// Loads filters: compiles them (through the compile cache) and links
/// them into the sandbox.
pub struct FilterHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    /// Advances the epoch (the deadlines' clock) while guest code runs.
    ticker: DeadlineTicker,
    defaults: FilterSettings,
    /// Calls by verdict, in [`VERDICT_LABELS`] order (resolved once, so a
    /// call does not look its label up).
    calls: [Counter; 5],
    /// Time per call.
    duration: Histogram,
    /// Background loads under way: each component's path, and how many.
    loading: Mutex<std::collections::BTreeMap<PathBuf, usize>>,
    /// Background loads running at once, at most (one per core: a
    /// language runtime's compilation is seconds of CPU).
    load_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for FilterHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterHost")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl FilterHost {
    /// The daemon's host: `settings.filters`, compiled components cached in
    /// `data_dir/filter-cache`.
    pub(crate) fn for_daemon(settings: &crate::Settings, metrics: Option<&Metrics>) -> Result<Arc<Self>, FilterError> {
        Self::new(
            settings.filters.clone(),
            Some(settings.data_dir.join("filter-cache")),
            metrics,
        )
    }

    /// A host whose compiled components are cached under `cache_dir`.
    /// `metrics`, when given, counts compilations and cache hits.
    pub fn new(
        defaults: FilterSettings,
        cache_dir: Option<PathBuf>,
        metrics: Option<&Metrics>,
    ) -> Result<Arc<Self>, FilterError> {
        let fail = |message: String| FilterError {
            path: "<host>".to_string(),
            message,
        };
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| fail(format!("cannot start wasmtime: {e:#}")))?;
        let linker = sandbox_linker(&engine).map_err(|e| fail(format!("cannot link the sandbox: {e:#}")))?;
        let cache_text = cache_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
        let cache = CompileCache::open(cache_dir, metrics, "filter")
            .map_err(|e| fail(format!("cannot set up the filter cache {cache_text}: {e}")))?;
        let ticker =
            DeadlineTicker::start(&engine).map_err(|e| fail(format!("cannot start the deadline ticker: {e}")))?;
        Ok(Arc::new(Self {
            engine,
            ticker,
            linker,
            cache,
            defaults,
            calls: {
                let family = metrics.map(|m| m.filter_calls.clone()).unwrap_or_default();
                VERDICT_LABELS.map(|verdict| family.get_or_create(&VerdictLabels { verdict }).clone())
            },
            duration: metrics
                .map(|m| m.filter_duration.clone())
                .unwrap_or_else(|| Histogram::new(std::iter::empty())),
            loading: Mutex::default(),
            load_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
        }))
    }

    /// The daemon-wide filter defaults (`[filters]`).
    pub fn defaults(&self) -> &FilterSettings {
        &self.defaults
    }

    /// Loads a filter for one (app, webhook): compiles it (or takes it from
    /// the cache), checks its imports, and runs `validate-config`.
    pub fn load(
        self: &Arc<Self>,
        spec: FilterSpec,
        app_id: &str,
        webhook_id: &str,
    ) -> Result<Arc<LoadedFilter>, FilterError> {
        let path_text = spec.path.display().to_string();
        let fail = |message: String| FilterError {
            path: path_text.clone(),
            message,
        };
        let (component, digest) = self.cache.component(&self.engine, &spec.path).map_err(&fail)?;
        check_imports(&self.engine, &component).map_err(&fail)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("cannot be linked: {e:#}")))?;
        let pre = bindings::FilterPre::new(pre).map_err(|e| {
            fail(format!(
                "does not implement the {WIT_PACKAGE}@{WIT_VERSION} `filter` world (build it with the hookline-filter SDK): {e:#}"
            ))
        })?;
        let loaded = Arc::new(LoadedFilter {
            digest,
            label: Arc::from(format!(
                "{app_id}/{}/{}",
                hookline_sink_api::redact_for_logs(webhook_id),
                spec.path.display()
            )),
            spec,
            pre,
            host: self.clone(),
            pool: Mutex::default(),
            max_output_events: self.defaults.max_output_events,
        });
        loaded.validate_config()?;
        Ok(loaded)
    }

    /// A chain of `specs` for one (app, webhook) that loads in the
    /// background, as [`Self::load`] would, in order: the daemon's start
    /// serves ingest before language runtimes have compiled. Only reading
    /// each file (for its key) happens here, so a missing file is still
    /// refused at once. Runs on the Tokio runtime's blocking pool, at most
    /// one load per core at a time; [`Self::loading`] lists what is under way.
    pub fn load_in_background(
        self: &Arc<Self>,
        specs: Vec<FilterSpec>,
        app_id: &str,
        webhook_id: &str,
    ) -> Result<super::FilterChain, FilterError> {
        let mut digests = Vec::with_capacity(specs.len());
        for spec in &specs {
            let key = self
                .cache
                .key_of(&self.engine, &spec.path)
                .map_err(|message| FilterError {
                    path: spec.path.display().to_string(),
                    message,
                })?;
            digests.push(key);
        }
        let (sender, receiver) = tokio::sync::watch::channel(None);
        {
            let mut loading = self.loading.lock().expect("loading lock is never held across a panic");
            for spec in &specs {
                *loading.entry(spec.path.clone()).or_default() += 1;
            }
        }
        let (host, chain_specs) = (self.clone(), specs.clone());
        let (app_id, webhook_id) = (app_id.to_string(), webhook_id.to_string());
        let load = move || {
            let mut filters = Vec::with_capacity(chain_specs.len());
            for spec in chain_specs.iter().cloned() {
                match host.load(spec, &app_id, &webhook_id) {
                    Ok(filter) => filters.push(filter),
                    Err(error) => {
                        tracing::error!(app = %app_id, webhook = %hookline_sink_api::redact_for_logs(&webhook_id),
                            %error, "a filter loading in the background failed; the app's batches wait in the store");
                        host.done_loading(&chain_specs);
                        return Err(error.to_string());
                    }
                }
            }
            host.done_loading(&chain_specs);
            Ok(Arc::from(filters))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let slots = self.load_slots.clone();
                runtime.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let result = tokio::task::spawn_blocking(load)
                        .await
                        .unwrap_or_else(|panic| Err(format!("loading the filters panicked: {panic}")));
                    sender.send_replace(Some(result));
                });
            }
            Err(_) => {
                std::thread::spawn(move || {
                    sender.send_replace(Some(load()));
                });
            }
        }
        Ok(super::FilterChain::loading(specs, digests, receiver))
    }

    fn done_loading(&self, specs: &[FilterSpec]) {
        let mut loading = self.loading.lock().expect("loading lock is never held across a panic");
        for spec in specs {
            if let Some(count) = loading.get_mut(&spec.path) {
                *count -= 1;
                if *count == 0 {
                    loading.remove(&spec.path);
                }
            }
        }
    }

    /// The filter files whose background loads are under way.
    pub fn loading(&self) -> Vec<PathBuf> {
        self.loading
            .lock()
            .expect("loading lock is never held across a panic")
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets compiled components no loaded filter uses (by digest), so
    /// every rebuild of a filter does not keep its old code in memory.
    /// Loaded filters keep what they use; a filter loaded again later comes
    /// from the on-disk cache.
    pub fn forget_unused(&self, in_use: &std::collections::HashSet<&str>) -> usize {
        self.cache.forget_unused(in_use)
    }
}

/// An instance holding more than this after a call is not reused.
const MAX_POOLED_RESOURCES: usize = 64;
/// The least time `validate-config` (and instantiation) may take.
const MIN_VALIDATE_BUDGET: Duration = Duration::from_secs(1);

/// A filter loaded for one (app, webhook), with its reusable instances.
pub struct LoadedFilter {
    spec: FilterSpec,
    /// Content (and engine) hash of the component: a changed file is a
    /// changed app on reload.
    digest: String,
    label: Arc<str>,
    pre: bindings::FilterPre<HostState>,
    host: Arc<FilterHost>,
    /// Instances that finished their last call cleanly; one that trapped or
    /// erred is dropped, never reused.
    pool: Mutex<Vec<Instance>>,
    max_output_events: usize,
}

impl std::fmt::Debug for LoadedFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFilter")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: bindings::Filter,
    /// The `filter` export, type-checked at instantiation against
    /// [`FilterParams`] and [`FilterResults`] (see [`filter_func`]).
    filter: wasmtime::component::Func,
}

impl LoadedFilter {
    /// The entry this filter was loaded from.
    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// The component's content hash.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn error(&self, message: impl Into<String>) -> FilterError {
        FilterError {
            path: self.spec.path.display().to_string(),
            message: message.into(),
        }
    }

    fn instantiate(&self) -> Result<Instance, FilterError> {
        let memory = usize::try_from(self.spec.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = HostState::new(self.label.clone(), memory, self.call_budget());
        let mut store = Store::new(&self.host.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation is a one-time cost, bounded like validate-config.
        store.set_epoch_deadline(Self::deadline_ticks(self.validate_budget()));
        store.epoch_deadline_trap();
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.error(format!("cannot be instantiated: {e:#}")))?;
        let filter = *bindings.func_filter().func();
        // The borrowed views must lower exactly as the generated types do:
        // this type check is what makes `filter_func` sound.
        filter
            .typed::<FilterParams<'static>, FilterResults>(&store)
            .map_err(|e| self.error(format!("has a `filter` export of an unexpected type: {e:#}")))?;
        Ok(Instance {
            store,
            bindings,
            filter,
        })
    }

    /// The CPU deadline of one call.
    fn call_budget(&self) -> Duration {
        Duration::from_millis(self.spec.cpu_ms.max(1))
    }

    /// `validate-config`'s budget: at least [`MIN_VALIDATE_BUDGET`]. It runs
    /// once per load, not per batch, and a language runtime's first call
    /// (CPython's, say) can take longer than a batch's budget on a busy
    /// host.
    fn validate_budget(&self) -> Duration {
        self.call_budget().max(MIN_VALIDATE_BUDGET)
    }

    /// `budget` in epoch ticks.
    fn deadline_ticks(budget: Duration) -> u64 {
        let ticks = budget.as_micros() / EPOCH_TICK.as_micros().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    /// Runs `work` on a pooled (or fresh) instance; the instance goes back to
    /// the pool only if the call succeeded.
    fn with_instance<R>(
        &self,
        budget: Duration,
        work: impl FnOnce(&mut Instance) -> Result<R, FilterError>,
    ) -> Result<R, FilterError> {
        let _ticking = self.host.ticker.hold();
        let pooled = self.pool.lock().expect("pool lock is never held across a panic").pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        instance.store.data_mut().log_budget = LOG_LINES_PER_CALL;
        instance.store.set_epoch_deadline(Self::deadline_ticks(budget));
        instance.store.data_mut().clock.start_call(budget);
        let result = match work(&mut instance) {
            Ok(_) if instance.store.data().clock.overran() => {
                Err(self.error("ran past its CPU deadline (cpu_ms) while sleeping".to_string()))
            }
            result => result,
        };
        self.forward_output(&mut instance);
        // WASI resources the guest left open (pollables, streams) stay in
        // the instance's table: one that keeps more than a few is not
        // reused, so leaks cannot pile up call after call.
        let held = instance.store.data_mut().table.iter_mut().count();
        if held > MAX_POOLED_RESOURCES {
            tracing::debug!(
                filter = &*self.label,
                held,
                "the filter left WASI resources open; its instance is not reused"
            );
        } else if result.is_ok() {
            self.pool
                .lock()
                .expect("pool lock is never held across a panic")
                .push(instance);
        }
        result
    }

    /// Logs what the call printed, line by line, from the same per-call
    /// budget of lines as the `log` import.
    fn forward_output(&self, instance: &mut Instance) {
        let state = instance.store.data_mut();
        let outputs = [("stdout", state.stdout.take()), ("stderr", state.stderr.take())];
        for (stream, (bytes, dropped_bytes)) in outputs {
            let mut dropped_lines = 0usize;
            for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.is_empty()) {
                if !state.spend_log_line() {
                    dropped_lines += 1;
                    continue;
                }
                tracing::info!(filter = &*self.label, stream, "{}", truncate(line, LOG_MESSAGE_CAP));
            }
            if dropped_bytes > 0 || dropped_lines > 0 {
                tracing::warn!(
                    filter = &*self.label,
                    stream,
                    dropped_bytes,
                    dropped_lines,
                    "the filter printed more in one call than is logged ({LOG_LINES_PER_CALL} lines, {} KiB); the rest was dropped",
                    CALL_OUTPUT_CAP / 1024
                );
            }
        }
    }

    /// Runs `validate-config` with this entry's config.
    pub fn validate_config(&self) -> Result<(), FilterError> {
        self.with_instance(self.validate_budget(), |instance| {
            match instance
                .bindings
                .call_validate_config(&mut instance.store, &self.spec.config)
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(self.error(format!("config refused by the filter: {message}"))),
                Err(trap) => Err(self.error(format!("trapped in validate-config: {}", describe_trap(&trap)))),
            }
        })
    }

    /// Runs the filter once and says what it decided; the events of a
    /// `replace` come back beside the decision, the others are applied to
    /// the input with [`Decision::apply`] (without copying events).
    pub fn call_verbose(
        &self,
        app_id: &str,
        webhook_id: &str,
        time_ms: u64,
        events: &[Event],
    ) -> Result<(Decision, Option<Vec<Event>>), FilterError> {
        let started = std::time::Instant::now();
        let result = self.call_once(app_id, webhook_id, time_ms, events);
        self.host.duration.observe(started.elapsed().as_secs_f64());
        // Indices into VERDICT_LABELS.
        let verdict = match &result {
            Ok((Decision::Keep, _)) => 0,
            Ok((Decision::Drop(_), _)) => 1,
            Ok((Decision::Select(_), _)) => 2,
            Ok((Decision::Replace(_), _)) => 3,
            Err(_) => 4,
        };
        self.host.calls[verdict].inc();
        result
    }

    fn call_once(
        &self,
        app_id: &str,
        webhook_id: &str,
        time_ms: u64,
        events: &[Event],
    ) -> Result<(Decision, Option<Vec<Event>>), FilterError> {
        let mut scratch = String::new();
        let views = event_views(events, &mut scratch);
        let batch = BatchView {
            time_ms,
            events: &views,
        };
        let ctx = ContextView {
            app_id,
            webhook: webhook_id,
            config: &self.spec.config,
        };
        let budget = Budget {
            events: self.max_output_events,
            bytes: OUTPUT_BYTES_CAP,
        };
        let verdict = self.with_instance(self.call_budget(), |instance| {
            let (result, overrun) = with_budget(budget, || {
                filter_func(instance.filter).call(&mut instance.store, (ctx, batch))
            });
            match (result, overrun) {
                (Ok((Ok(verdict),)), _) => Ok(verdict),
                (Ok((Err(message),)), _) => Err(self.error(format!("returned an error: {}", message.0))),
                (Err(_), Some(Overrun::Events(n))) => Err(self.error(format!(
                    "replace: {n} events is more than filters.max_output_events ({})",
                    self.max_output_events
                ))),
                (Err(_), Some(Overrun::Bytes)) => Err(self.error(format!(
                    "returned more than {} MiB of text (a replace's events are capped at that)",
                    OUTPUT_BYTES_CAP >> 20
                ))),
                (Err(trap), None) => Err(self.error(format!("trapped: {}", describe_trap(&trap)))),
            }
        })?;
        match verdict {
            VerdictOut::Keep => Ok((Decision::Keep, None)),
            VerdictOut::Drop(BoundedString(reason)) => {
                tracing::debug!(app = app_id, filter = &*self.label, %reason, "filter dropped a batch");
                Ok((Decision::Drop(reason), None))
            }
            VerdictOut::Select(indices) => {
                let mut seen = vec![false; events.len()];
                for &index in &indices {
                    let i = index as usize;
                    if i >= events.len() {
                        return Err(self.error(format!(
                            "select: index {index} is out of range for {} events",
                            events.len()
                        )));
                    }
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(self.error(format!("select: index {index} appears twice")));
                    }
                }
                Ok((Decision::Select(indices), None))
            }
            VerdictOut::Replace(batch) => {
                // The lift already held the list to max_output_events and its
                // strings to OUTPUT_BYTES_CAP; the JSON written here is about
                // as long as those strings.
                let mut out = Vec::with_capacity(batch.events.0.len());
                for (i, event) in batch.events.0.into_iter().enumerate() {
                    out.push(from_wit(&event.into(), i).map_err(|m| self.error(m))?);
                }
                Ok((Decision::Replace(out.len()), Some(out)))
            }
        }
    }
}

/// The `filter` export's parameters, lowered from borrowed views.
type FilterParams<'a> = (ContextView<'a>, BatchView<'a>);
/// The `filter` export's results.
type FilterResults = (FilterResult,);

/// The `filter` export typed over borrowed views.
#[allow(unsafe_code)]
fn filter_func<'a>(func: wasmtime::component::Func) -> wasmtime::component::TypedFunc<FilterParams<'a>, FilterResults> {
    // SAFETY: every `Func` passed here passed `Func::typed` with these
    // parameter and result types in `LoadedFilter::instantiate`; lifetimes do
    // not change how a type lowers.
    unsafe { wasmtime::component::TypedFunc::new_unchecked(func) }
}

/// What a filter decided, for `hookline filter run` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver the batch unchanged.
    Keep,
    /// Deliver nothing, for this reason.
    Drop(String),
    /// Deliver the events at these indices.
    Select(Vec<u32>),
    /// Deliver a new batch of this many events.
    Replace(usize),
}

impl Decision {
    /// The events this decision delivers from `events` (moved, not copied);
    /// `replaced` holds a `replace`'s events. `None`: deliver nothing.
    pub fn apply(&self, events: Vec<Event>, replaced: Option<Vec<Event>>) -> Option<Vec<Event>> {
        match self {
            Decision::Keep => Some(events),
            Decision::Drop(_) => None,
            // Indices were checked distinct and in range.
            Decision::Select(indices) if indices.is_sorted() => {
                // The usual case, a subset in order: keep it in place.
                let mut wanted = indices.iter().map(|&i| i as usize).peekable();
                let mut index = 0;
                let mut events = events;
                events.retain(|_| {
                    let keep = wanted.next_if_eq(&index).is_some();
                    index += 1;
                    keep
                });
                Some(events)
            }
            Decision::Select(indices) => {
                let mut slots: Vec<Option<Event>> = events.into_iter().map(Some).collect();
                Some(indices.iter().filter_map(|&i| slots[i as usize].take()).collect())
            }
            Decision::Replace(_) => replaced,
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Keep => write!(f, "keep"),
            Decision::Drop(reason) => write!(f, "drop ({reason})"),
            Decision::Select(indices) => write!(f, "select {indices:?}"),
            Decision::Replace(n) => write!(f, "replace ({n} events)"),
        }
    }
}

/// A trap in words: deadline, memory cap, or the guest's own trap.
pub(crate) fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "ran past its CPU deadline (cpu_ms)".to_string(),
        Some(wasmtime::Trap::UnreachableCodeReached) => "panicked or aborted (wasm `unreachable`)".to_string(),
        Some(trap) => trap.to_string(),
        None => {
            // The limiter's refusal to grow memory surfaces as an error whose
            // root cause names the growth; the backtrace above it is noise.
            let cause = error.root_cause().to_string();
            if cause.contains("memory cap") {
                format!("hit its memory cap (memory_mb): {cause}")
            } else {
                truncate(&cause, 1024).to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                name: "n".into(),
                channel: format!("c{i}").into(),
                json: format!(r#"{{"name":"n","channel":"c{i}"}}"#).into(),
            })
            .collect()
    }

    fn channels(events: Option<Vec<Event>>) -> Vec<String> {
        events.unwrap().iter().map(|e| e.channel.to_string()).collect()
    }

    #[test]
    fn select_delivers_the_chosen_events_in_the_chosen_order() {
        let in_order = Decision::Select(vec![0, 2, 3]).apply(events(5), None);
        assert_eq!(channels(in_order), ["c0", "c2", "c3"]);
        let reordered = Decision::Select(vec![3, 0]).apply(events(5), None);
        assert_eq!(channels(reordered), ["c3", "c0"]);
        assert_eq!(channels(Decision::Keep.apply(events(2), None)), ["c0", "c1"]);
        assert!(Decision::Drop("x".into()).apply(events(2), None).is_none());
    }
}
