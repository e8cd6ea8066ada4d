//! The app registry: the current set of apps, swapped atomically as a
//! whole on every (re)load, with each file's last good version kept when a
//! new version of it fails.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::Settings;
use crate::config::{App, AppLoader, EnvLookup, FileError, LoadDefaults, Secret, Webhook, is_app_file};
use crate::filter::FilterHost;
use crate::sinks::SinkRegistry;

/// One consistent view of every app. Ingest and delivery read it without
/// locks; a reload replaces it whole.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Bumped on every reload that changed something.
    pub generation: u64,
    by_id: HashMap<Arc<str>, Arc<App>>,
    by_key: HashMap<Arc<str>, Arc<App>>,
    files: BTreeMap<PathBuf, FileState>,
}

/// What the registry knows of one app file.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileState {
    /// The apps serving from this file (its last good version).
    pub apps: Vec<Arc<App>>,
    /// Why the file's current contents were refused, if they were.
    pub error: Option<FileError>,
}

impl Snapshot {
    /// The app with this id.
    pub(crate) fn app(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    /// The app with this key.
    pub(crate) fn app_by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    /// The webhook with this id in the app with this id.
    pub(crate) fn webhook(&self, app_id: &str, webhook_id: &str) -> Option<&Arc<Webhook>> {
        self.app(app_id)?.webhooks.iter().find(|w| *w.id == *webhook_id)
    }

    /// Every app, in no particular order.
    pub(crate) fn apps(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }

    /// The refused files' errors.
    pub(crate) fn errors(&self) -> impl Iterator<Item = &FileError> {
        self.files.values().filter_map(|f| f.error.as_ref())
    }
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// The generation after the reload.
    pub generation: u64,
    /// Apps that appeared.
    pub added: Vec<Arc<str>>,
    /// Apps that are gone.
    pub removed: Vec<Arc<str>>,
    /// Apps whose definition changed.
    pub changed: Vec<Arc<str>>,
    /// Files refused this time (their last good apps keep serving).
    pub failures: Vec<FileError>,
    /// Things accepted that look like mistakes.
    pub warnings: Vec<String>,
    /// App files in the directory now, refused ones included.
    pub files: usize,
    /// Apps serving now.
    pub apps: usize,
}

impl ReloadReport {
    /// Whether any app was added, removed or changed.
    pub fn changed_anything(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

/// The key and secret an app last had, to sign its remaining batches after
/// it was removed.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    /// `X-Pusher-Key`.
    pub key: Arc<str>,
    /// The signing secret.
    pub secret: Secret,
}

/// Holds the current [`Snapshot`] and reloads it from the apps directory.
#[derive(Debug)]
pub(crate) struct AppRegistry {
    dir: PathBuf,
    loader: AppLoader,
    current: ArcSwap<Snapshot>,
    /// Removed apps' credentials, so their accepted batches still get signed.
    last_known: Mutex<HashMap<Arc<str>, Credentials>>,
    /// Serialises reloads (watcher, SIGHUP) so they never interleave.
    reload_lock: tokio::sync::Mutex<()>,
}

impl AppRegistry {
    /// A registry over `dir`, empty until [`Self::reload`] runs.
    pub(crate) fn new(dir: impl Into<PathBuf>, loader: AppLoader) -> Self {
        Self {
            dir: dir.into(),
            loader,
            current: ArcSwap::from_pointee(Snapshot::default()),
            last_known: Mutex::default(),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The registry of `settings.apps_dir`, loading app files with the
    /// settings' defaults, `sinks` and `env`, and compiling filters with
    /// `filters` (without one, an app with filters is refused).
    pub(crate) fn for_settings(
        settings: &Settings,
        sinks: SinkRegistry,
        env: EnvLookup,
        filters: Option<Arc<FilterHost>>,
        components: Option<Arc<crate::sink_component::SinkComponentHost>>,
    ) -> Self {
        let mut defaults = LoadDefaults::from(settings);
        defaults.filters = filters;
        defaults.components = components;
        Self::new(settings.apps_dir.clone(), AppLoader::new(sinks, defaults, env))
    }

    /// The apps directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The key and secret to sign an app's deliveries with now: the current
    /// ones, or the last known ones for a removed app.
    pub(crate) fn credentials(&self, app_id: &str) -> Option<Credentials> {
        if let Some(app) = self.current.load().app(app_id) {
            return Some(Credentials {
                key: app.key.clone(),
                secret: app.secret.clone(),
            });
        }
        self.last_known
            .lock()
            .expect("last_known lock is never held across a panic")
            .get(app_id)
            .cloned()
    }

    /// Re-reads every app file and swaps in the result. A file that fails
    /// keeps its last good apps; a file that disappeared takes its apps away.
    pub(crate) async fn reload(&self) -> Result<ReloadReport, std::io::Error> {
        self.reload_with(self.loader.clone(), Vec::new()).await
    }

    /// The daemon's first load: as [`Self::reload`], but filter chains load
    /// in the background, so ingest is served before language runtimes
    /// compile (their apps' batches wait for them).
    pub(crate) async fn load_at_start(&self) -> Result<ReloadReport, std::io::Error> {
        self.reload_with(self.loader.loading_filters_in_background(), Vec::new())
            .await
    }

    /// A reload after the background loads of `broken` apps failed: those
    /// apps (these very versions, not a later reload's) are no file's last
    /// good version, so a file that still fails takes them away (and is
    /// reported), as it would have at start.
    pub(crate) async fn reload_without(&self, broken: Vec<Arc<App>>) -> Result<ReloadReport, std::io::Error> {
        self.reload_with(self.loader.clone(), broken).await
    }

    async fn reload_with(&self, loader: AppLoader, broken: Vec<Arc<App>>) -> Result<ReloadReport, std::io::Error> {
        let _guard = self.reload_lock.lock().await;
        let previous = self.snapshot();
        // Loading compiles filters and runs their `validate-config`: seconds
        // of CPU that must not hold an async worker (ingest runs there).
        let (dir, last) = (self.dir.clone(), previous.clone());
        let (files, failures, warnings) = tokio::task::spawn_blocking(move || read_dir(&dir, &loader, &last, &broken))
            .await
            .map_err(|e| std::io::Error::other(format!("loading the apps failed: {e}")))??;
        let mut next = resolve(files);
        let mut report = diff(&previous, &next);
        report.failures = failures;
        report.warnings = warnings;
        // The generation names a set of apps: it moves only when they change
        // (the first load counts), not when a broken file is re-reported.
        next.generation = previous.generation + u64::from(report.changed_anything() || previous.generation == 0);
        report.generation = next.generation;
        {
            let mut last_known = self
                .last_known
                .lock()
                .expect("last_known lock is never held across a panic");
            for app in next.by_id.values() {
                last_known.insert(
                    app.id.clone(),
                    Credentials {
                        key: app.key.clone(),
                        secret: app.secret.clone(),
                    },
                );
            }
        }
        let conflicts: Vec<FileError> = next
            .errors()
            .filter(|e| !report.failures.contains(e))
            .cloned()
            .collect();
        report.failures.extend(conflicts);
        self.current.store(Arc::new(next));
        Ok(report)
    }
}

/// Loads every file of `dir`; returns the per-file candidates (new apps, or
/// the last good ones with the error) plus this round's failures. The
/// `broken` apps are no file's last good version.
fn read_dir(
    dir: &Path,
    loader: &AppLoader,
    previous: &Snapshot,
    broken: &[Arc<App>],
) -> Result<DirRead, std::io::Error> {
    let mut paths = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read the apps directory {}: {e}", dir.display()),
        )
    })?;
    for entry in entries {
        let path = entry?.path();
        if is_app_file(&path) && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for path in paths {
        let last_good: Vec<Arc<App>> = previous
            .files
            .get(&path)
            .map(|f| {
                f.apps
                    .iter()
                    .filter(|app| !broken.iter().any(|b| Arc::ptr_eq(b, app)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        match loader.load_file(&path) {
            Ok(loaded) => {
                warnings.extend(loaded.warnings.into_iter().map(|w| format!("{}: {w}", path.display())));
                let unchanged = same_apps(&loaded.apps, &last_good);
                files.push((
                    path,
                    Candidate {
                        apps: if unchanged { last_good.clone() } else { loaded.apps },
                        fallback: last_good,
                        changed: !unchanged,
                        modified,
                        error: None,
                    },
                ));
            }
            Err(error) => {
                warnings.extend(error.warnings.iter().map(|w| format!("{}: {w}", path.display())));
                failures.push(error.clone());
                files.push((
                    path,
                    Candidate {
                        apps: last_good.clone(),
                        fallback: last_good,
                        changed: false,
                        modified,
                        error: Some(error),
                    },
                ));
            }
        }
    }
    Ok((files, failures, warnings))
}

/// Per-file candidates, this round's failures, and warnings.
type DirRead = (Vec<(PathBuf, Candidate)>, Vec<FileError>, Vec<String>);

/// One file's apps as proposed for the next snapshot.
struct Candidate {
    apps: Vec<Arc<App>>,
    /// The file's last good apps, kept if `apps` conflicts with another file.
    fallback: Vec<Arc<App>>,
    changed: bool,
    /// When the file was last written: of two files that claim one id or
    /// key, the older one keeps it.
    modified: Option<std::time::SystemTime>,
    error: Option<FileError>,
}

/// Builds the next snapshot. Unchanged files claim their app ids and keys
/// first, so a changed file that now conflicts with them is the one refused;
/// among changed files (every file, at start and in `hookline check`) the
/// one written earlier claims first, so the file refused is the one written
/// last, whichever tool loads the directory and whenever.
fn resolve(files: Vec<(PathBuf, Candidate)>) -> Snapshot {
    let mut next = Snapshot::default();
    let mut owner_of_id: HashMap<Arc<str>, PathBuf> = HashMap::new();
    let mut owner_of_key: HashMap<Arc<str>, PathBuf> = HashMap::new();
    let (mut stable, mut changed): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, c)| !c.changed);
    for group in [&mut stable, &mut changed] {
        group.sort_by(|(a_path, a), (b_path, b)| (a.modified, a_path).cmp(&(b.modified, b_path)));
    }
    for (path, candidate) in stable.into_iter().chain(changed) {
        let conflict = candidate.apps.iter().find_map(|app| {
            if let Some(other) = owner_of_id.get(&app.id) {
                Some(format!(
                    "app id {:?} is also defined in {}; ids must be unique across files",
                    app.id,
                    other.display()
                ))
            } else {
                owner_of_key.get(&app.key).map(|other| {
                    format!(
                        "app key {:?} (app {:?}) is also used in {}; keys must be unique across files",
                        app.key,
                        app.id,
                        other.display()
                    )
                })
            }
        });
        let (apps, error) = match conflict {
            None => (candidate.apps, candidate.error),
            Some(problem) => {
                let fallback_ok = candidate
                    .fallback
                    .iter()
                    .all(|a| !owner_of_id.contains_key(&a.id) && !owner_of_key.contains_key(&a.key));
                let kept = if fallback_ok { candidate.fallback } else { Vec::new() };
                (
                    kept,
                    Some(FileError {
                        path: path.clone(),
                        problems: vec![problem],
                        warnings: Vec::new(),
                    }),
                )
            }
        };
        for app in &apps {
            owner_of_id.insert(app.id.clone(), path.clone());
            owner_of_key.insert(app.key.clone(), path.clone());
            next.by_id.insert(app.id.clone(), app.clone());
            next.by_key.insert(app.key.clone(), app.clone());
        }
        next.files.insert(path, FileState { apps, error });
    }
    next
}

fn diff(previous: &Snapshot, next: &Snapshot) -> ReloadReport {
    let mut report = ReloadReport::default();
    for (id, app) in &next.by_id {
        match previous.by_id.get(id) {
            None => report.added.push(id.clone()),
            Some(old) if !Arc::ptr_eq(old, app) => report.changed.push(id.clone()),
            Some(_) => {}
        }
    }
    for id in previous.by_id.keys() {
        if !next.by_id.contains_key(id) {
            report.removed.push(id.clone());
        }
    }
    report.added.sort();
    report.removed.sort();
    report.changed.sort();
    report.files = next.files.len();
    report.apps = next.by_id.len();
    report
}

/// Whether a file's freshly loaded apps equal its last good ones, so the
/// old `Arc`s (and their built sinks) can be kept.
fn same_apps(new: &[Arc<App>], old: &[Arc<App>]) -> bool {
    new.len() == old.len()
        && new
            .iter()
            .zip(old)
            .all(|(a, b)| a.definition == b.definition && a.filter_digests() == b.filter_digests())
}
