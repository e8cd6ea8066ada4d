//! A webhook as an app file writes it: the keys the engine reads, each
//! typed, and the rest — the sink plugin's keys — kept for the plugin.
//!
//! Every key is a [`Field`], which takes any JSON value: a value of the
//! wrong type is kept to be reported with its key, not a reason to stop
//! reading. So one load reports every problem of a webhook, and
//! `app::build_webhook` checks what the types cannot say (non-empty, at
//! least 1, valid header values) with messages that name the key.

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

use super::app::{ChannelFilter, Ordering, RetryOverride};

/// One key of a definition as written.
#[derive(Debug, Default)]
pub(super) enum Field<T> {
    /// Not there, or `null`.
    #[default]
    Absent,
    /// A value of the expected type.
    Valid(T),
    /// Another value, and what reading it said.
    Invalid { found: Value, error: String },
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Null => Self::Absent,
            found => match T::deserialize(&found) {
                Ok(value) => Self::Valid(value),
                Err(error) => Self::Invalid {
                    found,
                    error: error.to_string(),
                },
            },
        })
    }
}

/// A webhook's `filters`: a chain of WASM filters, or (as soketi's own
/// documentation writes it) the channel filter under the plural name.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum FiltersKey {
    /// `[{"wasm": "…", …}, …]`, read entry by entry (`app::filter_specs`).
    Chain(Vec<Value>),
    /// `{"channel_name_starts_with": …}`.
    Channel(Map<String, Value>),
}

/// A webhook's `rate_limit` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitKey {
    pub(super) per_second: f64,
    pub(super) burst: Option<u64>,
}

/// One webhook of an app file.
#[derive(Debug, serde::Deserialize)]
pub(super) struct WebhookDefinition {
    /// Its id; defaults to the target.
    #[serde(default)]
    pub(super) id: Field<String>,
    /// The event names it receives.
    #[serde(default)]
    pub(super) event_types: Field<Vec<String>>,
    /// soketi's channel filter.
    #[serde(default)]
    pub(super) filter: Field<ChannelFilter>,
    /// WASM filters, or the channel filter (see [`FiltersKey`]).
    #[serde(default)]
    pub(super) filters: Field<FiltersKey>,
    /// Extra headers: names to strings (or numbers).
    #[serde(default)]
    pub(super) headers: Field<Map<String, Value>>,
    /// Attempt timeout.
    #[serde(default)]
    pub(super) timeout_ms: Field<u64>,
    /// Over the app's retry policy.
    #[serde(default)]
    pub(super) retry: Field<RetryOverride>,
    /// Batches in flight at once.
    #[serde(default)]
    pub(super) max_in_flight: Field<u64>,
    /// `none` or `strict`.
    #[serde(default)]
    pub(super) ordering: Field<Ordering>,
    /// `{"per_second", "burst"}`.
    #[serde(default)]
    pub(super) rate_limit: Field<RateLimitKey>,
    /// Whether an HTTP delivery carries its attempt's `traceparent`.
    #[serde(default)]
    pub(super) traceparent: Field<bool>,
    /// Every other key: the sink plugin's (`url`, `lambda_function`, …), and
    /// any unknown one, which is warned about.
    #[serde(flatten)]
    pub(super) target: Map<String, Value>,
}

impl WebhookDefinition {
    /// Reads a webhook object; only a value that is not an object fails.
    pub(super) fn read(value: &Value) -> Result<Self, String> {
        match value {
            Value::Object(_) => Self::deserialize(value).map_err(|e| e.to_string()),
            _ => Err("must be an object".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_read_on_its_own_and_the_rest_is_the_targets() {
        let value = serde_json::json!({
            "url": "http://h/x",
            "event_types": "channel_occupied",
            "timeout_ms": 250,
            "ordering": "sideways",
            "headers": null,
            "colour": "blue"
        });
        let definition = WebhookDefinition::read(&value).unwrap();
        assert!(matches!(
            definition.event_types,
            Field::Invalid {
                found: Value::String(_),
                ..
            }
        ));
        assert!(matches!(definition.timeout_ms, Field::Valid(250)));
        assert!(matches!(definition.ordering, Field::Invalid { .. }));
        assert!(matches!(definition.headers, Field::Absent));
        assert!(matches!(definition.id, Field::Absent));
        let target: Vec<&str> = definition.target.keys().map(String::as_str).collect();
        assert_eq!(target, ["url", "colour"]);
        assert!(WebhookDefinition::read(&serde_json::json!([1])).is_err());
    }
}
