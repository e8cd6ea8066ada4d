//! The `sns` sink plugin (being built: issue 28).

use hookline_sink_api::{Sink, SinkConfigError, SinkPlugin, WebhookSpec};

/// Builds sns sinks for webhooks that carry a `sns_topic_arn`.
#[derive(Debug, Default)]
pub struct SnsSinkPlugin;

impl SnsSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self
    }
}

impl SinkPlugin for SnsSinkPlugin {
    fn kind(&self) -> &'static str {
        "sns"
    }

    fn selector_key(&self) -> &'static str {
        "sns_topic_arn"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "sns"]
    }

    fn build(&self, _spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Err(SinkConfigError::new("the sns sink is not available in this build yet"))
    }
}
