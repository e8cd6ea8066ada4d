//! Prometheus metrics, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming an app and how its events came in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// The app id.
    pub app: String,
    /// `native` or `relay`.
    pub ingest: &'static str,
}

/// Labels of a refused ingest request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// Short reason (`unauthorized`, `too_large`, …).
    pub reason: &'static str,
}

/// Labels of expired dead letters: why they went (`age`, `count`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiryLabels {
    /// `age` (past `max_age_ms`) or `count` (past `max_count`).
    pub cause: &'static str,
}

/// Labels of a delivery attempt's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The sink kind (`http`, `lambda`).
    pub sink: &'static str,
    /// `success`, `retry`, `dead_letter`, `split`.
    pub outcome: &'static str,
}

/// Labels naming a sink kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink kind (`http`, `lambda`).
    pub sink: &'static str,
}

/// Labels of a filter call's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `keep`, `drop`, `select`, `replace`, or `error`.
    pub verdict: &'static str,
}

/// Labels naming one webhook of one app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The app id.
    pub app: String,
    /// The webhook id (credentials and query strings redacted).
    pub webhook: String,
}

/// Labels naming why partitions were handed to another node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    /// `join`, `leave`, `balance`, `sigterm` or `lease_lost`.
    pub cause: String,
}

/// Labels naming a store partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The partition number.
    pub partition: u32,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events accepted, by app and ingest kind.
    pub events_received: Family<IngestLabels, Counter>,
    /// Ingest requests refused, by reason.
    pub requests_refused: Family<RefusedLabels, Counter>,
    /// Batches formed (one per app batch, before routing).
    pub batches_formed: Counter,
    /// Delivery attempts by sink kind and outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Events delivered (in successful deliveries), by sink kind.
    pub events_delivered: Family<SinkLabels, Counter>,
    /// Seconds from the batch's first event's acceptance to successful
    /// delivery (millisecond resolution).
    pub delivery_latency: Histogram,
    /// Deliveries waiting or in flight.
    pub queue_depth: Gauge,
    /// App batches waiting for their filters (every app's filter stage).
    pub filter_queue: Gauge,
    /// Successful reloads and failed files.
    pub reloads: Family<RefusedLabels, Counter>,
    /// Each webhook's circuit: 0 closed, 1 half-open (probing), 2 open.
    pub circuit_state: Family<WebhookLabels, Gauge>,
    /// Deliveries that waited for a token of their webhook's `rate_limit`.
    pub rate_limited: Family<WebhookLabels, Counter>,
    /// Filter calls by verdict (`error` for traps, deadline overruns, caps
    /// and `err` results).
    pub filter_calls: Family<VerdictLabels, Counter>,
    /// Seconds per filter call.
    pub filter_duration: Histogram,
    /// Dead letters kept.
    pub dead_letters: Gauge,
    /// Dead letters deleted by retention, by cause.
    pub dead_letters_expired: Family<ExpiryLabels, Counter>,
    /// Age in seconds of the oldest delivery not yet delivered.
    pub oldest_pending_seconds: Gauge,
    /// Filter components compiled from source.
    pub filter_compilations: Counter,
    /// Filter components loaded from the on-disk compile cache.
    pub filter_cache_hits: Counter,
    /// Waiting batches whose events left memory (kept on disk only) because
    /// `delivery.max_memory_bytes` was reached.
    pub batches_spilled: Counter,
    /// Bytes of events that waiting and in-flight deliveries hold in memory.
    pub delivery_memory_bytes: Gauge,
    /// 1 for each partition this node owns, 0 for the others.
    pub partition_owned: Family<PartitionLabels, Gauge>,
    /// Inbox entries not yet batched, per owned partition.
    pub partition_lag: Family<PartitionLabels, Gauge>,
    /// Partitions this node took over (at start or from a dead node).
    pub partition_takeovers: Family<PartitionLabels, Counter>,
    /// Partitions this node handed to others, by cause.
    pub partition_handovers: Family<HandoverLabels, Counter>,
    /// Inbox entries accepted by a node running another config of their
    /// app than this one (held for a short while for this node's reload).
    pub config_skew: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookline");
        let events_received = Family::<IngestLabels, Counter>::default();
        registry.register("events_received", "Events accepted by ingest", events_received.clone());
        let requests_refused = Family::<RefusedLabels, Counter>::default();
        registry.register("ingest_refused", "Ingest requests refused", requests_refused.clone());
        let batches_formed = Counter::default();
        registry.register("batches_formed", "App batches formed", batches_formed.clone());
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("delivery_attempts", "Delivery attempts by outcome", deliveries.clone());
        let events_delivered = Family::<SinkLabels, Counter>::default();
        registry.register(
            "events_delivered",
            "Events in successful deliveries",
            events_delivered.clone(),
        );
        let delivery_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "delivery_latency_seconds",
            "Time from ingest (of a batch's first event) to successful delivery",
            delivery_latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Deliveries waiting or in flight", queue_depth.clone());
        let filter_queue = Gauge::default();
        registry.register(
            "filter_queue_batches",
            "App batches closed and waiting for their filters",
            filter_queue.clone(),
        );
        let reloads = Family::<RefusedLabels, Counter>::default();
        registry.register("reloads", "Config reloads by result", reloads.clone());
        let circuit_state = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "circuit_state",
            "Webhook circuit breaker: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let rate_limited = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Deliveries that waited for a token of their webhook's rate_limit",
            rate_limited.clone(),
        );
        let filter_calls = Family::<VerdictLabels, Counter>::default();
        registry.register("filter_calls", "Filter calls by verdict", filter_calls.clone());
        let filter_duration = Histogram::new(exponential_buckets(0.000_002, 4.0, 12));
        registry.register(
            "filter_duration_seconds",
            "Time per filter call",
            filter_duration.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register("dead_letters", "Dead letters kept", dead_letters.clone());
        let dead_letters_expired = Family::<ExpiryLabels, Counter>::default();
        registry.register(
            "dead_letters_expired",
            "Dead letters deleted past their app's max_age_ms (age) or max_count (count)",
            dead_letters_expired.clone(),
        );
        let partition_owned = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "partition_owned",
            "1 for each store partition this node owns",
            partition_owned.clone(),
        );
        let partition_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "partition_lag",
            "Inbox entries not yet batched, per owned store partition",
            partition_lag.clone(),
        );
        let config_skew = Counter::default();
        registry.register(
            "config_skew",
            "Events accepted under another node's config of their app",
            config_skew.clone(),
        );
        let partition_takeovers = Family::<PartitionLabels, Counter>::default();
        registry.register(
            "partition_takeovers",
            "Store partitions this node took over",
            partition_takeovers.clone(),
        );
        let partition_handovers = Family::<HandoverLabels, Counter>::default();
        registry.register(
            "partition_handovers",
            "Store partitions this node handed to another node, by cause (join, leave, balance, sigterm, lease_lost)",
            partition_handovers.clone(),
        );
        let oldest_pending_seconds = Gauge::default();
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest delivery not yet delivered",
            oldest_pending_seconds.clone(),
        );
        let filter_compilations = Counter::default();
        registry.register(
            "filter_compilations",
            "Filter components compiled from source",
            filter_compilations.clone(),
        );
        let filter_cache_hits = Counter::default();
        registry.register(
            "filter_cache_hits",
            "Filter components loaded from the compile cache",
            filter_cache_hits.clone(),
        );
        let batches_spilled = Counter::default();
        registry.register(
            "batches_spilled",
            "Waiting batches whose events were kept on disk only (delivery.max_memory_bytes reached)",
            batches_spilled.clone(),
        );
        let delivery_memory_bytes = Gauge::default();
        registry.register(
            "delivery_memory_bytes",
            "Bytes of events held in memory by waiting and in-flight deliveries",
            delivery_memory_bytes.clone(),
        );
        Self {
            registry,
            batches_spilled,
            delivery_memory_bytes,
            filter_compilations,
            filter_cache_hits,
            events_received,
            requests_refused,
            batches_formed,
            deliveries,
            events_delivered,
            delivery_latency,
            queue_depth,
            filter_queue,
            reloads,
            circuit_state,
            rate_limited,
            filter_calls,
            filter_duration,
            dead_letters,
            dead_letters_expired,
            oldest_pending_seconds,
            partition_owned,
            partition_lag,
            partition_takeovers,
            partition_handovers,
            config_skew,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
