//! `hookline serve`: the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use hookline_core::Engine;
use tokio::signal::unix::{SignalKind, signal};

use crate::settings::{FlagOverrides, load};

/// Flags of `hookline serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory of app files (*.json, *.toml). Default ./apps.
    #[arg(long = "apps", value_name = "DIR")]
    apps: Option<PathBuf>,
    /// Address to listen on. Default 127.0.0.1:7077.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the embedded store. Default ./hookline-data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Daemon settings file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let flags = FlagOverrides {
        listen: args.listen,
        apps_dir: args.apps,
        data_dir: args.data_dir,
        log_format: args.log_format,
    };
    let settings = load(args.config.as_deref(), &flags)?;
    super::init_logging(settings.log_format);
    if !settings.apps_dir.exists() {
        std::fs::create_dir_all(&settings.apps_dir)
            .with_context(|| format!("cannot create the apps directory {}", settings.apps_dir.display()))?;
        tracing::warn!(dir = %settings.apps_dir.display(), "the apps directory did not exist; created it empty: add app files there");
    }
    let listen = settings.listen;
    hookline_core::filter::set_after_compile(crate::release_compiler_memory);
    let (engine, _report) = Engine::start(settings, super::sink_registry()?, super::process_env()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another hookline running? (--listen ADDR)"))?;
    // Watch before announcing readiness, so no change after the ready line
    // is missed; the watcher reloads once at start for changes made during
    // the initial load.
    if engine.settings().watch {
        hookline_core::watch::spawn(engine.clone())
            .context("cannot watch the apps directory (set watch = false to rely on SIGHUP)")?;
    }
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "hookline ready");
    // A machine-readable line on stdout for scripts and tests (logs go to stderr).
    println!("listening on {local}");
    std::io::stdout().flush().ok();

    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let reloader = engine.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading apps");
            if let Err(error) = reloader.reload().await {
                tracing::error!(%error, "reload failed; the current apps keep serving");
            }
        }
    });
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    engine.serve(listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
