//! The sqs webhook's own keys: `sqs_queue_url`, `region`, and the `sqs`
//! object (`region`, `client_options`, `group_by`, `max_body_bytes`).

use hookline_aws_client::{ClientOptions, GroupBy, RegionSources};
use hookline_sink_api::{SinkConfigError, WebhookSpec, object_key, optional_str};
use serde::Deserialize;

/// SQS's classic limit for a message, body and attributes together. SQS
/// accepts up to 1 MiB since 2025; `sqs.max_body_bytes` raises the limit
/// for queues configured for it.
pub const DEFAULT_MESSAGE_LIMIT: usize = 256 * 1024;
/// The largest message SQS accepts at all.
pub const MAX_MESSAGE_LIMIT: usize = 1024 * 1024;

/// A validated sqs webhook target.
#[derive(Clone, PartialEq, Eq)]
pub struct SqsTarget {
    /// The queue URL, passed as `QueueUrl`.
    pub queue_url: String,
    /// The queue's name (the URL's last path segment).
    pub queue_name: String,
    /// The queue's region.
    pub region: String,
    /// Whether the queue is FIFO (its name ends in `.fifo`).
    pub fifo: bool,
    /// FIFO only: where `MessageGroupId` comes from (default: the webhook).
    pub group_by: Option<GroupBy>,
    /// Credentials and endpoint. For a queue URL that is not an AWS one,
    /// the endpoint defaults to the URL's origin.
    pub client_options: ClientOptions,
    /// The largest message, body and attributes together.
    pub max_message_bytes: usize,
}

impl std::fmt::Debug for SqsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsTarget")
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("fifo", &self.fifo)
            .field("group_by", &self.group_by)
            .field(
                "credentials",
                &self.client_options.credentials.as_ref().map(|_| "inline"),
            )
            .field("endpoint", &self.client_options.endpoint)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqsObject {
    region: Option<String>,
    client_options: Option<serde_json::Value>,
    group_by: Option<GroupBy>,
    max_body_bytes: Option<usize>,
}

/// The region an AWS queue URL's host names: `sqs.<region>.amazonaws.com`
/// (also `.amazonaws.com.cn`), the legacy `<region>.queue.amazonaws.com`,
/// and the legacy `queue.amazonaws.com` (us-east-1). `None` for other hosts.
pub fn region_of_aws_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    if rest == "queue" {
        return Some("us-east-1".to_string());
    }
    if let Some(region) = rest.strip_prefix("sqs.") {
        // sqs.<region> or sqs-fips.<region> style hosts carry the region last.
        return Some(region.rsplit('.').next().unwrap_or(region).to_string());
    }
    if let Some(region) = rest.strip_prefix("sqs-fips.") {
        return Some(region.to_string());
    }
    rest.strip_suffix(".queue").map(str::to_string)
}

fn is_valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SqsTarget {
    /// Reads and validates a webhook's sqs keys. No I/O.
    pub fn from_spec(spec: &WebhookSpec) -> Result<Self, SinkConfigError> {
        const EXAMPLE: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/my-queue";
        let queue_url = optional_str(spec, "sqs_queue_url")?
            .filter(|u| !u.is_empty())
            .ok_or_else(|| SinkConfigError::new(format!("`sqs_queue_url` must be a queue URL, e.g. \"{EXAMPLE}\"")))?
            .to_string();
        let url = url::Url::parse(&queue_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                SinkConfigError::new(format!(
                    "`sqs_queue_url` {queue_url:?} is not an http(s) URL; write the queue URL SQS gives, e.g. \"{EXAMPLE}\""
                ))
            })?;
        let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
        let queue_name = match segments.as_slice() {
            [account, name] if !account.is_empty() && is_valid_queue_name(name) => name.to_string(),
            _ => {
                return Err(SinkConfigError::new(format!(
                    "`sqs_queue_url` {queue_url:?} must end in /<account id>/<queue name> (letters, digits, - and _, \
                     up to 80 characters, FIFO names ending in .fifo), e.g. \"{EXAMPLE}\""
                )));
            }
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(SinkConfigError::new(format!(
                "`sqs_queue_url` {queue_url:?} must not have a query string or fragment; write the bare queue URL"
            )));
        }
        let sqs: SqsObject = object_key(spec, "sqs")?.unwrap_or_default();
        let host = url.host_str().unwrap_or_default();
        let url_region = region_of_aws_host(host);
        let region = RegionSources {
            kind: "sqs",
            service: "SQS",
            region: optional_str(spec, "region")?,
            kind_region: sqs.region.as_deref(),
            resource_key: "sqs_queue_url",
            resource: &queue_url,
            resource_region: url_region.as_deref(),
        }
        .resolve()?;
        let mut client_options = ClientOptions::from_value("sqs", sqs.client_options.as_ref())?;
        if client_options.endpoint.is_none() && url_region.is_none() {
            // A local queue (moto, LocalStack, ElasticMQ) is reached where its
            // URL points, not at AWS's regional endpoint.
            client_options.endpoint = Some(url.origin().ascii_serialization());
        }
        let fifo = queue_name.ends_with(".fifo");
        let group_by = match (fifo, sqs.group_by) {
            (false, Some(_)) => {
                return Err(SinkConfigError::new(format!(
                    "`sqs.group_by` applies to FIFO queues only and {queue_name:?} is a standard queue; remove \
                     `sqs.group_by`, or use a queue whose name ends in .fifo"
                )));
            }
            (true, group_by) => Some(group_by.unwrap_or(GroupBy::Webhook)),
            (false, None) => None,
        };
        let max_message_bytes = sqs.max_body_bytes.unwrap_or(DEFAULT_MESSAGE_LIMIT);
        if !(4096..=MAX_MESSAGE_LIMIT).contains(&max_message_bytes) {
            return Err(SinkConfigError::new(format!(
                "`sqs.max_body_bytes` must be between 4096 and {MAX_MESSAGE_LIMIT} (SQS's largest message), \
                 found {max_message_bytes}; leave it out for {DEFAULT_MESSAGE_LIMIT}"
            )));
        }
        Ok(Self {
            queue_url,
            queue_name,
            region,
            fifo,
            group_by,
            client_options,
            max_message_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Result<SqsTarget, SinkConfigError> {
        SqsTarget::from_spec(json.as_object().unwrap())
    }

    fn refusal(json: serde_json::Value) -> String {
        target(json).unwrap_err().message
    }

    #[test]
    fn reads_aws_queue_urls_and_their_region() {
        let t = target(serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"}))
            .unwrap();
        assert_eq!(
            (t.region.as_str(), t.queue_name.as_str(), t.fifo),
            ("eu-west-1", "orders", false)
        );
        assert_eq!(t.client_options.endpoint, None, "AWS queues use AWS's endpoint");
        assert_eq!(t.group_by, None);
        assert_eq!(t.max_message_bytes, DEFAULT_MESSAGE_LIMIT);
        let legacy =
            target(serde_json::json!({"sqs_queue_url": "https://ap-southeast-2.queue.amazonaws.com/1/q.fifo"}))
                .unwrap();
        assert_eq!(legacy.region, "ap-southeast-2");
        assert!(legacy.fifo);
        assert_eq!(
            legacy.group_by,
            Some(GroupBy::Webhook),
            "FIFO groups by webhook by default"
        );
        let oldest = target(serde_json::json!({"sqs_queue_url": "https://queue.amazonaws.com/1/q"})).unwrap();
        assert_eq!(oldest.region, "us-east-1");
        let china =
            target(serde_json::json!({"sqs_queue_url": "https://sqs.cn-north-1.amazonaws.com.cn/1/q"})).unwrap();
        assert_eq!(china.region, "cn-north-1");
    }

    #[test]
    fn local_queues_need_a_region_and_default_their_endpoint() {
        let err = refusal(serde_json::json!({"sqs_queue_url": "http://localhost:4566/000000000000/q"}));
        assert!(err.contains("names no region") && err.contains("`sqs.region`"), "{err}");
        let t = target(
            serde_json::json!({"sqs_queue_url": "http://localhost:4566/000000000000/q",
            "sqs": {"region": "us-east-1", "group_by": null}}),
        )
        .unwrap();
        assert_eq!(t.client_options.endpoint.as_deref(), Some("http://localhost:4566"));
        let t = target(
            serde_json::json!({"sqs_queue_url": "http://localhost:4566/000000000000/q",
            "region": "us-east-1", "sqs": {"client_options": {"endpoint": "http://127.0.0.1:9"}}}),
        )
        .unwrap();
        assert_eq!(t.client_options.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn refuses_bad_urls_and_regions() {
        for (url, expect) in [
            ("sqs.eu-west-1.amazonaws.com/1/q", "not an http(s) URL"),
            ("https://sqs.eu-west-1.amazonaws.com/q", "/<account id>/<queue name>"),
            (
                "https://sqs.eu-west-1.amazonaws.com/1/q/x",
                "/<account id>/<queue name>",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/1/my queue",
                "/<account id>/<queue name>",
            ),
            ("https://sqs.eu-west-1.amazonaws.com/1/q?a=b", "query string"),
        ] {
            let err = refusal(serde_json::json!({"sqs_queue_url": url}));
            assert!(err.contains(expect) && err.contains("sqs_queue_url"), "{url}: {err}");
        }
        let err = refusal(serde_json::json!({"sqs_queue_url": 5}));
        assert!(err.contains("`sqs_queue_url` must be a string"), "{err}");
        let err = refusal(
            serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q", "region": "us-east-1"}),
        );
        assert!(err.contains("disagree"), "{err}");
        let err = refusal(
            serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q",
            "sqs": {"region": "eu-west-2"}}),
        );
        assert!(err.contains("`sqs.region`") && err.contains("disagree"), "{err}");
    }

    #[test]
    fn refuses_bad_sqs_objects() {
        let url = "https://sqs.eu-west-1.amazonaws.com/1/q";
        let err = refusal(serde_json::json!({"sqs_queue_url": url, "sqs": {"group_by": "channel"}}));
        assert!(err.contains("`sqs.group_by` applies to FIFO queues only"), "{err}");
        let err = refusal(
            serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q.fifo",
            "sqs": {"group_by": "user"}}),
        );
        assert!(err.contains("unknown variant `user`") && err.contains("`sqs`"), "{err}");
        let err = refusal(serde_json::json!({"sqs_queue_url": url, "sqs": {"groupBy": "app"}}));
        assert!(err.contains("unknown field `groupBy`"), "{err}");
        let err = refusal(serde_json::json!({"sqs_queue_url": url, "sqs": {"max_body_bytes": 2_000_000}}));
        assert!(err.contains("`sqs.max_body_bytes`"), "{err}");
        let err = refusal(serde_json::json!({"sqs_queue_url": url, "sqs": []}));
        assert!(err.contains("`sqs` must be an object"), "{err}");
        let err = refusal(serde_json::json!({"sqs_queue_url": url,
            "sqs": {"client_options": {"endpoint": "localhost:4566"}}}));
        assert!(err.contains("`sqs.client_options.endpoint`"), "{err}");
        let t = target(
            serde_json::json!({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q.fifo",
            "sqs": {"group_by": "channel", "max_body_bytes": 1048576,
                    "client_options": {"credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRET"}}}}),
        )
        .unwrap();
        assert_eq!(t.group_by, Some(GroupBy::Channel));
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
