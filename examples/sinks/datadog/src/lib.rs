//! A Hookline sink component that records each event in Datadog's event
//! stream (Events API v1, `POST /api/v1/events`, one request per event).
//!
//! The API key never enters the component: the app file lists it as the
//! `DD-API-KEY` header of the Datadog origin in `allowed_hosts`, and the
//! host adds it to every request to that origin. This sink sets no
//! credential itself; a 403 (no key, or a wrong one) is rejected with a
//! reason that says where the key goes.
//!
//! Each event: `title` `<event name> on <channel>`, `text` the event as
//! JSON, `date_happened` the attempt's `time_ms` (the signed body's,
//! stamped anew at each attempt), `aggregation_key` the batch id (a
//! batch's events group together, and a resent event joins its group), `tags` `app:…`, `channel:…`, `event:…` and the config's own.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p datadog`.

use hookline_sink::serde_json::{Value, json};
use hookline_sink::{Event, Outcome, Request, Sink, deliver_in_parts, http};

/// Datadog's most characters in a title.
const MAX_TITLE: usize = 100;
/// Datadog's most characters in an event's text.
const MAX_TEXT: usize = 4000;

/// The sink's `config` in the app file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Datadog API origin of your site (`https://api.datadoghq.eu`,
    /// `https://api.us5.datadoghq.com`, …); it must be in `allowed_hosts`,
    /// with the `DD-API-KEY` header.
    #[serde(default = "default_site")]
    pub site: String,
    /// More tags for every event (`env:prod`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// `info` (the default), `warning`, `error` or `success`.
    #[serde(default = "default_alert_type")]
    pub alert_type: String,
}

fn default_site() -> String {
    "https://api.datadoghq.com".to_string()
}

fn default_alert_type() -> String {
    "info".to_string()
}

/// The sink.
pub struct Datadog;

impl Sink for Datadog {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if !config.site.starts_with("https://") && !config.site.starts_with("http://") {
            return Err(format!(
                "`site` must be the API origin (https://api.datadoghq.com), not {:?}",
                config.site
            ));
        }
        if !["info", "warning", "error", "success"].contains(&config.alert_type.as_str()) {
            return Err(format!(
                "`alert_type` is info, warning, error or success, not {:?}",
                config.alert_type
            ));
        }
        Ok(())
    }

    fn deliver(request: &Request, config: &Config) -> Outcome {
        let url = format!("{}/api/v1/events", config.site.trim_end_matches('/'));
        let bodies = request
            .events
            .iter()
            .zip(request.events_json())
            .map(|(event, json)| event_body(request, config, event, &json));
        deliver_in_parts(request, bodies, |body| {
            let sent = http::Request::post(&url).json(&body).send();
            match sent {
                Ok(response) if response.status == 403 => Outcome::reject(format!(
                    "Datadog refused the API key (403): list it as the DD-API-KEY header of {} in the webhook's allowed_hosts",
                    config.site
                )),
                other => Outcome::from_http(other),
            }
        })
    }
}

hookline_sink::export_sink!(Datadog);

/// One event as an Events API v1 body.
fn event_body(request: &Request, config: &Config, event: &Event, json: &Value) -> Value {
    let mut tags = vec![
        format!("app:{}", request.app_id),
        format!("channel:{}", event.channel),
        format!("event:{}", event.name),
    ];
    tags.extend(config.tags.iter().cloned());
    json!({
        "title": truncate(&format!("{} on {}", event.name, event.channel), MAX_TITLE),
        "text": truncate(&json.to_string(), MAX_TEXT),
        "date_happened": request.time_ms / 1000,
        "aggregation_key": truncate(&request.batch_id, 100),
        "alert_type": config.alert_type,
        "source_type_name": "hookline",
        "tags": tags,
    })
}

/// At most `max` characters, the last one `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_sink::testing::{self, Answer, Receiver};

    #[test]
    fn posts_one_event_per_request_without_setting_a_key() {
        let receiver = Receiver::start();
        receiver.set_default(Answer::status(202).body(r#"{"status":"ok"}"#));
        let config = format!(r#"{{"site":"{}","tags":["env:test"]}}"#, receiver.url());
        let request = testing::request(vec![
            Event::new("channel_occupied", "room-1"),
            Event::new("channel_vacated", "room-1"),
        ])
        .app_id("app-1")
        .batch_id("b-7")
        .time_ms(1_700_000_000_999)
        .build();
        assert_eq!(testing::deliver::<Datadog>(&config, &request), Ok(Outcome::Delivered));
        let got = receiver.requests();
        assert_eq!(got.len(), 2);
        for r in &got {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v1/events"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            // The host adds the key; the sink never has it.
            assert_eq!(r.header("dd-api-key"), None);
        }
        assert_eq!(
            got[0].json(),
            json!({
                "title": "channel_occupied on room-1",
                "text": r#"{"name":"channel_occupied","channel":"room-1"}"#,
                "date_happened": 1_700_000_000u64,
                "aggregation_key": "b-7",
                "alert_type": "info",
                "source_type_name": "hookline",
                "tags": ["app:app-1", "channel:room-1", "event:channel_occupied", "env:test"],
            })
        );
    }

    #[test]
    fn a_refused_key_says_where_the_key_goes() {
        let receiver = Receiver::start();
        receiver.respond_with(Answer::status(403).body(r#"{"errors":["Forbidden"]}"#));
        let config = format!(r#"{{"site":"{}"}}"#, receiver.url());
        let request = testing::request(vec![Event::new("a", "b")]).build();
        let Ok(Outcome::Reject(reason)) = testing::deliver::<Datadog>(&config, &request) else {
            panic!("a 403 is final");
        };
        assert!(
            reason.contains("DD-API-KEY") && reason.contains("allowed_hosts"),
            "{reason}"
        );
    }

    #[test]
    fn throttling_is_retried_after_its_wait() {
        let receiver = Receiver::start();
        receiver.respond_with(Answer::status(429).header("Retry-After", "5"));
        let config = format!(r#"{{"site":"{}"}}"#, receiver.url());
        let request = testing::request(vec![Event::new("a", "b")]).build();
        assert_eq!(
            testing::deliver::<Datadog>(&config, &request),
            Ok(Outcome::retry_after(5000, "answered 429 (throttled)"))
        );
    }

    #[test]
    fn validates_its_config() {
        assert!(testing::validate::<Datadog>("null").is_err());
        assert!(testing::validate::<Datadog>("{}").is_ok());
        assert!(testing::validate::<Datadog>(r#"{"alert_type":"loud"}"#).is_err());
        assert!(testing::validate::<Datadog>(r#"{"site":"api.datadoghq.com"}"#).is_err());
    }
}
