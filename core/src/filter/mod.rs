//! The WASM filter host: loads filter components (compiled once, cached on
//! disk), links only the WASI interfaces the sandbox grants, and runs filter
//! chains under a CPU deadline and a memory cap.
//!
//! A chain runs once per batch and webhook when the batch is formed; its
//! result is what is stored and delivered. Calls are synchronous wasmtime
//! calls: callers run [`FilterChain::run`] on a blocking thread, never on the
//! async workers.

mod cache;
mod clock;
mod convert;
mod host;
mod lift;
mod limits;
mod output;
mod sandbox;
mod ticker;

use std::path::PathBuf;
use std::sync::Arc;

use crate::event::Event;

pub use cache::set_after_compile;

/// The machinery sink components share with filters: the compile cache,
/// the deadline ticker, the memory limiter, captured output, and how a
/// trap is put in words.
pub(crate) mod shared {
    pub(crate) use super::cache::CompileCache;
    pub(crate) use super::convert::{EventView, event_views, signed_body_views};
    pub(crate) use super::host::describe_trap;
    pub(crate) use super::limits::SandboxLimits;
    pub(crate) use super::output::CapturedOutput;
    pub(crate) use super::sandbox::{
        ImportRules, LOG_LINES_PER_CALL, LOG_MESSAGE_CAP, check_component_imports, deny_all_wasi, truncate,
    };
    pub(crate) use super::ticker::{DeadlineTicker, EPOCH_TICK};
}
pub use host::{Decision, FilterHost, LoadedFilter};

/// Converts one event of a `replace` verdict as a guest lowered it (for
/// `crate::fuzzing`): `[user_id, socket_id, event, data, extra]`.
pub(crate) fn convert_replace_event(
    name: &str,
    channel: &str,
    strings: [Option<&str>; 5],
    subscription_count: Option<u64>,
) -> Result<crate::event::Event, String> {
    let [user_id, socket_id, event, data, extra] = strings.map(|s| s.map(str::to_string));
    let lowered = sandbox::wit::Event {
        name: name.to_string(),
        channel: channel.to_string(),
        user_id,
        socket_id,
        event,
        data,
        subscription_count,
        extra,
    };
    convert::from_wit(&lowered, 0)
}

/// What a failing filter entry does (`on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The batch takes the retry path and the then-current filter runs again;
    /// it is neither delivered unfiltered nor lost.
    Retry,
    /// This filter is passed over; the batch goes on as it came in.
    Skip,
    /// The batch is dropped.
    Drop,
}

/// One entry of an app file's `filters`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSpec {
    /// The component, resolved against the app file's directory.
    pub path: PathBuf,
    /// The `config` as JSON text (`null` if none).
    pub config: String,
    /// What a failure does.
    pub on_error: OnError,
    /// CPU deadline per call.
    pub cpu_ms: u64,
    /// Memory cap per instance.
    pub memory_mb: u64,
}

/// Why a filter could not load or a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("filter {path}: {message}")]
pub struct FilterError {
    /// The filter's path, for messages.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// The filters a webhook's batches go through: the app's, then its own.
///
/// Loaded when its app file is (a reload, `hookline check`), or, at the
/// daemon's start, in the background ([`FilterHost::load_in_background`]):
/// the daemon serves ingest at once and the app's batches wait for
/// [`Self::ready`].
#[derive(Debug, Clone, Default)]
pub struct FilterChain {
    /// Each filter's entry, in order.
    specs: Vec<FilterSpec>,
    /// Each filter's component key (content and engine hash), in order.
    digests: Vec<String>,
    loaded: Loaded,
}

/// A chain's filters, or (at start) the promise of them.
#[derive(Debug, Clone)]
enum Loaded {
    Ready(Arc<[Arc<LoadedFilter>]>),
    /// `None` while loading; then the filters, or why one could not load.
    Loading(tokio::sync::watch::Receiver<Option<LoadResult>>),
}

/// A background load's result: the filters, or the message of the first
/// that could not load.
pub(crate) type LoadResult = Result<Arc<[Arc<LoadedFilter>]>, String>;

impl Default for Loaded {
    fn default() -> Self {
        Self::Ready(Arc::from(Vec::new()))
    }
}

/// What a chain decided for one batch.
#[derive(Debug)]
pub enum ChainOutcome {
    /// Deliver these events (possibly none were changed).
    Deliver(Vec<Event>),
    /// Deliver nothing, for this reason.
    Drop(String),
    /// A filter with `on_error: retry` failed: retry the batch later. The
    /// events are the ones the chain was given, unfiltered.
    Retry {
        /// What failed.
        reason: String,
        /// The chain's input, to store and filter again later.
        events: Vec<Event>,
    },
}

impl FilterChain {
    /// A chain of filters already loaded.
    pub fn of(filters: Vec<Arc<LoadedFilter>>) -> Self {
        Self {
            specs: filters.iter().map(|f| f.spec().clone()).collect(),
            digests: filters.iter().map(|f| f.digest().to_string()).collect(),
            loaded: Loaded::Ready(Arc::from(filters)),
        }
    }

    /// A chain whose filters are loading: `loaded` says when they are.
    pub(crate) fn loading(
        specs: Vec<FilterSpec>,
        digests: Vec<String>,
        loaded: tokio::sync::watch::Receiver<Option<LoadResult>>,
    ) -> Self {
        Self {
            specs,
            digests,
            loaded: Loaded::Loading(loaded),
        }
    }

    /// Whether the chain has no filters.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Each filter's entry, in order.
    pub fn specs(&self) -> &[FilterSpec] {
        &self.specs
    }

    /// Each filter's component key (content and engine hash), in order.
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        self.digests.iter().map(String::as_str)
    }

    /// Waits until the chain's filters are loaded (at once for a chain
    /// loaded with its app file); `Err` says which could not load.
    pub async fn ready(&self) -> Result<(), String> {
        match &self.loaded {
            Loaded::Ready(_) => Ok(()),
            Loaded::Loading(receiver) => {
                let mut receiver = receiver.clone();
                let result = match receiver.wait_for(Option::is_some).await {
                    Ok(loaded) => loaded.as_ref().map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone)),
                    Err(_) => None,
                };
                result.unwrap_or_else(|| Err("the filters' load stopped before it finished".to_string()))
            }
        }
    }

    /// The filters, once loaded.
    fn filters(&self) -> Result<Arc<[Arc<LoadedFilter>]>, String> {
        match &self.loaded {
            Loaded::Ready(filters) => Ok(filters.clone()),
            Loaded::Loading(receiver) => match &*receiver.borrow() {
                Some(loaded) => loaded.clone(),
                None => Err("the filters are still compiling".to_string()),
            },
        }
    }

    /// Runs every filter in order. Blocking: call it through
    /// [`run_off_workers`], never on an async worker as such. A chain that
    /// is not loaded (see [`Self::ready`]) asks for a retry, whatever the
    /// filters' `on_error`: its batch is not theirs to skip or drop.
    pub fn run(&self, app_id: &str, webhook_id: &str, time_ms: u64, mut events: Vec<Event>) -> ChainOutcome {
        let filters = match self.filters() {
            Ok(filters) => filters,
            Err(reason) => return ChainOutcome::Retry { reason, events },
        };
        // Only failures are logged: redact the webhook id (a URL parse) then.
        let shown = || hookline_sink_api::redact_for_logs(webhook_id);
        // A retry needs the chain's input. It is copied only when a filter
        // changed the events and another filter comes after it.
        let mut input: Option<Vec<Event>> = None;
        for (position, filter) in filters.iter().enumerate() {
            match filter.call_verbose(app_id, webhook_id, time_ms, &events) {
                Ok((decision, replaced)) => {
                    let changes = matches!(decision, Decision::Select(_) | Decision::Replace(_));
                    if changes && input.is_none() && position + 1 < filters.len() {
                        input = Some(events.clone());
                    }
                    match decision.apply(events, replaced) {
                        Some(next) => events = next,
                        None => return ChainOutcome::Drop(format!("dropped by {}", filter.spec().path.display())),
                    }
                }
                Err(error) => match filter.spec().on_error {
                    OnError::Skip => {
                        tracing::warn!(app = app_id, webhook = %shown(), %error, "filter failed; skipping it (on_error: skip)");
                    }
                    OnError::Drop => {
                        tracing::warn!(app = app_id, webhook = %shown(), %error, "filter failed; dropping the batch (on_error: drop)");
                        return ChainOutcome::Drop(error.to_string());
                    }
                    OnError::Retry => {
                        tracing::warn!(app = app_id, webhook = %shown(), %error, "filter failed; the batch will be retried (on_error: retry)");
                        return ChainOutcome::Retry {
                            reason: error.to_string(),
                            events: input.unwrap_or(events),
                        };
                    }
                },
            }
            if events.is_empty() {
                return ChainOutcome::Drop("no events left".to_string());
            }
        }
        ChainOutcome::Deliver(events)
    }
}

/// Runs a filter chain call without holding up the async runtime: on a
/// multi-thread runtime the current worker hands its other tasks to another
/// thread and runs `work` at once, so a batch does not also wait for a
/// blocking-pool thread to be scheduled (under load that wait, not the
/// filter, was most of the stage's latency); on other runtimes, on the
/// blocking pool. `Err` carries a panic's message.
pub async fn run_off_workers<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))).map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string())
        })
    } else {
        tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string())
    }
}
