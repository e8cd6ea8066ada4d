//! The `nats` sink plugin: a webhook with a `nats_subject` key publishes
//! each signed batch to that subject, through JetStream by default (the
//! batch counts as delivered once the stream's `PubAck` arrives) or as a
//! plain core NATS publish when `nats.jetstream` is `false` (no
//! acknowledgement: delivered once the server has read it, not stored).
//!
//! The message payload is the exact signed body; `X-Pusher-Key`,
//! `X-Pusher-Signature`, `X-Hookline-Batch-Id`, `X-Hookline-Batch-Time` and
//! the webhook's own `headers` are NATS headers, and `Nats-Msg-Id` is the
//! batch id so a stream de-duplicates a resend within its duplicate window.
//!
//! Connections are made on the first send, never in `build` (so `hookline
//! check` stays offline), and shared by every webhook naming the same
//! servers, authentication and TLS settings; async-nats reconnects them.

mod config;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishErrorKind};
use async_nats::{ConnectErrorKind, Event, HeaderMap, ServerError};
use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};
use tokio::sync::OnceCell;

pub use config::{Auth, ConnectionSpec, DEFAULT_MAX_PAYLOAD, DEFAULT_URL, NatsTarget, TlsSpec, redact_server};

/// How long one connection attempt may take before the send fails with a
/// `Connect` error (the engine retries it with backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds [`NatsSink`]s for webhooks that carry a `nats_subject`.
#[derive(Default)]
pub struct NatsSinkPlugin {
    /// Connections in use, by what distinguishes them; weak so that a
    /// connection closes with the last webhook using it.
    connections: Mutex<HashMap<ConnectionSpec, Weak<Connection>>>,
}

impl std::fmt::Debug for NatsSinkPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSinkPlugin").finish_non_exhaustive()
    }
}

impl NatsSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self::default()
    }

    fn connection_for(&self, spec: &ConnectionSpec) -> Arc<Connection> {
        let mut connections = self
            .connections
            .lock()
            .expect("connections lock is never held across a panic");
        if let Some(connection) = connections.get(spec).and_then(Weak::upgrade) {
            return connection;
        }
        connections.retain(|_, weak| weak.strong_count() > 0);
        let connection = Arc::new(Connection::new(spec.clone()));
        connections.insert(spec.clone(), Arc::downgrade(&connection));
        connection
    }
}

impl SinkPlugin for NatsSinkPlugin {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn selector_key(&self) -> &'static str {
        "nats_subject"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["nats"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        let target = NatsTarget::from_spec(spec)?;
        let connection = self.connection_for(&target.connection);
        Ok(Box::new(NatsSink {
            subject: async_nats::Subject::from(target.subject.as_str()),
            connection,
            target,
        }))
    }
}

/// One (lazily made) NATS connection and its JetStream context.
struct Connection {
    spec: ConnectionSpec,
    client: OnceCell<(async_nats::Client, jetstream::Context)>,
    /// The server's `max_payload` once connected (0 before).
    max_payload: AtomicUsize,
    /// The server's recent permission violations (its `-ERR` text, which
    /// has no typed form), so a publish that gets no ack for want of a
    /// permission is told apart from a slow stream.
    violations: Arc<Mutex<Vec<(Instant, String)>>>,
}

/// How many permission violations a connection remembers.
const VIOLATIONS_KEPT: usize = 16;

impl Connection {
    fn new(spec: ConnectionSpec) -> Self {
        Self {
            spec,
            client: OnceCell::new(),
            max_payload: AtomicUsize::new(0),
            violations: Arc::default(),
        }
    }

    /// The connected client, connecting on first use. A failed attempt
    /// leaves the cell empty, so the next send tries again.
    async fn get(&self) -> Result<&(async_nats::Client, jetstream::Context), DeliveryError> {
        let pair = self
            .client
            .get_or_try_init(|| async {
                let options = self.options()?;
                let client = options
                    .connect(self.spec.servers.clone())
                    .await
                    .map_err(|e| self.connect_error(e))?;
                // The engine bounds each attempt; the context's own ack wait
                // is a backstop only.
                let context = jetstream::ContextBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build(client.clone());
                Ok::<_, DeliveryError>((client, context))
            })
            .await?;
        // The server may change (reconnect to another node): read it each time.
        self.max_payload.store(pair.0.max_payload(), Ordering::Relaxed);
        Ok(pair)
    }

    fn options(&self) -> Result<async_nats::ConnectOptions, DeliveryError> {
        let mut options = match &self.spec.auth {
            Auth::None => async_nats::ConnectOptions::new(),
            Auth::Credentials { path, contents } => {
                async_nats::ConnectOptions::with_credentials(contents).map_err(|_| {
                    DeliveryError::Final(format!(
                        "`nats.credentials` {} is not a NATS .creds file",
                        path.display()
                    ))
                })?
            }
            Auth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            Auth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            Auth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
        };
        let tls = &self.spec.tls;
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if tls.required {
            options = options.require_tls(true);
        }
        Ok(options
            .name(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .connection_timeout(CONNECT_TIMEOUT)
            // Hookline never reads its own publishes.
            .no_echo()
            .event_callback({
                let violations = self.violations.clone();
                move |event| {
                    let violations = violations.clone();
                    async move {
                        if let Event::ServerError(ServerError::Other(text)) = event
                            && text.to_ascii_lowercase().starts_with("permissions violation")
                        {
                            let mut kept = violations.lock().expect("violations lock is never held across a panic");
                            if kept.len() == VIOLATIONS_KEPT {
                                kept.remove(0);
                            }
                            kept.push((Instant::now(), text));
                        }
                    }
                }
            }))
    }

    /// A permission violation the server reported since `since` that
    /// concerns publishing to `subject` or the replies a JetStream publish
    /// needs, as a final error naming the subject.
    fn permission_violation(&self, subject: &str, since: Instant) -> Option<DeliveryError> {
        let kept = self
            .violations
            .lock()
            .expect("violations lock is never held across a panic");
        let quoted = format!("\"{subject}\"");
        kept.iter().rev().take_while(|(at, _)| *at >= since).find_map(|(_, text)| {
            let lower = text.to_ascii_lowercase();
            if lower.contains("for publish to") && text.contains(&quoted) {
                Some(DeliveryError::Final(format!(
                    "NATS refused publishing to {subject:?}: the connection's user lacks the permission ({text}); allow it in the server's authorization"
                )))
            } else if lower.contains("for subscription to") {
                Some(DeliveryError::Final(format!(
                    "NATS refused the reply subscription a JetStream publish to {subject:?} needs ({text}); allow the user to subscribe to _INBOX.>"
                )))
            } else {
                None
            }
        })
    }

    fn connect_error(&self, error: async_nats::ConnectError) -> DeliveryError {
        let servers = self.servers_for_logs();
        match error.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                DeliveryError::Final(format!(
                    "NATS at {servers} refused the connection's credentials ({}); fix the webhook's `nats` authentication",
                    error.kind()
                ))
            }
            ConnectErrorKind::TimedOut => DeliveryError::Connect(format!(
                "no answer from NATS at {servers} within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
            // The error's display names the kind and the OS/TLS cause; it
            // carries no secret.
            _ => DeliveryError::Connect(format!("NATS at {servers}: {error}")),
        }
    }

    fn servers_for_logs(&self) -> String {
        self.spec
            .servers
            .iter()
            .map(|s| redact_server(s))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Publishes to one subject.
pub struct NatsSink {
    connection: Arc<Connection>,
    target: NatsTarget,
    /// The subject in the client's form, cloned per publish without copying.
    subject: async_nats::Subject,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// The payload limit in force: the server's once connected (capped by
    /// `nats.max_payload_bytes`), else that setting or the server default.
    fn max_payload(&self) -> usize {
        let learned = self.connection.max_payload.load(Ordering::Relaxed);
        match (learned, self.target.max_payload_bytes) {
            (0, configured) => configured.unwrap_or(DEFAULT_MAX_PAYLOAD),
            (server, Some(configured)) => server.min(configured),
            (server, None) => server,
        }
    }

    /// The message's headers; a webhook header whose name NATS cannot
    /// carry is a final error naming it (async-nats would panic on it).
    fn headers(&self, request: &SinkRequest<'_>) -> Result<HeaderMap, DeliveryError> {
        let mut headers = HeaderMap::new();
        // As the http sink sends it: the official Pusher libraries' webhook
        // check wants exactly this, so a consumer can hand them the headers.
        headers.insert("Content-Type", "application/json");
        for (name, value) in request.extra_headers {
            let signed = request
                .signed_headers
                .iter()
                .any(|(signed, _)| signed.eq_ignore_ascii_case(name));
            let ours = ["Nats-Msg-Id", "Content-Type"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name));
            if !signed && !ours {
                let header = async_nats::HeaderName::from_str(name).map_err(|_| {
                    DeliveryError::Final(format!(
                        "the webhook header {name:?} cannot be a NATS header (no control characters, non-ASCII or ':'); rename it in `headers`"
                    ))
                })?;
                headers.insert(header, value.as_str());
            }
        }
        for (name, value) in request.signed_headers {
            headers.insert(*name, value.as_str());
            if name.eq_ignore_ascii_case("X-Hookline-Batch-Id") {
                headers.insert("Nats-Msg-Id", value.as_str());
            }
        }
        Ok(headers)
    }
}

/// The serialized size of a header block as NATS counts it against
/// `max_payload`: `NATS/1.0\r\n`, each `name: value\r\n`, then `\r\n`.
fn header_block_len<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> usize {
    b"NATS/1.0\r\n\r\n".len()
        + headers
            .map(|(name, value)| name.len() + 2 + value.len() + 2)
            .sum::<usize>()
}

/// Room kept for the signed headers and `Nats-Msg-Id`, whose values are
/// not known when the engine asks for the limit.
const SIGNED_HEADERS_ALLOWANCE: usize = 512;

impl Sink for NatsSink {
    fn describe(&self) -> String {
        format!(
            "nats:{}@{}",
            self.target.subject,
            redact_server(&self.target.connection.servers[0])
        )
    }

    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize> {
        let headers =
            header_block_len(extra_headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))) + SIGNED_HEADERS_ALLOWANCE;
        Some(self.max_payload().saturating_sub(headers))
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn check_headers(&self, headers: &[(String, String)]) -> Result<(), SinkConfigError> {
        for (name, _) in headers {
            if async_nats::HeaderName::from_str(name).is_err() {
                return Err(SinkConfigError::new(format!(
                    "`headers` has {name:?}, which cannot be a NATS header name (no control characters, non-ASCII or ':'); rename it"
                )));
            }
        }
        Ok(())
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (client, context) = self.connection.get().await?;
            let headers = self.headers(&request)?;
            let limit = self.max_payload();
            let size = request.body.len()
                + header_block_len(
                    headers
                        .iter()
                        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_ref(), v.as_str()))),
                );
            if size > limit {
                return Err(DeliveryError::TooLarge(format!(
                    "a message of {size} bytes (body and headers) is over the NATS payload limit of {limit} bytes"
                )));
            }
            if client.connection_state() != State::Connected {
                // Publishing now would only queue in the client until the
                // ack wait ran out; say what is wrong instead.
                return Err(DeliveryError::Connect(format!(
                    "not connected to NATS at {} (reconnecting)",
                    self.connection.servers_for_logs()
                )));
            }
            let subject = self.subject.clone();
            let started = Instant::now();
            if self.target.jetstream {
                // Leave the engine's own timeout a margin, so a missing
                // PubAck is reported as ours (throttling) rather than as a
                // counted attempt timeout.
                let wait = request.timeout.saturating_sub(request.timeout / 10);
                let publish = async {
                    context
                        .publish_with_headers(subject, headers, request.body.clone())
                        .await?
                        .await
                };
                let connected = || client.connection_state() == State::Connected;
                match tokio::time::timeout(wait, publish).await {
                    Ok(Ok(_ack)) => Ok(()),
                    Ok(Err(error)) if error.kind() == PublishErrorKind::StreamNotFound => {
                        Err(no_responders(client, context, &self.target.subject).await)
                    }
                    Ok(Err(error)) => Err(match error.kind() {
                        PublishErrorKind::TimedOut => {
                            self.connection.permission_violation(&self.target.subject, started)
                        }
                        _ => None,
                    }
                    .unwrap_or_else(|| classify_publish(&error, &self.target.subject, connected()))),
                    Err(_) => Err(self
                        .connection
                        .permission_violation(&self.target.subject, started)
                        .unwrap_or_else(|| classify_ack_timeout(&self.target.subject, connected()))),
                }
            } else {
                client
                    .publish_with_headers(subject, headers, request.body.clone())
                    .await
                    .map_err(|e| match e.kind() {
                        async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                            DeliveryError::TooLarge(format!("over the NATS payload limit: {e}"))
                        }
                        async_nats::client::PublishErrorKind::InvalidSubject => {
                            DeliveryError::Final(format!("NATS refused the subject {:?}: {e}", self.target.subject))
                        }
                        async_nats::client::PublishErrorKind::Send => {
                            DeliveryError::Connect(format!("the NATS connection is closed: {e}"))
                        }
                    })?;
                // Core NATS has no acknowledgement: the flush's PONG says the
                // server read the message, not that anyone received it.
                client
                    .flush()
                    .await
                    .map_err(|e| DeliveryError::Connect(format!("flushing to NATS failed: {e}")))?;
                // The server's `-ERR` for a refused publish comes before the
                // flush's PONG, but reaches us on another task: best effort.
                match self.connection.permission_violation(&self.target.subject, started) {
                    Some(refused) => Err(refused),
                    None => Ok(()),
                }
            }
        })
    }
}

/// No `PubAck` in time: while connected that is a busy (or absent) stream,
/// which the issue retries like a 429; while disconnected, a network error.
fn classify_ack_timeout(subject: &str, connected: bool) -> DeliveryError {
    if connected {
        DeliveryError::Throttled { retry_after: None }
    } else {
        DeliveryError::Connect(format!(
            "the NATS connection dropped before the stream acknowledged the publish to {subject:?}"
        ))
    }
}

/// How long the JetStream API may take to say which stream captures a
/// subject, after a publish found no responder.
const STREAM_LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// A JetStream publish that found no responder: either no stream captures
/// the subject (a missing stream, final like a missing queue: the dead
/// letter says which subject and can be replayed once a stream is made),
/// or JetStream is not answering yet (starting after a restart), which is
/// retried like a throttle. The JetStream API tells them apart.
async fn no_responders(client: &async_nats::Client, context: &jetstream::Context, subject: &str) -> DeliveryError {
    let not_enabled = || {
        DeliveryError::Final(format!(
            "the NATS server does not have JetStream enabled for the subject {subject:?}; enable it (nats-server -js, \
             or the account's jetstream limits), or set `nats.jetstream` to false for core NATS, which has no \
             acknowledgement"
        ))
    };
    if !client.server_info().jetstream {
        return not_enabled();
    }
    match tokio::time::timeout(STREAM_LOOKUP_WAIT, context.stream_by_subject(subject)).await {
        Ok(Err(error)) if matches!(error.kind(), GetStreamByNameErrorKind::NotFound) => DeliveryError::Final(format!(
            "no JetStream stream captures the subject {subject:?}; create one whose subjects include it (then replay \
             the dead letters), or set `nats.jetstream` to false for core NATS"
        )),
        Ok(Err(error))
            if jetstream_code(&error).is_some_and(|code| {
                code == ErrorCode::JETSTREAM_NOT_ENABLED || code == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
            }) =>
        {
            not_enabled()
        }
        _ => DeliveryError::Throttled { retry_after: None },
    }
}

/// The JetStream API error code somewhere in an error's sources.
fn jetstream_code(error: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(api) = error.downcast_ref::<jetstream::Error>() {
            return Some(api.error_code());
        }
        source = error.source();
    }
    None
}

/// Maps a JetStream publish error to a delivery outcome, from its kind and
/// the JetStream API error code; never from message text.
fn classify_publish(error: &jetstream::context::PublishError, subject: &str, connected: bool) -> DeliveryError {
    match error.kind() {
        // "No responders" when the JetStream API could not be asked which
        // stream captures the subject (see `no_responders`).
        PublishErrorKind::StreamNotFound => DeliveryError::Throttled { retry_after: None },
        PublishErrorKind::TimedOut | PublishErrorKind::MaxAckPending => classify_ack_timeout(subject, connected),
        PublishErrorKind::BrokenPipe => DeliveryError::Connect(format!(
            "the NATS connection dropped before the stream acknowledged the publish to {subject:?}"
        )),
        PublishErrorKind::MaxPayloadExceeded => {
            DeliveryError::TooLarge(format!("over the NATS server's max_payload: {error}"))
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            DeliveryError::Final(format!("the stream capturing {subject:?} refused the publish: {error}"))
        }
        _ => match api_error(error) {
            Some(api) => classify_api_error(api.error_code(), &api.to_string(), subject),
            None => DeliveryError::Transient(format!("publishing to {subject:?} failed: {error}")),
        },
    }
}

/// The JetStream API error inside a publish error, when the stream answered
/// with one.
fn api_error(error: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()
}

/// Classifies a JetStream API error by its code. `detail` is only carried
/// into the message.
fn classify_api_error(code: ErrorCode, detail: &str, subject: &str) -> DeliveryError {
    match code {
        // A full stream with `discard: new` ("maximum messages/bytes
        // exceeded") and other store refusals, and the account or server
        // out of resources: they clear as consumers catch up or limits
        // are raised.
        ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES => DeliveryError::Throttled { retry_after: None },
        // The stream's own max_msg_size (or header limit): split.
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM => {
            DeliveryError::TooLarge(format!("the stream capturing {subject:?}: {detail}"))
        }
        // Cluster leadership changes and stream recovery pass.
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::CLUSTER_NOT_LEADER
        | ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::CLUSTER_INCOMPLETE
        | ErrorCode::STREAM_OFFLINE
        | ErrorCode::RAFT_GENERAL => DeliveryError::Transient(format!("the stream capturing {subject:?}: {detail}")),
        ErrorCode::STREAM_NOT_FOUND => DeliveryError::Final(format!(
            "no JetStream stream captures the subject {subject:?} ({detail}); create one whose subjects include it"
        )),
        ErrorCode::JETSTREAM_NOT_ENABLED | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
            DeliveryError::Final(format!(
                "JetStream is not enabled for the subject {subject:?} ({detail}); enable it on the server, or set `nats.jetstream` to false"
            ))
        }
        // A sealed stream, a bad request and the rest: no retry will help.
        _ => DeliveryError::Final(format!(
            "the stream capturing {subject:?} refused the publish ({detail})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(nats: serde_json::Value) -> Box<dyn Sink> {
        let spec = serde_json::json!({"nats_subject": "pusher.hooks", "nats": nats});
        NatsSinkPlugin::new().build(spec.as_object().unwrap()).unwrap()
    }

    #[test]
    fn describes_the_subject_and_first_server_without_credentials() {
        let s = sink(serde_json::json!({"url": "nats://n1.example:4333,nats://n2:4222", "token": "s3cret"}));
        assert_eq!(s.describe(), "nats:pusher.hooks@n1.example:4333");
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = sink(serde_json::Value::Null);
        assert_eq!(s.describe(), "nats:pusher.hooks@127.0.0.1:4222");
    }

    #[test]
    fn body_limit_is_the_payload_limit_less_the_headers() {
        let s = sink(serde_json::Value::Null);
        let bare = s.max_body_bytes(&[]).unwrap();
        assert!(
            bare < DEFAULT_MAX_PAYLOAD && bare > DEFAULT_MAX_PAYLOAD - 1024,
            "{bare}"
        );
        let with = s.max_body_bytes(&[("X-Env".into(), "prod".into())]).unwrap();
        assert_eq!(bare - with, "X-Env: prod\r\n".len());
        let s = sink(serde_json::json!({"max_payload_bytes": 4096}));
        assert_eq!(s.max_body_bytes(&[]).unwrap(), 4096 - SIGNED_HEADERS_ALLOWANCE - 12);
    }

    #[test]
    fn refuses_header_names_nats_cannot_carry() {
        let s = sink(serde_json::Value::Null);
        assert!(s.check_headers(&[("X-Env".into(), "prod é".into())]).is_ok());
        for name in ["X-Bad:Name", "X-Ünicode", "X-\u{1}"] {
            let refused = s.check_headers(&[(name.into(), "v".into())]).unwrap_err();
            assert!(refused.message.starts_with("`headers` has"), "{refused}");
        }
    }

    #[test]
    fn connections_are_shared_per_servers_auth_and_tls() {
        let plugin = NatsSinkPlugin::new();
        let spec = |nats: serde_json::Value| {
            NatsTarget::from_spec(
                serde_json::json!({"nats_subject": "s", "nats": nats})
                    .as_object()
                    .unwrap(),
            )
            .unwrap()
            .connection
        };
        let a = plugin.connection_for(&spec(serde_json::json!({"url": "nats://h:1", "token": "a"})));
        let b = plugin.connection_for(&spec(serde_json::json!({"url": "nats://h:1", "token": "a"})));
        let c = plugin.connection_for(&spec(serde_json::json!({"url": "nats://h:1", "token": "b"})));
        let d = plugin.connection_for(&spec(serde_json::json!({"url": "nats://h:2", "token": "a"})));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
    }

    #[test]
    fn signed_headers_win_and_the_batch_id_is_the_msg_id() {
        let s = NatsSink {
            connection: Arc::new(Connection::new(
                NatsTarget::from_spec(serde_json::json!({"nats_subject": "s"}).as_object().unwrap())
                    .unwrap()
                    .connection,
            )),
            target: NatsTarget::from_spec(serde_json::json!({"nats_subject": "s"}).as_object().unwrap()).unwrap(),
            subject: async_nats::Subject::from("s"),
        };
        let signed = [
            ("X-Pusher-Key", "k".to_string()),
            ("X-Pusher-Signature", "sig".to_string()),
            ("X-Hookline-Batch-Id", "b-1".to_string()),
            ("X-Hookline-Batch-Time", "1".to_string()),
        ];
        let extra = [
            ("x-pusher-signature".to_string(), "forged".to_string()),
            ("Nats-Msg-Id".to_string(), "mine".to_string()),
            ("X-Env".to_string(), "prod".to_string()),
        ];
        let request = SinkRequest {
            body: bytes::Bytes::from_static(b"{}"),
            signed_headers: &signed,
            extra_headers: &extra,
            timeout: Duration::from_secs(1),
            app_id: "a",
            webhook_id: "w",
            channel: None,
            attempt: 1,
            answer: None,
        };
        let headers = s.headers(&request).unwrap();
        assert_eq!(headers.get("X-Pusher-Signature").unwrap().as_str(), "sig");
        assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), "b-1");
        assert_eq!(headers.get("X-Env").unwrap().as_str(), "prod");
        assert_eq!(headers.get("Content-Type").unwrap().as_str(), "application/json");
        let bad = [("X-Bad:Name".to_string(), "v".to_string())];
        let refused = s
            .headers(&SinkRequest {
                extra_headers: &bad,
                ..request.clone()
            })
            .unwrap_err();
        assert!(
            matches!(&refused, DeliveryError::Final(m) if m.contains("X-Bad:Name")),
            "{refused:?}"
        );
        assert_eq!(headers.iter().map(|(_, v)| v.len()).sum::<usize>(), 7);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connect_error_not_a_hang() {
        let s = sink(serde_json::json!({"url": "nats://127.0.0.1:1", "password": "pw", "user": "u"}));
        let signed = [("X-Hookline-Batch-Id", "b".to_string())];
        let request = SinkRequest {
            body: bytes::Bytes::from_static(b"{}"),
            signed_headers: &signed,
            extra_headers: &[],
            timeout: Duration::from_secs(10),
            app_id: "a",
            webhook_id: "w",
            channel: None,
            attempt: 1,
            answer: None,
        };
        for _ in 0..2 {
            let error = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(2), s.send(request.clone()))
                .await
                .expect("the attempt ends within the connect timeout")
                .unwrap_err();
            assert!(
                matches!(&error, DeliveryError::Connect(m) if m.contains("127.0.0.1:1") && !m.contains("pw")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn permission_violations_are_final_and_name_the_subject() {
        let connection = Connection::new(
            NatsTarget::from_spec(serde_json::json!({"nats_subject": "s"}).as_object().unwrap())
                .unwrap()
                .connection,
        );
        let before = Instant::now();
        assert!(connection.permission_violation("a.b", before).is_none());
        let record = |text: &str| {
            connection
                .violations
                .lock()
                .unwrap()
                .push((Instant::now(), text.to_string()))
        };
        record("Permissions Violation for Publish to \"other\"");
        assert!(
            connection.permission_violation("a.b", before).is_none(),
            "another subject's"
        );
        record("Permissions Violation for Publish to \"a.b\"");
        let refused = connection.permission_violation("a.b", before).unwrap();
        assert!(
            matches!(&refused, DeliveryError::Final(m) if m.contains("\"a.b\"")),
            "{refused:?}"
        );
        assert!(
            connection.permission_violation("a.b", Instant::now()).is_none(),
            "only violations since the publish began count"
        );
        record("Permissions Violation for Subscription to \"_INBOX.x.*\"");
        let refused = connection.permission_violation("c", before).unwrap();
        assert!(
            matches!(&refused, DeliveryError::Final(m) if m.contains("_INBOX")),
            "{refused:?}"
        );
    }

    #[test]
    fn classifies_jetstream_errors_by_kind_and_code() {
        use jetstream::context::PublishError;
        let throttled = |e: &DeliveryError| matches!(e, DeliveryError::Throttled { retry_after: None });
        let connected = true;
        assert!(throttled(&classify_publish(
            &PublishError::new(PublishErrorKind::StreamNotFound),
            "s",
            connected
        )));
        assert!(throttled(&classify_publish(
            &PublishError::new(PublishErrorKind::TimedOut),
            "s",
            connected
        )));
        assert!(matches!(
            classify_publish(&PublishError::new(PublishErrorKind::TimedOut), "s", false),
            DeliveryError::Connect(_)
        ));
        assert!(matches!(
            classify_publish(&PublishError::new(PublishErrorKind::BrokenPipe), "s", connected),
            DeliveryError::Connect(_)
        ));
        assert!(matches!(
            classify_publish(&PublishError::new(PublishErrorKind::MaxPayloadExceeded), "s", connected),
            DeliveryError::TooLarge(_)
        ));
        assert!(throttled(&classify_api_error(
            ErrorCode::STREAM_STORE_FAILED,
            "maximum messages exceeded",
            "s"
        )));
        assert!(matches!(
            classify_api_error(
                ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM,
                "message size exceeds maximum allowed",
                "s"
            ),
            DeliveryError::TooLarge(_)
        ));
        assert!(matches!(
            classify_api_error(ErrorCode::CLUSTER_NOT_LEADER, "", "s"),
            DeliveryError::Transient(_)
        ));
        let sealed = classify_api_error(ErrorCode::STREAM_SEALED, "invalid operation on sealed stream", "a.b");
        assert!(
            matches!(&sealed, DeliveryError::Final(m) if m.contains("\"a.b\"")),
            "{sealed:?}"
        );
        let missing = classify_api_error(ErrorCode::STREAM_NOT_FOUND, "stream not found", "a.b");
        assert!(
            matches!(&missing, DeliveryError::Final(m) if m.contains("\"a.b\"")),
            "{missing:?}"
        );

        // As the ack future reports a stream's refusal: kind Other, the API
        // error as its source.
        let api = |code: u64, description: &str| {
            let error: jetstream::Error =
                serde_json::from_value(serde_json::json!({"code": 503, "err_code": code, "description": description}))
                    .unwrap();
            PublishError::with_source(PublishErrorKind::Other, error)
        };
        assert!(throttled(&classify_publish(
            &api(10077, "maximum messages exceeded"),
            "s",
            connected
        )));
        assert!(throttled(&classify_publish(
            &api(10077, "maximum bytes exceeded"),
            "s",
            connected
        )));
        assert!(matches!(
            classify_publish(&api(10054, "message size exceeds maximum allowed"), "s", connected),
            DeliveryError::TooLarge(_)
        ));
        assert!(matches!(
            classify_publish(&api(10109, "invalid operation on sealed stream"), "s", connected),
            DeliveryError::Final(_)
        ));
        assert!(matches!(
            classify_publish(&PublishError::new(PublishErrorKind::Other), "s", connected),
            DeliveryError::Transient(_)
        ));
    }
}
