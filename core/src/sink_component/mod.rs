//! Sink components: target kinds written as WebAssembly components of the
//! `hookline:sink` world (`sdk/wit/sink.wit`), selected by a webhook's
//! `sink` key.
//!
//! The engine treats a component like any built-in sink: it batches,
//! signs, retries and dead-letters; the component only turns one signed
//! batch into outgoing HTTP requests and says what became of them. Its only
//! door to the world is `wasi:http/outgoing-handler`, checked by the host
//! against the webhook's `allowed_hosts` (see [`outbound`]).

mod outbound;
mod runtime;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookline_sink_api::{
    BoxFuture, BuildContext, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec,
    json_type_name, object_key,
};
use serde_json::Value;
use wasmtime::component::{ComponentType, Lower};

use crate::filter::shared::{EventView, event_views, signed_body_views};
use runtime::LoadedSink;
pub use runtime::{CallOutcome, SinkComponentHost};

/// The webhook key that selects a sink component.
pub const SELECTOR: &str = "sink";
/// Default cap on a response body read for the guest.
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// A webhook's `sink` object, checked.
#[derive(Debug, Clone)]
pub(crate) struct ComponentSinkSpec {
    /// The component file (relative paths resolved against the app file's
    /// directory).
    pub path: PathBuf,
    /// The `config` value as JSON text ("null" when absent).
    pub config: String,
    pub allowed_hosts: Arc<[outbound::AllowedOrigin]>,
    pub cpu_ms: u64,
    pub memory_mb: u64,
    pub max_response_bytes: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkObject {
    wasm: String,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    allowed_hosts: Vec<Value>,
    cpu_ms: Option<u64>,
    memory_mb: Option<u64>,
    max_response_bytes: Option<u64>,
}

impl ComponentSinkSpec {
    /// Reads the `sink` object of a webhook; errors name the key at fault
    /// and never echo a header value.
    fn read(spec: &WebhookSpec, base_dir: &Path, defaults: &crate::settings::FilterSettings) -> Result<Self, String> {
        let object: SinkObject = object_key(spec, SELECTOR)
            .map_err(|e| e.message)?
            .ok_or("`sink` must be an object: {\"wasm\": \"path.wasm\", \"config\": …, \"allowed_hosts\": […]}")?;
        if object.wasm.is_empty() {
            return Err("`sink.wasm` is empty; name the component file (relative to the app file)".to_string());
        }
        let allowed_hosts = object
            .allowed_hosts
            .iter()
            .enumerate()
            .map(|(i, entry)| allowed_origin(entry).map_err(|e| format!("`sink.allowed_hosts[{i}]`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        // One entry per origin: a second one's `headers` would never apply.
        for (i, origin) in allowed_hosts.iter().enumerate() {
            if let Some(first) = allowed_hosts[..i]
                .iter()
                .position(|o| o.to_string() == origin.to_string())
            {
                return Err(format!(
                    "`sink.allowed_hosts[{i}]`: {origin} is already `sink.allowed_hosts[{first}]`; merge the two entries"
                ));
            }
        }
        let cpu_ms = object.cpu_ms.unwrap_or(defaults.cpu_ms);
        let memory_mb = object.memory_mb.unwrap_or(defaults.memory_mb);
        if cpu_ms == 0 || memory_mb == 0 {
            return Err("`sink.cpu_ms` and `sink.memory_mb` must be at least 1".to_string());
        }
        let max_response_bytes = object.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes == 0 {
            return Err("`sink.max_response_bytes` must be at least 1".to_string());
        }
        Ok(Self {
            path: base_dir.join(&object.wasm),
            config: object.config.to_string(),
            allowed_hosts: allowed_hosts.into(),
            cpu_ms,
            memory_mb,
            max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
        })
    }
}

/// One `allowed_hosts` entry: an origin, or `{"origin", "headers",
/// "allow_private"}`.
fn allowed_origin(entry: &Value) -> Result<outbound::AllowedOrigin, String> {
    let object = match entry {
        Value::String(origin) => return outbound::AllowedOrigin::parse(origin),
        Value::Object(object) => object,
        other => {
            return Err(format!(
                "must be an origin (\"https://host\") or an object {{\"origin\", \"headers\", \"allow_private\"}}, found {}",
                json_type_name(other)
            ));
        }
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["origin", "headers", "allow_private"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key `{unknown}` (an entry has `origin`, `headers` and `allow_private`)"
        ));
    }
    let mut origin = match object.get("origin") {
        Some(Value::String(origin)) => outbound::AllowedOrigin::parse(origin)?,
        Some(other) => return Err(format!("`origin` must be a string, found {}", json_type_name(other))),
        None => return Err("`origin` is missing".to_string()),
    };
    match object.get("allow_private") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(allow)) => origin.allow_private = *allow,
        Some(other) => {
            return Err(format!(
                "`allow_private` must be true or false, found {}",
                json_type_name(other)
            ));
        }
    }
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                let header = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`headers`: `{name}` is not a valid HTTP header name"))?;
                let Value::String(text) = value else {
                    return Err(format!(
                        "`headers`: `{name}` must be a string, found {}",
                        json_type_name(value)
                    ));
                };
                let mut value = http::HeaderValue::from_str(text).map_err(|_| {
                    format!(
                        "`headers`: `{name}` has a value that is not a valid HTTP header value (does a `${{NAME}}` it uses end in a newline?)"
                    )
                })?;
                value.set_sensitive(true);
                origin.headers.push((header, value));
            }
        }
        Some(other) => {
            return Err(format!(
                "`headers` must be an object of header names to values, found {}",
                json_type_name(other)
            ));
        }
    }
    Ok(origin)
}

/// Builds sink components: the plugin of the `sink` key. The engine adds
/// it to every registry it loads apps with.
#[derive(Debug)]
pub struct ComponentSinkPlugin {
    /// `None`: components are read but not loaded (for tools that need
    /// only apps' ids and secrets), or refused when `load` is true.
    host: Option<Arc<SinkComponentHost>>,
    /// Compile and validate components (otherwise read the key only).
    load: bool,
}

impl ComponentSinkPlugin {
    /// A plugin loading components with `host`; without one, a webhook
    /// with a `sink` is refused, naming why.
    pub fn new(host: Option<Arc<SinkComponentHost>>) -> Self {
        Self { host, load: true }
    }

    /// A plugin that checks `sink` objects but loads no component: the
    /// sinks it builds refuse every delivery.
    pub fn unloaded() -> Self {
        Self {
            host: None,
            load: false,
        }
    }
}

impl SinkPlugin for ComponentSinkPlugin {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn selector_key(&self) -> &'static str {
        SELECTOR
    }

    fn build(&self, _spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Err(SinkConfigError::new(
            "a sink component is built with the app file's directory (the engine calls build_with)",
        ))
    }

    fn build_with(&self, spec: &WebhookSpec, context: &BuildContext<'_>) -> Result<Box<dyn Sink>, SinkConfigError> {
        let defaults = self.host.as_ref().map(|h| h.defaults().clone()).unwrap_or_default();
        let parsed = ComponentSinkSpec::read(spec, context.base_dir, &defaults).map_err(SinkConfigError::new)?;
        if !self.load {
            return Ok(Box::new(ComponentSink::unloaded(parsed)));
        }
        let Some(host) = &self.host else {
            return Err(SinkConfigError::new(
                "sink components are not available in this command",
            ));
        };
        let path = parsed.path.display().to_string();
        let loaded = host
            .load(parsed, context.app_id)
            .map_err(|e| SinkConfigError::new(format!("`sink.wasm` {path}: {e}")))?;
        Ok(Box::new(ComponentSink::loaded(loaded)))
    }

    fn default_id(&self, spec: &WebhookSpec) -> Option<String> {
        match spec.get(SELECTOR) {
            Some(Value::Object(object)) => match object.get("wasm") {
                Some(Value::String(path)) if !path.is_empty() => Some(path.clone()),
                _ => Some(SELECTOR.to_string()),
            },
            _ => Some(SELECTOR.to_string()),
        }
    }
}

/// A webhook's sink component.
pub struct ComponentSink {
    spec: ComponentSinkSpec,
    /// `None` for a sink read by a tool that loads no component.
    loaded: Option<Arc<LoadedSink>>,
    kind: String,
}

impl std::fmt::Debug for ComponentSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentSink")
            .field("path", &self.spec.path)
            .field("allowed_hosts", &self.spec.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl ComponentSink {
    /// `wasm:<file name>`, with any character but letters, digits and
    /// `.` `_` `-` `+` written `_`: the kind is a metric label and goes into
    /// HTML.
    fn kind_of(spec: &ComponentSinkSpec) -> String {
        let name: String = spec
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("wasm:{name}")
    }

    fn loaded(loaded: Arc<LoadedSink>) -> Self {
        Self {
            spec: loaded.spec.clone(),
            kind: Self::kind_of(&loaded.spec),
            loaded: Some(loaded),
        }
    }

    fn unloaded(spec: ComponentSinkSpec) -> Self {
        Self {
            kind: Self::kind_of(&spec),
            spec,
            loaded: None,
        }
    }

    /// Loads the component a `sink` object names, as a webhook of `app_id`
    /// in an app file in `base_dir` would (for `hookline sink run`).
    pub fn load(host: &SinkComponentHost, sink: &Value, base_dir: &Path, app_id: &str) -> Result<Self, String> {
        let mut spec = WebhookSpec::new();
        spec.insert(SELECTOR.to_string(), sink.clone());
        let parsed = ComponentSinkSpec::read(&spec, base_dir, host.defaults())?;
        let path = parsed.path.display().to_string();
        let loaded = host.load(parsed, app_id).map_err(|e| format!("{path}: {e}"))?;
        Ok(Self::loaded(loaded))
    }

    /// Runs the component on one signed request and says what it decided
    /// (for `hookline sink run`, which prints it).
    pub async fn call(&self, request: &SinkRequest<'_>) -> CallOutcome {
        let Some(loaded) = &self.loaded else {
            return CallOutcome::Failed("the component was not loaded in this command".to_string());
        };
        // The body was rendered from canonical events: read them back in
        // one pass, and through the parser only when that cannot.
        let (mut scratch, mut parsed_scratch) = (String::new(), String::new());
        let parsed;
        let found = std::str::from_utf8(&request.body)
            .ok()
            .and_then(|text| signed_body_views(text, &mut scratch));
        let (time_ms, events) = match found {
            Some(found) => found,
            None => {
                parsed = match crate::event::parse_ingest_body(&request.body) {
                    Ok(body) => body,
                    Err(e) => return CallOutcome::Failed(format!("the signed body does not parse back: {e}")),
                };
                let time_ms = parsed
                    .time_ms
                    .filter(|t| t.is_finite() && *t >= 0.0)
                    .map_or(0, |t| t as u64);
                (time_ms, event_views(&parsed.events, &mut parsed_scratch))
            }
        };
        let headers: Vec<(&str, &str)> = request
            .signed_headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(request.extra_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .collect();
        let header = |name: &str| {
            request
                .signed_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_str())
        };
        let view = RequestView {
            app_id: request.app_id,
            webhook_id: request.webhook_id,
            batch_id: header("X-Hookline-Batch-Id"),
            attempt: request.attempt,
            time_ms,
            events: &events,
            body: &request.body,
            headers: &headers,
            config: &loaded.spec.config,
            timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        loaded.deliver(view, request.timeout).await
    }
}

impl Sink for ComponentSink {
    fn describe(&self) -> String {
        let origins: Vec<String> = self.spec.allowed_hosts.iter().map(ToString::to_string).collect();
        if origins.is_empty() {
            self.kind.clone()
        } else {
            format!("{} → {}", self.kind, origins.join(", "))
        }
    }

    fn kind(&self) -> Option<String> {
        Some(self.kind.clone())
    }

    fn source_file(&self) -> Option<(&Path, &str)> {
        Some((&self.spec.path, self.loaded.as_ref().map_or("", |l| l.digest.as_str())))
    }

    fn max_body_bytes(&self, _extra_headers: &[(String, String)]) -> Option<usize> {
        None
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let file = self.loaded.as_ref().map_or("", |l| l.file_name.as_str());
            match self.call(&request).await {
                CallOutcome::Delivered => Ok(()),
                CallOutcome::Retry {
                    after: Some(after),
                    reason,
                } => Err(DeliveryError::TransientAfter {
                    reason: format!("{file} asked to retry: {reason}"),
                    retry_after: after,
                }),
                CallOutcome::Retry { after: None, reason } => {
                    Err(DeliveryError::Transient(format!("{file} asked to retry: {reason}")))
                }
                CallOutcome::Reject(reason) => {
                    Err(DeliveryError::Final(format!("{file} rejected the batch: {reason}")))
                }
                CallOutcome::Failed(cause) => Err(DeliveryError::Transient(format!("{file} failed: {cause}"))),
            }
        })
    }
}

/// The WIT `request` record over borrowed data (lowers exactly like the
/// generated `Request`, which the host's type check confirms at
/// instantiation).
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub(crate) struct RequestView<'a> {
    #[component(name = "app-id")]
    pub app_id: &'a str,
    #[component(name = "webhook-id")]
    pub webhook_id: &'a str,
    #[component(name = "batch-id")]
    pub batch_id: &'a str,
    pub attempt: u32,
    #[component(name = "time-ms")]
    pub time_ms: u64,
    pub events: &'a [EventView<'a>],
    pub body: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
    pub config: &'a str,
    #[component(name = "timeout-ms")]
    pub timeout_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(sink: Value) -> Result<ComponentSinkSpec, String> {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({ "sink": sink })).unwrap();
        ComponentSinkSpec::read(&spec, Path::new("/apps"), &Default::default())
    }

    #[test]
    fn reads_a_sink_object() {
        let spec = read(serde_json::json!({
            "wasm": "sinks/slack.wasm",
            "config": {"a": 1},
            "allowed_hosts": ["https://hooks.slack.com",
                {"origin": "http://127.0.0.1:9", "headers": {"Authorization": "Bearer s3cret"}, "allow_private": true}],
            "cpu_ms": 20,
        }))
        .unwrap();
        assert_eq!(spec.path, Path::new("/apps/sinks/slack.wasm"));
        assert_eq!(spec.config, r#"{"a":1}"#);
        assert_eq!(spec.allowed_hosts.len(), 2);
        assert!(spec.allowed_hosts[1].allow_private);
        assert_eq!(spec.cpu_ms, 20);
        assert_eq!(spec.max_response_bytes, 1 << 20);
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn refusals_name_the_key_and_hide_values() {
        let e = read(serde_json::json!({"wasm": "a.wasm", "allowed_hosts": [{"origin": "https://x", "headers": {"Authorization": "bad\nvalue s3cret"}}]})).unwrap_err();
        assert!(
            e.contains("allowed_hosts[0]") && e.contains("Authorization") && !e.contains("s3cret"),
            "{e}"
        );
        let e = read(serde_json::json!({"wasm": "a.wasm", "allowed_hosts": ["https://x/path"]})).unwrap_err();
        assert!(e.contains("path"), "{e}");
        let e = read(serde_json::json!({"wasm": "a.wasm", "alowed_hosts": []})).unwrap_err();
        assert!(e.contains("alowed_hosts"), "{e}");
        let e =
            read(serde_json::json!({"wasm": "a.wasm", "allowed_hosts": ["https://x", {"origin": "https://X:443"}]}))
                .unwrap_err();
        assert!(e.contains("allowed_hosts[1]") && e.contains("already"), "{e}");
        let e = read(serde_json::json!({"config": {}})).unwrap_err();
        assert!(e.contains("wasm"), "{e}");
        let e = read(
            serde_json::json!({"wasm": "a.wasm", "allowed_hosts": [{"origin": "https://x", "allow_private": "yes"}]}),
        )
        .unwrap_err();
        assert!(e.contains("allow_private"), "{e}");
    }
}
