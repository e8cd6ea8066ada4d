//! Per-app batching and routing: events accepted for an app collect in its
//! open batch until `max_wait_ms` or `max_events`; then, for each webhook,
//! the matching events become one delivery (split to fit the sink), stored
//! and handed to the dispatcher.
//!
//! Each event travels with the app config it was accepted under, and a
//! batch never mixes configs: an event under a new config first closes the
//! batch open under the old one. So a config change never reroutes an
//! accepted event.
//!
//! Formed deliveries are stored before they are dispatched, together with
//! the inbox progress they make (see [`crate::store`]). A batcher commits
//! everything it formed from the messages waiting for it in one
//! transaction, so with batching off, concurrent events still share fsyncs.
//!
//! An app with WASM filters gets a filter stage beside its batcher: closed
//! batches wait in a bounded queue (`hookline_filter_queue_batches`), are
//! filtered a few at a time off the async workers, and are formed, stored
//! and dispatched in the order they closed. So batching goes on while
//! filters run, and a chain slower than ingest fills the queue and then the
//! intake budget (503), instead of memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backlog::{Backlog, IntakePermit};
use crate::config::{App, Webhook};
use crate::delivery::{BODY_OVERHEAD, BatchIds, Delivery, Dispatcher, now_ms};
use crate::event::{Event, join_events};
use crate::filter::{ChainOutcome, run_off_workers};
use crate::metrics::Metrics;
use crate::store::{Commit, DeliveryRecord, InboxMark, InboxTicket, SharedStore};
use crate::timer::sleep_until;
use crate::trace::Origin;

enum Message {
    /// Events accepted under this config: one request's, from its inbox
    /// ticket, the first being the ticket's `offset`-th event.
    Events {
        app: Arc<App>,
        events: Vec<Event>,
        ticket: InboxTicket,
        offset: u32,
        /// Their share of the intake budget, returned once they are stored.
        permit: Option<IntakePermit>,
        /// The span of the request that accepted them, when traced.
        origin: Option<Origin>,
    },
    /// The app's config changed or it was removed: close the open batch now.
    ConfigChanged,
}

/// What every app's batcher shares.
#[derive(Debug)]
struct Shared {
    dispatcher: Arc<Dispatcher>,
    store: SharedStore,
    metrics: Arc<Metrics>,
    ids: Arc<BatchIds>,
    backlog: Arc<Backlog>,
    /// Shutdown has begun: a failing store is not waited for.
    stopping: AtomicBool,
}

/// The batchers of all apps, one task each, started on an app's first event.
#[derive(Debug)]
pub(crate) struct Batchers {
    shared: Arc<Shared>,
    senders: Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<Message>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Batchers {
    /// Batchers handing their deliveries to `dispatcher`.
    pub(crate) fn new(
        dispatcher: Arc<Dispatcher>,
        store: SharedStore,
        metrics: Arc<Metrics>,
        ids: Arc<BatchIds>,
        backlog: Arc<Backlog>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                dispatcher,
                store,
                metrics,
                ids,
                backlog,
                stopping: AtomicBool::new(false),
            }),
            senders: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Adds one request's accepted events (its inbox `ticket`'s events from
    /// the `offset`-th on) to their app's open batch.
    pub(crate) fn push(
        &self,
        app: Arc<App>,
        events: Vec<Event>,
        ticket: InboxTicket,
        offset: u32,
        permit: Option<IntakePermit>,
        origin: Option<Origin>,
    ) {
        let mut senders = self.senders.lock().expect("senders lock is never held across a panic");
        let sender = senders.entry(app.id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.tasks
                .lock()
                .expect("tasks lock is never held across a panic")
                .spawn(run(self.shared.clone(), rx));
            tx
        });
        let message = Message::Events {
            app,
            events,
            ticket,
            offset,
            permit,
            origin,
        };
        if sender.send(message).is_err() {
            tracing::error!("events pushed after shutdown began; ingest should have refused them");
        }
    }

    /// Closes the open batch of each of these apps now (their config changed).
    pub(crate) fn config_changed<'a>(&self, app_ids: impl IntoIterator<Item = &'a Arc<str>>) {
        let senders = self.senders.lock().expect("senders lock is never held across a panic");
        for id in app_ids {
            if let Some(sender) = senders.get(id) {
                let _ = sender.send(Message::ConfigChanged);
            }
        }
    }

    /// Closes every open batch, hands it to the dispatcher and stops.
    pub(crate) async fn flush_and_stop(&self) {
        self.shared.stopping.store(true, AtomicOrdering::Release);
        self.senders
            .lock()
            .expect("senders lock is never held across a panic")
            .clear();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock is never held across a panic"));
        while tasks.join_next().await.is_some() {}
    }
}

struct OpenBatch {
    app: Arc<App>,
    events: Vec<Event>,
    /// Inbox progress the batch makes once stored.
    marks: Vec<InboxMark>,
    closes_at: Instant,
    /// When its first event arrived (ms since the Unix epoch).
    opened_ms: u64,
    /// The spans of the requests its events came from, when traced.
    origins: Vec<Origin>,
}

impl OpenBatch {
    fn add_origin(&mut self, origin: Option<&Origin>) {
        if let Some(origin) = origin
            && self.origins.last() != Some(origin)
        {
            self.origins.push(origin.clone());
        }
    }
}

/// Deliveries formed but not yet stored, and the inbox progress they make.
#[derive(Default)]
struct Formed {
    deliveries: Vec<Delivery>,
    marks: Vec<InboxMark>,
    /// Bytes of the app batches they came from (leaving the inbox backlog).
    consumed_bytes: u64,
    /// Intake budget held by the events they came from.
    permits: Vec<IntakePermit>,
}

/// Stores (then dispatches) once this many deliveries are formed, even if
/// more messages wait.
const MAX_UNSTORED: usize = 1024;

async fn run(shared: Arc<Shared>, mut incoming: mpsc::UnboundedReceiver<Message>) {
    let mut open: Option<OpenBatch> = None;
    let mut formed = Formed::default();
    let mut stage = Stage::default();
    loop {
        let closes_at = open.as_ref().map(|b| b.closes_at);
        tokio::select! {
            message = incoming.recv() => match message {
                Some(Message::Events { app, events, ticket, offset, permit, origin }) => {
                    let total = offset + events.len() as u32;
                    for (i, event) in (offset..).zip(events) {
                        let mark = InboxMark { ticket, consumed: i + 1, complete: i + 1 == total };
                        if open.as_ref().is_some_and(|b| !Arc::ptr_eq(&b.app, &app)) {
                            close(&shared, open.take(), &mut formed, &mut stage).await;
                        }
                        if !app.batching.enabled {
                            let alone = OpenBatch {
                                app: app.clone(),
                                events: vec![event],
                                marks: vec![mark],
                                closes_at: Instant::now(),
                                opened_ms: now_ms(),
                                origins: origin.iter().cloned().collect(),
                            };
                            close(&shared, Some(alone), &mut formed, &mut stage).await;
                            continue;
                        }
                        let batch = open.get_or_insert_with(|| OpenBatch {
                            app: app.clone(),
                            events: Vec::new(),
                            marks: Vec::new(),
                            closes_at: Instant::now() + Duration::from_millis(app.batching.max_wait_ms),
                            opened_ms: now_ms(),
                            origins: Vec::new(),
                        });
                        batch.events.push(event);
                        batch.add_origin(origin.as_ref());
                        match batch.marks.last_mut() {
                            Some(last) if last.ticket == ticket => *last = mark,
                            _ => batch.marks.push(mark),
                        }
                        if batch.events.len() >= app.batching.max_events {
                            close(&shared, open.take(), &mut formed, &mut stage).await;
                        }
                    }
                    // Every event of this request is in a batch now (closed,
                    // or the open one): its budget goes with the next batch
                    // handed on, and is returned once that is stored.
                    match &stage.sender {
                        Some(_) => stage.permits.extend(permit),
                        None => formed.permits.extend(permit),
                    }
                }
                Some(Message::ConfigChanged) => close(&shared, open.take(), &mut formed, &mut stage).await,
                None => {
                    close(&shared, open.take(), &mut formed, &mut stage).await;
                    store_and_dispatch(&shared, std::mem::take(&mut formed)).await;
                    stage.finish().await;
                    return;
                }
            },
            () = sleep_until(closes_at), if closes_at.is_some() => close(&shared, open.take(), &mut formed, &mut stage).await,
        }
        if incoming.is_empty() || formed.deliveries.len() >= MAX_UNSTORED {
            store_and_dispatch(&shared, std::mem::take(&mut formed)).await;
        }
    }
}

/// Forms a closed batch's deliveries here, or hands the batch to the app's
/// filter stage once the app has filters.
async fn close(shared: &Arc<Shared>, batch: Option<OpenBatch>, formed: &mut Formed, stage: &mut Stage) {
    let Some(batch) = batch else { return };
    if stage.sender.is_none() && batch.app.webhooks.iter().any(|w| !w.filters.is_empty()) {
        // What was formed here is stored first, and from now on every batch
        // of the app goes through the stage: deliveries keep the order they
        // were formed in.
        store_and_dispatch(shared, std::mem::take(formed)).await;
        stage.start(shared.clone());
    }
    let Some(sender) = &stage.sender else {
        let filtered = filter(&batch).await;
        form(shared, batch, filtered, formed);
        return;
    };
    let closed = ClosedBatch {
        batch,
        permits: std::mem::take(&mut stage.permits),
    };
    shared.metrics.filter_queue.inc();
    // A full queue holds the batcher here; its requests' budget stays taken,
    // so ingest answers 503 rather than events piling up in memory.
    if sender.send(closed).await.is_err() {
        shared.metrics.filter_queue.dec();
        tracing::error!("an app's filter stage stopped early; its events stay in the inbox for the next start");
    }
}

/// An app batch closed and on its way to the app's filter stage, with the
/// budget of the requests whose events are all in it or in earlier ones.
struct ClosedBatch {
    batch: OpenBatch,
    permits: Vec<IntakePermit>,
}

/// Closed batches waiting in one app's filter stage, at most.
const FILTER_QUEUE_BATCHES: usize = 32;
/// Batches one app's filter stage filters at once (each on a blocking
/// thread; more would only add instances and memory on a small machine).
const FILTER_CONCURRENCY: usize = 2;

/// An app's filter stage, beside its batcher: filters closed batches
/// (a few at once), forms their deliveries in order, stores and dispatches
/// them. A slow chain fills its bounded queue and shows as backpressure,
/// not as memory.
#[derive(Default)]
struct Stage {
    sender: Option<mpsc::Sender<ClosedBatch>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Budget of requests whose events are all batched, for the next batch
    /// handed on.
    permits: Vec<IntakePermit>,
}

impl Stage {
    fn start(&mut self, shared: Arc<Shared>) {
        let (sender, receiver) = mpsc::channel(FILTER_QUEUE_BATCHES);
        self.sender = Some(sender);
        self.task = Some(tokio::spawn(run_stage(shared, receiver)));
    }

    /// Lets the stage finish what it holds.
    async fn finish(mut self) {
        self.sender = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn run_stage(shared: Arc<Shared>, mut incoming: mpsc::Receiver<ClosedBatch>) {
    use futures_util::StreamExt;
    let mut running = futures_util::stream::FuturesOrdered::new();
    let mut formed = Formed::default();
    let mut open = true;
    loop {
        tokio::select! {
            closed = incoming.recv(), if open && running.len() < FILTER_CONCURRENCY => match closed {
                Some(closed) => running.push_back(async move {
                    let filtered = filter(&closed.batch).await;
                    (closed, filtered)
                }),
                None => open = false,
            },
            Some((closed, filtered)) = running.next(), if !running.is_empty() => {
                shared.metrics.filter_queue.dec();
                formed.permits.extend(closed.permits);
                form(&shared, closed.batch, filtered, &mut formed);
                if incoming.is_empty() || formed.deliveries.len() >= MAX_UNSTORED {
                    store_and_dispatch(&shared, std::mem::take(&mut formed)).await;
                }
            }
            else => break,
        }
    }
    store_and_dispatch(&shared, formed).await;
}

/// A batch through each webhook's selection and filters.
struct Filtered {
    batch_time_ms: u64,
    /// Per webhook of the app, in order.
    results: Vec<FilterResult>,
    /// The batch's span, which its deliveries' attempts are children of.
    trace: Option<Origin>,
}

async fn filter(batch: &OpenBatch) -> Filtered {
    let (app, events) = (&batch.app, &batch.events);
    let span = crate::trace::batch_span(&app.id, events.len(), &batch.origins);
    let batch_time_ms = now_ms();
    let mut results = Vec::with_capacity(app.webhooks.len());
    for webhook in &app.webhooks {
        results.push(run_filters(app, webhook, batch_time_ms, events, &span).await);
    }
    Filtered {
        batch_time_ms,
        results,
        trace: crate::trace::context_of(&span),
    }
}

/// Routes one filtered app batch to its webhooks: the deliveries join
/// `formed`.
fn form(shared: &Shared, batch: OpenBatch, filtered: Filtered, formed: &mut Formed) {
    formed.marks.extend(batch.marks);
    if batch.events.is_empty() {
        return;
    }
    shared.metrics.batches_formed.inc();
    let app = &batch.app;
    for (webhook, result) in app.webhooks.iter().zip(filtered.results) {
        let (selected, pending_filter) = match result {
            FilterResult::Deliver(events) => (events, false),
            FilterResult::Retry(events) => (events, true),
            FilterResult::Nothing => continue,
        };
        let refs: Vec<&Event> = selected.iter().collect();
        let groups = if webhook.sink.batches_per_channel() {
            group_by_channel(&refs)
        } else {
            vec![refs]
        };
        for group in &groups {
            for chunk in chunk_to_fit(group, webhook.max_body_bytes) {
                let mut delivery = new_delivery(shared, app, webhook, chunk, filtered.batch_time_ms);
                delivery.trace.clone_from(&filtered.trace);
                delivery.record.accepted_ms = batch.opened_ms;
                delivery.record.pending_filter = pending_filter;
                formed.deliveries.push(delivery);
            }
        }
    }
    formed.consumed_bytes += batch.events.iter().map(|e| e.len() as u64).sum::<u64>();
}

/// First wait between attempts to store formed deliveries.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between them.
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);
/// Stores formed deliveries, then dispatches them. While the store fails,
/// it retries (ingest answers 503 meanwhile, and the intake budget holds
/// further events back): a delivery is never sent before it is stored, so a
/// crash can never send its events again under another batch id. If
/// shutdown comes first, the deliveries are dropped unsent: their events
/// are still in the inbox and are batched at the next start.
async fn store_and_dispatch(shared: &Shared, formed: Formed) {
    if formed.deliveries.is_empty() && formed.marks.is_empty() {
        return;
    }
    let commit = Commit {
        marks: formed.marks,
        deliveries: formed.deliveries.iter().map(|d| d.record.clone()).collect(),
        retired: None,
    };
    let mut wait = STORE_RETRY_FIRST;
    loop {
        match shared.store.commit(commit.clone()).await {
            Ok(()) => break,
            Err(error) if error.is_not_owner() => {
                tracing::info!(%error, deliveries = formed.deliveries.len(),
                    "formed batches dropped here: the partition's new owner batches their events again from the inbox");
                shared.backlog.remove(formed.consumed_bytes);
                return;
            }
            Err(error) if shared.stopping.load(AtomicOrdering::Acquire) => {
                tracing::error!(%error, deliveries = formed.deliveries.len(),
                    "could not store formed batches before shutdown; their events stay in the inbox for the next start");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "could not store formed batches");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(STORE_RETRY_MAX);
            }
        }
    }
    // The dispatcher counts the deliveries in the backlog as it takes them.
    shared.backlog.remove(formed.consumed_bytes);
    for delivery in formed.deliveries {
        shared.dispatcher.dispatch(delivery);
    }
}

enum FilterResult {
    Deliver(Vec<Event>),
    /// A filter asked for a retry: deliver these unfiltered events only after
    /// the chain succeeds on them.
    Retry(Vec<Event>),
    Nothing,
}

/// The events of `batch` that `webhook` wants, through its filter chain
/// (off the async workers).
async fn run_filters(
    app: &Arc<App>,
    webhook: &Arc<Webhook>,
    batch_time_ms: u64,
    batch: &[Event],
    batch_span: &tracing::Span,
) -> FilterResult {
    let selected = || -> Vec<Event> { select_for(webhook, batch).into_iter().cloned().collect() };
    let events = selected();
    if events.is_empty() {
        return FilterResult::Nothing;
    }
    if webhook.filters.is_empty() {
        return FilterResult::Deliver(events);
    }
    // At start, the chain may still be compiling: the batch waits here, as
    // behind a slow filter (one that failed to load asks for a retry).
    let _ = webhook.filters.ready().await;
    let (app_id, hook) = (app.id.clone(), webhook.clone());
    let span = crate::trace::filter_span(batch_span, &webhook.log_id, events.len());
    let outcome = tracing::Instrument::instrument(
        run_off_workers(move || hook.filters.run(&app_id, &hook.id, batch_time_ms, events)),
        span,
    )
    .await;
    match outcome {
        Ok(ChainOutcome::Deliver(events)) => FilterResult::Deliver(events),
        Ok(ChainOutcome::Drop(reason)) => {
            tracing::debug!(app = %app.id, webhook = %webhook.log_id, %reason, "filters delivered nothing");
            FilterResult::Nothing
        }
        Ok(ChainOutcome::Retry { events, .. }) => FilterResult::Retry(events),
        Err(panic) => {
            tracing::error!(app = %app.id, webhook = %webhook.log_id, error = %panic, "the filter chain panicked; retrying the batch");
            FilterResult::Retry(selected())
        }
    }
}

fn new_delivery(shared: &Shared, app: &App, webhook: &Arc<Webhook>, events: &[&Event], batch_time_ms: u64) -> Delivery {
    let (key, batch_id) = shared.ids.next();
    let joined = join_events(events);
    let record = DeliveryRecord {
        key,
        batch_id,
        app_id: app.id.to_string(),
        webhook_id: webhook.id.to_string(),
        events: joined.into(),
        event_count: events.len(),
        batch_time_ms,
        accepted_ms: batch_time_ms,
        attempts: 0,
        history: Vec::new(),
        pending_filter: false,
        not_before_ms: 0,
        window_start_ms: None,
    };
    Delivery::new(record, webhook.clone(), true)
}

/// The events of an app batch that `webhook` wants (`event_types` and its
/// channel filter), in order.
pub fn select_for<'e>(webhook: &Webhook, events: &'e [Event]) -> Vec<&'e Event> {
    events.iter().filter(|e| webhook.wants(&e.name, &e.channel)).collect()
}

/// Splits events into one group per channel, in the order the channels
/// first appear, each keeping its events' order.
pub(crate) fn group_by_channel<'e>(events: &[&'e Event]) -> Vec<Vec<&'e Event>> {
    let mut groups: Vec<Vec<&'e Event>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for &event in events {
        let slot = *index.entry(&event.channel).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(event);
    }
    groups
}

/// Splits events so each body stays within `limit` bytes. An event too large
/// on its own goes alone; the sink's refusal then dead-letters it.
pub fn chunk_to_fit<'a, 'e>(events: &'a [&'e Event], limit: Option<usize>) -> Vec<&'a [&'e Event]> {
    if events.is_empty() {
        return Vec::new();
    }
    let Some(limit) = limit else {
        return vec![events];
    };
    let mut chunks = Vec::new();
    let (mut start, mut size) = (0, BODY_OVERHEAD);
    for (i, event) in events.iter().enumerate() {
        let add = event.len() + usize::from(i > start);
        if i > start && size + add > limit {
            chunks.push(&events[start..i]);
            start = i;
            size = BODY_OVERHEAD + event.len();
        } else {
            size += add;
        }
    }
    chunks.push(&events[start..]);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(size: usize) -> Event {
        let pad = "x".repeat(size - 25);
        let json = format!(r#"{{"name":"n","channel":"{pad}"}}"#);
        assert_eq!(json.len(), size);
        Event {
            name: "n".into(),
            channel: pad.into(),
            json: json.into(),
        }
    }

    #[test]
    fn chunks_respect_the_limit() {
        // The largest `time_ms` a body carries for ages (16 digits).
        let rendered =
            |chunk: &[&Event]| crate::delivery::render_body(9_999_999_999_999_999, &join_events(chunk)).len();
        let events: Vec<Event> = (0..10).map(|_| event(100)).collect();
        let refs: Vec<&Event> = events.iter().collect();
        // The limit is what a rendered body of three events measures.
        let limit = rendered(&refs[..3]);
        let chunks = chunk_to_fit(&refs, Some(limit));
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        for chunk in &chunks {
            assert!(rendered(chunk) <= limit, "{} > {limit}", rendered(chunk));
        }
        // Each full chunk is as large as fits: one more event would not.
        assert!(rendered(&refs[..4]) > limit);
        assert_eq!(chunk_to_fit(&refs, None).len(), 1);
        let big = [event(500)];
        let refs: Vec<&Event> = big.iter().collect();
        assert_eq!(chunk_to_fit(&refs, Some(200)).len(), 1, "an oversize event goes alone");
    }

    #[test]
    fn channel_groups_keep_first_appearance_and_event_order() {
        let on = |channel: &str, n: u32| Event {
            name: "n".into(),
            channel: channel.into(),
            json: format!(r#"{{"name":"n","channel":"{channel}","data":"{n}"}}"#).into(),
        };
        let events = [on("b", 1), on("a", 2), on("b", 3), on("c", 4), on("a", 5)];
        let refs: Vec<&Event> = events.iter().collect();
        let groups = group_by_channel(&refs);
        let shape: Vec<Vec<&str>> = groups.iter().map(|g| g.iter().map(|e| &*e.json).collect()).collect();
        assert_eq!(
            shape,
            vec![
                vec![&*events[0].json, &*events[2].json],
                vec![&*events[1].json, &*events[4].json],
                vec![&*events[3].json],
            ]
        );
    }
}
