//! The compile cache: compiled components in memory and, signed, on disk
//! (`data_dir/filter-cache`), with the hook the binary uses to hand back
//! what a compilation freed.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::metrics::Metrics;

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

/// Compiled filter components: in memory by content and engine hash, so
/// one file used by many webhooks compiles once, and on disk (signed with
/// the daemon's cache key) so a restart does not compile again.
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    /// Signs and checks the on-disk entries (with `dir`).
    key: Option<[u8; 32]>,
    compiled: Mutex<HashMap<String, Component>>,
    /// One lock per key being loaded: loads of one component (many
    /// webhooks, a start's background loads and a reload) wait for the
    /// first, then take its result from memory, rather than all compile.
    loading: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
    /// What it compiles, for its log lines (`filter`, `sink component`).
    noun: &'static str,
    /// Components compiled from source in this process.
    compilations: Counter,
    /// Components loaded from the on-disk cache.
    hits: Counter,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    /// A cache under `dir` (memory only without one); `metrics`, when
    /// given, count compilations and cache hits.
    /// `noun` names what it compiles in its log lines (`filter`).
    pub(crate) fn open(dir: Option<PathBuf>, metrics: Option<&Metrics>, noun: &'static str) -> std::io::Result<Self> {
        let key = dir.as_deref().map(cache_key).transpose()?;
        Ok(Self {
            dir,
            key,
            compiled: Mutex::default(),
            loading: Mutex::default(),
            noun,
            compilations: metrics.map(|m| m.filter_compilations.clone()).unwrap_or_default(),
            hits: metrics.map(|m| m.filter_cache_hits.clone()).unwrap_or_default(),
        })
    }

    /// The component of the file at `path`, compiled for `engine` (or
    /// taken from memory or disk), and its key (content and engine hash).
    pub(crate) fn component(&self, engine: &Engine, path: &Path) -> Result<(Component, String), String> {
        let bytes = read_component_file(path)?;
        let key = cache_key_of(engine, &bytes);
        let lock = self
            .loading
            .lock()
            .expect("loading lock is never held across a panic")
            .entry(key.clone())
            .or_default()
            .clone();
        let loaded = {
            let _one_at_a_time = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.load(engine, path, &bytes, key.clone())
        };
        let mut loading = self.loading.lock().expect("loading lock is never held across a panic");
        // The map's entry and this one: nobody else waits.
        if std::sync::Arc::strong_count(&lock) == 2 {
            loading.remove(&key);
        }
        loaded
    }

    /// The key [`Self::component`] gives the file at `path` (its content
    /// and the engine's hash), without compiling it: what an app's
    /// fingerprint needs before its filters are loaded.
    pub(crate) fn key_of(&self, engine: &Engine, path: &Path) -> Result<String, String> {
        Ok(cache_key_of(engine, &read_component_file(path)?))
    }

    fn load(&self, engine: &Engine, path: &Path, bytes: &[u8], key: String) -> Result<(Component, String), String> {
        if let Some(component) = self
            .compiled
            .lock()
            .expect("compiled lock is never held across a panic")
            .get(&key)
        {
            return Ok((component.clone(), key));
        }
        let cached = self.dir.as_ref().map(|dir| dir.join(format!("{key}.cwasm")));
        if let (Some(file), Some(mac_key)) = (cached.as_ref().filter(|f| f.is_file()), &self.key) {
            match load_precompiled(engine, mac_key, file) {
                Ok(component) => {
                    self.hits.inc();
                    touch(file);
                    self.remember(key.clone(), &component);
                    return Ok((component, key));
                }
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "ignoring an unusable cached {}", self.noun)
                }
            }
        }
        // A language runtime (CPython, StarlingMonkey) takes seconds to
        // compile; the two lines say what a start or reload is waiting on.
        let started = std::time::Instant::now();
        tracing::info!(file = %path.display(), kib = bytes.len() >> 10, "compiling {}", self.noun);
        let component = match Component::new(engine, bytes) {
            Ok(component) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(file = %path.display(), ms, "{} compiled", self.noun);
                component
            }
            Err(e) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::warn!(file = %path.display(), ms, "{} did not compile", self.noun);
                return Err(format!(
                    "is not a valid WebAssembly component (build it for wasm32-wasip2): {e:#}"
                ));
            }
        };
        self.compilations.inc();
        if let (Some(file), Some(mac_key)) = (cached, &self.key)
            && let Err(error) = store_precompiled(&component, mac_key, &file)
        {
            tracing::warn!(file = %file.display(), %error, "cannot cache the compiled {}", self.noun);
        }
        if let Some(hook) = AFTER_COMPILE.get() {
            hook();
        }
        self.remember(key.clone(), &component);
        Ok((component, key))
    }

    /// Forgets compiled components no loaded filter uses (by key), and
    /// removes on-disk entries unused for a week; returns how many were
    /// forgotten from memory.
    pub(crate) fn forget_unused(&self, in_use: &HashSet<&str>) -> usize {
        let mut compiled = self
            .compiled
            .lock()
            .expect("compiled lock is never held across a panic");
        let before = compiled.len();
        compiled.retain(|key, _| in_use.contains(key.as_str()));
        let forgotten = before - compiled.len();
        drop(compiled);
        if let Some(dir) = &self.dir {
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

/// A component's cache key: the SHA-256 of its bytes (not
/// `DefaultHasher`, whose output may change between Rust releases and
/// would orphan the on-disk cache) and the engine's compatibility hash.
fn cache_key_of(engine: &Engine, bytes: &[u8]) -> String {
    let mut engine_hash = Sha256Hasher::default();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    format!("{}-{:016x}", hex::encode(Sha256::digest(bytes)), engine_hash.finish())
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
            "is {} MiB, more than the {} MiB a component may be",
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
            "grew past the {} MiB a component may be",
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
fn prune_cache(dir: &Path, in_use: &HashSet<&str>, keep: std::time::Duration) -> usize {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn test_engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
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
        let engine = test_engine();
        let host = CompileCache::open(Some(cache.clone()), None, "filter").unwrap();
        let before = AFTER_COMPILE_CALLS.load(Ordering::SeqCst);
        host.component(&engine, &wasm).unwrap();
        assert_eq!(
            AFTER_COMPILE_CALLS.load(Ordering::SeqCst),
            before + 1,
            "a compilation runs the hook"
        );
        host.component(&engine, &wasm).unwrap();
        let restarted = CompileCache::open(Some(cache), None, "filter").unwrap();
        restarted.component(&engine, &wasm).unwrap();
        assert_eq!(
            AFTER_COMPILE_CALLS.load(Ordering::SeqCst),
            before + 1,
            "components from memory or the compile cache do not run it"
        );
    }

    #[test]
    fn compiled_components_no_filter_uses_are_forgotten() {
        let host = CompileCache::open(None, None, "filter").unwrap();
        // Put in directly: compiling through `component` would run the
        // after-compile hook another test counts.
        let empty = Component::new(&test_engine(), "(component)").unwrap();
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
}
