//! One module per subcommand.

pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod dlq;
pub(crate) mod filter;
pub(crate) mod listen;
pub(crate) mod man;
pub(crate) mod scaffold;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod sink;
mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use hookline_core::config::EnvLookup;
use hookline_core::settings::LogFormat;
use hookline_core::sinks::SinkRegistry;
use hookline_core::store::SharedStore;

/// The sink plugins built into this binary, with the daemon's
/// `delivery.proxy`.
pub(crate) fn sink_registry(settings: &hookline_core::settings::Settings) -> Result<SinkRegistry> {
    hookline::builtin_sinks_with_proxy(Some(&settings.delivery.proxy)).map_err(anyhow::Error::msg)
}

/// Opens the store `[store]` names: the embedded one in `data_dir`, or
/// Redis (shared by several daemons).
pub(crate) async fn open_store(settings: &hookline_core::settings::Settings) -> Result<SharedStore> {
    use hookline_core::settings::{Durability, StoreBackend};
    match settings.store.backend {
        StoreBackend::Embedded => Ok(hookline_core::Engine::open_embedded_store(settings)?),
        StoreBackend::Redis => {
            let url = hookline_core::config::substitute_env(&settings.store.redis_url, &process_env())
                .map_err(|problems| anyhow::anyhow!("store.redis_url: {}", problems.join("; ")))?;
            let node_id = match settings.store.node_id.trim() {
                "" => hookline_store_redis::default_node_id(),
                id => id.to_string(),
            };
            let config = hookline_store_redis::RedisStoreConfig {
                url,
                partitions: settings.store.partitions,
                node_id,
                lease_ms: settings.store.lease_ms,
                balance_ms: settings.store.balance_ms,
                require_fsync: settings.ingest.durability == Durability::Fsync,
                memory_budget: settings.delivery.max_memory_bytes,
            };
            let store = hookline_store_redis::RedisStore::connect(config)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.0))?;
            Ok(store)
        }
    }
}

/// `${NAME}` references in app files resolve against the process environment.
pub(crate) fn process_env() -> EnvLookup {
    Arc::new(|name| std::env::var(name).ok())
}

/// Why an apps directory cannot be served, in one line saying where it
/// looked and what to do.
pub(crate) fn missing_apps_dir(dir: &Path) -> Option<String> {
    if dir.is_dir() {
        return None;
    }
    let what = if dir.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    Some(format!(
        "the apps directory {} {what} (set by --apps, apps_dir or HOOKLINE_APPS_DIR; default ./apps): \
         create it and add app files (*.json, *.toml), or try the examples with --apps examples/apps \
         from a Hookline checkout",
        absolute(dir).display()
    ))
}

/// The line for an apps directory that holds no app files.
pub(crate) fn empty_apps_dir(dir: &Path) -> String {
    format!(
        "no app files (*.json, *.toml) in the apps directory {}: add one (they load as soon as they appear), \
         or try the examples with --apps examples/apps from a Hookline checkout",
        absolute(dir).display()
    )
}

/// A path as the operator would look for it.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The format logging was set up with, once it was.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Prints the error a command ended with: a log line when logging runs as
/// JSON (so every line of the daemon is JSON), else `error: …` on stderr.
pub(crate) fn report_fatal(error: &anyhow::Error) {
    match LOG_FORMAT.get() {
        Some(LogFormat::Json) => tracing::error!(error = format!("{error:#}"), "hookline stopped"),
        _ => eprintln!("error: {error:#}"),
    }
}

/// The levels when `RUST_LOG` is unset: `info`, except for the NATS and
/// Kafka clients, which log every reconnect attempt at `info` while a
/// server is down (Hookline's own attempt log says it once per attempt).
const DEFAULT_LOG_LEVELS: &str = "info,async_nats=warn,rskafka=warn";

/// Logs to stderr; `RUST_LOG` sets levels (default [`DEFAULT_LOG_LEVELS`]).
pub(crate) fn init_logging(format: LogFormat) {
    if LOG_FORMAT.set(format).is_err() {
        return;
    }
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_LEVELS))
        // Trace spans go to the OTLP exporter, never into log lines.
        .add_directive(
            format!("{}=off", hookline_core::trace::TARGET)
                .parse()
                .expect("a valid directive"),
        );
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let (traces, trace_error) = match telemetry::layer() {
        Ok(layer) => (layer, None),
        Err(error) => (None, Some(error)),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(traces)
        .init();
    if let Some(error) = trace_error {
        tracing::error!(%error, "traces are off");
    }
}

/// Sends the traces not yet exported, at exit.
pub(crate) fn flush_traces() {
    telemetry::flush();
}
