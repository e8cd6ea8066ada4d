//! The queue/store seam: where accepted events and formed batches live
//! until they are delivered or dead-lettered.
//!
//! The pipeline talks to a [`Store`] only through this trait, so the
//! in-memory store here, an embedded durable store and a shared one
//! (Redis Streams) are interchangeable without reshaping the pipeline.
//!
//! The life of an event in the store:
//! 1. [`Store::accept`]: ingest hands over the events; once it returns, ingest
//!    may answer 2xx (for a durable store: they are on disk).
//! 2. [`Store::commit_batch`]: the batcher formed batches; the events they
//!    consumed leave the inbox and the per-webhook deliveries are stored, in
//!    one step.
//! 3. [`Store::record_failure`] after each failed attempt, then
//!    [`Store::delivered`] or [`Store::dead_letter`].

mod memory;

pub use memory::MemoryStore;

use std::sync::Arc;

use hookline_sink_api::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Identifies one stored delivery (one batch for one webhook).
pub type DeliveryKey = u64;

/// What the store keeps of a delivery beyond its events.
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
    pub events: String,
    /// How many events.
    pub event_count: usize,
    /// When the batch was formed (ms since the Unix epoch).
    pub batch_time_ms: u64,
    /// Counted attempts so far.
    pub attempts: u32,
    /// Every attempt's outcome, oldest first.
    pub history: Vec<AttemptRecord>,
    /// A filter with `on_error: retry` failed on these events: the webhook's
    /// then-current chain runs again before the next attempt.
    #[serde(default)]
    pub pending_filter: bool,
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

/// A store failure. Ingest answers 503 on it; delivery keeps going in memory.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Where events and deliveries are kept; see the module docs for the order
/// of calls.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps accepted events until a batch holding them is committed.
    fn accept<'a>(&'a self, app_id: &'a str, events: &'a [Event]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores formed deliveries and releases the events they came from.
    fn commit_batch<'a>(
        &'a self,
        app_id: &'a str,
        consumed_events: usize,
        deliveries: &'a [DeliveryRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records a failed attempt.
    fn record_failure<'a>(&'a self, record: &'a DeliveryRecord) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Forgets a delivered batch.
    fn delivered(&self, key: DeliveryKey) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Moves a delivery to the dead-letter store.
    fn dead_letter(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The dead letters, oldest first, optionally of one app.
    fn dead_letters(&self, app_id: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes a dead letter (after a replay or a purge); returns it.
    fn take_dead_letter(&self, key: DeliveryKey) -> Result<Option<DeadLetter>, StoreError>;
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;
