//! `hookline serve`: the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use hookline_core::Engine;
use hookline_core::settings::LogFormat;
use tokio::signal::unix::{SignalKind, signal};

use crate::settings::{FlagOverrides, load, requested_log_format};

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
    /// Daemon settings file (TOML); relative paths in it are relative to it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

/// Raises the soft open-file limit to the hard one, and keeps the
/// connection cap below it: past the limit `accept` fails before the cap
/// is reached, and the store, the admin socket and outgoing deliveries run
/// out of descriptors too.
fn fit_connections_to_file_limit(ingest: &mut hookline_core::settings::IngestSettings) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; ingest.max_connections is used as set");
            return;
        }
    };
    // A quarter of the descriptors is kept for everything but ingest.
    let room = usize::try_from(limit - limit / 4).unwrap_or(usize::MAX).max(1);
    if ingest.max_connections > room {
        tracing::warn!(
            max_connections = ingest.max_connections,
            open_file_limit = limit,
            using = room,
            "ingest.max_connections is above what the open-file limit allows; raise the limit (ulimit -n, LimitNOFILE=) to allow more"
        );
        ingest.max_connections = room;
    }
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let flags = FlagOverrides {
        listen: args.listen,
        apps_dir: args.apps,
        data_dir: args.data_dir,
        log_format: args.log_format,
    };
    let loaded = match load(args.config.as_deref(), &flags) {
        Ok(loaded) => loaded,
        Err(error) => {
            // Even a refused setting is reported in the format asked for.
            super::init_logging(requested_log_format(args.config.as_deref(), &flags));
            return Err(error);
        }
    };
    let mut settings = loaded.settings;
    super::init_logging(settings.log_format);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    fit_connections_to_file_limit(&mut settings.ingest);
    if let Some(problem) = super::missing_apps_dir(&settings.apps_dir) {
        return Err(anyhow!(problem));
    }
    let listen = settings.listen;
    let log_format = settings.log_format;
    // Checked before anything starts: a bad [admin] must not leave a
    // daemon running without the listener the operator asked for.
    let admin = hookline_core::admin::AdminAccess::from_settings(&settings.admin, &super::process_env())
        .map_err(|e| anyhow!(e))?;
    hookline_core::filter::set_after_compile(crate::release_compiler_memory);
    let store = super::open_store(&settings).await?;
    let sinks = super::sink_registry(&settings)?;
    let (engine, report) = Engine::start(settings, sinks, super::process_env(), store).await?;
    if report.files == 0 {
        tracing::warn!("{}", super::empty_apps_dir(&engine.settings().apps_dir));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another hookline running? (--listen ADDR)"))?;
    // Watch before announcing readiness, so no change after the ready line
    // is missed; the watcher reloads once at start for changes made during
    // the initial load.
    if engine.settings().watch {
        engine
            .watch_apps()
            .context("cannot watch the apps directory (set watch = false to rely on SIGHUP)")?;
    }
    // Signals are watched before readiness is announced: a SIGTERM sent
    // right after the ready line must stop the daemon gracefully, not by
    // the default action.
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
    if let Some((address, access)) = admin {
        let admin_listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on admin.listen {address}; is the port taken?"))?;
        let admin_local = admin_listener.local_addr()?;
        tracing::info!(address = %admin_local, "admin API and status page listening");
        match log_format {
            LogFormat::Text => println!("admin api on {admin_local}"),
            LogFormat::Json => println!("{}", serde_json::json!({ "admin": admin_local.to_string() })),
        }
        tokio::spawn(engine.clone().serve_admin(admin_listener, access));
    }
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "hookline ready");
    // A machine-readable line on stdout for scripts and tests (logs go to
    // stderr), in the log format like every other line.
    match log_format {
        LogFormat::Text => println!("listening on {local}"),
        LogFormat::Json => println!("{}", serde_json::json!({ "listening": local.to_string() })),
    }
    std::io::stdout().flush().ok();
    engine.serve(listener, shutdown).await?;
    // Off the async workers: the exporter's last send blocks.
    let _ = tokio::task::spawn_blocking(super::flush_traces).await;
    Ok(ExitCode::SUCCESS)
}
