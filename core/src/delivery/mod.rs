//! Delivery: per-webhook lanes that send formed batches with bounded
//! concurrency (or strictly in order), re-stamp and re-sign every attempt,
//! retry by policy, split what is too large, and dead-letter what fails.
//!
//! Sinks only send; everything about *when* and *how often* lives here, once
//! for every sink kind (Vector's shared driver, not per-sink loops).

mod breaker;
mod lane;
pub(crate) mod rate_limit;
pub(crate) mod retry;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::activity::WebhookActivity;
use crate::attempt_log::{AttemptLog, LoggedAttempt, redacted_request_headers};
use crate::config::Webhook;
use crate::event::Event;
use crate::event::join_events;
use crate::filter::{ChainOutcome, run_off_workers};
use crate::metrics::{Metrics, WebhookLabels};
use crate::registry::AppRegistry;
use crate::settings::DeliverySettings;
use crate::signing::hmac_sha256_hex;
use crate::store::{DeliveryKey, DeliveryRecord, RecoveredDelivery, SharedStore};

/// One batch for one webhook, on its way.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// What the store keeps of it.
    pub record: DeliveryRecord,
    /// The webhook as configured when the batch was formed: routing is
    /// frozen at formation, only the signing secret follows the config.
    pub webhook: Arc<Webhook>,
    /// Bytes it counts for in the backlog, from dispatch to its end.
    backlog_bytes: u64,
    /// Its events are in the store, so they may leave memory while it waits.
    pub(crate) on_disk: bool,
    /// Its events are only in the store right now; read back before sending.
    spilled: bool,
    /// The span of the batch it was formed from, when traced (in memory
    /// only: a delivery resumed after a restart starts a trace of its own).
    pub(crate) trace: Option<crate::trace::Origin>,
}

impl Delivery {
    /// A delivery of `record` to `webhook`; `on_disk` when the store holds
    /// it (its events can then be dropped from memory while it waits).
    pub(crate) fn new(record: DeliveryRecord, webhook: Arc<Webhook>, on_disk: bool) -> Self {
        Self {
            backlog_bytes: record.events.len() as u64,
            record,
            webhook,
            on_disk,
            spilled: false,
            trace: None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The body of one attempt: `{"time_ms":…,"events":[…]}`.
pub fn render_body(time_ms: u64, events: &str) -> String {
    let mut body = String::with_capacity(events.len() + 40);
    body.push_str("{\"time_ms\":");
    body.push_str(&time_ms.to_string());
    body.push_str(",\"events\":[");
    body.push_str(events);
    body.push_str("]}");
    body
}

/// The channel every event of a batch (its joined events) is on, or `None`
/// when they are on several (or cannot be read, which the store rules out).
fn batch_channel(joined: &str) -> Option<Box<str>> {
    let events = crate::event::Event::parse_joined(joined).ok()?;
    let (first, rest) = events.split_first()?;
    rest.iter()
        .all(|e| e.channel == first.channel)
        .then(|| first.channel.clone())
}

/// Bytes a body adds around its events, with a 16-digit `time_ms`.
pub(crate) const BODY_OVERHEAD: usize = "{\"time_ms\":,\"events\":[]}".len() + 16;

/// Makes batch ids unique across restarts: a random prefix per process and
/// a counter.
#[derive(Debug)]
pub(crate) struct BatchIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for BatchIds {
    fn default() -> Self {
        Self {
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(1),
        }
    }
}

impl BatchIds {
    /// Ids whose store keys start at `next_key` (above every key in use).
    pub(crate) fn starting_at(next_key: u64) -> Self {
        Self {
            next: AtomicU64::new(next_key.max(1)),
            ..Self::default()
        }
    }

    /// A fresh id and store key.
    pub(crate) fn next(&self) -> (u64, String) {
        let n = self.next.fetch_add(1, AtomicOrdering::Relaxed);
        (n, format!("{}-{n:x}", self.prefix))
    }
}

/// A delivery dispatched and not finished.
#[derive(Debug)]
pub(crate) struct Pending {
    /// When its first event was accepted (ms since the Unix epoch).
    accepted_ms: u64,
    /// Its lane.
    lane: LaneKey,
}

/// A webhook's deliveries not finished yet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Backlogged {
    /// How many (waiting, retrying or in flight).
    pub deliveries: usize,
    /// When the first event of the oldest was accepted (ms since the Unix
    /// epoch).
    pub oldest_accepted_ms: Option<u64>,
}

/// What every lane shares.
#[derive(Debug)]
pub(crate) struct LaneContext {
    pub(crate) settings: DeliverySettings,
    /// Bytes of events the lanes hold in memory.
    pub(crate) memory: AtomicU64,
    /// Deliveries dispatched and not finished, in formation order.
    pub(crate) pending: Mutex<BTreeMap<DeliveryKey, Pending>>,
    pub(crate) registry: Arc<AppRegistry>,
    pub(crate) store: SharedStore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ids: Arc<BatchIds>,
    /// Bytes of undelivered events; ingest answers 503 past the limit.
    pub(crate) backlog: Arc<crate::backlog::Backlog>,
    /// Where attempts are logged, unless `delivery.attempt_log` is 0.
    pub(crate) attempt_log: Option<Arc<AttemptLog>>,
}

impl Delivery {
    /// A delivery found at start whose events may have stayed on disk.
    pub(crate) fn recovered(found: RecoveredDelivery, webhook: Arc<Webhook>) -> Self {
        Self {
            backlog_bytes: found.events_bytes,
            record: found.record,
            webhook,
            on_disk: true,
            spilled: !found.events_loaded,
            trace: None,
        }
    }
}

impl LaneContext {
    /// Counts a delivery as pending until it finishes.
    pub(crate) fn track(&self, delivery: &Delivery, lane: LaneKey) {
        self.pending
            .lock()
            .expect("pending lock is never held across a panic")
            .insert(
                delivery.record.key,
                Pending {
                    accepted_ms: delivery.record.accepted_ms,
                    lane,
                },
            );
    }

    /// Takes a delivery into a lane's queues: its events stay in memory
    /// while under `max_memory_bytes`, otherwise (if the store has them)
    /// they are dropped until its attempt.
    pub(crate) fn hold(&self, delivery: &mut Delivery) {
        if delivery.spilled {
            return;
        }
        let len = delivery.record.events.len() as u64;
        if delivery.on_disk && self.memory.load(AtomicOrdering::Relaxed) + len > self.settings.max_memory_bytes {
            delivery.record.events = Arc::from("");
            delivery.spilled = true;
            self.metrics.batches_spilled.inc();
        } else {
            self.add_memory(len);
        }
    }

    /// Lets go of a delivery's events (it finished, or goes back to wait).
    pub(crate) fn release(&self, delivery: &Delivery) {
        if !delivery.spilled {
            self.memory
                .fetch_sub(delivery.record.events.len() as u64, AtomicOrdering::Relaxed);
        }
    }

    fn add_memory(&self, len: u64) {
        self.memory.fetch_add(len, AtomicOrdering::Relaxed);
    }

    /// Makes one attempt ([`Self::send_attempt`]) inside its trace span,
    /// when traced, and logs it in the attempt log, if there is one.
    pub(crate) async fn attempt(&self, delivery: &mut Delivery) -> Result<(), hookline_sink_api::DeliveryError> {
        let traced = crate::trace::on();
        if self.attempt_log.is_none() && !traced {
            return self.send_attempt(delivery, None, None).await;
        }
        let (at_ms, started) = (now_ms(), std::time::Instant::now());
        let attempt = delivery.record.attempts.saturating_add(1);
        let webhook = delivery.webhook.clone();
        let span = crate::trace::attempt_span(
            delivery.trace.as_ref(),
            &webhook.log_id,
            &delivery.record.batch_id,
            attempt,
        );
        // Only an HTTP request has headers for it.
        let traceparent = (webhook.traceparent && webhook.kind == "http")
            .then(|| crate::trace::traceparent(&span))
            .flatten();
        let mut noted = self.attempt_log.as_ref().map(|_| Noted::default());
        // A panicking sink is a failed attempt, logged like the others.
        let sent = std::panic::AssertUnwindSafe(tracing::Instrument::instrument(
            self.send_attempt(delivery, noted.as_mut(), traceparent),
            span.clone(),
        ));
        let outcome = futures_util::FutureExt::catch_unwind(sent).await.unwrap_or_else(|_| {
            Err(hookline_sink_api::DeliveryError::Transient(
                "the sink panicked during the attempt".to_string(),
            ))
        });
        if traced {
            span.record("outcome", if outcome.is_ok() { "delivered" } else { "failed" });
            if let Some(status) = outcome
                .as_ref()
                .err()
                .and_then(hookline_sink_api::DeliveryError::status)
            {
                span.record("status", i64::from(status));
            }
        }
        let (Some(log), Some(noted)) = (&self.attempt_log, noted) else {
            return outcome;
        };
        // Filtered down to nothing: no attempt was made.
        if noted.sent || outcome.is_err() {
            let record = &delivery.record;
            let entry = LoggedAttempt::new(
                at_ms,
                &record.batch_id,
                attempt,
                record.event_count,
                started.elapsed(),
                &outcome,
                noted.request_headers,
                noted.answer.take(),
            );
            log.record(&record.app_id, &delivery.webhook.id, entry);
        }
        outcome
    }

    /// Renders, signs and sends one attempt; first reads its events back if
    /// they left memory, and re-runs the filters when an earlier run asked
    /// for a retry. `noted` (when attempts are logged) gets the request's
    /// headers and the receiver's answer.
    async fn send_attempt(
        &self,
        delivery: &mut Delivery,
        noted: Option<&mut Noted>,
        traceparent: Option<String>,
    ) -> Result<(), hookline_sink_api::DeliveryError> {
        if delivery.spilled {
            let events = self.store.load_events(delivery.record.key).await.map_err(|e| {
                hookline_sink_api::DeliveryError::Transient(format!("cannot read the batch's events back: {e}"))
            })?;
            self.add_memory(events.len() as u64);
            delivery.record.events = events.into();
            delivery.spilled = false;
        }
        if delivery.record.pending_filter {
            match self.refilter(delivery).await {
                Refiltered::Send => {}
                Refiltered::Nothing => return Ok(()),
                Refiltered::Failed(reason) => {
                    return Err(hookline_sink_api::DeliveryError::Transient(format!(
                        "filter failed: {reason}"
                    )));
                }
            }
        }
        let record = &delivery.record;
        let Some(credentials) = self.registry.credentials(&record.app_id) else {
            return Err(hookline_sink_api::DeliveryError::Final(format!(
                "no key or secret is known for app {:?}",
                record.app_id
            )));
        };
        let body = render_body(now_ms(), &record.events);
        let signature = hmac_sha256_hex(credentials.secret.expose().as_bytes(), body.as_bytes());
        let signed_headers = [
            ("X-Pusher-Key", credentials.key.to_string()),
            ("X-Pusher-Signature", signature),
            ("X-Hookline-Batch-Id", record.batch_id.clone()),
            ("X-Hookline-Batch-Time", record.batch_time_ms.to_string()),
        ];
        let webhook = &delivery.webhook;
        let channel = if webhook.sink.batches_per_channel() {
            batch_channel(&record.events)
        } else {
            None
        };
        // The webhook's own headers, and the attempt's `traceparent` (which
        // replaces one the app file sets).
        let traced_headers;
        let extra_headers = match traceparent {
            None => &webhook.headers,
            Some(traceparent) => {
                let mut headers: Vec<(String, String)> = webhook
                    .headers
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("traceparent"))
                    .cloned()
                    .collect();
                headers.push(("traceparent".to_string(), traceparent));
                traced_headers = headers;
                &traced_headers
            }
        };
        let noted = noted.map(|noted| {
            noted.sent = true;
            noted.request_headers = redacted_request_headers(&signed_headers, extra_headers);
            &*noted
        });
        let request = hookline_sink_api::SinkRequest {
            body: bytes::Bytes::from(body),
            signed_headers: &signed_headers,
            extra_headers,
            timeout: webhook.timeout,
            app_id: &record.app_id,
            webhook_id: &webhook.id,
            channel: channel.as_deref(),
            attempt: record.attempts.saturating_add(1),
            answer: noted.map(|noted| &noted.answer),
        };
        // The sink may enforce the timeout itself; this bounds it regardless.
        match tokio::time::timeout(webhook.timeout + Duration::from_millis(50), webhook.sink.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(hookline_sink_api::DeliveryError::Timeout),
        }
    }
}

/// What an attempt leaves for the attempt log.
#[derive(Default)]
struct Noted {
    /// The request reached the sink (it was not filtered down to nothing,
    /// nor refused before sending).
    sent: bool,
    request_headers: Vec<crate::attempt_log::Header>,
    answer: hookline_sink_api::AnswerSlot,
}

enum Refiltered {
    Send,
    Nothing,
    Failed(String),
}

impl LaneContext {
    /// Runs the webhook's *current* chain (or, if the webhook is gone, the
    /// one it was formed with) on a delivery whose filters asked for a retry.
    async fn refilter(&self, delivery: &mut Delivery) -> Refiltered {
        let record = &delivery.record;
        let current = self
            .registry
            .snapshot()
            .webhook(&record.app_id, &record.webhook_id)
            .cloned()
            .unwrap_or_else(|| delivery.webhook.clone());
        let events = match Event::parse_joined(&record.events) {
            Ok(events) => events,
            Err(error) => {
                return Refiltered::Failed(format!("stored events are unreadable: {error}"));
            }
        };
        let (app_id, time_ms) = (record.app_id.clone(), record.batch_time_ms);
        let _ = current.filters.ready().await;
        let outcome = run_off_workers(move || current.filters.run(&app_id, &current.id, time_ms, events)).await;
        match outcome {
            Ok(ChainOutcome::Deliver(events)) => {
                self.release(delivery);
                let record = &mut delivery.record;
                record.events = join_events(&events).into();
                self.memory
                    .fetch_add(record.events.len() as u64, AtomicOrdering::Relaxed);
                record.event_count = events.len();
                record.pending_filter = false;
                // A restart must resume with the filtered events, not the
                // originals. The update is not waited for, so until the
                // delivery ends its filtered events stay in memory: reading
                // the store back could give the unfiltered ones.
                self.store.refiltered(record);
                delivery.on_disk = false;
                Refiltered::Send
            }
            Ok(ChainOutcome::Drop(reason)) => {
                tracing::debug!(batch_id = %delivery.record.batch_id, %reason, "filters delivered nothing on retry");
                Refiltered::Nothing
            }
            Ok(ChainOutcome::Retry { reason, .. }) => Refiltered::Failed(reason),
            Err(panic) => Refiltered::Failed(format!("the filter chain panicked: {panic}")),
        }
    }
}

/// A lane: app id and webhook id.
pub(crate) type LaneKey = (Arc<str>, Arc<str>);

pub(crate) fn lane_key(delivery: &Delivery) -> LaneKey {
    (Arc::from(delivery.record.app_id.as_str()), delivery.webhook.id.clone())
}

/// Routes formed deliveries to their webhook's lane, creating lanes on demand.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    ctx: Arc<LaneContext>,
    lanes: Mutex<HashMap<LaneKey, mpsc::UnboundedSender<Delivery>>>,
    tasks: Mutex<JoinSet<()>>,
    /// Each lane's activity, kept after the lane stops.
    activity: Mutex<HashMap<LaneKey, Arc<WebhookActivity>>>,
}

impl Dispatcher {
    /// A dispatcher signing with `registry`'s credentials.
    pub(crate) fn new(
        settings: DeliverySettings,
        registry: Arc<AppRegistry>,
        store: SharedStore,
        metrics: Arc<Metrics>,
        ids: Arc<BatchIds>,
        backlog: Arc<crate::backlog::Backlog>,
        attempt_log: Option<Arc<AttemptLog>>,
    ) -> Self {
        Self {
            ctx: Arc::new(LaneContext {
                settings,
                memory: AtomicU64::new(0),
                pending: Mutex::default(),
                registry,
                store,
                metrics,
                ids,
                backlog,
                attempt_log,
            }),
            lanes: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            activity: Mutex::default(),
        }
    }

    /// Bytes of events deliveries hold in memory now.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.ctx.memory.load(AtomicOrdering::Relaxed)
    }

    /// Queues a delivery on its webhook's lane; it counts in the backlog
    /// until it is delivered or dead-lettered.
    pub(crate) fn dispatch(&self, delivery: Delivery) {
        self.ctx.metrics.queue_depth.inc();
        self.ctx.backlog.add(delivery.backlog_bytes);
        let key = lane_key(&delivery);
        self.ctx.track(&delivery, key.clone());
        let mut lanes = self.lanes.lock().expect("lanes lock is never held across a panic");
        let sender = lanes.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let ctx = self.ctx.clone();
            let gauge = self
                .ctx
                .metrics
                .circuit_state
                .get_or_create(&WebhookLabels {
                    app: delivery.record.app_id.clone(),
                    webhook: delivery.webhook.log_id.to_string(),
                })
                .clone();
            let label = format!("{}/{}", delivery.record.app_id, delivery.webhook.log_id);
            let breaker = breaker::Breaker::new(&ctx.settings, gauge, label);
            let activity = self
                .activity
                .lock()
                .expect("activity lock is never held across a panic")
                .entry(key.clone())
                .or_default()
                .clone();
            self.tasks
                .lock()
                .expect("tasks lock is never held across a panic")
                .spawn(lane::run(ctx, rx, breaker, activity));
            tx
        });
        if let Err(unsent) = sender.send(delivery) {
            // Lanes only stop after `close`; reaching here is a shutdown race.
            tracing::error!(batch_id = %unsent.0.record.batch_id, "delivery queued after shutdown began; it is lost");
        }
    }

    /// When the first event of the oldest delivery not yet finished was
    /// accepted (ms since the Unix epoch); oldest by formation.
    pub(crate) fn oldest_pending_ms(&self) -> Option<u64> {
        let pending = self
            .ctx
            .pending
            .lock()
            .expect("pending lock is never held across a panic");
        pending.first_key_value().map(|(_, p)| p.accepted_ms)
    }

    /// What a webhook's lane has been doing; `None` before its first
    /// delivery.
    pub(crate) fn activity(&self, app_id: &Arc<str>, webhook_id: &Arc<str>) -> Option<Arc<WebhookActivity>> {
        let activity = self
            .activity
            .lock()
            .expect("activity lock is never held across a panic");
        activity.get(&(app_id.clone(), webhook_id.clone())).cloned()
    }

    /// Deliveries dispatched and not finished.
    pub(crate) fn pending_count(&self) -> usize {
        self.ctx
            .pending
            .lock()
            .expect("pending lock is never held across a panic")
            .len()
    }

    /// Every webhook's unfinished deliveries, by (app id, webhook id): one
    /// pass over them, for the admin API (not a hot path).
    pub(crate) fn backlogged(&self) -> HashMap<(Arc<str>, Arc<str>), Backlogged> {
        let pending = self
            .ctx
            .pending
            .lock()
            .expect("pending lock is never held across a panic");
        let mut by_lane: HashMap<(Arc<str>, Arc<str>), Backlogged> = HashMap::new();
        for p in pending.values() {
            let lane = by_lane.entry(p.lane.clone()).or_default();
            lane.deliveries += 1;
            lane.oldest_accepted_ms = Some(lane.oldest_accepted_ms.map_or(p.accepted_ms, |o| o.min(p.accepted_ms)));
        }
        by_lane
    }

    /// Stops taking deliveries and waits up to `grace` for every lane to
    /// finish what it holds. Returns whether everything finished.
    pub(crate) async fn drain(&self, grace: Duration) -> bool {
        self.lanes
            .lock()
            .expect("lanes lock is never held across a panic")
            .clear();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock is never held across a panic"));
        let all = async { while tasks.join_next().await.is_some() {} };
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_has_a_channel_only_when_all_its_events_share_it() {
        let one = r#"{"name":"a","channel":"c1"},{"name":"b","channel":"c1"}"#;
        assert_eq!(batch_channel(one).as_deref(), Some("c1"));
        let two = r#"{"name":"a","channel":"c1"},{"name":"b","channel":"c2"}"#;
        assert_eq!(batch_channel(two), None);
    }
}
