//! Shared harness for the end-to-end tests: the real `hookline` binary on
//! 127.0.0.1, a real HTTP receiver, and the official Pusher libraries (npm
//! and PyPI) as peers.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// How long any awaited event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

mod cargo_wasm;
mod daemon;
mod lambda;
mod moto;
mod peers;
mod proxy;
mod receiver;
mod redis;
mod requests;
mod sinks;
mod tls;
mod wasm;

pub use daemon::*;
pub use lambda::*;
pub use moto::*;
pub use peers::*;
pub use proxy::*;
pub use receiver::*;
pub use redis::*;
pub use requests::*;
pub use sinks::*;
pub use tls::*;
pub use wasm::*;
