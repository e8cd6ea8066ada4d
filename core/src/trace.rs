//! OpenTelemetry traces through the pipeline (docs/contract.md §5, Traces).
//!
//! The spans are `tracing` spans of target [`TARGET`], which the binary
//! sends to an OTLP exporter through `tracing-opentelemetry` (and keeps out
//! of the log lines). While no exporter is set up ([`enable`] was not
//! called) every function here returns at once with no span: tracing
//! costs a load of one flag per step.
//!
//! Sampling is decided here, once per ingest request ([`Sampling`]): a
//! request not sampled makes no span at all, so neither do the batch and
//! the attempts that only its events make (their deliveries carry no
//! `traceparent`). Making a span and dropping it unsampled costs about as
//! much as keeping it, so at 1 % sampling this is what keeps traces cheap.
//!
//! The path of a trace: the ingest request's span (its parent taken from
//! the request's W3C `traceparent`, when it has one) → the batch formed
//! from its events (the child of the first request's span, linking to the
//! others') → the filter chain of each webhook → each delivery attempt,
//! whose context an HTTP delivery carries as its own `traceparent`. So a
//! receiver sees the trace id of the first request in its batch (all of
//! them with batching off).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
/// [`Sampling::ratio`], as `f64` bits.
static RATIO: AtomicU64 = AtomicU64::new(0);
/// [`Sampling::parent_based`].
static PARENT_BASED: AtomicBool = AtomicBool::new(true);

/// Which ingest requests are traced (`OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG`, read by the binary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The share of requests traced that start a trace (0 to 1).
    pub ratio: f64,
    /// A request with a `traceparent` is traced exactly when its parent
    /// was sampled.
    pub parent_based: bool,
}

impl Sampling {
    /// What a standard `OTEL_TRACES_SAMPLER` value and its argument mean;
    /// `Err` names the values there are.
    pub fn from_env(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(text) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG {text:?} is not a ratio between 0 and 1")),
            }
        };
        let (ratio, parent_based) = match sampler.map(str::trim).unwrap_or("") {
            "" | "parentbased_always_on" => (1.0, true),
            "parentbased_always_off" => (0.0, true),
            "parentbased_traceidratio" => (ratio()?, true),
            "always_on" => (1.0, false),
            "always_off" => (0.0, false),
            "traceidratio" => (ratio()?, false),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER {other:?} is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ));
            }
        };
        Ok(Self { ratio, parent_based })
    }
}

/// Turns the spans on, sampled as `sampling` says: the binary calls it
/// once it has installed the OpenTelemetry layer for [`TARGET`].
pub fn enable(sampling: Sampling) {
    RATIO.store(sampling.ratio.to_bits(), Ordering::Relaxed);
    PARENT_BASED.store(sampling.parent_based, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
}

/// Whether a request whose `traceparent` names `parent` is traced.
fn sampled(parent: &SpanContext) -> bool {
    if parent.is_valid() && PARENT_BASED.load(Ordering::Relaxed) {
        return parent.is_sampled();
    }
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
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
    let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
    if !sampled(parent.span().span_context()) {
        return Span::none();
    }
    let span = tracing::info_span!(target: TARGET, "ingest", otel.kind = "server", ingest = kind, app = app_id);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// The context of the span the caller runs in, to travel with the events
/// it accepts; `None` when spans are off or the request is not traced.
pub(crate) fn current_origin() -> Option<Origin> {
    context_of(&Span::current())
}

/// The span of one batch closing and going through its filters: a child of
/// its first traced request's span, linked to the others'; none when no
/// request of the batch is traced.
pub(crate) fn batch_span(app_id: &str, events: usize, origins: &[Origin]) -> Span {
    let Some(first) = origins.first().filter(|_| on()) else {
        return Span::none();
    };
    let span = tracing::info_span!(target: TARGET, "batch", app = app_id, events = events as i64);
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(first.clone()));
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

/// The span of one delivery attempt, a child of its batch's; none for a
/// batch not traced.
pub(crate) fn attempt_span(batch: Option<&Origin>, webhook: &str, batch_id: &str, attempt: u32) -> Span {
    let Some(batch) = batch.filter(|_| on()) else {
        return Span::none();
    };
    // Integers as i64: tracing-opentelemetry sends a u64 as text.
    let span = tracing::info_span!(target: TARGET, "deliver", otel.kind = "client", webhook, batch_id,
        attempt = i64::from(attempt), outcome = tracing::field::Empty, status = tracing::field::Empty);
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(batch.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_sampler_variables_read_as_the_sdk_reads_them() {
        let read = |sampler: Option<&str>, arg: Option<&str>| Sampling::from_env(sampler, arg);
        let sampling = |ratio, parent_based| Ok(Sampling { ratio, parent_based });
        assert_eq!(read(None, None), sampling(1.0, true));
        assert_eq!(
            read(Some("parentbased_traceidratio"), Some("0.01")),
            sampling(0.01, true)
        );
        assert_eq!(read(Some("traceidratio"), None), sampling(1.0, false));
        assert_eq!(read(Some("always_off"), None), sampling(0.0, false));
        assert!(
            read(Some("traceidratio"), Some("2"))
                .unwrap_err()
                .contains("OTEL_TRACES_SAMPLER_ARG")
        );
        assert!(
            read(Some("sometimes"), None)
                .unwrap_err()
                .contains("parentbased_traceidratio")
        );
    }
}
