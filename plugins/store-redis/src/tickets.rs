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
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    by_ticket: HashMap<InboxTicket, Ticket>,
    ids: HashSet<(u32, String)>,
}

impl Tickets {
    /// Whether this entry is held here.
    pub(crate) fn holds(&self, partition: u32, id: &str) -> bool {
        self.ids.contains(&(partition, id.to_string()))
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
}
