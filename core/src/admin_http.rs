//! The admin listener (`admin.listen`): the JSON API under `/api/v1` and
//! the status page at `/` (docs/contract.md §10).
//!
//! It is a listener of its own, so nothing of it is reachable on the
//! ingest port. Every route but the OpenAPI document, the page's static
//! assets and the login form needs the token: as `Authorization: Bearer`,
//! or as the session cookie the login form sets (the page's way, since a
//! browser cannot add a header to a page load). Without a token (allowed
//! only on a loopback address) nothing needs one, but the `Host` must be a
//! loopback name, so a web page cannot reach it through DNS rebinding.
//! Requests that change something are refused when a browser says they
//! come from another site.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::activity::{ActivityView, Rate};
use crate::admin::{AdminRequest, AdminResponse, DeadLetterView, LetterFilter, Selector, shown_webhook_id};
use crate::config::EnvLookup;
use crate::engine::{Engine, LastReload};
use crate::registry::Snapshot;
use crate::settings::AdminSettings;
use crate::store::Ownership;

/// The OpenAPI document of this API (checked in at `docs/openapi.json`).
pub(crate) const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The session cookie's name.
const COOKIE: &str = "hookline_admin";

/// The shortest token accepted: guessing one must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

/// Who may use the admin listener.
pub struct AdminAccess {
    /// The token's forms; `None`: no token needed (loopback only).
    token: Option<TokenForms>,
}

/// What a request may carry instead of the token itself.
struct TokenForms {
    /// SHA-256 of the token (claims are hashed too, so they are compared in
    /// constant time whatever their length).
    digest: [u8; 32],
    /// The session cookie's value: an HMAC of a fixed text under the token,
    /// so the cookie never holds the token itself.
    session: String,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AdminAccess {
    /// Reads `[admin]`: `Ok(None)` when the listener is off, else where it
    /// listens and who may use it. Every refusal names the setting.
    pub fn from_settings(settings: &AdminSettings, env: &EnvLookup) -> Result<Option<(SocketAddr, Self)>, String> {
        if settings.listen.trim().is_empty() {
            return Ok(None);
        }
        let listen: SocketAddr = settings.listen.trim().parse().map_err(|e| {
            format!(
                "admin.listen {:?} is not an address and port ({e}); e.g. \"127.0.0.1:7079\", or empty to turn it off",
                settings.listen
            )
        })?;
        let token = crate::config::substitute_env(&settings.token, env)
            .map_err(|problems| format!("admin.token: {}", problems.join("; ")))?;
        if token.is_empty() {
            if !listen.ip().is_loopback() {
                return Err(format!(
                    "admin.listen {listen} is not a loopback address, so admin.token is required \
                     (e.g. token = \"${{HOOKLINE_ADMIN_TOKEN}}\", at least {MIN_TOKEN_LEN} characters)"
                ));
            }
            return Ok(Some((listen, Self::open())));
        }
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!(
                "admin.token is shorter than {MIN_TOKEN_LEN} characters; use a long random one (e.g. `openssl rand -hex 24`)"
            ));
        }
        Ok(Some((listen, Self::with_token(&token))))
    }

    /// No token: anyone who can reach the (loopback) listener.
    pub fn open() -> Self {
        Self { token: None }
    }

    /// Requests must carry `token`.
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(TokenForms {
                digest: Sha256::digest(token.as_bytes()).into(),
                session: crate::signing::hmac_sha256_hex(token.as_bytes(), b"hookline admin session v1"),
            }),
        }
    }

    /// Whether `claimed` is the token (or none is needed).
    fn token_matches(&self, claimed: &str) -> bool {
        self.token.as_ref().is_none_or(|token| {
            let claimed: [u8; 32] = Sha256::digest(claimed.as_bytes()).into();
            bool::from(claimed.ct_eq(&token.digest))
        })
    }

    /// Whether the request carries the token, as a bearer or as the session
    /// cookie (or none is needed).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        match bearer(headers) {
            Some(claimed) => self.token_matches(claimed),
            None => cookie(headers, COOKIE)
                .is_some_and(|claimed| bool::from(claimed.as_bytes().ct_eq(token.session.as_bytes()))),
        }
    }

    /// Why a request is refused before its route runs, if it is.
    fn refusal(&self, method: &Method, headers: &HeaderMap) -> Option<Refused> {
        let host = host(headers);
        if self.token.is_none() && !is_loopback_host(host) {
            return Some(Refused::Forbidden(format!(
                "the admin listener has no token, so it answers only to a loopback host name, not {host:?}; \
                 browse to http://127.0.0.1:PORT/, or set admin.token"
            )));
        }
        if method != Method::GET && method != Method::HEAD && from_another_site(headers, host) {
            return Some(Refused::Forbidden(
                "a request that changes something must come from the status page itself, not another site".into(),
            ));
        }
        if !self.admits(headers) {
            return Some(Refused::Unauthorized);
        }
        None
    }
}

enum Refused {
    Unauthorized,
    Forbidden(String),
}

fn host(headers: &HeaderMap) -> &str {
    headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A browser's word that a request comes from a page of another origin:
/// `Sec-Fetch-Site` where the browser sends it, else `Origin` (`null`, as
/// sent for some form posts, counts as another origin).
fn from_another_site(headers: &HeaderMap, host: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(origin) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                != Some(host)
        }
    }
}

/// The routes of the admin listener.
pub(crate) fn router(engine: Arc<Engine>, access: Arc<AdminAccess>) -> Router {
    let guarded = Router::new()
        .route("/", get(page))
        .route("/api/v1/status", get(status))
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/apps/{app}/webhooks/{id}/attempts", get(attempts))
        .route("/api/v1/dead-letters", get(list_dead_letters))
        .route("/api/v1/dead-letters/replay", post(replay_many))
        .route("/api/v1/dead-letters/purge", post(purge_many))
        .route("/api/v1/dead-letters/{id}", get(show_dead_letter).delete(purge_one))
        .route("/api/v1/dead-letters/{id}/replay", post(replay_one))
        .route("/api/v1/reload", post(reload))
        .route_layer(axum::middleware::from_fn_with_state(access.clone(), guard));
    Router::new()
        .merge(guarded)
        .route(
            "/api/v1/openapi.json",
            get(|| async { asset("application/json", OPENAPI) }),
        )
        .route("/login", post(login))
        // Browsers ask for it; there is none (and the CSP allows no data: icon).
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/assets/status.css",
            get(|| async { asset("text/css", crate::status_page::CSS) }),
        )
        .route(
            "/assets/status.js",
            get(|| async { asset("text/javascript", crate::status_page::JS) }),
        )
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no such admin route; see /api/v1/openapi.json") })
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(AdminState { engine, access })
}

#[derive(Clone)]
struct AdminState {
    engine: Arc<Engine>,
    access: Arc<AdminAccess>,
}

impl axum::extract::FromRef<AdminState> for Arc<AdminAccess> {
    fn from_ref(state: &AdminState) -> Self {
        state.access.clone()
    }
}

async fn guard(State(access): State<Arc<AdminAccess>>, request: Request, next: Next) -> Response {
    match access.refusal(request.method(), request.headers()) {
        None => next.run(request).await,
        // The page asks for the token rather than answering 401.
        Some(Refused::Unauthorized) if request.uri().path() == "/" => {
            html(StatusCode::OK, crate::status_page::login(None))
        }
        Some(Refused::Unauthorized) => {
            let mut response = api_error(
                StatusCode::UNAUTHORIZED,
                "this needs the admin token: send `Authorization: Bearer <admin.token>`",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Some(Refused::Forbidden(why)) => api_error(StatusCode::FORBIDDEN, &why),
    }
}

/// Headers on every answer: nothing cached, framed or sniffed, and pages
/// that load only their own script and style.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).expect("admin views serialise");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// The login form's post: the token, checked, becomes the session cookie.
async fn login(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    if from_another_site(&headers, host(&headers)) {
        return api_error(StatusCode::FORBIDDEN, "log in from the status page itself");
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let access = &state.access;
    let Some(forms) = &access.token else {
        return redirect_home(None);
    };
    if !access.token_matches(&token) {
        tracing::warn!(target: "hookline::audit", via = "page", "admin login refused: wrong token");
        return html(
            StatusCode::UNAUTHORIZED,
            crate::status_page::login(Some("That is not the admin token.")),
        );
    }
    redirect_home(Some(format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        forms.session
    )))
}

fn redirect_home(cookie: Option<String>) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/");
    if let Some(cookie) = cookie {
        response = response.header(header::SET_COOKIE, cookie);
    }
    response.body(Body::empty()).expect("a valid redirect")
}

async fn page(State(state): State<AdminState>) -> Response {
    let apps = app_views(&state.engine);
    let status = status_view(&state.engine, &apps);
    let letters = dead_letter_page(&state.engine, &LetterQuery::default())
        .await
        .map_err(|e| e.to_string());
    html(StatusCode::OK, crate::status_page::render(&status, &apps, letters))
}

// --- Views ------------------------------------------------------------------

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatusView {
    /// This node's id.
    pub node_id: String,
    /// Hookline's version.
    pub version: &'static str,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Whether `/readyz` says ready.
    pub ready: bool,
    /// The config generation.
    pub generation: u64,
    /// The last reload's result.
    pub last_reload: Option<LastReload>,
    /// App files refused (their last good apps keep serving).
    pub file_errors: Vec<String>,
    /// Filter files still compiling since the start (their apps' batches
    /// wait for them).
    pub compiling: Vec<String>,
    /// Apps serving.
    pub apps: usize,
    /// Webhooks of those apps.
    pub webhooks: usize,
    /// The store: backend, health, backlog.
    pub store: StoreView,
    /// Events accepted by ingest.
    pub ingested_events: Rate,
    /// Batches delivered, every webhook together.
    pub delivered_batches: Rate,
    /// Failed attempts, every webhook together.
    pub failed_attempts: Rate,
}

/// The store in [`StatusView`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreView {
    /// `embedded` or `redis`.
    pub backend: String,
    /// `ok`, or the store's last error while it fails.
    pub health: String,
    /// Bytes of undelivered events.
    pub backlog_bytes: u64,
    /// Deliveries not finished on this node.
    pub pending_deliveries: usize,
    /// Age of the oldest of them (ms), if any.
    pub oldest_pending_age_ms: Option<u64>,
    /// Dead letters kept.
    pub dead_letters: u64,
    /// Partitions, and those this node owns (shared store).
    pub ownership: Ownership,
}

/// An app in `GET /api/v1/apps`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AppView {
    /// Its id.
    pub id: String,
    /// Whether it takes events.
    pub enabled: bool,
    /// The file it came from.
    pub source: String,
    /// Its webhooks.
    pub webhooks: Vec<WebhookView>,
}

/// A webhook in [`AppView`]: where it goes and how it is doing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebhookView {
    /// The webhook's id as logs show it (no credentials, query or path
    /// past its first segment), unique within the app: the id its dead
    /// letters show.
    pub id: String,
    /// The sink plugin (`http`, `lambda`).
    pub kind: &'static str,
    /// The target, redacted.
    pub target: String,
    /// Deliveries not finished (waiting, retrying or in flight).
    pub pending: usize,
    /// Age of the oldest of them (ms), if any.
    pub oldest_pending_age_ms: Option<u64>,
    /// Its `rate_limit`, if it has one.
    pub rate_limit: Option<crate::config::RateLimit>,
    /// What the lane has been doing.
    #[serde(flatten)]
    pub activity: ActivityView,
}

/// Builds `GET /api/v1/status`; the delivery totals add up `apps`' webhooks
/// (from [`app_views`]).
pub(crate) fn status_view(engine: &Engine, apps: &[AppView]) -> StatusView {
    let status = engine.status();
    let webhooks = apps.iter().flat_map(|app| &app.webhooks);
    let (mut delivered, mut failed) = (Rate::default(), Rate::default());
    for webhook in webhooks.clone() {
        delivered += webhook.activity.delivered;
        failed += webhook.activity.failed;
    }
    let now = crate::delivery::now_ms();
    StatusView {
        node_id: status.node_id,
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: engine.started().elapsed().as_secs(),
        ready: status.ready,
        generation: status.generation,
        last_reload: status.last_reload,
        file_errors: status.file_errors,
        compiling: status.compiling,
        apps: status.apps,
        webhooks: webhooks.count(),
        store: StoreView {
            backend: status.ownership.backend.to_string(),
            health: status.store,
            backlog_bytes: status.backlog_bytes,
            pending_deliveries: engine.dispatcher().pending_count(),
            oldest_pending_age_ms: engine.dispatcher().oldest_pending_ms().map(|at| now.saturating_sub(at)),
            dead_letters: engine.store().dead_letter_count(),
            ownership: status.ownership,
        },
        ingested_events: engine.ingested().view(),
        delivered_batches: delivered,
        failed_attempts: failed,
    }
}

/// Builds `GET /api/v1/apps`, apps by id.
pub(crate) fn app_views(engine: &Engine) -> Vec<AppView> {
    let snapshot = engine.registry().snapshot();
    let backlogged = engine.dispatcher().backlogged();
    let now = crate::delivery::now_ms();
    let mut apps: Vec<AppView> = snapshot
        .apps()
        .map(|app| AppView {
            id: app.id.to_string(),
            enabled: app.enabled,
            source: app.source.display().to_string(),
            webhooks: app
                .webhooks
                .iter()
                .map(|webhook| {
                    let queued = backlogged
                        .get(&(app.id.clone(), webhook.id.clone()))
                        .copied()
                        .unwrap_or_default();
                    WebhookView {
                        id: webhook.log_id.to_string(),
                        kind: webhook.kind,
                        target: webhook.sink.describe(),
                        pending: queued.deliveries,
                        oldest_pending_age_ms: queued.oldest_accepted_ms.map(|at| now.saturating_sub(at)),
                        rate_limit: webhook.rate_limit,
                        activity: engine
                            .dispatcher()
                            .activity(&app.id, &webhook.id)
                            .map_or_else(ActivityView::idle, |a| a.view()),
                    }
                })
                .collect(),
        })
        .collect();
    apps.sort_by(|a, b| a.id.cmp(&b.id));
    apps
}

async fn status(State(state): State<AdminState>) -> Response {
    json(StatusCode::OK, &status_view(&state.engine, &app_views(&state.engine)))
}

async fn apps(State(state): State<AdminState>) -> Response {
    json(StatusCode::OK, &serde_json::json!({ "apps": app_views(&state.engine) }))
}

// --- Attempt log ---------------------------------------------------------------

/// `GET /api/v1/apps/{app}/webhooks/{id}/attempts` query.
#[derive(Debug, Default, Deserialize)]
struct AttemptQuery {
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
    /// Only attempts older than this `seq` (the `next` of the previous page).
    before: Option<u64>,
}

async fn attempts(
    State(state): State<AdminState>,
    Path((app_id, webhook_id)): Path<(String, String)>,
    Query(query): Query<AttemptQuery>,
) -> Response {
    let Some(log) = state.engine.attempt_log() else {
        return api_error(
            StatusCode::NOT_FOUND,
            "the attempt log is off (delivery.attempt_log = 0); set it to the attempts to keep per webhook",
        );
    };
    let snapshot = state.engine.registry().snapshot();
    let Some(app) = snapshot.app(&app_id) else {
        return api_error(
            StatusCode::NOT_FOUND,
            &format!("no app {app_id:?} is loaded; GET /api/v1/apps lists them"),
        );
    };
    // By its id as the API shows it (or as configured).
    let Some(webhook) = app
        .webhooks
        .iter()
        .find(|w| *w.log_id == *webhook_id || *w.id == *webhook_id)
    else {
        return api_error(
            StatusCode::NOT_FOUND,
            &format!("app {app_id:?} has no webhook {webhook_id:?}; use its id as GET /api/v1/apps shows it"),
        );
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    match log.page(&app_id, &webhook.id, query.before, limit).await {
        Ok(page) => json(
            StatusCode::OK,
            &serde_json::json!({
                "app": app_id,
                "webhook": &*webhook.log_id,
                "attempts": page.attempts,
                "total": page.total,
                "next": page.next,
            }),
        ),
        Err(error) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read the attempt log: {error}"),
        ),
    }
}

// --- Dead letters -------------------------------------------------------------

/// `GET /api/v1/dead-letters` query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LetterQuery {
    /// Only this app's.
    app: Option<String>,
    /// Only this webhook's (its id as the API shows it, or as configured).
    webhook: Option<String>,
    /// Only those whose reason contains this (case-insensitive).
    reason: Option<String>,
    /// Only those whose last answer was in this class (`4xx`, `429`, `none`).
    status: Option<String>,
    /// Only those dead-lettered at or after this (ms since the Unix epoch).
    since_ms: Option<u64>,
    /// Only those dead-lettered before this (ms since the Unix epoch).
    until_ms: Option<u64>,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

impl LetterQuery {
    fn filter(&self) -> LetterFilter {
        LetterFilter {
            app: self.app.clone(),
            webhook: self.webhook.clone(),
            reason: self.reason.clone(),
            status: self.status.clone(),
            since_ms: self.since_ms,
            until_ms: self.until_ms,
        }
    }
}

/// A page of dead letters.
#[derive(Debug, Serialize)]
pub(crate) struct LetterPage {
    /// The letters, oldest first, as the API shows them (without events).
    pub(crate) dead_letters: Vec<DeadLetterView>,
    /// How many match the filters, on every page.
    pub(crate) total: usize,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub(crate) next: Option<String>,
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// A dead letter as the API shows it: its webhook by its shown id.
fn shown(snapshot: &Snapshot, view: DeadLetterView) -> DeadLetterView {
    DeadLetterView {
        webhook_id: shown_webhook_id(snapshot, &view.app_id, &view.webhook_id),
        ..view
    }
}

/// One dead letter with its events, as `payload` (JSON, not text).
fn letter_json(snapshot: &Snapshot, view: DeadLetterView) -> serde_json::Value {
    let mut view = shown(snapshot, view);
    let events = std::mem::take(&mut view.events_json);
    let mut value = serde_json::to_value(view).expect("dead letters serialise");
    if let serde_json::Value::Object(map) = &mut value
        && !events.is_empty()
    {
        let payload = serde_json::from_str(&events).unwrap_or(serde_json::Value::String(events));
        map.insert("payload".to_string(), payload);
    }
    value
}

pub(crate) async fn dead_letter_page(engine: &Engine, query: &LetterQuery) -> Result<LetterPage, String> {
    let letters = crate::admin::filtered_letters(
        &engine.admin_context(),
        &query.filter(),
        crate::store::DeadLetterQuery::default(),
    )
    .await?;
    let snapshot = engine.registry().snapshot();
    let total = letters.len();
    let after: Option<u64> = query.cursor.as_deref().and_then(|c| c.parse().ok());
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let rest: Vec<_> = letters
        .into_iter()
        .filter(|l| after.is_none_or(|a| l.record.key > a))
        .collect();
    let next = (rest.len() > limit).then(|| rest[limit - 1].record.key.to_string());
    Ok(LetterPage {
        dead_letters: rest
            .iter()
            .take(limit)
            .map(|l| shown(&snapshot, DeadLetterView::from(l)))
            .collect(),
        total,
        next,
    })
}

async fn list_dead_letters(State(state): State<AdminState>, Query(query): Query<LetterQuery>) -> Response {
    if query.cursor.as_deref().is_some_and(|c| c.parse::<u64>().is_err()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "cursor is not one this API handed out; pass the `next` of the previous page",
        );
    }
    if let Err(why) = query.filter().check() {
        return api_error(StatusCode::BAD_REQUEST, &why);
    }
    match dead_letter_page(&state.engine, &query).await {
        Ok(page) => json(StatusCode::OK, &page),
        Err(error) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read the dead letters: {error}"),
        ),
    }
}

async fn show_dead_letter(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let response = admin(&state.engine, AdminRequest::Show { id }).await;
    match response.letters.first() {
        Some(letter) if response.error.is_none() => json(
            StatusCode::OK,
            &letter_json(&state.engine.registry().snapshot(), letter.clone()),
        ),
        _ => failed(&response),
    }
}

async fn replay_one(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    done(
        admin(
            &state.engine,
            AdminRequest::Replay {
                selector: Selector::Id(id),
                filter: LetterFilter::default(),
                dry_run: false,
                rate: None,
            },
        )
        .await,
    )
}

async fn purge_one(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    done(
        admin(
            &state.engine,
            AdminRequest::Purge {
                selector: Selector::Id(id),
                filter: LetterFilter::default(),
                dry_run: false,
            },
        )
        .await,
    )
}

/// The body of the bulk replay and purge: an app's letters, the ones
/// that pass filters, or all (said explicitly, so an empty body never
/// purges everything).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Many {
    app: Option<String>,
    #[serde(default)]
    all: bool,
    webhook: Option<String>,
    reason: Option<String>,
    status: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    /// Replays only: letters a second.
    rate: Option<f64>,
}

/// Reads a bulk body: the filter, whether it is a dry run, and the rate.
fn many(body: &[u8]) -> Result<(LetterFilter, bool, Option<f64>), String> {
    const SHAPE: &str = "the body must name an app ({\"app\": \"ID\"}), filters (webhook, reason, status, since_ms, until_ms) or say {\"all\": true}";
    let many: Many = serde_json::from_slice(body).map_err(|e| format!("{SHAPE}: {e}"))?;
    let filter = LetterFilter {
        app: many.app,
        webhook: many.webhook,
        reason: many.reason,
        status: many.status,
        since_ms: many.since_ms,
        until_ms: many.until_ms,
    };
    if filter.is_empty() && !many.all {
        return Err(SHAPE.to_string());
    }
    filter.check()?;
    Ok((filter, many.dry_run, many.rate))
}

async fn replay_many(State(state): State<AdminState>, body: Bytes) -> Response {
    match many(&body) {
        Ok((filter, dry_run, rate)) => bulk(
            &state.engine,
            admin(
                &state.engine,
                AdminRequest::Replay {
                    selector: Selector::All,
                    filter,
                    dry_run,
                    rate,
                },
            )
            .await,
        ),
        Err(why) => api_error(StatusCode::BAD_REQUEST, &why),
    }
}

async fn purge_many(State(state): State<AdminState>, body: Bytes) -> Response {
    match many(&body) {
        Ok((filter, dry_run, None)) => bulk(
            &state.engine,
            admin(
                &state.engine,
                AdminRequest::Purge {
                    selector: Selector::All,
                    filter,
                    dry_run,
                },
            )
            .await,
        ),
        Ok((_, _, Some(_))) => api_error(StatusCode::BAD_REQUEST, "`rate` is for replays; a purge has none"),
        Err(why) => api_error(StatusCode::BAD_REQUEST, &why),
    }
}

/// A bulk answer: a dry run's letters (with `total`, each webhook by its
/// shown id), or what was done.
fn bulk(engine: &Engine, response: AdminResponse) -> Response {
    if !response.dry_run || response.error.is_some() {
        return done(response);
    }
    let snapshot = engine.registry().snapshot();
    let letters: Vec<DeadLetterView> = response.letters.into_iter().map(|l| shown(&snapshot, l)).collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "dry_run": true, "total": letters.len(), "dead_letters": letters }),
    )
}

async fn admin(engine: &Engine, request: AdminRequest) -> AdminResponse {
    let mut ctx = engine.admin_context();
    ctx.via = "api";
    crate::admin::handle(&ctx, request).await
}

fn failed(response: &AdminResponse) -> Response {
    let status = if response.not_found {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    api_error(status, response.error.as_deref().unwrap_or("not found"))
}

fn done(response: AdminResponse) -> Response {
    if response.error.is_some() {
        return failed(&response);
    }
    let status = if response.refused.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    json(
        status,
        &serde_json::json!({ "done": response.done, "refused": response.refused }),
    )
}

fn names(ids: &[Arc<str>]) -> Vec<&str> {
    ids.iter().map(|id| &**id).collect()
}

// --- Reload -------------------------------------------------------------------

async fn reload(State(state): State<AdminState>) -> Response {
    tracing::info!(target: "hookline::audit", via = "api", "admin action: reload");
    match state.engine.reload().await {
        Ok(report) => {
            let failures: BTreeMap<String, Vec<String>> = report
                .failures
                .iter()
                .map(|f| (f.path.display().to_string(), f.problems.clone()))
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "generation": report.generation,
                    "added": names(&report.added),
                    "removed": names(&report.removed),
                    "changed": names(&report.changed),
                    "failed_files": failures,
                }),
            )
        }
        Err(error) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot read the apps directory: {error}; the current apps keep serving"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_taken_as_a_bearer_or_as_the_session_cookie_and_nothing_else() {
        let access = AdminAccess::with_token("a-long-enough-admin-token");
        let session = access.token.as_ref().unwrap().session.clone();
        let host = ("host", "10.0.0.1:7079");
        assert!(
            access
                .refusal(
                    &Method::GET,
                    &headers(&[host, ("authorization", "Bearer a-long-enough-admin-token")])
                )
                .is_none()
        );
        assert!(
            access
                .refusal(
                    &Method::GET,
                    &headers(&[host, ("cookie", &format!("x=1; {COOKIE}={session}"))])
                )
                .is_none()
        );
        for wrong in [
            vec![host],
            vec![host, ("authorization", "Bearer a-long-enough-admin-toke")],
            vec![host, ("authorization", "Basic a-long-enough-admin-token")],
            vec![host, ("cookie", "hookline_admin=a-long-enough-admin-token")],
        ] {
            assert!(matches!(
                access.refusal(&Method::GET, &headers(&wrong)),
                Some(Refused::Unauthorized)
            ));
        }
    }

    #[test]
    fn without_a_token_only_loopback_host_names_are_answered() {
        let access = AdminAccess::open();
        for ok in ["127.0.0.1:7079", "localhost:7079", "[::1]:7079", "LOCALHOST"] {
            assert!(
                access.refusal(&Method::GET, &headers(&[("host", ok)])).is_none(),
                "{ok}"
            );
        }
        for rebound in ["evil.example:7079", "127.0.0.1.evil.example", ""] {
            assert!(
                matches!(
                    access.refusal(&Method::GET, &headers(&[("host", rebound)])),
                    Some(Refused::Forbidden(_))
                ),
                "{rebound:?}"
            );
        }
    }

    #[test]
    fn changes_from_another_site_are_refused_even_with_the_cookie() {
        let access = AdminAccess::with_token("a-long-enough-admin-token");
        let cookie = format!("{COOKIE}={}", access.token.as_ref().unwrap().session);
        let host = ("host", "127.0.0.1:7079");
        let cross = headers(&[host, ("cookie", &cookie), ("origin", "https://evil.example")]);
        assert!(matches!(
            access.refusal(&Method::POST, &cross),
            Some(Refused::Forbidden(_))
        ));
        let fetch = headers(&[host, ("cookie", &cookie), ("sec-fetch-site", "cross-site")]);
        assert!(matches!(
            access.refusal(&Method::DELETE, &fetch),
            Some(Refused::Forbidden(_))
        ));
        let same = headers(&[
            host,
            ("cookie", &cookie),
            ("origin", "http://127.0.0.1:7079"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(access.refusal(&Method::POST, &same).is_none());
        assert!(
            access.refusal(&Method::GET, &cross).is_none(),
            "reading is not a change"
        );
    }

    #[test]
    fn settings_refuse_a_public_listener_without_a_token_and_a_short_token() {
        let env: EnvLookup = Arc::new(|name| (name == "TOKEN").then(|| "from-the-environment-1234".to_string()));
        let settings = |listen: &str, token: &str| AdminSettings {
            listen: listen.to_string(),
            token: token.to_string(),
        };
        assert!(AdminAccess::from_settings(&settings("", ""), &env).unwrap().is_none());
        assert!(
            AdminAccess::from_settings(&settings("127.0.0.1:0", ""), &env)
                .unwrap()
                .is_some()
        );
        let error = AdminAccess::from_settings(&settings("0.0.0.0:7079", ""), &env).unwrap_err();
        assert!(error.contains("admin.token is required"), "{error}");
        let error = AdminAccess::from_settings(&settings("0.0.0.0:7079", "short"), &env).unwrap_err();
        assert!(error.contains("shorter than 16"), "{error}");
        let error = AdminAccess::from_settings(&settings("nowhere", ""), &env).unwrap_err();
        assert!(error.contains("admin.listen \"nowhere\""), "{error}");
        let (_, access) = AdminAccess::from_settings(&settings("0.0.0.0:7079", "${TOKEN}"), &env)
            .unwrap()
            .unwrap();
        assert!(access.admits(&headers(&[("authorization", "Bearer from-the-environment-1234")])));
        assert!(
            !format!("{access:?}").contains("from-the"),
            "Debug never shows the token"
        );
    }
}
