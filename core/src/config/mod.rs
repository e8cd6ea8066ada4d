//! App files: parsing (JSON and TOML, soketi's shapes), `${NAME}`
//! environment references, validation, and building validated definitions
//! into the runtime [`App`]s the engine routes and delivers with.
//!
//! Loading is per file: a file either yields all of its apps or a list of
//! problems, each naming the file (and for syntax errors, line and column),
//! so that the registry can keep a broken file's last good apps serving.

mod app;
mod definition;
mod env;
mod file;

pub use crate::registry::ReloadReport;
pub use app::{App, ChannelFilter, Ordering, Secret, Webhook};
pub use env::{EnvLookup, substitute_all as substitute_env};
pub use file::{AppLoader, FileError, LoadDefaults, is_app_file};

use crate::Settings;
use crate::filter::FilterHost;
use crate::sinks::SinkRegistry;

/// Loads every app file of `settings.apps_dir` as the daemon would —
/// sinks built, filters compiled (without the compile cache) — and starts
/// nothing: what `hookline check` reports. Refused files are in the
/// report; only an unreadable directory or a filter host that cannot start
/// is an error.
pub async fn check_apps(settings: &Settings, sinks: SinkRegistry, env: EnvLookup) -> std::io::Result<ReloadReport> {
    let filters =
        FilterHost::new(settings.filters.clone(), None, None).map_err(|e| std::io::Error::other(e.to_string()))?;
    crate::registry::AppRegistry::for_settings(settings, sinks, env, Some(filters))
        .reload()
        .await
}
