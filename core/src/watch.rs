//! Hot reload: watches the apps directory and every filter file the apps
//! use, and reloads once the writes settle.
//!
//! Editors and deploy tools change files in many ways — in-place writes,
//! truncate-then-write, write-to-temp-then-rename, symlink swaps (Kubernetes
//! ConfigMaps), delete-then-create — each a burst of events. Any event in the
//! apps directory, and any event naming a watched filter file, starts a short
//! quiet period; the reload runs when no event arrived for `QUIET`, or after
//! `MAX_DELAY` at most. A half-written file that fails to parse keeps its last
//! good version, and the settled write reloads again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::Engine;

/// No event for this long: the writes have settled.
const QUIET: Duration = Duration::from_millis(30);
/// Reload at the latest this long after the first event of a burst.
const MAX_DELAY: Duration = Duration::from_millis(250);

/// Starts watching; the returned task runs until the process ends.
pub fn spawn(engine: Arc<Engine>) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })?;
    let apps_dir = engine.registry().dir().to_path_buf();
    watcher.watch(&apps_dir, RecursiveMode::NonRecursive)?;
    Ok(tokio::spawn(run(engine, watcher, rx, apps_dir)))
}

async fn run(
    engine: Arc<Engine>,
    mut watcher: notify::RecommendedWatcher,
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    apps_dir: PathBuf,
) {
    let mut filter_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut filter_files: BTreeSet<PathBuf> = BTreeSet::new();
    // Files changed between the initial load and the watch are caught here
    // (a no-op reload when nothing changed).
    if let Err(error) = engine.reload().await {
        tracing::error!(%error, "reload failed; the current apps keep serving");
    }
    update_filter_watches(&engine, &mut watcher, &mut filter_dirs, &mut filter_files);
    loop {
        // Wait for a relevant event.
        loop {
            match events.recv().await {
                None => return,
                Some(Ok(event)) if relevant(&event, &apps_dir, &filter_files) => break,
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::warn!(%error, "file watcher error; SIGHUP forces a reload"),
            }
        }
        // Let the burst settle.
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let quiet = (Instant::now() + QUIET).min(deadline);
            tokio::select! {
                more = events.recv() => if more.is_none() { return },
                () = tokio::time::sleep_until(quiet) => break,
            }
        }
        if let Err(error) = engine.reload().await {
            tracing::error!(%error, "reload failed; the current apps keep serving");
        }
        update_filter_watches(&engine, &mut watcher, &mut filter_dirs, &mut filter_files);
    }
}

/// Any change in the apps directory counts; elsewhere only the filter files.
fn relevant(event: &notify::Event, apps_dir: &Path, filter_files: &BTreeSet<PathBuf>) -> bool {
    if event.kind.is_access() {
        return false;
    }
    event
        .paths
        .iter()
        .any(|p| p.parent() == Some(apps_dir) || filter_files.contains(p))
}

/// Watches the directories of the filter files in use (a directory, so that
/// renames and re-creations of the file are seen too).
fn update_filter_watches(
    engine: &Engine,
    watcher: &mut notify::RecommendedWatcher,
    dirs: &mut BTreeSet<PathBuf>,
    files: &mut BTreeSet<PathBuf>,
) {
    let snapshot = engine.registry().snapshot();
    *files = snapshot
        .apps()
        .flat_map(|app| app.filter_paths().map(Path::to_path_buf))
        .collect();
    let wanted: BTreeSet<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    for gone in dirs.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    for new in wanted.difference(dirs) {
        if let Err(error) = watcher.watch(new, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %new.display(), %error, "cannot watch a filter directory; SIGHUP reloads it");
        }
    }
    *dirs = wanted;
}
