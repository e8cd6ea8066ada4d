//! The in-memory store: nothing survives a restart. Used with
//! `durability = "memory"` until the embedded durable store lands, and in
//! unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hookline_sink_api::BoxFuture;

use super::{DeadLetter, DeliveryKey, DeliveryRecord, Store, StoreError};
use crate::event::Event;

/// Keeps only the dead letters; accepted events and deliveries live in the
/// pipeline's own queues.
#[derive(Debug, Default)]
pub struct MemoryStore {
    dead: Mutex<BTreeMap<DeliveryKey, DeadLetter>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn accept<'a>(&'a self, _app_id: &'a str, _events: &'a [Event]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn commit_batch<'a>(
        &'a self,
        _app_id: &'a str,
        _consumed_events: usize,
        _deliveries: &'a [DeliveryRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn record_failure<'a>(&'a self, _record: &'a DeliveryRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn delivered(&self, _key: DeliveryKey) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn dead_letter(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.dead
                .lock()
                .expect("dead-letter lock is never held across a panic")
                .insert(letter.record.key, letter);
            Ok(())
        })
    }

    fn dead_letters(&self, app_id: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let dead = self.dead.lock().expect("dead-letter lock is never held across a panic");
        Ok(dead
            .values()
            .filter(|l| app_id.is_none_or(|id| l.record.app_id == id))
            .cloned()
            .collect())
    }

    fn take_dead_letter(&self, key: DeliveryKey) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self
            .dead
            .lock()
            .expect("dead-letter lock is never held across a panic")
            .remove(&key))
    }
}
