//! `hookline check`: validate app files exactly as `serve` loads them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use hookline_core::config::check_apps;

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
    let loaded = load(args.config.as_deref(), &flags)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let settings = loaded.settings;
    if let Some(problem) = super::missing_apps_dir(&settings.apps_dir) {
        return Err(anyhow!(problem));
    }
    let report = check_apps(&settings, super::sink_registry(&settings)?, super::process_env()).await?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for failure in &report.failures {
        // One line per problem, each naming its file.
        eprintln!(
            "{}",
            failure
                .to_string()
                .lines()
                .map(|l| format!("error: {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let (files, apps) = (report.files, report.apps);
    if files == 0 {
        return Err(anyhow!(super::empty_apps_dir(&settings.apps_dir)));
    }
    let problems: usize = report.failures.iter().map(|f| f.problems.len()).sum();
    if report.failures.is_empty() {
        println!("ok: {apps} apps in {files} files under {}", settings.apps_dir.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} of {files} files have problems; {apps} apps would serve ({problems} problems in all)",
            report.failures.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
