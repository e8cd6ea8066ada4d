//! Hookline's engine.
//!
//! See `ARCHITECTURE.md` at the repository root for the map. In short:
//! [`ingest`] authenticates and parses requests into [`event::Event`]s,
//! [`engine::Engine::accept`] stores them and hands them to the per-app
//! [`batcher`], which routes each closed batch to its webhooks as
//! [`delivery::Delivery`]s; the [`delivery`] lanes sign, send, retry and
//! dead-letter them through the [`sinks`] plugins.

pub mod activity;
pub mod admin;
pub mod admin_http;
pub mod backlog;
pub mod batcher;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod event;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
mod http_server;
pub mod ingest;
pub mod json;
pub mod metrics;
pub mod private_fs;
pub mod registry;
pub mod replay;
pub mod settings;
pub mod signing;
pub mod sinks;
mod status_page;
pub mod store;
mod timer;
pub mod watch;

pub use engine::Engine;
pub use settings::Settings;
