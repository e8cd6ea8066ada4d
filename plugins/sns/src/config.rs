//! The sns webhook's own keys: `sns_topic_arn`, `region`, and the `sns`
//! object (`region`, `client_options`, `group_by`).

use hookline_aws_client::{ClientOptions, GroupBy, RegionSources};
use hookline_sink_api::{SinkConfigError, WebhookSpec, object_key, optional_str};
use serde::Deserialize;

/// A validated sns webhook target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsTarget {
    /// The topic's full ARN, passed as `TopicArn`.
    pub topic_arn: String,
    /// The topic's name (the ARN's last field), for `describe()` and errors.
    pub topic_name: String,
    /// The topic's region.
    pub region: String,
    /// Whether the topic is FIFO (its name ends in `.fifo`).
    pub fifo: bool,
    /// `MessageGroupId`'s source on a FIFO topic.
    pub group_by: GroupBy,
    /// Credentials and endpoint override.
    pub client_options: ClientOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnsObject {
    region: Option<String>,
    client_options: Option<serde_json::Value>,
    group_by: Option<GroupBy>,
}

/// The parts of a topic ARN: `arn:<partition>:sns:<region>:<account>:<name>`.
struct TopicArn<'a> {
    region: &'a str,
    name: &'a str,
}

fn parse_topic_arn(arn: &str) -> Result<TopicArn<'_>, SinkConfigError> {
    let refuse = |why: &str| {
        SinkConfigError::new(format!(
            "`sns_topic_arn` {arn:?} {why}; write the topic's ARN, e.g. \
             \"arn:aws:sns:eu-west-1:123456789012:my-topic\" (or \"…:my-topic.fifo\")"
        ))
    };
    let fields: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, name] = fields[..] else {
        return Err(refuse("is not a topic ARN"));
    };
    if prefix != "arn" || partition.is_empty() || service != "sns" {
        return Err(refuse("is not an SNS topic ARN"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse("has no 12-digit account id"));
    }
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    // AWS: 1 to 256 characters, letters, digits, hyphens and underscores,
    // `.fifo` included in the count.
    if base.is_empty()
        || name.len() > 256
        || !base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(refuse(
            "has no valid topic name (1 to 256 letters, digits, `-` or `_`, then `.fifo` for a FIFO topic)",
        ));
    }
    Ok(TopicArn { region, name })
}

impl SnsTarget {
    /// Reads and validates a webhook's sns keys; does no I/O.
    pub fn from_spec(spec: &WebhookSpec) -> Result<Self, SinkConfigError> {
        let topic_arn = optional_str(spec, "sns_topic_arn")?
            .ok_or_else(|| SinkConfigError::new("`sns_topic_arn` must be a topic ARN"))?;
        let arn = parse_topic_arn(topic_arn)?;
        let sns: SnsObject = object_key(spec, "sns")?.unwrap_or_default();
        let region = RegionSources {
            kind: "sns",
            service: "SNS",
            region: optional_str(spec, "region")?,
            kind_region: sns.region.as_deref(),
            resource_key: "sns_topic_arn",
            resource: topic_arn,
            resource_region: Some(arn.region),
        }
        .resolve()?;
        let client_options = ClientOptions::from_value("sns", sns.client_options.as_ref())?;
        let fifo = arn.name.ends_with(".fifo");
        if !fifo && sns.group_by.is_some() {
            return Err(SinkConfigError::new(format!(
                "`sns.group_by` applies to FIFO topics only, and {:?} is not one (its name does not end in \
                 `.fifo`); remove `sns.group_by`",
                arn.name
            )));
        }
        Ok(Self {
            topic_arn: topic_arn.to_string(),
            topic_name: arn.name.to_string(),
            region,
            fifo,
            group_by: sns.group_by.unwrap_or_default(),
            client_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Result<SnsTarget, SinkConfigError> {
        SnsTarget::from_spec(json.as_object().unwrap())
    }

    const ARN: &str = "arn:aws:sns:eu-west-1:123456789012:hooks";

    #[test]
    fn reads_standard_and_fifo_topics() {
        let t = target(serde_json::json!({"sns_topic_arn": ARN})).unwrap();
        assert_eq!(t.region, "eu-west-1");
        assert_eq!(t.topic_name, "hooks");
        assert!(!t.fifo);
        let t = target(serde_json::json!({
            "sns_topic_arn": "arn:aws-cn:sns:cn-north-1:123456789012:hooks_1.fifo", "region": "cn-north-1",
            "sns": {"group_by": "channel", "region": "cn-north-1",
                    "client_options": {"endpoint": "http://127.0.0.1:5000",
                                       "credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRETKEY"}}}
        }))
        .unwrap();
        assert!(t.fifo);
        assert_eq!(t.group_by, GroupBy::Channel);
        assert_eq!(t.client_options.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(
            !format!("{t:?}").contains("SECRETKEY"),
            "credentials never show in Debug"
        );
        let t = target(serde_json::json!({"sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:f.fifo"})).unwrap();
        assert_eq!(t.group_by, GroupBy::Webhook);
    }

    #[test]
    fn refuses_malformed_arns_naming_the_key() {
        for arn in [
            "hooks",
            "arn:aws:sqs:eu-west-1:123456789012:hooks",
            "arn:aws:sns:eu-west-1:1234:hooks",
            "arn:aws:sns:eu-west-1:123456789012:",
            "arn:aws:sns:eu-west-1:123456789012:my.topic",
            "arn:aws:sns:eu-west-1:123456789012:.fifo",
            "https://sns.eu-west-1.amazonaws.com/hooks",
        ] {
            let err = target(serde_json::json!({"sns_topic_arn": arn})).unwrap_err();
            assert!(err.message.starts_with("`sns_topic_arn`"), "{arn}: {err}");
            assert!(err.message.contains("e.g. \"arn:aws:sns:"), "{arn}: {err}");
        }
        let err = target(serde_json::json!({"sns_topic_arn": 5})).unwrap_err();
        assert!(err.message.contains("`sns_topic_arn` must be a string"), "{err}");
    }

    #[test]
    fn the_region_comes_from_the_arn_and_must_agree() {
        let err = target(serde_json::json!({"sns_topic_arn": ARN, "region": "us-east-1"})).unwrap_err();
        assert!(err.message.contains("disagree"), "{err}");
        let err = target(serde_json::json!({"sns_topic_arn": ARN, "sns": {"region": "us-east-1"}})).unwrap_err();
        assert!(err.message.contains("`sns.region`"), "{err}");
        let err = target(serde_json::json!({"sns_topic_arn": "arn:aws:sns:Ireland:123456789012:t"})).unwrap_err();
        assert!(err.message.contains("not an AWS region"), "{err}");
    }

    #[test]
    fn refuses_bad_sns_objects() {
        let err = target(serde_json::json!({"sns_topic_arn": ARN, "sns": {"groupBy": "app"}})).unwrap_err();
        assert!(err.message.contains("unknown field `groupBy`"), "{err}");
        let err =
            target(serde_json::json!({"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:t.fifo", "sns": {"group_by": "user"}}))
                .unwrap_err();
        assert!(
            err.message.contains("`sns`") && err.message.contains("webhook"),
            "{err}"
        );
        let err = target(serde_json::json!({"sns_topic_arn": ARN, "sns": {"group_by": "app"}})).unwrap_err();
        assert!(err.message.contains("FIFO topics only"), "{err}");
        let err = target(serde_json::json!({"sns_topic_arn": ARN, "sns": []})).unwrap_err();
        assert!(err.message.contains("`sns` must be an object"), "{err}");
        let err =
            target(serde_json::json!({"sns_topic_arn": ARN, "sns": {"client_options": {"endpoint": "localhost"}}}))
                .unwrap_err();
        assert!(err.message.contains("`sns.client_options.endpoint`"), "{err}");
    }
}
