//! The inbox entries this node holds: read from a partition's inbox and
//! handed to the engine, not yet all batched.

use std::collections::{HashMap, HashSet};

use hookline_core::store::InboxTicket;

/// A request group's inbox entry, as the owner read it.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub partition: u32,
    pub id: String,
    pub count: u32,
    /// The lease token it was read under: a commit of its events is fenced
    /// by it, so events read before a lease was lost are never committed
    /// beside the copy the next owner read.
    pub token: String,
}

/// Held entries by ticket, and by (partition, entry id) so an entry is
/// never handed over twice while it is held.
///
/// A claim (`XAUTOCLAIM`, at a takeover or in a sweep) reads a page of
/// pending entries and then hands them over one by one; an entry of that
/// page may meanwhile be batched and committed (and so acknowledged) by an
/// earlier hand-over. Entries finished while any claim is under way are
/// remembered until the last claim ends, so a page read before their
/// commit cannot hand them over a second time.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    by_ticket: HashMap<InboxTicket, Ticket>,
    ids: HashSet<(u32, String)>,
    claims: usize,
    finished: HashSet<(u32, String)>,
}

impl Tickets {
    /// Whether this entry is held here, or was finished during a claim
    /// still under way: either way not to be handed over again now.
    pub(crate) fn holds(&self, partition: u32, id: &str) -> bool {
        let key = (partition, id.to_string());
        self.ids.contains(&key) || self.finished.contains(&key)
    }

    /// A claim starts reading pages of pending entries.
    pub(crate) fn claim_started(&mut self) {
        self.claims += 1;
    }

    /// A claim is over; once none is under way, finished entries are
    /// forgotten (acknowledged, no later claim can read them).
    pub(crate) fn claim_ended(&mut self) {
        self.claims = self.claims.saturating_sub(1);
        if self.claims == 0 {
            self.finished.clear();
        }
    }

    /// Every event of the ticket's entry is committed (and the entry
    /// acknowledged): it is let go.
    pub(crate) fn finish(&mut self, ticket: InboxTicket) {
        if self.claims > 0
            && let Some(held) = self.by_ticket.get(&ticket)
        {
            self.finished.insert((held.partition, held.id.clone()));
        }
        self.remove(ticket);
    }

    pub(crate) fn insert(&mut self, ticket: InboxTicket, held: Ticket) {
        self.ids.insert((held.partition, held.id.clone()));
        self.by_ticket.insert(ticket, held);
    }

    pub(crate) fn get(&self, ticket: InboxTicket) -> Option<&Ticket> {
        self.by_ticket.get(&ticket)
    }

    pub(crate) fn remove(&mut self, ticket: InboxTicket) {
        if let Some(held) = self.by_ticket.remove(&ticket) {
            self.ids.remove(&(held.partition, held.id));
        }
    }

    /// Lets go of every entry of a partition (its lease was lost).
    pub(crate) fn purge(&mut self, partition: u32) {
        self.by_ticket.retain(|_, t| t.partition != partition);
        self.ids.retain(|(p, _)| *p != partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(partition: u32, id: &str) -> Ticket {
        Ticket {
            partition,
            id: id.to_string(),
            count: 1,
            token: "n 1".to_string(),
        }
    }

    #[test]
    fn entries_are_held_until_removed_or_purged() {
        let mut tickets = Tickets::default();
        tickets.insert(1, ticket(0, "1-0"));
        tickets.insert(2, ticket(1, "1-0"));
        assert!(tickets.holds(0, "1-0") && tickets.holds(1, "1-0"));
        tickets.remove(1);
        assert!(!tickets.holds(0, "1-0"));
        tickets.purge(1);
        assert!(!tickets.holds(1, "1-0") && tickets.get(2).is_none());
    }

    #[test]
    fn an_entry_finished_during_a_claim_stays_held_until_every_claim_ends() {
        let mut tickets = Tickets::default();
        tickets.insert(1, ticket(0, "1-0"));
        tickets.finish(1);
        assert!(!tickets.holds(0, "1-0"), "no claim under way: nothing to remember");

        tickets.insert(2, ticket(0, "2-0"));
        tickets.claim_started();
        tickets.claim_started();
        tickets.finish(2);
        assert!(tickets.holds(0, "2-0"), "a claim's page may still list it");
        tickets.claim_ended();
        assert!(tickets.holds(0, "2-0"), "one claim is still under way");
        tickets.claim_ended();
        assert!(!tickets.holds(0, "2-0"));
    }
}
