//! One webhook's lane: a queue of ready deliveries, a set of deliveries
//! waiting to be retried, and at most `max_in_flight` attempts at once
//! (one, in formation order, for `ordering: "strict"`), all behind the
//! webhook's circuit breaker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hookline_sink_api::{DeliveryError, RetryClass};
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::breaker::{Breaker, Health};
use super::rate_limit::TokenBucket;
use super::retry::{NextStep, next_step};
use super::{Delivery, LaneContext, now_ms};
use crate::activity::WebhookActivity;
use crate::config::Ordering;
use crate::event::{Event, join_events};
use crate::metrics::{DeliveryLabels, SinkLabels, WebhookLabels};
use crate::store::{Attempt, AttemptGuard, AttemptRecord, Commit, DeadLetter, DeliveryKey};
use crate::timer::sleep_until;

/// How often a lane paused by an unreachable store looks again.
const STORE_RECHECK: Duration = Duration::from_millis(100);

/// Runs until the lane's sender is dropped and everything it held is
/// delivered or dead-lettered.
pub(crate) async fn run(
    ctx: Arc<LaneContext>,
    mut incoming: mpsc::UnboundedReceiver<Delivery>,
    mut breaker: Breaker,
    activity: Arc<WebhookActivity>,
) {
    let mut ready: VecDeque<Delivery> = VecDeque::new();
    // Keyed by (due time, sequence) so equal due times keep their order.
    let mut waiting: BTreeMap<(Instant, u64), Delivery> = BTreeMap::new();
    let mut in_flight: JoinSet<Attempted> = JoinSet::new();
    // On a shared store: changes when this node stops holding a partition.
    let mut ownership = ctx.store.ownership_changes();
    let mut sequence = 0u64;
    let mut open = true;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut limiter = Limiter::default();

    loop {
        let stopped = start_ready(&ctx, &mut ready, &waiting, &mut in_flight, &mut breaker, &mut limiter);
        let store_says_wait = matches!(stopped, Stopped::StoreWait);
        let token_at = match stopped {
            Stopped::RateLimit(at) => Some(at),
            _ => None,
        };
        limiter.show(&ctx, &activity, ready.front(), token_at.is_some());
        activity.set_lane(in_flight.len(), breaker.circuit());
        if !open && ready.is_empty() && waiting.is_empty() && in_flight.is_empty() {
            return;
        }
        let next_due = waiting.keys().next().map(|(due, _)| *due);
        // Only a ready delivery can probe; with none, waiting for the circuit
        // would wake the loop for nothing.
        let reopens_at = if ready.is_empty() { None } else { breaker.reopens_at() };
        // A store that cannot be reached pauses attempts; look again soon.
        let paused = !ready.is_empty() && (store_says_wait || !ctx.store.delivery_allowed());
        tokio::select! {
            received = incoming.recv(), if open => match received {
                Some(mut delivery) => {
                    ctx.hold(&mut delivery);
                    // Recovered after a restart with its retry still ahead.
                    let wait = delivery.record.not_before_ms.saturating_sub(now_ms());
                    if wait > 0 {
                        sequence += 1;
                        waiting.insert((Instant::now() + Duration::from_millis(wait), sequence), delivery);
                    } else {
                        ready.push_back(delivery);
                    }
                }
                None => open = false,
            },
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                // Held until the result is recorded: a hand-over of the
                // partition waits for it.
                let (delivery, outcome, _attempt) = match joined {
                    Ok(done) => done,
                    Err(panic) => {
                        tracing::error!(error = %panic, "a delivery attempt panicked; its batch is lost");
                        continue;
                    }
                };
                let health = match &outcome {
                    Ok(()) => Health::Alive,
                    Err(error) => health(error),
                };
                breaker.record(health, Instant::now());
                match &outcome {
                    Ok(()) => activity.delivered(),
                    Err(error) => activity.failed(error.status(), error.to_string()),
                }
                match outcome {
                    Ok(()) => succeeded(&ctx, delivery).await,
                    Err(error) => {
                        if let Some((due, mut delivery)) = failed(&ctx, delivery, error, &mut ready, &mut rng).await {
                            ctx.release(&delivery);
                            ctx.hold(&mut delivery);
                            // In a strict lane this holds everything behind it:
                            // `start_ready` starts nothing while anything waits.
                            sequence += 1;
                            waiting.insert((due, sequence), delivery);
                        }
                    }
                }
            },
            Ok(()) = changed(&mut ownership), if ownership.is_some() => {
                let_go_of_others(&ctx, &mut ready, &mut waiting);
            }
            () = sleep_until(reopens_at), if reopens_at.is_some() => {}
            () = sleep_until(token_at), if token_at.is_some() => {}
            () = tokio::time::sleep(STORE_RECHECK), if paused => {}
            () = sleep_until(next_due), if next_due.is_some() => {
                let now = Instant::now();
                while let Some(entry) = waiting.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let delivery = entry.remove();
                    if delivery.webhook.ordering == Ordering::Strict {
                        ready.push_front(delivery);
                    } else {
                        ready.push_back(delivery);
                    }
                }
            },
        }
    }
}

/// What an attempt task gives back: the delivery, the outcome, and the
/// store's guard for the attempt.
type Attempted = (Delivery, Result<(), DeliveryError>, AttemptGuard);

/// Resolves when the watched value changes; never without a watch.
async fn changed(watch: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Result<(), ()> {
    match watch {
        Some(watch) => watch.changed().await.map_err(drop),
        None => std::future::pending().await,
    }
}

/// Lets go of the deliveries whose partition this node no longer holds
/// (their new owner resumes them from the store).
fn let_go_of_others(
    ctx: &LaneContext,
    ready: &mut VecDeque<Delivery>,
    waiting: &mut BTreeMap<(Instant, u64), Delivery>,
) {
    let mine = |d: &Delivery| !matches!(ctx.store.begin_attempt(d.record.key), Attempt::Elsewhere);
    let (kept, gone): (VecDeque<Delivery>, VecDeque<Delivery>) = ready.drain(..).partition(|d| mine(d));
    *ready = kept;
    for delivery in gone {
        let_go(ctx, delivery);
    }
    let gone: Vec<(Instant, u64)> = waiting.iter().filter(|(_, d)| !mine(d)).map(|(k, _)| *k).collect();
    for key in gone {
        if let Some(delivery) = waiting.remove(&key) {
            let_go(ctx, delivery);
        }
    }
}

/// Lets go of a delivery another node now owns.
fn let_go(ctx: &LaneContext, delivery: Delivery) {
    tracing::debug!(app = %delivery.record.app_id, webhook = %delivery.webhook.log_id, batch_id = %delivery.record.batch_id,
        "partition handed to another node: letting the delivery go");
    ctx.store.let_go(delivery.record.key);
    finish(ctx, &delivery);
}

/// Why [`start_ready`] stopped.
enum Stopped {
    /// Nothing is ready, or the lane is full, or the circuit holds it.
    Done,
    /// The store asked to wait before the next attempt (look again soon).
    StoreWait,
    /// The next attempt waits for a rate-limit token, there at this time.
    RateLimit(Instant),
}

/// The lane's rate limit: the webhook's token bucket (while its config
/// has a `rate_limit`), and the delivery whose wait was last counted.
#[derive(Default)]
struct Limiter {
    bucket: Option<TokenBucket>,
    counted: Option<DeliveryKey>,
}

impl Limiter {
    /// Takes a token for the delivery at the front, or says when to look
    /// again.
    fn take(&mut self, front: &Delivery) -> Result<(), Instant> {
        let Some(limit) = front.webhook.rate_limit else {
            self.bucket = None;
            return Ok(());
        };
        let now = Instant::now();
        let bucket = self.bucket.get_or_insert_with(|| TokenBucket::new(limit, now));
        bucket.follow(limit, now);
        bucket.take(now)
    }

    /// Gives back a token taken for an attempt that did not start.
    fn refund(&mut self) {
        if let Some(bucket) = &mut self.bucket {
            bucket.refund();
        }
    }

    /// Shows whether the front delivery waits for a token, counting each
    /// delivery's wait once (in the metrics and on the status page).
    fn show(&mut self, ctx: &LaneContext, activity: &WebhookActivity, front: Option<&Delivery>, waiting: bool) {
        let first = match front {
            Some(front) if waiting && self.counted != Some(front.record.key) => {
                self.counted = Some(front.record.key);
                ctx.metrics
                    .rate_limited
                    .get_or_create(&WebhookLabels {
                        app: front.record.app_id.clone(),
                        webhook: front.webhook.log_id.to_string(),
                    })
                    .inc();
                true
            }
            _ => false,
        };
        activity.set_rate_limited(waiting, first);
    }
}

/// Starts attempts while the lane has room, and says why it stopped.
fn start_ready(
    ctx: &Arc<LaneContext>,
    ready: &mut VecDeque<Delivery>,
    waiting: &BTreeMap<(Instant, u64), Delivery>,
    in_flight: &mut JoinSet<Attempted>,
    breaker: &mut Breaker,
    limiter: &mut Limiter,
) -> Stopped {
    if !ctx.store.delivery_allowed() {
        return Stopped::Done;
    }
    while let Some(front) = ready.front() {
        let (limit, strict) = match front.webhook.ordering {
            Ordering::Strict => (1, true),
            Ordering::None => (front.webhook.max_in_flight, false),
        };
        // A strict lane holds everything behind a batch waiting to retry.
        if in_flight.len() >= limit
            || (strict && !waiting.is_empty())
            || !breaker.allows(in_flight.len(), Instant::now())
        {
            return Stopped::Done;
        }
        // Waiting for a token is neither an attempt nor a failure.
        if let Err(at) = limiter.take(front) {
            return Stopped::RateLimit(at);
        }
        // No attempt starts unless this node surely holds the partition.
        let guard = match ctx.store.begin_attempt(front.record.key) {
            Attempt::Start(guard) => guard,
            Attempt::Wait => {
                limiter.refund();
                return Stopped::StoreWait;
            }
            Attempt::Elsewhere => {
                limiter.refund();
                let delivery = ready.pop_front().expect("front() was Some");
                let_go(ctx, delivery);
                continue;
            }
        };
        let delivery = ready.pop_front().expect("front() was Some");
        let ctx = ctx.clone();
        in_flight.spawn(async move {
            let mut delivery = delivery;
            // A panicking sink must not take the delivery (and its share of
            // the backlog) with it: it counts as a failed attempt.
            let attempt = std::panic::AssertUnwindSafe(ctx.attempt(&mut delivery)).catch_unwind();
            let outcome = attempt.await.unwrap_or_else(|_| {
                Err(DeliveryError::Transient(
                    "the sink panicked during the attempt".to_string(),
                ))
            });
            (delivery, outcome, guard)
        });
    }
    Stopped::Done
}

async fn succeeded(ctx: &LaneContext, delivery: Delivery) {
    let record = &delivery.record;
    ctx.metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            sink: delivery.webhook.kind,
            outcome: "success",
        })
        .inc();
    ctx.metrics
        .events_delivered
        .get_or_create(&SinkLabels {
            sink: delivery.webhook.kind,
        })
        .inc_by(record.event_count as u64);
    let age_ms = now_ms().saturating_sub(record.accepted_ms);
    ctx.metrics.delivery_latency.observe(age_ms as f64 / 1000.0);
    tracing::debug!(app = %record.app_id, webhook = %delivery.webhook.log_id, batch_id = %record.batch_id,
        events = record.event_count, "delivered");
    ctx.store.delivered(record.key);
    finish(ctx, &delivery);
}

/// What a failed attempt says about the endpoint: a throttle (429, with or
/// without `Retry-After`) is neither a success nor a sign of ill health.
fn health(error: &DeliveryError) -> Health {
    let throttled = matches!(error, DeliveryError::Throttled { .. })
        || error.status() == Some(429)
        || matches!(error.retry_class(), RetryClass::RetryAfter(_));
    match error.retry_class() {
        _ if throttled => Health::Throttled,
        RetryClass::Retry { .. } => Health::Unwell,
        _ => Health::Alive,
    }
}

/// Handles a failed attempt; returns the delivery and when to retry it, or
/// `None` when it was split or dead-lettered.
async fn failed(
    ctx: &LaneContext,
    mut delivery: Delivery,
    error: DeliveryError,
    ready: &mut VecDeque<Delivery>,
    rng: &mut rand::rngs::StdRng,
) -> Option<(Instant, Delivery)> {
    let class = error.retry_class();
    let record = &mut delivery.record;
    // A throttle (429, with or without `Retry-After`) is a wait the target
    // asked for, not a failed attempt.
    if health(&error) != Health::Throttled {
        record.attempts += 1;
    }
    record.history.push(AttemptRecord {
        at_ms: now_ms(),
        status: error.status(),
        error: error.to_string(),
    });
    // Keep the first attempts and the latest ones: a day of retries must not
    // grow a record without bound.
    if record.history.len() > HISTORY_KEPT {
        record.history.remove(HISTORY_FIRST_KEPT);
    }
    let age = Duration::from_millis(now_ms().saturating_sub(record.window_start()));
    // Failed tries in the current retry window (a replay opens a new one).
    let window_start = record.window_start();
    let failures = record.history.iter().filter(|a| a.at_ms >= window_start).count();
    let failures = u32::try_from(failures).unwrap_or(u32::MAX);
    let step = next_step(class, &delivery.webhook.retry, record.attempts, failures, age, rng);
    let outcome = match step {
        NextStep::RetryIn(_) => "retry",
        NextStep::Split => "split",
        NextStep::GiveUp(_) => "dead_letter",
    };
    ctx.metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            sink: delivery.webhook.kind,
            outcome,
        })
        .inc();
    if let NextStep::RetryIn(delay) = step {
        delivery.record.not_before_ms = now_ms() + delay.as_millis() as u64;
    }
    let record = &delivery.record;
    match step {
        NextStep::RetryIn(delay) => {
            tracing::warn!(app = %record.app_id, webhook = %delivery.webhook.log_id, target = %delivery.webhook.sink.describe(), batch_id = %record.batch_id,
                attempts = record.attempts, %error, retry_in_ms = delay.as_millis() as u64, "delivery failed, retrying");
            ctx.store.record_failure(record);
            Some((Instant::now() + delay, delivery))
        }
        NextStep::Split if record.event_count > 1 => {
            tracing::warn!(app = %record.app_id, webhook = %delivery.webhook.log_id, batch_id = %record.batch_id,
                events = record.event_count, %error, "batch too large for the target, splitting");
            let halves = match split(ctx, &delivery) {
                Ok(halves) => halves,
                Err(problem) => {
                    let reason = format!("too large for the target, and its events cannot be split: {problem}");
                    dead_letter(ctx, delivery, reason).await;
                    return None;
                }
            };
            let commit = Commit {
                marks: Vec::new(),
                deliveries: halves.iter().map(|d| d.record.clone()).collect(),
                retired: Some(record.key),
            };
            if let Err(store_error) = ctx.store.commit(commit).await {
                // Splitting must replace the parent in the store, or a
                // restart would send its events again under the parent's id.
                tracing::error!(error = %store_error, batch_id = %record.batch_id,
                    "could not store the split halves; retrying the whole batch later");
                return Some((Instant::now() + STORE_RETRY, delivery));
            }
            for mut half in halves {
                ctx.metrics.queue_depth.inc();
                ctx.backlog.add(half.backlog_bytes);
                ctx.track(&half, super::lane_key(&half));
                ctx.hold(&mut half);
                ready.push_front(half);
            }
            finish(ctx, &delivery);
            None
        }
        NextStep::Split => {
            let reason = format!("a single event is larger than the target accepts: {error}");
            dead_letter(ctx, delivery, reason).await;
            None
        }
        NextStep::GiveUp(reason) => {
            let reason = format!("{reason}: {error}");
            dead_letter(ctx, delivery, reason).await;
            None
        }
    }
}

/// Splits a delivery's events in two halves, each with its own batch id.
/// Fails only if the stored events no longer parse (they were canonical
/// JSON when stored).
fn split(ctx: &LaneContext, delivery: &Delivery) -> Result<Vec<Delivery>, String> {
    let events = Event::parse_joined(&delivery.record.events)?;
    let mid = events.len() / 2;
    let mut halves = Vec::with_capacity(2);
    for (part, chunk) in [&events[..mid], &events[mid..]].into_iter().enumerate() {
        let (key, _) = ctx.ids.next();
        let mut record = delivery.record.clone();
        record.key = key;
        record.batch_id = format!("{}.{}", delivery.record.batch_id, part + 1);
        record.events = join_events(chunk).into();
        record.event_count = chunk.len();
        record.history.clear();
        record.attempts = 0;
        record.not_before_ms = 0;
        let mut half = Delivery::new(record, delivery.webhook.clone(), delivery.on_disk);
        half.trace.clone_from(&delivery.trace);
        halves.push(half);
    }
    // Second half behind the first, both ahead of the queue.
    halves.reverse();
    Ok(halves)
}

async fn dead_letter(ctx: &LaneContext, delivery: Delivery, reason: String) {
    let record = &delivery.record;
    tracing::error!(app = %record.app_id, webhook = %delivery.webhook.log_id, target = %delivery.webhook.sink.describe(),
        batch_id = %record.batch_id, attempts = record.attempts, %reason, "delivery dead-lettered");
    let letter = DeadLetter {
        record: delivery.record.clone(),
        reason,
        dead_at_ms: now_ms(),
    };
    if let Err(error) = ctx.store.dead_letter(letter).await {
        tracing::error!(%error, batch_id = %record.batch_id, "could not store a dead letter");
    }
    finish(ctx, &delivery);
}

/// Releases a finished delivery's share of the backlog and of memory.
fn finish(ctx: &LaneContext, delivery: &Delivery) {
    ctx.metrics.queue_depth.dec();
    ctx.release(delivery);
    ctx.pending
        .lock()
        .expect("pending lock is never held across a panic")
        .remove(&delivery.record.key);
    ctx.backlog.remove(delivery.backlog_bytes);
}

/// When storing a split failed, how long until the batch is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Attempts kept in a record's history: the first few and the latest.
const HISTORY_KEPT: usize = 50;
/// Of those, how many are the first attempts.
const HISTORY_FIRST_KEPT: usize = 10;
