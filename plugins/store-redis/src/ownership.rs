//! Leases: which node owns which partition, takeover, and the readers that
//! feed an owned partition's inbox to the engine.
//!
//! A node runs a lease round every third of `lease_ms` (the renewal
//! interval), counted from the start of the last round: it renews the
//! leases it holds (a lease it cannot renew is lost: its reader stops, the
//! entries it held are let go, and the engine is told), then acquires
//! every free partition of its share, in one round, starting at a
//! node-specific place so that nodes starting together try different
//! partitions first; then it measures lag and sweeps its partitions for
//! inbox entries nobody holds (read by a node that lost its lease, or by a
//! read that failed half-way). A lease it could not take tells it how long
//! that lease has left; when the soonest of those runs out before the next
//! round is due, the next round runs then instead. So when a node dies,
//! every survivor wakes as its leases run out (or its heartbeat does) and
//! takes its share of what it held: within `lease_ms` of the death, plus
//! the time one round takes. Each acquired partition gets a task that takes
//! it over and then reads its inbox. Shares follow the live node set
//! (`assignment`): a partition outside this node's share is handed over
//! (`release`), and a stopping node hands over everything (`leave`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hookline_core::event::Event;
use hookline_core::store::{DeliveryRecord, InboxEntry, NodeShare, Owner, RecoveredDelivery, StoreError};

use crate::assignment;
use crate::conn::Conn;
use crate::keys::{self, PartitionKeys};
use crate::reply::{self, Entry};
use crate::tickets::Ticket;
use crate::{Inner, store_error};

/// Entries read per call.
const READ_COUNT: usize = 256;
/// How long a read blocks waiting for new entries.
const READ_BLOCK_MS: u64 = 500;
/// How long an entry accepted under another config of its app waits for
/// this node to load the same one.
const CONFIG_SKEW_WAIT: Duration = Duration::from_secs(2);
/// How often a node reports its backlog and partitions, and looks for a
/// change of the cluster's generation.
const GENERATION_POLL: Duration = Duration::from_millis(200);
/// Pause after a failed Redis call before trying again.
const RETRY: Duration = Duration::from_millis(200);
/// How long after another node's lease should have run out the round that
/// takes it runs: Redis reports whole milliseconds left.
const EXPIRY_MARGIN: Duration = Duration::from_millis(2);

/// The renewal interval: a round starts this long after the last one
/// started, or sooner (see the module docs).
fn renewal_interval(lease_ms: u64) -> Duration {
    Duration::from_millis(lease_ms / 3)
}

/// Runs the first round and waits for its takeovers (so what this node
/// owns at start is handed over before it serves), then keeps the leases
/// in the background.
pub(crate) async fn start(inner: Arc<Inner>) -> Result<(), StoreError> {
    let first = Instant::now();
    let Round { taken, next_free } = round(&inner).await?;
    for done in taken {
        let _ = done.await;
    }
    let every = renewal_interval(inner.config.lease_ms);
    let lease = Duration::from_millis(inner.config.lease_ms);
    // Unrenewed for a lease, another node may own them: let go a little
    // before Redis does.
    let let_go_within = lease - Duration::from_millis(inner.config.lease_ms / 10);
    tokio::spawn(exchange(inner.clone()));
    tokio::spawn(async move {
        // Renewals extend a lease from when they are sent: count from then.
        let mut last_renewed = first;
        // Due a renewal interval after the last round started (not after it
        // ended, so a slow round does not stretch the next wait), or when a
        // lease this node waits on runs out.
        let mut next_round = next_free.map_or(first + every, |free| free.min(first + every));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_round.into()) => {}
                () = inner.wake.notified() => {}
            }
            if inner.stopped.load(Ordering::Acquire) {
                return;
            }
            let sent = Instant::now();
            match round(&inner).await {
                Ok(done) => {
                    last_renewed = sent;
                    next_round = done.next_free.map_or(sent + every, |free| free.min(sent + every));
                }
                Err(error) => {
                    tracing::warn!(%error, "redis store: cannot renew leases");
                    if last_renewed.elapsed() >= let_go_within {
                        let held: Vec<u32> = inner.owned.lock().expect("owned lock").keys().copied().collect();
                        for partition in held {
                            lose(&inner, partition);
                        }
                    }
                    // Not at once (Redis may be down for a while): the
                    // renewal interval, or sooner to let go in time.
                    let now = Instant::now();
                    let let_go_at = last_renewed + let_go_within;
                    next_round = if let_go_at > now {
                        (now + every).min(let_go_at)
                    } else {
                        now + every
                    };
                    next_round = next_round.max(now + RETRY);
                }
            }
        }
    });
    Ok(())
}

fn owner(inner: &Inner) -> &Arc<dyn Owner> {
    inner.owner.get().expect("ownership starts after the owner is set")
}

/// Lets a partition go: no more reads, its held entries are dropped (their
/// commits are refused; the next owner hands them over again), and the
/// engine is told.
fn lose(inner: &Inner, partition: u32) {
    if inner.owned.lock().expect("owned lock").remove(&partition).is_none() {
        return;
    }
    if let Some(reader) = inner.readers.lock().expect("readers lock").remove(&partition) {
        reader.abort();
    }
    inner.tickets.lock().expect("tickets lock").purge(partition);
    inner.lag.lock().expect("lag lock").remove(&partition);
    inner.expires.lock().expect("expires lock").remove(&partition);
    inner.changes.send_modify(|n| *n += 1);
    *inner
        .handovers
        .lock()
        .expect("handovers lock")
        .entry("lease_lost")
        .or_default() += 1;
    tracing::warn!(partition, node = %inner.config.node_id, "redis store: lease lost");
    owner(inner).partition_lost(partition);
}

/// Every [`GENERATION_POLL`]: reports this node's backlog and owned
/// partitions, learns every live node's (the cluster-wide backlog that
/// `max_backlog_bytes` bounds, and every partition's owner), and runs a
/// lease round at once when the cluster's generation changed (a node
/// joined or left, a partition was handed over, the swaps changed), rather
/// than at the next renewal: hand-overs take a poll interval, not a third
/// of a lease. Every `balance_ms`, the first live node evens out the work
/// ([`balance_work`]).
async fn exchange(inner: Arc<Inner>) {
    let mut conn = inner.conn();
    let node = inner.config.node_id.clone();
    let mut seen: Option<String> = None;
    let balance_every = Duration::from_millis(inner.config.balance_ms);
    let mut next_balance = Instant::now() + balance_every;
    let lease = Duration::from_millis(inner.config.lease_ms);
    let mut last_exchanged = Instant::now();
    while !inner.stopped.load(Ordering::Acquire) {
        if inner.config.balance_ms > 0 && Instant::now() >= next_balance {
            next_balance = Instant::now() + balance_every;
            balance_work(&inner, &mut conn).await;
        }
        let report = {
            let mut owned: Vec<u32> = inner.owned.lock().expect("owned lock").keys().copied().collect();
            owned.sort_unstable();
            NodeShare {
                owned,
                backlog_bytes: inner.own_backlog(),
            }
        };
        let reply: redis::RedisResult<Vec<String>> = inner
            .scripts
            .exchange
            .key(keys::NODES)
            .key(keys::GENERATION)
            .key(keys::REPORTS)
            .arg(&node)
            .arg(write_report(&report))
            .arg(inner.config.lease_ms)
            .invoke_async(&mut conn)
            .await;
        if let Ok(reply) = reply {
            let generation = reply.first().cloned().unwrap_or_default();
            if seen.as_ref().is_some_and(|seen| *seen != generation) {
                inner.wake.notify_one();
            }
            seen = Some(generation);
            let mut reports: BTreeMap<String, NodeShare> = BTreeMap::new();
            let mut swap_aware = Vec::new();
            for pair in reply.get(1..).unwrap_or_default().chunks(2) {
                let [name, text] = pair else { continue };
                let (share, applies_swaps) = read_report(text);
                if applies_swaps {
                    swap_aware.push(name.clone());
                }
                reports.insert(name.clone(), share);
            }
            *inner.swap_aware.lock().expect("swap_aware lock") = swap_aware;
            let elsewhere = reports
                .iter()
                .filter(|(name, _)| **name != node)
                .map(|(_, share)| share.backlog_bytes)
                .sum();
            inner.elsewhere.store(elsewhere, Ordering::Relaxed);
            // This node as it is now, while the others see it live.
            if let Some(mine) = reports.get_mut(&node) {
                *mine = report;
            }
            *inner.reports.lock().expect("reports lock") = reports;
            last_exchanged = Instant::now();
        } else if last_exchanged.elapsed() > lease {
            // The others' reports are older than a lease: what they held
            // then says nothing now. This node's own backlog still counts.
            inner.elsewhere.store(0, Ordering::Relaxed);
            inner.reports.lock().expect("reports lock").clear();
            inner.swap_aware.lock().expect("swap_aware lock").clear();
        }
        tokio::time::sleep(GENERATION_POLL).await;
    }
}

/// What a report's third field says this node does: it applies the
/// published swaps. Nodes that do not say so (older versions) make the
/// balancing node publish none, as they would leave swapped partitions
/// unowned.
const APPLIES_SWAPS: &str = "swaps";

/// A node's report as stored: `backlog bytes|p,p,…|swaps`.
fn write_report(share: &NodeShare) -> String {
    let mut text = share.backlog_bytes.to_string();
    text.push('|');
    for (i, partition) in share.owned.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&partition.to_string());
    }
    text.push('|');
    text.push_str(APPLIES_SWAPS);
    text
}

/// Reads [`write_report`]'s text, and whether the node applies swaps;
/// anything unreadable (a node that has not reported yet) reads as nothing
/// owned, an empty backlog, and no swaps.
fn read_report(text: &str) -> (NodeShare, bool) {
    let mut fields = text.split('|');
    let bytes = fields.next().unwrap_or("0");
    let owned = fields.next().unwrap_or("");
    let applies_swaps = fields.next() == Some(APPLIES_SWAPS);
    let share = NodeShare {
        owned: owned.split(',').filter_map(|p| p.parse().ok()).collect(),
        backlog_bytes: bytes.parse().unwrap_or(0),
    };
    (share, applies_swaps)
}

/// Hands a partition this node holds to whichever node takes it next:
/// attempts stop starting at once (lanes let go of what they hold), the
/// inbox reader stops and the entries it read are let go, attempts and
/// writes under way get up to `within` to finish, then the lease is
/// released (fenced by its token) and the other nodes are told. Returns
/// whether the lease was released here.
pub(crate) async fn release(inner: Arc<Inner>, partition: u32, within: Duration, cause: &'static str) -> bool {
    let Some(token) = inner.token(partition) else {
        return false;
    };
    if !inner.releasing.lock().expect("releasing lock").insert(partition) {
        return false;
    }
    inner.changes.send_modify(|n| *n += 1);
    if let Some(reader) = inner.readers.lock().expect("readers lock").remove(&partition) {
        reader.abort();
    }
    inner.tickets.lock().expect("tickets lock").purge(partition);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let quiet = inner.quiet.notified();
        tokio::pin!(quiet);
        quiet.as_mut().enable();
        if !inner.busy.lock().expect("busy lock").contains_key(&partition) {
            break;
        }
        if tokio::time::timeout_at(deadline, quiet).await.is_err() {
            tracing::warn!(
                partition,
                within_ms = within.as_millis() as u64,
                "redis store: attempts still under way when handing the partition over; their results are fenced"
            );
            break;
        }
    }
    // Only the lease this hand-over began with: if it was lost meanwhile
    // (and maybe taken again under a new token), that one is not touched.
    let still_held = holding(&inner, partition, &token);
    let mut released = false;
    if still_held {
        let keys = PartitionKeys::new(partition);
        let answer: redis::RedisResult<i64> = inner
            .scripts
            .release
            .key(&keys.lease)
            .arg(&token)
            .invoke_async(&mut inner.conn())
            .await;
        released = matches!(answer, Ok(1));
        if let Err(error) = &answer {
            // The lease runs out by itself; the next owner waits for that.
            tracing::warn!(partition, %error, "redis store: cannot release the lease");
        }
        let mut owned = inner.owned.lock().expect("owned lock");
        if owned.get(&partition) == Some(&token) {
            owned.remove(&partition);
            inner.lag.lock().expect("lag lock").remove(&partition);
            inner.expires.lock().expect("expires lock").remove(&partition);
        }
    }
    inner.releasing.lock().expect("releasing lock").remove(&partition);
    // Attempts that failed meanwhile went back to wait: let go of them too.
    inner.changes.send_modify(|n| *n += 1);
    if still_held {
        *inner
            .handovers
            .lock()
            .expect("handovers lock")
            .entry(cause)
            .or_default() += 1;
    }
    let _: redis::RedisResult<u64> = redis::cmd("INCR")
        .arg(keys::GENERATION)
        .query_async(&mut inner.conn())
        .await;
    inner.released.notify_waiters();
    tracing::info!(partition, cause, released, "redis store: partition handed over");
    released
}

/// Leaves the cluster (the daemon is stopping): this node stops being a
/// member, so the others' shares take in its partitions, and, when other
/// nodes are live, hands each partition over (see [`release`]) within
/// `within`. Returns how many were handed over.
pub(crate) async fn leave(inner: Arc<Inner>, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    inner.leaving.store(true, Ordering::Release);
    // After the round under way (which may have sent a heartbeat or taken
    // a partition); later rounds only renew.
    let held: Vec<u32> = {
        let _no_round = inner.round_lock.lock().await;
        let mut conn = inner.conn();
        let left: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(keys::NODES)
            .arg(&inner.config.node_id)
            .query_async(&mut conn)
            .await;
        if let Err(error) = left {
            tracing::warn!(%error, "redis store: cannot leave the node set; the others see this node gone when its heartbeat runs out");
        }
        let live: redis::RedisResult<Vec<String>> = inner
            .scripts
            .live
            .key(keys::NODES)
            .arg(inner.config.lease_ms)
            .invoke_async(&mut conn)
            .await;
        let others = live.is_ok_and(|live| live.iter().any(|n| *n != inner.config.node_id));
        if !others {
            // Nobody would take them: deliver within the grace period as a
            // lone node does, and let the leases run out.
            return 0;
        }
        let _: redis::RedisResult<u64> = redis::cmd("INCR").arg(keys::GENERATION).query_async(&mut conn).await;
        inner.owned.lock().expect("owned lock").keys().copied().collect()
    };
    let releases = held.iter().map(|&p| release(inner.clone(), p, within, "sigterm"));
    let handed = futures_util::future::join_all(releases)
        .await
        .into_iter()
        .filter(|r| *r)
        .count();
    // Hand-overs a round began before are awaited too.
    loop {
        let done = inner.released.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if inner.releasing.lock().expect("releasing lock").is_empty()
            || tokio::time::timeout_at(deadline, done).await.is_err()
        {
            return handed;
        }
    }
}

/// What one lease round did.
struct Round {
    /// Per partition acquired, when its takeover is done.
    taken: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// When the first lease held by another node runs out unless renewed:
    /// the next round is due then if that is sooner than the interval.
    next_free: Option<Instant>,
}

/// What the acquire script answered.
enum Acquired {
    /// The lease is this node's, under this token.
    Token(String),
    /// Another node holds it for this long yet (`None`: without expiry).
    HeldFor(Option<Duration>),
}

impl redis::FromRedisValue for Acquired {
    fn from_redis_value(value: redis::Value) -> Result<Self, redis::ParsingError> {
        match value {
            redis::Value::Int(left) => Ok(Self::HeldFor(u64::try_from(left).ok().map(Duration::from_millis))),
            other => String::from_redis_value(other).map(Self::Token),
        }
    }
}

/// One round: renew what this node owns, acquire every free partition,
/// then measure lag and sweep what it owned before the round.
async fn round(inner: &Arc<Inner>) -> Result<Round, StoreError> {
    // One round at a time, and none while `leave` takes this node out.
    let _one = inner.round_lock.lock().await;
    let mut conn = inner.conn();
    let node = &inner.config.node_id;
    let lease_ms = inner.config.lease_ms;
    let held: Vec<(u32, String)> = inner
        .owned
        .lock()
        .expect("owned lock")
        .iter()
        .map(|(p, t)| (*p, t.clone()))
        .collect();
    // Membership by Redis's clock: a node is live while its last heartbeat
    // is younger than a lease.
    let leaving = inner.leaving.load(Ordering::Acquire);
    // A failed heartbeat (its key's Redis Cluster shard down) must not stop
    // the renewals: the last live set stands, and nothing moves this round.
    let (live, swaps, rebalance, member_expires) = if leaving {
        (Vec::new(), Vec::new(), false, None)
    } else {
        let asked = Instant::now();
        let beat: redis::RedisResult<Vec<String>> = inner
            .scripts
            .heartbeat
            .key(keys::NODES)
            .key(keys::GENERATION)
            .key(keys::SWAPS)
            .arg(node)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await;
        match beat {
            Ok(reply) => {
                let Heartbeat { live, swaps, soonest } = read_heartbeat(&reply, node, lease_ms);
                (live, swaps, true, soonest.map(|left| asked + left + EXPIRY_MARGIN))
            }
            Err(error) => {
                tracing::warn!(%error, "redis store: cannot record this node's heartbeat; keeping the last live set");
                let live = inner.members.lock().expect("members lock").clone();
                (live, inner.swaps.lock().expect("swaps lock").clone(), false, None)
            }
        }
    };
    let mut assigned = assignment::assign(&live, inner.config.partitions);
    assignment::apply_swaps(&mut assigned, &swaps);
    let mine = |partition: u32| {
        assigned
            .get(partition as usize)
            .is_some_and(|&i| live.get(i).is_some_and(|n| n == node))
    };
    // Partitions handed over now go because a node joined, or because one
    // left and the shares of those that stay moved, or, the live set
    // unchanged, because the swaps evening out the work changed.
    let cause = {
        let mut members = inner.members.lock().expect("members lock");
        let cause = if live == *members {
            "balance"
        } else if live.len() >= members.len() {
            "join"
        } else {
            "leave"
        };
        *members = live.clone();
        if rebalance {
            *inner.swaps.lock().expect("swaps lock") = swaps;
        }
        cause
    };
    let mut renewed = Vec::with_capacity(held.len());
    for (partition, token) in held {
        let keys = PartitionKeys::new(partition);
        let sent = Instant::now();
        let kept: i64 = inner
            .scripts
            .renew
            .key(&keys.lease)
            .arg(&token)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        if kept != 0 && holding(inner, partition, &token) {
            inner.lease_holds_from(partition, sent);
        }
        if kept == 0 {
            lose(inner, partition);
        } else if rebalance && !mine(partition) {
            // Another node's share now (it joined, or this node's share
            // shrank): hand it over, in the background.
            tokio::spawn(release(
                inner.clone(),
                partition,
                Duration::from_millis(lease_ms),
                cause,
            ));
        } else {
            renewed.push((partition, token));
        }
    }
    // Every free partition, in one round: a dead node's partitions all
    // move as soon as their leases run out, none waits for a later round
    // or another node. Start at a node-specific place, so nodes starting
    // together try different partitions first.
    let partitions = inner.config.partitions;
    let offset = keys::partition_of(node, partitions);
    let mut taken = Vec::new();
    let mut next_free: Option<Instant> = None;
    for i in 0..partitions {
        let partition = (offset + i) % partitions;
        if leaving || !mine(partition) || inner.owned.lock().expect("owned lock").contains_key(&partition) {
            continue;
        }
        let keys = PartitionKeys::new(partition);
        let asked = Instant::now();
        let acquired: Acquired = inner
            .scripts
            .acquire
            .key(&keys.lease)
            .key(&keys.epoch)
            .arg(node)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        let token = match acquired {
            Acquired::Token(token) => token,
            Acquired::HeldFor(left) => {
                if let Some(left) = left {
                    let free = asked + left + EXPIRY_MARGIN;
                    next_free = Some(next_free.map_or(free, |soonest| soonest.min(free)));
                }
                continue;
            }
        };
        inner.lease_holds_from(partition, asked);
        inner.owned.lock().expect("owned lock").insert(partition, token.clone());
        *inner
            .takeovers
            .lock()
            .expect("takeovers lock")
            .entry(partition)
            .or_default() += 1;
        let (done, taken_over) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run_partition(inner.clone(), partition, token, done));
        inner
            .readers
            .lock()
            .expect("readers lock")
            .insert(partition, task.abort_handle());
        taken.push(taken_over);
    }
    for (partition, token) in renewed {
        if !holding(inner, partition, &token) || inner.releasing.lock().expect("releasing lock").contains(&partition) {
            continue;
        }
        let keys = PartitionKeys::new(partition);
        // Lag: entries never read by the group, plus read and not batched.
        // One partition's sweep failing (or its hand-over starting) does not
        // fail the round: its renewals went through.
        let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.inbox)
            .query_async(&mut conn)
            .await;
        if let Ok(groups) = groups {
            inner
                .lag
                .lock()
                .expect("lag lock")
                .insert(partition, reply::group_lag(&groups, keys::GROUP));
        }
        // Entries idle for a lease and not held here: read by a node that
        // lost its lease, or read here by a call that failed half-way.
        if let Err(error) = claim(inner, partition, &token, lease_ms, &mut conn).await
            && !error.is_not_owner()
        {
            tracing::warn!(partition, %error, "redis store: sweeping the inbox failed; next round tries again");
        }
    }
    // A live node's heartbeat running out moves its share: look then.
    let next_free = next_free.into_iter().chain(member_expires).min();
    Ok(Round { taken, next_free })
}

/// What the heartbeat script answered.
struct Heartbeat {
    /// The live nodes, sorted.
    live: Vec<String>,
    /// The swaps evening out the work (see [`assignment::balance`]).
    swaps: Vec<(u32, u32)>,
    /// How long until the first other node's heartbeat runs out (by
    /// Redis's clock).
    soonest: Option<Duration>,
}

fn read_heartbeat(reply: &[String], node: &str, ttl_ms: u64) -> Heartbeat {
    let now: u64 = reply.first().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut live = Vec::new();
    let mut soonest: Option<u64> = None;
    for pair in reply.get(2..).unwrap_or_default().chunks(2) {
        let [name, score] = pair else { continue };
        if name != node
            && let Ok(score) = score.parse::<f64>()
        {
            let left = (score as u64 + ttl_ms).saturating_sub(now);
            soonest = Some(soonest.map_or(left, |s| s.min(left)));
        }
        live.push(name.clone());
    }
    live.sort();
    let swaps = read_swaps(reply.get(1).map_or("", String::as_str), &live);
    Heartbeat {
        live,
        swaps,
        soonest: soonest.map(Duration::from_millis),
    }
}

/// Swaps as stored: the live set they were made for (a fingerprint), then
/// the pairs: `fingerprint|a:b,c:d`.
fn write_swaps(live: &[String], swaps: &[(u32, u32)]) -> String {
    let pairs: Vec<String> = swaps.iter().map(|(a, b)| format!("{a}:{b}")).collect();
    format!("{:016x}|{}", live_set_fingerprint(live), pairs.join(","))
}

/// Reads [`write_swaps`]'s text: the pairs, when they were made for `live`
/// (swaps made for another live set even out nothing; the balancing node
/// makes new ones), skipping what does not read.
fn read_swaps(text: &str, live: &[String]) -> Vec<(u32, u32)> {
    let Some((fingerprint, pairs)) = text.split_once('|') else {
        return Vec::new();
    };
    if u64::from_str_radix(fingerprint, 16).ok() != Some(live_set_fingerprint(live)) {
        return Vec::new();
    }
    pairs
        .split(',')
        .filter_map(|pair| {
            let (a, b) = pair.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// FNV-1a of the sorted live set's names, each ended by a zero byte.
fn live_set_fingerprint(live: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in live.iter().flat_map(|name| name.bytes().chain([0])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A sample of every partition's accepted-events counter, taken by the
/// node balancing the work.
pub(crate) struct Traffic {
    at: Instant,
    /// The live set it was taken under: a window spanning a membership
    /// change measures nothing the new set can act on.
    live: Vec<String>,
    counts: Vec<u64>,
    /// Whether the window that ended at `at` asked for new swaps: swaps
    /// are published only when two windows in a row ask, so a burst in one
    /// window moves nothing.
    wanted: bool,
}

/// Below this many accepted events per second, the whole deployment
/// together, the work is not worth moving partitions for.
const BALANCE_MIN_RATE: u64 = 100;
/// New swaps are published only when they bring the busiest node's work
/// down to this share (percent) of what it is now or lower: small gains
/// are not worth a hand-over.
const BALANCE_GAIN_PERCENT: u64 = 85;

/// How long published swaps last unless the balancing node renews them
/// (every `balance_ms`): swaps outlive a balancing node that died only long
/// enough for the next one to take over, and never revive for a live set
/// that recurs much later.
fn swaps_ttl_ms(config: &crate::RedisStoreConfig) -> u64 {
    config.balance_ms.saturating_mul(3).saturating_add(config.lease_ms)
}

/// The first live node's duty, every `balance_ms`: samples every
/// partition's traffic, and when the fair shares leave one node with
/// clearly more work than swaps would, in this window and the one before,
/// publishes the swaps (and bumps the generation, so every node runs a
/// lease round and the partitions move by the usual hand-over).
///
/// Swaps are published only while every live node reports (see
/// [`exchange`]): a node of an older version would ignore them, and the
/// partitions they move would have no owner.
async fn balance_work(inner: &Inner, conn: &mut Conn) {
    let node = &inner.config.node_id;
    let live = inner.members.lock().expect("members lock").clone();
    if live.first() != Some(node) || inner.leaving.load(Ordering::Acquire) {
        *inner.traffic.lock().expect("traffic lock") = None;
        return;
    }
    let current = inner.swaps.lock().expect("swaps lock").clone();
    if !current.is_empty() {
        // The swaps in force are this live set's: they stay while it does.
        let renewed: redis::RedisResult<()> = redis::cmd("PEXPIRE")
            .arg(keys::SWAPS)
            .arg(swaps_ttl_ms(&inner.config))
            .query_async(conn)
            .await;
        if let Err(error) = renewed {
            tracing::warn!(%error, "redis store: cannot renew the swaps evening out the work");
        }
    }
    let reads = (0..inner.config.partitions).map(|partition| {
        let mut conn = conn.clone();
        async move {
            let count: redis::RedisResult<Option<u64>> = redis::cmd("GET")
                .arg(PartitionKeys::new(partition).accepted)
                .query_async(&mut conn)
                .await;
            count.map(Option::unwrap_or_default)
        }
    });
    let Ok(counts) = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect::<redis::RedisResult<Vec<u64>>>()
    else {
        return;
    };
    let at = Instant::now();
    let mut traffic = inner
        .traffic
        .lock()
        .expect("traffic lock")
        .take()
        .filter(|last| last.live == live);
    let proposed = traffic.as_ref().and_then(|last| {
        let seconds = at.duration_since(last.at).as_secs_f64().max(0.001);
        let load: Vec<u64> = counts
            .iter()
            .zip(&last.counts)
            .map(|(now, then)| (now.saturating_sub(*then) as f64 / seconds) as u64)
            .collect();
        let every_node_applies_swaps = {
            let aware = inner.swap_aware.lock().expect("swap_aware lock");
            live.iter().all(|n| aware.contains(n))
        };
        if load.iter().sum::<u64>() < BALANCE_MIN_RATE || !every_node_applies_swaps {
            return None;
        }
        let base = assignment::assign(&live, inner.config.partitions);
        let busiest = |swaps: &[(u32, u32)]| {
            let mut owner = base.clone();
            assignment::apply_swaps(&mut owner, swaps);
            assignment::node_loads(&owner, live.len(), &load)
                .into_iter()
                .max()
                .unwrap_or(0)
        };
        let proposed = assignment::balance(&base, live.len(), &load);
        let (now, then) = (busiest(&current), busiest(&proposed));
        (proposed != current && then * 100 <= now * BALANCE_GAIN_PERCENT).then_some((proposed, now, then))
    });
    let asked_before = traffic.as_ref().is_some_and(|last| last.wanted);
    traffic = Some(Traffic {
        at,
        live: live.clone(),
        counts,
        // A window that publishes starts the count again: the next swaps
        // too need two windows of their own.
        wanted: proposed.is_some() && !asked_before,
    });
    *inner.traffic.lock().expect("traffic lock") = traffic;
    let Some((proposed, now, then)) = proposed.filter(|_| asked_before) else {
        return;
    };
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(keys::SWAPS)
        .arg(write_swaps(&live, &proposed))
        .arg("PX")
        .arg(swaps_ttl_ms(&inner.config))
        .ignore();
    pipe.cmd("INCR").arg(keys::GENERATION).ignore();
    match pipe.query_async::<()>(conn).await {
        Ok(()) => tracing::info!(
            busiest_before = now,
            busiest_after = then,
            swaps = proposed.len(),
            "redis store: evening out the nodes' work (accepted events per second): partitions trade owners"
        ),
        Err(error) => tracing::warn!(%error, "redis store: cannot publish the swaps evening out the work"),
    }
}

/// Whether this node still holds `partition` under `token`.
fn holding(inner: &Inner, partition: u32, token: &str) -> bool {
    inner.token(partition).as_deref() == Some(token)
}

/// Takes a partition over, then reads its inbox, while this node holds it.
async fn run_partition(inner: Arc<Inner>, partition: u32, token: String, done: tokio::sync::oneshot::Sender<()>) {
    while holding(&inner, partition, &token) {
        match take_over(&inner, partition, &token).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(partition, %error, "redis store: taking the partition over failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    let _ = done.send(());
    read_inbox(&inner, partition, &token).await;
}

/// Hands the engine what a partition holds: its stored deliveries in the
/// order they were formed (but those still in a lane here), then the inbox
/// entries read but not batched by a previous owner (claimed for this
/// node). Safe to run again after a failure half-way.
async fn take_over(inner: &Inner, partition: u32, token: &str) -> Result<(), StoreError> {
    let keys = PartitionKeys::new(partition);
    let mut conn = inner.conn();
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.inbox)
        .arg(keys::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    if let Err(error) = created
        && error.code() != Some("BUSYGROUP")
    {
        return Err(store_error(&error));
    }
    let stored: std::collections::HashMap<u64, String> = redis::cmd("HGETALL")
        .arg(&keys.deliveries)
        .query_async(&mut conn)
        .await
        .map_err(|e| store_error(&e))?;
    let mut deliveries: Vec<(u64, DeliveryRecord)> = Vec::with_capacity(stored.len());
    for (key, value) in stored {
        let (seq, json) = value.split_once('|').unwrap_or(("0", &value));
        match serde_json::from_str::<DeliveryRecord>(json) {
            Ok(record) => deliveries.push((seq.parse().unwrap_or(0), record)),
            Err(error) => {
                tracing::error!(partition, key, %error, "redis store: a damaged delivery record stays in place")
            }
        }
    }
    deliveries.sort_by_key(|(seq, _)| *seq);
    // Retry times as due times by Redis's clock, read into this node's.
    let due: std::collections::HashMap<u64, u64> = redis::cmd("HGETALL")
        .arg(&keys.due)
        .query_async(&mut conn)
        .await
        .map_err(|e| store_error(&e))?;
    let redis_now = if due.is_empty() {
        0
    } else {
        redis_time_ms(&mut conn).await?
    };
    let mut loaded = 0u64;
    let mut resumed = 0usize;
    for (_, mut record) in deliveries {
        if !holding(inner, partition, token) {
            return Ok(());
        }
        // Still in a lane here (the same delivery, the same batch id), or
        // handed over by an earlier try or a replay notice read meanwhile.
        if !reserve_key(inner, record.key, partition) {
            continue;
        }
        if let Some(at) = due.get(&record.key) {
            record.not_before_ms = hookline_core::store::now_ms() + at.saturating_sub(redis_now);
        }
        let events: redis::RedisResult<Option<String>> = redis::cmd("HGET")
            .arg(&keys.events)
            .arg(record.key)
            .query_async(&mut conn)
            .await;
        let events = match events {
            Ok(events) => events,
            Err(error) => {
                release_key(inner, record.key);
                return Err(store_error(&error));
            }
        };
        let events = events.unwrap_or_default();
        let events_bytes = events.len() as u64;
        let events_loaded = loaded + events_bytes <= inner.config.memory_budget;
        if events_loaded {
            loaded += events_bytes;
            record.events = events.into();
        }
        resumed += 1;
        owner(inner).resume_delivery(RecoveredDelivery {
            record,
            events_bytes,
            events_loaded,
        });
    }
    let claimed = claim(inner, partition, token, 0, &mut conn).await?;
    forget_gone_consumers(inner, &keys, &mut conn).await;
    tracing::info!(
        partition,
        token,
        deliveries = resumed,
        inbox_entries = claimed,
        "redis store: partition taken over"
    );
    Ok(())
}

/// Redis's clock, in milliseconds since the epoch.
async fn redis_time_ms(conn: &mut Conn) -> Result<u64, StoreError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(conn)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(secs * 1000 + micros / 1000)
}

/// Removes from the partition's consumer group the consumers of nodes no
/// longer live that hold no entry (this node just claimed every pending
/// one): without it, a name per node start would pile up in every group.
async fn forget_gone_consumers(inner: &Inner, keys: &PartitionKeys, conn: &mut Conn) {
    let consumers: redis::RedisResult<Vec<std::collections::HashMap<String, redis::Value>>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&keys.inbox)
        .arg(keys::GROUP)
        .query_async(conn)
        .await;
    let Ok(consumers) = consumers else {
        return;
    };
    let live = inner.members.lock().expect("members lock").clone();
    for consumer in consumers {
        let name = match consumer.get("name") {
            Some(redis::Value::BulkString(name)) => String::from_utf8_lossy(name).into_owned(),
            Some(redis::Value::SimpleString(name)) => name.clone(),
            _ => continue,
        };
        let pending = matches!(consumer.get("pending"), Some(redis::Value::Int(0)));
        if pending && name != inner.config.node_id && !live.contains(&name) {
            let _: redis::RedisResult<i64> = inner
                .scripts
                .forget_consumer
                .key(&keys.inbox)
                .arg(keys::GROUP)
                .arg(&name)
                .invoke_async(conn)
                .await;
        }
    }
}

/// Marks a stored delivery as handed to the engine here; `false` when it
/// already is (in a lane, or being handed over by another task).
fn reserve_key(inner: &Inner, key: u64, partition: u32) -> bool {
    match inner.partition_of_key.lock().expect("keys lock").entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(vacant) => {
            vacant.insert(partition);
            true
        }
    }
}

/// Undoes [`reserve_key`]: the delivery was not handed to the engine.
fn release_key(inner: &Inner, key: u64) {
    inner.partition_of_key.lock().expect("keys lock").remove(&key);
}

/// Claims the partition's pending entries idle for at least `min_idle_ms`
/// (from any consumer) and hands over those not held here; returns how many
/// were handed over.
async fn claim(
    inner: &Inner,
    partition: u32,
    token: &str,
    min_idle_ms: u64,
    conn: &mut Conn,
) -> Result<usize, StoreError> {
    let keys = PartitionKeys::new(partition);
    let _claiming = Claiming::start(inner);
    let mut cursor = "0-0".to_string();
    let mut handed = 0usize;
    loop {
        let value: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&keys.inbox)
            .arg(keys::GROUP)
            .arg(&inner.config.node_id)
            .arg(min_idle_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(READ_COUNT)
            .query_async(conn)
            .await
            .map_err(|e| store_error(&e))?;
        let (next, entries) = reply::auto_claim(value);
        handed += hand_over(inner, partition, token, true, conn, entries).await?;
        if next == "0-0" {
            return Ok(handed);
        }
        cursor = next;
    }
}

/// A claim under way, for [`crate::tickets::Tickets`]; ended when dropped
/// (also when its task is aborted).
struct Claiming<'a>(&'a Inner);

impl<'a> Claiming<'a> {
    fn start(inner: &'a Inner) -> Self {
        inner.tickets.lock().expect("tickets lock").claim_started();
        Self(inner)
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.0.tickets.lock().expect("tickets lock").claim_ended();
    }
}

/// Gives inbox entries to the engine: events to batch, replayed deliveries
/// to send; entries already held here are skipped. `claimed`: they were
/// read before, so some of their events may be batched already. Stops,
/// refused, once this node no longer holds the partition under `token`.
/// Returns how many were handed over.
async fn hand_over(
    inner: &Inner,
    partition: u32,
    token: &str,
    claimed: bool,
    conn: &mut Conn,
    entries: Vec<Entry>,
) -> Result<usize, StoreError> {
    let keys = PartitionKeys::new(partition);
    let mut handed = 0;
    for entry in entries {
        if !holding(inner, partition, token) {
            return Err(StoreError::not_owner(partition));
        }
        if inner.tickets.lock().expect("tickets lock").holds(partition, &entry.id) {
            continue;
        }
        match entry.field("k") {
            Some("e") => {
                let (Some(app_id), Some(payload)) = (entry.field("a"), entry.field("e")) else {
                    tracing::error!(partition, id = %entry.id, "redis store: an inbox entry without app or events is skipped");
                    continue;
                };
                let events = match Event::parse_joined(payload) {
                    Ok(events) => events,
                    Err(error) => {
                        tracing::error!(partition, id = %entry.id, %error, "redis store: a damaged inbox entry stays in place");
                        continue;
                    }
                };
                // Held from here, before any await: the takeover's claim and
                // the round's sweep can hand the same entries over at once,
                // and only one of them may give an entry to the engine.
                let ticket = inner.next_ticket.fetch_add(1, Ordering::Relaxed);
                {
                    // Checked under the lock `lose` purges under: an entry is
                    // never held under a token already let go.
                    let mut tickets = inner.tickets.lock().expect("tickets lock");
                    if !holding(inner, partition, token) {
                        return Err(StoreError::not_owner(partition));
                    }
                    if tickets.holds(partition, &entry.id) {
                        continue;
                    }
                    tickets.insert(
                        ticket,
                        Ticket {
                            partition,
                            id: entry.id.clone(),
                            count: events.len() as u32,
                            token: token.to_string(),
                        },
                    );
                }
                let let_go = || inner.tickets.lock().expect("tickets lock").remove(ticket);
                // Only an entry some owner read before can be partly batched.
                let consumed: Option<u32> = if claimed {
                    match redis::cmd("HGET")
                        .arg(&keys.progress)
                        .arg(&entry.id)
                        .query_async(conn)
                        .await
                    {
                        Ok(consumed) => consumed,
                        Err(error) => {
                            let_go();
                            return Err(store_error(&error));
                        }
                    }
                } else {
                    None
                };
                // The accepting node ran another config of the app: give
                // this node's reload a short while to catch up, holding the
                // partition's entries behind it (their order matters).
                let config = entry.field("v").map(str::to_string);
                let mut skewed = false;
                if let Some(config) = &config {
                    let until = Instant::now() + CONFIG_SKEW_WAIT;
                    while !owner(inner).config_matches(app_id, config) && Instant::now() < until {
                        skewed = true;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                if !holding(inner, partition, token) {
                    let_go();
                    return Err(StoreError::not_owner(partition));
                }
                let taken = owner(inner).resume_events(InboxEntry {
                    ticket,
                    app_id: app_id.to_string(),
                    events,
                    consumed: consumed.unwrap_or(0),
                    config,
                    skewed,
                });
                if taken {
                    handed += 1;
                } else {
                    // Not batched here (its app is not configured on this
                    // node): left pending, the sweep offers it again.
                    let_go();
                }
            }
            Some("r") => {
                let Some(key) = entry.field("key").and_then(|k| k.parse::<u64>().ok()) else {
                    continue;
                };
                // Reserved before any await, as an inbox entry is: a sweep
                // and a takeover may read the same notice at once.
                if reserve_key(inner, key, partition) {
                    let read: redis::RedisResult<(Option<String>, Option<String>)> = redis::pipe()
                        .cmd("HGET")
                        .arg(&keys.deliveries)
                        .arg(key)
                        .cmd("HGET")
                        .arg(&keys.events)
                        .arg(key)
                        .query_async(conn)
                        .await;
                    let (record, events) = match read {
                        Ok(read) => read,
                        Err(error) => {
                            release_key(inner, key);
                            return Err(store_error(&error));
                        }
                    };
                    let record = record
                        .as_deref()
                        .and_then(|v| v.split_once('|'))
                        .and_then(|(_, json)| serde_json::from_str::<DeliveryRecord>(json).ok());
                    match record {
                        Some(mut record) => {
                            record.events = events.unwrap_or_default().into();
                            if owner(inner).replayed(record) {
                                handed += 1;
                            } else {
                                // Not sent here: a takeover or restart resumes it.
                                release_key(inner, key);
                            }
                        }
                        None => release_key(inner, key),
                    }
                }
                // The notice is done with; acknowledged only while this node
                // holds the partition.
                let acked: redis::RedisResult<i64> = inner
                    .scripts
                    .ack
                    .key(&keys.lease)
                    .key(&keys.inbox)
                    .arg(token)
                    .arg(keys::GROUP)
                    .arg(&entry.id)
                    .invoke_async(conn)
                    .await;
                acked.map_err(|e| crate::script_error(&e, partition))?;
            }
            _ => tracing::error!(partition, id = %entry.id, "redis store: an inbox entry of unknown kind is skipped"),
        }
    }
    Ok(handed)
}

/// Reads a partition's new inbox entries while this node holds `token`, on
/// a connection of its own (a blocking read holds it). After a failed read
/// or hand-over, entries this node had read and not handed over stay
/// pending; the sweep in the lease round hands them over again.
async fn read_inbox(inner: &Inner, partition: u32, token: &str) {
    let keys = PartitionKeys::new(partition);
    let mut conn = loop {
        if !holding(inner, partition, token) {
            return;
        }
        match inner
            .connector
            .connect(Duration::from_millis(READ_BLOCK_MS + 5000))
            .await
        {
            Ok(conn) => break conn,
            Err(error) => {
                tracing::warn!(partition, %error, "redis store: cannot open the inbox reader's connection; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let mut shared = inner.conn();
    while holding(inner, partition, token) && !inner.stopped.load(Ordering::Acquire) {
        if !owner(inner).has_room() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let read: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(keys::GROUP)
            .arg(&inner.config.node_id)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&keys.inbox)
            .arg(">")
            .query_async(&mut conn)
            .await;
        inner.note(&read);
        let handed = match read {
            Ok(value) => hand_over(inner, partition, token, false, &mut shared, reply::read_group(value))
                .await
                .map(drop),
            Err(error) => Err(store_error(&error)),
        };
        if let Err(error) = handed {
            if error.is_not_owner() {
                return;
            }
            tracing::warn!(partition, %error, "redis store: reading the inbox failed; retrying");
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redis::{FromRedisValue, Value};

    use super::{Acquired, NodeShare, read_report, read_swaps, write_report, write_swaps};

    #[test]
    fn swaps_apply_only_to_the_live_set_they_were_made_for() {
        let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let text = write_swaps(&live, &[(1, 5), (30, 2)]);
        assert_eq!(read_swaps(&text, &live), [(1, 5), (30, 2)]);
        let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert!(read_swaps(&text, &four).is_empty(), "made for three nodes, not four");
        assert!(read_swaps(&write_swaps(&live, &[]), &live).is_empty());
        assert!(read_swaps("", &live).is_empty());
        assert!(read_swaps("garbage", &live).is_empty());
    }

    #[test]
    fn a_report_reads_back_as_written_and_a_missing_one_as_nothing() {
        let share = NodeShare {
            owned: vec![0, 7, 31],
            backlog_bytes: 1_048_576,
        };
        assert_eq!(write_report(&share), "1048576|0,7,31|swaps");
        assert_eq!(read_report(&write_report(&share)), (share.clone(), true));
        let empty = NodeShare::default();
        assert_eq!(read_report(&write_report(&empty)), (empty.clone(), true));
        assert_eq!(read_report(""), (empty, false), "not reported yet");
        // A node of the version before swaps: its share counts, but it
        // would not apply swaps.
        assert_eq!(read_report("1048576|0,7,31"), (share, false));
    }

    #[test]
    fn the_acquire_answer_is_a_token_or_the_time_another_lease_has_left() {
        let token = Acquired::from_redis_value(Value::BulkString(b"node-a 7".to_vec())).unwrap();
        assert!(matches!(token, Acquired::Token(t) if t == "node-a 7"));
        let held = Acquired::from_redis_value(Value::Int(1500)).unwrap();
        assert!(matches!(held, Acquired::HeldFor(Some(left)) if left == Duration::from_millis(1500)));
        // A lease without expiry (set by hand) never frees up by itself.
        let forever = Acquired::from_redis_value(Value::Int(-1)).unwrap();
        assert!(matches!(forever, Acquired::HeldFor(None)));
    }
}
