//! One module per subcommand.

pub(crate) mod check;
pub(crate) mod dlq;
pub(crate) mod filter;
pub(crate) mod listen;
pub(crate) mod send;
pub(crate) mod serve;

use std::sync::Arc;

use anyhow::{Context, Result};
use hookline_core::config::EnvLookup;
use hookline_core::settings::LogFormat;
use hookline_core::sinks::SinkRegistry;

/// The sink plugins built into this binary.
pub(crate) fn sink_registry() -> Result<SinkRegistry> {
    let mut sinks = SinkRegistry::new();
    let http = hookline_sink_http::HttpSinkPlugin::new().context("cannot build the HTTP client")?;
    sinks.register(Arc::new(http));
    sinks.register(Arc::new(hookline_sink_lambda::LambdaSinkPlugin::new()));
    Ok(sinks)
}

/// `${NAME}` references in app files resolve against the process environment.
pub(crate) fn process_env() -> EnvLookup {
    Arc::new(|name| std::env::var(name).ok())
}

/// Logs to stderr; `RUST_LOG` sets levels (default `info`).
pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
