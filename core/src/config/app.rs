//! One app definition: its validation and its runtime form.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hookline_sink_api::{BuildContext, Sink, json_type_name};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::filter::{FilterChain, FilterSpec, OnError};
use crate::settings::{BatchingSettings, RetrySettings};
use crate::sinks::SinkRegistry;

use super::definition::{Field, FiltersKey, WebhookDefinition};
use super::file::LoadDefaults;

/// A validated app, ready to route and deliver its events.
#[derive(Debug)]
pub struct App {
    /// The app id (`/apps/{id}/webhook_events`).
    pub id: Arc<str>,
    /// The app key (`X-Pusher-Key`).
    pub key: Arc<str>,
    /// The app secret: signs deliveries, authenticates ingest.
    pub secret: Secret,
    /// A disabled app's ingest answers 403.
    pub enabled: bool,
    /// How this app's events are batched.
    pub batching: BatchingSettings,
    /// How long and how many of its dead letters are kept.
    pub dead_letters: DeadLetterRetention,
    /// Where its events go.
    pub webhooks: Vec<Arc<Webhook>>,
    /// The file the app was loaded from.
    pub source: Arc<Path>,
    /// The definition as loaded (after `${NAME}` substitution), to tell a
    /// changed app from an unchanged one on reload.
    pub definition: Value,
    /// What several nodes compare to tell they run the same config of this
    /// app: a digest of its definition and its filters' code.
    pub fingerprint: Arc<str>,
}

/// A secret string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<Arc<str>>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A webhook's `rate_limit` as configured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateLimit {
    /// Attempts per second, on average.
    pub per_second: f64,
    /// Attempts that may start back to back after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// Checks an app file's `rate_limit` values; `burst` defaults to one
    /// second's worth (at least 1).
    pub(crate) fn new(per_second: f64, burst: Option<u64>) -> Result<Self, String> {
        if !per_second.is_finite() || per_second <= 0.0 || per_second > 1_000_000.0 {
            return Err(format!(
                "`rate_limit.per_second` must be a number above 0 and at most 1000000, found {per_second}"
            ));
        }
        let burst = match burst {
            None => per_second.ceil().max(1.0) as u32,
            Some(0) => return Err("`rate_limit.burst` must be at least 1".to_string()),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or("`rate_limit.burst` must be at most 1000000")?,
        };
        Ok(Self { per_second, burst })
    }
}

/// An app's `dead_letters` over `[dead_letter]`: its dead letters are
/// deleted past `max_age_ms`, and past `max_count` the oldest go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterRetention {
    /// Dead letters older than this are deleted.
    pub max_age_ms: u64,
    /// At most this many are kept, if set.
    pub max_count: Option<u64>,
}

impl From<&crate::settings::DeadLetterSettings> for DeadLetterRetention {
    /// The daemon's `[dead_letter]`, which apps without `dead_letters` keep.
    fn from(settings: &crate::settings::DeadLetterSettings) -> Self {
        Self {
            max_age_ms: settings.retention_ms,
            max_count: (settings.max_count > 0).then_some(settings.max_count),
        }
    }
}

/// An app's `dead_letters` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLettersKey {
    max_age_ms: Option<u64>,
    max_count: Option<u64>,
}

/// An app's `dead_letters` over the daemon's defaults.
fn dead_letters(value: Option<&Value>, defaults: DeadLetterRetention) -> Result<DeadLetterRetention, String> {
    let key: DeadLettersKey = match value {
        None | Some(Value::Null) => return Ok(defaults),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("`dead_letters` must be {{\"max_age_ms\": n, \"max_count\": n}}: {e}"))?,
    };
    if key.max_age_ms == Some(0) || key.max_count == Some(0) {
        return Err("`dead_letters.max_age_ms` and `dead_letters.max_count` must be at least 1".to_string());
    }
    Ok(DeadLetterRetention {
        max_age_ms: key.max_age_ms.unwrap_or(defaults.max_age_ms),
        max_count: key.max_count.or(defaults.max_count),
    })
}

/// One delivery target of an app.
#[derive(Debug)]
pub struct Webhook {
    /// Stable identity for retries, dead letters and metrics.
    pub id: Arc<str>,
    /// The id as logs, metrics, the admin API and the status page show it:
    /// without URL credentials, query strings or the path past its first
    /// segment, and unique within the app (`#2`, `#3`… where redaction
    /// makes two look alike).
    pub log_id: Arc<str>,
    /// The sink plugin's kind (`http`, `lambda`).
    pub kind: &'static str,
    /// Event names this webhook receives.
    pub event_types: HashSet<Box<str>>,
    /// soketi's channel-name filter.
    pub channel_filter: ChannelFilter,
    /// Extra headers (HTTP headers, or merged into a Lambda payload's).
    pub headers: Vec<(String, String)>,
    /// The built target.
    pub sink: Arc<dyn Sink>,
    /// Attempt timeout.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetrySettings,
    /// Batches in flight at once.
    pub max_in_flight: usize,
    /// Whether batches may overtake each other.
    pub ordering: Ordering,
    /// Attempts per second, if limited.
    pub rate_limit: Option<RateLimit>,
    /// Whether an HTTP delivery carries its attempt's W3C `traceparent`
    /// (when traces are on).
    pub traceparent: bool,
    /// Largest signed body the sink takes, if it has a limit.
    pub max_body_bytes: Option<usize>,
    /// The app's WASM filters, then the webhook's own.
    pub filters: FilterChain,
}

/// The keys whose values are a sink's credentials, wherever they sit in a
/// webhook (`lambda.client_options.credentials.secretAccessKey`,
/// `nats.token`, `kafka.sasl.password`, …).
const SINK_SECRET_KEYS: &[&str] = &["secretAccessKey", "sessionToken", "token", "password", "nkey"];

/// Replaces the values of [`SINK_SECRET_KEYS`] anywhere under `value`.
fn blank_sink_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if SINK_SECRET_KEYS.contains(&key.as_str()) {
                    *v = Value::Null;
                } else {
                    blank_sink_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_sink_secrets),
        _ => {}
    }
}

/// A short hash of an app's definition and filter contents, leaving out the
/// secret, header values and sink credentials (it is stored beside events
/// in a shared store, where a hash of a weak secret could be guessed
/// offline): two nodes with the same fingerprint batch and route the app's
/// events the same way.
pub(super) fn fingerprint(definition: &Value, filter_digests: &[&str]) -> Arc<str> {
    use sha2::Digest;
    let mut shown = definition.clone();
    if let Value::Object(app) = &mut shown {
        app.remove("secret");
        if let Some(Value::Array(webhooks)) = app.get_mut("webhooks") {
            for webhook in webhooks {
                if let Some(Value::Object(headers)) = webhook.get_mut("headers") {
                    headers.values_mut().for_each(|v| *v = Value::Null);
                }
                blank_sink_secrets(webhook);
            }
        }
    }
    let mut hash = sha2::Sha256::new();
    hash.update(shown.to_string());
    for digest in filter_digests {
        hash.update([0]);
        hash.update(digest);
    }
    let bytes = hash.finalize();
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}

impl App {
    /// The content hashes of every component the app's webhooks run (their
    /// filters, then their sink component), in order.
    pub fn filter_digests(&self) -> Vec<&str> {
        component_digests(&self.webhooks)
    }

    /// Every filter file the app uses.
    pub fn filter_paths(&self) -> impl Iterator<Item = &Path> {
        self.webhooks.iter().flat_map(|w| {
            w.filters
                .specs()
                .iter()
                .map(|spec| spec.path.as_path())
                .chain(w.sink.source_file().map(|(path, _)| path))
        })
    }
}

/// The content hashes of the webhooks' filters and sink components.
fn component_digests(webhooks: &[Arc<Webhook>]) -> Vec<&str> {
    webhooks
        .iter()
        .flat_map(|w| {
            w.filters
                .digests()
                .chain(w.sink.source_file().map(|(_, digest)| digest))
        })
        .collect()
}

impl Webhook {
    /// Whether this webhook receives an event with this name and channel.
    pub fn wants(&self, name: &str, channel: &str) -> bool {
        self.event_types.contains(name) && self.channel_filter.matches(channel)
    }
}

/// soketi's `filter`: both conditions must hold when both are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFilter {
    /// The channel name must start with this.
    pub channel_name_starts_with: Option<String>,
    /// The channel name must end with this.
    pub channel_name_ends_with: Option<String>,
}

impl ChannelFilter {
    /// Whether a channel passes the filter.
    pub fn matches(&self, channel: &str) -> bool {
        self.channel_name_starts_with
            .as_deref()
            .is_none_or(|p| channel.starts_with(p))
            && self
                .channel_name_ends_with
                .as_deref()
                .is_none_or(|s| channel.ends_with(s))
    }
}

/// `ordering` of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Up to `max_in_flight` batches at once; a retried batch may be overtaken.
    None,
    /// One batch at a time in formation order; a failing batch holds the rest.
    Strict,
}

/// Partial overrides of [`BatchingSettings`] in an app file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchingOverride {
    enabled: Option<bool>,
    max_wait_ms: Option<u64>,
    max_events: Option<usize>,
}

/// Partial overrides of [`RetrySettings`] in an app or webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryOverride {
    max_age_ms: Option<u64>,
    max_attempts: Option<u32>,
    min_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

impl RetryOverride {
    fn apply(self, base: RetrySettings) -> Result<RetrySettings, String> {
        let merged = RetrySettings {
            max_age_ms: self.max_age_ms.unwrap_or(base.max_age_ms),
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            min_backoff_ms: self.min_backoff_ms.unwrap_or(base.min_backoff_ms),
            max_backoff_ms: self.max_backoff_ms.unwrap_or(base.max_backoff_ms),
        };
        if merged.min_backoff_ms == 0 || merged.max_backoff_ms < merged.min_backoff_ms {
            return Err(format!(
                "`retry` needs 0 < min_backoff_ms <= max_backoff_ms, got {} and {}",
                merged.min_backoff_ms, merged.max_backoff_ms
            ));
        }
        Ok(merged)
    }
}

/// Pusher's webhook event names; other names are accepted (a server may
/// send its own) but look like typos.
const PUSHER_EVENTS: &[&str] = &[
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

/// Collects the problems of independent fields, so that one load reports
/// every problem instead of the first.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// The value, or `None` with its problem (prefixed by `place`) noted.
    fn take<T>(&mut self, place: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|e| self.0.push(if place.is_empty() { e } else { format!("{place}: {e}") }))
            .ok()
    }
}

/// Builds an app from its JSON object (env references already resolved).
/// Errors are messages without the file name; the caller adds it. Every
/// problem of the app is reported, not only the first.
pub(crate) fn build_app(
    definition: Value,
    source: &Arc<Path>,
    sinks: &SinkRegistry,
    defaults: &LoadDefaults,
    warnings: &mut Vec<String>,
) -> Result<App, Vec<String>> {
    let Value::Object(obj) = &definition else {
        return Err(vec![format!(
            "an app must be a JSON object, found {}",
            json_type_name(&definition)
        )]);
    };
    let id = required_str(obj, "id").map_err(|e| vec![e])?;
    let label = format!("app {id:?}");
    let mut problems = Problems::default();
    let key = problems.take(&label, required_str(obj, "key"));
    let secret = problems.take(&label, required_str(obj, "secret"));
    let enabled = problems.take(
        &label,
        match obj.get("enabled") {
            None | Some(Value::Null) => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            // soketi's SQL app managers store booleans as 0/1.
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
            Some(other) => Err(format!(
                "`enabled` must be true or false, found {}",
                json_type_name(other)
            )),
        },
    );
    let batching = problems.take(&label, batching(obj.get("batching"), defaults.batching));
    let dead_letters = problems.take(&label, dead_letters(obj.get("dead_letters"), defaults.dead_letters));
    let app_retry = problems
        .take(
            &label,
            match obj.get("retry") {
                None | Some(Value::Null) => Ok(defaults.retry),
                Some(v) => serde_json::from_value::<RetryOverride>(v.clone())
                    .map_err(|e| format!("`retry`: {e}"))
                    .and_then(|o| o.apply(defaults.retry)),
            },
        )
        .unwrap_or(defaults.retry);
    let base_dir = source.parent().unwrap_or(Path::new("."));
    let app_filters = match obj.get("filters") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(value) => problems.take(
            &label,
            filter_specs(value, base_dir, defaults).map_err(|e| format!("`filters`: {e}")),
        ),
    };

    let webhooks_value = match obj.get("webhooks") {
        None | Some(Value::Null) => Ok(Value::Array(vec![])),
        // soketi accepts the webhooks as a JSON string (from env or SQL).
        Some(Value::String(text)) => {
            serde_json::from_str(text).map_err(|e| format!("`webhooks` is a string that is not a JSON array: {e}"))
        }
        Some(v) => Ok(v.clone()),
    };
    let items = match problems.take(&label, webhooks_value) {
        Some(Value::Array(items)) => items,
        Some(_) => {
            problems.0.push(format!("{label}: `webhooks` must be an array"));
            Vec::new()
        }
        None => Vec::new(),
    };

    let mut built = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let place = format!("{label}: webhook {index}");
        let definition = match WebhookDefinition::read(item) {
            Ok(definition) => definition,
            Err(e) => {
                problems.0.push(format!("{place} {e}"));
                continue;
            }
        };
        let context = BuildContext { base_dir, app_id: id };
        match build_webhook(definition, sinks, defaults, app_retry, warnings, &place, &context) {
            Ok(webhook) => built.push(webhook),
            Err(errors) => problems.0.extend(errors.into_iter().map(|e| format!("{place}: {e}"))),
        }
    }
    let every_webhook_built = built.len() == items.len();
    // Ids (and so filter chains) only mean something once every webhook
    // was read: a missing one would shift the `#2` suffixes.
    let mut webhooks = Vec::with_capacity(built.len());
    if every_webhook_built && let Some(pending) = problems.take(&label, assign_ids(built)) {
        for (index, pending) in pending.into_iter().enumerate() {
            let mut webhook = pending.webhook;
            let specs = app_filters.iter().flatten().chain(&pending.filter_specs);
            match load_chain(specs, defaults, id, &webhook.id) {
                Ok(chain) => webhook.filters = chain,
                Err(e) => problems
                    .0
                    .push(format!("{label}: webhook {index} ({}): {e}", webhook.log_id)),
            }
            webhooks.push(Arc::new(webhook));
        }
    }
    if webhooks.is_empty()
        && let Some(specs) = &app_filters
    {
        // No webhook runs the app's filters, but they are checked all the
        // same, now: no batch of this app would wait for a background load
        // and show its failure.
        let now = LoadDefaults {
            load_filters_in_background: false,
            ..defaults.clone()
        };
        if let Err(e) = load_chain(specs.iter(), &now, id, "") {
            problems.0.push(format!("{label}: `filters`: {e}"));
        }
    }
    match (key, secret, enabled, batching, dead_letters) {
        (Some(key), Some(secret), Some(enabled), Some(batching), Some(dead_letters)) if problems.0.is_empty() => {
            let digests = component_digests(&webhooks);
            let fingerprint = fingerprint(&definition, &digests);
            Ok(App {
                id: id.into(),
                key: key.into(),
                secret: Secret::new(secret),
                enabled,
                batching,
                dead_letters,
                webhooks,
                source: source.clone(),
                definition,
                fingerprint,
            })
        }
        _ => Err(problems.0),
    }
}

/// An app's `batching` over the daemon's defaults.
fn batching(value: Option<&Value>, defaults: BatchingSettings) -> Result<BatchingSettings, String> {
    let batching = match value {
        None | Some(Value::Null) => defaults,
        Some(v) => {
            let o: BatchingOverride = serde_json::from_value(v.clone()).map_err(|e| format!("`batching`: {e}"))?;
            BatchingSettings {
                enabled: o.enabled.unwrap_or(defaults.enabled),
                max_wait_ms: o.max_wait_ms.unwrap_or(defaults.max_wait_ms),
                max_events: o.max_events.unwrap_or(defaults.max_events),
            }
        }
    };
    if batching.max_events == 0 {
        return Err("`batching.max_events` must be at least 1".to_string());
    }
    Ok(batching)
}

/// A webhook before its default id is decided.
struct PendingWebhook {
    explicit_id: Option<String>,
    selector: String,
    webhook: Webhook,
    filter_specs: Vec<FilterSpec>,
}

fn build_webhook(
    definition: WebhookDefinition,
    sinks: &SinkRegistry,
    defaults: &LoadDefaults,
    app_retry: RetrySettings,
    warnings: &mut Vec<String>,
    place: &str,
    context: &BuildContext<'_>,
) -> Result<PendingWebhook, Vec<String>> {
    let mut problems = Problems::default();
    let WebhookDefinition {
        id,
        event_types,
        filter,
        filters,
        headers,
        timeout_ms,
        retry,
        max_in_flight,
        ordering,
        rate_limit,
        traceparent,
        target,
    } = definition;
    let built = problems.take("", sinks.build(&target, context).map_err(|e| e.message));
    let kind = built.as_ref().map(|(kind, _, _)| *kind);
    warnings.extend(
        sinks
            .key_warnings(kind, &target)
            .into_iter()
            .map(|w| format!("{place}: {w}")),
    );
    let explicit_id = problems.take(
        "",
        match id {
            Field::Absent => Ok(None),
            Field::Valid(id) if !id.is_empty() => Ok(Some(id)),
            _ => Err("`id` must be a non-empty string".to_string()),
        },
    );
    let event_types = problems.take("", self::event_types(event_types));
    if let Some(names) = &event_types {
        warnings.extend(unknown_event_types(names).map(|w| format!("{place}: {w}")));
    }
    // `filters` holds WASM filters, or soketi's channel filter when `filter`
    // does not (the form soketi's own documentation shows).
    let (channel_filters, filter_entries) = match filters {
        Field::Absent => (None, Ok(Vec::new())),
        Field::Valid(FiltersKey::Chain(entries)) => (None, Ok(entries)),
        Field::Valid(FiltersKey::Channel(map)) => (Some(map), Ok(Vec::new())),
        Field::Invalid { found, .. } => (
            None,
            Err(format!(
                "`filters` must be an array of {{\"wasm\": \"path.wasm\", …}} entries (or soketi's channel filter \
                 object), found {}",
                json_type_name(&found)
            )),
        ),
    };
    let channel_filter = problems.take("", self::channel_filter(filter, channel_filters));
    let filter_specs = problems.take(
        "",
        filter_entries.and_then(|entries| {
            filter_specs(&Value::Array(entries), context.base_dir, defaults).map_err(|e| format!("`filters`: {e}"))
        }),
    );
    let headers = problems.take(
        "",
        match headers {
            Field::Absent => Ok(vec![]),
            Field::Valid(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => valid_header(&k, &s).map(|()| (k, s)),
                    Value::Number(n) => valid_header(&k, &n.to_string()).map(|()| (k, n.to_string())),
                    other => Err(format!(
                        "header `{k}` must be a string, found {}",
                        json_type_name(&other)
                    )),
                })
                .collect::<Result<_, _>>(),
            Field::Invalid { .. } => Err("`headers` must be an object of header names to values".to_string()),
        },
    );
    let timeout = problems.take(
        "",
        match timeout_ms {
            Field::Absent => Ok(None),
            Field::Valid(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err("`timeout_ms` must be a positive whole number of milliseconds".to_string()),
        },
    );
    let retry = problems.take(
        "",
        match retry {
            Field::Absent => Ok(app_retry),
            Field::Valid(o) => o.apply(app_retry),
            Field::Invalid { error, .. } => Err(format!("`retry`: {error}")),
        },
    );
    let max_in_flight = problems.take(
        "",
        match max_in_flight {
            Field::Absent => Ok(defaults.max_in_flight),
            Field::Valid(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => Err("`max_in_flight` must be a whole number of at least 1".to_string()),
        },
    );
    let ordering = problems.take(
        "",
        match ordering {
            Field::Absent => Ok(Ordering::None),
            Field::Valid(ordering) => Ok(ordering),
            Field::Invalid { .. } => Err("`ordering` must be \"none\" or \"strict\"".to_string()),
        },
    );
    let rate_limit = problems.take(
        "",
        match rate_limit {
            Field::Absent => Ok(None),
            Field::Valid(key) => RateLimit::new(key.per_second, key.burst).map(Some),
            Field::Invalid { error, .. } => Err(format!(
                "`rate_limit` must be {{\"per_second\": n, \"burst\": n}} (burst optional): {error}"
            )),
        },
    );
    let traceparent = problems.take(
        "",
        match traceparent {
            Field::Absent => Ok(true),
            Field::Valid(on) => Ok(on),
            Field::Invalid { .. } => Err("`traceparent` must be true or false".to_string()),
        },
    );
    let (
        Some((kind, selector, sink)),
        Some(explicit_id),
        Some(event_types),
        Some(channel_filter),
        Some(headers),
        Some(timeout),
        Some(retry),
        Some(max_in_flight),
        Some(ordering),
        Some(rate_limit),
        Some(traceparent),
        Some(filter_specs),
    ) = (
        built,
        explicit_id,
        event_types,
        channel_filter,
        headers,
        timeout,
        retry,
        max_in_flight,
        ordering,
        rate_limit,
        traceparent,
        filter_specs,
    )
    else {
        return Err(problems.0);
    };
    sink.check_headers(&headers)
        .map_err(|e| vec![format!("`headers`: {}", e.message)])?;
    let timeout = timeout.unwrap_or_else(|| sink.default_timeout());
    let max_body_bytes = sink.max_body_bytes(&headers);
    Ok(PendingWebhook {
        explicit_id,
        selector,
        filter_specs,
        webhook: Webhook {
            id: Arc::from(""),
            log_id: Arc::from(""),
            kind,
            event_types,
            channel_filter,
            headers,
            sink,
            timeout,
            retry,
            max_in_flight,
            ordering,
            rate_limit,
            traceparent,
            max_body_bytes,
            filters: FilterChain::default(),
        },
    })
}

/// Checks a header can be sent at all, so a bad one fails the load instead
/// of dead-lettering every batch at send time. The value is never shown: it
/// may hold a token.
fn valid_header(name: &str, value: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header name `{name}` is not a valid HTTP header name"))?;
    http::HeaderValue::from_str(value).map_err(|_| {
        format!(
            "header `{name}` has a value that is not a valid HTTP header value (a control character such as a \
             newline: does a `${{NAME}}` it uses end in one?)"
        )
    })?;
    Ok(())
}

/// A webhook's `event_types`: a non-empty array of names.
fn event_types(value: Field<Vec<String>>) -> Result<HashSet<Box<str>>, String> {
    match value {
        Field::Valid(names) if !names.is_empty() => Ok(names.into_iter().map(Box::from).collect()),
        Field::Valid(_) => Err(
            "`event_types` is empty, so the webhook would receive nothing; list the event names it wants".to_string(),
        ),
        Field::Invalid {
            found: Value::Array(_), ..
        } => Err("`event_types` must hold strings only".to_string()),
        Field::Invalid { .. } => Err("`event_types` must be an array of event names".to_string()),
        Field::Absent => Err(
            "`event_types` is missing; list the event names this webhook receives (e.g. [\"channel_occupied\"])"
                .to_string(),
        ),
    }
}

/// A warning for each name that is not a Pusher webhook event, naming the
/// nearest one (names are accepted: a server may send events of its own).
fn unknown_event_types(names: &HashSet<Box<str>>) -> impl Iterator<Item = String> + '_ {
    let mut unknown: Vec<&str> = names
        .iter()
        .map(|n| &**n)
        .filter(|n| !PUSHER_EVENTS.contains(n))
        .collect();
    unknown.sort_unstable();
    unknown.into_iter().map(|name| {
        let (distance, nearest) = PUSHER_EVENTS
            .iter()
            .map(|known| (strsim::levenshtein(name, known), *known))
            .min()
            .expect("the list of Pusher events is not empty");
        if distance <= 3 {
            format!(
                "`event_types` has {name:?}, which is not a Pusher webhook event; did you mean {nearest:?}? \
                 (kept as written, so it only matches events of exactly that name)"
            )
        } else {
            format!(
                "`event_types` has {name:?}, which is not a Pusher webhook event ({}); \
                 kept as written, so it only matches events of exactly that name",
                PUSHER_EVENTS.join(", ")
            )
        }
    })
}

/// soketi's `filter`, or else an object-valued `filters` with the same keys
/// (the form soketi's own documentation shows).
fn channel_filter(filter: Field<ChannelFilter>, filters: Option<Map<String, Value>>) -> Result<ChannelFilter, String> {
    let must = |key: &str, error: &dyn std::fmt::Display| {
        format!("`{key}` must be an object with `channel_name_starts_with` and/or `channel_name_ends_with`: {error}")
    };
    match (filter, filters) {
        (Field::Valid(filter), _) => Ok(filter),
        (Field::Invalid { error, .. }, _) => Err(must("filter", &error)),
        (Field::Absent, Some(map)) => serde_json::from_value(Value::Object(map)).map_err(|e| must("filters", &e)),
        (Field::Absent, None) => Ok(ChannelFilter::default()),
    }
}

/// Explicit ids must be unique; the others default to the target, with
/// `#2`, `#3`… for repeats.
fn assign_ids(pending: Vec<PendingWebhook>) -> Result<Vec<PendingWebhook>, String> {
    let mut taken: HashSet<String> = HashSet::new();
    for p in &pending {
        if let Some(id) = &p.explicit_id
            && !taken.insert(id.clone())
        {
            return Err(format!(
                "two webhooks have the id {id:?}; webhook ids must be unique within an app"
            ));
        }
    }
    let mut out: Vec<PendingWebhook> = Vec::with_capacity(pending.len());
    let mut repeats: std::collections::HashMap<String, usize> = Default::default();
    for mut p in pending {
        let id = match p.explicit_id.clone() {
            Some(id) => id,
            None => {
                let n = repeats.entry(p.selector.clone()).or_insert(0);
                *n += 1;
                let id = if *n == 1 {
                    p.selector.clone()
                } else {
                    format!("{}#{n}", p.selector)
                };
                if !taken.insert(id.clone()) {
                    return Err(format!(
                        "the default webhook id {id:?} is also used as an explicit `id`; give this webhook an `id` of its own"
                    ));
                }
                id
            }
        };
        p.webhook.id = Arc::from(id);
        out.push(p);
    }
    assign_shown_ids(&mut out);
    Ok(out)
}

/// Gives each webhook the id that logs, metrics, the admin API and the
/// status page show: the redacted id (no URL credentials, query or path
/// past its first segment), unique within the app.
///
/// Redaction can make two ids look alike (`…/mine/a` and `…/mine/b` both
/// read `…/mine/...`), so the shown id is the redacted explicit `id`, or
/// the redacted target, with `#2`, `#3`… for the repeats of what is shown.
/// Where nothing is redacted it is the id itself.
fn assign_shown_ids(webhooks: &mut [PendingWebhook]) {
    let mut shown: HashSet<String> = HashSet::new();
    for p in webhooks.iter_mut() {
        let base = hookline_sink_api::redact_for_logs(p.explicit_id.as_deref().unwrap_or(&p.selector));
        let id = (1..)
            .map(|n| if n == 1 { base.clone() } else { format!("{base}#{n}") })
            .find(|candidate| !shown.contains(candidate))
            .expect("some suffix is free");
        shown.insert(id.clone());
        p.webhook.log_id = Arc::from(id);
    }
}

/// One entry of `filters` as written in an app file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterEntry {
    wasm: String,
    #[serde(default)]
    config: Value,
    on_error: Option<OnError>,
    cpu_ms: Option<u64>,
    memory_mb: Option<u64>,
}

/// Reads a `filters` array; paths are relative to the app file.
fn filter_specs(value: &Value, base_dir: &Path, defaults: &LoadDefaults) -> Result<Vec<FilterSpec>, String> {
    let Value::Array(items) = value else {
        return Err("must be an array of {\"wasm\": \"path.wasm\", …} entries".to_string());
    };
    let limits = defaults
        .filters
        .as_ref()
        .map(|h| h.defaults().clone())
        .unwrap_or_default();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let entry: FilterEntry = serde_json::from_value(item.clone()).map_err(|e| format!("entry {i}: {e}"))?;
            let cpu_ms = entry.cpu_ms.unwrap_or(limits.cpu_ms);
            let memory_mb = entry.memory_mb.unwrap_or(limits.memory_mb);
            if cpu_ms == 0 || memory_mb == 0 {
                return Err(format!("entry {i}: `cpu_ms` and `memory_mb` must be at least 1"));
            }
            Ok(FilterSpec {
                path: base_dir.join(&entry.wasm),
                config: serde_json::to_string(&entry.config).expect("a JSON value always serializes"),
                on_error: entry.on_error.unwrap_or(OnError::Retry),
                cpu_ms,
                memory_mb,
            })
        })
        .collect()
}

/// Loads (compiles, checks, validates) a webhook's chain, now or, with
/// `defaults.load_filters_in_background`, in the background; an empty one
/// when `defaults.skip_filters`.
fn load_chain<'a>(
    specs: impl Iterator<Item = &'a FilterSpec>,
    defaults: &LoadDefaults,
    app_id: &str,
    webhook_id: &str,
) -> Result<FilterChain, String> {
    let specs: Vec<FilterSpec> = specs.cloned().collect();
    if defaults.skip_filters || specs.is_empty() {
        return Ok(FilterChain::default());
    }
    let host = defaults
        .filters
        .as_ref()
        .ok_or("WASM filters are not available in this command")?;
    if defaults.load_filters_in_background {
        return host
            .load_in_background(specs, app_id, webhook_id)
            .map_err(|e| e.to_string());
    }
    let filters = specs
        .into_iter()
        .map(|spec| host.load(spec, app_id, webhook_id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(FilterChain::of(filters))
}

fn required_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        Some(other) => Err(format!("`{key}` must be a string, found {}", json_type_name(other))),
        None => Err(format!("`{key}` is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_leaves_out_secrets_headers_and_sink_credentials() {
        let app = |token: &str, password: &str, secret_key: &str, subject: &str| {
            serde_json::json!({"id": "a", "key": "k", "secret": token, "webhooks": [
                {"nats_subject": subject, "event_types": ["x"], "headers": {"X-Token": token},
                 "nats": {"token": token, "user": "u", "password": password}},
                {"sqs_queue_url": "http://q", "event_types": ["x"],
                 "sqs": {"client_options": {"credentials": {"accessKeyId": "A", "secretAccessKey": secret_key}}}},
                {"kafka_topic": "t", "event_types": ["x"],
                 "kafka": {"brokers": ["b:9092"], "sasl": {"mechanism": "PLAIN", "username": "u", "password": password}}}]})
        };
        let one = fingerprint(&app("t1", "p1", "s1", "hooks.a"), &[]);
        assert_eq!(one, fingerprint(&app("t2", "p2", "s2", "hooks.a"), &[]));
        assert_ne!(
            one,
            fingerprint(&app("t1", "p1", "s1", "hooks.b"), &[]),
            "routing still counts"
        );
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(RateLimit::new(2.5, None).unwrap().burst, 3);
        assert_eq!(RateLimit::new(0.1, None).unwrap().burst, 1);
        assert!(RateLimit::new(0.0, None).unwrap_err().contains("per_second"));
        assert!(RateLimit::new(f64::NAN, None).is_err());
        assert!(RateLimit::new(1.0, Some(0)).unwrap_err().contains("burst"));
    }

    #[test]
    fn channel_filter_needs_both_conditions() {
        let f = ChannelFilter {
            channel_name_starts_with: Some("private-".into()),
            channel_name_ends_with: Some("-chat".into()),
        };
        assert!(f.matches("private-room-chat"));
        assert!(!f.matches("private-room"));
        assert!(!f.matches("room-chat"));
        assert!(ChannelFilter::default().matches("anything"));
    }

    #[test]
    fn event_type_typos_name_the_nearest_pusher_event() {
        let names: HashSet<Box<str>> = ["channel_ocupied", "member_added", "my-own-event"]
            .into_iter()
            .map(Box::from)
            .collect();
        let warnings: Vec<String> = unknown_event_types(&names).collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("\"channel_ocupied\"") && warnings[0].contains("did you mean \"channel_occupied\"?")
        );
        assert!(warnings[1].contains("\"my-own-event\"") && warnings[1].contains("channel_vacated"));
    }

    #[test]
    fn secret_never_shows_in_debug() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
