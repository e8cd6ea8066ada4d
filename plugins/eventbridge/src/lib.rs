//! The `eventbridge` sink plugin (being built: issue 28).

use hookline_sink_api::{Sink, SinkConfigError, SinkPlugin, WebhookSpec};

/// Builds eventbridge sinks for webhooks that carry a `eventbridge_bus`.
#[derive(Debug, Default)]
pub struct EventBridgeSinkPlugin;

impl EventBridgeSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self
    }
}

impl SinkPlugin for EventBridgeSinkPlugin {
    fn kind(&self) -> &'static str {
        "eventbridge"
    }

    fn selector_key(&self) -> &'static str {
        "eventbridge_bus"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["region", "eventbridge"]
    }

    fn build(&self, _spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Err(SinkConfigError::new("the eventbridge sink is not available in this build yet"))
    }
}
