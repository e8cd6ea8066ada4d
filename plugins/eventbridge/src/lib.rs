//! The `eventbridge` sink plugin: a webhook with an `eventbridge_bus` key is
//! delivered by putting each batch on that Amazon EventBridge bus, one
//! `PutEvents` entry per batch.
//!
//! EventBridge has no message attributes, so the signature travels in the
//! event's `Detail`, which is the same envelope the lambda sink sends:
//! `{"payload": <the signed body object>, "headers": {<webhook headers>,
//! "X-Pusher-Key", "X-Pusher-Signature", "X-Hookline-Batch-Id",
//! "X-Hookline-Batch-Time"}}`. The body is inserted as its exact signed
//! bytes, and it is already in `JSON.stringify`'s form, so a consumer that
//! receives the event parsed (a Lambda target, a queue consumer after
//! `JSON.parse`) gets the signed bytes back with
//! `JSON.stringify(event.detail.payload)`, even though EventBridge parses
//! and re-serialises `Detail` on the way; rules can match on
//! `detail.payload.events.name`.
//!
//! `PutEvents` answers 200 even when the entry failed: the entry's result is
//! checked, and only an entry with an event id counts as delivered.

mod config;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::operation::put_events::{PutEventsError, PutEventsOutput};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use hookline_aws_client::{
    AwsClients, ServiceFailure, classify_sdk_error, envelope, envelope_overhead, is_throttling_code,
};
use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};

pub use config::{DEFAULT_DETAIL_TYPE, DEFAULT_SOURCE, EventBridgeTarget};

/// EventBridge's limit for one `PutEvents` entry, measured as AWS does: the
/// UTF-8 bytes of `Source`, `DetailType` and `Detail` (and of `Time` and
/// `Resources`, which Hookline does not set).
pub const ENTRY_LIMIT: usize = 256 * 1024;

/// Room kept in the entry limit for the four signed headers in the
/// envelope (names, values and JSON punctuation).
const SIGNED_HEADERS_ALLOWANCE: usize = 1024;

/// Builds [`EventBridgeSink`]s for webhooks that carry an `eventbridge_bus`.
#[derive(Debug, Default)]
pub struct EventBridgeSinkPlugin {
    clients: AwsClients<Client>,
}

impl EventBridgeSinkPlugin {
    /// Creates the plugin; does no I/O.
    pub fn new() -> Self {
        Self {
            clients: AwsClients::new(),
        }
    }
}

impl SinkPlugin for EventBridgeSinkPlugin {
    fn kind(&self) -> &'static str {
        "eventbridge"
    }

    fn selector_key(&self) -> &'static str {
        "eventbridge_bus"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "eventbridge"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        let target = EventBridgeTarget::from_spec(spec)?;
        let client = self.clients.get(&target.region, &target.client_options, Client::new);
        Ok(Box::new(EventBridgeSink { client, target }))
    }
}

/// Puts events on one bus.
pub struct EventBridgeSink {
    client: Arc<Client>,
    target: EventBridgeTarget,
}

impl std::fmt::Debug for EventBridgeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Sink for EventBridgeSink {
    fn describe(&self) -> String {
        format!("eventbridge:{}@{}", self.target.bus_name, self.target.region)
    }

    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize> {
        let envelope = envelope_overhead(extra_headers) + SIGNED_HEADERS_ALLOWANCE;
        let fixed = self.target.source.len() + self.target.detail_type.len();
        Some(ENTRY_LIMIT.saturating_sub(envelope + fixed))
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let detail = String::from_utf8(envelope(&request)).map_err(|_| {
                DeliveryError::Final("the batch body is not UTF-8 text, which EventBridge requires".into())
            })?;
            let size = self.target.source.len() + self.target.detail_type.len() + detail.len();
            if size > ENTRY_LIMIT {
                return Err(DeliveryError::TooLarge(format!(
                    "event entry of {size} bytes is over EventBridge's limit of {ENTRY_LIMIT} bytes"
                )));
            }
            let entry = PutEventsRequestEntry::builder()
                .event_bus_name(&self.target.bus)
                .source(&self.target.source)
                .detail_type(&self.target.detail_type)
                .detail(detail)
                .build();
            match self.client.put_events().entries(entry).send().await {
                Ok(output) => self.check_entry(&output),
                Err(error) => Err(classify_sdk_error(error, "PutEvents", |failure| self.classify(failure))),
            }
        })
    }
}

impl EventBridgeSink {
    /// The outcome of the one entry of a 200 answer: delivered only when it
    /// has an event id and no error code.
    fn check_entry(&self, output: &PutEventsOutput) -> Result<(), DeliveryError> {
        let bus = &self.target.bus;
        let Some(entry) = output.entries().first() else {
            return Err(DeliveryError::Transient(format!(
                "PutEvents answered without an entry result for {bus}"
            )));
        };
        match entry.error_code() {
            None if output.failed_entry_count() == 0 && entry.event_id().is_some() => Ok(()),
            None => Err(DeliveryError::Transient(format!(
                "PutEvents answered FailedEntryCount {} without an error code or event id for {bus}",
                output.failed_entry_count()
            ))),
            Some(code) if is_throttling_code(code) => Err(DeliveryError::Throttled { retry_after: None }),
            Some("InternalFailure" | "InternalException") => Err(DeliveryError::Transient(format!(
                "the entry failed with {code} on {bus}",
                code = entry.error_code().unwrap_or_default()
            ))),
            Some(code) => Err(DeliveryError::Final(format!(
                "the entry failed with {code} on the event bus {bus}{}",
                entry
                    .error_message()
                    .map(|m| format!(": {}", truncate(m, 300)))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Maps the whole call's error answers; never reads message text.
    fn classify(&self, failure: ServiceFailure<PutEventsError>) -> DeliveryError {
        let bus = &self.target.bus;
        let code = failure.code.as_deref().unwrap_or("unknown error");
        if let PutEventsError::InternalException(_) = &failure.error {
            return DeliveryError::Transient(format!("{code} (status {})", failure.status));
        }
        match code {
            "ResourceNotFoundException" => DeliveryError::Final(format!(
                "{code}: the event bus {bus} does not exist in {}; create it or fix `eventbridge_bus`",
                self.target.region
            )),
            "AccessDeniedException" | "NotAuthorizedForSourceException" => DeliveryError::Final(format!(
                "{code}: not allowed to put events on {bus}; grant events:PutEvents on it to these credentials"
            )),
            _ => failure.default_outcome(bus),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;

    fn sink() -> EventBridgeSink {
        let plugin = EventBridgeSinkPlugin::new();
        let target = EventBridgeTarget::from_spec(
            serde_json::json!({"eventbridge_bus": "arn:aws:events:eu-west-1:123456789012:event-bus/b",
                "eventbridge": {"client_options": {"credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRETKEY"}}}})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let client = plugin.clients.get(&target.region, &target.client_options, Client::new);
        EventBridgeSink { client, target }
    }

    #[test]
    fn describes_without_credentials_and_limits_the_entry() {
        let sink = sink();
        assert_eq!(sink.describe(), "eventbridge:b@eu-west-1");
        assert!(!format!("{sink:?}").contains("SECRETKEY"));
        let limit = sink.max_body_bytes(&[]).unwrap();
        let fixed = DEFAULT_SOURCE.len() + DEFAULT_DETAIL_TYPE.len() + r#"{"payload":,"headers":{}}"#.len();
        assert_eq!(limit, ENTRY_LIMIT - fixed - SIGNED_HEADERS_ALLOWANCE);
    }

    fn answer(failed: i32, entry: PutEventsResultEntry) -> PutEventsOutput {
        PutEventsOutput::builder()
            .failed_entry_count(failed)
            .entries(entry)
            .build()
    }

    #[test]
    fn a_failed_entry_in_a_200_answer_is_not_delivered() {
        let sink = sink();
        let ok = PutEventsResultEntry::builder().event_id("e-1").build();
        assert!(sink.check_entry(&answer(0, ok)).is_ok());
        let failed = |code: &str| {
            sink.check_entry(&answer(
                1,
                PutEventsResultEntry::builder()
                    .error_code(code)
                    .error_message("why")
                    .build(),
            ))
            .unwrap_err()
        };
        assert!(matches!(
            failed("ThrottlingException"),
            DeliveryError::Throttled { retry_after: None }
        ));
        assert!(matches!(failed("InternalFailure"), DeliveryError::Transient(_)));
        let err = failed("NotAuthorizedForSourceException");
        assert!(
            matches!(&err, DeliveryError::Final(m) if m.contains("event-bus/b") && m.contains("NotAuthorizedForSourceException")),
            "{err}"
        );
        let no_id = PutEventsResultEntry::builder().build();
        assert!(matches!(
            sink.check_entry(&answer(1, no_id)),
            Err(DeliveryError::Transient(_))
        ));
        assert!(matches!(
            sink.check_entry(&PutEventsOutput::builder().failed_entry_count(0).build()),
            Err(DeliveryError::Transient(_))
        ));
    }
}
