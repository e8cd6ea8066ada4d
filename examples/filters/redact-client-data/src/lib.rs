//! Redacts listed keys inside `client_event` data (PII such as e-mail
//! addresses), at any depth of the data's JSON.
//!
//! ```json
//! "filters": [{ "wasm": "filters/redact_client_data.wasm",
//!               "config": { "keys": ["email", "phone"], "replacement": "[redacted]" } }]
//! ```
//!
//! With no `replacement` the keys are removed. Events whose data is not a
//! JSON object or array are delivered unchanged.

use hookline_filter::{Batch, Context, Filter, Verdict};
use serde::Deserialize;
use serde_json::Value;

/// The filter's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Keys to redact, compared exactly.
    pub keys: Vec<String>,
    /// What to put instead; `None` removes the key.
    #[serde(default)]
    pub replacement: Option<String>,
}

/// The filter.
pub struct RedactClientData;

impl Filter for RedactClientData {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if config.keys.is_empty() {
            return Err("`keys` is empty: list the data keys to redact".to_string());
        }
        Ok(())
    }

    fn filter(config: &Config, _ctx: &Context, batch: &Batch) -> Result<Verdict, String> {
        let mut changed = false;
        let mut out = batch.clone();
        for event in &mut out.events {
            if event.name != "client_event" {
                continue;
            }
            let Some(mut data) = event.data_json() else { continue };
            if redact(&mut data, config) {
                event.data = Some(data.to_string());
                changed = true;
            }
        }
        Ok(if changed { Verdict::Replace(out) } else { Verdict::Keep })
    }
}

hookline_filter::export_filter!(RedactClientData);

/// Redacts in place; returns whether anything changed.
fn redact(value: &mut Value, config: &Config) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for key in &config.keys {
                if map.contains_key(key) {
                    changed = true;
                    match &config.replacement {
                        Some(r) => {
                            map.insert(key.clone(), Value::String(r.clone()));
                        }
                        None => {
                            map.remove(key);
                        }
                    }
                }
            }
            for inner in map.values_mut() {
                changed |= redact(inner, config);
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, v| redact(v, config) | c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_filter::Event;
    use hookline_filter::testing::{deliver, run};

    fn client_event(data: &str) -> Event {
        let mut e = Event::new("client_event", "private-chat");
        e.event = Some("client-message".into());
        e.data = Some(data.into());
        e
    }

    #[test]
    fn redacts_nested_keys_and_leaves_the_rest() {
        let batch = Batch::new(vec![
            client_event(
                r#"{"text":"hi","email":"a@b.c","profile":{"phone":"123","city":"X"},"list":[{"email":"d@e.f"}]}"#,
            ),
            Event::new("channel_occupied", "c"),
            client_event("not json"),
        ]);
        let config = r#"{"keys": ["email", "phone"], "replacement": "[redacted]"}"#;
        let out = deliver::<RedactClientData>(config, &batch).unwrap().unwrap();
        let data: Value = serde_json::from_str(out.events[0].data.as_deref().unwrap()).unwrap();
        assert_eq!(data["email"], "[redacted]");
        assert_eq!(data["profile"]["phone"], "[redacted]");
        assert_eq!(data["profile"]["city"], "X");
        assert_eq!(data["list"][0]["email"], "[redacted]");
        assert_eq!(out.events[1], batch.events[1]);
        assert_eq!(out.events[2], batch.events[2]);
    }

    #[test]
    fn removes_keys_without_a_replacement_and_keeps_clean_batches() {
        let batch = Batch::new(vec![client_event(r#"{"email":"a@b.c","text":"hi"}"#)]);
        let out = deliver::<RedactClientData>(r#"{"keys": ["email"]}"#, &batch)
            .unwrap()
            .unwrap();
        assert_eq!(out.events[0].data.as_deref(), Some(r#"{"text":"hi"}"#));
        let clean = Batch::new(vec![client_event(r#"{"text":"hi"}"#)]);
        assert_eq!(
            run::<RedactClientData>(r#"{"keys": ["email"]}"#, &clean).unwrap(),
            Verdict::Keep
        );
        assert!(run::<RedactClientData>(r#"{"keys": []}"#, &clean).is_err());
    }
}
