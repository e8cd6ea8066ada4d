//! The lambda webhook's own keys, soketi-compatible: `lambda_function`,
//! `region`, and the `lambda` object (`async`, `region`, `client_options`,
//! `max_payload_bytes`).

pub use hookline_aws_client::InlineCredentials;
use hookline_aws_client::{ClientOptions, RegionSources};
use hookline_sink_api::{SinkConfigError, WebhookSpec, object_key, optional_str};
use serde::Deserialize;

/// AWS's limit for an `Event` (asynchronous) invocation payload.
pub const EVENT_PAYLOAD_LIMIT: usize = 1024 * 1024;
/// AWS's limit for a `RequestResponse` (synchronous) invocation payload.
pub const REQUEST_RESPONSE_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// A validated lambda webhook target.
#[derive(Clone, PartialEq, Eq)]
pub struct LambdaTarget {
    /// Name, partial ARN or full ARN (with or without qualifier), passed
    /// through as `FunctionName`.
    pub function: String,
    /// The function's region.
    pub region: String,
    /// `InvocationType=Event` when true, `RequestResponse` otherwise.
    pub asynchronous: bool,
    /// Inline credentials; `None` means the standard AWS chain.
    pub credentials: Option<InlineCredentials>,
    /// Endpoint override (LocalStack, tests).
    pub endpoint: Option<String>,
    /// Largest invocation payload.
    pub max_payload_bytes: usize,
}

impl std::fmt::Debug for LambdaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaTarget")
            .field("function", &self.function)
            .field("region", &self.region)
            .field("asynchronous", &self.asynchronous)
            .field("credentials", &self.credentials.as_ref().map(|_| "inline"))
            .field("endpoint", &self.endpoint)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LambdaObject {
    #[serde(rename = "async", default)]
    asynchronous: Option<bool>,
    region: Option<String>,
    client_options: Option<ClientOptions>,
    max_payload_bytes: Option<usize>,
}

impl LambdaTarget {
    /// Reads and validates a webhook's lambda keys.
    pub fn from_spec(spec: &WebhookSpec) -> Result<Self, SinkConfigError> {
        let function = optional_str(spec, "lambda_function")?
            .filter(|f| !f.is_empty())
            .ok_or_else(|| SinkConfigError::new("`lambda_function` must be a function name or ARN"))?
            .to_string();
        let lambda: LambdaObject = object_key(spec, "lambda")?.unwrap_or_default();
        let region = RegionSources {
            kind: "lambda",
            service: "Lambda",
            region: optional_str(spec, "region")?,
            kind_region: lambda.region.as_deref(),
            resource_key: "lambda_function",
            resource: &function,
            // A function ARN's region is not compared: soketi never did.
            resource_region: None,
        }
        .resolve()?;
        let asynchronous = lambda.asynchronous.unwrap_or(false);
        let options = lambda.client_options.unwrap_or_default();
        options.validate("lambda")?;
        let default_limit = if asynchronous {
            EVENT_PAYLOAD_LIMIT
        } else {
            REQUEST_RESPONSE_PAYLOAD_LIMIT
        };
        let max_payload_bytes = lambda.max_payload_bytes.unwrap_or(default_limit);
        if max_payload_bytes < 1024 {
            return Err(SinkConfigError::new("`lambda.max_payload_bytes` must be at least 1024"));
        }
        Ok(Self {
            function,
            region,
            asynchronous,
            credentials: options.credentials,
            endpoint: options.endpoint,
            max_payload_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Result<LambdaTarget, SinkConfigError> {
        LambdaTarget::from_spec(json.as_object().unwrap())
    }

    #[test]
    fn reads_the_soketi_forms() {
        let page = target(
            serde_json::json!({"lambda_function": "my-function-arn", "region": "us-east-1", "event_types": ["x"]}),
        )
        .unwrap();
        assert_eq!(page.region, "us-east-1");
        assert!(!page.asynchronous);
        assert_eq!(page.max_payload_bytes, REQUEST_RESPONSE_PAYLOAD_LIMIT);
        let soketi = target(serde_json::json!({
            "lambda_function": "arn:aws:lambda:eu-central-1:123456789012:function:f:prod",
            "lambda": {"async": true, "region": "eu-central-1",
                       "client_options": {"credentials": {"accessKeyId": "AK", "secretAccessKey": "SK"}, "maxAttempts": 3}}
        }))
        .unwrap();
        assert!(soketi.asynchronous);
        assert_eq!(soketi.max_payload_bytes, EVENT_PAYLOAD_LIMIT);
        assert_eq!(soketi.credentials.as_ref().unwrap().access_key_id, "AK");
        assert!(!format!("{soketi:?}").contains("SK"), "credentials never show in Debug");
    }

    #[test]
    fn a_missing_region_is_an_error_not_us_east_1() {
        let err = target(serde_json::json!({"lambda_function": "f"})).unwrap_err();
        assert!(err.message.contains("names no region"), "{err}");
        let err = target(
            serde_json::json!({"lambda_function": "f", "region": "eu-west-1", "lambda": {"region": "eu-west-2"}}),
        )
        .unwrap_err();
        assert!(err.message.contains("disagree"), "{err}");
    }

    #[test]
    fn refuses_typos_in_the_lambda_object() {
        let err =
            target(serde_json::json!({"lambda_function": "f", "region": "eu-west-1", "lambda": {"asynch": true}}))
                .unwrap_err();
        assert!(err.message.contains("unknown field `asynch`"), "{err}");
        let err = target(serde_json::json!({"lambda_function": "f", "region": "eu-west-1",
            "lambda": {"client_options": {"credentials": {"accessKeyId": "a", "secretKey": "b"}}}}))
        .unwrap_err();
        assert!(err.message.contains("secretKey"), "{err}");
    }
}
