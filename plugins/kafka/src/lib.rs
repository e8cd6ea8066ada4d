//! The `kafka` sink plugin (being built: issue 28).

use hookline_sink_api::{Sink, SinkConfigError, SinkPlugin, WebhookSpec};

/// Builds kafka sinks for webhooks that carry a `kafka_topic`.
#[derive(Debug, Default)]
pub struct KafkaSinkPlugin;

impl KafkaSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self
    }
}

impl SinkPlugin for KafkaSinkPlugin {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn selector_key(&self) -> &'static str {
        "kafka_topic"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["kafka"]
    }

    fn build(&self, _spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Err(SinkConfigError::new("the kafka sink is not available in this build yet"))
    }
}
