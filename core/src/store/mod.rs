//! The queue/store seam: where accepted events and formed batches live
//! until they are delivered or dead-lettered.
//!
//! The pipeline talks to a [`Store`] only through this trait, so the
//! embedded store here and a shared one (Redis Streams, for several
//! instances) are interchangeable without reshaping the pipeline.
//!
//! The life of an event in the store:
//! 1. [`Store::accept`]: ingest hands over a request's events and gets an
//!    inbox ticket; once the call returns, ingest may answer 2xx (with
//!    `durability = "fsync"`: they are on disk).
//! 2. [`Store::commit`]: the batcher formed deliveries; in one transaction
//!    they are stored and the inbox events they consumed are released
//!    (tracked per ticket, so an event is never batched twice).
//! 3. [`Store::record_failure`] after each failed attempt, then
//!    [`Store::delivered`] or [`Store::dead_letter`].
//!
//! Ownership: a store decides which node batches and delivers an app's
//! events. [`Store::run_ownership`] hands the engine's [`Owner`] what it
//! comes to own — at start, what was in flight before the restart (inbox
//! events not yet batched, deliveries with their attempt state); with a
//! shared store, also what a node that died left behind, and the events
//! other nodes accepted. The embedded store has one partition, always
//! owned by its one node, and [`Store::accept`] hands events straight back
//! ([`Accepted::Here`]). A shared store answers [`Accepted::ByOwner`]: the
//! partition's owner, maybe another node, reads them from the store.

mod codec;
mod durable;
mod journal;

/// The clock records are stamped with: milliseconds since the Unix epoch.
pub use crate::delivery::now_ms;
pub use durable::{DurableStore, STORE_FILE};
/// What the store's asynchronous calls return (a boxed, `Send` future).
pub use futures_util::future::BoxFuture;
pub use journal::JOURNAL_FILE;
pub(crate) use journal::check_reader as check_journal_reader;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Identifies one stored delivery (one batch for one webhook).
pub type DeliveryKey = u64;

/// Identifies one accepted request's events in the inbox.
pub type InboxTicket = u64;

/// What the store keeps of a delivery. The events are stored beside this
/// metadata, not inside it (they are already JSON text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The store's key.
    pub key: DeliveryKey,
    /// `X-Hookline-Batch-Id`.
    pub batch_id: String,
    /// The app the events were accepted for.
    pub app_id: String,
    /// The webhook id.
    pub webhook_id: String,
    /// The events' canonical JSON texts joined by `,` (the inside of the
    /// body's `events` array).
    #[serde(skip)]
    pub events: Arc<str>,
    /// How many events.
    pub event_count: usize,
    /// When the batch was formed (ms since the Unix epoch).
    pub batch_time_ms: u64,
    /// When the batch's first event was accepted (ms since the Unix epoch):
    /// delivery latency is measured from here.
    #[serde(default)]
    pub accepted_ms: u64,
    /// Counted attempts so far.
    pub attempts: u32,
    /// Every failed attempt, oldest first.
    pub history: Vec<AttemptRecord>,
    /// A filter with `on_error: retry` failed on these events: the webhook's
    /// then-current chain runs again before the next attempt.
    #[serde(default)]
    pub pending_filter: bool,
    /// Not to be attempted before this time (ms since the Unix epoch): the
    /// retry schedule, kept across restarts.
    #[serde(default)]
    pub not_before_ms: u64,
    /// Where the retry window starts when not at `batch_time_ms`: a replayed
    /// dead letter gets a fresh window.
    #[serde(default)]
    pub window_start_ms: Option<u64>,
}

impl DeliveryRecord {
    /// When the retry window (`retry.max_age_ms`) started.
    pub fn window_start(&self) -> u64 {
        self.window_start_ms.unwrap_or(self.batch_time_ms)
    }
}

/// One failed attempt, as shown by `hookline dlq show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When the attempt was sent (ms since the Unix epoch).
    pub at_ms: u64,
    /// The status the target answered, if it answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: String,
}

/// A delivery that was given up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The delivery as it stood.
    pub record: DeliveryRecord,
    /// Why it was given up on.
    pub reason: String,
    /// When (ms since the Unix epoch).
    pub dead_at_ms: u64,
}

/// Which dead letters to read, and whether with their events (a listing
/// needs none: reading them all would load every stored event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only this app's.
    pub app_id: Option<String>,
    /// Only the one with this id (batch id).
    pub id: Option<String>,
    /// Read the events too (`record.events`); otherwise they are empty.
    pub with_events: bool,
}

/// How far the batcher has consumed one inbox ticket's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMark {
    /// The request's ticket.
    pub ticket: InboxTicket,
    /// How many of its events (from the first) are now in stored deliveries.
    pub consumed: u32,
    /// Whether that is all of them (the record can go without being read).
    pub complete: bool,
}

/// One transaction of the batcher (or of a split): deliveries to store and
/// the inbox events they consumed.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Inbox progress.
    pub marks: Vec<InboxMark>,
    /// Deliveries to store.
    pub deliveries: Vec<DeliveryRecord>,
    /// A delivery these replace (a batch split in two).
    pub retired: Option<DeliveryKey>,
}

/// Events accepted before a restart and not yet in a stored delivery.
#[derive(Debug)]
pub struct InboxEntry {
    /// The request's ticket.
    pub ticket: InboxTicket,
    /// The app they were accepted for.
    pub app_id: String,
    /// Every event of the request.
    pub events: Vec<Event>,
    /// How many of them (from the first) are already in deliveries.
    pub consumed: u32,
    /// The app's [`fingerprint`](crate::config::App::fingerprint) on the
    /// node that accepted them, if the store keeps it.
    pub config: Option<String>,
    /// The accepting node's config differed from this node's: the entry
    /// waited a short while for this node's reload (see
    /// [`Owner::config_matches`]).
    pub skewed: bool,
}

/// A delivery found at start. Its events were checked but are kept in
/// memory only within the memory budget; the rest are read back before
/// their attempt.
#[derive(Debug)]
pub struct RecoveredDelivery {
    /// The record (with empty `events` when they stayed on disk).
    pub record: DeliveryRecord,
    /// Bytes of its events.
    pub events_bytes: u64,
    /// Whether `record.events` holds them.
    pub events_loaded: bool,
}

/// What a store held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Accepted events not yet batched, oldest first.
    pub inbox: Vec<InboxEntry>,
    /// Deliveries not yet delivered or dead-lettered, oldest first.
    pub deliveries: Vec<RecoveredDelivery>,
}

/// Who batches a request's accepted events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// This node: the caller hands them to the app's batcher with this
    /// inbox ticket.
    Here(InboxTicket),
    /// The owner of the app's partition, which reads them from the store
    /// (and hands them to its [`Owner`]).
    ByOwner,
}

/// What [`Store::accept`] answers.
pub struct Acceptance<'a> {
    /// Who batches the events.
    pub handed: Accepted,
    /// Resolves once the events are stored under the configured durability.
    pub stored: BoxFuture<'a, Result<(), StoreError>>,
}

impl std::fmt::Debug for Acceptance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptance")
            .field("handed", &self.handed)
            .finish_non_exhaustive()
    }
}

/// What this node owns, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ownership {
    /// `embedded` or `redis`.
    pub backend: &'static str,
    /// This node's id.
    pub node: String,
    /// Partitions in the deployment.
    pub partitions: u32,
    /// Those this node owns now.
    pub owned: Vec<u32>,
    /// Inbox entries not yet batched, per owned partition (as of the last
    /// lease round).
    pub lag: std::collections::BTreeMap<u32, u64>,
    /// Partitions taken over by this node since it started, by partition.
    pub takeovers: std::collections::BTreeMap<u32, u64>,
    /// The live nodes of a shared store as this node last saw them (their
    /// fair shares of the partitions); empty on the embedded store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Partitions this node let go of since it started, by cause: `join`
    /// and `leave` (the live node set changed and the partition is another
    /// node's share now), `balance` (the swaps evening out the nodes' work
    /// changed), `sigterm` (this node stopped), `lease_lost`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub handovers: std::collections::BTreeMap<String, u64>,
    /// Every live node of a shared store as it last reported itself: the
    /// partitions it owns (so every partition's owner) and its backlog;
    /// empty on the embedded store.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub nodes: std::collections::BTreeMap<String, NodeShare>,
    /// The backlog of the whole deployment (this node's now, the others' as
    /// last reported): what `max_backlog_bytes` bounds. `None` on the
    /// embedded store, whose node's backlog is the whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_backlog_bytes: Option<u64>,
}

/// One node of a shared store, as it last reported itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeShare {
    /// The partitions it owns.
    pub owned: Vec<u32>,
    /// Bytes of undelivered events in them (its backlog).
    pub backlog_bytes: u64,
}

/// The engine's side of ownership: what a store hands over as this node
/// comes to own partitions, and what reaches their inboxes afterwards.
/// Calls come in order per partition: everything recovered before anything
/// new.
pub trait Owner: Send + Sync + 'static {
    /// Events to batch (the entry's from `consumed` on); `false` when they
    /// are not taken here (their app is not configured on this node), so
    /// they stay in the store.
    fn resume_events(&self, entry: InboxEntry) -> bool;
    /// A stored delivery to attempt (or dead-letter if its webhook is gone).
    fn resume_delivery(&self, found: RecoveredDelivery);
    /// A dead letter replayed on another node: its delivery is stored
    /// again; this node attempts it. `false` when it cannot (its webhook is
    /// not configured here): it stays stored.
    fn replayed(&self, record: DeliveryRecord) -> bool;
    /// The partition was lost (its lease ran out): its writes are refused
    /// from now on, and another node resumes it.
    fn partition_lost(&self, partition: u32);
    /// Whether this node runs `app_id` with the config fingerprint `config`
    /// (the accepting node's); a shared store holds an entry for a short
    /// while until it does (the owner's reload may lag behind).
    fn config_matches(&self, _app_id: &str, _config: &str) -> bool {
        true
    }
    /// Whether the engine takes more events now; a shared store reads no
    /// more from its inboxes while it does not (backpressure).
    fn has_room(&self) -> bool {
        true
    }
    /// Bytes of undelivered events this node holds (its backlog), which a
    /// shared store reports to the other nodes: `max_backlog_bytes` bounds
    /// the deployment's sum.
    fn backlog_bytes(&self) -> u64 {
        0
    }
}

/// A store failure. Ingest answers 503 on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// How a [`StoreError::not_owner`] message starts.
const NOT_OWNER: &str = "this node no longer owns partition ";

impl StoreError {
    /// A write refused because this node lost the partition's lease: not
    /// worth retrying here (the new owner redoes the work).
    pub fn not_owner(partition: u32) -> Self {
        Self(format!("{NOT_OWNER}{partition}; its new owner takes over"))
    }

    /// Whether this is a [`StoreError::not_owner`].
    pub fn is_not_owner(&self) -> bool {
        self.0.starts_with(NOT_OWNER)
    }
}

/// Where events and deliveries are kept; see the module docs for the order
/// of calls.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps one request's accepted events until deliveries holding them are
    /// committed. Who batches them is known at once ([`Acceptance::handed`]);
    /// [`Acceptance::stored`] resolves once they are stored under the
    /// configured durability.
    ///
    /// A store that answers [`Accepted::Here`] must queue the write before
    /// this returns (not when `stored` is first polled), so it cannot be
    /// taken back, and must apply a [`Store::commit`] made after this call
    /// after it (in the same transaction or a later one): the engine relies
    /// on both to hand the events to their batcher when the request's
    /// handler is dropped before `stored` resolves.
    /// `config` is the app's fingerprint here, for a shared store's owner to
    /// compare with its own.
    fn accept<'a>(&'a self, app_id: &'a str, config: &'a str, events: &[Event]) -> Acceptance<'a>;

    /// Where this node's delivery keys start: above every key in use (a
    /// shared store gives each node its own range).
    fn first_key(&self) -> DeliveryKey;

    /// Starts handing `owner` what this node owns (see the module docs):
    /// resolves once what it owns at start is handed over; a shared store
    /// keeps watching leases in the background.
    fn run_ownership(&self, owner: std::sync::Arc<dyn Owner>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// What this node owns now.
    fn ownership(&self) -> Ownership;

    /// Stores formed deliveries and releases the inbox events they consumed,
    /// in one transaction; resolves once it is on disk.
    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Records a failed attempt and the next attempt time. Not waited for:
    /// losing it in a crash costs at most a repeated attempt.
    fn record_failure(&self, record: &DeliveryRecord);

    /// Records a delivery's events as its filters rewrote them (it was
    /// stored unfiltered, pending a retry of its filters). Not waited for.
    fn refiltered(&self, record: &DeliveryRecord);

    /// Forgets a delivered batch. Not waited for: losing it in a crash means
    /// the batch is sent again, with the same batch id.
    fn delivered(&self, key: DeliveryKey);

    /// Moves a delivery to the dead letters.
    fn dead_letter(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The dead letters, oldest first, optionally of one app.
    fn dead_letters(&self, query: DeadLetterQuery) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>>;

    /// Moves a dead letter back to the deliveries (a replay), storing
    /// `record` (its events unchanged) in its place. `true`: the caller
    /// dispatches it (this node owns it, or no daemon runs); `false`: its
    /// partition's owner was told and does.
    fn requeue(&self, record: DeliveryRecord) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Removes dead letters: one by key, or every one matching. Returns how
    /// many went.
    fn purge_dead_letters(&self, keys: Vec<DeliveryKey>) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Removes dead letters that died before `before_ms`; returns how many.
    fn expire_dead_letters(&self, before_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// How many dead letters are kept.
    fn dead_letter_count(&self) -> u64;

    /// `Err` with the last write's error while writes fail (`/readyz`).
    fn health(&self) -> Result<(), String>;

    /// Whether attempts may start: a shared store that cannot be reached
    /// pauses delivery (an attempt's result could not be recorded, and the
    /// partition may be moving to another node) until it is back.
    fn delivery_allowed(&self) -> bool {
        true
    }

    /// Reads a delivery's events back (they may have been dropped from
    /// memory while it waited).
    fn load_events(&self, key: DeliveryKey) -> BoxFuture<'_, Result<String, StoreError>>;

    /// Replaces the attempt log kept for one webhook with `log` (the
    /// engine's JSON text, see [`crate::attempt_log`]). The embedded store
    /// does not wait for it: a crash loses at most the last save.
    fn save_attempt_log(&self, app_id: &str, webhook_id: &str, log: String) -> BoxFuture<'_, Result<(), StoreError>>;

    /// One webhook's attempt log as last saved, if one was.
    fn attempt_log(&self, app_id: &str, webhook_id: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// Asks to start an attempt of delivery `key`: see [`Attempt`]. The
    /// guard of [`Attempt::Start`] is held until the attempt's result is
    /// recorded: a hand-over waits for those under way.
    fn begin_attempt(&self, _key: DeliveryKey) -> Attempt {
        Attempt::Start(AttemptGuard::default())
    }

    /// Forgets a delivery this node no longer delivers (see
    /// [`Store::begin_attempt`]); nothing is written.
    fn let_go(&self, _key: DeliveryKey) {}

    /// Changes whenever this node stops holding a partition, so lanes let
    /// go of deliveries waiting to be retried at once; `None` for a store
    /// whose node holds everything.
    fn ownership_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Hands over everything this node owns before it stops, within
    /// `within`: no attempt starts any more, those under way finish, and
    /// other nodes take the partitions over at once rather than when the
    /// leases would run out. Returns how many partitions it handed over:
    /// a store whose node holds everything has nothing to hand over.
    fn leave(&self, _within: std::time::Duration) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }

    /// Bytes of undelivered events the other nodes hold, as they last
    /// reported them (see [`Owner::backlog_bytes`]): ingest refuses once
    /// this node's backlog and theirs together pass `max_backlog_bytes`.
    /// Zero for a store whose node holds everything.
    fn backlog_elsewhere(&self) -> u64 {
        0
    }
}

/// Whether an attempt may start (see [`Store::begin_attempt`]).
#[derive(Debug)]
pub enum Attempt {
    /// Start it; hold the guard until its result is recorded.
    Start(AttemptGuard),
    /// Not yet: a shared store's node holds the partition but cannot tell
    /// that its lease still holds (a renewal is late). Keep the delivery
    /// and ask again shortly.
    Wait,
    /// Never here: the node no longer holds the delivery's partition (its
    /// lease was lost, or it is being handed to another node). The lane
    /// lets the delivery go ([`Store::let_go`]); its new owner resumes it
    /// from the store.
    Elsewhere,
}

/// Held while an attempt runs and its result is recorded (see
/// [`Store::begin_attempt`]); dropping it ends the attempt for the store.
#[derive(Default)]
pub struct AttemptGuard {
    /// Runs the store's end of the attempt when dropped.
    _end: Option<Box<dyn Send + Sync>>,
}

impl AttemptGuard {
    /// A guard that runs `end` when dropped.
    pub fn on_drop(end: impl FnOnce() + Send + Sync + 'static) -> Self {
        struct OnDrop<F: FnOnce()>(Option<F>);
        impl<F: FnOnce()> Drop for OnDrop<F> {
            fn drop(&mut self) {
                if let Some(end) = self.0.take() {
                    end();
                }
            }
        }
        Self {
            _end: Some(Box::new(OnDrop(Some(end)))),
        }
    }
}

impl std::fmt::Debug for AttemptGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptGuard")
    }
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;
