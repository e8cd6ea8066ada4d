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
pub use app::{App, ChannelFilter, DeadLetterRetention, Ordering, RateLimit, Secret, Webhook};
pub use env::{EnvLookup, substitute_all as substitute_env};
pub use file::{AppLoader, FileError, LoadDefaults, is_app_file};

use std::sync::Arc;

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
    let components = crate::sink_component::SinkComponentHost::new(settings.filters.clone(), None);
    crate::registry::AppRegistry::for_settings(settings, sinks, env, Some(filters), Some(components))
        .reload()
        .await
}

/// The apps of an apps directory and what reading it found.
#[derive(Debug)]
pub struct AppsRead {
    /// Every app that would serve, in no particular order.
    pub apps: Vec<Arc<App>>,
    /// The files read, the refused ones and the warnings, as
    /// [`check_apps`] reports them.
    pub report: ReloadReport,
}

/// Reads every app file of `settings.apps_dir` as [`check_apps`] does —
/// `${NAME}` references resolved from `env`, sinks built, ids and keys
/// settled across files — but with `filters` entries read and not compiled,
/// so it takes milliseconds and the apps carry no filters. For tools that
/// need only apps' ids, keys and secrets, such as `hookline listen --apps`
/// verifying deliveries' signatures. Only an unreadable directory is an
/// error.
pub async fn read_apps_without_filters(
    settings: &Settings,
    sinks: SinkRegistry,
    env: EnvLookup,
) -> std::io::Result<AppsRead> {
    let mut defaults = LoadDefaults::from(settings);
    defaults.skip_filters = true;
    let registry = crate::registry::AppRegistry::new(settings.apps_dir.clone(), AppLoader::new(sinks, defaults, env));
    let report = registry.reload().await?;
    let apps = registry.snapshot().apps().cloned().collect();
    Ok(AppsRead { apps, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn apps_are_read_with_their_secrets_and_without_compiling_filters() {
        let dir = tempfile::tempdir().unwrap();
        // The filter does not exist (and there is no filter host): loading
        // it would refuse the app.
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"id": "a", "key": "ka", "secret": "${A_SECRET}", "filters": [{"wasm": "missing.wasm"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let settings = Settings {
            apps_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        let env: EnvLookup = Arc::new(|name| (name == "A_SECRET").then(|| "from-env".to_string()));
        let read = read_apps_without_filters(&settings, SinkRegistry::new(), env)
            .await
            .unwrap();
        assert_eq!(read.apps.len(), 1);
        let app = &read.apps[0];
        assert_eq!((&*app.id, &*app.key, app.secret.expose()), ("a", "ka", "from-env"));
        assert_eq!(read.report.files, 2);
        assert_eq!(read.report.failures.len(), 1, "{:?}", read.report.failures);
        assert!(read.report.failures[0].path.ends_with("broken.json"));
    }
}
