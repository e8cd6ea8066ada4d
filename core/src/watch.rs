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
//!
//! Paths are compared in absolute form, because `notify` reports absolute
//! paths whatever form the watch was given in (the default `--apps ./apps`
//! is relative). They are not canonicalised: an apps directory reached
//! through a symlink is watched under its own name, and its parent is
//! watched too, so that the symlink itself being swapped to another
//! directory (or the directory being removed and re-created) is seen and
//! the watch moves to what the name now points at.

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
pub(crate) fn spawn(engine: Arc<Engine>) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })?;
    let apps = AppsDirWatch::new(engine.registry().dir())?;
    apps.watch_parent(&mut watcher);
    watcher.watch(&apps.dir, RecursiveMode::NonRecursive)?;
    Ok(tokio::spawn(run(engine, watcher, rx, apps)))
}

/// The apps directory's name in absolute form, and its parent.
struct AppsDirWatch {
    dir: PathBuf,
    parent: Option<PathBuf>,
}

impl AppsDirWatch {
    fn new(dir: &Path) -> Result<Self, notify::Error> {
        let dir = std::path::absolute(dir).map_err(notify::Error::io)?;
        // `absolute` keeps `..`; a parent taken from `a/b/..` would be wrong.
        let parent = dir.parent().filter(|_| !dir.ends_with("..")).map(Path::to_path_buf);
        Ok(Self { dir, parent })
    }

    /// The parent is watched so that the directory entry itself (a symlink
    /// swapped to a new release, a directory re-created) is seen. Failing
    /// that is not fatal: edits inside the directory are still seen.
    fn watch_parent(&self, watcher: &mut notify::RecommendedWatcher) {
        if let Some(parent) = &self.parent
            && let Err(error) = watcher.watch(parent, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %parent.display(), %error,
                "cannot watch the apps directory's parent; replacing the directory itself needs SIGHUP");
        }
    }

    /// Whether an event names the apps directory entry itself.
    fn names_the_dir(&self, event: &notify::Event) -> bool {
        event.paths.iter().any(|p| p == &self.dir)
    }

    /// Watches whatever the directory's name points at now.
    fn rewatch(&self, watcher: &mut notify::RecommendedWatcher) {
        let _ = watcher.unwatch(&self.dir);
        if let Err(error) = watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %self.dir.display(), %error,
                "cannot watch the apps directory; it is watched again when it reappears");
        }
    }
}

async fn run(
    engine: Arc<Engine>,
    mut watcher: notify::RecommendedWatcher,
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    apps: AppsDirWatch,
) {
    let mut filter_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut filter_files: BTreeSet<PathBuf> = BTreeSet::new();
    // Files changed between the initial load and the watch are caught here
    // (a no-op reload when nothing changed).
    if let Err(error) = engine.reload().await {
        tracing::error!(%error, "reload failed; the current apps keep serving");
    }
    update_filter_watches(&engine, &mut watcher, &apps, &mut filter_dirs, &mut filter_files);
    loop {
        // Wait for a relevant event.
        let mut dir_replaced = loop {
            match events.recv().await {
                None => return,
                Some(Ok(event)) if relevant(&event, &apps.dir, &filter_files) => {
                    break apps.names_the_dir(&event);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::warn!(%error, "file watcher error; SIGHUP forces a reload"),
            }
        };
        // Let the burst settle.
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let quiet = (Instant::now() + QUIET).min(deadline);
            tokio::select! {
                more = events.recv() => match more {
                    None => return,
                    Some(Ok(event)) => dir_replaced |= apps.names_the_dir(&event),
                    Some(Err(_)) => {}
                },
                () = tokio::time::sleep_until(quiet) => break,
            }
        }
        if dir_replaced {
            apps.rewatch(&mut watcher);
            // Filter directories under the swapped name are watched anew too.
            for dir in std::mem::take(&mut filter_dirs) {
                let _ = watcher.unwatch(&dir);
            }
        }
        if let Err(error) = engine.reload().await {
            tracing::error!(%error, "reload failed; the current apps keep serving");
        }
        update_filter_watches(&engine, &mut watcher, &apps, &mut filter_dirs, &mut filter_files);
    }
}

/// Any change in the apps directory (or to the directory entry itself)
/// counts; elsewhere only the filter files.
fn relevant(event: &notify::Event, apps_dir: &Path, filter_files: &BTreeSet<PathBuf>) -> bool {
    if event.kind.is_access() {
        return false;
    }
    event
        .paths
        .iter()
        .any(|p| p == apps_dir || p.parent() == Some(apps_dir) || filter_files.contains(p))
}

/// Watches the directories of the filter files in use (a directory, so that
/// renames and re-creations of the file are seen too). The apps directory
/// and its parent are watched already and never unwatched here.
fn update_filter_watches(
    engine: &Engine,
    watcher: &mut notify::RecommendedWatcher,
    apps: &AppsDirWatch,
    dirs: &mut BTreeSet<PathBuf>,
    files: &mut BTreeSet<PathBuf>,
) {
    let snapshot = engine.registry().snapshot();
    *files = snapshot
        .apps()
        .flat_map(|app| app.filter_paths())
        .filter_map(|path| std::path::absolute(path).ok())
        .collect();
    let wanted: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent())
        .filter(|dir| *dir != apps.dir && Some(*dir) != apps.parent.as_deref())
        .map(Path::to_path_buf)
        .collect();
    for gone in dirs.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    let mut watched: BTreeSet<PathBuf> = dirs.intersection(&wanted).cloned().collect();
    for new in wanted.difference(dirs) {
        // Only a directory actually watched is remembered, so one that
        // could not be (it did not exist yet) is tried again next time.
        match watcher.watch(new, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(new.clone());
            }
            Err(error) => {
                tracing::warn!(dir = %new.display(), %error, "cannot watch a filter directory; SIGHUP reloads it")
            }
        }
    }
    *dirs = watched;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str) -> notify::Event {
        notify::Event::new(notify::EventKind::Modify(notify::event::ModifyKind::Any)).add_path(PathBuf::from(path))
    }

    #[test]
    fn a_relative_apps_dir_matches_the_absolute_paths_notify_reports() {
        let apps = AppsDirWatch::new(Path::new("./apps")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let reported = cwd.join("apps/a.json");
        assert!(relevant(
            &event(reported.to_str().unwrap()),
            &apps.dir,
            &BTreeSet::new()
        ));
        assert!(!relevant(&event("/elsewhere/a.json"), &apps.dir, &BTreeSet::new()));
        assert_eq!(apps.parent.as_deref(), Some(cwd.as_path()));
        let swapped = event(cwd.join("apps").to_str().unwrap());
        assert!(apps.names_the_dir(&swapped));
        assert!(relevant(&swapped, &apps.dir, &BTreeSet::new()));
    }
}
