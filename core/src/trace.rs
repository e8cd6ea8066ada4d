//! OpenTelemetry traces through the pipeline (docs/contract.md §5, Traces).
//!
//! The spans are `tracing` spans of target [`TARGET`], which the binary
//! sends to an OTLP exporter through `tracing-opentelemetry` (and keeps out
//! of the log lines). While no exporter is set up ([`enable`] was not
//! called) every function here returns at once with no span: tracing
//! costs a load of one flag per step.
//!
//! The path of a trace: the ingest request's span (its parent taken from
//! the request's W3C `traceparent`, when it has one) → the batch formed
//! from its events (the child of the first request's span, linking to the
//! others') → the filter chain of each webhook → each delivery attempt,
//! whose context an HTTP delivery carries as its own `traceparent`. So a
//! receiver sees the trace id of the first request in its batch (all of
//! them with batching off).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span the pipeline makes.
pub const TARGET: &str = "hookline::trace";

/// Links a batch span keeps to the requests it was formed from, at most.
const MAX_LINKS: usize = 128;

static ON: AtomicBool = AtomicBool::new(false);

/// Turns the spans on: the binary calls it once it has installed the
/// OpenTelemetry layer for [`TARGET`].
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are made.
pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Where a batch's events came from: the span context of the ingest
/// request that accepted them.
pub(crate) type Origin = SpanContext;

/// The span of one ingest request, a child of the trace its `traceparent`
/// header names (a new trace without one).
pub(crate) fn ingest_span(kind: &'static str, app_id: &str, headers: &http::HeaderMap) -> Span {
    if !on() {
        return Span::none();
    }
    let span = tracing::info_span!(target: TARGET, "ingest", otel.kind = "server", ingest = kind, app = app_id);
    let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// The context of the span the caller runs in, to travel with the events
/// it accepts; `None` when spans are off.
pub(crate) fn current_origin() -> Option<Origin> {
    if !on() {
        return None;
    }
    let context = Span::current().context();
    let origin = context.span().span_context().clone();
    origin.is_valid().then_some(origin)
}

/// The span of one batch closing and going through its filters: a child of
/// its first request's span, linked to the others'.
pub(crate) fn batch_span(app_id: &str, events: usize, origins: &[Origin]) -> Span {
    if !on() {
        return Span::none();
    }
    let span = tracing::info_span!(target: TARGET, "batch", app = app_id, events = events as i64);
    if let Some(first) = origins.first() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(first.clone()));
    }
    for origin in origins.iter().skip(1).take(MAX_LINKS) {
        span.add_link(origin.clone());
    }
    span
}

/// The span of one webhook's filter chain on a batch, inside the batch's.
pub(crate) fn filter_span(batch: &Span, webhook: &str, events: usize) -> Span {
    if !on() || batch.is_none() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: batch, "filter", webhook, events = events as i64)
}

/// The context a batch span's deliveries carry to their attempts.
pub(crate) fn context_of(span: &Span) -> Option<Origin> {
    if !on() || span.is_none() {
        return None;
    }
    let context = span.context();
    let origin = context.span().span_context().clone();
    origin.is_valid().then_some(origin)
}

/// The span of one delivery attempt, a child of its batch's.
pub(crate) fn attempt_span(batch: Option<&Origin>, webhook: &str, batch_id: &str, attempt: u32) -> Span {
    if !on() {
        return Span::none();
    }
    // Integers as i64: tracing-opentelemetry sends a u64 as text.
    let span = tracing::info_span!(target: TARGET, "deliver", otel.kind = "client", webhook, batch_id,
        attempt = i64::from(attempt), outcome = tracing::field::Empty, status = tracing::field::Empty);
    if let Some(batch) = batch {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(batch.clone()));
    }
    span
}

/// The W3C `traceparent` naming `span`, for the request it makes.
pub(crate) fn traceparent(span: &Span) -> Option<String> {
    if !on() || span.is_none() {
        return None;
    }
    let mut carrier = TraceParent(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Keeps the `traceparent` a propagator writes (not `tracestate`: an
/// empty one, as ours always is, is not sent).
struct TraceParent(Option<String>);

impl Injector for TraceParent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}
