//! The `lambda` sink plugin: a webhook with a `lambda_function` key is
//! delivered by invoking that AWS Lambda function, as soketi's "AWS Lambda
//! trigger" does — but with the signature in the payload, inline or chained
//! credentials, one client per distinct (region, credentials, endpoint),
//! and every retry left to Hookline's policy.
//!
//! The payload is `{"payload": <the signed body>, "headers": {<webhook
//! headers>, "X-Pusher-Key", "X-Pusher-Signature", "X-Hookline-Batch-Id",
//! "X-Hookline-Batch-Time"}}`. The body is inserted as the exact signed
//! bytes, so `JSON.stringify(event.payload)` in the function reproduces them.

mod config;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use hookline_aws_client::{
    AwsClients, ClientOptions, ServiceFailure, classify_sdk_error, envelope, envelope_overhead, retry_after_seconds,
};
use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};

pub use config::{EVENT_PAYLOAD_LIMIT, InlineCredentials, LambdaTarget, REQUEST_RESPONSE_PAYLOAD_LIMIT};

/// Room kept in the payload limit for the envelope's signed headers
/// (key, signature, batch id and time, and their names).
const SIGNED_HEADERS_ALLOWANCE: usize = 1024;

/// Builds [`LambdaSink`]s for webhooks that carry a `lambda_function`.
#[derive(Debug, Default)]
pub struct LambdaSinkPlugin {
    /// One client per distinct (region, credentials, endpoint), on one
    /// shared connection pool.
    clients: AwsClients<Client>,
}

impl LambdaSinkPlugin {
    /// Creates the plugin and its shared HTTP client.
    pub fn new() -> Self {
        Self {
            clients: AwsClients::new(),
        }
    }

    fn client_for(&self, target: &LambdaTarget) -> Arc<Client> {
        let options = ClientOptions {
            credentials: target.credentials.clone(),
            endpoint: target.endpoint.clone(),
        };
        self.clients.get(&target.region, &options, Client::new)
    }
}

impl SinkPlugin for LambdaSinkPlugin {
    fn kind(&self) -> &'static str {
        "lambda"
    }

    fn selector_key(&self) -> &'static str {
        "lambda_function"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "lambda"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        let target = LambdaTarget::from_spec(spec)?;
        let client = self.client_for(&target);
        Ok(Box::new(LambdaSink { client, target }))
    }
}

/// Invokes one function.
pub struct LambdaSink {
    client: Arc<Client>,
    target: LambdaTarget,
}

impl std::fmt::Debug for LambdaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Sink for LambdaSink {
    fn describe(&self) -> String {
        format!("lambda:{}@{}", self.target.function, self.target.region)
    }

    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize> {
        let envelope = envelope_overhead(extra_headers) + SIGNED_HEADERS_ALLOWANCE;
        Some(self.target.max_payload_bytes.saturating_sub(envelope))
    }

    fn default_timeout(&self) -> Duration {
        if self.target.asynchronous {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(120)
        }
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let payload = envelope(&request);
            if payload.len() > self.target.max_payload_bytes {
                return Err(DeliveryError::TooLarge(format!(
                    "invocation payload of {} bytes is over the limit of {} bytes",
                    payload.len(),
                    self.target.max_payload_bytes
                )));
            }
            let invocation_type = if self.target.asynchronous {
                InvocationType::Event
            } else {
                InvocationType::RequestResponse
            };
            let result = self
                .client
                .invoke()
                .function_name(&self.target.function)
                .invocation_type(invocation_type)
                .payload(Blob::new(payload))
                .send()
                .await;
            match result {
                Ok(output) => {
                    if let Some(kind) = output.function_error() {
                        let detail = output
                            .payload()
                            .map(|p| String::from_utf8_lossy(&p.as_ref()[..p.as_ref().len().min(512)]).into_owned())
                            .unwrap_or_default();
                        return Err(DeliveryError::Transient(format!("function error ({kind}): {detail}")));
                    }
                    let expected = if self.target.asynchronous { 202 } else { 200 };
                    if output.status_code() == expected {
                        Ok(())
                    } else {
                        Err(DeliveryError::Transient(format!(
                            "Invoke answered {} where {expected} was expected",
                            output.status_code()
                        )))
                    }
                }
                Err(error) => Err(classify(error, &self.target.function)),
            }
        })
    }
}

/// Maps the SDK's typed errors to delivery outcomes; never reads messages.
fn classify(error: SdkError<InvokeError>, function: &str) -> DeliveryError {
    classify_sdk_error(error, "Invoke", |failure: ServiceFailure<InvokeError>| {
        let code = failure.code.clone().unwrap_or_else(|| "unknown error".to_string());
        match &failure.error {
            InvokeError::TooManyRequestsException(e) => DeliveryError::Throttled {
                retry_after: retry_after_seconds(e.retry_after_seconds()),
            },
            InvokeError::RequestTooLargeException(_) => DeliveryError::TooLarge("RequestTooLargeException".to_string()),
            InvokeError::ResourceNotFoundException(_) => DeliveryError::Final(format!(
                "ResourceNotFoundException: the function {function:?} does not exist"
            )),
            InvokeError::ResourceConflictException(_)
            | InvokeError::ResourceNotReadyException(_)
            | InvokeError::ServiceException(_)
            | InvokeError::Ec2ThrottledException(_)
            | InvokeError::Ec2UnexpectedException(_)
            | InvokeError::EniLimitReachedException(_)
            | InvokeError::SubnetIpAddressLimitReachedException(_)
            | InvokeError::SnapStartNotReadyException(_)
            | InvokeError::SnapStartTimeoutException(_)
            | InvokeError::EfsMountConnectivityException(_)
            | InvokeError::EfsMountTimeoutException(_)
            | InvokeError::RecursiveInvocationException(_) => DeliveryError::Transient(code),
            _ => match failure.status {
                429 => DeliveryError::Throttled { retry_after: None },
                500..=599 => DeliveryError::Transient(code),
                status => DeliveryError::Final(format!("{code} (status {status})")),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limit_leaves_room_for_the_envelope() {
        let plugin = LambdaSinkPlugin::new();
        let spec =
            serde_json::json!({"lambda_function": "f", "region": "eu-west-1", "lambda": {"max_payload_bytes": 10000}});
        let sink = plugin.build(spec.as_object().unwrap()).unwrap();
        let limit = sink.max_body_bytes(&[]).unwrap();
        assert!(limit < 10000 - SIGNED_HEADERS_ALLOWANCE && limit > 8000, "{limit}");
        assert_eq!(sink.describe(), "lambda:f@eu-west-1");
    }

    #[test]
    fn clients_are_shared_per_region_credentials_and_endpoint() {
        let plugin = LambdaSinkPlugin::new();
        let target = |region: &str, key: &str| {
            LambdaTarget::from_spec(
                serde_json::json!({"lambda_function": "f", "region": region,
                    "lambda": {"client_options": {"credentials": {"accessKeyId": key, "secretAccessKey": "s"}}}})
                .as_object()
                .unwrap(),
            )
            .unwrap()
        };
        let a = plugin.client_for(&target("eu-west-1", "A"));
        let b = plugin.client_for(&target("eu-west-1", "A"));
        let c = plugin.client_for(&target("eu-west-1", "B"));
        let d = plugin.client_for(&target("us-east-1", "A"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
    }
}
