//! A Hookline sink component that posts each batch to a Slack incoming
//! webhook as Block Kit messages: a header naming the app and the count,
//! then one mrkdwn section per event.
//!
//! Slack's limits shape the messages: at most 50 blocks per message (so a
//! batch of more than 49 events is several messages, one POST each), at
//! most 3000 characters per section (longer ones end in `…`), at most 150
//! per header. Slack throttles a webhook to about one message per second
//! and answers 429 with `Retry-After`: the attempt is retried no sooner
//! than that, resuming at the message that was refused.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p slack`.

use hookline_sink::serde_json::{Value, json};
use hookline_sink::{Event, Outcome, Request, Sink, deliver_in_parts, http};

/// Slack's most blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Slack's most characters in a section's text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack's most characters in a header's text.
pub const MAX_HEADER_CHARS: usize = 150;

/// The sink's `config` in the app file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The incoming webhook's URL (`https://hooks.slack.com/services/…`);
    /// its origin must be in the webhook's `allowed_hosts`.
    pub url: String,
    /// Put before each message's header and notification text (an emoji
    /// code such as `:bell:`, or a word).
    #[serde(default)]
    pub text_prefix: Option<String>,
}

/// The sink.
pub struct Slack;

impl Sink for Slack {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if !config.url.starts_with("https://") && !config.url.starts_with("http://") {
            return Err(format!(
                "`url` must be the incoming webhook's absolute URL (https://hooks.slack.com/services/…), not {:?}",
                config.url
            ));
        }
        Ok(())
    }

    fn deliver(request: &Request, config: &Config) -> Outcome {
        let messages = messages(request, config);
        deliver_in_parts(request, messages, |message| {
            Outcome::from_http(http::Request::post(&config.url).json(&message).send())
        })
    }
}

hookline_sink::export_sink!(Slack);

/// The batch as Slack messages, each within Slack's limits.
pub fn messages(request: &Request, config: &Config) -> Vec<Value> {
    let per_message = MAX_BLOCKS - 1; // one block is the header
    let chunks: Vec<&[Event]> = request.events.chunks(per_message).collect();
    let count = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(index, events)| {
            let mut title = format!(
                "{} event{} from app {}",
                request.events.len(),
                if request.events.len() == 1 { "" } else { "s" },
                request.app_id
            );
            if let Some(prefix) = &config.text_prefix {
                title = format!("{prefix} {title}");
            }
            if count > 1 {
                title.push_str(&format!(" ({}/{count})", index + 1));
            }
            let mut blocks = vec![json!({
                "type": "header",
                "text": {"type": "plain_text", "text": truncate(&title, MAX_HEADER_CHARS), "emoji": true},
            })];
            blocks.extend(events.iter().map(|event| {
                json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": truncate(&section_text(event), MAX_SECTION_CHARS)},
                })
            }));
            json!({"text": title, "blocks": blocks})
        })
        .collect()
}

/// One event as mrkdwn: its name and channel, then its other fields.
fn section_text(event: &Event) -> String {
    let mut text = format!("*{}* on `{}`", escape(&event.name), escape(&event.channel));
    let fields = [
        ("user", &event.user_id),
        ("socket", &event.socket_id),
        ("event", &event.event),
    ];
    for (label, value) in fields {
        if let Some(value) = value {
            text.push_str(&format!("\n{label}: `{}`", escape(value)));
        }
    }
    if let Some(count) = event.subscription_count {
        text.push_str(&format!("\nsubscriptions: {count}"));
    }
    if let Some(data) = &event.data {
        text.push_str(&format!("\n```{}```", escape(data)));
    }
    let extra = event.extra_json();
    if !extra.is_empty() {
        text.push_str(&format!("\n```{}```", escape(&Value::Object(extra).to_string())));
    }
    text
}

/// Slack's mrkdwn escapes: `&`, `<` and `>` (links and mentions use them).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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

    fn config(receiver: &Receiver) -> String {
        format!(
            r#"{{"url":"{}/services/T0/B0/x","text_prefix":":bell:"}}"#,
            receiver.url()
        )
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event::new("channel_occupied", format!("room-{i}")))
            .collect()
    }

    #[test]
    fn posts_one_block_kit_message_with_a_section_per_event() {
        let receiver = Receiver::start();
        let mut event = Event::new("client_event", "private-chat");
        event.user_id = Some("u<1>".into());
        event.event = Some("client-typing".into());
        event.data = Some(r#"{"on":true}"#.into());
        let request = testing::request(vec![event, Event::new("channel_vacated", "room-2")])
            .app_id("app-1")
            .build();
        assert_eq!(
            testing::deliver::<Slack>(&config(&receiver), &request),
            Ok(Outcome::Delivered)
        );
        let got = receiver.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "/services/T0/B0/x");
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        let message = got[0].json();
        assert_eq!(message["text"], ":bell: 2 events from app app-1");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["type"], "section");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        assert_eq!(
            blocks[1]["text"]["text"],
            "*client_event* on `private-chat`\nuser: `u&lt;1&gt;`\nevent: `client-typing`\n```{\"on\":true}```"
        );
        assert_eq!(blocks[2]["text"]["text"], "*channel_vacated* on `room-2`");
    }

    #[test]
    fn chunks_to_fifty_blocks_and_cuts_long_sections() {
        let receiver = Receiver::start();
        let mut all = events(120);
        all[0].data = Some("x".repeat(5000));
        let request = testing::request(all).build();
        assert_eq!(
            testing::deliver::<Slack>(&config(&receiver), &request),
            Ok(Outcome::Delivered)
        );
        let got = receiver.requests();
        // 49 events per message after the header: 49 + 49 + 22.
        assert_eq!(got.len(), 3);
        let sizes: Vec<usize> = got
            .iter()
            .map(|r| r.json()["blocks"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [50, 50, 23]);
        assert_eq!(
            got[2].json()["blocks"][0]["text"]["text"],
            ":bell: 120 events from app app (3/3)"
        );
        let first = got[0].json()["blocks"][1]["text"]["text"].as_str().unwrap().to_string();
        assert_eq!(first.chars().count(), MAX_SECTION_CHARS);
        assert!(first.ends_with('…'));
        let channels: Vec<String> = got
            .iter()
            .flat_map(|r| {
                r.json()["blocks"].as_array().unwrap()[1..]
                    .iter()
                    .map(|b| b["text"]["text"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(channels.len(), 120);
        assert!(channels[119].starts_with("*channel_occupied* on `room-119`"));
    }

    #[test]
    fn honours_retry_after_and_resumes_at_the_refused_message() {
        let receiver = Receiver::start();
        receiver.respond_with(Answer::status(200).body("ok"));
        receiver.respond_with(Answer::status(429).header("Retry-After", "30").body("rate_limited"));
        let request = testing::request(events(60)).batch_id("b-429").build();
        let outcome = testing::deliver::<Slack>(&config(&receiver), &request).unwrap();
        assert_eq!(outcome, Outcome::retry_after(30_000, "answered 429 (throttled)"));
        assert_eq!(receiver.requests().len(), 2);
        // The retry sends the refused second message only.
        let outcome = testing::deliver::<Slack>(&config(&receiver), &request).unwrap();
        assert_eq!(outcome, Outcome::Delivered);
        let got = receiver.requests();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].body, got[2].body);
        assert!(got[2].json()["text"].as_str().unwrap().ends_with("(2/2)"));
    }

    #[test]
    fn a_refusal_is_final_and_names_slacks_answer() {
        let receiver = Receiver::start();
        receiver.respond_with(Answer::status(404).body("no_service"));
        let request = testing::request(events(1)).build();
        assert_eq!(
            testing::deliver::<Slack>(&config(&receiver), &request),
            Ok(Outcome::reject("answered 404: no_service"))
        );
    }

    #[test]
    fn validates_its_config() {
        let error = testing::validate::<Slack>(r#"{"url":"hooks.slack.com/x"}"#).unwrap_err();
        assert!(error.contains("absolute URL"), "{error}");
        let error = testing::validate::<Slack>(r#"{"url":"https://h/x","channel":"general"}"#).unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
        assert!(testing::validate::<Slack>("null").unwrap_err().contains("\"config\""));
    }
}
