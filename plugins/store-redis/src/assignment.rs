//! Which node should own which partition: derived by every node from the
//! same live node set, so all agree without talking.
//!
//! Fair shares with little movement: each node's share is ⌊P/N⌋ or ⌈P/N⌉
//! partitions, and partitions go to nodes in the order of a rendezvous
//! score of (node, partition), highest first, while the node has room.
//! Scores do not depend on who else is live, so when a node joins or
//! leaves most (partition, node) pairs keep their place: about P/N
//! partitions move, not a reshuffle.

/// The owner every partition should have, indexed by partition: an index
/// into `nodes` (which must be sorted and without duplicates; the caller
/// passes the live set as Redis gives it). Empty without nodes.
pub(crate) fn assign(nodes: &[String], partitions: u32) -> Vec<usize> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let n = nodes.len();
    let p = partitions as usize;
    // ⌈P/N⌉ for the nodes first in a partition-independent order, ⌊P/N⌋
    // for the rest.
    let mut by_luck: Vec<usize> = (0..n).collect();
    by_luck.sort_by_key(|&i| std::cmp::Reverse(score(&nodes[i], u32::MAX)));
    let mut room = vec![p / n; n];
    for &i in by_luck.iter().take(p % n) {
        room[i] += 1;
    }
    let mut pairs: Vec<(u64, u32, usize)> = Vec::with_capacity(p * n);
    for partition in 0..partitions {
        for (i, node) in nodes.iter().enumerate() {
            pairs.push((score(node, partition), partition, i));
        }
    }
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut owner = vec![usize::MAX; p];
    for (_, partition, i) in pairs {
        let slot = &mut owner[partition as usize];
        if *slot == usize::MAX && room[i] > 0 {
            *slot = i;
            room[i] -= 1;
        }
    }
    owner
}

/// A well-mixed 64-bit score of (node, partition): FNV-1a, then the
/// splitmix64 finaliser.
fn score(node: &str, partition: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0]).chain(partition.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        let mut nodes: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        nodes.sort();
        nodes
    }

    fn shares(owner: &[usize], n: usize) -> Vec<usize> {
        let mut shares = vec![0; n];
        for &i in owner {
            shares[i] += 1;
        }
        shares
    }

    #[test]
    fn every_partition_gets_a_node_and_shares_differ_by_at_most_one() {
        for n in 1..=7 {
            let names: Vec<String> = (0..n).map(|i| format!("host-{i}:{}", 1000 + i)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let live = nodes(&names);
            for partitions in [1, 7, 32, 100] {
                let owner = assign(&live, partitions);
                assert_eq!(owner.len(), partitions as usize);
                let shares = shares(&owner, n);
                let (least, most) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(most - least <= 1, "{n} nodes, {partitions} partitions: {shares:?}");
                assert_eq!(assign(&live, partitions), owner, "the same set gives the same answer");
            }
        }
        assert!(assign(&[], 32).is_empty());
    }

    #[test]
    fn a_joining_or_leaving_node_moves_about_its_share() {
        let three = nodes(&["a", "b", "c"]);
        let four = nodes(&["a", "b", "c", "d"]);
        let before = assign(&three, 32);
        let after = assign(&four, 32);
        let moved = (0..32).filter(|&p| three[before[p]] != four[after[p]]).count();
        // The new node's 8, and at most a few more to even the shares out.
        assert!(
            (8..=12).contains(&moved),
            "{moved} partitions moved when a fourth node joined"
        );
        let two = nodes(&["a", "c"]);
        let left = assign(&two, 32);
        let moved = (0..32).filter(|&p| three[before[p]] != two[left[p]]).count();
        assert!(
            (10..=14).contains(&moved),
            "{moved} partitions moved when one of three left"
        );
    }
}
