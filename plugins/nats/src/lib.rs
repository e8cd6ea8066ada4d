//! The `nats` sink plugin (being built: issue 28).

use hookline_sink_api::{Sink, SinkConfigError, SinkPlugin, WebhookSpec};

/// Builds nats sinks for webhooks that carry a `nats_subject`.
#[derive(Debug, Default)]
pub struct NatsSinkPlugin;

impl NatsSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self
    }
}

impl SinkPlugin for NatsSinkPlugin {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn selector_key(&self) -> &'static str {
        "nats_subject"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["nats"]
    }

    fn build(&self, _spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Err(SinkConfigError::new("the nats sink is not available in this build yet"))
    }
}
