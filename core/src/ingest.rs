//! The HTTP front door: native ingest (`POST /apps/{app_id}/webhook_events`,
//! authenticated like the Pusher HTTP API), relay ingest (`POST
//! /pusher/webhooks`, signed like a Pusher webhook), and the health and
//! metrics endpoints.
//!
//! Refusals are checked in the contract's order (docs/contract.md §3.3): 404 unknown app,
//! 413 too large, 401 bad signature, 403 disabled, 400 malformed, 503 busy.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;

use crate::config::App;
use crate::engine::{Engine, Refusal};
use crate::event::{ingest_body_from, parse_body_object, parse_ingest_body, time_ms_of};
use crate::metrics::{IngestLabels, RefusedLabels};
use crate::replay::Seen;
use crate::signing::{md5_matches_hex, pusher_signature_matches, verify_hmac_sha256_hex};

/// How far a native request's `auth_timestamp` may be from our clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);
/// How far ahead of our clock a relay body's `time_ms` may be.
const MAX_RELAY_FUTURE_MS: u64 = 60_000;

/// The daemon's HTTP routes.
pub(crate) fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/apps/{app_id}/webhook_events", post(native))
        .route("/pusher/webhooks", post(relay))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(engine)
}

/// The ingest listener's service: native ingest, the hot path, is answered
/// directly; every other request goes through [`router`]. Routing a request
/// through axum costs a path-parameter map, a boxed handler and a cloned
/// route per request; this costs a prefix and a suffix compare. An app id
/// with a percent-escape goes the router's way, which decodes it.
#[derive(Clone)]
pub(crate) struct IngestService {
    engine: Arc<Engine>,
    router: TowerToHyperService<Router>,
}

/// The ingest listener's service.
pub(crate) fn service(engine: Arc<Engine>) -> IngestService {
    IngestService {
        router: crate::http_server::routed(router(engine.clone())),
        engine,
    }
}

/// The app id of a native ingest path, `/apps/{app_id}/webhook_events`,
/// when it needs no decoding.
fn native_app_id(path: &str) -> Option<&str> {
    let app_id = path.strip_prefix("/apps/")?.strip_suffix("/webhook_events")?;
    (!app_id.is_empty() && !app_id.contains(['/', '%'])).then_some(app_id)
}

impl hyper::service::Service<Request<Incoming>> for IngestService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if request.method() != Method::POST || native_app_id(request.uri().path()).is_none() {
            return Box::pin(self.router.call(request));
        }
        let engine = self.engine.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let app_id = native_app_id(parts.uri.path()).expect("checked before");
            Ok(answer_native(&engine, app_id, &parts, Body::new(body)).await)
        })
    }
}

/// An ingest refusal: a status, a metric label and a message for the caller.
#[derive(Debug)]
pub(crate) struct Refused {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Answers 200 `{}` with the config generation that accepted the events
/// (`X-Hookline-Generation`), or the refusal.
fn answer(engine: &Engine, result: Result<u64, Refused>) -> Response {
    match result {
        Ok(generation) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (
                    header::HeaderName::from_static("x-hookline-generation"),
                    HeaderValue::from(generation),
                ),
            ],
            "{}",
        )
            .into_response(),
        Err(refused) => {
            engine
                .metrics()
                .requests_refused
                .get_or_create(&RefusedLabels { reason: refused.reason })
                .inc();
            let body = serde_json::json!({ "error": refused.message }).to_string();
            (refused.status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

// The request is taken whole, not as `HeaderMap` and `RawQuery`
// extractors: those copy the headers and the query for every request.
async fn native(
    State(engine): State<Arc<Engine>>,
    app_id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    match app_id {
        Ok(Path(app_id)) => answer_native(&engine, &app_id, &parts, body).await,
        // A path segment that is not UTF-8 names no app (404, as JSON).
        Err(_) => answer(
            &engine,
            Err(Refused::new(
                StatusCode::NOT_FOUND,
                "unknown_app",
                "unknown app id (the path is not valid UTF-8)",
            )),
        ),
    }
}

/// Native ingest of a request for `app_id`, answered: one place for the
/// direct path ([`IngestService`]) and the router's.
async fn answer_native(engine: &Arc<Engine>, app_id: &str, parts: &http::request::Parts, body: Body) -> Response {
    let query = parts.uri.query().unwrap_or("");
    let span = crate::trace::ingest_span("native", app_id, &parts.headers);
    let result = tracing::Instrument::instrument(native_inner(engine, app_id, query, &parts.headers, body), span).await;
    answer(engine, result)
}

/// Every other path or method: a JSON 404 like every other answer.
async fn not_found() -> Response {
    let body = serde_json::json!({
        "error": "no such endpoint; ingest is POST /apps/{app_id}/webhook_events or POST /pusher/webhooks"
    })
    .to_string();
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn native_inner(
    engine: &Arc<Engine>,
    app_id: &str,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64, Refused> {
    let snapshot = engine.registry().snapshot();
    let app = snapshot.app(app_id).cloned().ok_or_else(|| {
        Refused::new(
            StatusCode::NOT_FOUND,
            "unknown_app",
            format!("unknown app id {app_id:?}"),
        )
    })?;
    let body = read_body(engine, headers, body).await?;
    let path = format!("/apps/{app_id}/webhook_events");
    check_native_auth(&app, &path, query, &body)?;
    accept(engine, &app, &body, "native").await?;
    Ok(snapshot.generation)
}

async fn relay(State(engine): State<Arc<Engine>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let span = crate::trace::ingest_span("relay", "", &parts.headers);
    let result = tracing::Instrument::instrument(relay_inner(&engine, &parts.headers, body), span).await;
    answer(&engine, result)
}

async fn relay_inner(engine: &Arc<Engine>, headers: &HeaderMap, body: Body) -> Result<u64, Refused> {
    let body = read_body(engine, headers, body).await?;
    let now_ms = crate::delivery::now_ms();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = |message: String| Refused::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let key = header("x-pusher-key").ok_or_else(|| unauthorized("missing X-Pusher-Key header".into()))?;
    let signature =
        header("x-pusher-signature").ok_or_else(|| unauthorized("missing X-Pusher-Signature header".into()))?;
    let snapshot = engine.registry().snapshot();
    let app = snapshot
        .app_by_key(key)
        .cloned()
        .ok_or_else(|| unauthorized(format!("unknown app key {key:?}")))?;
    if !verify_hmac_sha256_hex(app.secret.expose().as_bytes(), &body, signature) {
        return Err(unauthorized(
            "X-Pusher-Signature is not the HMAC-SHA256 of the body with the app secret".into(),
        ));
    }
    // The body's time is part of the signature check (401), which comes
    // before "disabled" (403) and "malformed events" (400); only a body that
    // is not even a JSON object has no time to check.
    let object = parse_body_object(&body);
    let time_ms = match &object {
        Ok(value) => {
            let Some(time_ms) = time_ms_of(value) else {
                return Err(Refused::new(
                    StatusCode::UNAUTHORIZED,
                    "stale",
                    "relay body has no `time_ms`: a Pusher webhook carries its time, which replay protection needs",
                ));
            };
            Some(check_relay_time(
                time_ms,
                now_ms,
                engine.settings().ingest.relay_max_age_ms,
            )?)
        }
        Err(_) => None,
    };
    if !app.enabled {
        return Err(disabled(&app));
    }
    let malformed = |e: crate::event::BodyError| Refused::new(StatusCode::BAD_REQUEST, "malformed", e.0);
    let parsed = ingest_body_from(&object.map_err(malformed)?).map_err(malformed)?;
    let time_ms = time_ms.expect("a body object had its time checked");
    // Remembered one past the last moment it is fresh.
    let remembered_until = time_ms.saturating_add(engine.settings().ingest.relay_max_age_ms) + 1;
    match engine
        .relay_replays()
        .begin(&app.key, signature, remembered_until, now_ms)
    {
        Seen::New(ticket) => {
            let count = parsed.events.len() as u64;
            // Accepting and finishing the ticket run to the end even if the
            // sender disconnects meanwhile: a ticket left unfinished would
            // let its retry in as a second copy.
            let (worker, app) = (engine.clone(), app.clone());
            // In the request's span, so its events carry its trace.
            let accepted = tokio::spawn(tracing::Instrument::in_current_span(async move {
                let result = worker.accept(&app, parsed.events, "relay").await;
                worker.relay_replays().finish(ticket, result.is_ok());
                if result.is_ok() {
                    count_received(&worker, &app, "relay", count);
                }
                result
            }))
            .await
            .unwrap_or_else(|e| Err(Refusal::Store(format!("accepting the events failed: {e}"))));
            accepted.map_err(busy)?;
            Ok(snapshot.generation)
        }
        Seen::Accepted => Ok(snapshot.generation),
        Seen::InProgress => Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "duplicate_in_progress",
            "the same signed request is being accepted right now; retry it",
        )),
    }
}

/// Checks a relay body's `time_ms` (replay protection); returns it as whole
/// milliseconds.
pub(crate) fn check_relay_time(time_ms: f64, now: u64, max_age_ms: u64) -> Result<u64, Refused> {
    let unauthorized = |message: String| Refused::new(StatusCode::UNAUTHORIZED, "stale", message);
    // 2^53: beyond it f64 no longer holds every integer.
    if !time_ms.is_finite() || time_ms.fract() != 0.0 || !(0.0..=9_007_199_254_740_992.0).contains(&time_ms) {
        return Err(unauthorized(
            "`time_ms` must be a whole number of milliseconds since the Unix epoch".into(),
        ));
    }
    let time_ms = time_ms as u64;
    if time_ms > now + MAX_RELAY_FUTURE_MS {
        return Err(unauthorized(format!(
            "`time_ms` is {} s in the future (at most {} s allowed); check the sender's clock",
            (time_ms - now) / 1000,
            MAX_RELAY_FUTURE_MS / 1000
        )));
    }
    let age_ms = now.saturating_sub(time_ms);
    if age_ms > max_age_ms {
        return Err(unauthorized(format!(
            "`time_ms` is {} s old, older than relay_max_age_ms ({} s); captured webhooks cannot be replayed",
            age_ms / 1000,
            max_age_ms as f64 / 1000.0
        )));
    }
    Ok(time_ms)
}

/// Reads the body, refusing it with 413 past the limit.
async fn read_body(engine: &Engine, headers: &HeaderMap, body: Body) -> Result<Bytes, Refused> {
    let limit = engine.settings().ingest.max_body_bytes;
    let too_large = || {
        Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body is larger than max_body_bytes ({limit} bytes); send fewer events per request"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, limit);
    tokio::pin!(read);
    // Most bodies came with their headers: read at once, they need no
    // timer (a clock read and a timer-wheel entry per request).
    if let Some(read) = (&mut read).now_or_never() {
        return read.map_err(|e| body_error(e, too_large));
    }
    // A body that stalls holds a connection and up to `limit` bytes: it has
    // `read_timeout_ms`, and none at all once shutdown begins.
    let read = tokio::time::timeout(engine.settings().ingest.read_timeout(), read);
    let read = tokio::select! {
        read = read => read,
        () = engine.shutdown_started() => {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "shutting down; send it again",
            ));
        }
    };
    let Ok(read) = read else {
        return Err(Refused::new(
            StatusCode::REQUEST_TIMEOUT,
            "read_timeout",
            format!(
                "the body did not arrive within read_timeout_ms ({} ms)",
                engine.settings().ingest.read_timeout_ms
            ),
        ));
    };
    read.map_err(|e| body_error(e, too_large))
}

/// 413 past the body limit, 400 for a body that could not be read.
fn body_error(error: axum::Error, too_large: impl FnOnce() -> Refused) -> Refused {
    let is_limit = std::error::Error::source(&error).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
    if is_limit {
        too_large()
    } else {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("could not read the body: {error}"),
        )
    }
}

/// The query's `name=value` pairs as `application/x-www-form-urlencoded`
/// reads them, borrowed from the query. Pusher clients encode nothing in
/// their auth parameters, so the decoding pass (a tenth of a microsecond
/// per request, 2 % of ingest's CPU) runs only when there is something to
/// decode.
fn query_pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    if query.contains(['%', '+']) {
        return url::form_urlencoded::parse(query.as_bytes()).collect();
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (Cow::Borrowed(name), Cow::Borrowed(value))
        })
        .collect()
}

/// Pusher HTTP API authentication of a native request.
pub(crate) fn check_native_auth(app: &App, path: &str, query: &str, body: &[u8]) -> Result<(), Refused> {
    let unauthorized = |message: String| Refused::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let mut params = query_pairs(query);
    let signature = params
        .iter()
        .position(|(k, _)| k == "auth_signature")
        .map(|i| params.remove(i).1)
        .ok_or_else(|| unauthorized("missing auth_signature query parameter".into()))?;
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| &**v);
    let key = get("auth_key").ok_or_else(|| unauthorized("missing auth_key query parameter".into()))?;
    if key != &*app.key {
        return Err(unauthorized(format!("auth_key {key:?} is not this app's key")));
    }
    match get("auth_version") {
        Some("1.0") => {}
        Some(other) => {
            return Err(unauthorized(format!("auth_version must be 1.0, got {other:?}")));
        }
        None => return Err(unauthorized("missing auth_version query parameter".into())),
    }
    let timestamp = get("auth_timestamp")
        .ok_or_else(|| unauthorized("missing auth_timestamp query parameter".into()))?
        .parse::<i64>()
        .map_err(|_| unauthorized("auth_timestamp must be whole seconds since the Unix epoch".into()))?;
    let skew = (crate::delivery::now_ms() as i64 / 1000 - timestamp).unsigned_abs();
    if skew > MAX_CLOCK_SKEW.as_secs() {
        return Err(unauthorized(format!(
            "auth_timestamp is {skew} s away from the server's clock (at most {} s allowed); check the client's clock",
            MAX_CLOCK_SKEW.as_secs()
        )));
    }
    match get("body_md5") {
        Some(claimed) if !md5_matches_hex(body, claimed) => {
            return Err(unauthorized("body_md5 does not match the body".into()));
        }
        None if !body.is_empty() => {
            return Err(unauthorized("missing body_md5 query parameter".into()));
        }
        _ => {}
    }
    if !pusher_signature_matches(app.secret.expose().as_bytes(), "POST", path, &mut params, &signature) {
        return Err(unauthorized(
            "auth_signature does not match; sign with the app secret as the Pusher HTTP API does".into(),
        ));
    }
    Ok(())
}

async fn accept(engine: &Arc<Engine>, app: &Arc<App>, body: &[u8], kind: &'static str) -> Result<(), Refused> {
    if !app.enabled {
        return Err(disabled(app));
    }
    let parsed = parse_ingest_body(body).map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "malformed", e.0))?;
    let count = parsed.events.len() as u64;
    engine.accept(app, parsed.events, kind).await.map_err(busy)?;
    count_received(engine, app, kind, count);
    Ok(())
}

fn count_received(engine: &Engine, app: &App, kind: &'static str, count: u64) {
    engine
        .metrics()
        .events_received
        .get_or_create(&IngestLabels {
            app: app.id.to_string(),
            ingest: kind,
        })
        .inc_by(count);
}

fn disabled(app: &App) -> Refused {
    Refused::new(
        StatusCode::FORBIDDEN,
        "disabled",
        format!("app {:?} is disabled", app.id),
    )
}

fn busy(refusal: Refusal) -> Refused {
    Refused::new(StatusCode::SERVICE_UNAVAILABLE, refusal.reason(), refusal.to_string())
}

async fn readyz(State(engine): State<Arc<Engine>>) -> Response {
    let status = engine.status();
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&status).unwrap_or_default(),
    )
        .into_response()
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        engine.render_metrics(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_app_id_takes_only_paths_that_need_no_decoding() {
        assert_eq!(native_app_id("/apps/app-1/webhook_events"), Some("app-1"));
        // The router decodes these, or answers 404.
        for path in [
            "/apps/app%201/webhook_events",
            "/apps//webhook_events",
            "/apps/a/b/webhook_events",
            "/apps/app-1/webhook_events/",
            "/apps/app-1",
            "/pusher/webhooks",
        ] {
            assert_eq!(native_app_id(path), None, "{path}");
        }
    }

    #[test]
    fn query_pairs_reads_as_form_urlencoded_does() {
        for query in [
            "auth_key=k&auth_timestamp=1795955329&auth_version=1.0&body_md5=6db0&auth_signature=2a79",
            "",
            "&&a=&=b&c&d=e=f&",
            "a=%41&b=x+y&c=%zz&d=%E2%82%AC",
            "name=%C3%28",
        ] {
            let expected: Vec<(Cow<str>, Cow<str>)> = url::form_urlencoded::parse(query.as_bytes()).collect();
            assert_eq!(query_pairs(query), expected, "{query:?}");
        }
    }
}
