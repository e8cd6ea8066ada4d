//! Leases: which node owns which partition, takeover, and the readers that
//! feed an owned partition's inbox to the engine.
//!
//! Every third of `lease_ms` a node heartbeats, renews the leases it holds
//! (a lease it cannot renew is lost: its reader stops and the engine is
//! told), and, while it owns fewer than its share of the partitions
//! (partitions / live nodes, rounded up), acquires free ones. Partitions
//! are not moved away from a live owner: they move when it dies.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hookline_core::event::Event;
use hookline_core::store::{DeliveryRecord, InboxEntry, Owner, RecoveredDelivery, StoreError};

use crate::keys::{self, PartitionKeys};
use crate::reply::{self, Entry};
use crate::{Inner, Ticket};

/// Entries read per call.
const READ_COUNT: usize = 256;
/// How long a read blocks waiting for new entries.
const READ_BLOCK_MS: u64 = 500;
/// How long an entry accepted under another config of its app waits for
/// this node to load the same one.
const CONFIG_SKEW_WAIT: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the first round (so what this node owns at start is handed over
/// before it serves), then keeps the leases in the background.
pub(crate) async fn start(inner: Arc<Inner>) -> Result<(), StoreError> {
    round(&inner).await?;
    let every = Duration::from_millis(inner.config.lease_ms / 3);
    tokio::spawn(async move {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            if inner.stopped.load(Ordering::Acquire) {
                return;
            }
            match round(&inner).await {
                Ok(()) => last_renewed = Instant::now(),
                Err(error) => {
                    tracing::warn!(%error, "redis store: cannot renew leases");
                    // Unrenewed past the lease, another node may own them.
                    if last_renewed.elapsed() >= Duration::from_millis(inner.config.lease_ms) {
                        let lost: Vec<u32> = inner
                            .owned
                            .lock()
                            .expect("owned lock")
                            .drain()
                            .map(|(p, _)| p)
                            .collect();
                        for partition in lost {
                            lose(&inner, partition);
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

fn owner(inner: &Inner) -> &Arc<dyn Owner> {
    inner.owner.get().expect("ownership starts after the owner is set")
}

fn lose(inner: &Inner, partition: u32) {
    tracing::warn!(partition, node = %inner.config.node_id, "redis store: lease lost");
    owner(inner).partition_lost(partition);
}

/// One heartbeat: renew, then acquire up to this node's share.
async fn round(inner: &Arc<Inner>) -> Result<(), StoreError> {
    let mut conn = inner.conn();
    let now = now_ms();
    let node = &inner.config.node_id;
    let lease_ms = inner.config.lease_ms;
    let live: usize = redis::pipe()
        .cmd("ZADD")
        .arg(keys::NODES)
        .arg(now)
        .arg(node)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(keys::NODES)
        .arg("-inf")
        .arg(now.saturating_sub(lease_ms))
        .ignore()
        .cmd("ZCARD")
        .arg(keys::NODES)
        .query_async::<(usize,)>(&mut conn)
        .await
        .map(|(n,)| n)
        .map_err(|e| crate::store_error(&e))?;
    let held: Vec<(u32, String)> = inner
        .owned
        .lock()
        .expect("owned lock")
        .iter()
        .map(|(p, t)| (*p, t.clone()))
        .collect();
    for (partition, token) in held {
        let keys = PartitionKeys::new(partition);
        let renewed: i64 = inner
            .scripts
            .renew
            .key(&keys.lease)
            .arg(&token)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| crate::store_error(&e))?;
        if renewed == 0 {
            inner.owned.lock().expect("owned lock").remove(&partition);
            lose(inner, partition);
            continue;
        }
        // Lag: entries never read by the group, plus read and not batched.
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.inbox)
            .query_async(&mut conn)
            .await
            .map_err(|e| crate::store_error(&e))?;
        let lag = reply::group_lag(&groups, keys::GROUP);
        inner.lag.lock().expect("lag lock").insert(partition, lag);
    }
    {
        let owned = inner.owned.lock().expect("owned lock");
        inner.lag.lock().expect("lag lock").retain(|p, _| owned.contains_key(p));
    }
    let partitions = inner.config.partitions;
    let share = partitions.div_ceil(live.max(1) as u32) as usize;
    // Start at a node-specific place, so nodes starting together try
    // different partitions first.
    let offset = keys::partition_of(node, partitions);
    for i in 0..partitions {
        if inner.owned.lock().expect("owned lock").len() >= share {
            break;
        }
        let partition = (offset + i) % partitions;
        if inner.owned.lock().expect("owned lock").contains_key(&partition) {
            continue;
        }
        let keys = PartitionKeys::new(partition);
        let token: Option<String> = inner
            .scripts
            .acquire
            .key(&keys.lease)
            .key(&keys.epoch)
            .arg(node)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| crate::store_error(&e))?;
        let Some(token) = token else { continue };
        let previous = inner
            .last_token
            .lock()
            .expect("last_token lock")
            .insert(partition, token.clone());
        take_over(inner, partition, &token, previous.as_deref()).await?;
        *inner
            .takeovers
            .lock()
            .expect("takeovers lock")
            .entry(partition)
            .or_default() += 1;
        inner.owned.lock().expect("owned lock").insert(partition, token.clone());
        tokio::spawn(read_inbox(inner.clone(), partition, token));
    }
    Ok(())
}

/// The epoch of a lease token (`node epoch`).
fn epoch(token: &str) -> Option<u64> {
    token.rsplit_once(' ').and_then(|(_, e)| e.parse().ok())
}

/// Hands the engine what a partition holds: its stored deliveries in the
/// order they were formed, then the inbox entries read but not batched by
/// a previous owner (claimed for this node).
///
/// Taking back a partition this node held last (`previous` is the epoch
/// just before: nobody owned it in between, say after Redis was away
/// longer than a lease), what is still in flight here carries on under the
/// new token, and only what is not is handed over again.
async fn take_over(inner: &Inner, partition: u32, token: &str, previous: Option<&str>) -> Result<(), StoreError> {
    let keys = PartitionKeys::new(partition);
    let continuing = match (previous.and_then(epoch), epoch(token)) {
        (Some(before), Some(now)) => now == before + 1,
        _ => false,
    };
    let held_here: std::collections::HashSet<String> = {
        let mut tickets = inner.tickets.lock().expect("tickets lock");
        tickets
            .values_mut()
            .filter(|t| t.partition == partition)
            .filter_map(|t| {
                continuing.then(|| {
                    t.token = token.to_string();
                    t.id.clone()
                })
            })
            .collect()
    };
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
        return Err(crate::store_error(&error));
    }
    let stored: std::collections::HashMap<u64, String> = redis::cmd("HGETALL")
        .arg(&keys.deliveries)
        .query_async(&mut conn)
        .await
        .map_err(|e| crate::store_error(&e))?;
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
    let mut loaded = 0u64;
    let resumed = deliveries.len();
    for (_, mut record) in deliveries {
        // Still in a lane here (the same delivery, the same batch id).
        if inner
            .partition_of_key
            .lock()
            .expect("keys lock")
            .contains_key(&record.key)
        {
            continue;
        }
        let events: Option<String> = redis::cmd("HGET")
            .arg(&keys.events)
            .arg(record.key)
            .query_async(&mut conn)
            .await
            .map_err(|e| crate::store_error(&e))?;
        let events = events.unwrap_or_default();
        let events_bytes = events.len() as u64;
        let events_loaded = loaded + events_bytes <= inner.config.memory_budget;
        if events_loaded {
            loaded += events_bytes;
            record.events = events.into();
        }
        inner
            .partition_of_key
            .lock()
            .expect("keys lock")
            .insert(record.key, partition);
        owner(inner).resume_delivery(RecoveredDelivery {
            record,
            events_bytes,
            events_loaded,
        });
    }
    let mut cursor = "0-0".to_string();
    let mut claimed = 0usize;
    loop {
        let value: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&keys.inbox)
            .arg(keys::GROUP)
            .arg(&inner.config.node_id)
            .arg(0)
            .arg(&cursor)
            .arg("COUNT")
            .arg(READ_COUNT)
            .query_async(&mut conn)
            .await
            .map_err(|e| crate::store_error(&e))?;
        let (next, mut entries) = reply::auto_claim(&value);
        entries.retain(|e| !held_here.contains(&e.id));
        claimed += entries.len();
        hand_over(inner, partition, token, true, &mut conn, entries).await?;
        if next == "0-0" {
            break;
        }
        cursor = next;
    }
    tracing::info!(
        partition,
        token,
        deliveries = resumed,
        inbox_entries = claimed,
        "redis store: partition taken over"
    );
    Ok(())
}

/// Gives inbox entries to the engine: events to batch, replayed deliveries
/// to send. `claimed`: they were read before (by a previous owner), so some
/// of their events may be batched already.
async fn hand_over(
    inner: &Inner,
    partition: u32,
    token: &str,
    claimed: bool,
    conn: &mut redis::aio::ConnectionManager,
    entries: Vec<Entry>,
) -> Result<(), StoreError> {
    let keys = PartitionKeys::new(partition);
    for entry in entries {
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
                // Only an entry some owner read before can be partly batched.
                let consumed: Option<u32> = if claimed {
                    redis::cmd("HGET")
                        .arg(&keys.progress)
                        .arg(&entry.id)
                        .query_async(conn)
                        .await
                        .map_err(|e| crate::store_error(&e))?
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
                let ticket = inner.next_ticket.fetch_add(1, Ordering::Relaxed);
                inner.tickets.lock().expect("tickets lock").insert(
                    ticket,
                    Ticket {
                        partition,
                        id: entry.id.clone(),
                        count: events.len() as u32,
                        token: token.to_string(),
                    },
                );
                owner(inner).resume_events(InboxEntry {
                    ticket,
                    app_id: app_id.to_string(),
                    events,
                    consumed: consumed.unwrap_or(0),
                    config,
                    skewed,
                });
            }
            Some("r") => {
                let Some(key) = entry.field("key").and_then(|k| k.parse::<u64>().ok()) else {
                    continue;
                };
                let already = inner.partition_of_key.lock().expect("keys lock").contains_key(&key);
                if !already {
                    let (record, events): (Option<String>, Option<String>) = redis::pipe()
                        .cmd("HGET")
                        .arg(&keys.deliveries)
                        .arg(key)
                        .cmd("HGET")
                        .arg(&keys.events)
                        .arg(key)
                        .query_async(conn)
                        .await
                        .map_err(|e| crate::store_error(&e))?;
                    let record = record
                        .as_deref()
                        .and_then(|v| v.split_once('|'))
                        .and_then(|(_, json)| serde_json::from_str::<DeliveryRecord>(json).ok());
                    if let Some(mut record) = record {
                        record.events = events.unwrap_or_default().into();
                        inner.partition_of_key.lock().expect("keys lock").insert(key, partition);
                        owner(inner).replayed(record);
                    }
                }
                // The notice itself is done with.
                let _: redis::RedisResult<()> = redis::pipe()
                    .cmd("XACK")
                    .arg(&keys.inbox)
                    .arg(keys::GROUP)
                    .arg(&entry.id)
                    .ignore()
                    .cmd("XDEL")
                    .arg(&keys.inbox)
                    .arg(&entry.id)
                    .ignore()
                    .query_async(conn)
                    .await;
            }
            _ => tracing::error!(partition, id = %entry.id, "redis store: an inbox entry of unknown kind is skipped"),
        }
    }
    Ok(())
}

/// Reads a partition's new inbox entries while this node holds `token`.
/// A dedicated connection, because a blocking read holds it.
async fn read_inbox(inner: Arc<Inner>, partition: u32, token: String) {
    let keys = PartitionKeys::new(partition);
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_millis(READ_BLOCK_MS + 5000)))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(1);
    let mut conn = match inner.client.get_connection_manager_with_config(config).await {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(partition, %error, "redis store: cannot open the inbox reader's connection");
            return;
        }
    };
    let mut shared = inner.conn();
    loop {
        let holding = inner.token(partition).as_deref() == Some(token.as_str());
        if !holding || inner.stopped.load(Ordering::Acquire) {
            return;
        }
        if !owner(&inner).has_room() {
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
        match read {
            Ok(value) => {
                let entries = reply::read_group(&value);
                if let Err(error) = hand_over(&inner, partition, &token, false, &mut shared, entries).await {
                    tracing::warn!(partition, %error, "redis store: reading the inbox failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(error) => {
                tracing::warn!(partition, %error, "redis store: reading the inbox failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
