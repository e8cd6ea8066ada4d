//! Hookline's engine, embeddable: build an [`Engine`] from [`Settings`], a
//! [`sinks::SinkRegistry`] of sink plugins and a [`store::Store`], then
//! [`Engine::serve`] it on a listener until a shutdown future resolves.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use hookline_core::{Engine, Settings};
//!
//! let settings = Settings::default();
//! let store = Engine::open_embedded_store(&settings)?;
//! let sinks = hookline_core::sinks::SinkRegistry::default(); // register sink plugins here
//! let env: hookline_core::config::EnvLookup = Arc::new(|name| std::env::var(name).ok());
//! let (engine, report) = Engine::start(settings, sinks, env, store).await?;
//! for failure in &report.failures {
//!     eprintln!("{failure}");
//! }
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7077").await?;
//! engine.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The modules are the rest of the front door: [`settings`] (the daemon's
//! settings), [`config`] (app files), [`admin`] (dead letters, the admin
//! API's access rule, the status), [`store`] (the seam a shared store
//! plugs into), [`sinks`] (where sink plugins are registered), [`event`]
//! and [`signing`] (the payload and signature contract), and [`filter`]
//! (the WASM filter host, for `hookline filter run`). `ARCHITECTURE.md` at
//! the repository root maps the inside.

// The facade: what a program embedding the engine, a sink or store plugin,
// or the `hookline` binary uses.
pub mod admin;
pub mod attempt_log;
pub mod config;
pub mod event;
pub mod filter;
pub mod settings;
pub mod signing;
pub mod sink_component;
pub mod sinks;
pub mod store;
pub mod trace;

// Hooks for the fuzz targets and the benchmarks; not an API.
#[doc(hidden)]
pub mod fuzzing;

// The inside.
mod activity;
mod admin_http;
mod backlog;
mod batcher;
mod delivery;
mod engine;
mod http_server;
mod ingest;
mod json;
mod metrics;
mod private_fs;
mod registry;
mod replay;
mod retention;
mod status_page;
mod timer;
mod watch;

pub use engine::Engine;
pub use settings::Settings;
