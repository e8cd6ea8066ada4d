//! The `hookline` package's library side: how the binary wires the engine
//! together, shared with the package's own tests and the fuzz targets so
//! that each builds exactly what the daemon runs.

use std::sync::Arc;

use hookline_core::sinks::SinkRegistry;

/// The sink plugins built into Hookline, by selector key: `url` (http),
/// `lambda_function` (lambda), `sqs_queue_url` (sqs), `sns_topic_arn`
/// (sns), `eventbridge_bus` (eventbridge), `nats_subject` (nats) and
/// `kafka_topic` (kafka).
///
/// # Errors
///
/// When the HTTP client cannot be built (no TLS roots, say).
pub fn builtin_sinks() -> Result<SinkRegistry, String> {
    builtin_sinks_with_proxy(None)
}

/// [`builtin_sinks`], with the daemon's `delivery.proxy` for http webhooks
/// that have no `proxy` of their own.
///
/// # Errors
///
/// When the HTTP client cannot be built, or the proxy is not a URL.
pub fn builtin_sinks_with_proxy(proxy: Option<&str>) -> Result<SinkRegistry, String> {
    let mut sinks = SinkRegistry::new();
    let http = hookline_sink_http::HttpSinkPlugin::with_default_proxy(proxy)?;
    sinks.register(Arc::new(http));
    sinks.register(Arc::new(hookline_sink_lambda::LambdaSinkPlugin::new()));
    sinks.register(Arc::new(hookline_sink_sqs::SqsSinkPlugin::new()));
    sinks.register(Arc::new(hookline_sink_sns::SnsSinkPlugin::new()));
    sinks.register(Arc::new(hookline_sink_eventbridge::EventBridgeSinkPlugin::new()));
    sinks.register(Arc::new(hookline_sink_nats::NatsSinkPlugin::new()));
    sinks.register(Arc::new(hookline_sink_kafka::KafkaSinkPlugin::new()));
    Ok(sinks)
}
