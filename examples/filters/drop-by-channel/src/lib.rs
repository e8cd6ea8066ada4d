//! Drops events whose channel matches a pattern, or whose user is listed.
//!
//! Build with `cargo build --release --target wasm32-wasip2 -p drop-by-channel`;
//! configure in an app file:
//!
//! ```json
//! "filters": [{ "wasm": "filters/drop_by_channel.wasm",
//!               "config": { "channels": ["debug-*", "*-internal"], "user_ids": ["bot"] } }]
//! ```

use hookline_filter::{Batch, Context, Event, Filter, Verdict};
use serde::Deserialize;

/// The filter's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Channel patterns to drop; `*` matches any run of characters.
    #[serde(default)]
    pub channels: Vec<String>,
    /// User ids whose events are dropped.
    #[serde(default)]
    pub user_ids: Vec<String>,
}

/// The filter.
pub struct DropByChannel;

impl Filter for DropByChannel {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if config.channels.is_empty() && config.user_ids.is_empty() {
            return Err("set `channels` and/or `user_ids`, or this filter drops nothing".to_string());
        }
        if let Some(empty) = config.channels.iter().find(|p| p.is_empty()) {
            return Err(format!("channel pattern {empty:?} is empty"));
        }
        Ok(())
    }

    fn filter(config: &Config, _ctx: &Context, batch: &Batch) -> Result<Verdict, String> {
        Ok(batch.retain(|event| !dropped(config, event)))
    }
}

hookline_filter::export_filter!(DropByChannel);

fn dropped(config: &Config, event: &Event) -> bool {
    config.channels.iter().any(|p| glob_match(p, &event.channel))
        || event.user_id.as_ref().is_some_and(|u| config.user_ids.contains(u))
}

/// `*` matches any (possibly empty) run of characters; everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(last) = parts.next_back() else {
        return pattern == text;
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in parts {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_filter::testing::{deliver, run};

    fn batch() -> Batch {
        let mut bot = Event::new("member_added", "presence-room");
        bot.user_id = Some("bot".into());
        Batch::new(vec![
            Event::new("channel_occupied", "debug-1"),
            Event::new("channel_occupied", "room-1"),
            bot,
            Event::new("channel_vacated", "ops-internal"),
        ])
    }

    #[test]
    fn drops_matching_channels_and_users() {
        let config = r#"{"channels": ["debug-*", "*-internal"], "user_ids": ["bot"]}"#;
        assert_eq!(
            run::<DropByChannel>(config, &batch()).unwrap(),
            Verdict::Select(vec![1])
        );
        let kept = deliver::<DropByChannel>(config, &batch()).unwrap().unwrap();
        assert_eq!(kept.events[0].channel, "room-1");
    }

    #[test]
    fn keeps_and_drops_whole_batches() {
        assert_eq!(
            run::<DropByChannel>(r#"{"channels": ["nothing"]}"#, &batch()).unwrap(),
            Verdict::Keep
        );
        assert!(matches!(
            run::<DropByChannel>(r#"{"channels": ["*"]}"#, &batch()).unwrap(),
            Verdict::Drop(_)
        ));
    }

    #[test]
    fn refuses_configs_that_do_nothing() {
        assert!(
            run::<DropByChannel>("null", &batch())
                .unwrap_err()
                .contains("drops nothing")
        );
        assert!(
            run::<DropByChannel>(r#"{"chanels": []}"#, &batch())
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("a*c", "abc"));
        assert!(glob_match("a*c", "ac"));
        assert!(!glob_match("a*c", "a"));
        assert!(glob_match("*-chat", "private-x-chat"));
        assert!(glob_match("a*b*c", "a-b-c"));
        assert!(!glob_match("a*b*c", "a-c"));
        assert!(glob_match("exact", "exact"));
    }
}
