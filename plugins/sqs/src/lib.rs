//! The `sqs` sink plugin: a webhook with a `sqs_queue_url` key is
//! delivered by sending one SQS message per batch.
//!
//! The message body is the exact signed body (the `{"time_ms", "events"}`
//! JSON text), so a consumer verifies `X-Pusher-Signature` over the body it
//! receives. The Pusher and Hookline headers travel as String message
//! attributes (`X-Pusher-Key`, `X-Pusher-Signature`, `X-Hookline-Batch-Id`,
//! `X-Hookline-Batch-Time`), with the webhook's own `headers` beside them
//! (the signed ones win, compared case-insensitively).
//!
//! On a FIFO queue (a name ending in `.fifo`) the batch id is the
//! `MessageDeduplicationId` — a batch re-sent after a crash, within SQS's
//! five-minute window, is dropped by SQS — and `MessageGroupId` follows
//! `sqs.group_by` (the webhook's id by default).

mod config;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::send_message::SendMessageError;
use aws_sdk_sqs::types::MessageAttributeValue;
use hookline_aws_client::{
    AwsClients, ServiceFailure, attribute_name_problem, classify_sdk_error, fifo_id, is_throttling_code,
};
use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};

pub use config::{DEFAULT_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT, SqsTarget, region_of_aws_host};
pub use hookline_aws_client::GroupBy;

/// SQS's limit on message attributes per message.
pub const MAX_ATTRIBUTES: usize = 10;

/// The attributes Hookline always sets, which leaves this many for the
/// webhook's own `headers`.
pub const MAX_WEBHOOK_HEADERS: usize = MAX_ATTRIBUTES - 4;

/// The data type of every attribute, counted in the message size.
const STRING_TYPE: &str = "String";

/// Room kept in the message limit for the signed attributes (names, type,
/// key, signature, batch id and time): their names and types take 94 bytes,
/// the signature 64, the batch id and time under 64; the rest is the key's.
const SIGNED_ATTRIBUTES_ALLOWANCE: usize = 512;

/// Builds [`SqsSink`]s for webhooks that carry a `sqs_queue_url`.
#[derive(Debug, Default)]
pub struct SqsSinkPlugin {
    /// One client per distinct (region, credentials, endpoint), on one
    /// shared connection pool.
    clients: AwsClients<Client>,
}

impl SqsSinkPlugin {
    /// Creates the plugin and its shared HTTP client. Does no I/O.
    pub fn new() -> Self {
        Self {
            clients: AwsClients::new(),
        }
    }
}

impl SinkPlugin for SqsSinkPlugin {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    fn selector_key(&self) -> &'static str {
        "sqs_queue_url"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "sqs"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        let target = SqsTarget::from_spec(spec)?;
        let client = self.clients.get(&target.region, &target.client_options, Client::new);
        Ok(Box::new(SqsSink { client, target }))
    }
}

/// Sends batches to one queue.
pub struct SqsSink {
    client: Arc<Client>,
    target: SqsTarget,
}

impl std::fmt::Debug for SqsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The message attributes of a request, webhook headers first, then the
/// signed ones, which replace webhook headers of the same name.
fn attributes<'a>(request: &'a SinkRequest<'a>) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = webhook_headers(request.extra_headers, request.signed_headers).collect();
    out.extend(request.signed_headers.iter().map(|(k, v)| (*k, v.as_str())));
    out
}

/// The webhook headers that are not replaced by a signed header, those
/// with empty values left out (SQS refuses an empty attribute value).
fn webhook_headers<'a>(
    extra: &'a [(String, String)],
    signed: &'a [(&'static str, String)],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    extra
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .filter(move |(name, _)| !signed.iter().any(|(s, _)| s.eq_ignore_ascii_case(name)))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Why these webhook headers cannot all travel as SQS attributes, if so.
fn headers_problem(extra: &[(String, String)], signed: &[(&'static str, String)]) -> Option<String> {
    let headers: Vec<(&str, &str)> = webhook_headers(extra, signed).collect();
    if headers.len() > MAX_WEBHOOK_HEADERS {
        return Some(format!(
            "the webhook's `headers` hold {} headers and SQS allows {MAX_ATTRIBUTES} message attributes, 4 of which \
             Hookline sets (X-Pusher-Key, X-Pusher-Signature, X-Hookline-Batch-Id, X-Hookline-Batch-Time); keep at \
             most {MAX_WEBHOOK_HEADERS} headers on an sqs webhook",
            headers.len()
        ));
    }
    headers.iter().find_map(|(name, _)| {
        attribute_name_problem(name).map(|why| {
            format!("the webhook header `{name}` cannot be an SQS message attribute: its name {why}; rename it")
        })
    })
}

/// The size SQS counts for attributes: name, data type and value of each.
fn attributes_size<'a>(attributes: impl Iterator<Item = (&'a str, &'a str)>) -> usize {
    attributes
        .map(|(name, value)| name.len() + STRING_TYPE.len() + value.len())
        .sum()
}

impl SqsSink {
    fn group_id(&self, request: &SinkRequest<'_>) -> Option<String> {
        let value = self.target.group_by?.value(request);
        Some(fifo_id(value))
    }

    /// Maps the SDK's typed errors to delivery outcomes; never reads messages.
    fn classify(&self, error: SdkError<SendMessageError>) -> DeliveryError {
        let queue = &self.target.queue_url;
        classify_sdk_error(error, "SendMessage", |failure: ServiceFailure<SendMessageError>| {
            let code = failure.code.clone().unwrap_or_else(|| "unknown error".to_string());
            let missing = || {
                DeliveryError::Final(format!(
                    "{code}: the queue {queue} does not exist; create it or correct `sqs_queue_url`"
                ))
            };
            match &failure.error {
                SendMessageError::RequestThrottled(_) | SendMessageError::KmsThrottled(_) => {
                    DeliveryError::Throttled { retry_after: None }
                }
                SendMessageError::QueueDoesNotExist(_) => missing(),
                SendMessageError::KmsAccessDenied(_)
                | SendMessageError::KmsDisabled(_)
                | SendMessageError::KmsInvalidKeyUsage(_)
                | SendMessageError::KmsInvalidState(_)
                | SendMessageError::KmsNotFound(_)
                | SendMessageError::KmsOptInRequired(_) => DeliveryError::Final(format!(
                    "{code}: the KMS key encrypting the queue {queue} cannot be used; fix the key or the queue's \
                     encryption settings"
                )),
                SendMessageError::InvalidAddress(_)
                | SendMessageError::InvalidMessageContents(_)
                | SendMessageError::InvalidSecurity(_)
                | SendMessageError::UnsupportedOperation(_) => {
                    DeliveryError::Final(format!("{code}: SQS refused the message for the queue {queue}"))
                }
                _ => match code.as_str() {
                    c if is_throttling_code(c) => DeliveryError::Throttled { retry_after: None },
                    "QueueDoesNotExist" | "NonExistentQueue" | "AWS.SimpleQueueService.NonExistentQueue" => missing(),
                    "AccessDenied"
                    | "AccessDeniedException"
                    | "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "UnrecognizedClientException"
                    | "IncompleteSignature"
                    | "MissingAuthenticationToken"
                    | "ExpiredToken"
                    | "InvalidSecurity" => DeliveryError::Final(format!(
                        "{code}: access to the queue {queue} was denied; check the credentials and that they may \
                         sqs:SendMessage to it"
                    )),
                    "MessageTooLong" | "AWS.SimpleQueueService.MessageTooLong" | "BatchRequestTooLong" => {
                        DeliveryError::TooLarge(format!("{code} (queue {queue})"))
                    }
                    "InvalidParameterValue"
                    | "InvalidParameterCombination"
                    | "MissingParameter"
                    | "InvalidAttributeName"
                    | "InvalidAttributeValue"
                    | "InvalidMessageContents"
                    | "ValidationError"
                    | "MalformedInput"
                    | "UnsupportedOperation" => DeliveryError::Final(format!(
                        "{code}: SQS refused the message for the queue {queue} (a queue MaximumMessageSize below \
                         `sqs.max_body_bytes` is refused this way: lower `sqs.max_body_bytes` to match)"
                    )),
                    _ => failure.default_outcome(&format!("the queue {queue}")),
                },
            }
        })
    }
}

impl Sink for SqsSink {
    fn describe(&self) -> String {
        format!("sqs:{}@{}", self.target.queue_name, self.target.region)
    }

    fn check_headers(&self, headers: &[(String, String)]) -> Result<(), SinkConfigError> {
        headers_problem(headers, &[]).map_or(Ok(()), |problem| Err(SinkConfigError::new(problem)))
    }

    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize> {
        let extra = attributes_size(
            extra_headers
                .iter()
                .filter(|(name, _)| {
                    ![
                        "X-Pusher-Key",
                        "X-Pusher-Signature",
                        "X-Hookline-Batch-Id",
                        "X-Hookline-Batch-Time",
                    ]
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(name))
                })
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        Some(
            self.target
                .max_message_bytes
                .saturating_sub(extra + SIGNED_ATTRIBUTES_ALLOWANCE),
        )
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn batches_per_channel(&self) -> bool {
        self.target.group_by == Some(GroupBy::Channel)
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if let Some(problem) = headers_problem(request.extra_headers, request.signed_headers) {
                return Err(DeliveryError::Final(problem));
            }
            let attributes = attributes(&request);
            let size = request.body.len() + attributes_size(attributes.iter().copied());
            if size > self.target.max_message_bytes {
                return Err(DeliveryError::TooLarge(format!(
                    "a message of {size} bytes (body and attributes) is over the queue's limit of {} bytes",
                    self.target.max_message_bytes
                )));
            }
            let body = String::from_utf8(request.body.to_vec())
                .map_err(|_| DeliveryError::Final("the signed body is not UTF-8 text, which SQS requires".into()))?;
            let mut send = self
                .client
                .send_message()
                .queue_url(&self.target.queue_url)
                .message_body(body);
            for (name, value) in attributes {
                let value = MessageAttributeValue::builder()
                    .data_type(STRING_TYPE)
                    .string_value(value)
                    .build()
                    .map_err(|e| DeliveryError::Final(format!("attribute {name}: {e}")))?;
                send = send.message_attributes(name, value);
            }
            if self.target.fifo {
                let batch_id = request
                    .signed_headers
                    .iter()
                    .find(|(name, _)| *name == "X-Hookline-Batch-Id")
                    .map(|(_, id)| id.as_str())
                    .unwrap_or_default();
                send = send
                    .message_deduplication_id(fifo_id(batch_id))
                    .set_message_group_id(self.group_id(&request));
            }
            match send.send().await {
                Ok(_) => Ok(()),
                Err(error) => Err(self.classify(error)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: serde_json::Value) -> Result<Box<dyn Sink>, SinkConfigError> {
        SqsSinkPlugin::new().build(json.as_object().unwrap())
    }

    fn signed() -> Vec<(&'static str, String)> {
        vec![
            ("X-Pusher-Key", "key".to_string()),
            ("X-Pusher-Signature", "0".repeat(64)),
            ("X-Hookline-Batch-Id", "0123456789abcdef-1".to_string()),
            ("X-Hookline-Batch-Time", "1700000000000".to_string()),
        ]
    }

    #[test]
    fn describes_the_queue_without_credentials() {
        let sink = build(
            serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/orders.fifo",
            "sqs": {"group_by": "channel", "client_options": {"credentials":
                {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "SECRET"}}}}),
        )
        .unwrap();
        assert_eq!(sink.describe(), "sqs:orders.fifo@eu-west-1");
        assert!(sink.batches_per_channel());
        let debug = format!("{sink:?}");
        assert!(!debug.contains("SECRET") && !debug.contains("AKIDEXAMPLE"), "{debug}");
        let standard = build(serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"})).unwrap();
        assert!(!standard.batches_per_channel());
        let by_app = build(
            serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q.fifo",
            "sqs": {"group_by": "app"}}),
        )
        .unwrap();
        assert!(!by_app.batches_per_channel());
    }

    #[test]
    fn body_limit_counts_attributes() {
        let sink = build(serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"})).unwrap();
        let bare = sink.max_body_bytes(&[]).unwrap();
        assert_eq!(bare, DEFAULT_MESSAGE_LIMIT - SIGNED_ATTRIBUTES_ALLOWANCE);
        let with = sink
            .max_body_bytes(&[("X-Env".to_string(), "production".to_string())])
            .unwrap();
        assert_eq!(bare - with, "X-Env".len() + "String".len() + "production".len());
        // The signed attributes fit the allowance with a long key.
        let mut long_key = signed();
        long_key[0].1 = "k".repeat(200);
        assert!(attributes_size(long_key.iter().map(|(k, v)| (*k, v.as_str()))) < SIGNED_ATTRIBUTES_ALLOWANCE);
    }

    #[test]
    fn signed_headers_win_and_headers_are_checked() {
        let signed = signed();
        let extra = vec![
            ("x-pusher-signature".to_string(), "forged".to_string()),
            ("X-Env".to_string(), "prod".to_string()),
            ("X-Empty".to_string(), String::new()),
        ];
        let request = SinkRequest {
            body: bytes::Bytes::from_static(b"{}"),
            signed_headers: &signed,
            extra_headers: &extra,
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel: None,
            attempt: 1,
            answer: None,
        };
        let attributes = attributes(&request);
        assert_eq!(attributes.len(), 5);
        assert_eq!(attributes[0], ("X-Env", "prod"));
        assert!(!attributes.iter().any(|(_, v)| *v == "forged"));
        assert!(
            !attributes.iter().any(|(k, _)| *k == "X-Empty"),
            "SQS refuses empty values"
        );
        assert_eq!(headers_problem(&extra, &signed), None);
        let many: Vec<(String, String)> = (0..7).map(|i| (format!("X-H{i}"), "v".to_string())).collect();
        let problem = headers_problem(&many, &signed).unwrap();
        assert!(problem.contains("keep at most 6"), "{problem}");
        let bad = vec![("X-Odd!".to_string(), "v".to_string())];
        assert!(headers_problem(&bad, &signed).unwrap().contains("`X-Odd!`"));
        let aws = vec![("AWS.Trace".to_string(), "v".to_string())];
        assert!(headers_problem(&aws, &signed).unwrap().contains("AWS."));
    }
}
