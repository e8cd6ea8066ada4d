//! The engine: wires the registry, store, batchers and dispatcher together,
//! serves the HTTP routes, reloads apps, and shuts down without losing what
//! was accepted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};

use serde::Serialize;
use tokio::net::TcpListener;

use crate::attempt_log::{AttemptLog, LogBounds};
use crate::backlog::IntakePermit;
use crate::batcher::Batchers;
use crate::config::{App, EnvLookup};
use crate::delivery::{BatchIds, Dispatcher};
use crate::event::Event;
use crate::filter::FilterHost;
use crate::metrics::{Metrics, RefusedLabels};
use crate::registry::{AppRegistry, ReloadReport};
use crate::settings::Durability;
use crate::settings::Settings;
use crate::sinks::SinkRegistry;
use crate::store::{Accepted, DurableStore, InboxEntry, InboxTicket, Owner, Ownership, RecoveredDelivery, SharedStore};

/// Why ingest cannot take events right now (answered 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Shutdown has begun.
    #[error("hookline is shutting down; retry against another instance or after restart")]
    ShuttingDown,
    /// The undelivered backlog is over `max_backlog_bytes`.
    #[error("the delivery backlog is over max_backlog_bytes ({0} bytes); retry later")]
    BacklogFull(u64),
    /// Accepted events waiting to be batched fill `max_memory_bytes`:
    /// batching and delivery are behind ingest.
    #[error("hookline is taking events faster than it can batch and store them; retry shortly")]
    Behind,
    /// The store could not keep the events.
    #[error("the events could not be stored ({0}); retry later")]
    Store(String),
}

impl Refusal {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ShuttingDown => "shutting_down",
            Refusal::BacklogFull(_) => "backlog_full",
            Refusal::Behind => "behind",
            Refusal::Store(_) => "store_error",
        }
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Store open, config loaded, not shutting down.
    pub ready: bool,
    /// The config generation (bumped on every reload).
    pub generation: u64,
    /// Apps serving.
    pub apps: usize,
    /// App files refused (their last good apps keep serving).
    pub file_errors: Vec<String>,
    /// Bytes of undelivered events.
    pub backlog_bytes: u64,
    /// `ok`, or the store's last write error while writes fail.
    pub store: String,
    /// The last reload's result.
    pub last_reload: Option<LastReload>,
    /// This node's id (`store.node_id`; `local` on the embedded store).
    pub node_id: String,
    /// The store backend, this node, and the partitions it owns.
    pub ownership: Ownership,
    /// Filter files still compiling in the background since the start
    /// (their apps' batches wait for them).
    pub compiling: Vec<String>,
}

/// What the last reload did, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// When it finished (ms since the Unix epoch).
    pub at_ms: u64,
    /// `ok`, or `partial` when some files were refused.
    pub result: &'static str,
    /// Apps added, removed and changed.
    pub added: usize,
    /// Apps removed.
    pub removed: usize,
    /// Apps changed.
    pub changed: usize,
    /// Files refused (their last good apps keep serving).
    pub failed_files: usize,
}

/// The running engine.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    registry: Arc<AppRegistry>,
    store: SharedStore,
    batchers: Batchers,
    dispatcher: Arc<Dispatcher>,
    metrics: Arc<Metrics>,
    backlog: Arc<crate::backlog::Backlog>,
    shutting_down: AtomicBool,
    /// Turns true with `shutting_down`, for those that wait on it.
    shutdown_signal: tokio::sync::watch::Sender<bool>,
    last_reload: std::sync::Mutex<Option<LastReload>>,
    relay_replays: crate::replay::RelayReplays,
    /// The admin socket, up from start (so `hookline dlq` finds it as soon
    /// as the daemon is ready) until the end of `serve`.
    admin_socket: std::sync::Mutex<Option<crate::admin::SocketGuard>>,
    /// The WASM filter host (its compiled code is pruned after reloads).
    filters: Arc<FilterHost>,
    /// The sink component host (pruned likewise).
    components: Arc<crate::sink_component::SinkComponentHost>,
    /// One `/metrics` render at a time brings the takeover counters up to
    /// the store's count.
    ownership_render: std::sync::Mutex<()>,
    /// When the engine started, for the admin API's uptime.
    started: std::time::Instant,
    /// Events accepted, over the last minute and hour.
    ingested: crate::activity::SharedRate,
    /// Each webhook's last attempts; `None` with `delivery.attempt_log = 0`.
    attempt_log: Option<Arc<AttemptLog>>,
}

impl Engine {
    /// Opens the embedded store (`data_dir/store.redb`) as `settings` say.
    pub fn open_embedded_store(settings: &Settings) -> Result<SharedStore, std::io::Error> {
        let wait_for_disk = settings.ingest.durability == Durability::Fsync;
        let store = DurableStore::open(&settings.data_dir, wait_for_disk, settings.delivery.max_memory_bytes)
            .map_err(|e| std::io::Error::other(e.0))?;
        Ok(store)
    }

    /// Builds the engine on `store`, loads the apps directory once, and
    /// resumes what the store hands this node. Bad app files are reported
    /// in the returned report, not as an error; only an unreadable apps
    /// directory is an error.
    ///
    /// Open the store first: the embedded one creates the data directory
    /// owner-only (0700) before the filter cache is created inside it.
    pub async fn start(
        settings: Settings,
        sinks: SinkRegistry,
        env: EnvLookup,
        store: SharedStore,
    ) -> Result<(Arc<Self>, ReloadReport), std::io::Error> {
        let metrics = Arc::new(Metrics::new());
        // The embedded store made it already (and warned if it is loose).
        if !settings.data_dir.is_dir() {
            crate::private_fs::private_dir(&settings.data_dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create the data directory {} (owner-only, 0700): {e}; check --data-dir and its permissions",
                    settings.data_dir.display()
                ),
            )
            })?;
        }
        let filters =
            FilterHost::for_daemon(&settings, Some(&metrics)).map_err(|e| std::io::Error::other(e.to_string()))?;
        let components = crate::sink_component::SinkComponentHost::for_daemon(&settings);
        let registry = Arc::new(AppRegistry::for_settings(
            &settings,
            sinks,
            env,
            Some(filters.clone()),
            Some(components.clone()),
        ));
        let ids = Arc::new(BatchIds::starting_at(store.first_key()));
        let backlog = Arc::new(crate::backlog::Backlog::new(
            settings.delivery.max_backlog_bytes,
            settings.delivery.max_memory_bytes,
        ));
        let attempt_log = (settings.delivery.attempt_log > 0).then(|| {
            AttemptLog::new(
                store.clone(),
                LogBounds {
                    entries: settings.delivery.attempt_log,
                    bytes: settings.delivery.attempt_log_bytes,
                },
            )
        });
        let dispatcher = Arc::new(Dispatcher::new(
            settings.delivery.clone(),
            registry.clone(),
            store.clone(),
            metrics.clone(),
            ids.clone(),
            backlog.clone(),
            attempt_log.clone(),
        ));
        let batchers = Batchers::new(dispatcher.clone(), store.clone(), metrics.clone(), ids, backlog.clone());
        let engine = Arc::new(Self {
            settings,
            registry,
            store,
            batchers,
            dispatcher,
            metrics,
            backlog,
            shutting_down: AtomicBool::new(false),
            shutdown_signal: tokio::sync::watch::Sender::new(false),
            last_reload: std::sync::Mutex::new(None),
            relay_replays: crate::replay::RelayReplays::default(),
            admin_socket: std::sync::Mutex::new(None),
            filters,
            components,
            ownership_render: std::sync::Mutex::new(()),
            started: std::time::Instant::now(),
            ingested: crate::activity::SharedRate::default(),
            attempt_log,
        });
        let report = engine.load_at_start().await?;
        let admin_socket = crate::admin::serve_socket(&engine.settings.data_dir, engine.admin_context())?;
        *engine
            .admin_socket
            .lock()
            .expect("admin_socket lock is never held across a panic") = Some(admin_socket);
        let owner = Arc::new(EngineOwner {
            engine: Arc::downgrade(&engine),
            resumed: ResumeCounts::default(),
        });
        engine
            .store
            .run_ownership(owner.clone())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        owner.resumed.log();
        engine.clone().expire_dead_letters_periodically();
        if let Some(log) = &engine.attempt_log {
            tokio::spawn(AttemptLog::run(Arc::downgrade(log)));
        }
        Ok((engine, report))
    }

    /// Inbox events handed over by the store go back to their app's
    /// batcher; those of an app no longer configured stay in the store
    /// (`false`).
    fn resume_events(&self, entry: InboxEntry, counts: &ResumeCounts) -> bool {
        let snapshot = self.registry.snapshot();
        let Some(app) = snapshot.app(&entry.app_id) else {
            counts
                .kept
                .fetch_add(entry.events.len() as u64, AtomicOrdering::Relaxed);
            tracing::error!(app = %entry.app_id, events = entry.events.len() - entry.consumed as usize,
                "accepted events belong to an app not configured here; they stay in the store until it is");
            return false;
        };
        if entry.skewed {
            self.metrics.config_skew.inc();
            if entry.config.as_deref() != Some(&*app.fingerprint) {
                tracing::warn!(app = %entry.app_id,
                    "events accepted under another node's config of this app are batched under this node's (its app files differ, or its reload is late)");
            }
        }
        let rest: Vec<Event> = entry.events.into_iter().skip(entry.consumed as usize).collect();
        counts.events.fetch_add(rest.len() as u64, AtomicOrdering::Relaxed);
        let bytes: u64 = rest.iter().map(|e| e.len() as u64).sum();
        self.backlog.add(bytes);
        let permit = self.backlog.try_admit(bytes as usize);
        self.batchers
            .push(app.clone(), rest, entry.ticket, entry.consumed, permit, None);
        true
    }

    /// A stored delivery handed over by the store goes to its webhook's
    /// lane (keeping its attempts and retry schedule); one whose app or
    /// webhook is no longer configured is dead-lettered (replayable once it
    /// is back).
    fn resume_delivery(self: &Arc<Self>, found: RecoveredDelivery, counts: &ResumeCounts) {
        let snapshot = self.registry.snapshot();
        let record = &found.record;
        let Some(webhook) = snapshot.webhook(&record.app_id, &record.webhook_id).cloned() else {
            let reason = format!(
                "webhook {:?} of app {:?} is no longer configured (found at restart or takeover)",
                record.webhook_id, record.app_id
            );
            tracing::error!(batch_id = %record.batch_id, %reason, "delivery dead-lettered");
            let letter = crate::store::DeadLetter {
                record: found.record,
                reason,
                dead_at_ms: crate::delivery::now_ms(),
            };
            let engine = self.clone();
            tokio::spawn(async move {
                if let Err(error) = engine.store.dead_letter(letter).await {
                    tracing::error!(%error, "could not dead-letter a resumed delivery; it stays pending");
                }
            });
            return;
        };
        counts.deliveries.fetch_add(1, AtomicOrdering::Relaxed);
        self.dispatcher
            .dispatch(crate::delivery::Delivery::recovered(found, webhook));
    }

    /// Deletes dead letters past their app's `dead_letters` (or
    /// `[dead_letter]`), now and then (see [`crate::retention`]).
    fn expire_dead_letters_periodically(self: Arc<Self>) {
        let defaults = crate::config::DeadLetterRetention::from(&self.settings.dead_letter);
        let engine = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            loop {
                let Some(engine) = engine.upgrade() else { return };
                let snapshot = engine.registry.snapshot();
                let now = crate::delivery::now_ms();
                let next =
                    crate::retention::expire_once(&engine.store, &snapshot, defaults, &engine.metrics, now).await;
                drop(engine);
                tokio::time::sleep(next).await;
            }
        });
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The app registry.
    pub(crate) fn registry(&self) -> &Arc<AppRegistry> {
        &self.registry
    }

    /// Each webhook's last attempts, unless `delivery.attempt_log` is 0.
    pub(crate) fn attempt_log(&self) -> Option<&Arc<AttemptLog>> {
        self.attempt_log.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The app `id` as currently loaded, for [`Self::accept`].
    pub fn app(&self, id: &str) -> Option<Arc<App>> {
        self.registry.snapshot().app(id).cloned()
    }

    /// Reloads the apps whenever a file in the apps directory changes
    /// (debounced; see `ARCHITECTURE.md`); the returned task runs until the
    /// process ends.
    pub fn watch_apps(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
        crate::watch::spawn(self.clone())
    }

    /// The relay requests seen lately (replay protection).
    pub(crate) fn relay_replays(&self) -> &crate::replay::RelayReplays {
        &self.relay_replays
    }

    /// The engine's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `/metrics`: the counters, with the gauges read from the store and
    /// the lanes now.
    pub fn render_metrics(&self) -> String {
        self.metrics.dead_letters.set(self.store.dead_letter_count() as i64);
        let oldest = self
            .dispatcher
            .oldest_pending_ms()
            .map_or(0, |at| crate::delivery::now_ms().saturating_sub(at) / 1000);
        self.metrics.oldest_pending_seconds.set(oldest as i64);
        self.metrics
            .delivery_memory_bytes
            .set(i64::try_from(self.dispatcher.memory_bytes()).unwrap_or(i64::MAX));
        self.render_ownership();
        self.metrics.render()
    }

    /// The store's partitions: owned or not, lag, takeovers.
    fn render_ownership(&self) {
        let ownership = self.store.ownership();
        if ownership.partitions <= 1 {
            return;
        }
        let metrics = &self.metrics;
        let _one_at_a_time = self
            .ownership_render
            .lock()
            .expect("ownership_render lock is never held across a panic");
        for partition in 0..ownership.partitions {
            let labels = crate::metrics::PartitionLabels { partition };
            let owned = ownership.owned.contains(&partition);
            metrics.partition_owned.get_or_create(&labels).set(i64::from(owned));
            let lag = ownership.lag.get(&partition).copied().unwrap_or(0);
            metrics.partition_lag.get_or_create(&labels).set(lag as i64);
            let takeovers = ownership.takeovers.get(&partition).copied().unwrap_or(0);
            let counter = metrics.partition_takeovers.get_or_create(&labels);
            counter.inc_by(takeovers.saturating_sub(counter.get()));
        }
        for (cause, handed) in &ownership.handovers {
            let labels = crate::metrics::HandoverLabels { cause: cause.clone() };
            let counter = metrics.partition_handovers.get_or_create(&labels);
            counter.inc_by(handed.saturating_sub(counter.get()));
        }
    }

    /// What the admin socket needs to answer `hookline dlq`.
    pub(crate) fn admin_context(&self) -> crate::admin::AdminContext {
        crate::admin::AdminContext {
            store: self.store.clone(),
            registry: self.registry.clone(),
            dispatch: Some(self.dispatcher.clone()),
            via: "socket",
        }
    }

    /// The dispatcher (the lanes' queues and activity).
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// When the engine started.
    pub(crate) fn started(&self) -> std::time::Instant {
        self.started
    }

    /// Events accepted lately.
    pub(crate) fn ingested(&self) -> &crate::activity::SharedRate {
        &self.ingested
    }

    /// Re-reads the apps directory, logs what changed, and closes the open
    /// batches of changed and removed apps under their old config.
    pub async fn reload(&self) -> Result<ReloadReport, std::io::Error> {
        let report = self.registry.reload().await?;
        Ok(self.reloaded(report))
    }

    /// The first load: as [`Self::reload`], with filter chains loading in
    /// the background (see [`AppRegistry::load_at_start`]). Once they are
    /// all loaded, apps whose chains failed are loaded again without a last
    /// good version: a file still failing is refused, as it would have been.
    async fn load_at_start(self: &Arc<Self>) -> Result<ReloadReport, std::io::Error> {
        let report = self.registry.load_at_start().await?;
        let report = self.reloaded(report);
        let chains: Vec<(Arc<App>, crate::filter::FilterChain)> = self
            .registry
            .snapshot()
            .apps()
            .flat_map(|app| {
                app.webhooks
                    .iter()
                    .filter(|w| !w.filters.is_empty())
                    .map(|w| (app.clone(), w.filters.clone()))
            })
            .collect();
        if !chains.is_empty() {
            let engine = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut broken: Vec<Arc<App>> = Vec::new();
                for (app, chain) in chains {
                    if chain.ready().await.is_err() && !broken.iter().any(|b| Arc::ptr_eq(b, &app)) {
                        broken.push(app);
                    }
                }
                let Some(engine) = engine.upgrade() else { return };
                if broken.is_empty() {
                    tracing::info!("every filter loaded");
                    return;
                }
                match engine.registry.reload_without(broken).await {
                    Ok(report) => {
                        engine.reloaded(report);
                    }
                    Err(error) => tracing::error!(%error, "could not reload the apps whose filters failed to load"),
                }
            });
        }
        Ok(report)
    }

    /// Acts on what a (re)load did: closes the open batches of changed and
    /// removed apps, releases unused compiled code, logs and counts it.
    fn reloaded(&self, report: ReloadReport) -> ReloadReport {
        self.batchers
            .config_changed(report.changed.iter().chain(report.removed.iter()));
        if report.changed_anything() {
            let snapshot = self.registry.snapshot();
            let in_use: std::collections::HashSet<&str> =
                snapshot.apps().flat_map(|app| app.filter_digests()).collect();
            let forgotten = self.filters.forget_unused(&in_use) + self.components.forget_unused(&in_use);
            if forgotten > 0 {
                tracing::debug!(forgotten, "compiled components no app uses any more were released");
            }
        }
        for warning in &report.warnings {
            tracing::warn!("{warning}");
        }
        for failure in &report.failures {
            for problem in &failure.problems {
                tracing::error!(file = %failure.path.display(), "{problem}; the file's last good apps keep serving");
            }
        }
        let result = if report.failures.is_empty() { "ok" } else { "partial" };
        *self
            .last_reload
            .lock()
            .expect("last_reload lock is never held across a panic") = Some(LastReload {
            at_ms: crate::delivery::now_ms(),
            result,
            added: report.added.len(),
            removed: report.removed.len(),
            changed: report.changed.len(),
            failed_files: report.failures.len(),
        });
        self.metrics
            .reloads
            .get_or_create(&RefusedLabels { reason: result })
            .inc();
        if report.changed_anything() || !report.failures.is_empty() {
            tracing::info!(
                generation = report.generation,
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed,
                failed_files = report.failures.len(),
                apps = self.registry.snapshot().apps().count(),
                "apps loaded"
            );
        } else {
            tracing::debug!(generation = report.generation, "reload found nothing changed");
        }
        report
    }

    /// Takes accepted events: stores them, then adds them to the app's open
    /// batch. Once this returns `Ok`, ingest may answer 2xx.
    pub async fn accept(
        self: &Arc<Self>,
        app: &Arc<App>,
        events: Vec<Event>,
        _kind: &'static str,
    ) -> Result<(), Refusal> {
        if self.shutting_down.load(AtomicOrdering::Acquire) {
            return Err(Refusal::ShuttingDown);
        }
        if events.is_empty() {
            return Ok(());
        }
        if self.backlog.is_full(self.store.backlog_elsewhere()) {
            return Err(Refusal::BacklogFull(self.backlog.limit()));
        }
        let bytes: u64 = events.iter().map(|e| e.len() as u64).sum();
        let permit = self.backlog.admit(bytes as usize).await.ok_or(Refusal::Behind)?;
        let acceptance = self.store.accept(&app.id, &app.fingerprint, &events);
        // The store queued the write and cannot take it back. Once stored,
        // the events go to their batcher; should this request's handler be
        // dropped first (its client gone), the hand-over does it on drop, so
        // no event is left in the inbox until the next start.
        let mut handover = Handover {
            engine: self,
            ticket: match acceptance.handed {
                Accepted::Here(ticket) => Some(ticket),
                // Another node's partition: its owner batches (and counts
                // in its backlog).
                Accepted::ByOwner => None,
            },
            batch: Some((app.clone(), events, permit, bytes)),
        };
        acceptance.stored.await.map_err(|e| {
            handover.batch = None;
            Refusal::Store(e.to_string())
        })?;
        handover.finish();
        Ok(())
    }

    /// What `/readyz` shows.
    pub fn status(&self) -> Status {
        let snapshot = self.registry.snapshot();
        let ownership = self.store.ownership();
        let store = self.store.health();
        Status {
            ready: !self.shutting_down.load(AtomicOrdering::Acquire) && snapshot.generation > 0 && store.is_ok(),
            store: store.err().unwrap_or_else(|| "ok".to_string()),
            generation: snapshot.generation,
            apps: snapshot.apps().count(),
            file_errors: snapshot.errors().map(ToString::to_string).collect(),
            backlog_bytes: self.backlog.bytes(),
            last_reload: self
                .last_reload
                .lock()
                .expect("last_reload lock is never held across a panic")
                .clone(),
            node_id: ownership.node.clone(),
            ownership,
            compiling: self.filters.loading().iter().map(|p| p.display().to_string()).collect(),
        }
    }

    /// From now on ingest answers 503, and those waiting for the shutdown
    /// (the HTTP listener, requests reading a body) see it.
    fn begin_shutdown(&self) {
        self.shutting_down.store(true, AtomicOrdering::Release);
        self.shutdown_signal.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub async fn shutdown_started(&self) {
        let mut signal = self.shutdown_signal.subscribe();
        let _ = signal.wait_for(|stopped| *stopped).await;
    }

    /// Serves the admin API and status page (docs/contract.md §10) on
    /// `listener` until shutdown begins. `access` says who may.
    pub async fn serve_admin(self: Arc<Self>, listener: TcpListener, access: crate::admin_http::AdminAccess) {
        let router = crate::admin_http::router(self.clone(), Arc::new(access));
        let limits = crate::http_server::Limits {
            read_timeout: self.settings.ingest.read_timeout(),
            max_connections: ADMIN_MAX_CONNECTIONS,
        };
        let service = crate::http_server::routed(router);
        crate::http_server::serve(listener, service, limits, self.shutdown_signal.subscribe()).await;
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then stops
    /// ingest, flushes open batches and waits up to the grace period for
    /// deliveries to finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let service = crate::ingest::service(self.clone());
        let engine = self.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: ingest now answers 503, flushing batches");
            engine.begin_shutdown();
        });
        let limits = crate::http_server::Limits {
            read_timeout: self.settings.ingest.read_timeout(),
            max_connections: self.settings.ingest.max_connections.max(1),
        };
        crate::http_server::serve(listener, service, limits, self.shutdown_signal.subscribe()).await;
        self.begin_shutdown();
        self.batchers.flush_and_stop().await;
        let grace = self.settings.shutdown.grace();
        let started = std::time::Instant::now();
        // On a shared store the other nodes take this node's partitions over
        // now, rather than when its leases would run out; its lanes let go
        // of what they held.
        let handed = self.store.leave(grace).await;
        if handed > 0 {
            tracing::info!(partitions = handed, "handed this node's partitions to the other nodes");
        }
        if self.dispatcher.drain(grace.saturating_sub(started.elapsed())).await {
            if handed > 0 {
                tracing::info!("everything this node held was delivered, dead-lettered or handed over; bye");
            } else {
                tracing::info!("every accepted event was delivered or dead-lettered; bye");
            }
        } else {
            tracing::info!(
                backlog_bytes = self.backlog.bytes(),
                grace_ms = grace.as_millis() as u64,
                "grace period over with deliveries still pending; they are in the store and resume at the next start"
            );
        }
        if let Some(log) = &self.attempt_log {
            log.save().await;
        }
        drop(
            self.admin_socket
                .lock()
                .expect("admin_socket lock is never held across a panic")
                .take(),
        );
        Ok(())
    }
}

/// The admin listener's connection cap: a handful of operators and
/// scrapers, never enough to take descriptors from ingest.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// What was resumed, for one log line at start.
#[derive(Debug, Default)]
struct ResumeCounts {
    events: AtomicU64,
    deliveries: AtomicU64,
    kept: AtomicU64,
}

impl ResumeCounts {
    fn log(&self) {
        let events = self.events.load(AtomicOrdering::Relaxed);
        let deliveries = self.deliveries.load(AtomicOrdering::Relaxed);
        if events + deliveries + self.kept.load(AtomicOrdering::Relaxed) > 0 {
            tracing::info!(events, deliveries, "resuming what was pending before the restart");
        }
    }
}

/// The engine as the store's [`Owner`]. Weak, so a store's background
/// tasks never keep the engine alive.
struct EngineOwner {
    engine: std::sync::Weak<Engine>,
    resumed: ResumeCounts,
}

impl Owner for EngineOwner {
    fn resume_events(&self, entry: InboxEntry) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|engine| engine.resume_events(entry, &self.resumed))
    }

    fn resume_delivery(&self, found: RecoveredDelivery) {
        if let Some(engine) = self.engine.upgrade() {
            engine.resume_delivery(found, &self.resumed);
        }
    }

    fn replayed(&self, record: crate::store::DeliveryRecord) -> bool {
        let Some(engine) = self.engine.upgrade() else {
            return false;
        };
        let snapshot = engine.registry.snapshot();
        match snapshot.webhook(&record.app_id, &record.webhook_id).cloned() {
            Some(webhook) => {
                engine
                    .dispatcher
                    .dispatch(crate::delivery::Delivery::new(record, webhook, true));
                true
            }
            None => {
                tracing::error!(batch_id = %record.batch_id, app = %record.app_id, webhook = %record.webhook_id,
                    "a replayed delivery's webhook is not configured here; it waits in the store");
                false
            }
        }
    }

    fn config_matches(&self, app_id: &str, config: &str) -> bool {
        self.engine.upgrade().is_none_or(|engine| {
            engine
                .registry
                .snapshot()
                .app(app_id)
                .is_some_and(|app| &*app.fingerprint == config)
        })
    }

    fn has_room(&self) -> bool {
        self.engine.upgrade().is_some_and(|engine| engine.backlog.has_room())
    }

    fn backlog_bytes(&self) -> u64 {
        self.engine.upgrade().map_or(0, |engine| engine.backlog.bytes())
    }

    fn partition_lost(&self, partition: u32) {
        tracing::error!(
            partition,
            "lost the lease on a partition: another node resumes it; deliveries in flight here may be sent twice"
        );
    }
}

/// Hands a request's stored events to their app's batcher: when the
/// request finishes, or when its handler is dropped before (the store
/// applies the batcher's later commit after the events' write, so handing
/// them over early is safe). A dropped request's events are handed over
/// even if their write then fails: its client got no answer and will send
/// them again, so they may arrive twice (at least once), never not at all.
struct Handover<'a> {
    engine: &'a Arc<Engine>,
    ticket: Option<InboxTicket>,
    /// The app, its events, their intake permit and size; taken once
    /// handed over (or refused).
    batch: Option<(Arc<App>, Vec<Event>, IntakePermit, u64)>,
}

impl Handover<'_> {
    fn finish(&mut self) {
        let Some((app, events, permit, bytes)) = self.batch.take() else {
            return;
        };
        self.engine
            .ingested
            .add(u32::try_from(events.len()).unwrap_or(u32::MAX));
        if let Some(ticket) = self.ticket {
            self.engine.backlog.add(bytes);
            let origin = crate::trace::current_origin();
            self.engine.batchers.push(app, events, ticket, 0, Some(permit), origin);
        }
    }
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}
