//! The `sns` sink plugin: a webhook with an `sns_topic_arn` key is
//! delivered by publishing each batch to that Amazon SNS topic (standard or
//! FIFO), one `Publish` per batch.
//!
//! The message is the signed body text, byte for byte; `X-Pusher-Key`,
//! `X-Pusher-Signature`, `X-Hookline-Batch-Id` and `X-Hookline-Batch-Time`
//! (and the webhook's own `headers`, which the signed ones override) are
//! String message attributes, so a subscriber with raw message delivery
//! (an SQS queue, an HTTP endpoint) can verify it with the official Pusher
//! libraries. On a FIFO topic the batch id is the `MessageDeduplicationId`
//! (a split part gets a new batch id, so it is a correct dedupe id for each
//! part) and `sns.group_by` chooses the `MessageGroupId`.

mod config;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::Client;
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;
use hookline_aws_client::{AwsClients, ServiceFailure, attribute_name_problem, classify_sdk_error, fifo_id};
use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};

pub use config::SnsTarget;
pub use hookline_aws_client::GroupBy;

/// SNS's limit for one published message: the message and its attributes
/// (each attribute's name, data type and value) together.
pub const MESSAGE_LIMIT: usize = 256 * 1024;

/// SNS carries at most 10 message attributes to an SQS subscriber with raw
/// delivery; four of them are Hookline's.
pub const MAX_ATTRIBUTES: usize = 10;

/// Room kept in the message limit for the four signed attributes: their
/// names (70 bytes), data types (24) and values (an app key, a 64-digit
/// signature, a batch id and a time).
const SIGNED_ATTRIBUTES_ALLOWANCE: usize = 1024;

/// The data type of every attribute Hookline sets.
const STRING: &str = "String";

/// Builds [`SnsSink`]s for webhooks that carry an `sns_topic_arn`.
#[derive(Debug, Default)]
pub struct SnsSinkPlugin {
    clients: AwsClients<Client>,
}

impl SnsSinkPlugin {
    /// Creates the plugin; does no I/O.
    pub fn new() -> Self {
        Self {
            clients: AwsClients::new(),
        }
    }
}

impl SinkPlugin for SnsSinkPlugin {
    fn kind(&self) -> &'static str {
        "sns"
    }

    fn selector_key(&self) -> &'static str {
        "sns_topic_arn"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "sns"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        let target = SnsTarget::from_spec(spec)?;
        let client = self.clients.get(&target.region, &target.client_options, Client::new);
        Ok(Box::new(SnsSink { client, target }))
    }
}

/// Publishes to one topic.
pub struct SnsSink {
    client: Arc<Client>,
    target: SnsTarget,
}

impl std::fmt::Debug for SnsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Sink for SnsSink {
    fn describe(&self) -> String {
        format!("sns:{}@{}", self.target.topic_name, self.target.region)
    }

    fn check_headers(&self, headers: &[(String, String)]) -> Result<(), SinkConfigError> {
        // The four signed headers every message carries, values aside.
        let signed = [
            "X-Pusher-Key",
            "X-Pusher-Signature",
            "X-Hookline-Batch-Id",
            "X-Hookline-Batch-Time",
        ]
        .map(|name| (name, "-".to_string()));
        attributes(headers, &signed)
            .map(|_| ())
            .map_err(|e| SinkConfigError::new(e.to_string()))
    }

    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize> {
        let extra: usize = extra_headers
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| attribute_size(name, value))
            .sum();
        Some(MESSAGE_LIMIT.saturating_sub(extra + SIGNED_ATTRIBUTES_ALLOWANCE))
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn batches_per_channel(&self) -> bool {
        self.target.fifo && self.target.group_by == GroupBy::Channel
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let message = std::str::from_utf8(&request.body)
                .map_err(|_| DeliveryError::Final("the batch body is not UTF-8 text, which SNS requires".into()))?;
            let attributes = attributes(request.extra_headers, request.signed_headers)?;
            let size = message.len()
                + attributes
                    .iter()
                    .map(|(name, value)| attribute_size(name, value))
                    .sum::<usize>();
            if size > MESSAGE_LIMIT {
                return Err(DeliveryError::TooLarge(format!(
                    "message of {size} bytes with its attributes is over SNS's limit of {MESSAGE_LIMIT} bytes"
                )));
            }
            let mut publish = self.client.publish().topic_arn(&self.target.topic_arn).message(message);
            for (name, value) in attributes {
                let value = MessageAttributeValue::builder()
                    .data_type(STRING)
                    .string_value(value)
                    .build()
                    .map_err(|e| DeliveryError::Final(format!("message attribute {name:?}: {e}")))?;
                publish = publish.message_attributes(name, value);
            }
            if self.target.fifo {
                let batch_id = signed_value(&request, "X-Hookline-Batch-Id");
                let group = self.target.group_by.value(&request);
                publish = publish
                    .message_deduplication_id(fifo_id(batch_id))
                    .message_group_id(fifo_id(group));
            }
            match publish.send().await {
                Ok(_) => Ok(()),
                Err(error) => Err(classify_sdk_error(error, "Publish", |failure| self.classify(failure))),
            }
        })
    }
}

impl SnsSink {
    /// Maps SNS's own error answers; never reads message text.
    fn classify(&self, failure: ServiceFailure<PublishError>) -> DeliveryError {
        let arn = &self.target.topic_arn;
        let code = failure.code.as_deref().unwrap_or("unknown error");
        match &failure.error {
            PublishError::NotFoundException(_) => DeliveryError::Final(format!(
                "{code}: the topic {arn} does not exist; create it or fix `sns_topic_arn`"
            )),
            PublishError::AuthorizationErrorException(_) | PublishError::InvalidSecurityException(_) => {
                DeliveryError::Final(format!(
                    "{code}: not allowed to publish to {arn}; grant sns:Publish on it to these credentials"
                ))
            }
            PublishError::KmsAccessDeniedException(_)
            | PublishError::KmsDisabledException(_)
            | PublishError::KmsInvalidStateException(_)
            | PublishError::KmsNotFoundException(_)
            | PublishError::KmsOptInRequired(_) => DeliveryError::Final(format!(
                "{code}: the KMS key encrypting {arn} cannot be used; check the key and its policy"
            )),
            PublishError::KmsThrottlingException(_) => DeliveryError::Throttled { retry_after: None },
            PublishError::InvalidParameterException(_)
            | PublishError::InvalidParameterValueException(_)
            | PublishError::ValidationException(_)
            | PublishError::EndpointDisabledException(_)
            | PublishError::PlatformApplicationDisabledException(_) => {
                DeliveryError::Final(format!("{code}: {arn} refused the message (status {})", failure.status))
            }
            PublishError::InternalErrorException(_) => {
                DeliveryError::Transient(format!("{code} (status {})", failure.status))
            }
            _ => failure.default_outcome(arn),
        }
    }
}

/// The message attributes of one request: the webhook's headers first
/// (those with empty values left out, as SNS refuses empty attribute
/// values), then the signed ones, which replace a webhook header of the
/// same name (case-insensitively).
fn attributes<'a>(
    extra_headers: &'a [(String, String)],
    signed_headers: &'a [(&'static str, String)],
) -> Result<Vec<(&'a str, &'a str)>, DeliveryError> {
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + signed_headers.len());
    for (name, value) in extra_headers {
        if value.is_empty()
            || signed_headers
                .iter()
                .any(|(signed, _)| signed.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if attribute_name_problem(name).is_some() {
            return Err(DeliveryError::Final(format!(
                "the webhook header {name:?} cannot be an SNS message attribute name (letters, digits, `_`, `-` \
                 and `.`, not starting with `AWS.` or `Amazon.`); rename or remove it in the webhook's `headers`"
            )));
        }
        out.push((name, value));
    }
    for (name, value) in signed_headers {
        out.push((name, value));
    }
    if out.len() > MAX_ATTRIBUTES {
        return Err(DeliveryError::Final(format!(
            "{} message attributes, where SNS delivers at most {MAX_ATTRIBUTES} ({} of them Hookline's); keep at \
             most {} entries in the webhook's `headers`",
            out.len(),
            signed_headers.len(),
            MAX_ATTRIBUTES - signed_headers.len()
        )));
    }
    Ok(out)
}

/// How much an attribute counts towards the message limit.
fn attribute_size(name: &str, value: &str) -> usize {
    name.len() + STRING.len() + value.len()
}

fn signed_value<'a>(request: &'a SinkRequest<'_>, name: &str) -> &'a str {
    request
        .signed_headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(signed: &'a [(&'static str, String)], extra: &'a [(String, String)]) -> SinkRequest<'a> {
        SinkRequest {
            body: bytes::Bytes::from_static(br#"{"time_ms":1,"events":[]}"#),
            signed_headers: signed,
            extra_headers: extra,
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel: None,
            attempt: 1,
            answer: None,
        }
    }

    fn signed() -> Vec<(&'static str, String)> {
        vec![
            ("X-Pusher-Key", "k".to_string()),
            ("X-Pusher-Signature", "sig".to_string()),
            ("X-Hookline-Batch-Id", "b-1".to_string()),
            ("X-Hookline-Batch-Time", "1".to_string()),
        ]
    }

    #[test]
    fn signed_attributes_win_and_empty_headers_are_left_out() {
        let signed = signed();
        let extra = [
            ("x-pusher-signature".to_string(), "forged".to_string()),
            ("X-Env".to_string(), "prod".to_string()),
            ("X-Empty".to_string(), String::new()),
        ];
        let request = request(&signed, &extra);
        assert_eq!(
            attributes(request.extra_headers, request.signed_headers).unwrap(),
            [
                ("X-Env", "prod"),
                ("X-Pusher-Key", "k"),
                ("X-Pusher-Signature", "sig"),
                ("X-Hookline-Batch-Id", "b-1"),
                ("X-Hookline-Batch-Time", "1")
            ]
        );
    }

    #[test]
    fn too_many_or_misnamed_headers_are_final_and_say_what_to_do() {
        let signed = signed();
        let extra: Vec<(String, String)> = (0..7).map(|i| (format!("X-H{i}"), "v".to_string())).collect();
        let err = attributes(&extra, &signed).unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Final(m) if m.contains("at most 6 entries")),
            "{err}"
        );
        let extra = [("X~Odd".to_string(), "v".to_string())];
        let err = attributes(&extra, &signed).unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Final(m) if m.contains("\"X~Odd\"")),
            "{err}"
        );
    }

    #[test]
    fn headers_no_publish_could_carry_are_refused_at_load() {
        let spec = serde_json::json!({"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"});
        let sink = SnsSinkPlugin::new().build(spec.as_object().unwrap()).unwrap();
        let six: Vec<(String, String)> = (0..6).map(|i| (format!("X-H{i}"), "v".to_string())).collect();
        assert!(sink.check_headers(&six).is_ok());
        let seven: Vec<(String, String)> = (0..7).map(|i| (format!("X-H{i}"), "v".to_string())).collect();
        let err = sink.check_headers(&seven).unwrap_err();
        assert!(err.message.contains("at most 6 entries"), "{err}");
        let odd = [("X~Odd".to_string(), "v".to_string())];
        assert!(sink.check_headers(&odd).is_err());
    }

    #[test]
    fn describes_without_credentials_and_limits_the_body() {
        let plugin = SnsSinkPlugin::new();
        let spec = serde_json::json!({"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:t.fifo",
            "sns": {"group_by": "channel", "client_options": {"credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRETKEY"}}}});
        let sink = plugin.build(spec.as_object().unwrap()).unwrap();
        assert_eq!(sink.describe(), "sns:t.fifo@eu-west-1");
        assert!(!format!("{sink:?}").contains("SECRETKEY"));
        assert!(sink.batches_per_channel());
        let limit = sink.max_body_bytes(&[]).unwrap();
        assert_eq!(limit, MESSAGE_LIMIT - SIGNED_ATTRIBUTES_ALLOWANCE);
        let with_header = sink
            .max_body_bytes(&[("X-Env".to_string(), "prod".to_string())])
            .unwrap();
        assert_eq!(with_header, limit - ("X-Env".len() + 6 + 4));
        let spec = serde_json::json!({"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"});
        assert!(!plugin.build(spec.as_object().unwrap()).unwrap().batches_per_channel());
    }
}
