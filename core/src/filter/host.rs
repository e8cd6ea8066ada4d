//! The wasmtime side: engine, sandboxed linker, compile cache, instances.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::clock::{CallClock, CallClockData, CallClockView};
use super::convert::{BatchView, ContextView, event_views, from_wit};
use super::lift::{BoundedString, Budget, FilterResult, Overrun, VerdictOut, with_budget};
use super::limits::SandboxLimits;
use super::output::{CALL_OUTPUT_CAP, CapturedOutput};
use super::ticker::{DeadlineTicker, EPOCH_TICK};
use super::{FilterError, FilterSpec};
use crate::event::Event;
use crate::metrics::{Metrics, VerdictLabels};
use crate::settings::FilterSettings;

/// Host bindings of the `hookline:filter` world (`sdk/wit/filter.wit`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/filter.wit",
        world: "filter",
    });
}

pub(crate) use bindings::hookline::filter::types as wit;

/// The WIT package version this host implements.
const WIT_PACKAGE: &str = "hookline:filter";
const WIT_VERSION: &str = "0.1.0";
/// Interfaces a filter may import (by package), besides the world's `log`.
const ALLOWED_PACKAGES: &[&str] = &[
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    // Linked deny-all: every operation answers `access-denied` and no
    // socket is ever created (CPython and StarlingMonkey import it).
    "wasi:sockets/",
];
/// Lines a call may log, through the `log` import and its output together.
const LOG_LINES_PER_CALL: u32 = 100;
/// Longest log message kept from a filter.
const LOG_MESSAGE_CAP: usize = 4096;
/// The `verdict` label values of `hookline_filter_calls_total`.
const VERDICT_LABELS: [&str; 5] = ["keep", "drop", "select", "replace", "error"];
/// Largest total of event bytes a filter may return.
const OUTPUT_BYTES_CAP: usize = 64 << 20;

/// Runs after every compilation; see [`set_after_compile`].
static AFTER_COMPILE: OnceLock<fn()> = OnceLock::new();

/// Installs `hook` to run after each successful compilation, on the thread that
/// compiled. Compiling frees megabytes into the allocator's per-thread caches,
/// some on threads of the compiler's pool that may not allocate again for a
/// long time; the allocator is the binary's choice, so the binary decides
/// how to hand that memory back. Only the first call installs a hook.
pub fn set_after_compile(hook: fn()) {
    let _ = AFTER_COMPILE.set(hook);
}

/// Compiles and caches filter components, and holds the sandbox's linker.
pub struct FilterHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    /// Signs and checks the cache's entries (with `cache_dir`).
    cache_key: Option<[u8; 32]>,
    /// Compiled components by content and engine hash, so that one file used
    /// by many webhooks compiles once.
    compiled: Mutex<HashMap<String, Component>>,
    /// Advances the epoch (the deadlines' clock) while guest code runs.
    ticker: DeadlineTicker,
    defaults: FilterSettings,
    /// Components compiled from source in this process.
    compilations: Counter,
    /// Components loaded from the on-disk cache.
    cache_hits: Counter,
    /// Calls by verdict, in [`VERDICT_LABELS`] order (resolved once, so a
    /// call does not look its label up).
    calls: [Counter; 5],
    /// Time per call.
    duration: Histogram,
}

impl std::fmt::Debug for FilterHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterHost")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// Per-instance state: the WASI context (nothing granted) and limits.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: SandboxLimits,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    /// Where log lines come from.
    label: Arc<str>,
    /// Log lines left in the current call.
    log_budget: u32,
    /// The monotonic clock, whose sleeps end at the call's deadline.
    clock: CallClock,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// Takes one line from the call's log budget; false once it is spent.
    fn spend_log_line(&mut self) -> bool {
        let left = self.log_budget > 0;
        self.log_budget = self.log_budget.saturating_sub(1);
        left
    }
}

impl bindings::FilterImports for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        if !self.spend_log_line() {
            return;
        }
        let message = truncate(&message, LOG_MESSAGE_CAP);
        let filter = &*self.label;
        match level {
            wit::Level::Debug => tracing::debug!(filter, "{message}"),
            wit::Level::Info => tracing::info!(filter, "{message}"),
            wit::Level::Warn => tracing::warn!(filter, "{message}"),
            wit::Level::Error => tracing::error!(filter, "{message}"),
        }
    }
}

impl wit::Host for HostState {}

struct HasTable;
impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

struct HasState;
impl HasData for HasState {
    type Data<'a> = &'a mut HostState;
}

impl FilterHost {
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
        let cache_key = match &cache_dir {
            Some(dir) => Some(
                cache_key(dir).map_err(|e| fail(format!("cannot set up the filter cache {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let ticker =
            DeadlineTicker::start(&engine).map_err(|e| fail(format!("cannot start the deadline ticker: {e}")))?;
        Ok(Arc::new(Self {
            engine,
            ticker,
            linker,
            cache_dir,
            cache_key,
            compiled: Mutex::default(),
            defaults,
            compilations: metrics.map(|m| m.filter_compilations.clone()).unwrap_or_default(),
            cache_hits: metrics.map(|m| m.filter_cache_hits.clone()).unwrap_or_default(),
            calls: {
                let family = metrics.map(|m| m.filter_calls.clone()).unwrap_or_default();
                VERDICT_LABELS.map(|verdict| family.get_or_create(&VerdictLabels { verdict }).clone())
            },
            duration: metrics
                .map(|m| m.filter_duration.clone())
                .unwrap_or_else(|| Histogram::new(std::iter::empty())),
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
        let (component, digest) = self.component(&spec.path).map_err(&fail)?;
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

    /// The compiled component and its cache key (content and engine hash).
    fn component(&self, path: &Path) -> Result<(Component, String), String> {
        let bytes = read_component_file(path)?;
        // SHA-256, not `DefaultHasher`, whose output may change between Rust
        // releases and would orphan the on-disk cache.
        let mut engine_hash = Sha256Hasher::default();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let key = format!("{}-{:016x}", hex::encode(Sha256::digest(&bytes)), engine_hash.finish());
        if let Some(component) = self
            .compiled
            .lock()
            .expect("compiled lock is never held across a panic")
            .get(&key)
        {
            return Ok((component.clone(), key));
        }
        let cached = self.cache_dir.as_ref().map(|dir| dir.join(format!("{key}.cwasm")));
        if let (Some(file), Some(mac_key)) = (cached.as_ref().filter(|f| f.is_file()), &self.cache_key) {
            match load_precompiled(&self.engine, mac_key, file) {
                Ok(component) => {
                    self.cache_hits.inc();
                    touch(file);
                    self.remember(key.clone(), &component);
                    return Ok((component, key));
                }
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "ignoring an unusable cached filter")
                }
            }
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| format!("is not a valid WebAssembly component (build it for wasm32-wasip2): {e:#}"))?;
        self.compilations.inc();
        if let (Some(file), Some(mac_key)) = (cached, &self.cache_key)
            && let Err(error) = store_precompiled(&component, mac_key, &file)
        {
            tracing::warn!(file = %file.display(), %error, "cannot cache the compiled filter");
        }
        if let Some(hook) = AFTER_COMPILE.get() {
            hook();
        }
        self.remember(key.clone(), &component);
        Ok((component, key))
    }

    /// Forgets compiled components no loaded filter uses (by digest), so
    /// every rebuild of a filter does not keep its old code in memory.
    /// Loaded filters keep what they use; a filter loaded again later comes
    /// from the on-disk cache.
    pub fn forget_unused(&self, in_use: &std::collections::HashSet<&str>) -> usize {
        let mut compiled = self
            .compiled
            .lock()
            .expect("compiled lock is never held across a panic");
        let before = compiled.len();
        compiled.retain(|key, _| in_use.contains(key.as_str()));
        let forgotten = before - compiled.len();
        drop(compiled);
        if let Some(dir) = &self.cache_dir {
            let removed = prune_cache(dir, in_use, CACHE_KEEP_UNUSED);
            if removed > 0 {
                tracing::debug!(
                    removed,
                    "compiled filters unused for a week were removed from the cache"
                );
            }
        }
        forgotten
    }

    fn remember(&self, key: String, component: &Component) {
        self.compiled
            .lock()
            .expect("compiled lock is never held across a panic")
            .insert(key, component.clone());
    }
}

/// The key that signs the compiled filter cache, kept beside it (0600).
/// Compiled components are native code the daemon runs: one is trusted only
/// when this daemon's key signed it. A key file that others could read or
/// write is replaced, which invalidates every entry signed with it.
fn cache_key(dir: &Path) -> std::io::Result<[u8; 32]> {
    crate::private_fs::private_dir(dir)?;
    let file = dir.join(CACHE_KEY_FILE);
    if crate::private_fs::is_private_file(&file)
        && let Ok(key) = <[u8; 32]>::try_from(std::fs::read(&file)?.as_slice())
    {
        return Ok(key);
    }
    let key: [u8; 32] = rand::random();
    crate::private_fs::write_private(&file, &key)?;
    Ok(key)
}

/// WASI resources (pollables, streams…) an instance may hold at once.
const MAX_RESOURCES: usize = 4096;
/// An instance holding more than this after a call is not reused.
const MAX_POOLED_RESOURCES: usize = 64;

/// The largest filter file read (the biggest language runtimes are ~20 MB).
const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// Reads a filter file: a regular file (not a device such as `/dev/zero`,
/// which would never end) of bounded size.
fn read_component_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // Checked before opening: opening a FIFO would block until a writer
    // came, holding every reload behind it.
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if !metadata.is_file() {
        return Err("is not a regular file (a WebAssembly component file is expected)".to_string());
    }
    if metadata.len() > MAX_COMPONENT_BYTES {
        return Err(format!(
            "is {} MiB, more than the {} MiB a filter may be",
            metadata.len() >> 20,
            MAX_COMPONENT_BYTES >> 20
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(format!(
            "grew past the {} MiB a filter may be",
            MAX_COMPONENT_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// A `Hasher` over SHA-256: stable across Rust releases and platforms.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
    }
}

/// The cache key's file name in the cache directory.
const CACHE_KEY_FILE: &str = "cache.key";

/// A cache entry is two files: `KEY.cwasm`, the compiled component as
/// `Component::serialize` wrote it (so it can be mapped, not copied: its
/// code and the initial memory images are shared with the page cache and
/// paged in as used), and `KEY.cwasm.mac`, its HMAC-SHA256 with the cache
/// key.
const MAC_LEN: usize = 32;

/// How long a compiled filter no app uses stays in the on-disk cache (a
/// rollback to last week's filter loads without compiling); entries in use
/// are kept, and their age counts from their last load.
const CACHE_KEEP_UNUSED: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Marks a cache entry as used now (its age is its time since last use).
fn touch(file: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(file)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(error) = touched {
        tracing::debug!(file = %file.display(), %error, "cannot mark a cached filter as used");
    }
}

/// Removes the cache entries (component and MAC) whose key is not in use
/// and that were last used longer than `keep` ago; returns how many.
fn prune_cache(dir: &Path, in_use: &std::collections::HashSet<&str>, keep: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cwasm"))
        else {
            continue;
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok());
        if in_use.contains(key) || age.is_none_or(|age| age < keep) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            let _ = std::fs::remove_file(mac_file(&path));
            removed += 1;
        }
    }
    removed
}

/// The MAC file of a cache entry.
fn mac_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".mac");
    PathBuf::from(name)
}

/// Maps a component we compiled, signed and wrote ourselves.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, mac_key: &[u8; 32], file: &Path) -> Result<Component, String> {
    use std::io::Read;
    let mac = std::fs::read(mac_file(file)).map_err(|e| format!("its MAC file: {e}"))?;
    if mac.len() != MAC_LEN {
        return Err("its MAC file is not a MAC".to_string());
    }
    // Streamed: a large component is not read into memory just to check it.
    let mut expected = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key length");
    let mut reader = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        expected.update(&chunk[..n]);
    }
    expected
        .verify_slice(&mac)
        .map_err(|_| "not signed with this daemon's cache key (written by someone else?)".to_string())?;
    // SAFETY: the file is what this host serialized with
    // `Component::serialize`: its HMAC with the cache key, which only the
    // daemon's user can read, matched. The file could only change between
    // the check and the mapping through the owner-only (0700) cache
    // directory, whose writer could read the key as well. wasmtime also
    // checks the header and engine compatibility before using it.
    unsafe { Component::deserialize_file(engine, file) }.map_err(|e| format!("{e:#}"))
}

fn store_precompiled(component: &Component, mac_key: &[u8; 32], file: &Path) -> Result<(), String> {
    let compiled = component.serialize().map_err(|e| format!("{e:#}"))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key length");
    mac.update(&compiled);
    // The component first, then its MAC: a crash between the two leaves an
    // entry that fails its check and is compiled again.
    crate::private_fs::write_private(file, &compiled).map_err(|e| e.to_string())?;
    crate::private_fs::write_private(&mac_file(file), &mac.finalize().into_bytes()).map_err(|e| e.to_string())
}

/// Refuses any import outside the sandbox's allowlist, naming it.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), String> {
    for (name, _) in component.component_type().imports(engine) {
        if name == "log" || ALLOWED_PACKAGES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if let Some(rest) = name.strip_prefix(WIT_PACKAGE) {
            let version = rest.rsplit_once('@').map(|(_, v)| v).unwrap_or("");
            if version != WIT_VERSION {
                return Err(format!(
                    "was built against {WIT_PACKAGE}@{version}, but this Hookline provides {WIT_PACKAGE}@{WIT_VERSION}; rebuild it with a matching hookline-filter SDK"
                ));
            }
            continue;
        }
        return Err(format!(
            "imports `{name}`, which filters may not use (allowed: wasi:io, wasi:cli, wasi:clocks, wasi:random, wasi:filesystem with nothing opened, wasi:sockets with every operation denied, and the world's `log`)"
        ));
    }
    Ok(())
}

/// The linker with exactly the granted WASI interfaces (not the all-in-one
/// `add_to_linker`): `wasi:sockets` is linked against a context that
/// allows no TCP, UDP or name lookup and no address, so a guest that
/// imports it (CPython does) loads, and every call answers
/// `access-denied` before any socket exists.
fn sandbox_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sockets, sync};
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
    let mut l = Linker::<HostState>::new(engine);
    io::error::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    sync::io::poll::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    sync::io::streams::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(&mut l, HostState::clocks)?;
    // Not wasmtime-wasi's: a sleep there would outlast the call's deadline.
    clocks::monotonic_clock::add_to_linker::<HostState, CallClockData>(&mut l, |s| CallClockView {
        clock: &mut s.clock,
        table: &mut s.table,
    })?;
    random::random::add_to_linker::<HostState, WasiRandom>(&mut l, HostState::random)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(&mut l, HostState::random)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(&mut l, HostState::random)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(&mut l, HostState::filesystem)?;
    sync::filesystem::types::add_to_linker::<HostState, WasiFilesystem>(&mut l, HostState::filesystem)?;
    sockets::instance_network::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sockets::network::add_to_linker::<HostState, WasiSockets>(&mut l, &Default::default(), HostState::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sync::sockets::tcp::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sync::sockets::udp::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sync::sockets::udp_create_socket::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    bindings::Filter::add_to_linker::<HostState, HasState>(&mut l, |s| s)?;
    Ok(l)
}

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
        let (stdout, stderr) = (CapturedOutput::default(), CapturedOutput::default());
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            // wasi:sockets is linked deny-all (see `sandbox_linker`).
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let memory = usize::try_from(self.spec.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = HostState {
            wasi,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limits: SandboxLimits::new(memory),
            stdout,
            stderr,
            label: self.label.clone(),
            log_budget: 0,
            clock: CallClock::new(self.call_budget()),
        };
        let mut store = Store::new(&self.host.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
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

    /// [`Self::call_budget`] in epoch ticks.
    fn deadline_ticks(&self) -> u64 {
        let ticks = self.call_budget().as_micros() / EPOCH_TICK.as_micros().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    /// Runs `work` on a pooled (or fresh) instance; the instance goes back to
    /// the pool only if the call succeeded.
    fn with_instance<R>(&self, work: impl FnOnce(&mut Instance) -> Result<R, FilterError>) -> Result<R, FilterError> {
        let _ticking = self.host.ticker.hold();
        let pooled = self.pool.lock().expect("pool lock is never held across a panic").pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        instance.store.data_mut().log_budget = LOG_LINES_PER_CALL;
        instance.store.set_epoch_deadline(self.deadline_ticks());
        instance.store.data_mut().clock.start_call(self.call_budget());
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
        self.with_instance(|instance| {
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
        let verdict = self.with_instance(|instance| {
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
fn describe_trap(error: &wasmtime::Error) -> String {
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

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    static AFTER_COMPILE_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count_after_compile() {
        AFTER_COMPILE_CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn the_after_compile_hook_runs_once_per_compilation_and_not_on_cache_hits() {
        set_after_compile(count_after_compile);
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("empty.wat");
        // This is the only test that installs the hook, so the count is its own.
        std::fs::write(&wasm, "(component)").unwrap();
        let cache = dir.path().join("cache");
        let host = FilterHost::new(FilterSettings::default(), Some(cache.clone()), None).unwrap();
        let before = AFTER_COMPILE_CALLS.load(Ordering::SeqCst);
        host.component(&wasm).unwrap();
        assert_eq!(
            AFTER_COMPILE_CALLS.load(Ordering::SeqCst),
            before + 1,
            "a compilation runs the hook"
        );
        host.component(&wasm).unwrap();
        let restarted = FilterHost::new(FilterSettings::default(), Some(cache), None).unwrap();
        restarted.component(&wasm).unwrap();
        assert_eq!(
            AFTER_COMPILE_CALLS.load(Ordering::SeqCst),
            before + 1,
            "components from memory or the compile cache do not run it"
        );
    }

    #[test]
    fn compiled_components_no_filter_uses_are_forgotten() {
        let host = FilterHost::new(FilterSettings::default(), None, None).unwrap();
        // Put in directly: compiling through `component` would run the
        // after-compile hook another test counts.
        let empty = Component::new(&host.engine, "(component)").unwrap();
        host.remember("a".to_string(), &empty);
        host.remember("b".to_string(), &empty);
        let in_use = std::collections::HashSet::from(["a"]);
        assert_eq!(host.forget_unused(&in_use), 1);
        assert_eq!(host.forget_unused(&in_use), 0);
        assert!(host.compiled.lock().unwrap().contains_key("a"));
    }

    #[test]
    fn the_disk_cache_drops_entries_unused_for_longer_than_it_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let week_ago = std::time::SystemTime::now() - CACHE_KEEP_UNUSED - std::time::Duration::from_secs(60);
        for (key, modified) in [
            ("old-unused", week_ago),
            ("new-unused", std::time::SystemTime::now()),
            ("old-used", week_ago),
        ] {
            let file = dir.path().join(format!("{key}.cwasm"));
            std::fs::write(&file, "x").unwrap();
            std::fs::write(mac_file(&file), "m").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        }
        std::fs::write(dir.path().join(CACHE_KEY_FILE), "k").unwrap();
        let in_use = std::collections::HashSet::from(["old-used"]);
        assert_eq!(prune_cache(dir.path(), &in_use, CACHE_KEEP_UNUSED), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "cache.key",
                "new-unused.cwasm",
                "new-unused.cwasm.mac",
                "old-used.cwasm",
                "old-used.cwasm.mac"
            ]
        );
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
