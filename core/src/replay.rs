//! Relay replay protection: an identical signed relay request (same app key
//! and signature, so the same body) seen again while its `time_ms` is still
//! fresh is answered `200 {}` without its events being accepted twice.
//!
//! Memory is bounded: at most [`CAPACITY`] requests are remembered, the
//! oldest forgotten first, and nothing survives a restart; so a duplicate
//! may still be accepted once after a restart or a flood (documented).
//! Past its freshness a request is refused as stale anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// How many requests are remembered at most (about 64 bytes each).
pub(crate) const CAPACITY: usize = 65_536;

type Fingerprint = [u8; 32];

/// The requests seen lately.
#[derive(Debug, Default)]
pub(crate) struct RelayReplays {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Fingerprint, Entry>,
    /// Insertion order, for eviction; an entry whose `serial` no longer
    /// matches was forgotten and seen again since.
    order: VecDeque<(Fingerprint, u64)>,
    next_serial: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    serial: u64,
    /// Remembered until then (ms since the epoch): the body's `time_ms`
    /// plus `relay_max_age_ms`.
    until_ms: u64,
    accepted: bool,
}

/// What [`RelayReplays::begin`] found.
#[derive(Debug)]
pub(crate) enum Seen {
    /// First time: accept it, then [`RelayReplays::finish`] the ticket.
    New(Ticket),
    /// Accepted before: answer as accepted, accept nothing.
    Accepted,
    /// The same request is being accepted by another connection now.
    InProgress,
}

/// A request being accepted, to be [`RelayReplays::finish`]ed: accepted,
/// its duplicates are answered 200; refused (the store was full, say), it
/// is forgotten so that its retry is accepted.
#[derive(Debug)]
#[must_use = "a ticket must be finished"]
pub(crate) struct Ticket {
    fingerprint: Fingerprint,
    serial: u64,
}

impl RelayReplays {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks a verified request up and, when new, remembers it until
    /// `until_ms`. `now_ms` is the wall clock.
    pub(crate) fn begin(&self, key: &str, signature: &str, until_ms: u64, now_ms: u64) -> Seen {
        let fingerprint = fingerprint(key, signature);
        let mut inner = self.lock();
        inner.forget_expired(now_ms);
        if let Some(entry) = inner.entries.get(&fingerprint)
            && entry.until_ms > now_ms
        {
            return if entry.accepted {
                Seen::Accepted
            } else {
                Seen::InProgress
            };
        }
        let serial = inner.next_serial;
        inner.next_serial += 1;
        inner.entries.insert(
            fingerprint,
            Entry {
                serial,
                until_ms,
                accepted: false,
            },
        );
        inner.order.push_back((fingerprint, serial));
        while inner.entries.len() > CAPACITY {
            inner.forget_oldest();
        }
        Seen::New(Ticket { fingerprint, serial })
    }

    /// Ends a request's acceptance: `accepted` or not.
    pub(crate) fn finish(&self, ticket: Ticket, accepted: bool) {
        let mut inner = self.lock();
        let current = inner
            .entries
            .get(&ticket.fingerprint)
            .is_some_and(|e| e.serial == ticket.serial);
        if !current {
            return;
        }
        if accepted {
            if let Some(entry) = inner.entries.get_mut(&ticket.fingerprint) {
                entry.accepted = true;
            }
        } else {
            inner.entries.remove(&ticket.fingerprint);
        }
    }

    /// How many requests are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether none is.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Drops expired entries from the front (they are mostly in time order:
    /// senders stamp `time_ms` when they send).
    fn forget_expired(&mut self, now_ms: u64) {
        while let Some((fingerprint, serial)) = self.order.front().copied() {
            match self.entries.get(&fingerprint) {
                Some(entry) if entry.serial == serial && entry.until_ms > now_ms => return,
                Some(entry) if entry.serial == serial => {
                    self.entries.remove(&fingerprint);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    fn forget_oldest(&mut self) {
        while let Some((fingerprint, serial)) = self.order.pop_front() {
            if self.entries.get(&fingerprint).is_some_and(|e| e.serial == serial) {
                self.entries.remove(&fingerprint);
                return;
            }
        }
    }
}

/// Key and signature (case-insensitive hex, as verification is) hashed to
/// a fixed size, so memory per entry does not depend on the sender.
fn fingerprint(key: &str, signature: &str) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(key.as_bytes());
    hash.update([0]);
    hash.update(signature.to_ascii_lowercase().as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_seen_until_it_expires() {
        let replays = RelayReplays::default();
        let Seen::New(ticket) = replays.begin("k", "AB", 1_000, 0) else {
            panic!("new")
        };
        assert!(matches!(replays.begin("k", "ab", 1_000, 1), Seen::InProgress));
        replays.finish(ticket, true);
        assert!(matches!(replays.begin("k", "ab", 1_000, 2), Seen::Accepted));
        assert!(matches!(replays.begin("other", "ab", 1_000, 2), Seen::New(_)));
        // Past its freshness it is forgotten (ingest refuses it as stale).
        assert!(matches!(replays.begin("k", "ab", 5_000, 1_000), Seen::New(_)));
    }

    #[test]
    fn a_request_that_was_not_accepted_is_forgotten() {
        let replays = RelayReplays::default();
        let Seen::New(ticket) = replays.begin("k", "ab", 1_000, 0) else {
            panic!("new")
        };
        replays.finish(ticket, false);
        assert!(replays.is_empty());
        let Seen::New(ticket) = replays.begin("k", "ab", 1_000, 0) else {
            panic!("new again")
        };
        replays.finish(ticket, true);
        assert!(matches!(replays.begin("k", "ab", 1_000, 0), Seen::Accepted));
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let replays = RelayReplays::default();
        for i in 0..CAPACITY + 10 {
            if let Seen::New(ticket) = replays.begin("k", &format!("{i:x}"), u64::MAX, 0) {
                replays.finish(ticket, true);
            }
        }
        assert_eq!(replays.len(), CAPACITY);
        assert!(matches!(replays.begin("k", "0", u64::MAX, 0), Seen::New(_)));
        let last = format!("{:x}", CAPACITY + 9);
        assert!(matches!(replays.begin("k", &last, u64::MAX, 0), Seen::Accepted));
    }
}
