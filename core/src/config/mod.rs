//! App files: parsing (JSON and TOML, soketi's shapes), `${NAME}`
//! environment references, validation, and building validated definitions
//! into the runtime [`App`]s the engine routes and delivers with.
//!
//! Loading is per file: a file either yields all of its apps or a list of
//! problems, each naming the file (and for syntax errors, line and column),
//! so that the registry can keep a broken file's last good apps serving.

mod app;
mod env;
mod file;

pub use app::{App, ChannelFilter, Ordering, Secret, Webhook};
pub use env::{EnvLookup, substitute_all as substitute_env};
pub use file::{AppLoader, FileError, LoadDefaults, is_app_file};
