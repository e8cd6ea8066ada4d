//! Where things live in Redis. Every key of partition `N` carries the hash
//! tag `{pN}`, so a partition is one Redis Cluster slot.

/// The consumer group every node reads inboxes with.
pub(crate) const GROUP: &str = "hookline";
/// Counter giving each node start its own range of delivery keys.
pub(crate) const INCARNATION: &str = "hookline:incarnation";
/// Sorted set of the live nodes (one hash tag with [`GENERATION`]: the
/// heartbeat script touches both), scored by their last heartbeat (Redis
/// time, milliseconds).
pub(crate) const NODES: &str = "hookline:{nodes}:live";
/// Bumped whenever a node joins, leaves or hands a partition over: nodes
/// watch it to run a lease round at once.
pub(crate) const GENERATION: &str = "hookline:{nodes}:generation";
/// Hash of each node's last report: `backlog bytes|owned partitions`
/// (comma-separated). Nodes no longer live are dropped from it.
pub(crate) const REPORTS: &str = "hookline:{nodes}:reports";
/// The swaps that even out the nodes' work (`a:b,c:d`: partitions whose
/// fair-share owners trade places), written by the first live node.
pub(crate) const SWAPS: &str = "hookline:{nodes}:swaps";

/// A partition's keys.
#[derive(Debug, Clone)]
pub(crate) struct PartitionKeys {
    /// Stream of accepted requests (`k=e`) and replay notices (`k=r`).
    pub inbox: String,
    /// `node epoch` of the owner, with a TTL of `lease_ms`.
    pub lease: String,
    /// Bumped at every change of owner.
    pub epoch: String,
    /// Bumped for every stored delivery: the order deliveries were formed.
    pub seq: String,
    /// Inbox entry id → how many of its events are in deliveries.
    pub progress: String,
    /// Delivery key → `seq|record JSON`.
    pub deliveries: String,
    /// Delivery or dead letter key → its events (joined JSON texts).
    pub events: String,
    /// Dead letter key → dead letter JSON (record, reason, time).
    pub dead: String,
    /// Delivery key → when its next attempt is due, in Redis's clock
    /// (milliseconds): nodes' own clocks may disagree.
    pub due: String,
    /// Events ever accepted into the partition: its traffic, which the
    /// node balancing the work samples.
    pub accepted: String,
    /// `app id\nwebhook id` → that webhook's attempt log (JSON), which its
    /// app's partition owner replaces.
    pub attempt_log: String,
}

impl PartitionKeys {
    pub(crate) fn new(partition: u32) -> Self {
        let key = |name: &str| format!("hookline:{{p{partition}}}:{name}");
        Self {
            inbox: key("inbox"),
            lease: key("lease"),
            epoch: key("epoch"),
            seq: key("seq"),
            progress: key("progress"),
            deliveries: key("deliveries"),
            events: key("events"),
            dead: key("dead"),
            attempt_log: key("attempt-log"),
            due: key("due"),
            accepted: key("accepted"),
        }
    }
}

/// The partition an app hashes to: FNV-1a of its id, so every node and
/// every release agrees.
pub(crate) fn partition_of(app_id: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in app_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_keys_share_one_hash_tag() {
        let keys = PartitionKeys::new(7);
        for key in [&keys.inbox, &keys.lease, &keys.epoch, &keys.seq, &keys.dead] {
            assert!(key.contains("{p7}"), "{key}");
        }
    }

    #[test]
    fn apps_hash_stably_and_spread() {
        assert_eq!(partition_of("app-1", 32), partition_of("app-1", 32));
        let used: std::collections::HashSet<u32> = (0..200).map(|i| partition_of(&format!("app-{i}"), 32)).collect();
        assert!(used.len() > 24, "200 apps used only {} of 32 partitions", used.len());
        assert_eq!(partition_of("anything", 1), 0);
    }
}
