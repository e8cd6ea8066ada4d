//! What ingest may take, in one place: the backlog (bytes of accepted
//! events not yet delivered or dead-lettered; ingest answers 503 past
//! `max_backlog_bytes`) and the intake budget (bytes of accepted events in
//! memory and not yet stored as deliveries; ingest waits for room, so a
//! flood cannot outrun batching).
//!
//! Events count in the backlog from acceptance (or from their hand-over by
//! the store) until the batcher stores them as deliveries, and each
//! delivery counts from its dispatch until it is delivered or
//! dead-lettered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long ingest waits for room in the intake budget before answering
/// 503: delivery is falling behind.
const INTAKE_WAIT: Duration = Duration::from_secs(2);

/// A share of the intake budget, given back when dropped (once the events
/// it stands for are stored as deliveries).
pub(crate) type IntakePermit = OwnedSemaphorePermit;

/// The backlog counter and the intake budget. See the module docs.
#[derive(Debug)]
pub(crate) struct Backlog {
    bytes: AtomicU64,
    limit: u64,
    intake: Arc<Semaphore>,
    intake_kib: u32,
}

impl Backlog {
    /// A backlog refused past `limit` bytes, with an intake budget of
    /// `intake_bytes` (counted in KiB).
    pub(crate) fn new(limit: u64, intake_bytes: u64) -> Self {
        let intake_kib = u32::try_from(intake_bytes / 1024).unwrap_or(u32::MAX).clamp(1, 1 << 30);
        Self {
            bytes: AtomicU64::new(0),
            limit,
            intake: Arc::new(Semaphore::new(intake_kib as usize)),
            intake_kib,
        }
    }

    /// Bytes now in the backlog.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// `max_backlog_bytes`.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether ingest should refuse: this node's backlog and what other
    /// nodes of a shared store hold (`elsewhere`) together are past
    /// `max_backlog_bytes`.
    pub(crate) fn is_full(&self, elsewhere: u64) -> bool {
        self.bytes().saturating_add(elsewhere) > self.limit
    }

    /// Counts `bytes` more.
    pub(crate) fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` less.
    pub(crate) fn remove(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn kib(&self, bytes: usize) -> u32 {
        u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX).min(self.intake_kib)
    }

    /// Waits (up to 2 s) for room for `bytes` in the intake budget; `None`
    /// when there was none (answer 503).
    pub(crate) async fn admit(&self, bytes: usize) -> Option<IntakePermit> {
        tokio::time::timeout(INTAKE_WAIT, self.intake.clone().acquire_many_owned(self.kib(bytes)))
            .await
            .ok()?
            .ok()
    }

    /// Room for `bytes` now, if there is: for events a shared store handed
    /// over (already stored, so taken either way; a full budget only pauses
    /// reading, see [`Backlog::has_room`]).
    pub(crate) fn try_admit(&self, bytes: usize) -> Option<IntakePermit> {
        self.intake.clone().try_acquire_many_owned(self.kib(bytes)).ok()
    }

    /// Whether the intake budget has room.
    pub(crate) fn has_room(&self) -> bool {
        self.intake.available_permits() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_intake_budget_is_given_back_when_permits_drop() {
        let backlog = Backlog::new(100, 2048);
        let first = backlog.try_admit(1500).expect("room for 2 KiB");
        assert!(!backlog.has_room());
        assert!(backlog.try_admit(10).is_none());
        drop(first);
        assert!(backlog.has_room());
        assert!(backlog.admit(10).await.is_some());
    }

    #[test]
    fn the_backlog_is_full_past_its_limit() {
        let backlog = Backlog::new(100, 1024);
        backlog.add(100);
        assert!(!backlog.is_full(0));
        assert!(backlog.is_full(1), "other nodes' backlog counts");
        backlog.add(1);
        assert!(backlog.is_full(0));
        backlog.remove(50);
        assert_eq!(backlog.bytes(), 51);
    }
}
