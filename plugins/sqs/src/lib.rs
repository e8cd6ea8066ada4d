//! The `sqs` sink plugin (being built: issue 28).

use hookline_sink_api::{Sink, SinkConfigError, SinkPlugin, WebhookSpec};

/// Builds sqs sinks for webhooks that carry a `sqs_queue_url`.
#[derive(Debug, Default)]
pub struct SqsSinkPlugin;

impl SqsSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self
    }
}

impl SinkPlugin for SqsSinkPlugin {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    fn selector_key(&self) -> &'static str {
        "sqs_queue_url"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "sqs"]
    }

    fn build(&self, _spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Err(SinkConfigError::new("the sqs sink is not available in this build yet"))
    }
}
