//! A Hookline sink component that delivers each event as a CloudEvent
//! (CloudEvents 1.0, HTTP protocol binding, structured JSON).
//!
//! By default a batch is one request in the binding's batched content mode
//! (`Content-Type: application/cloudevents-batch+json`, a JSON array with
//! one CloudEvent per event): one attempt is one request and one outcome,
//! as for Hookline's HTTP sink, so a failure never leaves half a batch
//! accepted. `"mode": "structured"` sends one request per event instead
//! (`Content-Type: application/cloudevents+json`), for receivers that take
//! no batches; a retry then resumes at the event that failed.
//!
//! Each CloudEvent: `specversion` `1.0`; `id` `<batch id>-<index>` (stable
//! across retries and replays, unique within its source, so a receiver can
//! de-duplicate); `source` `/hookline/<app id>/<webhook id>` (or the
//! config's `source`); `type` `com.pusher.<event name>` (or the config's
//! `type_prefix`); `time` the attempt's `time_ms` (RFC 3339: the signed
//! body's, stamped anew at each attempt); `subject` the channel; `datacontenttype` `application/json`; `data` the
//! event object as Pusher sent it.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p cloudevents`.

use hookline_sink::serde_json::{Map, Value, json};
use hookline_sink::{Outcome, Request, Sink, deliver_in_parts, http};

/// The sink's `config` in the app file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to POST; its origin must be in the webhook's `allowed_hosts`.
    pub url: String,
    /// `batch` (the default): one request per batch; `structured`: one
    /// request per event.
    #[serde(default)]
    pub mode: Mode,
    /// The events' `source` (default `/hookline/<app id>/<webhook id>`).
    #[serde(default)]
    pub source: Option<String>,
    /// The events' `type` is `<type_prefix>.<event name>`.
    #[serde(default = "default_type_prefix")]
    pub type_prefix: String,
}

/// How events travel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One `application/cloudevents-batch+json` request per batch.
    #[default]
    Batch,
    /// One `application/cloudevents+json` request per event.
    Structured,
}

fn default_type_prefix() -> String {
    "com.pusher".to_string()
}

/// The sink.
pub struct CloudEvents;

impl Sink for CloudEvents {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if !config.url.starts_with("https://") && !config.url.starts_with("http://") {
            return Err(format!("`url` must be an absolute http(s) URL, not {:?}", config.url));
        }
        if config.source.as_deref() == Some("") {
            return Err("`source` must not be empty (leave it out for /hookline/<app>/<webhook>)".into());
        }
        if config.type_prefix.is_empty() {
            return Err("`type_prefix` must not be empty".into());
        }
        Ok(())
    }

    fn deliver(request: &Request, config: &Config) -> Outcome {
        match config.mode {
            Mode::Batch => Outcome::from_http(
                http::Request::post(&config.url)
                    .header("Content-Type", "application/cloudevents-batch+json")
                    .body(cloud_event_batch(request, config).into_bytes())
                    .send(),
            ),
            Mode::Structured => deliver_in_parts(request, cloud_event_texts(request, config), |event| {
                Outcome::from_http(
                    http::Request::post(&config.url)
                        .header("Content-Type", "application/cloudevents+json")
                        .body(event.into_bytes())
                        .send(),
                )
            }),
        }
    }
}

hookline_sink::export_sink!(CloudEvents);

/// The batch's events as CloudEvents, in order.
pub fn cloud_events(request: &Request, config: &Config) -> Vec<Value> {
    cloud_event_texts(request, config)
        .iter()
        .map(|text| serde_json::from_str(text).expect("a CloudEvent text is JSON"))
        .collect()
}

/// The batch's events as CloudEvent JSON texts, in order (see
/// [`cloud_event_batch`]).
pub fn cloud_event_texts(request: &Request, config: &Config) -> Vec<String> {
    let mut texts = Vec::with_capacity(request.events.len());
    write_cloud_events(request, config, |write| {
        let mut text = String::new();
        write(&mut text);
        texts.push(text);
    });
    texts
}

/// The batch's events as one JSON array of CloudEvents, written directly:
/// each event's object is copied from the signed body as its `data`,
/// without parsing it (the hot path: a batch may hold hundreds).
pub fn cloud_event_batch(request: &Request, config: &Config) -> String {
    let mut body = String::with_capacity(2 * request.body.len() + 64);
    body.push('[');
    write_cloud_events(request, config, |write| {
        if body.len() > 1 {
            body.push(',');
        }
        write(&mut body);
    });
    body.push(']');
    body
}

/// Hands `each` a writer per CloudEvent, in order.
fn write_cloud_events(request: &Request, config: &Config, mut each: impl FnMut(&dyn Fn(&mut String))) {
    let Some(texts) = request.event_texts() else {
        // Not Hookline's body shape: the slower path through values.
        for event in cloud_event_values(request, config) {
            each(&|out: &mut String| out.push_str(&event.to_string()));
        }
        return;
    };
    let mut head = String::with_capacity(256);
    head.push_str(r#"{"specversion":"1.0","source":"#);
    match &config.source {
        Some(source) => push_json_string(&mut head, source),
        None => push_json_string(
            &mut head,
            &format!(
                "/hookline/{}/{}",
                path_segment(&request.app_id),
                path_segment(&request.webhook_id)
            ),
        ),
    }
    head.push_str(r#","time":"#);
    push_json_string(&mut head, &rfc3339(request.time_ms));
    head.push_str(r#","datacontenttype":"application/json","id":"#);
    for (index, (data, event)) in texts.iter().zip(&request.events).enumerate() {
        each(&|out: &mut String| {
            out.reserve(head.len() + data.len() + 128);
            out.push_str(&head);
            push_json_string(out, &format!("{}-{index}", request.batch_id));
            out.push_str(r#","type":"#);
            push_json_string(out, &format!("{}.{}", config.type_prefix, event.name));
            out.push_str(r#","subject":"#);
            push_json_string(out, &event.channel);
            out.push_str(r#","data":"#);
            out.push_str(data);
            out.push('}');
        });
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(text).expect("a string always serializes"));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// The CloudEvents built as values (for bodies not of Hookline's shape).
fn cloud_event_values(request: &Request, config: &Config) -> Vec<Value> {
    let source = config.source.clone().unwrap_or_else(|| {
        format!(
            "/hookline/{}/{}",
            path_segment(&request.app_id),
            path_segment(&request.webhook_id)
        )
    });
    let time = rfc3339(request.time_ms);
    request
        .events_json()
        .into_iter()
        .zip(&request.events)
        .enumerate()
        .map(|(index, (data, event))| {
            json!({
                "specversion": "1.0",
                "id": format!("{}-{index}", request.batch_id),
                "source": source,
                "type": format!("{}.{}", config.type_prefix, event.name),
                "time": time,
                "subject": event.channel,
                "datacontenttype": "application/json",
                "data": data,
            })
        })
        .collect()
}

/// `text` as one URI path segment: unreserved characters kept, the rest
/// percent-encoded (a webhook id defaults to the sink's `wasm` path,
/// slashes and all).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}

/// Whether `value` is a CloudEvent with the attributes this sink always
/// sets (for tests and receivers).
pub fn is_cloud_event(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let text = |key: &str, o: &Map<String, Value>| o.get(key).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    object.get("specversion") == Some(&Value::from("1.0"))
        && ["id", "source", "type", "time", "subject", "datacontenttype"]
            .iter()
            .all(|k| text(k, object))
        && object.contains_key("data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_sink::Event;
    use hookline_sink::testing::{self, Answer, Receiver};

    fn batch() -> Request {
        let mut typing = Event::new("client_event", "private-chat");
        typing.user_id = Some("u1".into());
        typing.event = Some("client-typing".into());
        typing.data = Some(r#"{"on":true}"#.into());
        testing::request(vec![Event::new("channel_occupied", "room-1"), typing])
            .app_id("app-1")
            .webhook_id("ce")
            .batch_id("b-42")
            .time_ms(1_700_000_000_123)
            .build()
    }

    #[test]
    fn posts_a_batch_of_cloud_events() {
        let receiver = Receiver::start();
        let config = format!(r#"{{"url":"{}/events"}}"#, receiver.url());
        assert_eq!(
            testing::deliver::<CloudEvents>(&config, &batch()),
            Ok(Outcome::Delivered)
        );
        let got = receiver.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].header("content-type"),
            Some("application/cloudevents-batch+json")
        );
        let events = got[0].json();
        let events = events.as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(is_cloud_event), "{events:?}");
        assert_eq!(
            events[1],
            json!({
                "specversion": "1.0",
                "id": "b-42-1",
                "source": "/hookline/app-1/ce",
                "type": "com.pusher.client_event",
                "time": "2023-11-14T22:13:20.123Z",
                "subject": "private-chat",
                "datacontenttype": "application/json",
                "data": {"name": "client_event", "channel": "private-chat", "user_id": "u1",
                         "event": "client-typing", "data": "{\"on\":true}"},
            })
        );
        assert_eq!(events[0]["id"], "b-42-0");
    }

    #[test]
    fn structured_mode_is_one_request_per_event_and_resumes_after_a_failure() {
        let receiver = Receiver::start();
        let config = format!(
            r#"{{"url":"{}/e","mode":"structured","source":"urn:acme:pusher","type_prefix":"io.acme"}}"#,
            receiver.url()
        );
        receiver.respond_with(Answer::status(202));
        receiver.respond_with(Answer::status(503));
        let request = batch();
        assert_eq!(
            testing::deliver::<CloudEvents>(&config, &request),
            Ok(Outcome::retry("answered 503"))
        );
        assert_eq!(
            testing::deliver::<CloudEvents>(&config, &request),
            Ok(Outcome::Delivered)
        );
        let got = receiver.requests();
        let ids: Vec<Value> = got.iter().map(|r| r.json()["id"].clone()).collect();
        assert_eq!(ids, [json!("b-42-0"), json!("b-42-1"), json!("b-42-1")]);
        for r in &got {
            assert_eq!(r.header("content-type"), Some("application/cloudevents+json"));
            let event = r.json();
            assert!(is_cloud_event(&event));
            assert_eq!(event["source"], "urn:acme:pusher");
        }
        assert_eq!(got[0].json()["type"], "io.acme.channel_occupied");
    }

    #[test]
    fn a_default_source_escapes_the_webhook_path() {
        let request = testing::request(vec![Event::new("a", "b")])
            .webhook_id("sinks/ce.wasm")
            .build();
        let config: Config = hookline_sink::parse_config(r#"{"url":"http://x/"}"#).unwrap();
        assert_eq!(
            cloud_events(&request, &config)[0]["source"],
            "/hookline/app/sinks%2Fce.wasm"
        );
    }

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn validates_its_config() {
        assert!(testing::validate::<CloudEvents>(r#"{"url":"http://x/","mode":"binary"}"#).is_err());
        assert!(
            testing::validate::<CloudEvents>(r#"{"url":"x"}"#)
                .unwrap_err()
                .contains("absolute")
        );
        assert!(testing::validate::<CloudEvents>(r#"{"url":"http://x/","source":""}"#).is_err());
    }
}
