//! `hookline check`: validate app files exactly as `serve` loads them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use hookline_core::config::{AppLoader, LoadDefaults};
use hookline_core::filter::FilterHost;
use hookline_core::registry::AppRegistry;

use crate::settings::{FlagOverrides, load};

/// Flags of `hookline check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory of app files. Default ./apps.
    #[arg(long = "apps", value_name = "DIR")]
    apps: Option<PathBuf>,
    /// Daemon settings file (TOML), for the defaults apps inherit.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let flags = FlagOverrides {
        apps_dir: args.apps,
        ..FlagOverrides::default()
    };
    let settings = load(args.config.as_deref(), &flags)?;
    if !settings.apps_dir.is_dir() {
        bail!(
            "the apps directory {} does not exist (--apps DIR)",
            settings.apps_dir.display()
        );
    }
    let mut defaults = LoadDefaults::from(&settings);
    defaults.filters = Some(FilterHost::new(settings.filters.clone(), None, None)?);
    let loader = AppLoader::new(super::sink_registry()?, defaults, super::process_env());
    let registry = AppRegistry::new(settings.apps_dir.clone(), loader);
    let report = registry.reload().await?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for failure in &report.failures {
        eprintln!("error: {failure}");
    }
    let snapshot = registry.snapshot();
    let files = snapshot.files().len();
    let apps = snapshot.apps().count();
    if report.failures.is_empty() {
        println!("ok: {apps} apps in {files} files under {}", settings.apps_dir.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} of {files} files have problems; {apps} apps would serve",
            report.failures.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
