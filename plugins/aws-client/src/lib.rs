//! What every Hookline AWS sink (lambda, sqs, sns, eventbridge) shares, so
//! that each sink crate only knows its own service:
//!
//! * [`ClientOptions`] and [`InlineCredentials`]: the soketi-compatible
//!   `<kind>.client_options` object (`credentials`, `endpoint`; other keys,
//!   which soketi hands to the AWS JS SDK, are ignored);
//! * [`RegionSources`]: the one region of a webhook, from `region`,
//!   `<kind>.region` and the region written in the resource's URL or ARN,
//!   which must agree;
//! * [`AwsClients`]: one service client per distinct (region, endpoint,
//!   credentials), all on one rustls (ring) connection pool, with the SDK's
//!   own retries disabled because Hookline's retry policy owns every
//!   attempt, and the standard credential chain built lazily (building it is
//!   asynchronous, `SinkPlugin::build` is not, and `hookline check` must not
//!   touch the network);
//! * [`classify_sdk_error`]: the SDK's transport-level error variants as
//!   [`DeliveryError`]s, leaving only the service's own errors to the sink;
//! * [`GroupBy`], [`fifo_id`] and [`attribute_name_problem`]: FIFO group and
//!   deduplication ids and message attribute names, as SQS and SNS take them;
//! * [`envelope`], [`envelope_overhead`] and [`json_string`]: the `{"payload", "headers"}` JSON the
//!   lambda and eventbridge sinks send.
//!
//! Nothing here reads error message text: outcomes follow the SDK's typed
//! variants, HTTP statuses and AWS error codes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::RetryConfig;
use hookline_sink_api::{DeliveryError, SinkConfigError, json_type_name, serde_error_without_values};
use serde::Deserialize;
use tokio::sync::OnceCell;

mod message;

pub use message::{GroupBy, attribute_name_problem, envelope, envelope_overhead, fifo_id, json_string};

/// `<kind>.client_options.credentials`, named as soketi (the AWS JS SDK)
/// names them. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineCredentials {
    /// The access key id.
    #[serde(rename = "accessKeyId")]
    pub access_key_id: String,
    /// The secret access key. Never logged.
    #[serde(rename = "secretAccessKey")]
    pub secret_access_key: String,
    /// An optional session token. Never logged.
    #[serde(rename = "sessionToken", default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for InlineCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineCredentials(***)")
    }
}

/// `<kind>.client_options`: soketi passes this object to the AWS JS SDK;
/// Hookline reads the credentials and the endpoint and ignores the rest
/// (`maxAttempts` and the like: Hookline's `retry` owns retries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClientOptions {
    /// Inline credentials; `None` means the standard AWS chain.
    #[serde(default)]
    pub credentials: Option<InlineCredentials>,
    /// An endpoint override (LocalStack, moto, a VPC endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl ClientOptions {
    /// Reads `<kind>.client_options` from its JSON value (absent or null:
    /// the defaults) and validates it; errors name the key path.
    pub fn from_value(kind: &str, value: Option<&serde_json::Value>) -> Result<Self, SinkConfigError> {
        let options = match value {
            None | Some(serde_json::Value::Null) => Self::default(),
            Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value.clone()).map_err(|e| {
                SinkConfigError::new(format!("`{kind}.client_options`: {}", serde_error_without_values(&e)))
            })?,
            Some(other) => {
                return Err(SinkConfigError::new(format!(
                    "`{kind}.client_options` must be an object, found {}",
                    json_type_name(other)
                )));
            }
        };
        options.validate(kind)?;
        Ok(options)
    }

    /// Checks what serde cannot: non-empty credentials, an http(s) endpoint.
    pub fn validate(&self, kind: &str) -> Result<(), SinkConfigError> {
        if let Some(credentials) = &self.credentials
            && (credentials.access_key_id.is_empty() || credentials.secret_access_key.is_empty())
        {
            return Err(SinkConfigError::new(format!(
                "`{kind}.client_options.credentials` needs a non-empty `accessKeyId` and `secretAccessKey` \
                 (or leave `credentials` out to use the standard AWS chain)"
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            let valid = url::Url::parse(endpoint)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if valid.is_none() {
                return Err(SinkConfigError::new(format!(
                    "`{kind}.client_options.endpoint` {endpoint:?} must be an http:// or https:// URL, \
                     e.g. \"http://localhost:4566\""
                )));
            }
        }
        Ok(())
    }
}

/// Where a webhook may name its region. They must agree; the resource's
/// own region (an AWS URL's host, an ARN's fourth field) counts as one.
#[derive(Debug, Clone, Copy)]
pub struct RegionSources<'a> {
    /// The sink kind, for key paths in errors (`"sqs"`).
    pub kind: &'a str,
    /// The service's name, for errors (`"SQS"`).
    pub service: &'a str,
    /// The webhook's top-level `region`.
    pub region: Option<&'a str>,
    /// `<kind>.region`.
    pub kind_region: Option<&'a str>,
    /// The selector key, for errors (`"sqs_queue_url"`).
    pub resource_key: &'a str,
    /// The selector's value, for errors.
    pub resource: &'a str,
    /// The region written in the resource, when it has one.
    pub resource_region: Option<&'a str>,
}

impl RegionSources<'_> {
    /// The webhook's region, or an error naming the keys at fault.
    pub fn resolve(&self) -> Result<String, SinkConfigError> {
        let kind = self.kind;
        let named = [
            ("region".to_string(), self.region),
            (format!("{kind}.region"), self.kind_region),
            (
                format!("{} {:?}", self.resource_key, self.resource),
                self.resource_region,
            ),
        ];
        let mut found: Option<(&str, &str)> = None;
        for (key, value) in &named {
            let Some(value) = value else { continue };
            if !is_region_shaped(value) {
                return Err(SinkConfigError::new(format!(
                    "`{key}` {value:?} is not an AWS region; write one like \"eu-west-1\""
                )));
            }
            match found {
                Some((first_key, first)) if first != *value => {
                    return Err(SinkConfigError::new(format!(
                        "`{first_key}` ({first}) and `{key}` ({value}) disagree; keep one region"
                    )));
                }
                Some(_) => {}
                None => found = Some((key, value)),
            }
        }
        match found {
            Some((_, region)) => Ok(region.to_string()),
            None => Err(SinkConfigError::new(format!(
                "the {} webhook for {:?} names no region; set `region` (or `{kind}.region`), e.g. \"us-east-1\"",
                self.service, self.resource
            ))),
        }
    }
}

/// Whether `s` looks like an AWS region (`eu-west-1`, `us-gov-west-1`,
/// `cn-north-1`): lowercase words joined by hyphens, ending in a number.
/// Unknown but well-shaped regions pass (new regions, local emulators).
pub fn is_region_shaped(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What distinguishes two clients.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    endpoint: Option<String>,
    credentials: Option<InlineCredentials>,
}

/// A cache of service clients `C`, one per distinct (region, endpoint,
/// credentials), sharing one HTTP connection pool. Entries are weak: a
/// client goes away with the last sink using it.
pub struct AwsClients<C> {
    http: SharedHttpClient,
    clients: Mutex<HashMap<ClientKey, Weak<C>>>,
}

impl<C> std::fmt::Debug for AwsClients<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClients").finish_non_exhaustive()
    }
}

impl<C> Default for AwsClients<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> AwsClients<C> {
    /// Creates an empty cache and its HTTP client (rustls with ring, the
    /// same TLS stack as the http sink). Does no I/O.
    pub fn new() -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        Self {
            http,
            clients: Mutex::default(),
        }
    }

    /// The client for this region and these options, built by `build` from
    /// an [`SdkConfig`] when none is cached (for instance
    /// `aws_sdk_sqs::Client::new`). Does no I/O.
    pub fn get(&self, region: &str, options: &ClientOptions, build: impl FnOnce(&SdkConfig) -> C) -> Arc<C> {
        let key = ClientKey {
            region: region.to_string(),
            endpoint: options.endpoint.clone(),
            credentials: options.credentials.clone(),
        };
        let mut clients = self.clients.lock().expect("clients lock is never held across a panic");
        if let Some(client) = clients.get(&key).and_then(Weak::upgrade) {
            return client;
        }
        clients.retain(|_, weak| weak.strong_count() > 0);
        let client = Arc::new(build(&self.sdk_config(region, options)));
        clients.insert(key, Arc::downgrade(&client));
        client
    }

    /// The SDK configuration a client for this region and these options is
    /// built from: shared HTTP client, SDK retries disabled, inline
    /// credentials or the lazily built standard chain, endpoint override.
    pub fn sdk_config(&self, region: &str, options: &ClientOptions) -> SdkConfig {
        let credentials = match &options.credentials {
            Some(c) => SharedCredentialsProvider::new(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "hookline-app-file",
            )),
            None => SharedCredentialsProvider::new(StandardChain::new(region.to_string(), self.http.clone())),
        };
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            .http_client(self.http.clone())
            // Hookline's retry policy owns every attempt.
            .retry_config(RetryConfig::disabled());
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder.build()
    }
}

/// The standard AWS credential chain (environment, shared files with
/// `AWS_PROFILE`, web identity, container and instance roles), resolved on
/// first use because building it is asynchronous and `build` is not.
#[derive(Debug)]
struct StandardChain {
    region: String,
    http: SharedHttpClient,
    chain: OnceCell<Option<SharedCredentialsProvider>>,
}

impl StandardChain {
    fn new(region: String, http: SharedHttpClient) -> Self {
        Self {
            region,
            http,
            chain: OnceCell::new(),
        }
    }
}

impl ProvideCredentials for StandardChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| async {
                    let config = aws_config::defaults(BehaviorVersion::latest())
                        .region(Region::new(self.region.clone()))
                        .http_client(self.http.clone())
                        // The chain's own calls (IMDS, STS) may retry: they
                        // are not deliveries.
                        .retry_config(RetryConfig::standard())
                        .load()
                        .await;
                    config.credentials_provider()
                })
                .await;
            match chain {
                Some(chain) => chain.provide_credentials().await,
                None => Err(aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "the standard AWS credential chain found no provider",
                )),
            }
        })
    }
}

/// A service's own error answer, handed to the sink's classifier by
/// [`classify_sdk_error`].
#[derive(Debug)]
pub struct ServiceFailure<E> {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The AWS error code (`"ThrottlingException"`), when the answer had one.
    pub code: Option<String>,
    /// The SDK's typed error.
    pub error: E,
}

impl<E> ServiceFailure<E> {
    /// The outcome for an error the sink has no specific rule for: a
    /// throttling code or 429 is [`DeliveryError::Throttled`], 413 is
    /// [`DeliveryError::TooLarge`], other 5xx are transient, anything else
    /// is final. `resource` names the target in the final error's text.
    pub fn default_outcome(&self, resource: &str) -> DeliveryError {
        let code = self.code.as_deref().unwrap_or("unknown error");
        if self.code.as_deref().is_some_and(is_throttling_code) || self.status == 429 {
            return DeliveryError::Throttled { retry_after: None };
        }
        match self.status {
            413 => DeliveryError::TooLarge(format!("{code} (status 413)")),
            500..=599 => DeliveryError::Transient(format!("{code} (status {})", self.status)),
            status => DeliveryError::Final(format!("{code} (status {status}) for {resource}")),
        }
    }
}

/// AWS error codes that mean "slow down", as the AWS SDKs' retry
/// classifiers list them, plus SQS's and KMS's own.
pub const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "KmsThrottled",
    "KMS.ThrottlingException",
];

/// Whether an AWS error code is a throttling one (see [`THROTTLING_CODES`]).
/// Query-protocol codes may come prefixed (`AWS.SimpleQueueService.…`):
/// the last dotted part is compared too.
pub fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
        || code
            .rsplit('.')
            .next()
            .is_some_and(|last| THROTTLING_CODES.contains(&last))
}

/// Maps an SDK error to a delivery outcome: timeouts and dispatch failures
/// are retried (`Timeout`, `Connect`), an unreadable answer is retried, a
/// request that could not be built or signed (credentials the chain could
/// not load, say) is `Transient` so a passing credential outage does not
/// dead-letter, and the service's own errors go to `service`. `operation`
/// (`"SendMessage"`) names the call in texts.
pub fn classify_sdk_error<E>(
    error: SdkError<E, HttpResponse>,
    operation: &str,
    service: impl FnOnce(ServiceFailure<E>) -> DeliveryError,
) -> DeliveryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::TimeoutError(_) => DeliveryError::Timeout,
        SdkError::DispatchFailure(failure) => {
            if failure.is_timeout() {
                DeliveryError::Timeout
            } else {
                let detail = failure
                    .as_connector_error()
                    .map(|e| DisplayErrorContext(e).to_string())
                    .unwrap_or_else(|| "dispatch failure".to_string());
                DeliveryError::Connect(format!("{operation}: {detail}"))
            }
        }
        SdkError::ResponseError(e) => {
            DeliveryError::Connect(format!("{operation}: unreadable answer (status {})", e.raw().status()))
        }
        SdkError::ConstructionFailure(e) => DeliveryError::Transient(format!(
            "the {operation} request could not be built or signed (are credentials available?): {}",
            DisplayErrorContext(&SdkError::<E, HttpResponse>::ConstructionFailure(e))
        )),
        SdkError::ServiceError(failure) => {
            let status = failure.raw().status().as_u16();
            let error = failure.into_err();
            let code = error.code().map(str::to_string);
            service(ServiceFailure { status, code, error })
        }
        other => DeliveryError::Connect(format!("{operation}: {}", DisplayErrorContext(&other))),
    }
}

/// A `retry_after` for [`DeliveryError::Throttled`] from a service's
/// "seconds" string, when it is a whole number.
pub fn retry_after_seconds(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_options_errors_name_the_key_path() {
        let err =
            ClientOptions::from_value("sqs", Some(&serde_json::json!({"endpoint": "localhost:4566"}))).unwrap_err();
        assert!(err.message.contains("`sqs.client_options.endpoint`"), "{err}");
        let err = ClientOptions::from_value(
            "sns",
            Some(&serde_json::json!({"credentials": {"accessKeyId": "", "secretAccessKey": "s"}})),
        )
        .unwrap_err();
        assert!(err.message.contains("`sns.client_options.credentials`"), "{err}");
        let err = ClientOptions::from_value("sqs", Some(&serde_json::json!("x"))).unwrap_err();
        assert!(err.message.contains("must be an object"), "{err}");
        let ok = ClientOptions::from_value(
            "sqs",
            Some(
                &serde_json::json!({"endpoint": "http://127.0.0.1:5000", "maxAttempts": 3,
                "credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRET"}}),
            ),
        )
        .unwrap();
        assert!(!format!("{ok:?}").contains("SECRET"));
    }

    fn sources<'a>(region: Option<&'a str>, nested: Option<&'a str>, resource: Option<&'a str>) -> RegionSources<'a> {
        RegionSources {
            kind: "sqs",
            service: "SQS",
            region,
            kind_region: nested,
            resource_key: "sqs_queue_url",
            resource: "http://localhost/1/q",
            resource_region: resource,
        }
    }

    #[test]
    fn regions_must_agree_and_exist() {
        assert_eq!(sources(None, None, Some("eu-west-1")).resolve().unwrap(), "eu-west-1");
        assert_eq!(
            sources(Some("eu-west-1"), Some("eu-west-1"), Some("eu-west-1"))
                .resolve()
                .unwrap(),
            "eu-west-1"
        );
        let err = sources(Some("eu-west-1"), None, Some("us-east-1"))
            .resolve()
            .unwrap_err();
        assert!(
            err.message.contains("disagree") && err.message.contains("sqs_queue_url"),
            "{err}"
        );
        let err = sources(None, Some("us-east-2"), Some("us-east-1"))
            .resolve()
            .unwrap_err();
        assert!(err.message.contains("`sqs.region`"), "{err}");
        let err = sources(None, None, None).resolve().unwrap_err();
        assert!(
            err.message.contains("names no region") && err.message.contains("`sqs.region`"),
            "{err}"
        );
        let err = sources(Some("Ireland"), None, None).resolve().unwrap_err();
        assert!(err.message.contains("not an AWS region"), "{err}");
        assert!(is_region_shaped("us-gov-west-1") && is_region_shaped("cn-north-1"));
        assert!(!is_region_shaped("eu-west") && !is_region_shaped("EU-WEST-1") && !is_region_shaped(""));
    }

    #[test]
    fn clients_are_shared_per_region_credentials_and_endpoint() {
        let clients: AwsClients<SdkConfig> = AwsClients::new();
        let options = |key: &str| ClientOptions {
            credentials: Some(InlineCredentials {
                access_key_id: key.to_string(),
                secret_access_key: "s".to_string(),
                session_token: None,
            }),
            endpoint: None,
        };
        let a = clients.get("eu-west-1", &options("A"), SdkConfig::clone);
        let b = clients.get("eu-west-1", &options("A"), SdkConfig::clone);
        let c = clients.get("eu-west-1", &options("B"), SdkConfig::clone);
        let d = clients.get("us-east-1", &options("A"), SdkConfig::clone);
        let mut local = options("A");
        local.endpoint = Some("http://127.0.0.1:1".to_string());
        let e = clients.get("eu-west-1", &local, SdkConfig::clone);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
        assert!(!Arc::ptr_eq(&a, &e));
        assert_eq!(e.endpoint_url(), Some("http://127.0.0.1:1"));
        assert_eq!(d.region().map(|r| r.as_ref()), Some("us-east-1"));
    }

    #[test]
    fn throttling_codes() {
        assert!(is_throttling_code("ThrottlingException"));
        assert!(is_throttling_code("AWS.SimpleQueueService.RequestThrottled"));
        assert!(is_throttling_code("KmsThrottled"));
        assert!(!is_throttling_code("AccessDenied"));
    }
}
