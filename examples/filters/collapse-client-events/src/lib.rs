//! Collapses noisy client events: of the listed client events (by default
//! `client-typing`), only the last per channel in each batch is delivered.
//! Everything else passes untouched, in order.
//!
//! ```json
//! "filters": [{ "wasm": "filters/collapse_client_events.wasm",
//!               "config": { "events": ["client-typing", "client-cursor"] } }]
//! ```

use std::collections::HashMap;

use hookline_filter::{Batch, Context, Filter, Verdict};
use serde::Deserialize;

/// The filter's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client event names to collapse.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            events: default_events(),
        }
    }
}

fn default_events() -> Vec<String> {
    vec!["client-typing".to_string()]
}

/// The filter.
pub struct CollapseClientEvents;

impl Filter for CollapseClientEvents {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if config.events.is_empty() {
            return Err("`events` is empty: list the client event names to collapse".to_string());
        }
        Ok(())
    }

    fn filter(config: &Config, _ctx: &Context, batch: &Batch) -> Result<Verdict, String> {
        // The index of the last noisy event per (channel, client event name).
        let mut last: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, event) in batch.events.iter().enumerate() {
            if let Some(name) = noisy(config, event) {
                last.insert((&event.channel, name), i);
            }
        }
        Ok(batch.retain_indexed(|i, event| match noisy(config, event) {
            Some(name) => last.get(&(event.channel.as_str(), name)) == Some(&i),
            None => true,
        }))
    }
}

hookline_filter::export_filter!(CollapseClientEvents);

fn noisy<'a>(config: &Config, event: &'a hookline_filter::Event) -> Option<&'a str> {
    if event.name != "client_event" {
        return None;
    }
    event
        .event
        .as_deref()
        .filter(|name| config.events.iter().any(|n| n == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_filter::Event;
    use hookline_filter::testing::run;

    fn client(channel: &str, name: &str, data: &str) -> Event {
        let mut e = Event::new("client_event", channel);
        e.event = Some(name.into());
        e.data = Some(data.into());
        e
    }

    #[test]
    fn keeps_the_last_typing_event_per_channel() {
        let batch = Batch::new(vec![
            client("a", "client-typing", "1"),
            client("b", "client-typing", "1"),
            client("a", "client-message", "hello"),
            client("a", "client-typing", "2"),
            Event::new("channel_occupied", "a"),
            client("a", "client-typing", "3"),
        ]);
        assert_eq!(
            run::<CollapseClientEvents>("null", &batch).unwrap(),
            Verdict::Select(vec![1, 2, 4, 5])
        );
    }

    #[test]
    fn quiet_batches_are_kept_whole() {
        let batch = Batch::new(vec![client("a", "client-message", "x")]);
        assert_eq!(
            run::<CollapseClientEvents>(r#"{"events":["client-cursor"]}"#, &batch).unwrap(),
            Verdict::Keep
        );
        assert!(run::<CollapseClientEvents>(r#"{"events":[]}"#, &batch).is_err());
    }
}
