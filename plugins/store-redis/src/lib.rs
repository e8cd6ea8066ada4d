//! Hookline's Redis store: several daemons share one backlog in Redis
//! (>= 7.0) or Valkey (docs/contract.md §9).
//!
//! Apps hash to partitions ([`keys::partition_of`]). Any node accepts
//! ingest: a request's events are appended to their partition's inbox
//! stream, a round of concurrent requests at a time ([`appender`]: group
//! commit), and the answer waits for Redis ([`Accepted::ByOwner`]). Each
//! partition has one owner at a time, by a lease that the owner renews
//! ([`ownership`]); the owner reads the inbox with a consumer group into the
//! engine's batchers, so batching, filters, lanes and strict ordering work
//! as on one node. Every write an owner makes is a script fenced by its
//! lease token ([`scripts`]), so a node that lost its lease can never
//! commit over the next owner.
//!
//! When a node dies its leases run out; other nodes take the partitions
//! over: they resume the stored deliveries in the order they were formed,
//! and claim the inbox entries the dead node had read but not batched
//! (`XAUTOCLAIM`).

mod appender;
mod assignment;
mod conn;
mod keys;
mod ownership;
mod reply;
mod scripts;
mod tickets;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use conn::{Conn, Connector};
use hookline_core::event::Event;
use hookline_core::store::{
    Acceptance, Accepted, Attempt, AttemptGuard, BoxFuture, Commit, DeadLetter, DeadLetterQuery, DeliveryKey,
    DeliveryRecord, NodeShare, Owner, Ownership, Store, StoreError,
};
use redis::aio::ConnectionManager;

use keys::{PartitionKeys, partition_of};
use scripts::Scripts;
use tickets::{Ticket, Tickets};

/// What the Redis store needs to know (from `[store]` and `[ingest]`).
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// `redis://`, `rediss://` or `unix://` (secrets allowed in it; never
    /// logged).
    pub url: String,
    /// Partitions apps hash to (the same on every node).
    pub partitions: u32,
    /// This node's id.
    pub node_id: String,
    /// How long an unrenewed lease lasts.
    pub lease_ms: u64,
    /// How often the first live node evens out the nodes' work; 0: never.
    pub balance_ms: u64,
    /// `ingest.durability = "fsync"`: Redis must fsync every write.
    pub require_fsync: bool,
    /// Bytes of resumed deliveries' events kept in memory; the rest are
    /// read back before their attempt.
    pub memory_budget: u64,
}

/// Most partitions a deployment may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Shortest lease: renewals run every third of it.
pub const MIN_LEASE_MS: u64 = 1000;

/// The Redis-backed [`Store`]. See the crate docs.
#[derive(Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisStoreConfig,
    /// Makes the inbox readers' connections.
    connector: Connector,
    conn: Conn,
    scripts: Scripts,
    first_key: DeliveryKey,
    /// Partitions owned → lease token.
    owned: Mutex<HashMap<u32, String>>,
    /// Inbox entries not yet batched per owned partition (last round).
    lag: Mutex<std::collections::BTreeMap<u32, u64>>,
    /// Takeovers by partition since start.
    takeovers: Mutex<std::collections::BTreeMap<u32, u64>>,
    /// Inbox entries read and not yet all batched.
    tickets: Mutex<Tickets>,
    /// The task taking over and reading each owned partition.
    readers: Mutex<HashMap<u32, tokio::task::AbortHandle>>,
    next_ticket: AtomicU64,
    /// Deliveries this node resumed or formed → their partition.
    partition_of_key: Mutex<HashMap<DeliveryKey, u32>>,
    failing: Arc<Mutex<Option<String>>>,
    /// Accepted events go to Redis a round at a time.
    appender: appender::Appender,
    dead_count: AtomicU64,
    owner: OnceLock<Arc<dyn Owner>>,
    stopped: AtomicBool,
    /// Owned partitions being handed to another node: no attempt starts.
    releasing: Mutex<HashSet<u32>>,
    /// Per owned partition: attempts under way and fenced writes not yet
    /// answered. A hand-over waits for them.
    busy: Mutex<HashMap<u32, usize>>,
    /// Told whenever a partition's `busy` count falls to zero.
    quiet: tokio::sync::Notify,
    /// Bumped whenever this node stops holding a partition.
    changes: tokio::sync::watch::Sender<u64>,
    /// The node is stopping: it acquires nothing more and is not a member.
    leaving: AtomicBool,
    /// Runs a lease round at once (the cluster's membership changed).
    wake: tokio::sync::Notify,
    /// Per owned partition: until when its lease surely holds, by this
    /// node's monotonic clock (from when the last renewal was sent). No
    /// attempt starts past it, even before a round notices the loss (a
    /// node paused past its lease).
    expires: Mutex<HashMap<u32, std::time::Instant>>,
    /// The live nodes as the last lease round saw them.
    members: Mutex<Vec<String>>,
    /// Partitions handed over since start, by cause.
    handovers: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Held by a lease round, and by `leave` while it takes this node out.
    round_lock: tokio::sync::Mutex<()>,
    /// Told whenever a hand-over ends.
    released: tokio::sync::Notify,
    /// Every live node's last report (see [`keys::REPORTS`]).
    reports: Mutex<std::collections::BTreeMap<String, NodeShare>>,
    /// The other live nodes' backlogs, as last reported.
    elsewhere: AtomicU64,
    /// The live nodes whose last report says they apply swaps.
    swap_aware: Mutex<Vec<String>>,
    /// The swaps evening out the work, as the last lease round read them.
    swaps: Mutex<Vec<(u32, u32)>>,
    /// The node balancing the work: its last sample of every partition's
    /// accepted-events counter.
    traffic: Mutex<Option<ownership::Traffic>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redacted(&self.config.url))
            .field("node", &self.config.node_id)
            .field("owned", &self.owned.lock().map(|o| o.len()).unwrap_or(0))
            .finish_non_exhaustive()
    }
}

/// Whether this node delivers a partition now.
enum Delivers {
    Yes,
    /// It holds the partition, but its last renewal is too old to be sure
    /// the lease holds (a round is late, or the node was paused): wait for
    /// the next round to renew it or find it lost.
    NotSure,
    /// It does not hold it, or is handing it over.
    No,
}

/// The URL without its user and password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn store_error(error: &redis::RedisError) -> StoreError {
    StoreError(format!("redis: {error}"))
}

/// A script's answer: a fenced write is [`StoreError::not_owner`].
fn script_error(error: &redis::RedisError, partition: u32) -> StoreError {
    if error.to_string().contains("HOOKLINE_FENCED") {
        StoreError::not_owner(partition)
    } else {
        store_error(error)
    }
}

impl RedisStore {
    /// Connects, checks that Redis keeps what it is given (AOF with
    /// `appendfsync always` when fsync durability is asked for, and
    /// `maxmemory-policy noeviction`), and reserves this node's range of
    /// delivery keys. Refuses with what to change.
    pub async fn connect(config: RedisStoreConfig) -> Result<Arc<Self>, StoreError> {
        if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
            return Err(StoreError(format!(
                "store.partitions must be between 1 and {MAX_PARTITIONS}, not {}",
                config.partitions
            )));
        }
        if config.lease_ms < MIN_LEASE_MS {
            return Err(StoreError(format!(
                "store.lease_ms must be at least {MIN_LEASE_MS}, not {}",
                config.lease_ms
            )));
        }
        let shown = redacted(&config.url);
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| StoreError(format!("store.redis_url {shown} is not a Redis URL: {e}")))?;
        let mut seed = client
            .get_connection_manager_with_config(conn::manager_config(Duration::from_secs(10)))
            .await
            .map_err(|e| {
                StoreError(format!(
                    "cannot reach Redis at {shown}: {e}; is it running, and is store.redis_url right?"
                ))
            })?;
        // Checked on the node store.redis_url names (in a cluster, on every
        // master below).
        check_redis(&mut seed, config.require_fsync, &shown).await?;
        let connector = conn::connector(&config.url, &mut seed)
            .await
            .map_err(|e| StoreError(format!("cannot read INFO cluster from Redis at {shown}: {e}")))?;
        if let Connector::Cluster(_) = &connector {
            check_every_master(&config, &mut seed).await?;
        }
        let kind = match &connector {
            Connector::Single(_) => "a single Redis",
            Connector::Cluster(_) => "a Redis Cluster",
        };
        tracing::info!(url = %shown, node = %config.node_id, "redis store: using {kind}");
        let mut conn = match &connector {
            Connector::Single(_) => Conn::Single(seed),
            Connector::Cluster(_) => connector
                .connect(Duration::from_secs(10))
                .await
                .map_err(|e| StoreError(format!("cannot connect to the Redis Cluster at {shown}: {e}")))?,
        };
        let incarnation: u64 = redis::cmd("INCR")
            .arg(keys::INCARNATION)
            .query_async(&mut conn)
            .await
            .map_err(|e| store_error(&e))?;
        // Each start gets 2^32 keys of its own: keys stay unique across the
        // cluster without coordination.
        let first_key = (incarnation << 32) | 1;
        let failing: Arc<Mutex<Option<String>>> = Arc::default();
        let appender = appender::Appender::start(conn.clone(), failing.clone());
        Ok(Arc::new(Self {
            inner: Arc::new(Inner {
                config,
                connector,
                conn,
                scripts: Scripts::new(),
                first_key,
                owned: Mutex::default(),
                lag: Mutex::default(),
                takeovers: Mutex::default(),
                tickets: Mutex::default(),
                readers: Mutex::default(),
                next_ticket: AtomicU64::new(1),
                partition_of_key: Mutex::default(),
                failing,
                appender,
                dead_count: AtomicU64::new(0),
                owner: OnceLock::new(),
                stopped: AtomicBool::new(false),
                releasing: Mutex::default(),
                busy: Mutex::default(),
                quiet: tokio::sync::Notify::new(),
                changes: tokio::sync::watch::Sender::new(0),
                leaving: AtomicBool::new(false),
                wake: tokio::sync::Notify::new(),
                expires: Mutex::default(),
                members: Mutex::default(),
                handovers: Mutex::default(),
                round_lock: tokio::sync::Mutex::new(()),
                released: tokio::sync::Notify::new(),
                reports: Mutex::default(),
                elsewhere: AtomicU64::new(0),
                swap_aware: Mutex::default(),
                swaps: Mutex::default(),
                traffic: Mutex::default(),
            }),
        }))
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::Release);
    }
}

/// Refuses a Redis that could lose or evict what it acknowledged.
/// Runs the settings checks on every master of the cluster `seed` belongs
/// to (`CLUSTER NODES`), naming the one at fault: each holds some
/// partitions' accepted events.
async fn check_every_master(config: &RedisStoreConfig, seed: &mut ConnectionManager) -> Result<(), StoreError> {
    use redis::IntoConnectionInfo;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(seed)
        .await
        .map_err(|e| StoreError(format!("cannot read CLUSTER NODES: {e}")))?;
    let base = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| StoreError(format!("store.redis_url is not a Redis URL: {e}")))?;
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        // `ip:port@cport[,hostname]`
        let address = address.split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = address.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let addr = match base.addr() {
            redis::ConnectionAddr::TcpTls {
                insecure, tls_params, ..
            } => redis::ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
        };
        let shown = format!("{host}:{port} (a master of the cluster)");
        let client = redis::Client::open(base.clone().set_addr(addr))
            .map_err(|e| StoreError(format!("cannot reach Redis at {shown}: {e}")))?;
        let mut conn = client
            .get_connection_manager_with_config(conn::manager_config(Duration::from_secs(10)))
            .await
            .map_err(|e| StoreError(format!("cannot reach Redis at {shown}: {e}")))?;
        check_redis(&mut conn, config.require_fsync, &shown).await?;
    }
    Ok(())
}

async fn check_redis(conn: &mut ConnectionManager, require_fsync: bool, shown: &str) -> Result<(), StoreError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|e| StoreError(format!("cannot read INFO from Redis at {shown}: {e}")))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0")
        .trim();
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 7 {
        return Err(StoreError(format!(
            "Redis at {shown} is version {version}; Hookline needs Redis 7.0 or later (or Valkey)"
        )));
    }
    let mut setting = async |name: &str| -> Result<String, StoreError> {
        let value: redis::Value = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(conn)
            .await
            .map_err(|e| StoreError(format!("cannot read {name} with CONFIG GET from Redis at {shown}: {e}")))?;
        Ok(reply::config_value(&value).unwrap_or_default())
    };
    let policy = setting("maxmemory-policy").await?;
    if policy != "noeviction" {
        return Err(StoreError(format!(
            "Redis at {shown} has maxmemory-policy {policy}: it could evict accepted events. \
             Set maxmemory-policy noeviction"
        )));
    }
    if require_fsync {
        let appendonly = setting("appendonly").await?;
        let appendfsync = setting("appendfsync").await?;
        if appendonly != "yes" || appendfsync != "always" {
            return Err(StoreError(format!(
                "Redis at {shown} has appendonly {appendonly} and appendfsync {appendfsync}: a write it \
                 acknowledged could be lost. With ingest.durability = \"fsync\" set appendonly yes and \
                 appendfsync always (or choose ingest.durability = \"memory\")"
            )));
        }
    }
    Ok(())
}

impl Inner {
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// This node's backlog now (the engine's count).
    fn own_backlog(&self) -> u64 {
        self.owner.get().map_or(0, |owner| owner.backlog_bytes())
    }

    fn partition(&self, app_id: &str) -> u32 {
        partition_of(app_id, self.config.partitions)
    }

    fn token(&self, partition: u32) -> Option<String> {
        self.owned.lock().expect("owned lock").get(&partition).cloned()
    }

    /// Counts work under way in `partition` until the guard is dropped (a
    /// hand-over waits for it).
    fn busy(self: &Arc<Self>, partition: u32) -> AttemptGuard {
        *self.busy.lock().expect("busy lock").entry(partition).or_default() += 1;
        let inner = self.clone();
        AttemptGuard::on_drop(move || {
            let mut busy = inner.busy.lock().expect("busy lock");
            if let Some(count) = busy.get_mut(&partition) {
                *count -= 1;
                if *count == 0 {
                    busy.remove(&partition);
                    inner.quiet.notify_waiters();
                }
            }
        })
    }

    /// Whether attempts of `partition` may start here.
    fn delivers(&self, partition: u32) -> Delivers {
        let held = self.owned.lock().expect("owned lock").contains_key(&partition);
        if !held || self.releasing.lock().expect("releasing lock").contains(&partition) {
            return Delivers::No;
        }
        let sure = self
            .expires
            .lock()
            .expect("expires lock")
            .get(&partition)
            .is_some_and(|at| std::time::Instant::now() < *at);
        if sure { Delivers::Yes } else { Delivers::NotSure }
    }

    /// Notes that `partition`'s lease was set or renewed by a call sent at
    /// `sent`.
    fn lease_holds_from(&self, partition: u32, sent: std::time::Instant) {
        // A tenth of the lease spare, as for letting go when renewals fail.
        let holds = Duration::from_millis(self.config.lease_ms - self.config.lease_ms / 10);
        self.expires
            .lock()
            .expect("expires lock")
            .insert(partition, sent + holds);
    }

    /// Records whether Redis answered, for `/readyz`.
    fn note<T>(&self, result: &Result<T, redis::RedisError>) {
        let mut failing = self.failing.lock().expect("failing lock");
        match result {
            Ok(_) => *failing = None,
            Err(e) if e.to_string().contains("HOOKLINE_FENCED") => {}
            Err(e) => *failing = Some(format!("redis: {e}")),
        }
    }

    /// Runs a fenced write in the background (attempt state, delivered):
    /// losing one costs at most a repeated attempt.
    fn spawn_write(
        self: &Arc<Self>,
        what: &'static str,
        partition: u32,
        write: impl std::future::Future<Output = redis::RedisResult<()>> + Send + 'static,
    ) {
        let inner = self.clone();
        let busy = self.busy(partition);
        tokio::spawn(async move {
            let result = write.await;
            drop(busy);
            inner.note(&result);
            if let Err(error) = result {
                tracing::warn!(%error, "redis store: could not record {what}; at worst a batch is attempted again");
            }
        });
    }
}

/// A delivery record as kept in the deliveries hash (`seq|JSON`).
fn record_json(record: &DeliveryRecord) -> String {
    serde_json::to_string(record).expect("records serialise")
}

impl Store for RedisStore {
    fn accept<'a>(&'a self, app_id: &'a str, config: &'a str, events: &[Event]) -> Acceptance<'a> {
        let inner = &self.inner;
        let partition = inner.partition(app_id);
        let payload = hookline_core::event::join_events(events);
        let count = events.len();
        Acceptance {
            handed: Accepted::ByOwner,
            stored: Box::pin(async move { inner.appender.append(partition, app_id, config, payload, count).await }),
        }
    }

    fn first_key(&self) -> DeliveryKey {
        self.inner.first_key
    }

    fn run_ownership(&self, owner: Arc<dyn Owner>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.inner.owner.set(owner).is_err() {
                return Ok(());
            }
            ownership::start(self.inner.clone()).await
        })
    }

    fn ownership(&self) -> Ownership {
        let mut owned: Vec<u32> = self.inner.owned.lock().expect("owned lock").keys().copied().collect();
        owned.sort_unstable();
        Ownership {
            backend: "redis",
            node: self.inner.config.node_id.clone(),
            partitions: self.inner.config.partitions,
            owned,
            lag: self.inner.lag.lock().expect("lag lock").clone(),
            takeovers: self.inner.takeovers.lock().expect("takeovers lock").clone(),
            members: self.inner.members.lock().expect("members lock").clone(),
            handovers: self
                .inner
                .handovers
                .lock()
                .expect("handovers lock")
                .iter()
                .map(|(cause, n)| (cause.to_string(), *n))
                .collect(),
            nodes: self.inner.reports.lock().expect("reports lock").clone(),
            cluster_backlog_bytes: Some(
                self.inner
                    .own_backlog()
                    .saturating_add(self.inner.elsewhere.load(Ordering::Relaxed)),
            ),
        }
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), StoreError>> {
        let inner = &self.inner;
        Box::pin(async move {
            let tickets: Vec<Option<Ticket>> = {
                let known = inner.tickets.lock().expect("tickets lock");
                commit.marks.iter().map(|m| known.get(m.ticket).cloned()).collect()
            };
            let partition = commit
                .deliveries
                .first()
                .map(|d| inner.partition(&d.app_id))
                .or_else(|| tickets.iter().flatten().map(|t| t.partition).next());
            let Some(partition) = partition else {
                return Ok(());
            };
            // Every mark's entry must still be held here under one token: one
            // let go (a lease lost) may already be batched by the next owner.
            let read_under: Vec<&str> = tickets.iter().flatten().map(|t| t.token.as_str()).collect();
            let one_token = read_under.windows(2).all(|w| w[0] == w[1]);
            if tickets.iter().any(Option::is_none) || !one_token {
                let mut known = inner.tickets.lock().expect("tickets lock");
                commit.marks.iter().for_each(|m| known.remove(m.ticket));
                return Err(StoreError::not_owner(partition));
            }
            let token = match read_under.first() {
                Some(token) => token.to_string(),
                // A split (no inbox marks): under the lease held now.
                None => inner.token(partition).ok_or_else(|| StoreError::not_owner(partition))?,
            };
            let keys = PartitionKeys::new(partition);
            let mut invocation = inner.scripts.commit.prepare_invoke();
            invocation
                .key(&keys.lease)
                .key(&keys.inbox)
                .key(&keys.progress)
                .key(&keys.deliveries)
                .key(&keys.events)
                .key(&keys.seq)
                .arg(&token)
                .arg(keys::GROUP);
            invocation.arg(commit.marks.len());
            for (mark, ticket) in commit.marks.iter().zip(tickets.iter().flatten()) {
                let complete = mark.complete || mark.consumed >= ticket.count;
                invocation
                    .arg(&ticket.id)
                    .arg(mark.consumed)
                    .arg(if complete { "1" } else { "0" });
            }
            invocation.arg(commit.retired.map(|k| k.to_string()).unwrap_or_default());
            invocation.arg(commit.deliveries.len());
            for record in &commit.deliveries {
                invocation.arg(record.key).arg(record_json(record)).arg(&*record.events);
            }
            // Known before they are stored: a takeover running meanwhile
            // must not resume them a second time.
            {
                let mut partitions = inner.partition_of_key.lock().expect("keys lock");
                for record in &commit.deliveries {
                    partitions.insert(record.key, partition);
                }
            }
            let result: redis::RedisResult<i64> = invocation.invoke_async(&mut inner.conn()).await;
            inner.note(&result);
            if let Err(error) = result {
                {
                    let mut partitions = inner.partition_of_key.lock().expect("keys lock");
                    for record in &commit.deliveries {
                        partitions.remove(&record.key);
                    }
                }
                let error = script_error(&error, partition);
                if error.is_not_owner() {
                    // The batcher drops these events; they are no longer
                    // held here, so the sweep or a takeover hands them over
                    // again.
                    let mut known = inner.tickets.lock().expect("tickets lock");
                    commit.marks.iter().for_each(|m| known.remove(m.ticket));
                }
                return Err(error);
            }
            {
                let mut known = inner.tickets.lock().expect("tickets lock");
                for (mark, ticket) in commit.marks.iter().zip(tickets.iter().flatten()) {
                    if mark.complete || mark.consumed >= ticket.count {
                        known.finish(mark.ticket);
                    }
                }
            }
            if let Some(retired) = commit.retired {
                inner.partition_of_key.lock().expect("keys lock").remove(&retired);
            }
            Ok(())
        })
    }

    fn record_failure(&self, record: &DeliveryRecord) {
        self.update(record, false);
    }

    fn refiltered(&self, record: &DeliveryRecord) {
        self.update(record, true);
    }

    fn delivered(&self, key: DeliveryKey) {
        let Some(partition) = self.inner.partition_of_key.lock().expect("keys lock").remove(&key) else {
            return;
        };
        let Some(token) = self.inner.token(partition) else {
            return;
        };
        let inner = self.inner.clone();
        self.inner.spawn_write("a delivery", partition, async move {
            let keys = PartitionKeys::new(partition);
            inner
                .scripts
                .delivered
                .key(&keys.lease)
                .key(&keys.deliveries)
                .key(&keys.events)
                .key(&keys.due)
                .arg(&token)
                .arg(key)
                .invoke_async::<i64>(&mut inner.conn())
                .await
                .map(drop)
        });
    }

    fn dead_letter(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), StoreError>> {
        let inner = &self.inner;
        Box::pin(async move {
            let partition = inner.partition(&letter.record.app_id);
            let Some(token) = inner.token(partition) else {
                inner
                    .partition_of_key
                    .lock()
                    .expect("keys lock")
                    .remove(&letter.record.key);
                return Err(StoreError::not_owner(partition));
            };
            let keys = PartitionKeys::new(partition);
            let meta = serde_json::to_string(&letter).expect("dead letters serialise");
            let result: redis::RedisResult<i64> = inner
                .scripts
                .dead_letter
                .key(&keys.lease)
                .key(&keys.deliveries)
                .key(&keys.events)
                .key(&keys.dead)
                .key(&keys.due)
                .arg(&token)
                .arg(letter.record.key)
                .arg(meta)
                .arg(&*letter.record.events)
                .invoke_async(&mut inner.conn())
                .await;
            inner.note(&result);
            result.map_err(|e| script_error(&e, partition))?;
            inner
                .partition_of_key
                .lock()
                .expect("keys lock")
                .remove(&letter.record.key);
            inner.dead_count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    fn dead_letters(&self, query: DeadLetterQuery) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(async move {
            self.inner
                .dead_letters(&query)
                .await
                .map(|l| l.into_iter().map(|(_, d)| d).collect())
        })
    }

    fn requeue(&self, record: DeliveryRecord) -> BoxFuture<'_, Result<bool, StoreError>> {
        let inner = &self.inner;
        Box::pin(async move {
            let keys = PartitionKeys::new(inner.partition(&record.app_id));
            let result: redis::RedisResult<i64> = inner
                .scripts
                .requeue
                .key(&keys.dead)
                .key(&keys.deliveries)
                .key(&keys.inbox)
                .key(&keys.seq)
                .arg(record.key)
                .arg(record_json(&record))
                .invoke_async(&mut inner.conn())
                .await;
            inner.note(&result);
            match result.map_err(|e| store_error(&e))? {
                0 => Err(StoreError(format!(
                    "dead letter {} is no longer in the store (purged, expired or already replayed)",
                    record.batch_id
                ))),
                _ => {
                    inner.dead_count.fetch_sub(1, Ordering::Relaxed);
                    // The partition's owner reads the notice and sends it.
                    Ok(false)
                }
            }
        })
    }

    fn purge_dead_letters(&self, keys: Vec<DeliveryKey>) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move { self.inner.purge(&keys).await })
    }

    fn expire_dead_letters(&self, before_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        let inner = &self.inner;
        Box::pin(async move {
            let letters = inner.dead_letters(&DeadLetterQuery::default()).await?;
            let expired: Vec<DeliveryKey> = letters
                .into_iter()
                .filter(|(_, letter)| letter.dead_at_ms < before_ms)
                .map(|(key, _)| key)
                .collect();
            if expired.is_empty() {
                return Ok(0);
            }
            inner.purge(&expired).await
        })
    }

    fn dead_letter_count(&self) -> u64 {
        self.inner.dead_count.load(Ordering::Relaxed)
    }

    fn health(&self) -> Result<(), String> {
        match &*self.inner.failing.lock().expect("failing lock") {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn delivery_allowed(&self) -> bool {
        self.health().is_ok()
    }

    fn load_events(&self, key: DeliveryKey) -> BoxFuture<'_, Result<String, StoreError>> {
        let inner = &self.inner;
        Box::pin(async move {
            let partition = inner
                .partition_of_key
                .lock()
                .expect("keys lock")
                .get(&key)
                .copied()
                .ok_or_else(|| StoreError(format!("delivery {key} is not one this node owns")))?;
            let keys = PartitionKeys::new(partition);
            let result: redis::RedisResult<Option<String>> = redis::cmd("HGET")
                .arg(&keys.events)
                .arg(key)
                .query_async(&mut inner.conn())
                .await;
            inner.note(&result);
            result
                .map_err(|e| store_error(&e))?
                .ok_or_else(|| StoreError(format!("the events of delivery {key} are missing from Redis")))
        })
    }

    fn save_attempt_log(&self, app_id: &str, webhook_id: &str, log: String) -> BoxFuture<'_, Result<(), StoreError>> {
        let keys = PartitionKeys::new(self.inner.partition(app_id));
        let field = attempt_log_field(app_id, webhook_id);
        let inner = &self.inner;
        Box::pin(async move {
            let result: redis::RedisResult<()> = redis::cmd("HSET")
                .arg(&keys.attempt_log)
                .arg(field)
                .arg(log)
                .query_async(&mut inner.conn())
                .await;
            inner.note(&result);
            result.map_err(|e| store_error(&e))
        })
    }

    fn attempt_log(&self, app_id: &str, webhook_id: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let keys = PartitionKeys::new(self.inner.partition(app_id));
        let field = attempt_log_field(app_id, webhook_id);
        let inner = &self.inner;
        Box::pin(async move {
            let result: redis::RedisResult<Option<String>> = redis::cmd("HGET")
                .arg(&keys.attempt_log)
                .arg(field)
                .query_async(&mut inner.conn())
                .await;
            inner.note(&result);
            result.map_err(|e| store_error(&e))
        })
    }

    fn begin_attempt(&self, key: DeliveryKey) -> Attempt {
        let partition = self
            .inner
            .partition_of_key
            .lock()
            .expect("keys lock")
            .get(&key)
            .copied();
        match partition.map(|p| (p, self.inner.delivers(p))) {
            Some((partition, Delivers::Yes)) => Attempt::Start(self.inner.busy(partition)),
            Some((_, Delivers::NotSure)) => Attempt::Wait,
            Some((_, Delivers::No)) | None => Attempt::Elsewhere,
        }
    }

    fn let_go(&self, key: DeliveryKey) {
        self.inner.partition_of_key.lock().expect("keys lock").remove(&key);
    }

    fn ownership_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.changes.subscribe())
    }

    fn leave(&self, within: Duration) -> BoxFuture<'_, usize> {
        Box::pin(ownership::leave(self.inner.clone(), within))
    }

    fn backlog_elsewhere(&self) -> u64 {
        self.inner.elsewhere.load(Ordering::Relaxed)
    }
}

impl RedisStore {
    fn update(&self, record: &DeliveryRecord, with_events: bool) {
        let partition = self.inner.partition(&record.app_id);
        let Some(token) = self.inner.token(partition) else {
            return;
        };
        let (key, json) = (record.key, record_json(record));
        // The next attempt's time travels as a wait from now: the script
        // keeps it as a due time by Redis's clock, which the next owner
        // reads in its own (nodes' clocks may disagree).
        let wait = match record.not_before_ms.checked_sub(hookline_core::store::now_ms()) {
            Some(wait) if wait > 0 => wait.to_string(),
            _ if record.not_before_ms > 0 => "0".to_string(),
            _ => String::new(),
        };
        let events = if with_events {
            record.events.to_string()
        } else {
            String::new()
        };
        let inner = self.inner.clone();
        self.inner.spawn_write("attempt state", partition, async move {
            let keys = PartitionKeys::new(partition);
            inner
                .scripts
                .update
                .key(&keys.lease)
                .key(&keys.deliveries)
                .key(&keys.events)
                .key(&keys.due)
                .arg(&token)
                .arg(key)
                .arg(json)
                .arg(if with_events { "1" } else { "0" })
                .arg(events)
                .arg(wait)
                .invoke_async::<i64>(&mut inner.conn())
                .await
                .map(drop)
        });
    }
}

impl Inner {
    /// Every partition's dead letters matching `query`, oldest first, with
    /// their keys.
    async fn dead_letters(&self, query: &DeadLetterQuery) -> Result<Vec<(DeliveryKey, DeadLetter)>, StoreError> {
        let mut conn = self.conn();
        let mut found = Vec::new();
        let mut total = 0u64;
        for partition in 0..self.config.partitions {
            let keys = PartitionKeys::new(partition);
            let all: redis::RedisResult<HashMap<u64, String>> =
                redis::cmd("HGETALL").arg(&keys.dead).query_async(&mut conn).await;
            self.note(&all);
            let all = all.map_err(|e| store_error(&e))?;
            total += all.len() as u64;
            for (key, json) in all {
                let mut letter: DeadLetter = serde_json::from_str(&json)
                    .map_err(|e| StoreError(format!("dead letter {key} in Redis is damaged: {e}")))?;
                let wanted = query.app_id.as_deref().is_none_or(|id| id == letter.record.app_id)
                    && query.id.as_deref().is_none_or(|id| id == letter.record.batch_id);
                if !wanted {
                    continue;
                }
                if query.with_events {
                    let events: Option<String> = redis::cmd("HGET")
                        .arg(&keys.events)
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| store_error(&e))?;
                    letter.record.events = events.unwrap_or_default().into();
                }
                found.push((key, letter));
            }
        }
        if query.app_id.is_none() && query.id.is_none() {
            self.dead_count.store(total, Ordering::Relaxed);
        }
        found.sort_by_key(|(key, letter)| (letter.dead_at_ms, *key));
        Ok(found)
    }

    async fn purge(&self, keys: &[DeliveryKey]) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut removed = 0usize;
        let mut conn = self.conn();
        for partition in 0..self.config.partitions {
            let partition_keys = PartitionKeys::new(partition);
            let mut invocation = self.scripts.purge.prepare_invoke();
            invocation.key(&partition_keys.dead).key(&partition_keys.events);
            for key in keys {
                invocation.arg(key);
            }
            let result: redis::RedisResult<usize> = invocation.invoke_async(&mut conn).await;
            self.note(&result);
            removed += result.map_err(|e| store_error(&e))?;
        }
        let count = self.dead_count.load(Ordering::Relaxed);
        self.dead_count
            .store(count.saturating_sub(removed as u64), Ordering::Relaxed);
        Ok(removed)
    }
}

/// The default node id: the hostname and the pid.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() { "hookline".to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

/// A webhook's field in its partition's attempt-log hash.
fn attempt_log_field(app_id: &str, webhook_id: &str) -> String {
    format!("{app_id}\n{webhook_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(redacted("redis://user:secret@host:6379/0"), "redis://…@host:6379/0");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        assert_eq!(redacted("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }
}
