//! Write Hookline sink components — new target kinds, as WebAssembly — in
//! a few lines of Rust, and test them natively.
//!
//! A sink is given each attempt at delivering a batch (a [`Request`]: the
//! parsed events, the exact signed body and its headers) and answers an
//! [`Outcome`]: [`Outcome::Delivered`], a retry (with the backoff and
//! `Retry-After` handling HTTP webhooks get), or a rejection (the batch goes
//! to the dead letters). Its only door to the world is [`http`], and in
//! Hookline only to the origins the webhook's `allowed_hosts` lists.
//!
//! ```
//! use hookline_sink::{Outcome, Request, Sink, http};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     url: String,
//! }
//!
//! /// POSTs each batch's events as a JSON array.
//! struct EventsArray;
//!
//! impl Sink for EventsArray {
//!     type Config = Config;
//!
//!     fn validate_config(config: &Config) -> Result<(), String> {
//!         if !config.url.starts_with("https://") && !config.url.starts_with("http://") {
//!             return Err("`url` must be an absolute http(s) URL".into());
//!         }
//!         Ok(())
//!     }
//!
//!     fn deliver(request: &Request, config: &Config) -> Outcome {
//!         let sent = http::Request::post(&config.url)
//!             .header("Idempotency-Key", &request.batch_id)
//!             .json(&request.events_json())
//!             .send();
//!         Outcome::from_http(sent)
//!     }
//! }
//!
//! hookline_sink::export_sink!(EventsArray);
//!
//! // Natively, a sink is plain Rust: `cargo test` runs it against a local
//! // HTTP server.
//! use hookline_sink::{Event, testing};
//!
//! let receiver = testing::Receiver::start();
//! receiver.respond_with(testing::Answer::status(503).header("Retry-After", "2"));
//! let request = testing::request(vec![Event::new("channel_occupied", "room-1")]).build();
//! let config = format!(r#"{{"url":"{}/in"}}"#, receiver.url());
//!
//! let outcome = testing::deliver::<EventsArray>(&config, &request).unwrap();
//! assert_eq!(outcome, Outcome::retry_after(2000, "answered 503"));
//! let outcome = testing::deliver::<EventsArray>(&config, &request).unwrap();
//! assert_eq!(outcome, Outcome::Delivered);
//!
//! let received = receiver.requests();
//! assert_eq!(received.len(), 2);
//! assert_eq!(received[1].path, "/in");
//! assert_eq!(received[1].header("idempotency-key"), Some(request.batch_id.as_str()));
//! assert_eq!(
//!     received[1].json(),
//!     serde_json::json!([{"name": "channel_occupied", "channel": "room-1"}])
//! );
//! ```
//!
//! Build for Hookline with `cargo build --release --target wasm32-wasip2`;
//! the `.wasm` in `target/wasm32-wasip2/release/` is the component to name
//! in a webhook's `sink`:
//!
//! ```json
//! {"sink": {"wasm": "events_array.wasm",
//!           "config": {"url": "https://hooks.example.com/in"},
//!           "allowed_hosts": ["https://hooks.example.com"]}}
//! ```
//!
//! Secrets stay out of the component: list them as the origin's
//! `headers` in `allowed_hosts` (`{"origin": "https://api.example.com",
//! "headers": {"Authorization": "Bearer ${TOKEN}"}}`) and the host adds them
//! to every request to that origin.

use serde::de::DeserializeOwned;

pub mod http;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// The `serde_json` this crate is built with, so a sink can name the types
/// [`Event::data_json`] and [`Request::events_json`] return without a
/// dependency of its own.
pub use serde_json;

/// One Pusher webhook event: the filter world's event record, which the
/// sink world shares (the same fields as `hookline_filter::Event`; this
/// crate does not depend on the filter SDK, whose wasm build carries the
/// filter world's bindings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `channel_occupied`, `member_added`, `client_event`, …
    pub name: String,
    /// The channel.
    pub channel: String,
    /// `member_added` / `member_removed` / `client_event`: the user.
    pub user_id: Option<String>,
    /// `client_event`: the sender's socket.
    pub socket_id: Option<String>,
    /// `client_event`: the client event's own name (`client-typing`).
    pub event: Option<String>,
    /// `client_event`: the data, when it is a JSON string.
    pub data: Option<String>,
    /// `subscription_count`: the count.
    pub subscription_count: Option<u64>,
    /// Every other field (and a non-string `data`), as a JSON object text.
    pub extra: Option<String>,
}

impl Event {
    /// An event with just a name and a channel.
    pub fn new(name: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            channel: channel.into(),
            ..Self::default()
        }
    }

    /// `data` parsed as JSON, when it is a JSON text.
    pub fn data_json(&self) -> Option<serde_json::Value> {
        self.data.as_deref().and_then(|d| serde_json::from_str(d).ok())
    }

    /// The `extra` fields as a JSON object (empty when there are none).
    pub fn extra_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default()
    }
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// One attempt at delivering one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The app id.
    pub app_id: String,
    /// The webhook's id (its `id`, or by default the sink's `wasm` path).
    pub webhook_id: String,
    /// The batch id: the same on every attempt and replay, so a receiver
    /// can de-duplicate.
    pub batch_id: String,
    /// 1 on the first attempt, then 2, 3, … (throttled attempts do not
    /// count).
    pub attempt: u32,
    /// The signed body's `time_ms`: when this attempt was stamped, in
    /// milliseconds since the Unix epoch (each attempt, and each replay, is
    /// stamped and signed anew). When the batch was formed is the
    /// `X-Hookline-Batch-Time` header.
    pub time_ms: u64,
    /// The batch's events, parsed.
    pub events: Vec<Event>,
    /// The exact body Hookline signed: `{"time_ms":…,"events":[…]}`.
    pub body: Vec<u8>,
    /// `X-Pusher-Key`, `X-Pusher-Signature`, `X-Hookline-Batch-Id`,
    /// `X-Hookline-Batch-Time` (in this order), then the webhook's own
    /// `headers`.
    pub headers: Vec<(String, String)>,
    /// How long this attempt may take, in milliseconds (the webhook's
    /// `timeout_ms`); the host cuts outgoing requests there.
    pub timeout_ms: u64,
}

impl Request {
    /// The headers to send with [`Request::body`] so the receiver can
    /// verify the signature as it would an HTTP webhook's (it also needs
    /// `Content-Type: application/json`, which [`Request::forward`] adds).
    pub fn signed_headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (any case) among
    /// [`Request::headers`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A `POST` of the signed body, untouched, with its headers and
    /// `Content-Type: application/json`: what Hookline's HTTP sink sends.
    pub fn forward(&self, url: impl Into<String>) -> http::Request {
        http::Request::post(url)
            .header("Content-Type", "application/json")
            .headers(&self.headers)
            .body(self.body.clone())
    }

    /// The events' JSON texts exactly as they are in the signed body,
    /// without parsing them into values (the cheap way to copy an event
    /// into another document); `None` when the body is not Hookline's
    /// `{"time_ms":…,"events":[…]}` with one object per event.
    pub fn event_texts(&self) -> Option<Vec<&str>> {
        let body = std::str::from_utf8(&self.body).ok()?;
        let start = body.find("\"events\":[")? + "\"events\":[".len();
        let bytes = body.as_bytes();
        let mut texts = Vec::with_capacity(self.events.len());
        let (mut depth, mut in_string, mut escaped, mut begin) = (0usize, false, false, None);
        for (i, &b) in bytes.iter().enumerate().skip(start) {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    if depth == 0 {
                        begin = Some(i);
                    }
                    depth += 1;
                }
                b'}' | b']' if depth == 0 => break,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        texts.push(&body[begin?..=i]);
                    }
                }
                _ => {}
            }
        }
        (texts.len() == self.events.len()).then_some(texts)
    }

    /// The events as the JSON objects they arrived as (from the signed
    /// body; rebuilt from [`Request::events`] if the body is unreadable).
    pub fn events_json(&self) -> Vec<serde_json::Value> {
        let parsed = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|mut body| match body.get_mut("events").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(events)) if events.len() == self.events.len() => Some(events),
                _ => None,
            });
        parsed.unwrap_or_else(|| self.events.iter().map(event_json).collect())
    }
}

/// An event as the JSON object Pusher sends: its named fields, then its
/// `extra` ones.
pub fn event_json(event: &Event) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("name".into(), event.name.clone().into());
    object.insert("channel".into(), event.channel.clone().into());
    let optional = [
        ("user_id", &event.user_id),
        ("socket_id", &event.socket_id),
        ("event", &event.event),
        ("data", &event.data),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            object.insert(key.into(), value.clone().into());
        }
    }
    if let Some(count) = event.subscription_count {
        object.insert("subscription_count".into(), count.into());
    }
    object.extend(event.extra_json());
    serde_json::Value::Object(object)
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target has the batch.
    Delivered,
    /// A transient failure: retried with the webhook's `retry` policy.
    Retry {
        /// The least wait the target asked for (its `Retry-After`); the
        /// webhook's backoff applies either way.
        after_ms: Option<u64>,
        /// Why, for the log, the status page and the dead-letter record.
        reason: String,
    },
    /// A failure no retry can fix: the batch goes to the dead letters.
    Reject(String),
}

/// The most of an answer's body a reason quotes.
const EXCERPT: usize = 200;

impl Outcome {
    /// Retry with the webhook's backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after_ms: None,
            reason: reason.into(),
        }
    }

    /// Retry no sooner than `after_ms` from now.
    pub fn retry_after(after_ms: u64, reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after_ms: Some(after_ms),
            reason: reason.into(),
        }
    }

    /// Send the batch to the dead letters.
    pub fn reject(reason: impl Into<String>) -> Self {
        Outcome::Reject(reason.into())
    }

    /// Whether the target has the batch.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }

    /// An answer read the way Hookline reads an HTTP webhook's: 2xx is
    /// delivered; 429 is retried after its `Retry-After`; 408, 425 and 5xx
    /// are retried (`Retry-After` as the least wait); any other status is
    /// rejected, the reason naming it and an excerpt of the body.
    ///
    /// ```
    /// use hookline_sink::{Outcome, http::Response};
    ///
    /// let answer = |status: u16, body: &str| Response { status, headers: vec![], body: body.into() };
    /// assert_eq!(Outcome::from_response(&answer(204, "")), Outcome::Delivered);
    /// assert_eq!(Outcome::from_response(&answer(502, "")), Outcome::retry("answered 502"));
    /// assert_eq!(
    ///     Outcome::from_response(&answer(400, "no such channel\n")),
    ///     Outcome::reject("answered 400: no such channel")
    /// );
    /// ```
    pub fn from_response(response: &http::Response) -> Self {
        let status = response.status;
        match status {
            200..=299 => Outcome::Delivered,
            429 => Outcome::retry_after(response.retry_after_ms().unwrap_or(0), "answered 429 (throttled)"),
            408 | 425 | 500..=599 => Outcome::Retry {
                after_ms: response.retry_after_ms(),
                reason: format!("answered {status}"),
            },
            _ => {
                let excerpt = excerpt(&response.body);
                if excerpt.is_empty() {
                    Outcome::reject(format!("answered {status}"))
                } else {
                    Outcome::reject(format!("answered {status}: {excerpt}"))
                }
            }
        }
    }

    /// [`Outcome::from_response`] for an answer; for no answer, a retry
    /// naming the error, except a denied origin, a refused non-public
    /// address or a bad URL, which only an app file change fixes: rejected
    /// (a replay from the dead letters delivers once it is fixed).
    pub fn from_http(result: Result<http::Response, http::Error>) -> Self {
        match result {
            Ok(response) => Outcome::from_response(&response),
            Err(error) if error.is_transient() => Outcome::retry(error.to_string()),
            Err(error) => Outcome::reject(error.to_string()),
        }
    }
}

/// The start of a body, as one trimmed line of text.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > EXCERPT {
        line.push('…');
    }
    line
}

/// How many batches [`deliver_in_parts`] remembers per instance.
const PARTS_REMEMBERED: usize = 64;

thread_local! {
    /// Batch id → parts delivered by an earlier attempt in this instance.
    static PARTS: std::cell::RefCell<std::collections::VecDeque<(String, usize)>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Delivers a batch that takes several requests (one per chunk or per
/// event), in order, stopping at the first part that is not delivered and
/// answering its outcome. Parts an earlier attempt at the same batch
/// delivered in this instance are skipped, so a retry after a 429 on part
/// 3 resumes at part 3. That memory is best effort (the last 64 batches,
/// per instance: a restart, a reload or a second instance when
/// `max_in_flight` > 1 starts over), so a receiver may still see a part
/// twice: give each part an id it can de-duplicate on where it has one.
///
/// ```
/// use hookline_sink::{Outcome, Request, deliver_in_parts};
///
/// let request = Request { batch_id: "b-1".into(), ..Request::default() };
/// let mut sent = Vec::new();
/// let mut answers = vec![Outcome::Delivered, Outcome::retry("answered 503")].into_iter();
/// let outcome = deliver_in_parts(&request, ["a", "b", "c"], |part| {
///     sent.push(part);
///     answers.next().unwrap_or(Outcome::Delivered)
/// });
/// assert_eq!(outcome, Outcome::retry("answered 503"));
/// // The retry starts at "b".
/// let outcome = deliver_in_parts(&request, ["a", "b", "c"], |part| {
///     sent.push(part);
///     Outcome::Delivered
/// });
/// assert_eq!(outcome, Outcome::Delivered);
/// assert_eq!(sent, ["a", "b", "b", "c"]);
/// ```
pub fn deliver_in_parts<P>(
    request: &Request,
    parts: impl IntoIterator<Item = P>,
    mut send: impl FnMut(P) -> Outcome,
) -> Outcome {
    let done = PARTS.with(|parts| {
        let parts = parts.borrow();
        parts
            .iter()
            .find(|(id, _)| *id == request.batch_id)
            .map_or(0, |(_, n)| *n)
    });
    let remember = |count: Option<usize>| {
        PARTS.with(|parts| {
            let mut parts = parts.borrow_mut();
            parts.retain(|(id, _)| *id != request.batch_id);
            if let Some(count) = count {
                if parts.len() == PARTS_REMEMBERED {
                    parts.pop_front();
                }
                parts.push_back((request.batch_id.clone(), count));
            }
        });
    };
    for (index, part) in parts.into_iter().enumerate().skip(done) {
        let outcome = send(part);
        if !outcome.is_delivered() {
            remember(Some(index));
            return outcome;
        }
    }
    remember(None);
    Outcome::Delivered
}

/// A sink. Implement it on a unit struct and export it with
/// [`export_sink!`].
pub trait Sink {
    /// The sink's `config` from the app file, parsed from its JSON text
    /// (`null` when the app file gives none: use an `Option` or
    /// `#[serde(default)]` to make it optional).
    type Config: DeserializeOwned + 'static;

    /// Checks a config when the app file loads and in `hookline check`;
    /// an `Err` is a load error for the app.
    fn validate_config(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Delivers one batch (one attempt).
    fn deliver(request: &Request, config: &Self::Config) -> Outcome;
}

/// Parses a config text as the host passes it (`"null"` when the app file
/// gives none).
pub fn parse_config<C: DeserializeOwned>(text: &str) -> Result<C, String> {
    serde_json::from_str(text).map_err(|e| {
        if text.trim() == "null" {
            format!("this sink needs a \"config\" in the webhook's \"sink\" ({e})")
        } else {
            format!("invalid config: {e}")
        }
    })
}

/// Writes to Hookline's log (with the app, webhook and component named).
/// Natively, to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use __private::bindings::hookline::filter::types::Level as L;
        let level = match level {
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        __private::bindings::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Exports a [`Sink`] as the component's `hookline:sink/sink` world. Does
/// nothing when compiled natively, so the same crate tests natively.
#[macro_export]
macro_rules! export_sink {
    ($sink:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __HooklineSinkExport;
            impl $crate::__private::bindings::Guest for __HooklineSinkExport {
                fn validate_config(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_config::<$sink>(&config)
                }
                fn deliver(
                    request: $crate::__private::bindings::hookline::sink::types::Request,
                ) -> $crate::__private::bindings::hookline::sink::types::Outcome {
                    $crate::__private::deliver::<$sink>(request)
                }
            }
            $crate::__private::bindings::__export_sink_world!(
                __HooklineSinkExport with_types_in $crate::__private::bindings
            );
        };
    };
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use self::wasm::*;

    #[cfg(target_arch = "wasm32")]
    mod wasm {
        use std::any::Any;
        use std::cell::RefCell;

        use super::super::{Event, Outcome, Request, Sink, parse_config};

        #[allow(missing_docs, unreachable_pub, unsafe_code, clippy::all)]
        pub mod bindings {
            wit_bindgen::generate!({
                world: "hookline:sink/sink",
                // wit-parser cannot read wit/ as one directory (two
                // packages), so the files are listed, dependencies first.
                path: [
                    "../wit/deps/io.wit",
                    "../wit/deps/clocks.wit",
                    "../wit/deps/random.wit",
                    "../wit/deps/filesystem.wit",
                    "../wit/deps/sockets.wit",
                    "../wit/deps/cli.wit",
                    "../wit/deps/http.wit",
                    "../wit/filter.wit",
                    "../wit/sink.wit",
                ],
                generate_all,
                pub_export_macro: true,
                export_macro_name: "__export_sink_world",
            });
        }

        use bindings::hookline::filter::types as event_wit;
        use bindings::hookline::sink::types as wit;

        thread_local! {
            /// The last config text and its parsed form: an instance serves
            /// one webhook, so the config (sent with every delivery) rarely
            /// changes and is parsed once.
            static CONFIG: RefCell<Option<(String, Box<dyn Any>)>> = const { RefCell::new(None) };
        }

        fn with_config<S: Sink, R>(text: &str, run: impl FnOnce(&S::Config) -> R) -> Result<R, String> {
            CONFIG.with(|cell| {
                let mut cell = cell.borrow_mut();
                let cached = cell
                    .as_ref()
                    .is_some_and(|(t, c)| t == text && c.downcast_ref::<S::Config>().is_some());
                if !cached {
                    let parsed: S::Config = parse_config(text)?;
                    *cell = Some((text.to_string(), Box::new(parsed)));
                }
                let (_, config) = cell.as_ref().expect("just filled");
                Ok(run(config.downcast_ref::<S::Config>().expect("checked above")))
            })
        }

        pub fn validate_config<S: Sink>(text: &str) -> Result<(), String> {
            with_config::<S, _>(text, |c| S::validate_config(c))?
        }

        pub fn deliver<S: Sink>(request: wit::Request) -> wit::Outcome {
            let config = request.config;
            let request = Request {
                app_id: request.app_id,
                webhook_id: request.webhook_id,
                batch_id: request.batch_id,
                attempt: request.attempt,
                time_ms: request.time_ms,
                events: request.events.into_iter().map(from_wit).collect(),
                body: request.body,
                headers: request.headers,
                timeout_ms: request.timeout_ms,
            };
            // validate-config ran at load; a config that fails to parse
            // here can only be fixed in the app file.
            let outcome = with_config::<S, _>(&config, |c| S::deliver(&request, c)).unwrap_or_else(Outcome::Reject);
            match outcome {
                Outcome::Delivered => wit::Outcome::Delivered,
                Outcome::Retry { after_ms, reason } => wit::Outcome::Retry(wit::Retry { after_ms, reason }),
                Outcome::Reject(reason) => wit::Outcome::Reject(reason),
            }
        }

        fn from_wit(e: event_wit::Event) -> Event {
            Event {
                name: e.name,
                channel: e.channel,
                user_id: e.user_id,
                socket_id: e.socket_id,
                event: e.event,
                data: e.data,
                subscription_count: e.subscription_count,
                extra: e.extra,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response {
        http::Response {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn maps_answers_as_hookline_maps_http() {
        assert_eq!(Outcome::from_response(&answer(200, &[], "")), Outcome::Delivered);
        assert_eq!(Outcome::from_response(&answer(299, &[], "")), Outcome::Delivered);
        assert_eq!(
            Outcome::from_response(&answer(429, &[("Retry-After", "7")], "")),
            Outcome::retry_after(7000, "answered 429 (throttled)")
        );
        assert_eq!(
            Outcome::from_response(&answer(429, &[], "")),
            Outcome::retry_after(0, "answered 429 (throttled)")
        );
        for status in [408, 425, 500, 503, 599] {
            assert_eq!(
                Outcome::from_response(&answer(status, &[], "")),
                Outcome::retry(format!("answered {status}"))
            );
        }
        assert_eq!(
            Outcome::from_response(&answer(503, &[("retry-after", "2")], "")),
            Outcome::retry_after(2000, "answered 503")
        );
        assert_eq!(
            Outcome::from_response(&answer(301, &[("Location", "/x")], "")),
            Outcome::reject("answered 301")
        );
        let long = "x".repeat(500);
        let Outcome::Reject(reason) = Outcome::from_response(&answer(404, &[], &long)) else {
            panic!("a 404 is final");
        };
        assert!(
            reason.starts_with("answered 404: xxx") && reason.ends_with('…'),
            "{reason}"
        );
        assert!(reason.len() < 250, "{reason}");
    }

    #[test]
    fn no_answer_is_retried_unless_only_the_app_file_can_fix_it() {
        let down = http::Error::Transport {
            origin: "http://a".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(
            Outcome::from_http(Err(down)),
            Outcome::retry("request to http://a failed: connection refused")
        );
        let denied = http::Error::Denied {
            origin: "https://evil.example".into(),
        };
        let Outcome::Reject(reason) = Outcome::from_http(Err(denied)) else {
            panic!("denied is final");
        };
        assert!(reason.contains("allowed_hosts"), "{reason}");
        let private = http::Error::NonPublicAddress {
            origin: "http://127.0.0.1:8080".into(),
        };
        let Outcome::Reject(reason) = Outcome::from_http(Err(private)) else {
            panic!("a refused non-public address is final");
        };
        assert!(reason.contains(r#""allow_private": true"#), "{reason}");
    }

    #[test]
    fn a_missing_config_says_where_it_goes() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct C {
            url: String,
        }
        assert!(parse_config::<C>("null").unwrap_err().contains("\"config\""));
        assert!(parse_config::<C>("{}").unwrap_err().starts_with("invalid config"));
        assert!(parse_config::<Option<C>>("null").unwrap().is_none());
    }

    #[test]
    fn event_texts_are_the_bodys_objects_byte_for_byte() {
        let mut request = Request {
            events: vec![Event::new("a", "c1"), Event::new("b", "c2")],
            ..Request::default()
        };
        request.body = br#"{"time_ms":1,"events":[{"name":"a","channel":"c1","data":"}]\"{"},{"name":"b","channel":"c2","x":[1,{"y":2}]}]}"#.to_vec();
        assert_eq!(
            request.event_texts().unwrap(),
            [
                r#"{"name":"a","channel":"c1","data":"}]\"{"}"#,
                r#"{"name":"b","channel":"c2","x":[1,{"y":2}]}"#
            ]
        );
        request.body = br#"{"time_ms":1,"events":[{"name":"a","channel":"c1"}]}"#.to_vec();
        assert_eq!(request.event_texts(), None, "one event short");
    }

    #[test]
    fn events_json_keeps_the_bodys_objects_and_rebuilds_without_one() {
        let mut event = Event::new("client_event", "room-1");
        event.user_id = Some("u1".into());
        event.extra = Some(r#"{"tenant":"acme"}"#.into());
        let mut request = Request {
            events: vec![event],
            ..Request::default()
        };
        let rebuilt = serde_json::json!([{"name":"client_event","channel":"room-1","user_id":"u1","tenant":"acme"}]);
        assert_eq!(serde_json::Value::from(request.events_json()), rebuilt);
        request.body = br#"{"time_ms":1,"events":[{"channel":"room-1","name":"client_event","x":1}]}"#.to_vec();
        assert_eq!(
            serde_json::to_string(&request.events_json()).unwrap(),
            r#"[{"channel":"room-1","name":"client_event","x":1}]"#
        );
    }
}
