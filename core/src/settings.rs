//! The daemon's own configuration (docs/contract.md §8): listen
//! address, directories, and the defaults for ingest, batching, delivery,
//! retries, dead letters, filters and shutdown.
//!
//! This module only defines the shape and its defaults; layering the file,
//! `HOOKLINE_*` environment variables and flags is the binary's job, because
//! only the binary reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `hookline serve` can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the ingest, health and metrics endpoints listen on.
    pub listen: SocketAddr,
    /// Directory holding the app files.
    pub apps_dir: PathBuf,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// `text` (readable) or `json` (one object per line).
    pub log_format: LogFormat,
    /// Reload app and filter files as soon as they change (SIGHUP always
    /// reloads).
    pub watch: bool,
    /// Ingest limits.
    pub ingest: IngestSettings,
    /// Default batching, which app files may override.
    pub batching: BatchingSettings,
    /// Delivery defaults.
    pub delivery: DeliverySettings,
    /// Default retry policy, which apps and webhooks may override.
    pub retry: RetrySettings,
    /// Dead-letter store settings.
    pub dead_letter: DeadLetterSettings,
    /// Default limits for WASM filters.
    pub filters: FilterSettings,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSettings,
    /// Where the backlog is kept: embedded, or shared in Redis.
    pub store: StoreSettings,
    /// The admin API and status page (off by default).
    pub admin: AdminSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7077)),
            apps_dir: PathBuf::from("./apps"),
            data_dir: PathBuf::from("./hookline-data"),
            log_format: LogFormat::Text,
            watch: true,
            ingest: IngestSettings::default(),
            batching: BatchingSettings::default(),
            delivery: DeliverySettings::default(),
            retry: RetrySettings::default(),
            dead_letter: DeadLetterSettings::default(),
            filters: FilterSettings::default(),
            shutdown: ShutdownSettings::default(),
            store: StoreSettings::default(),
            admin: AdminSettings::default(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[ingest]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Relay bodies whose `time_ms` is older than this are refused.
    pub relay_max_age_ms: u64,
    /// When ingest answers 2xx: after the store's fsync, or before the write.
    pub durability: Durability,
    /// A request's headers, and then its body, must each arrive within
    /// this; a stalled client is answered 408 or disconnected.
    pub read_timeout_ms: u64,
    /// Open connections at most; past it, new ones are closed at once.
    pub max_connections: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            relay_max_age_ms: 600_000,
            durability: Durability::Fsync,
            read_timeout_ms: 30_000,
            max_connections: 10_000,
        }
    }
}

impl IngestSettings {
    /// `read_timeout_ms` as a duration (at least 1 ms).
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms.max(1))
    }
}

/// When an accepted event counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// 2xx only once the events are fsynced.
    Fsync,
    /// 2xx before the disk write.
    Memory,
}

/// `[batching]`, and an app file's `batching`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingSettings {
    /// With batching off, every event is its own batch.
    pub enabled: bool,
    /// A batch closes this long after its first event.
    pub max_wait_ms: u64,
    /// A batch closes when it holds this many events.
    pub max_events: usize,
}

impl Default for BatchingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_wait_ms: 50,
            max_events: 100,
        }
    }
}

/// `[delivery]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Attempt timeout for sinks whose own default does not apply.
    pub timeout_ms: u64,
    /// Batches in flight at once per webhook.
    pub max_in_flight: usize,
    /// Past this many bytes of undelivered events, ingest answers 503.
    pub max_backlog_bytes: u64,
    /// Past this many bytes of events held in memory by waiting deliveries,
    /// further ones keep their events only on disk until their attempt.
    pub max_memory_bytes: u64,
    /// Consecutive failed attempts (network errors, timeouts, 5xx) that open
    /// a webhook's circuit: it is paused, then probed. 0 turns it off.
    pub circuit_failures: u32,
    /// How long an open circuit first stays open; it doubles while probes
    /// fail, up to `circuit_max_open_ms`.
    pub circuit_open_ms: u64,
    /// The longest an open circuit stays open before a probe.
    pub circuit_max_open_ms: u64,
    /// A proxy (`http://host:port`) for every http webhook without a
    /// `proxy` of its own, except the hosts `NO_PROXY` names; empty: none
    /// (the environment's `HTTP_PROXY`/`HTTPS_PROXY` still apply).
    pub proxy: String,
    /// Attempts kept per webhook in its attempt log (what the receiver
    /// answered, shown by the admin API and the status page); 0 keeps none.
    pub attempt_log: usize,
    /// Bytes an attempt log keeps per webhook, at most: the oldest entries
    /// go first (the newest is always kept).
    pub attempt_log_bytes: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            max_in_flight: 8,
            max_backlog_bytes: 1 << 30,
            max_memory_bytes: 64 << 20,
            circuit_failures: 5,
            circuit_open_ms: 1_000,
            circuit_max_open_ms: 60_000,
            proxy: String::new(),
            attempt_log: 100,
            attempt_log_bytes: 256 << 10,
        }
    }
}

/// `[retry]`, and the `retry` object of apps and webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// A batch is dead-lettered once it is this old.
    pub max_age_ms: u64,
    /// At most this many attempts; 0 means bounded by `max_age_ms` only.
    pub max_attempts: u32,
    /// The floor: no retry is scheduled sooner than this after a failed
    /// try (the first backoff is between this and twice this).
    pub min_backoff_ms: u64,
    /// The largest backoff (the cap the doubling stops at).
    pub max_backoff_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_age_ms: 86_400_000,
            max_attempts: 0,
            min_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

/// `[dead_letter]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// How long dead letters are kept (an app's `dead_letters.max_age_ms`
    /// overrides it).
    pub retention_ms: u64,
    /// How many dead letters each app keeps at most, the oldest going
    /// first; 0: no limit (an app's `dead_letters.max_count` overrides it).
    pub max_count: u64,
}

impl Default for DeadLetterSettings {
    fn default() -> Self {
        Self {
            retention_ms: 7 * 86_400_000,
            max_count: 0,
        }
    }
}

/// `[filters]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSettings {
    /// CPU deadline per filter call.
    pub cpu_ms: u64,
    /// Memory cap per filter instance.
    pub memory_mb: u64,
    /// Most events a filter may return.
    pub max_output_events: usize,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            cpu_ms: 50,
            memory_mb: 64,
            max_output_events: 10_000,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long shutdown waits for in-flight deliveries.
    pub grace_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { grace_ms: 10_000 }
    }
}

impl ShutdownSettings {
    /// The grace period as a duration.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
}

/// `[store]`: the backend keeping the backlog (docs/contract.md §9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `embedded` (one redb file in `data_dir`) or `redis` (shared by
    /// several daemons).
    pub backend: StoreBackend,
    /// The Redis to use with `backend = "redis"`: `redis://`, `rediss://`
    /// or `unix://`; `${NAME}` is replaced from the environment.
    pub redis_url: String,
    /// Partitions apps hash to; the same on every node, fixed per
    /// deployment.
    pub partitions: u32,
    /// This node's id; empty: hostname and pid.
    pub node_id: String,
    /// How long a partition's lease lasts unrenewed: a dead node's
    /// partitions move to the others after this.
    pub lease_ms: u64,
    /// How often the first live node looks at the partitions' traffic and
    /// evens out the nodes' work by swapping owners; 0: never.
    pub balance_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            redis_url: "redis://127.0.0.1:6379/0".to_string(),
            partitions: 32,
            node_id: String::new(),
            lease_ms: 10_000,
            balance_ms: 5_000,
        }
    }
}

/// `store.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One redb file in `data_dir`.
    Embedded,
    /// Redis (>= 7.0) or Valkey, shared by several daemons.
    Redis,
}

/// `[admin]`: the admin API and status page (docs/contract.md §10).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Where the admin listener listens, e.g. `127.0.0.1:7079`; empty: off.
    pub listen: String,
    /// The bearer token the API and page require; `${NAME}` is replaced
    /// from the environment. Required unless `listen` is a loopback address.
    pub token: String,
}
