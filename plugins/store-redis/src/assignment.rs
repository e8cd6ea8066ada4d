//! Which node should own which partition: derived by every node from the
//! same live node set, so all agree without talking.
//!
//! Fair shares with little movement: each node's share is ⌊P/N⌋ or ⌈P/N⌉
//! partitions, and partitions go to nodes in the order of a rendezvous
//! score of (node, partition), highest first, while the node has room.
//! Scores do not depend on who else is live, so when a node joins or
//! leaves most (partition, node) pairs keep their place: about P/N
//! partitions move, not a reshuffle.
//!
//! Fair shares of partitions are not fair shares of work: a dozen busy
//! apps hash to a dozen partitions, and one node may own half of them. So
//! one node (the first live one) measures each partition's traffic and
//! publishes swaps: pairs of partitions whose owners trade places
//! ([`balance`], [`apply_swaps`]). A swap keeps every node's count of
//! partitions, so shares stay ⌊P/N⌋ or ⌈P/N⌉ whatever the swaps are.

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

/// Swaps the owners of each pair of partitions, in order (pairs naming a
/// partition past the end are skipped: they were made for more partitions).
pub(crate) fn apply_swaps(owner: &mut [usize], swaps: &[(u32, u32)]) {
    for &(a, b) in swaps {
        if (a as usize) < owner.len() && (b as usize) < owner.len() {
            owner.swap(a as usize, b as usize);
        }
    }
}

/// The work each node has under `owner` (indexed by node), given each
/// partition's `load`.
pub(crate) fn node_loads(owner: &[usize], nodes: usize, load: &[u64]) -> Vec<u64> {
    let mut loads = vec![0; nodes];
    for (partition, &i) in owner.iter().enumerate() {
        if let Some(slot) = loads.get_mut(i) {
            *slot += load.get(partition).copied().unwrap_or(0);
        }
    }
    loads
}

/// Swaps that even out the nodes' work under `base` (the fair-share
/// assignment of [`assign`]), given each partition's `load`: again and
/// again, the busiest node trades a partition with the idlest, the pair
/// that brings the two closest, while that lowers the busier of the two.
/// Deterministic; at most P swaps, each found in O(P log P) (it runs on the
/// balancing node's exchange loop, with up to [`crate::MAX_PARTITIONS`]).
pub(crate) fn balance(base: &[usize], nodes: usize, load: &[u64]) -> Vec<(u32, u32)> {
    let load_of = |partition: usize| load.get(partition).copied().unwrap_or(0);
    let mut owner = base.to_vec();
    let mut swaps = Vec::new();
    for _ in 0..owner.len() {
        let loads = node_loads(&owner, nodes, load);
        let busiest = (0..nodes).max_by_key(|&i| (loads[i], std::cmp::Reverse(i)));
        let idlest = (0..nodes).min_by_key(|&i| (loads[i], i));
        let (Some(h), Some(l)) = (busiest, idlest) else { break };
        let gap = loads[h] - loads[l];
        // Moving `d` of work from h to l lowers the busier of the two by
        // min(d, gap - d): best when d is closest to half the gap, so for
        // each of h's partitions the best of l's sits beside load - gap/2.
        let mut idle: Vec<(u64, usize)> = (0..owner.len())
            .filter(|&b| owner[b] == l)
            .map(|b| (load_of(b), b))
            .collect();
        idle.sort_unstable();
        let mut best: Option<(u64, usize, usize)> = None;
        for a in (0..owner.len()).filter(|&a| owner[a] == h) {
            let la = load_of(a);
            let at = idle.partition_point(|&(lb, _)| lb < la.saturating_sub(gap / 2));
            for &(lb, b) in idle[at.saturating_sub(1)..].iter().take(2) {
                if la <= lb || la - lb >= gap {
                    continue;
                }
                let gain = (la - lb).min(gap - (la - lb));
                if best.is_none_or(|(g, _, _)| gain > g) {
                    best = Some((gain, a, b));
                }
            }
        }
        let Some((_, a, b)) = best else { break };
        owner.swap(a, b);
        swaps.push((a as u32, b as u32));
    }
    swaps
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
    fn swaps_even_out_the_work_and_keep_every_share() {
        let live = nodes(&["node-0", "node-1", "node-2"]);
        let base = assign(&live, 32);
        // Twelve busy partitions, most of them on one node.
        let mut load = vec![0u64; 32];
        let mut busy: Vec<usize> = (0..32).filter(|&p| base[p] == 0).take(6).collect();
        busy.extend((0..32).filter(|&p| base[p] == 1).take(3));
        busy.extend((0..32).filter(|&p| base[p] == 2).take(3));
        for &p in &busy {
            load[p] = 1000;
        }
        assert_eq!(node_loads(&base, 3, &load), [6000, 3000, 3000]);
        let swaps = balance(&base, 3, &load);
        let mut owner = base.clone();
        apply_swaps(&mut owner, &swaps);
        assert_eq!(node_loads(&owner, 3, &load), [4000, 4000, 4000], "{swaps:?}");
        assert_eq!(shares(&owner, 3), shares(&base, 3), "swaps keep every node's count");
        assert_eq!(swaps.len(), 2);
        // Even work needs no swap; neither does none.
        assert!(balance(&owner, 3, &load).is_empty());
        assert!(balance(&base, 3, &[0; 32]).is_empty());
        // Pairs made for more partitions than there are now are skipped.
        let mut fewer = assign(&live, 8);
        let before = fewer.clone();
        apply_swaps(&mut fewer, &[(3, 20)]);
        assert_eq!(fewer, before);
    }

    #[test]
    fn the_most_partitions_balance_evenly() {
        let live = nodes(&["a", "b", "c"]);
        let base = assign(&live, crate::MAX_PARTITIONS);
        // Uneven, pseudo-random work: a few hot partitions among many cool.
        let mut seed: u64 = 7;
        let load: Vec<u64> = (0..crate::MAX_PARTITIONS)
            .map(|p| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let r = seed >> 33;
                if p % 97 == 0 { 5_000 + r % 5_000 } else { r % 100 }
            })
            .collect();
        let swaps = balance(&base, 3, &load);
        let mut owner = base.clone();
        apply_swaps(&mut owner, &swaps);
        let (before, after) = (node_loads(&base, 3, &load), node_loads(&owner, 3, &load));
        let spread = |loads: &[u64]| loads.iter().max().unwrap() - loads.iter().min().unwrap();
        assert!(
            spread(&after) <= 100,
            "{before:?} -> {after:?} in {} swaps",
            swaps.len()
        );
        assert!(spread(&before) > 5_000, "the work starts uneven: {before:?}");
        assert_eq!(shares(&owner, 3), shares(&base, 3));
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
