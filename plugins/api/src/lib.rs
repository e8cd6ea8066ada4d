//! The sink plugin interface of Hookline.
//!
//! A *sink* is one delivery target kind (HTTP endpoint, AWS Lambda function, …).
//! Plugins implement [`SinkPlugin`], which turns a webhook's JSON definition
//! from an app file into a runtime [`Sink`]. The engine owns everything else:
//! batching, rendering and signing the body, concurrency, retries and dead
//! letters. A sink only knows how to send one already-signed request and how
//! to describe what happened as a typed [`DeliveryError`].
//!
//! This crate is deliberately small (like `axum-core`) so that plugins depend
//! on it alone, never on the engine or on each other.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

/// A boxed future, as returned by [`Sink::send`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The keys of one webhook that are the plugin's, as written in an app file
/// (after `${NAME}` references were resolved): every key but those the
/// engine reads itself (`id`, `event_types`, `filter`, `filters`,
/// `headers`, `timeout_ms`, `retry`, `max_in_flight`, `ordering`), which a
/// plugin gets in built form with each attempt (`headers` and `timeout_ms`
/// arrive in [`SinkRequest`]).
pub type WebhookSpec = serde_json::Map<String, serde_json::Value>;

/// A delivery target kind: builds [`Sink`]s from webhook definitions.
pub trait SinkPlugin: Send + Sync + 'static {
    /// The short name of the kind, used in logs and metrics (`"http"`).
    fn kind(&self) -> &'static str;

    /// The webhook key whose presence selects this plugin (`"url"`).
    fn selector_key(&self) -> &'static str;

    /// The webhook keys this plugin reads besides [`Self::selector_key`]
    /// (`"region"`, `"lambda"`), so the engine can tell users about keys
    /// that belong to another kind.
    fn own_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Validates a webhook definition and builds its runtime sink.
    ///
    /// Called whenever the app file holding the webhook is loaded; the
    /// returned sink is used for every delivery formed under that config.
    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError>;

    /// Like [`Self::build`], with what the engine knows about where the
    /// webhook is defined: the engine calls this one. A plugin whose keys
    /// name files (relative to the app file) overrides it; the default
    /// builds from the keys alone.
    fn build_with(&self, spec: &WebhookSpec, context: &BuildContext<'_>) -> Result<Box<dyn Sink>, SinkConfigError> {
        let _ = context;
        self.build(spec)
    }

    /// The webhook's default `id`, from its selector value: the value
    /// itself when it is a string (`url`, `lambda_function`), `None` when
    /// the value is not a non-empty string. A plugin whose selector is an
    /// object names the string that identifies it.
    fn default_id(&self, spec: &WebhookSpec) -> Option<String> {
        match spec.get(self.selector_key()) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
}

/// Where a webhook is being built.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The directory of the app file that defines the webhook: paths in
    /// its keys are relative to it.
    pub base_dir: &'a Path,
    /// The app the webhook belongs to.
    pub app_id: &'a str,
}

/// A built delivery target: sends one signed request.
pub trait Sink: Send + Sync + fmt::Debug + 'static {
    /// A human-readable target for logs, without credentials
    /// (`"http://example.com/hook"`, `"lambda:my-fn@eu-west-1"`).
    fn describe(&self) -> String;

    /// The largest body (the signed `{"time_ms", "events"}` JSON text) this
    /// sink can send in one request, once its own envelope is counted;
    /// `None` when there is no limit. The engine splits batches to fit.
    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize>;

    /// The kind shown on the status page, in the admin API and in metrics,
    /// when it is not the plugin's [`SinkPlugin::kind`] (a sink component
    /// names its file: `wasm:slack.wasm`): the plugin's kind, a colon and a
    /// detail. The engine keeps one copy of
    /// each distinct kind for the life of the process.
    fn kind(&self) -> Option<String> {
        None
    }

    /// The file this sink runs (a sink component) and a hash of its
    /// content, when there is one: the daemon watches the file, reloading
    /// the app when it changes, and the hash is part of the app's
    /// fingerprint.
    fn source_file(&self) -> Option<(&Path, &str)> {
        None
    }

    /// The timeout the engine applies to an attempt when the webhook sets none.
    fn default_timeout(&self) -> Duration;

    /// Checks the webhook's own `headers` against what this sink can carry
    /// beside the signed ones (an SQS message has room for six), so that a
    /// load and `hookline check` refuse what no send could deliver. The
    /// error says what to change.
    fn check_headers(&self, headers: &[(String, String)]) -> Result<(), SinkConfigError> {
        let _ = headers;
        Ok(())
    }

    /// Whether every batch sent to this sink must hold events of one channel
    /// only, so that [`SinkRequest::channel`] is always set (a FIFO queue
    /// grouped by channel, a Kafka topic keyed by channel). The engine then
    /// forms one batch per channel where it would form one per webhook.
    fn batches_per_channel(&self) -> bool {
        false
    }

    /// Sends one attempt. The engine enforces the timeout around this future
    /// as well, so a sink need not, but may, apply `request.timeout` itself.
    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// One attempt at delivering a batch, already rendered and signed.
#[derive(Debug, Clone)]
pub struct SinkRequest<'a> {
    /// The exact body bytes that were signed.
    pub body: Bytes,
    /// The Pusher and Hookline headers, in this order: `X-Pusher-Key`,
    /// `X-Pusher-Signature`, `X-Hookline-Batch-Id`, `X-Hookline-Batch-Time`.
    /// They always win over [`Self::extra_headers`].
    pub signed_headers: &'a [(&'static str, String)],
    /// The webhook's own `headers` from the app file.
    pub extra_headers: &'a [(String, String)],
    /// How long the attempt may take.
    pub timeout: Duration,
    /// The app whose events these are.
    pub app_id: &'a str,
    /// The webhook's `id` (its selector value, when the app file sets none).
    pub webhook_id: &'a str,
    /// The channel of the batch's events, when they all share one; always
    /// set for a sink whose [`Sink::batches_per_channel`] is true.
    pub channel: Option<&'a str>,
    /// Which attempt this is: 1 for the first, then one more per failed
    /// attempt that counted (a throttle does not).
    pub attempt: u32,
    /// Where to note what the receiver answered, when the attempt log keeps
    /// it (`None`: it does not, so skip the work). A sink whose target
    /// answers with headers and a body (HTTP) fills it in, on success and
    /// on failure alike; others may leave it empty.
    pub answer: Option<&'a AnswerSlot>,
}

/// The most of a receiver's answer body an [`Answer`] keeps.
pub const ANSWER_BODY_LIMIT: usize = 4096;

/// What a receiver answered to one attempt, as the attempt log shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The response headers (kept as received: cloning them shares their
    /// bytes).
    pub headers: http::HeaderMap,
    /// The first [`ANSWER_BODY_LIMIT`] bytes of the body.
    pub body: Bytes,
    /// Whether the body was longer than that.
    pub body_truncated: bool,
}

impl Answer {
    /// An answer of `headers` and `body`, keeping at most
    /// [`ANSWER_BODY_LIMIT`] bytes of the body.
    pub fn new(headers: http::HeaderMap, body: &Bytes) -> Self {
        Self {
            headers,
            body: body.slice(..body.len().min(ANSWER_BODY_LIMIT)),
            body_truncated: body.len() > ANSWER_BODY_LIMIT,
        }
    }
}

/// Where a sink notes the [`Answer`] to an attempt (see
/// [`SinkRequest::answer`]).
#[derive(Debug, Default)]
pub struct AnswerSlot(std::sync::Mutex<Option<Answer>>);

impl AnswerSlot {
    /// Notes the answer (a later one replaces it).
    pub fn record(&self, answer: Answer) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(answer);
    }

    /// The answer noted, if any.
    pub fn take(&self) -> Option<Answer> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Why an attempt failed, typed so the engine can decide whether to retry
/// without reading message text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The attempt did not finish within its timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made or broke (DNS, refused, reset, TLS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The target answered with a non-success status.
    #[error("answered {code}{}", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    Status {
        /// The status code (HTTP status, or the Lambda API's).
        code: u16,
        /// The target's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// A short excerpt of the answer body, for the dead-letter record.
        detail: String,
    },
    /// The request was too large for the target; the engine splits the batch.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// The target is throttling us (a 429, an SQS or SNS throttling error, a
    /// Kafka quota, a full JetStream stream): retried without using up an
    /// attempt and without counting against the breaker, after
    /// `retry_after` when known and at the policy's backoff otherwise.
    #[error("throttled{}", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    Throttled {
        /// How long the target asked us to wait.
        retry_after: Option<Duration>,
    },
    /// A failure the target says is transient (a Lambda function error,
    /// a service error, a function not ready yet).
    #[error("{0}")]
    Transient(String),
    /// A failure the sink says is transient, with the least wait it asked
    /// for before the next try (a sink component's `retry` with `after-ms`):
    /// retried like a 503 with `Retry-After`, the attempt counting.
    #[error("{reason} (retry after {} ms)", retry_after.as_millis())]
    TransientAfter {
        /// What went wrong.
        reason: String,
        /// The least wait before the next attempt.
        retry_after: Duration,
    },
    /// A failure that no retry will fix (not found, access denied, invalid
    /// request, a 3xx or 4xx answer).
    #[error("{0}")]
    Final(String),
}

/// What the engine should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Retry with backoff; the attempt counts. `at_least` is the target's
    /// `Retry-After` on a retryable answer (a 503, say): the backoff is
    /// never shorter.
    Retry {
        /// The least delay the target asked for.
        at_least: Option<Duration>,
    },
    /// Retry after the given delay; the attempt does not count (a `429`, a
    /// throttle). A delay under the policy's `min_backoff_ms` (zero when
    /// the target named none) means the policy's backoff.
    RetryAfter(Duration),
    /// Split the batch in two and send the halves.
    Split,
    /// Give up and dead-letter the batch.
    Final,
}

impl DeliveryError {
    /// Classifies this error per the product contract (docs/contract.md §5, Retries).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            DeliveryError::Timeout | DeliveryError::Connect(_) | DeliveryError::Transient(_) => {
                RetryClass::Retry { at_least: None }
            }
            DeliveryError::TransientAfter { retry_after, .. } => RetryClass::Retry {
                at_least: Some(*retry_after),
            },
            // With no stated wait, a zero wait: the engine never retries
            // sooner than its backoff, so this backs off without counting.
            DeliveryError::Throttled { retry_after } => RetryClass::RetryAfter(retry_after.unwrap_or_default()),
            DeliveryError::Status { code, retry_after, .. } => match code {
                // A throttle, stated wait or not (see `Throttled`).
                429 => RetryClass::RetryAfter(retry_after.unwrap_or_default()),
                413 => RetryClass::Split,
                408 | 425 | 500..=599 => RetryClass::Retry { at_least: *retry_after },
                _ => RetryClass::Final,
            },
            DeliveryError::TooLarge(_) => RetryClass::Split,
            DeliveryError::Final(_) => RetryClass::Final,
        }
    }

    /// The status code, when the target answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A webhook definition a plugin refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkConfigError {
    /// What is wrong and what to do about it, naming the offending key.
    pub message: String,
}

impl SinkConfigError {
    /// Creates an error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Reads an optional string key from a webhook spec, refusing other types.
pub fn optional_str<'a>(spec: &'a WebhookSpec, key: &str) -> Result<Option<&'a str>, SinkConfigError> {
    match spec.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(SinkConfigError::new(format!(
            "`{key}` must be a string, found {}",
            json_type_name(other)
        ))),
    }
}

/// Reads the object under `key` (`"nats"`, `"kafka"`) of a webhook spec as a
/// `T`: absent or null is `None`; anything but an object, or an object serde
/// refuses, is an error naming the key. The error never echoes a value
/// (see [`serde_error_without_values`]): the object may hold credentials.
pub fn object_key<T: serde::de::DeserializeOwned>(spec: &WebhookSpec, key: &str) -> Result<Option<T>, SinkConfigError> {
    match spec.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| SinkConfigError::new(format!("`{key}`: {}", serde_error_without_values(&e)))),
        Some(other) => Err(SinkConfigError::new(format!(
            "`{key}` must be an object, found {}",
            json_type_name(other)
        ))),
    }
}

/// A serde error's message with the values it quotes replaced by their
/// type: `invalid type: string "hunter2", expected a number` becomes
/// `invalid type: a string, expected a number`, since a misplaced password
/// or token must not reach `hookline check`'s output or the logs. Field
/// names (`unknown field `pasword``) are kept: they say what to fix.
pub fn serde_error_without_values(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // serde's `Unexpected` forms that carry a value.
    const QUOTED: &[(&str, char, &str)] = &[
        ("string \"", '"', "a string"),
        ("integer `", '`', "an integer"),
        ("floating point `", '`', "a number"),
        ("character `", '`', "a character"),
    ];
    'scan: while !rest.is_empty() {
        for (opening, closing, replacement) in QUOTED {
            if let Some(after) = rest.strip_prefix(opening) {
                // The value may itself hold the closing mark: the quoted part
                // ends at the last mark before the `, expected` that follows.
                let end = after
                    .find(", expected")
                    .and_then(|stop| after[..stop].rfind(*closing))
                    .or_else(|| after.find(*closing));
                if let Some(end) = end {
                    out.push_str(replacement);
                    rest = &after[end + closing.len_utf8()..];
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        out.extend(chars.next());
        rest = chars.as_str();
    }
    out
}

/// A webhook id or target as it may be logged or used as a metric label:
/// a URL loses its user, password, query string and every path segment
/// after the first (where tokens live: Slack-style `/services/T/B/SECRET`),
/// keeping its fragment (the `#2` of a repeated default id); anything else
/// is kept. Webhook ids default to their URL, so every log line and label
/// goes through this; give webhooks an `id` to tell apart two whose
/// redacted URLs are the same.
pub fn redact_for_logs(id: &str) -> String {
    match url::Url::parse(id) {
        Ok(mut url) if url.has_host() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            let segments: Vec<String> = url
                .path_segments()
                .map(|s| s.map(str::to_string).collect())
                .unwrap_or_default();
            if segments.len() > 1 {
                url.set_path(&format!("/{}/...", segments[0]));
            }
            url.to_string()
        }
        _ => id.to_string(),
    }
}

/// The JSON type of a value, for error messages (`"a number"`).
pub fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<u64>) -> DeliveryError {
        DeliveryError::Status {
            code,
            retry_after: retry_after.map(Duration::from_secs),
            detail: String::new(),
        }
    }

    #[test]
    fn classifies_statuses_per_contract() {
        for code in [408, 425, 500, 502, 503, 599] {
            assert_eq!(
                status(code, None).retry_class(),
                RetryClass::Retry { at_least: None },
                "{code}"
            );
        }
        assert_eq!(
            status(503, Some(2)).retry_class(),
            RetryClass::Retry {
                at_least: Some(Duration::from_secs(2))
            }
        );
        for code in [300, 301, 302, 304, 400, 401, 403, 404, 410, 422] {
            assert_eq!(status(code, None).retry_class(), RetryClass::Final, "{code}");
        }
        assert_eq!(
            status(429, Some(7)).retry_class(),
            RetryClass::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(status(429, None).retry_class(), RetryClass::RetryAfter(Duration::ZERO));
        assert_eq!(status(413, None).retry_class(), RetryClass::Split);
    }

    #[test]
    fn redacts_credentials_query_strings_and_deep_paths() {
        assert_eq!(
            redact_for_logs("https://u:pw@example.com/h?token=t#2"),
            "https://example.com/h#2"
        );
        assert_eq!(
            redact_for_logs("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/services/..."
        );
        assert_eq!(redact_for_logs("https://example.com/"), "https://example.com/");
        assert_eq!(redact_for_logs("http://example.com/h"), "http://example.com/h");
        assert_eq!(
            redact_for_logs("arn:aws:lambda:eu-west-1:1:function:f"),
            "arn:aws:lambda:eu-west-1:1:function:f"
        );
        assert_eq!(redact_for_logs("my-hook"), "my-hook");
    }

    #[test]
    fn network_failures_are_retried() {
        let retry = RetryClass::Retry { at_least: None };
        assert_eq!(DeliveryError::Timeout.retry_class(), retry);
        assert_eq!(DeliveryError::Connect("refused".into()).retry_class(), retry);
        assert_eq!(DeliveryError::Final("gone".into()).retry_class(), RetryClass::Final);
    }

    #[test]
    fn object_errors_never_echo_values() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Auth {
            password: Option<u32>,
            sasl: Option<std::collections::HashMap<String, String>>,
        }
        let spec = |auth: serde_json::Value| serde_json::json!({"auth": auth}).as_object().unwrap().clone();
        for (auth, secret) in [
            (serde_json::json!({"password": "hun\"ter2, expected"}), "hun"),
            (serde_json::json!({"sasl": "user:s3cret"}), "s3cret"),
            (serde_json::json!({"password": -987654}), "987654"),
            (serde_json::json!({"password": 1.5}), "1.5"),
        ] {
            let error = object_key::<Auth>(&spec(auth), "auth").unwrap_err().message;
            assert!(!error.contains(secret), "{error}");
            assert!(error.starts_with("`auth`: invalid "), "{error}");
        }
        let error = object_key::<Auth>(&spec(serde_json::json!({"pasword": "x"})), "auth")
            .unwrap_err()
            .message;
        assert!(error.contains("unknown field `pasword`"), "{error}");
        assert!(
            object_key::<Auth>(&spec(serde_json::Value::Null), "auth")
                .unwrap()
                .is_none()
        );
        let error = object_key::<Auth>(&spec(serde_json::json!("pw")), "auth")
            .unwrap_err()
            .message;
        assert_eq!(error, "`auth` must be an object, found a string");
    }

    #[test]
    fn throttles_never_use_up_attempts() {
        assert_eq!(
            DeliveryError::Throttled { retry_after: None }.retry_class(),
            RetryClass::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            DeliveryError::Throttled {
                retry_after: Some(Duration::from_secs(3))
            }
            .retry_class(),
            RetryClass::RetryAfter(Duration::from_secs(3))
        );
    }
}
