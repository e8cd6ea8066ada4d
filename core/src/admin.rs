//! Dead-letter administration (`hookline dlq`), and the local admin socket
//! that lets the CLI ask a running daemon (whose store file is locked).
//!
//! The socket is `DATA_DIR/admin.sock`, a Unix socket only the daemon's
//! user can reach (mode 0600). A connection carries one request line and
//! one answer line, both JSON ([`AdminRequest`], [`AdminResponse`]).
//! When no daemon runs, the CLI opens the store itself and answers through
//! an [`OfflineAdmin`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::delivery::{Delivery, Dispatcher, now_ms};
use crate::registry::AppRegistry;
use crate::store::{AttemptRecord, DeadLetter, DeadLetterQuery, SharedStore};

pub use crate::admin_http::AdminAccess;
pub use crate::engine::Status;

/// The socket's file name inside the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// Which dead letters a replay or purge is about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// One, by id (its batch id).
    Id(String),
    /// Every one of an app.
    App(String),
    /// All of them.
    All,
}

/// Which dead letters a listing or a bulk replay or purge touches: every
/// condition that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LetterFilter {
    /// Only this app's.
    pub app: Option<String>,
    /// Only this webhook's: its id as configured, or as the API shows it.
    pub webhook: Option<String>,
    /// Only those whose reason contains this (case-insensitive).
    pub reason: Option<String>,
    /// Only those whose last answer was in this class: `2xx` … `5xx`, an
    /// exact status (`429`), or `none` (no answer: timeouts, refused
    /// connections).
    pub status: Option<String>,
    /// Only those dead-lettered at or after this time (ms since the Unix
    /// epoch).
    pub since_ms: Option<u64>,
    /// Only those dead-lettered before this time (ms since the Unix epoch).
    pub until_ms: Option<u64>,
}

impl LetterFilter {
    /// Whether any condition is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses a `status` that is not a class, a status or `none`, and an
    /// empty window.
    pub fn check(&self) -> Result<(), String> {
        self.matcher().map(drop)
    }

    /// The filter made ready to test letters: its status parsed and its
    /// reason lowercased once for all of them.
    fn matcher(&self) -> Result<LetterMatcher<'_>, String> {
        let status = self.status.as_deref().map(StatusMatch::parse).transpose()?;
        if let (Some(since), Some(until)) = (self.since_ms, self.until_ms)
            && since >= until
        {
            return Err("the time window is empty: `since` must be before `until`".to_string());
        }
        Ok(LetterMatcher {
            filter: self,
            status,
            reason: self.reason.as_deref().map(str::to_lowercase),
        })
    }
}

/// A checked [`LetterFilter`], ready to test letters.
struct LetterMatcher<'a> {
    filter: &'a LetterFilter,
    status: Option<StatusMatch>,
    /// Lowercased.
    reason: Option<String>,
}

impl LetterMatcher<'_> {
    /// Whether `letter` passes; `shown_id` gives its webhook's id as the
    /// API shows it (asked only when the raw id does not match).
    fn matches(&self, letter: &DeadLetter, shown_id: impl Fn(&DeadLetter) -> String) -> bool {
        let (filter, record) = (self.filter, &letter.record);
        filter.app.as_deref().is_none_or(|a| record.app_id == a)
            && filter
                .webhook
                .as_deref()
                .is_none_or(|w| record.webhook_id == w || shown_id(letter) == w)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| letter.reason.to_lowercase().contains(r))
            && self
                .status
                .is_none_or(|m| m.matches(record.history.iter().rev().find_map(|a| a.status)))
            && filter.since_ms.is_none_or(|t| letter.dead_at_ms >= t)
            && filter.until_ms.is_none_or(|t| letter.dead_at_ms < t)
    }
}

/// A `status` filter: `none`, a class (`4xx`) or an exact status (`429`).
#[derive(Debug, Clone, Copy)]
enum StatusMatch {
    NoAnswer,
    Class(u16),
    Exact(u16),
}

impl StatusMatch {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "none" {
            return Ok(Self::NoAnswer);
        }
        if let Some(class) = text.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok())
            && (1..=5).contains(&class)
        {
            return Ok(Self::Class(class));
        }
        match text.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(Self::Exact(code)),
            _ => Err(format!(
                "status {text:?} is not a class (2xx, 4xx, 5xx…), a status (429) or `none` (no answer)"
            )),
        }
    }

    fn matches(self, last_status: Option<u16>) -> bool {
        match (self, last_status) {
            (Self::NoAnswer, status) => status.is_none(),
            (Self::Class(class), Some(status)) => status / 100 == class,
            (Self::Exact(code), Some(status)) => status == code,
            (_, None) => false,
        }
    }
}

/// A request to the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// The dead letters that pass a filter.
    List {
        /// Which ones.
        #[serde(flatten)]
        filter: LetterFilter,
    },
    /// One dead letter in full.
    Show {
        /// Its id.
        id: String,
    },
    /// Send dead letters again, to the webhook with the same id in the
    /// current config.
    Replay {
        /// Which ones.
        selector: Selector,
        /// Of those, only the ones that pass this.
        #[serde(default)]
        filter: LetterFilter,
        /// Only say which ones would be replayed.
        #[serde(default)]
        dry_run: bool,
        /// At most this many a second: each letter's first attempt is
        /// spaced from the one before (`None`: all at once).
        #[serde(default)]
        rate: Option<f64>,
    },
    /// Forget dead letters.
    Purge {
        /// Which ones.
        selector: Selector,
        /// Of those, only the ones that pass this.
        #[serde(default)]
        filter: LetterFilter,
        /// Only say which ones would be purged.
        #[serde(default)]
        dry_run: bool,
    },
}

impl AdminRequest {
    /// A replay's or purge's selector, filter and whether it is a dry run.
    pub fn target(&self) -> Option<(&Selector, &LetterFilter, bool)> {
        match self {
            Self::Replay {
                selector,
                filter,
                dry_run,
                ..
            }
            | Self::Purge {
                selector,
                filter,
                dry_run,
            } => Some((selector, filter, *dry_run)),
            Self::List { .. } | Self::Show { .. } => None,
        }
    }
}

/// A dead letter as `hookline dlq` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Its id: the batch id it was (and will be) delivered with.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The webhook id.
    pub webhook_id: String,
    /// How many events.
    pub events: usize,
    /// Counted attempts.
    pub attempts: u32,
    /// Why it was given up on.
    pub reason: String,
    /// The last status the target answered, if any.
    pub last_status: Option<u16>,
    /// When the batch was formed (ms since the Unix epoch).
    pub batch_time_ms: u64,
    /// When it was given up on (ms since the Unix epoch).
    pub dead_at_ms: u64,
    /// Every failed attempt, oldest first.
    pub history: Vec<AttemptRecord>,
    /// The events, as the JSON array they are delivered as (`show` only;
    /// a listing leaves them out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub events_json: String,
}

impl From<&DeadLetter> for DeadLetterView {
    fn from(letter: &DeadLetter) -> Self {
        let record = &letter.record;
        Self {
            id: record.batch_id.clone(),
            app_id: record.app_id.clone(),
            webhook_id: record.webhook_id.clone(),
            events: record.event_count,
            attempts: record.attempts,
            reason: letter.reason.clone(),
            last_status: record.history.iter().rev().find_map(|a| a.status),
            batch_time_ms: record.batch_time_ms,
            dead_at_ms: letter.dead_at_ms,
            history: record.history.clone(),
            events_json: if record.events.is_empty() {
                String::new()
            } else {
                format!("[{}]", record.events)
            },
        }
    }
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminResponse {
    /// What went wrong, if the request as a whole failed.
    pub error: Option<String>,
    /// Dead letters listed or shown.
    pub letters: Vec<DeadLetterView>,
    /// Ids replayed or purged.
    pub done: Vec<String>,
    /// Dead letters that could not be replayed, and why; they stay.
    pub refused: Vec<String>,
    /// Replays are queued in the store for the next start (no daemon ran).
    pub queued_for_next_start: bool,
    /// The failure is that no dead letter has the id asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_found: bool,
    /// A dry run: `letters` are the ones the request would touch, and
    /// nothing was touched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl AdminResponse {
    fn failed(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

/// What answering a request needs: the store and the current config, and,
/// inside the daemon, the dispatcher that sends replays at once.
#[derive(Debug, Clone)]
pub(crate) struct AdminContext {
    /// The store holding the dead letters.
    pub(crate) store: SharedStore,
    /// The current apps (replays go to their webhooks).
    pub(crate) registry: Arc<AppRegistry>,
    /// The daemon's dispatcher; `None` in the CLI, where replays wait in the
    /// store for the next start.
    pub(crate) dispatch: Option<Arc<Dispatcher>>,
    /// Where requests come from, for the audit log: `socket`, `api`, `cli`.
    pub(crate) via: &'static str,
}

/// The admin operations on a store no daemon has open: `hookline dlq`
/// when no daemon answers on the admin socket.
#[derive(Debug)]
pub struct OfflineAdmin {
    ctx: AdminContext,
}

impl OfflineAdmin {
    /// Answers on `store` with the apps of `settings.apps_dir`. With
    /// `filters`, a replay runs each letter's webhook filters (compiled
    /// into the data directory's cache) as the daemon would; call
    /// [`Self::load_apps`] before replaying.
    pub fn new(
        settings: &crate::Settings,
        sinks: crate::sinks::SinkRegistry,
        env: crate::config::EnvLookup,
        store: SharedStore,
        filters: bool,
    ) -> Result<Self, crate::filter::FilterError> {
        let components = filters.then(|| crate::sink_component::SinkComponentHost::for_daemon(settings));
        let filters = filters
            .then(|| crate::filter::FilterHost::for_daemon(settings, None))
            .transpose()?;
        let registry = Arc::new(AppRegistry::for_settings(settings, sinks, env, filters, components));
        Ok(Self {
            ctx: AdminContext {
                store,
                registry,
                dispatch: None,
                via: "cli",
            },
        })
    }

    /// Reads the app files, so a replay goes only to webhooks still
    /// configured; refused files are in the report.
    pub async fn load_apps(&self) -> std::io::Result<crate::config::ReloadReport> {
        self.ctx.registry.reload().await
    }

    /// Answers `request`.
    pub async fn handle(&self, request: AdminRequest) -> AdminResponse {
        handle(&self.ctx, request).await
    }
}

/// The id a dead letter's webhook is shown with: the one `/api/v1/apps`
/// and the status page show for that webhook, or, for a webhook no longer
/// configured, its id redacted like the logs.
pub(crate) fn shown_webhook_id(snapshot: &crate::registry::Snapshot, app_id: &str, webhook_id: &str) -> String {
    snapshot.webhook(app_id, webhook_id).map_or_else(
        || hookline_sink_api::redact_for_logs(webhook_id),
        |w| w.log_id.to_string(),
    )
}

/// The dead letters that pass `filter`, oldest first.
pub(crate) async fn filtered_letters(
    ctx: &AdminContext,
    filter: &LetterFilter,
    mut query: DeadLetterQuery,
) -> Result<Vec<DeadLetter>, String> {
    let matches = filter.matcher()?;
    if query.app_id.is_none() {
        query.app_id = filter.app.clone();
    }
    let mut letters = ctx.store.dead_letters(query).await.map_err(|e| e.to_string())?;
    let snapshot = ctx.registry.snapshot();
    letters.retain(|l| {
        matches.matches(l, |l| {
            shown_webhook_id(&snapshot, &l.record.app_id, &l.record.webhook_id)
        })
    });
    letters.sort_by_key(|l| l.record.key);
    Ok(letters)
}

/// Answers one request.
pub(crate) async fn handle(ctx: &AdminContext, request: AdminRequest) -> AdminResponse {
    // Only what the request needs is read: a listing without events, one
    // letter by id, an app's letters by app.
    let no_filter = LetterFilter::default();
    let (query, filter) = match &request {
        AdminRequest::List { filter } => (DeadLetterQuery::default(), filter),
        AdminRequest::Show { id } => (
            DeadLetterQuery {
                id: Some(id.clone()),
                with_events: true,
                ..DeadLetterQuery::default()
            },
            &no_filter,
        ),
        AdminRequest::Replay { .. } | AdminRequest::Purge { .. } => {
            let (selector, filter, dry_run) = request.target().expect("a replay or purge has a target");
            let mut query = DeadLetterQuery {
                // A replay re-sends the events; a purge and a dry run need
                // only what a listing shows.
                with_events: matches!(request, AdminRequest::Replay { .. }) && !dry_run,
                ..DeadLetterQuery::default()
            };
            match selector {
                Selector::Id(id) => query.id = Some(id.clone()),
                Selector::App(app) => query.app_id = Some(app.clone()),
                Selector::All => {}
            }
            (query, filter)
        }
    };
    let letters = match filtered_letters(ctx, filter, query).await {
        Ok(letters) => letters,
        Err(error) => return AdminResponse::failed(error),
    };
    let pick = |selector: &Selector| -> Result<Vec<DeadLetter>, AdminResponse> {
        match selector {
            Selector::Id(id) => match letters.iter().find(|l| l.record.batch_id == *id) {
                Some(letter) => Ok(vec![letter.clone()]),
                None => Err(AdminResponse {
                    not_found: true,
                    ..AdminResponse::failed(format!(
                        "no dead letter has id {id:?}; `hookline dlq list` shows the ids"
                    ))
                }),
            },
            Selector::App(_) | Selector::All => Ok(letters.clone()),
        }
    };
    let dry_run = |found: Vec<DeadLetter>| AdminResponse {
        letters: found.iter().map(DeadLetterView::from).collect(),
        dry_run: true,
        ..AdminResponse::default()
    };
    match request {
        AdminRequest::List { .. } => AdminResponse {
            letters: letters.iter().map(DeadLetterView::from).collect(),
            ..AdminResponse::default()
        },
        AdminRequest::Show { id } => match pick(&Selector::Id(id)) {
            Ok(found) => AdminResponse {
                letters: found.iter().map(DeadLetterView::from).collect(),
                ..AdminResponse::default()
            },
            Err(not_found) => not_found,
        },
        AdminRequest::Replay {
            selector,
            dry_run: true,
            ..
        }
        | AdminRequest::Purge {
            selector,
            dry_run: true,
            ..
        } => match pick(&selector) {
            Ok(found) => dry_run(found),
            Err(not_found) => not_found,
        },
        AdminRequest::Replay {
            selector, filter, rate, ..
        } => {
            let response = match (pick(&selector), rate) {
                (_, Some(rate)) if !(rate.is_finite() && rate > 0.0) => {
                    AdminResponse::failed(format!("rate {rate} is not a number of letters per second above 0"))
                }
                (Ok(found), rate) => replay(ctx, found, rate).await,
                (Err(not_found), _) => not_found,
            };
            audit(ctx, "replay", &selector, &filter, &response);
            response
        }
        AdminRequest::Purge { selector, filter, .. } => {
            let response = match pick(&selector) {
                Ok(found) => {
                    let keys = found.iter().map(|l| l.record.key).collect();
                    match ctx.store.purge_dead_letters(keys).await {
                        Ok(_) => AdminResponse {
                            done: found.iter().map(|l| l.record.batch_id.clone()).collect(),
                            ..AdminResponse::default()
                        },
                        Err(error) => AdminResponse::failed(error.to_string()),
                    }
                }
                Err(not_found) => not_found,
            };
            audit(ctx, "purge", &selector, &filter, &response);
            response
        }
    }
}

/// One audit line per replay or purge, whatever it came through.
fn audit(
    ctx: &AdminContext,
    action: &'static str,
    selector: &Selector,
    filter: &LetterFilter,
    response: &AdminResponse,
) {
    let (kind, value) = match selector {
        Selector::Id(id) => ("id", id.as_str()),
        Selector::App(app) => ("app", app.as_str()),
        Selector::All => ("all", ""),
    };
    let filter = if filter.is_empty() {
        String::new()
    } else {
        serde_json::to_string(filter).unwrap_or_default()
    };
    tracing::info!(target: "hookline::audit", via = ctx.via, action, selector = kind, value, filter,
        done = response.done.len(), refused = response.refused.len(), error = response.error.as_deref().unwrap_or(""),
        "admin action: dead letters {action}");
}

/// Moves dead letters back to the deliveries, each to the webhook with its
/// id in the current config, with a fresh retry window and its batch id;
/// at `rate`, the n-th one's first attempt waits n / `rate` seconds (kept
/// in the store, so a restart keeps the pace).
async fn replay(ctx: &AdminContext, letters: Vec<DeadLetter>, rate: Option<f64>) -> AdminResponse {
    let snapshot = ctx.registry.snapshot();
    let mut response = AdminResponse::default();
    let start = now_ms();
    let mut spaced = 0u64;
    for letter in letters {
        let mut record = letter.record;
        let webhook = snapshot.webhook(&record.app_id, &record.webhook_id).cloned();
        let Some(webhook) = webhook else {
            // Redacted: this answer reaches the admin API, which never
            // shows a secret (a default id is the target URL).
            response.refused.push(format!(
                "{}: app {:?} has no webhook {:?} in the current config; add it back or purge the dead letter",
                record.batch_id,
                record.app_id,
                hookline_sink_api::redact_for_logs(&record.webhook_id)
            ));
            continue;
        };
        record.attempts = 0;
        record.not_before_ms = rate.map_or(0, |rate| start + (spaced as f64 * 1000.0 / rate) as u64);
        spaced += 1;
        record.window_start_ms = Some(now_ms());
        let dispatch_here = match ctx.store.requeue(record.clone()).await {
            Ok(here) => here,
            Err(error) => {
                response.refused.push(format!("{}: {error}", record.batch_id));
                continue;
            }
        };
        response.done.push(record.batch_id.clone());
        match (dispatch_here, &ctx.dispatch) {
            (true, Some(dispatcher)) => dispatcher.dispatch(Delivery::new(record, webhook, true)),
            (true, None) => response.queued_for_next_start = true,
            // A shared store told the partition's owner, which sends it.
            (false, _) => {}
        }
    }
    response
}

/// Listens on `data_dir/admin.sock` until the returned guard is dropped.
pub(crate) fn serve_socket(data_dir: &Path, ctx: AdminContext) -> std::io::Result<SocketGuard> {
    let path = data_dir.join(ADMIN_SOCKET);
    // A socket left by a daemon that was killed: nobody listens on it.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        std::fs::remove_file(&path)?;
    }
    // Bound under a temporary name, made owner-only, then renamed into
    // place: the socket is never reachable with the umask's mode.
    let bound = data_dir.join(format!("{ADMIN_SOCKET}.{}", std::process::id()));
    let _ = std::fs::remove_file(&bound);
    let cannot = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on the admin socket {}: {e}", path.display()),
        )
    };
    let listener = UnixListener::bind(&bound).map_err(cannot)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(crate::private_fs::FILE_MODE)).map_err(cannot)?;
    std::fs::rename(&bound, &path).map_err(cannot)?;
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: wait rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "admin socket: cannot accept; retrying in 50 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, &ctx).await {
                    tracing::warn!(%error, "admin socket request failed");
                }
            });
        }
    });
    Ok(SocketGuard { path, task })
}

/// The longest request line read (requests are a few hundred bytes).
const MAX_REQUEST_BYTES: u64 = 64 << 10;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn answer(stream: UnixStream, ctx: &AdminContext) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => AdminResponse::failed(format!("no request line within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(error)) => AdminResponse::failed(format!("cannot read the request: {error}")),
        Ok(Ok(_)) if !line.ends_with('\n') => AdminResponse::failed(format!(
            "the request is not one line of at most {MAX_REQUEST_BYTES} bytes"
        )),
        Ok(Ok(_)) => match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => handle(ctx, request).await,
            Err(error) => AdminResponse::failed(format!("not an admin request: {error}")),
        },
    };
    let mut text = serde_json::to_string(&response).expect("responses serialise");
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Stops the admin socket and removes its file when dropped.
#[derive(Debug)]
pub(crate) struct SocketGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Asks the daemon running on `data_dir`; `Ok(None)` when none listens.
pub async fn ask_daemon(data_dir: &Path, request: &AdminRequest) -> std::io::Result<Option<AdminResponse>> {
    let path = data_dir.join(ADMIN_SOCKET);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot reach the daemon's admin socket {}: {e}", path.display()),
            ));
        }
    };
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).expect("requests serialise");
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("the daemon's answer is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_are_a_class_a_status_or_none() {
        let m = |text: &str| StatusMatch::parse(text).unwrap();
        assert!(m("4xx").matches(Some(410)) && !m("4xx").matches(Some(500)) && !m("4xx").matches(None));
        assert!(m("429").matches(Some(429)) && !m("429").matches(Some(428)));
        assert!(m("none").matches(None) && !m("NONE").matches(Some(200)));
        for bad in ["6xx", "teapot", "42", "xx"] {
            assert!(StatusMatch::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
        let window = LetterFilter {
            since_ms: Some(5),
            until_ms: Some(5),
            ..LetterFilter::default()
        };
        assert!(window.check().unwrap_err().contains("empty"));
    }
}
