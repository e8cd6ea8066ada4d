//! Traces to an OTLP collector (docs/contract.md §5, Traces): set up only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, over
//! HTTP/protobuf, with the standard `OTEL_*` variables (service name,
//! sampler, headers) read by the OpenTelemetry SDK itself.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Set once traces are exported, to flush them at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The variables that name an OTLP endpoint.
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// The layer exporting the pipeline's spans (target
/// [`hookline_core::trace::TARGET`] only), when an endpoint is set; it
/// turns the spans on. An endpoint that cannot be used is an error that
/// names the variable.
pub(crate) fn layer<S>() -> Result<Option<Box<dyn Layer<S> + Send + Sync>>, String>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let Some(variable) = ENDPOINT_VARS
        .into_iter()
        .find(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
    else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("{variable}: cannot export traces there ({e}); give an http:// or https:// URL"))?;
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok();
    let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
    let sampling = hookline_core::trace::Sampling::from_env(sampler.as_deref(), ratio.as_deref())?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "hookline".to_string());
    // The engine samples each request before it makes a span (see
    // `hookline_core::trace`): every span it makes is kept.
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("hookline");
    let _ = PROVIDER.set(provider);
    hookline_core::trace::enable(sampling);
    let only_ours =
        tracing_subscriber::filter::Targets::new().with_target(hookline_core::trace::TARGET, tracing::Level::TRACE);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // The spans' own fields say what they are; these would only
            // add bytes to every span.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(only_ours)
            .boxed(),
    ))
}

/// Sends the spans not yet exported (the daemon is stopping).
pub(crate) fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        tracing::warn!(%error, "could not send the last traces");
    }
}
