//! The eventbridge webhook's own keys: `eventbridge_bus`, `region`, and the
//! `eventbridge` object (`region`, `client_options`, `detail_type`,
//! `source`).

use hookline_aws_client::{ClientOptions, RegionSources};
use hookline_sink_api::{SinkConfigError, WebhookSpec, object_key, optional_str};
use serde::Deserialize;

/// The `DetailType` of every entry unless `eventbridge.detail_type` says otherwise.
pub const DEFAULT_DETAIL_TYPE: &str = "pusher.webhook";
/// The `Source` of every entry unless `eventbridge.source` says otherwise.
pub const DEFAULT_SOURCE: &str = "hookline";

/// A validated eventbridge webhook target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBridgeTarget {
    /// The bus as written (a name or an ARN), passed as `EventBusName`.
    pub bus: String,
    /// The bus's name (an ARN's part after `event-bus/`), for `describe()`.
    pub bus_name: String,
    /// The bus's region.
    pub region: String,
    /// Every entry's `DetailType`.
    pub detail_type: String,
    /// Every entry's `Source`.
    pub source: String,
    /// Credentials and endpoint override.
    pub client_options: ClientOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBridgeObject {
    region: Option<String>,
    client_options: Option<serde_json::Value>,
    detail_type: Option<String>,
    source: Option<String>,
}

/// A bus name as AWS allows it: 1 to 256 of letters, digits, `.`, `-`,
/// `_` and `/` (partner event buses are named `aws.partner/…`).
fn is_bus_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// The (name, region) of a bus given by name or by
/// `arn:<partition>:events:<region>:<account>:event-bus/<name>`.
fn parse_bus(bus: &str) -> Result<(&str, Option<&str>), SinkConfigError> {
    let example = "write a bus name (\"default\", \"my-bus\") or its ARN, e.g. \
                   \"arn:aws:events:eu-west-1:123456789012:event-bus/my-bus\"";
    if bus.starts_with("arn:") {
        let fields: Vec<&str> = bus.splitn(6, ':').collect();
        let [_, partition, service, region, account, resource] = fields[..] else {
            return Err(SinkConfigError::new(format!(
                "`eventbridge_bus` {bus:?} is not an event bus ARN; {example}"
            )));
        };
        let name = resource.strip_prefix("event-bus/").unwrap_or_default();
        if partition.is_empty()
            || service != "events"
            || account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
            || !is_bus_name(name)
        {
            return Err(SinkConfigError::new(format!(
                "`eventbridge_bus` {bus:?} is not an event bus ARN; {example}"
            )));
        }
        return Ok((name, Some(region)));
    }
    if !is_bus_name(bus) {
        return Err(SinkConfigError::new(format!(
            "`eventbridge_bus` {bus:?} is not a bus name (1 to 256 letters, digits, `.`, `-`, `_` or `/`); {example}"
        )));
    }
    Ok((bus, None))
}

impl EventBridgeTarget {
    /// Reads and validates a webhook's eventbridge keys; does no I/O.
    pub fn from_spec(spec: &WebhookSpec) -> Result<Self, SinkConfigError> {
        let bus = optional_str(spec, "eventbridge_bus")?
            .ok_or_else(|| SinkConfigError::new("`eventbridge_bus` must be a bus name or ARN"))?;
        let (bus_name, arn_region) = parse_bus(bus)?;
        let object: EventBridgeObject = object_key(spec, "eventbridge")?.unwrap_or_default();
        let region = RegionSources {
            kind: "eventbridge",
            service: "EventBridge",
            region: optional_str(spec, "region")?,
            kind_region: object.region.as_deref(),
            resource_key: "eventbridge_bus",
            resource: bus,
            resource_region: arn_region,
        }
        .resolve()?;
        let client_options = ClientOptions::from_value("eventbridge", object.client_options.as_ref())?;
        let detail_type = object.detail_type.unwrap_or_else(|| DEFAULT_DETAIL_TYPE.to_string());
        if detail_type.trim().is_empty() {
            return Err(SinkConfigError::new(format!(
                "`eventbridge.detail_type` must not be empty; leave it out for {DEFAULT_DETAIL_TYPE:?}"
            )));
        }
        let source = object.source.unwrap_or_else(|| DEFAULT_SOURCE.to_string());
        if source.trim().is_empty() {
            return Err(SinkConfigError::new(format!(
                "`eventbridge.source` must not be empty; leave it out for {DEFAULT_SOURCE:?}"
            )));
        }
        if source.to_ascii_lowercase().starts_with("aws.") {
            return Err(SinkConfigError::new(format!(
                "`eventbridge.source` {source:?} starts with `aws.`, which AWS keeps for its own services; \
                 choose another, e.g. \"hookline\" or \"com.example.pusher\""
            )));
        }
        Ok(Self {
            bus: bus.to_string(),
            bus_name: bus_name.to_string(),
            region,
            detail_type,
            source,
            client_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Result<EventBridgeTarget, SinkConfigError> {
        EventBridgeTarget::from_spec(json.as_object().unwrap())
    }

    #[test]
    fn reads_names_and_arns() {
        let t = target(serde_json::json!({"eventbridge_bus": "default", "region": "eu-west-1"})).unwrap();
        assert_eq!((t.bus_name.as_str(), t.region.as_str()), ("default", "eu-west-1"));
        assert_eq!(t.detail_type, DEFAULT_DETAIL_TYPE);
        assert_eq!(t.source, DEFAULT_SOURCE);
        let t = target(serde_json::json!({
            "eventbridge_bus": "arn:aws:events:us-east-2:123456789012:event-bus/orders",
            "eventbridge": {"detail_type": "member", "source": "com.example.pusher",
                            "client_options": {"endpoint": "http://127.0.0.1:5000",
                                               "credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRETKEY"}}}
        }))
        .unwrap();
        assert_eq!((t.bus_name.as_str(), t.region.as_str()), ("orders", "us-east-2"));
        assert_eq!(t.bus, "arn:aws:events:us-east-2:123456789012:event-bus/orders");
        assert_eq!(
            (t.detail_type.as_str(), t.source.as_str()),
            ("member", "com.example.pusher")
        );
        assert!(
            !format!("{t:?}").contains("SECRETKEY"),
            "credentials never show in Debug"
        );
        let t = target(
            serde_json::json!({"eventbridge_bus": "aws.partner/saas.com/1/x", "eventbridge": {"region": "eu-west-1"}}),
        )
        .unwrap();
        assert_eq!(t.region, "eu-west-1");
    }

    #[test]
    fn refuses_malformed_buses_naming_the_key() {
        for bus in [
            "",
            "my bus",
            "arn:aws:sqs:eu-west-1:123456789012:q",
            "arn:aws:events:eu-west-1:123456789012:rule/r",
            "arn:aws:events:eu-west-1:1:event-bus/b",
            "https://events.eu-west-1.amazonaws.com/",
        ] {
            let err = target(serde_json::json!({"eventbridge_bus": bus, "region": "eu-west-1"})).unwrap_err();
            assert!(err.message.starts_with("`eventbridge_bus`"), "{bus}: {err}");
            assert!(err.message.contains("event-bus/my-bus"), "{bus}: {err}");
        }
    }

    #[test]
    fn a_name_needs_a_region_and_an_arn_brings_one() {
        let err = target(serde_json::json!({"eventbridge_bus": "b"})).unwrap_err();
        assert!(
            err.message.contains("names no region") && err.message.contains("`eventbridge.region`"),
            "{err}"
        );
        let err = target(serde_json::json!({
            "eventbridge_bus": "arn:aws:events:us-east-2:123456789012:event-bus/b", "region": "eu-west-1"}))
        .unwrap_err();
        assert!(err.message.contains("disagree"), "{err}");
    }

    #[test]
    fn refuses_bad_eventbridge_objects() {
        let spec = |object: serde_json::Value| serde_json::json!({"eventbridge_bus": "b", "region": "eu-west-1", "eventbridge": object});
        let err = target(spec(serde_json::json!({"detailType": "x"}))).unwrap_err();
        assert!(err.message.contains("unknown field `detailType`"), "{err}");
        let err = target(spec(serde_json::json!({"detail_type": ""}))).unwrap_err();
        assert!(
            err.message.contains("`eventbridge.detail_type` must not be empty"),
            "{err}"
        );
        let err = target(spec(serde_json::json!({"source": " "}))).unwrap_err();
        assert!(err.message.contains("`eventbridge.source` must not be empty"), "{err}");
        let err = target(spec(serde_json::json!({"source": "aws.events"}))).unwrap_err();
        assert!(err.message.contains("keeps for its own services"), "{err}");
        let err = target(spec(serde_json::json!({"source": 3}))).unwrap_err();
        assert!(err.message.contains("`eventbridge`"), "{err}");
        let err = target(spec(serde_json::json!("x"))).unwrap_err();
        assert!(err.message.contains("`eventbridge` must be an object"), "{err}");
        let err = target(spec(serde_json::json!({"client_options": {"endpoint": "ftp://x"}}))).unwrap_err();
        assert!(err.message.contains("`eventbridge.client_options.endpoint`"), "{err}");
    }
}
