//! What the AWS sinks share about the message they send: the FIFO group and
//! deduplication ids (sqs, sns), the message-attribute naming rules (sqs,
//! sns) and the `{"payload", "headers"}` envelope (lambda, eventbridge).

use hookline_sink_api::SinkRequest;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `<kind>.group_by`: which value orders a FIFO queue's or topic's messages
/// (`MessageGroupId`). Messages of one group are delivered in order, groups
/// in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One ordered group per webhook (the webhook's `id`), the default.
    #[default]
    Webhook,
    /// One ordered group per app (the app's `id`).
    App,
    /// One ordered group per channel; batches then hold one channel each.
    Channel,
}

impl GroupBy {
    /// The value this batch's group is named after (not yet a valid id:
    /// pass it through [`fifo_id`]).
    pub fn value<'a>(self, request: &SinkRequest<'a>) -> &'a str {
        match self {
            GroupBy::Webhook => request.webhook_id,
            GroupBy::App => request.app_id,
            // The engine sets the channel on every batch of a sink whose
            // batches_per_channel is true; a missing one would be its bug,
            // and the webhook is the safe (fully ordered) fallback.
            GroupBy::Channel => request.channel.unwrap_or(request.webhook_id),
        }
    }
}

/// A FIFO `MessageGroupId` or `MessageDeduplicationId` as SQS and SNS take
/// it (1 to 128 printable ASCII characters): the value itself when it
/// qualifies, else `sha256-<hex>` of it, so that a long or non-ASCII
/// channel or webhook id (a Pusher channel name may have 164 characters)
/// still maps to one stable id.
pub fn fifo_id(value: &str) -> String {
    if !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()) {
        value.to_string()
    } else {
        format!("sha256-{}", hex::encode(Sha256::digest(value.as_bytes())))
    }
}

/// Why SQS and SNS would refuse `name` as a message attribute name, or
/// `None` if they take it. Both allow letters, digits, `_`, `-` and `.`, no
/// leading, trailing or doubled `.`, no `AWS.` or `Amazon.` prefix (in any
/// case), 256 characters at most. The reason reads after "its name".
pub fn attribute_name_problem(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || name.len() > 256 {
        Some("is empty or longer than 256 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Some("may hold only letters, digits, `_`, `-` and `.`")
    } else if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        Some("may not start or end with `.` or hold `..`")
    } else if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        Some("may not start with `AWS.` or `Amazon.`")
    } else {
        None
    }
}

/// The JSON envelope the lambda sink sends as its payload and the
/// eventbridge sink as its `Detail`: `{"payload": <the signed body>,
/// "headers": {<webhook headers>, <signed headers>}}`. The body is inserted
/// as its exact signed bytes, so `JSON.stringify(payload)` reproduces them.
/// The signed (Pusher and Hookline) headers are written last and replace
/// any webhook header of the same name, compared case-insensitively, as
/// soketi merges them.
pub fn envelope(request: &SinkRequest<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(request.body.len() + 512);
    out.extend_from_slice(br#"{"payload":"#);
    out.extend_from_slice(&request.body);
    out.extend_from_slice(br#","headers":{"#);
    let mut first = true;
    let mut write = |out: &mut Vec<u8>, name: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(json_string(name).as_bytes());
        out.push(b':');
        out.extend_from_slice(json_string(value).as_bytes());
    };
    for (name, value) in request.extra_headers {
        if request
            .signed_headers
            .iter()
            .any(|(signed, _)| signed.eq_ignore_ascii_case(name))
        {
            continue;
        }
        write(&mut out, name, value);
    }
    for (name, value) in request.signed_headers {
        write(&mut out, name, value);
    }
    out.extend_from_slice(b"}}");
    out
}

/// The bytes [`envelope`] adds around the body for these webhook headers,
/// the signed headers left out (each sink keeps its own allowance for
/// them): the envelope's punctuation and each header's JSON `"name":"value"`
/// with its separator.
pub fn envelope_overhead(extra_headers: &[(String, String)]) -> usize {
    r#"{"payload":,"headers":{}}"#.len()
        + extra_headers
            .iter()
            .map(|(k, v)| json_string(k).len() + json_string(v).len() + 2)
            .sum::<usize>()
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_envelope_embeds_the_exact_body_and_pusher_headers_win() {
        let body = bytes::Bytes::from_static(br#"{"time_ms":1,"events":[{"name":"a","channel":"\u001f\ud800"}]}"#);
        let signed = [
            ("X-Pusher-Key", "k".to_string()),
            ("X-Pusher-Signature", "sig".to_string()),
        ];
        let extra = [
            ("x-pusher-signature".to_string(), "forged".to_string()),
            ("X-Env".to_string(), "prod".to_string()),
        ];
        let request = SinkRequest {
            body: body.clone(),
            signed_headers: &signed,
            extra_headers: &extra,
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel: None,
            attempt: 1,
            answer: None,
        };
        let payload = String::from_utf8(envelope(&request)).unwrap();
        assert_eq!(
            payload,
            format!(
                r#"{{"payload":{},"headers":{{"X-Env":"prod","X-Pusher-Key":"k","X-Pusher-Signature":"sig"}}}}"#,
                std::str::from_utf8(&body).unwrap()
            )
        );
    }

    #[test]
    fn the_overhead_counts_what_the_envelope_adds_for_webhook_headers() {
        let extra = [("X-Env".to_string(), "pr\"od".to_string())];
        let request = SinkRequest {
            body: bytes::Bytes::from_static(b"{}"),
            signed_headers: &[],
            extra_headers: &extra,
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel: None,
            attempt: 1,
            answer: None,
        };
        // `envelope` writes no separator after the last header: one byte spare.
        assert_eq!(envelope(&request).len() + 1, 2 + envelope_overhead(&extra));
        assert_eq!(envelope_overhead(&[]), r#"{"payload":,"headers":{}}"#.len());
    }

    #[test]
    fn fifo_ids_pass_through_or_hash() {
        assert_eq!(fifo_id("private-chat@room;1"), "private-chat@room;1");
        assert_eq!(fifo_id("presence-room-1"), "presence-room-1");
        let long = "c".repeat(164);
        let id = fifo_id(&long);
        assert!(id.starts_with("sha256-") && id.len() == 71, "{id}");
        assert_eq!(id, fifo_id(&long), "stable");
        assert!(fifo_id("with space").starts_with("sha256-"));
        assert_ne!(fifo_id(""), "");
    }

    #[test]
    fn attribute_names_follow_sqs_and_sns_rules() {
        assert_eq!(attribute_name_problem("X-Env.v2"), None);
        assert!(attribute_name_problem("AWS.Trace").unwrap().contains("AWS."));
        assert!(attribute_name_problem("amazon.x").is_some());
        assert!(attribute_name_problem("a..b").is_some());
        assert!(attribute_name_problem(".a").is_some());
        assert!(attribute_name_problem("X~Odd").is_some());
        assert!(attribute_name_problem("").is_some());
        assert!(attribute_name_problem(&"a".repeat(257)).is_some());
    }

    #[test]
    fn group_by_reads_the_request() {
        let request = |channel| SinkRequest {
            body: bytes::Bytes::new(),
            signed_headers: &[],
            extra_headers: &[],
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel,
            attempt: 1,
            answer: None,
        };
        assert_eq!(GroupBy::default(), GroupBy::Webhook);
        assert_eq!(GroupBy::Webhook.value(&request(Some("c"))), "hook");
        assert_eq!(GroupBy::App.value(&request(Some("c"))), "app");
        assert_eq!(GroupBy::Channel.value(&request(Some("c"))), "c");
        assert_eq!(GroupBy::Channel.value(&request(None)), "hook");
        let parsed: GroupBy = serde_json::from_value(serde_json::json!("channel")).unwrap();
        assert_eq!(parsed, GroupBy::Channel);
        assert!(serde_json::from_value::<GroupBy>(serde_json::json!("Channel")).is_err());
    }
}
