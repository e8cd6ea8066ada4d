//! The embedded durable store: one [redb] file, `DATA_DIR/store.redb`.
//!
//! One writer thread owns the database. Callers send it jobs; it takes every
//! job waiting, applies them in one write transaction and commits once with
//! an fsync (group commit), then answers each. So a hundred concurrent
//! ingest requests share one fsync rather than queueing for a hundred.
//! With `durability = "memory"` it also holds each accepted request back
//! for [`HOLD`]: most are batched whole meanwhile and never written.
//!
//! Tables (all keyed by `u64`, values checksummed by [`super::codec`]):
//! - `inbox`: a request's accepted events not yet all batched, with how
//!   many of them are;
//! - `deliveries`: a delivery's metadata and attempt state;
//! - `dead_letters`: a dead letter's metadata (record, reason, time);
//! - `events`: the events of a delivery or dead letter, by the same key, so
//!   updating attempt state never rewrites the events;
//! - `attempt_log`: each webhook's attempt log (keyed by app and webhook
//!   id), replaced whole by each save.
//!
//! The group commit goes through a journal ([`super::journal`]): each
//! group's writes are appended to `store.journal` in one write, and with
//! `durability = "fsync"` one `fdatasync` of the journal makes them durable
//! before anyone is answered. Blind writes (accepts, commits, attempt
//! state, completions: answers that do not depend on what the store holds)
//! are only journaled; they are applied to redb in order, in one
//! transaction, with the next group that reads or counts, or at the fold —
//! so a request accepted, batched and delivered within a fold costs redb
//! little. Every [`FOLD_EVERY`] (or when the journal fills) one durable
//! redb commit folds the journal in, and the journal starts again. On
//! open, what the journal holds past the last fold is applied again.
//! With `durability = "memory"` the journal is not flushed per group: a
//! killed process loses nothing the kernel has, a lost machine up to
//! [`FOLD_EVERY`].
//!
//! After an I/O error (a full disk) redb refuses further writes until the
//! database is reopened, so the writer drops it, reopens it and applies
//! the journal again for the next group: service resumes by itself once
//! the disk has room.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, StorageError, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::codec::{decode, encode};
use super::journal::Journal;
use super::{
    Acceptance, Accepted, BoxFuture, Commit, DeadLetter, DeadLetterQuery, DeliveryKey, DeliveryRecord, InboxEntry,
    InboxMark, InboxTicket, Owner, Ownership, Recovered, RecoveredDelivery, Store, StoreError,
};
use crate::event::Event;

const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const ATTEMPT_LOG: TableDefinition<&str, &[u8]> = TableDefinition::new("attempt_log");
/// `journal`: the last journal generation folded into this file.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FOLDED: &str = "journal";

/// The file name inside the data directory.
pub const STORE_FILE: &str = "store.redb";
/// redb's page cache: enough for the hot part of a backlog, small enough
/// to keep an idle daemon light.
const CACHE_BYTES: usize = 16 << 20;
/// Most jobs applied in one transaction.
const MAX_GROUP: usize = 4096;
/// With `durability = "memory"`, `accept` waits for the disk anyway once
/// this many jobs wait for the writer: the queue in front of the disk stays
/// bounded, and ingest slows to what the disk takes.
const MAX_UNWRITTEN: usize = 1024;

/// How often the journal is folded into redb (one durable commit) while
/// there are writes: what a restart replays, and what a lost machine (not
/// a killed process) can lose with `durability = "memory"`.
const FOLD_EVERY: Duration = Duration::from_millis(200);
/// The journal is folded sooner once it holds this much.
const FOLD_BYTES: u64 = super::journal::SEGMENT_BYTES / 2;

/// With `durability = "memory"`, how long the busy writer gathers jobs.
const GATHER: Duration = Duration::from_millis(1);
/// With `durability = "memory"`, how long (about: the writer checks once a
/// group) it holds an accepted request back from the inbox in case the
/// commit that batches it comes first: then it is never written (nor
/// deleted). Near full load batches fill within this (100 events at 70 k/s
/// take 1.4 ms), so most requests never touch the file; below that a batch
/// closes on its `max_wait_ms` timer, and its requests are written, then
/// deleted, as without the hold. A crash can lose about this much more
/// than the jobs still queued.
const HOLD: Duration = Duration::from_millis(5);

/// An inbox entry's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InboxMeta {
    app_id: String,
    count: u32,
    consumed: u32,
}

/// A dead letter's metadata (its events are in `events`).
#[derive(Debug, Serialize, Deserialize)]
struct DeadMeta {
    record: DeliveryRecord,
    reason: String,
    dead_at_ms: u64,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    /// A request's inbox record (`meta.consumed` above 0 for a held request
    /// written late).
    Accept {
        ticket: InboxTicket,
        meta: InboxMeta,
        payload: String,
        reply: Option<Reply<()>>,
    },
    /// Answered once stored (`None`: applied again, or deferred).
    Commit(Commit, Option<Reply<()>>),
    /// New attempt state; with `true`, new events too.
    Update(DeliveryRecord, bool),
    Delivered(DeliveryKey),
    DeadLetter(DeadLetter, Reply<()>),
    ListDead(DeadLetterQuery, Reply<Vec<DeadLetter>>),
    Requeue(DeliveryRecord, Reply<()>),
    Purge(Vec<DeliveryKey>, Reply<usize>),
    Expire(u64, Reply<usize>),
    LoadEvents(DeliveryKey, Reply<String>),
    /// A webhook's attempt log, replacing the one kept (by
    /// [`attempt_log_key`]).
    SaveLog(String, String),
    LoadLog(String, Reply<Option<String>>),
}

impl Job {
    /// A write whose answer does not depend on what the store holds: it
    /// can be journaled and answered now and applied to redb later (in
    /// order with the others).
    fn is_blind(&self) -> bool {
        matches!(
            self,
            Job::Accept { .. } | Job::Commit(..) | Job::Update(..) | Job::Delivered(_) | Job::SaveLog(..)
        )
    }

    /// Whether someone waits for this write to be durable: with
    /// `durability = "fsync"`, a group of only attempt state and
    /// completions is not flushed (lost to a crash of the machine, they
    /// mean an attempt again under the same batch id; the next flush covers
    /// them anyway).
    fn awaits_disk(&self) -> bool {
        !matches!(self, Job::Update(..) | Job::Delivered(_) | Job::SaveLog(..))
    }

    /// A blind write without its answer, and the answer.
    fn detach(self) -> (Job, Answer) {
        match self {
            Job::Accept {
                ticket,
                meta,
                payload,
                reply,
            } => (
                Job::Accept {
                    ticket,
                    meta,
                    payload,
                    reply: None,
                },
                Answer::Unit(reply),
            ),
            Job::Commit(commit, reply) => (Job::Commit(commit, None), Answer::Unit(reply)),
            other => (other, Answer::None),
        }
    }
}

/// Drops the deferred writes that later deferred writes undo — a request's
/// inbox record once all its events are batched, a delivery's record and
/// events once it is delivered (and the attempt state written between) —
/// so applying what is left gives what applying them all would, with most
/// of a busy fold's writes never reaching redb. `jobs` are blind writes in
/// the order they were journaled.
fn compact(jobs: Vec<Job>) -> Vec<Job> {
    let mut counts: HashMap<InboxTicket, u32> = HashMap::new();
    let mut batched: HashSet<InboxTicket> = HashSet::new();
    let mut stored: HashSet<DeliveryKey> = HashSet::new();
    let mut delivered: HashSet<DeliveryKey> = HashSet::new();
    for job in &jobs {
        match job {
            Job::Accept { ticket, meta, .. } => {
                counts.insert(*ticket, meta.count);
            }
            Job::Commit(commit, _) => {
                for mark in &commit.marks {
                    if let Some(&count) = counts.get(&mark.ticket)
                        && (mark.complete || mark.consumed >= count)
                    {
                        batched.insert(mark.ticket);
                    }
                }
                stored.extend(commit.deliveries.iter().map(|record| record.key));
            }
            Job::Delivered(key) if stored.contains(key) => {
                delivered.insert(*key);
            }
            _ => {}
        }
    }
    if batched.is_empty() && delivered.is_empty() {
        return jobs;
    }
    jobs.into_iter()
        .filter_map(|job| match job {
            Job::Accept { ticket, .. } if batched.contains(&ticket) => None,
            Job::Commit(mut commit, reply) => {
                commit.marks.retain(|mark| !batched.contains(&mark.ticket));
                commit.deliveries.retain(|record| !delivered.contains(&record.key));
                let empty = commit.marks.is_empty() && commit.deliveries.is_empty() && commit.retired.is_none();
                (!empty).then_some(Job::Commit(commit, reply))
            }
            Job::Update(record, _) if delivered.contains(&record.key) => None,
            Job::Delivered(key) if delivered.contains(&key) => None,
            other => Some(other),
        })
        .collect()
}

/// A write job as the journal keeps it (reads are not kept): applied
/// again on open through the same [`transact`] as the first time, so the
/// same writes result.
#[derive(Serialize, Deserialize)]
enum Logged<'a> {
    Accept {
        ticket: InboxTicket,
        meta: Cow<'a, InboxMeta>,
        payload: Cow<'a, str>,
    },
    Commit {
        marks: Cow<'a, [InboxMark]>,
        /// Each delivery's record and its events (the record's own
        /// `events` field is not serialised).
        deliveries: Vec<(Cow<'a, DeliveryRecord>, Cow<'a, str>)>,
        retired: Option<DeliveryKey>,
    },
    Update {
        record: Cow<'a, DeliveryRecord>,
        events: Option<Cow<'a, str>>,
    },
    Delivered(DeliveryKey),
    DeadLetter {
        record: Cow<'a, DeliveryRecord>,
        events: Cow<'a, str>,
        reason: Cow<'a, str>,
        dead_at_ms: u64,
    },
    Requeue(Cow<'a, DeliveryRecord>),
    Purge(Cow<'a, [DeliveryKey]>),
    Expire(u64),
    SaveLog(Cow<'a, str>, Cow<'a, str>),
}

impl<'a> Logged<'a> {
    /// What the journal keeps of `job`; `None` for a read.
    fn of(job: &'a Job) -> Option<Self> {
        Some(match job {
            Job::Accept {
                ticket, meta, payload, ..
            } => Logged::Accept {
                ticket: *ticket,
                meta: Cow::Borrowed(meta),
                payload: Cow::Borrowed(payload),
            },
            Job::Commit(commit, _) => Logged::Commit {
                marks: Cow::Borrowed(&commit.marks),
                deliveries: commit
                    .deliveries
                    .iter()
                    .map(|r| (Cow::Borrowed(r), Cow::Borrowed(&*r.events)))
                    .collect(),
                retired: commit.retired,
            },
            Job::Update(record, with_events) => Logged::Update {
                record: Cow::Borrowed(record),
                events: with_events.then(|| Cow::Borrowed(&*record.events)),
            },
            Job::Delivered(key) => Logged::Delivered(*key),
            Job::DeadLetter(letter, _) => Logged::DeadLetter {
                record: Cow::Borrowed(&letter.record),
                events: Cow::Borrowed(&*letter.record.events),
                reason: Cow::Borrowed(&letter.reason),
                dead_at_ms: letter.dead_at_ms,
            },
            Job::Requeue(record, _) => Logged::Requeue(Cow::Borrowed(record)),
            Job::Purge(keys, _) => Logged::Purge(Cow::Borrowed(keys)),
            Job::Expire(before_ms, _) => Logged::Expire(*before_ms),
            Job::SaveLog(key, log) => Logged::SaveLog(Cow::Borrowed(key), Cow::Borrowed(log)),
            Job::ListDead(..) | Job::LoadEvents(..) | Job::LoadLog(..) => return None,
        })
    }

    /// The job again, answering no one.
    fn into_job(self) -> Job {
        fn reply<T>() -> Reply<T> {
            oneshot::channel().0
        }
        let with_events = |record: Cow<'_, DeliveryRecord>, events: &str| {
            let mut record = record.into_owned();
            record.events = events.into();
            record
        };
        match self {
            Logged::Accept { ticket, meta, payload } => Job::Accept {
                ticket,
                meta: meta.into_owned(),
                payload: payload.into_owned(),
                reply: None,
            },
            Logged::Commit {
                marks,
                deliveries,
                retired,
            } => Job::Commit(
                Commit {
                    marks: marks.into_owned(),
                    deliveries: deliveries
                        .into_iter()
                        .map(|(record, events)| with_events(record, &events))
                        .collect(),
                    retired,
                },
                None,
            ),
            Logged::Update { record, events } => {
                let with = events.is_some();
                Job::Update(with_events(record, events.as_deref().unwrap_or("")), with)
            }
            Logged::Delivered(key) => Job::Delivered(key),
            Logged::DeadLetter {
                record,
                events,
                reason,
                dead_at_ms,
            } => Job::DeadLetter(
                DeadLetter {
                    record: with_events(record, &events),
                    reason: reason.into_owned(),
                    dead_at_ms,
                },
                reply(),
            ),
            Logged::Requeue(record) => Job::Requeue(record.into_owned(), reply()),
            Logged::Purge(keys) => Job::Purge(keys.into_owned(), reply()),
            Logged::Expire(before_ms) => Job::Expire(before_ms, reply()),
            Logged::SaveLog(key, log) => Job::SaveLog(key.into_owned(), log.into_owned()),
        }
    }
}

/// The journal records (framed) of `group`'s writes.
fn journal_records(journal: &Journal, group: &[Job]) -> Vec<u8> {
    let mut out = Vec::new();
    for logged in group.iter().filter_map(Logged::of) {
        let payload = postcard::to_allocvec(&logged).expect("store records always serialise");
        journal.frame(&payload, &mut out);
    }
    out
}

/// Reads the journal's records back into jobs.
fn replayed_jobs(records: Vec<Vec<u8>>) -> Result<Vec<Job>, String> {
    records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            postcard::from_bytes::<Logged<'_>>(record)
                .map(Logged::into_job)
                .map_err(|e| format!("journal record {i} is whole but unreadable ({e})"))
        })
        .collect()
}

/// The redb-backed [`Store`].
#[derive(Debug)]
pub struct DurableStore {
    path: PathBuf,
    /// `None` once dropped, which tells the writer to finish.
    jobs: Mutex<Option<std_mpsc::Sender<Job>>>,
    /// Joined on drop, so what the writer still holds is written before
    /// the process can exit.
    writer: Option<std::thread::JoinHandle<()>>,
    /// Jobs sent and not yet applied.
    unwritten: Arc<AtomicUsize>,
    /// Dead letters kept (as of the last commit).
    dead_count: Arc<AtomicU64>,
    /// The last write's error, until a write succeeds.
    failing: Arc<Mutex<Option<String>>>,
    next_ticket: AtomicU64,
    /// Above every delivery and dead letter key in the file.
    first_key: DeliveryKey,
    /// What the file held at open, until [`Store::run_ownership`] hands it
    /// over.
    recovered: Mutex<Option<Recovered>>,
    /// `durability = "fsync"`: `accept` waits for the commit.
    wait_for_disk: bool,
}

impl DurableStore {
    /// Opens (or creates) `data_dir/store.redb` and checks every page and
    /// record: a damaged file is an error that says so; it is never served
    /// from. What it held is handed over by [`Store::run_ownership`];
    /// recovered deliveries keep their events in memory up to
    /// `memory_budget` bytes.
    pub fn open(data_dir: &Path, wait_for_disk: bool, memory_budget: u64) -> Result<Arc<Self>, StoreError> {
        crate::private_fs::private_dir(data_dir).map_err(|e| {
            StoreError(format!(
                "cannot create the data directory {} (owner-only, 0700): {e}; check --data-dir and its permissions",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(STORE_FILE);
        crate::private_fs::private_file(&path)
            .map_err(|e| StoreError(format!("cannot make {} owner-only (0600): {e}", path.display())))?;
        let (db, journal) = open_with_journal(&path)?;
        let (recovered, first_key, dead_letters) = read_all(&db, memory_budget).map_err(|e| damaged(&path, &e))?;
        let next_ticket = recovered.inbox.last().map_or(1, |e| e.ticket + 1);
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            db: Some(db),
            journal: Some(journal),
            wait_for_disk,
            last_fold: Instant::now(),
            unwritten: Arc::default(),
            dead_count: Arc::new(AtomicU64::new(dead_letters)),
            failing: Arc::default(),
            gather: (!wait_for_disk).then_some(GATHER),
            held: HashMap::new(),
            deferred: Vec::new(),
        };
        let failing = writer.failing.clone();
        let unwritten = writer.unwritten.clone();
        let dead_count = writer.dead_count.clone();
        let writer = std::thread::Builder::new()
            .name("hookline-store".to_string())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError(format!("cannot start the store writer: {e}")))?;
        let store = Arc::new(Self {
            path,
            jobs: Mutex::new(Some(tx)),
            writer: Some(writer),
            unwritten,
            dead_count,
            failing,
            next_ticket: AtomicU64::new(next_ticket),
            first_key,
            recovered: Mutex::new(Some(recovered)),
            wait_for_disk,
        });
        Ok(store)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, job: Job) {
        self.unwritten.fetch_add(1, AtomicOrdering::Relaxed);
        // The writer only stops when the store is dropped.
        if let Some(jobs) = &*self.jobs.lock().expect("jobs lock is never held across a panic") {
            let _ = jobs.send(job);
        }
    }

    fn ask<T: Send + 'static>(&self, job: impl FnOnce(Reply<T>) -> Job) -> BoxFuture<'_, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.send(job(reply));
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError("the store writer stopped".to_string())))
        })
    }
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        // The writer finishes the jobs queued, writes what it holds, and
        // lets go of the file.
        drop(
            self.jobs
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(store = %self.path.display(), "the store writer panicked");
        }
    }
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    let opened = std::panic::catch_unwind(|| {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError(format!(
                "{} is in use by another process: is a hookline daemon already running with this data directory?",
                path.display()
            )));
        }
        Ok(Err(redb::DatabaseError::Storage(StorageError::Corrupted(detail)))) => {
            return Err(damaged(path, &detail));
        }
        Ok(Err(error)) => return Err(StoreError(format!("cannot open {}: {error}", path.display()))),
        Err(_) => return Err(damaged(path, "the database could not be read")),
    };
    let txn = db.begin_write().map_err(|e| write_error(path, &e.into()))?;
    for table in [INBOX, DELIVERIES, DEAD, EVENTS] {
        txn.open_table(table).map_err(|e| write_error(path, &e.into()))?;
    }
    txn.open_table(META).map_err(|e| write_error(path, &e.into()))?;
    txn.commit().map_err(|e| write_error(path, &e.into()))?;
    Ok(db)
}

/// Opens the database, applies what the journal holds past the last fold
/// and folds it; the journal then starts again.
fn open_with_journal(path: &Path) -> Result<(Database, Journal), StoreError> {
    let db = open_database(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let folded = {
        let read = || -> Result<Option<u64>, redb::Error> {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(meta.get(FOLDED)?.map(|v| v.value()))
        };
        read().map_err(|e| damaged(path, &e.to_string()))?
    };
    let journal_path = dir.join(super::journal::JOURNAL_FILE);
    if folded.is_none() && journal_path.exists() {
        // A store file that never folded a journal (new, or moved aside
        // after damage) must not take another file's journal.
        let aside = dir.join(format!("{}.orphaned-{}", super::journal::JOURNAL_FILE, super::now_ms()));
        std::fs::rename(&journal_path, &aside)
            .map_err(|e| StoreError(format!("cannot move {} aside: {e}", journal_path.display())))?;
        tracing::warn!(journal = %aside.display(), "a journal not belonging to the store file was moved aside");
    }
    let journal_error =
        |e: std::io::Error| StoreError(format!("cannot open the journal {}: {e}", journal_path.display()));
    let (mut journal, replay) = Journal::open(dir, folded.unwrap_or(0)).map_err(journal_error)?;
    if let Some(cut) = &replay.cut {
        tracing::warn!(journal = %journal_path.display(), "{cut}");
    }
    let records = replay.records.len();
    let jobs = replayed_jobs(replay.records).map_err(|e| damaged(&journal_path, &e))?;
    if !jobs.is_empty() || folded.is_none() {
        let generation = journal.generation();
        transact(&db, jobs, &mut Vec::new(), Fold(Some(generation))).map_err(|e| write_error(path, &e))?;
        journal.restart(generation + 1).map_err(journal_error)?;
        if records > 0 {
            tracing::info!(records, "writes the journal held past the last fold were applied again");
        }
    }
    Ok((db, journal))
}

fn journal_write_error(journal: &Journal, error: &std::io::Error) -> StoreError {
    StoreError(format!(
        "cannot write the journal {}: {error}",
        journal.path().display()
    ))
}

fn damaged(path: &Path, detail: &str) -> StoreError {
    StoreError(format!(
        "the store {} is damaged ({detail}). Hookline will not serve from a damaged store: move the file aside \
         with store.journal beside it (they still hold the undelivered events; keep them for recovery) and start \
         again, or restore them from a backup",
        path.display()
    ))
}

fn write_error(path: &Path, error: &redb::Error) -> StoreError {
    StoreError(format!("cannot write {}: {error}", path.display()))
}

/// Reads everything a restart must resume, checking every record; with the
/// lowest key not in use and how many dead letters there are.
fn read_all(db: &Database, memory_budget: u64) -> Result<(Recovered, DeliveryKey, u64), String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let mut recovered = Recovered::default();
    let inbox = txn.open_table(INBOX).map_err(|e| e.to_string())?;
    for entry in inbox.iter().map_err(|e| e.to_string())? {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        let ticket = key.value();
        let (meta, payload): (InboxMeta, String) =
            decode(value.value()).map_err(|e| format!("inbox record {ticket}: {e}"))?;
        let events = Event::parse_joined(&payload).map_err(|e| format!("inbox record {ticket}: {e}"))?;
        recovered.inbox.push(InboxEntry {
            ticket,
            app_id: meta.app_id,
            events,
            consumed: meta.consumed,
            config: None,
            skewed: false,
        });
    }
    let deliveries = txn.open_table(DELIVERIES).map_err(|e| e.to_string())?;
    let events = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
    let (mut max_key, mut loaded) = (0, 0u64);
    for entry in deliveries.iter().map_err(|e| e.to_string())? {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        let key = key.value();
        let (mut record, _): (DeliveryRecord, String) =
            decode(value.value()).map_err(|e| format!("delivery record {key}: {e}"))?;
        let payload = read_events(&events, key)?;
        let events_bytes = payload.len() as u64;
        let events_loaded = loaded + events_bytes <= memory_budget;
        if events_loaded {
            loaded += events_bytes;
            record.events = payload.into();
        }
        max_key = max_key.max(key);
        recovered.deliveries.push(RecoveredDelivery {
            record,
            events_bytes,
            events_loaded,
        });
    }
    let dead = txn.open_table(DEAD).map_err(|e| e.to_string())?;
    let mut dead_letters = 0;
    for entry in dead.iter().map_err(|e| e.to_string())? {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        let key = key.value();
        decode::<DeadMeta>(value.value()).map_err(|e| format!("dead letter {key}: {e}"))?;
        read_events(&events, key)?;
        dead_letters += 1;
        max_key = max_key.max(key);
    }
    Ok((recovered, max_key + 1, dead_letters))
}

fn read_events(table: &impl ReadableTable<u64, &'static [u8]>, key: u64) -> Result<String, String> {
    let value = table
        .get(key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the events of record {key} are missing"))?;
    let ((), payload) = decode(value.value()).map_err(|e| format!("events of record {key}: {e}"))?;
    Ok(payload)
}

/// A job's answer, sent only once its transaction committed.
enum Answer {
    Unit(Option<Reply<()>>),
    /// The job was refused; the rest of the group commits.
    Refused(Reply<()>, StoreError),
    Letters(Reply<Vec<DeadLetter>>, Result<Vec<DeadLetter>, StoreError>),
    Count(Reply<usize>, usize),
    Events(Reply<String>, Result<String, StoreError>),
    Log(Reply<Option<String>>, Result<Option<String>, StoreError>),
    None,
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Unit(Some(reply)) => drop(reply.send(Ok(()))),
            Answer::Refused(reply, error) => drop(reply.send(Err(error))),
            Answer::Letters(reply, result) => drop(reply.send(result)),
            Answer::Count(reply, n) => drop(reply.send(Ok(n))),
            Answer::Events(reply, result) => drop(reply.send(result)),
            Answer::Log(reply, result) => drop(reply.send(result)),
            Answer::Unit(None) | Answer::None => {}
        }
    }

    fn fail(self, error: &StoreError) {
        match self {
            Answer::Unit(Some(reply)) | Answer::Refused(reply, _) => drop(reply.send(Err(error.clone()))),
            Answer::Letters(reply, _) => drop(reply.send(Err(error.clone()))),
            Answer::Count(reply, _) => drop(reply.send(Err(error.clone()))),
            Answer::Events(reply, _) => drop(reply.send(Err(error.clone()))),
            Answer::Log(reply, _) => drop(reply.send(Err(error.clone()))),
            Answer::Unit(None) | Answer::None => {}
        }
    }
}

struct Writer {
    path: PathBuf,
    /// `None` after an I/O error, until reopened.
    db: Option<Database>,
    /// `None` after an I/O error, until reopened (with `db`).
    journal: Option<Journal>,
    /// `durability = "fsync"`: every group's journal records are flushed
    /// before it is answered.
    wait_for_disk: bool,
    /// When the journal was last folded into redb.
    last_fold: Instant,
    unwritten: Arc<AtomicUsize>,
    dead_count: Arc<AtomicU64>,
    failing: Arc<Mutex<Option<String>>>,
    /// `durability = "memory"`: while jobs keep coming, gather them for
    /// this long before each transaction instead of being woken per job.
    gather: Option<Duration>,
    /// `durability = "memory"`: requests accepted and not yet written,
    /// each for about [`HOLD`].
    held: HashMap<InboxTicket, HeldAccept>,
    /// Blind writes journaled (and answered) but not yet applied to redb:
    /// applied in order, in one transaction, with the next group that
    /// reads or counts, or at the fold. A request accepted, batched and
    /// delivered within a fold then costs redb one transaction's share,
    /// not three transactions. The journal holds them: after an error the
    /// reopen applies them again.
    deferred: Vec<Job>,
}

/// What a group does to the held requests, made final only once the group
/// is written: a group that fails changes nothing (its commit is refused,
/// and the batcher retries it).
#[derive(Default)]
struct Tentative {
    /// Marks of the group's commits for held requests.
    marks: Vec<InboxMark>,
    /// Held requests the group writes.
    written: Vec<InboxTicket>,
}

/// A request accepted with `durability = "memory"`, held back from the
/// inbox.
struct HeldAccept {
    meta: InboxMeta,
    payload: String,
    since: Instant,
}

impl Writer {
    fn run(mut self, jobs: &std_mpsc::Receiver<Job>) {
        let (mut busy, mut full) = (false, false);
        loop {
            // Busy and no one waiting on the disk: sleep, then take what
            // came meanwhile, so senders find no parked thread to wake (a
            // system call and a context switch each). Idle: block, or, with
            // requests held, wait until the first is due.
            let first = match self.gather {
                Some(gather) if busy => {
                    // A full group leaves more waiting: take it at once.
                    if !full {
                        std::thread::sleep(gather);
                    }
                    match jobs.try_recv() {
                        Ok(job) => Some(job),
                        Err(std_mpsc::TryRecvError::Empty) => {
                            busy = false;
                            continue;
                        }
                        Err(std_mpsc::TryRecvError::Disconnected) => break,
                    }
                }
                _ => {
                    // Wake for the oldest held request, or to fold the
                    // journal in once the writes stop.
                    let held_due = self.held.values().map(|held| held.since + HOLD).min();
                    match held_due.into_iter().chain(self.fold_deadline()).min() {
                        None => match jobs.recv() {
                            Ok(job) => Some(job),
                            Err(_) => break,
                        },
                        Some(due) => match jobs.recv_timeout(due.saturating_duration_since(Instant::now())) {
                            Ok(job) => Some(job),
                            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                        },
                    }
                }
            };
            busy = first.is_some();
            let mut group: Vec<Job> = first.into_iter().collect();
            while busy && group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let applied = group.len();
            full = applied == MAX_GROUP;
            let (group, tentative) = self.hold_back(group, HOLD);
            if group.is_empty() || self.apply_group(group) {
                self.settle(tentative);
            }
            self.unwritten.fetch_sub(applied, AtomicOrdering::Relaxed);
            if self.fold_due() {
                self.fold();
            }
        }
        // The store was dropped: write what is still held, and fold it all
        // in, so the next start has nothing to apply again.
        let (group, tentative) = self.hold_back(Vec::new(), Duration::ZERO);
        if !group.is_empty() && self.apply_group(group) {
            self.settle(tentative);
        }
        if self.journal.as_ref().is_some_and(|journal| journal.used() > 0) {
            self.fold();
        }
    }

    /// With `durability = "memory"`, takes the requests accepted in `group`
    /// out of it and holds them; takes the marks for held requests out of
    /// its commits; and adds the requests held for `hold` (with the
    /// progress those marks make; one batched whole is not written). What
    /// this does to the held requests is only [`Writer::settle`]d once the
    /// group is written. A request whose sender waits for the disk is
    /// never held.
    fn hold_back(&mut self, group: Vec<Job>, hold: Duration) -> (Vec<Job>, Tentative) {
        let mut tentative = Tentative::default();
        if self.gather.is_none() {
            return (group, tentative);
        }
        let now = Instant::now();
        let mut kept = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Accept {
                    ticket,
                    meta,
                    payload,
                    reply: None,
                } => {
                    let held = HeldAccept {
                        meta,
                        payload,
                        since: now,
                    };
                    self.held.insert(ticket, held);
                }
                Job::Commit(mut commit, reply) => {
                    commit.marks.retain(|mark| {
                        let held = self.held.contains_key(&mark.ticket);
                        if held {
                            tentative.marks.push(*mark);
                        }
                        !held
                    });
                    kept.push(Job::Commit(commit, reply));
                }
                other => kept.push(other),
            }
        }
        let mut due: Vec<InboxTicket> = self
            .held
            .iter()
            .filter(|(_, held)| now.saturating_duration_since(held.since) >= hold)
            .map(|(ticket, _)| *ticket)
            .collect();
        due.sort_unstable();
        for ticket in due {
            let held = &self.held[&ticket];
            let marks = tentative.marks.iter().filter(|mark| mark.ticket == ticket);
            if marks.clone().any(|mark| mark.complete) {
                continue;
            }
            // A copy: if the group fails, the request stays held.
            let mut meta = held.meta.clone();
            meta.consumed = marks.map(|mark| mark.consumed).fold(meta.consumed, u32::max);
            kept.push(Job::Accept {
                ticket,
                meta,
                payload: held.payload.clone(),
                reply: None,
            });
            tentative.written.push(ticket);
        }
        (kept, tentative)
    }

    /// Makes final what a written group did to the held requests.
    fn settle(&mut self, tentative: Tentative) {
        for mark in tentative.marks {
            if mark.complete {
                self.held.remove(&mark.ticket);
            } else if let Some(held) = self.held.get_mut(&mark.ticket) {
                held.meta.consumed = held.meta.consumed.max(mark.consumed);
            }
        }
        for ticket in tentative.written {
            self.held.remove(&ticket);
        }
    }

    /// Applies `group` in one transaction and journals it (flushed with
    /// `durability = "fsync"`), or, when it does not fit in the journal,
    /// folds it in at once; answers its jobs; whether it was written.
    fn apply_group(&mut self, group: Vec<Job>) -> bool {
        let (db, mut journal) = match (self.db.take(), self.journal.take()) {
            (Some(db), Some(journal)) => (db, journal),
            _ => match open_with_journal(&self.path) {
                Ok(opened) => {
                    tracing::info!(store = %self.path.display(), "store reopened after an error");
                    opened
                }
                Err(error) => {
                    self.set_failing(Some(error.to_string()));
                    let answers: Vec<Answer> = group.into_iter().map(unanswered).collect();
                    answers.into_iter().for_each(|a| a.fail(&error));
                    return false;
                }
            },
        };
        let records = journal_records(&journal, &group);
        let fold = (!journal.fits(&records)).then(|| journal.generation());
        let mut answers = Vec::with_capacity(group.len());
        let written = if fold.is_none() && group.iter().all(Job::is_blind) {
            // Journaled and answered now, applied to redb later (`deferred`;
            // a failure below drops them all, and the reopen applies the
            // journal again).
            let flush = self.wait_for_disk && group.iter().any(Job::awaits_disk);
            for job in group {
                let (job, answer) = job.detach();
                self.deferred.push(job);
                answers.push(answer);
            }
            journal
                .append(&records, flush)
                .map(|()| 0)
                .map_err(|e| journal_write_error(&journal, &e))
        } else {
            // The deferred writes first, in order: this group may read them.
            let group: Vec<Job> = if self.deferred.is_empty() {
                group
            } else {
                let mut all = compact(std::mem::take(&mut self.deferred));
                all.extend(group);
                all
            };
            transact(&db, group, &mut answers, Fold(fold))
                .map_err(|e| write_error(&self.path, &e))
                .and_then(|dead_delta| {
                    let journaled = match fold {
                        Some(generation) => journal.restart(generation + 1),
                        None if records.is_empty() => Ok(()),
                        None => journal.append(&records, self.wait_for_disk),
                    };
                    journaled
                        .map(|()| dead_delta)
                        .map_err(|e| journal_write_error(&journal, &e))
                })
        };
        match written {
            Ok(dead_delta) => {
                if fold.is_some() {
                    self.last_fold = Instant::now();
                }
                self.db = Some(db);
                self.journal = Some(journal);
                self.set_failing(None);
                let count = self.dead_count.load(AtomicOrdering::Relaxed) as i64 + dead_delta;
                self.dead_count.store(count.max(0) as u64, AtomicOrdering::Relaxed);
                answers.into_iter().for_each(Answer::send);
                if self.fold_due() {
                    self.fold();
                }
                true
            }
            Err(error) => {
                // redb refuses writes after an I/O error until reopened, and
                // what this group applied must not stay: reopening keeps the
                // last fold and applies the journal again.
                drop(db);
                drop(journal);
                self.write_failed(&error);
                answers.into_iter().for_each(|a| a.fail(&error));
                false
            }
        }
    }

    /// A group could not be written: the database and journal are
    /// reopened for the next (which applies the journal again, deferred
    /// writes included).
    fn write_failed(&mut self, error: &StoreError) {
        self.set_failing(Some(error.to_string()));
        tracing::error!(%error, "store write failed; ingest answers 503 until it succeeds again");
        self.db = None;
        self.journal = None;
        self.deferred.clear();
    }

    /// Whether the journal holds writes that should be folded in now.
    fn fold_due(&self) -> bool {
        self.journal.as_ref().is_some_and(|journal| {
            journal.used() > 0 && (journal.used() >= FOLD_BYTES || self.last_fold.elapsed() >= FOLD_EVERY)
        })
    }

    /// When the journal's writes should be folded in, if it holds any.
    fn fold_deadline(&self) -> Option<Instant> {
        self.journal
            .as_ref()
            .filter(|journal| journal.used() > 0)
            .map(|_| self.last_fold + FOLD_EVERY)
    }

    /// Folds the journal into redb (one durable commit) and starts it
    /// again. A failure leaves the journal as it is (it is applied again on
    /// reopen) and drops the database, as a failed group does.
    fn fold(&mut self) {
        let (Some(db), Some(journal)) = (&self.db, &mut self.journal) else {
            return;
        };
        let generation = journal.generation();
        // Deferred writes are blind: they leave the dead letters' count as it is.
        let deferred = compact(std::mem::take(&mut self.deferred));
        let folded = transact(db, deferred, &mut Vec::new(), Fold(Some(generation)))
            .map_err(|e| write_error(&self.path, &e))
            .and_then(|_| {
                journal
                    .restart(generation + 1)
                    .map_err(|e| journal_write_error(journal, &e))
            });
        self.last_fold = Instant::now();
        if let Err(error) = folded {
            // The journal still holds what the fold was to apply: the reopen
            // applies it again.
            self.set_failing(Some(error.to_string()));
            tracing::error!(%error, "folding the journal into the store failed; ingest answers 503 until it succeeds again");
            self.db = None;
            self.journal = None;
        }
    }
}

impl Writer {
    fn set_failing(&self, error: Option<String>) {
        *self.failing.lock().expect("failing lock is never held across a panic") = error;
    }
}

/// A job's reply channel, for failing it before any transaction.
fn unanswered(job: Job) -> Answer {
    match job {
        Job::Accept { reply, .. } => Answer::Unit(reply),
        Job::Commit(_, reply) => Answer::Unit(reply),
        Job::DeadLetter(_, reply) | Job::Requeue(_, reply) => Answer::Unit(Some(reply)),
        Job::ListDead(_, reply) => Answer::Letters(reply, Ok(Vec::new())),
        Job::Purge(_, reply) | Job::Expire(_, reply) => Answer::Count(reply, 0),
        Job::LoadEvents(_, reply) => Answer::Events(reply, Ok(String::new())),
        Job::LoadLog(_, reply) => Answer::Log(reply, Ok(None)),
        Job::Update(..) | Job::Delivered(_) | Job::SaveLog(..) => Answer::None,
    }
}

/// How a transaction commits: `Fold(None)` without an fsync (the journal
/// holds its writes), `Fold(Some(generation))` durably, recording that the
/// journal's records up to `generation` are in the file.
#[derive(Clone, Copy)]
struct Fold(Option<u64>);

/// Applies a group of jobs in one transaction and commits it if any of
/// them wrote (or it folds). Returns how the number of dead letters
/// changed.
fn transact(db: &Database, group: Vec<Job>, answers: &mut Vec<Answer>, fold: Fold) -> Result<i64, redb::Error> {
    let mut txn = db.begin_write()?;
    let mut wrote = false;
    if let Fold(Some(generation)) = fold {
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(META)?.insert(FOLDED, generation)?;
        wrote = true;
    } else {
        txn.set_durability(Durability::None)?;
    }
    let mut dead_delta = 0i64;
    {
        let mut inbox = txn.open_table(INBOX)?;
        let mut deliveries = txn.open_table(DELIVERIES)?;
        let mut dead = txn.open_table(DEAD)?;
        let mut events = txn.open_table(EVENTS)?;
        let mut attempt_log = txn.open_table(ATTEMPT_LOG)?;
        for job in group {
            wrote |= match &job {
                Job::ListDead(..) | Job::LoadEvents(..) | Job::LoadLog(..) => false,
                // Its marks may all have been for held requests.
                Job::Commit(
                    Commit {
                        marks,
                        deliveries,
                        retired,
                    },
                    _,
                ) => !(marks.is_empty() && deliveries.is_empty() && retired.is_none()),
                _ => true,
            };
            let answer = match job {
                Job::Accept {
                    ticket,
                    meta,
                    payload,
                    reply,
                } => {
                    inbox.insert(ticket, encode(&meta, &payload).as_slice())?;
                    Answer::Unit(reply)
                }
                Job::Commit(commit, reply) => {
                    for mark in &commit.marks {
                        if mark.complete {
                            inbox.remove(mark.ticket)?;
                            continue;
                        }
                        let Some(value) = inbox.get(mark.ticket)?.map(|v| v.value().to_vec()) else {
                            continue;
                        };
                        match decode::<InboxMeta>(&value) {
                            Ok((meta, _)) if mark.consumed >= meta.count => {
                                inbox.remove(mark.ticket)?;
                            }
                            Ok((mut meta, payload)) => {
                                meta.consumed = meta.consumed.max(mark.consumed);
                                inbox.insert(mark.ticket, encode(&meta, &payload).as_slice())?;
                            }
                            Err(error) => {
                                tracing::error!(ticket = mark.ticket, %error, "damaged inbox record left in place");
                            }
                        }
                    }
                    for record in &commit.deliveries {
                        deliveries.insert(record.key, encode(record, "").as_slice())?;
                        events.insert(record.key, encode(&(), &record.events).as_slice())?;
                    }
                    if let Some(key) = commit.retired {
                        deliveries.remove(key)?;
                        events.remove(key)?;
                    }
                    Answer::Unit(reply)
                }
                Job::Update(record, with_events) => {
                    // A delivery already finished (or dead) is not brought back.
                    if deliveries.get(record.key)?.is_some() {
                        deliveries.insert(record.key, encode(&record, "").as_slice())?;
                        if with_events {
                            events.insert(record.key, encode(&(), &record.events).as_slice())?;
                        }
                    }
                    Answer::None
                }
                Job::Delivered(key) => {
                    deliveries.remove(key)?;
                    events.remove(key)?;
                    Answer::None
                }
                Job::DeadLetter(letter, reply) => {
                    let key = letter.record.key;
                    deliveries.remove(key)?;
                    if events.get(key)?.is_none() {
                        events.insert(key, encode(&(), &letter.record.events).as_slice())?;
                    }
                    let meta = DeadMeta {
                        record: letter.record,
                        reason: letter.reason,
                        dead_at_ms: letter.dead_at_ms,
                    };
                    if dead.insert(key, encode(&meta, "").as_slice())?.is_none() {
                        dead_delta += 1;
                    }
                    Answer::Unit(Some(reply))
                }
                Job::ListDead(query, reply) => {
                    let mut letters = Vec::new();
                    let mut failure = None;
                    for entry in dead.iter()? {
                        let (key, value) = entry?;
                        let key = key.value();
                        let wanted = |meta: &DeadMeta| {
                            query.app_id.as_deref().is_none_or(|id| id == meta.record.app_id)
                                && query.id.as_deref().is_none_or(|id| id == meta.record.batch_id)
                        };
                        // Events are read only for the letters wanted, and
                        // only when asked for.
                        let read = decode::<DeadMeta>(value.value())
                            .map_err(|e| format!("dead letter {key}: {e}"))
                            .and_then(|(meta, _)| {
                                let payload = if query.with_events && wanted(&meta) {
                                    read_events(&events, key)?
                                } else {
                                    String::new()
                                };
                                Ok((meta, payload))
                            });
                        match read {
                            Ok((meta, _)) if !wanted(&meta) => {}
                            Ok((meta, payload)) => {
                                let mut record = meta.record;
                                record.events = payload.into();
                                letters.push(DeadLetter {
                                    record,
                                    reason: meta.reason,
                                    dead_at_ms: meta.dead_at_ms,
                                });
                            }
                            Err(error) => failure = Some(StoreError(format!("the store is damaged: {error}"))),
                        }
                    }
                    Answer::Letters(reply, failure.map_or(Ok(letters), Err))
                }
                Job::Requeue(record, reply) => {
                    // Gone meanwhile (purged, expired, or replayed twice):
                    // nothing to bring back.
                    if dead.remove(record.key)?.is_some() {
                        dead_delta -= 1;
                        deliveries.insert(record.key, encode(&record, "").as_slice())?;
                        Answer::Unit(Some(reply))
                    } else {
                        let error = StoreError(format!(
                            "dead letter {} is no longer in the store (purged, expired or already replayed)",
                            record.batch_id
                        ));
                        Answer::Refused(reply, error)
                    }
                }
                Job::Purge(keys, reply) => {
                    let mut removed = 0;
                    for key in keys {
                        if dead.remove(key)?.is_some() {
                            events.remove(key)?;
                            removed += 1;
                        }
                    }
                    dead_delta -= removed as i64;
                    Answer::Count(reply, removed)
                }
                Job::Expire(before_ms, reply) => {
                    let mut expired = Vec::new();
                    for entry in dead.iter()? {
                        let (key, value) = entry?;
                        if let Ok((meta, _)) = decode::<DeadMeta>(value.value())
                            && meta.dead_at_ms < before_ms
                        {
                            expired.push(key.value());
                        }
                    }
                    for key in &expired {
                        dead.remove(key)?;
                        events.remove(key)?;
                    }
                    dead_delta -= expired.len() as i64;
                    Answer::Count(reply, expired.len())
                }
                Job::LoadEvents(key, reply) => {
                    let result =
                        read_events(&events, key).map_err(|e| StoreError(format!("the store is damaged: {e}")));
                    Answer::Events(reply, result)
                }
                Job::SaveLog(key, log) => {
                    attempt_log.insert(key.as_str(), encode(&(), &log).as_slice())?;
                    Answer::None
                }
                Job::LoadLog(key, reply) => {
                    let result = match attempt_log.get(key.as_str())? {
                        None => Ok(None),
                        Some(value) => decode::<()>(value.value())
                            .map(|((), log)| Some(log))
                            .map_err(|e| StoreError(format!("the attempt log of {key:?} is damaged: {e}"))),
                    };
                    Answer::Log(reply, result)
                }
            };
            answers.push(answer);
        }
    }
    if wrote {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(dead_delta)
}

impl Store for DurableStore {
    fn accept<'a>(&'a self, app_id: &'a str, _config: &'a str, events: &[Event]) -> Acceptance<'a> {
        let ticket = self.next_ticket.fetch_add(1, AtomicOrdering::Relaxed);
        let payload = crate::event::join_events(events);
        let meta = InboxMeta {
            app_id: app_id.to_string(),
            count: events.len() as u32,
            consumed: 0,
        };
        let handed = Accepted::Here(ticket);
        if !self.wait_for_disk && self.unwritten.load(AtomicOrdering::Relaxed) < MAX_UNWRITTEN {
            self.send(Job::Accept {
                ticket,
                meta,
                payload,
                reply: None,
            });
            return Acceptance {
                handed,
                stored: Box::pin(async { Ok(()) }),
            };
        }
        let stored = self.ask(|reply| Job::Accept {
            ticket,
            meta,
            payload,
            reply: Some(reply),
        });
        Acceptance { handed, stored }
    }

    fn first_key(&self) -> DeliveryKey {
        self.first_key
    }

    fn run_ownership(&self, owner: Arc<dyn Owner>) -> BoxFuture<'_, Result<(), StoreError>> {
        let recovered = self
            .recovered
            .lock()
            .expect("recovered lock is never held across a panic")
            .take();
        if let Some(recovered) = recovered {
            for entry in recovered.inbox {
                // One not taken (its app is gone) stays in the file.
                owner.resume_events(entry);
            }
            recovered
                .deliveries
                .into_iter()
                .for_each(|found| owner.resume_delivery(found));
        }
        Box::pin(async { Ok(()) })
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            backend: "embedded",
            node: "local".to_string(),
            partitions: 1,
            owned: vec![0],
            lag: Default::default(),
            takeovers: Default::default(),
            members: Vec::new(),
            handovers: Default::default(),
            nodes: Default::default(),
            cluster_backlog_bytes: None,
        }
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), StoreError>> {
        self.ask(|reply| Job::Commit(commit, Some(reply)))
    }

    fn record_failure(&self, record: &DeliveryRecord) {
        self.send(Job::Update(record.clone(), false));
    }

    fn refiltered(&self, record: &DeliveryRecord) {
        self.send(Job::Update(record.clone(), true));
    }

    fn delivered(&self, key: DeliveryKey) {
        self.send(Job::Delivered(key));
    }

    fn dead_letter(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), StoreError>> {
        self.ask(|reply| Job::DeadLetter(letter, reply))
    }

    fn dead_letters(&self, query: DeadLetterQuery) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        self.ask(|reply| Job::ListDead(query, reply))
    }

    fn requeue(&self, record: DeliveryRecord) -> BoxFuture<'_, Result<bool, StoreError>> {
        let requeued = self.ask(|reply| Job::Requeue(record, reply));
        Box::pin(async move { requeued.await.map(|()| true) })
    }

    fn purge_dead_letters(&self, keys: Vec<DeliveryKey>) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.ask(|reply| Job::Purge(keys, reply))
    }

    fn expire_dead_letters(&self, before_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.ask(|reply| Job::Expire(before_ms, reply))
    }

    fn health(&self) -> Result<(), String> {
        match &*self.failing.lock().expect("failing lock is never held across a panic") {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn dead_letter_count(&self) -> u64 {
        self.dead_count.load(AtomicOrdering::Relaxed)
    }

    fn load_events(&self, key: DeliveryKey) -> BoxFuture<'_, Result<String, StoreError>> {
        self.ask(|reply| Job::LoadEvents(key, reply))
    }

    fn save_attempt_log(&self, app_id: &str, webhook_id: &str, log: String) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(Job::SaveLog(attempt_log_key(app_id, webhook_id), log));
        Box::pin(async { Ok(()) })
    }

    fn attempt_log(&self, app_id: &str, webhook_id: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let key = attempt_log_key(app_id, webhook_id);
        self.ask(|reply| Job::LoadLog(key, reply))
    }
}

/// A webhook's key in the `attempt_log` table (a newline separates them:
/// an app id is its file's name, which holds none in practice, and a
/// collision would only mix two logs).
fn attempt_log_key(app_id: &str, webhook_id: &str) -> String {
    format!("{app_id}\n{webhook_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InboxMark;

    /// Collects what a store hands over.
    #[derive(Default)]
    struct Collect(Mutex<Recovered>);

    impl Owner for Collect {
        fn resume_events(&self, entry: InboxEntry) -> bool {
            self.0.lock().unwrap().inbox.push(entry);
            true
        }
        fn resume_delivery(&self, found: RecoveredDelivery) {
            self.0.lock().unwrap().deliveries.push(found);
        }
        fn replayed(&self, _: DeliveryRecord) -> bool {
            true
        }
        fn partition_lost(&self, _: u32) {}
    }

    async fn recovered(store: &DurableStore) -> Recovered {
        let owner = Arc::new(Collect::default());
        store.run_ownership(owner.clone()).await.unwrap();
        std::mem::take(&mut *owner.0.lock().unwrap())
    }

    /// Accepts `events` and waits until they are stored.
    async fn accept(store: &DurableStore, events: &[Event]) -> InboxTicket {
        let acceptance = store.accept("app", "v1", events);
        acceptance.stored.await.unwrap();
        match acceptance.handed {
            Accepted::Here(ticket) => ticket,
            Accepted::ByOwner => panic!("the embedded store batches here"),
        }
    }

    /// Opens the store in `dir` again: the last one's drop waited for its
    /// writer to let go of the file.
    fn reopen(dir: &Path) -> Arc<DurableStore> {
        DurableStore::open(dir, true, u64::MAX).unwrap()
    }

    fn event(n: u32) -> Event {
        Event::parse_joined(&format!(r#"{{"name":"e","channel":"c{n}"}}"#))
            .unwrap()
            .remove(0)
    }

    fn record(key: u64, events: &str) -> DeliveryRecord {
        DeliveryRecord {
            key,
            batch_id: format!("b-{key}"),
            app_id: "app".into(),
            webhook_id: "w".into(),
            events: events.into(),
            event_count: 1,
            batch_time_ms: 1,
            accepted_ms: 1,
            attempts: 0,
            history: Vec::new(),
            pending_filter: false,
            not_before_ms: 0,
            window_start_ms: None,
        }
    }

    /// A request's inbox write, of the events numbered `events`.
    fn accept_of(ticket: InboxTicket, events: &[u32]) -> Job {
        Job::Accept {
            ticket,
            meta: InboxMeta {
                app_id: "app".into(),
                count: events.len() as u32,
                consumed: 0,
            },
            payload: crate::event::join_events(&events.iter().map(|n| event(*n)).collect::<Vec<_>>()),
            reply: None,
        }
    }

    /// One write of every kind, in an order that exercises each: what a
    /// store holds after them is known (see the test below).
    fn every_kind_of_write() -> Vec<Job> {
        fn reply<T>() -> Reply<T> {
            oneshot::channel().0
        }
        let letter = |key: u64, dead_at_ms: u64| {
            Job::DeadLetter(
                DeadLetter {
                    record: record(key, &format!(r#"{{"name":"dead","n":{key}}}"#)),
                    reason: format!("gone {key}"),
                    dead_at_ms,
                },
                reply(),
            )
        };
        let mut attempted = record(7, r#"{"name":"e","channel":"c1"}"#);
        attempted.attempts = 3;
        let mut refiltered = record(8, r#"{"name":"e","channel":"c2"}"#);
        refiltered.events = r#"{"name":"filtered"}"#.into();
        vec![
            accept_of(1, &[1, 2]),
            accept_of(2, &[3]),
            accept_of(3, &[4]),
            Job::Commit(
                Commit {
                    marks: vec![
                        InboxMark {
                            ticket: 1,
                            consumed: 1,
                            complete: false,
                        },
                        InboxMark {
                            ticket: 2,
                            consumed: 1,
                            complete: true,
                        },
                    ],
                    deliveries: vec![
                        record(7, r#"{"name":"e","channel":"c1"}"#),
                        record(8, r#"{"name":"e","channel":"c2"}"#),
                    ],
                    retired: None,
                },
                Some(reply()),
            ),
            Job::Update(attempted, false),
            Job::Update(refiltered, true),
            letter(9, 100),
            letter(10, 100),
            Job::Requeue(record(10, ""), reply()),
            letter(11, 5),
            Job::Expire(6, reply()),
            letter(12, 100),
            Job::Purge(vec![12], reply()),
            Job::Delivered(7),
        ]
    }

    /// What a store in `dir` holds, as comparable text.
    async fn contents(dir: &Path) -> String {
        let store = reopen(dir);
        let recovered = recovered(&store).await;
        let letters = store.dead_letters(DeadLetterQuery::default()).await.unwrap();
        let mut text = String::new();
        for entry in &recovered.inbox {
            text += &format!(
                "inbox {} consumed {} events {}\n",
                entry.ticket,
                entry.consumed,
                entry.events.len()
            );
        }
        for found in &recovered.deliveries {
            let r = &found.record;
            text += &format!("delivery {} attempts {} events {}\n", r.key, r.attempts, r.events);
        }
        for letter in &letters {
            text += &format!(
                "dead {} {} at {}\n",
                letter.record.key, letter.reason, letter.dead_at_ms
            );
        }
        text
    }

    /// Deferred writes, compacted, leave the store as they would whole:
    /// requests batched whole and deliveries delivered within them vanish,
    /// what is still outstanding (a request batched in part, a delivery
    /// not yet delivered, a completion of an earlier delivery) stays.
    #[tokio::test]
    async fn compacting_deferred_writes_leaves_what_applying_them_leaves() {
        let mark = |ticket, consumed, complete| InboxMark {
            ticket,
            consumed,
            complete,
        };
        let commit = |marks: Vec<InboxMark>, deliveries: Vec<DeliveryRecord>| {
            Job::Commit(
                Commit {
                    marks,
                    deliveries,
                    retired: None,
                },
                None,
            )
        };
        let jobs = || {
            let mut attempted = record(7, r#"{"name":"a"}"#);
            attempted.attempts = 1;
            vec![
                accept_of(1, &[1, 2]),
                accept_of(2, &[3]),
                accept_of(3, &[4, 5]),
                // 1 in two parts (the second by count), 2 whole, 3 in part.
                commit(
                    vec![mark(1, 1, false), mark(2, 1, true)],
                    vec![record(7, r#"{"name":"a"}"#), record(8, r#"{"name":"b"}"#)],
                ),
                commit(
                    vec![mark(1, 2, false), mark(3, 1, false)],
                    vec![record(9, r#"{"name":"c"}"#)],
                ),
                Job::Update(attempted, false),
                Job::Delivered(7),
                Job::Delivered(9),
                // Stored before these writes: still removed.
                Job::Delivered(4),
            ]
        };
        let compacted = compact(jobs());
        assert_eq!(compacted.len(), 4, "accept 3, delivery 8, mark 3, delivered 4");
        let whole = tempfile::tempdir().unwrap();
        let short = tempfile::tempdir().unwrap();
        for (dir, jobs) in [(&whole, jobs()), (&short, compacted)] {
            let db = open_database(&dir.path().join(STORE_FILE)).unwrap();
            let earlier = vec![commit(vec![], vec![record(4, r#"{"name":"old"}"#)])];
            transact(&db, earlier, &mut Vec::new(), Fold(None)).unwrap();
            transact(&db, jobs, &mut Vec::new(), Fold(Some(0))).unwrap();
        }
        let left = contents(whole.path()).await;
        assert_eq!(
            left,
            "inbox 3 consumed 1 events 2\ndelivery 8 attempts 0 events {\"name\":\"b\"}\n"
        );
        assert_eq!(contents(short.path()).await, left);
    }

    /// Writes the journal held past the last fold (a crash before the next)
    /// are applied again on open, giving what applying them gave.
    #[tokio::test]
    async fn writes_journaled_but_not_folded_are_applied_again_on_open() {
        let applied = tempfile::tempdir().unwrap();
        {
            let store = reopen(applied.path());
            for job in every_kind_of_write() {
                store.send(job);
            }
        }
        let expected = contents(applied.path()).await;
        assert_eq!(
            expected,
            "inbox 1 consumed 1 events 2\ninbox 3 consumed 0 events 1\n\
             delivery 8 attempts 0 events {\"name\":\"filtered\"}\n\
             delivery 10 attempts 0 events {\"name\":\"dead\",\"n\":10}\n\
             dead 9 gone 9 at 100\n"
        );

        let crashed = tempfile::tempdir().unwrap();
        drop(reopen(crashed.path()));
        // As a crash leaves it: the writes journaled (flushed), not folded.
        let folded = {
            let db = open_database(&crashed.path().join(STORE_FILE)).unwrap();
            let txn = db.begin_read().unwrap();
            txn.open_table(META).unwrap().get(FOLDED).unwrap().unwrap().value()
        };
        let (mut journal, replay) = Journal::open(crashed.path(), folded).unwrap();
        assert!(replay.records.is_empty(), "the last store folded everything");
        let records = journal_records(&journal, &every_kind_of_write());
        journal.append(&records, true).unwrap();
        drop(journal);
        assert_eq!(contents(crashed.path()).await, expected);
        // Applied once: the next open finds them folded.
        assert_eq!(contents(crashed.path()).await, expected);
    }

    /// Blind writes are journaled and answered before redb has them: a
    /// read, a dead letter and a requeue right after them see them, as a
    /// fold does.
    #[tokio::test]
    async fn reads_and_counts_see_the_writes_not_yet_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let ticket = accept(&store, &[event(1)]).await;
        let delivery = record(7, r#"{"name":"e","channel":"c1"}"#);
        store
            .commit(Commit {
                marks: vec![InboxMark {
                    ticket,
                    consumed: 1,
                    complete: true,
                }],
                deliveries: vec![delivery.clone(), record(8, r#"{"name":"x"}"#)],
                retired: None,
            })
            .await
            .unwrap();
        store.delivered(8);
        assert_eq!(store.load_events(7).await.unwrap(), r#"{"name":"e","channel":"c1"}"#);
        assert!(store.load_events(8).await.is_err(), "delivered: its events are gone");
        let letter = |record: DeliveryRecord| DeadLetter {
            record,
            reason: "gone".into(),
            dead_at_ms: 5,
        };
        store.dead_letter(letter(delivery.clone())).await.unwrap();
        assert_eq!(store.dead_letter_count(), 1);
        store.requeue(delivery).await.unwrap();
        assert_eq!(store.dead_letter_count(), 0);
        drop(store);
        assert_eq!(
            contents(dir.path()).await,
            "delivery 7 attempts 0 events {\"name\":\"e\",\"channel\":\"c1\"}\n"
        );
    }

    #[tokio::test]
    async fn what_was_accepted_and_committed_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DurableStore::open(dir.path(), true, u64::MAX).unwrap();
            let recovered = recovered(&store).await;
            assert!(recovered.inbox.is_empty() && recovered.deliveries.is_empty());
            let t1 = accept(&store, &[event(1), event(2)]).await;
            let t2 = accept(&store, &[event(3)]).await;
            let mut r = record(7, r#"{"name":"e","channel":"c1"}"#);
            store
                .commit(Commit {
                    marks: vec![InboxMark {
                        ticket: t1,
                        consumed: 1,
                        complete: false,
                    }],
                    deliveries: vec![r.clone()],
                    retired: None,
                })
                .await
                .unwrap();
            r.attempts = 3;
            store.record_failure(&r);
            store
                .dead_letter(DeadLetter {
                    record: record(9, "{}"),
                    reason: "gone".into(),
                    dead_at_ms: 5,
                })
                .await
                .unwrap();
            assert_eq!(t2, t1 + 1);
        }
        let store = reopen(dir.path());
        assert_eq!(store.first_key(), 10);
        let recovered = recovered(&store).await;
        assert_eq!(recovered.inbox.len(), 2);
        assert_eq!(recovered.inbox[0].consumed, 1);
        assert_eq!(recovered.inbox[0].events.len(), 2);
        assert_eq!(recovered.deliveries.len(), 1);
        assert_eq!(recovered.deliveries[0].record.attempts, 3);
        assert_eq!(
            &*recovered.deliveries[0].record.events,
            r#"{"name":"e","channel":"c1"}"#
        );
        let letters = store
            .dead_letters(DeadLetterQuery {
                with_events: true,
                ..DeadLetterQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, "gone");
        assert!(!letters[0].record.events.is_empty());
        // A listing reads no events; a query by id or app finds only those.
        let listed = store.dead_letters(DeadLetterQuery::default()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].record.events.is_empty());
        let id = letters[0].record.batch_id.clone();
        let by_id = |id: &str| DeadLetterQuery {
            id: Some(id.to_string()),
            ..DeadLetterQuery::default()
        };
        assert_eq!(store.dead_letters(by_id(&id)).await.unwrap().len(), 1);
        assert!(store.dead_letters(by_id("another")).await.unwrap().is_empty());
        let other_app = DeadLetterQuery {
            app_id: Some("another-app".into()),
            ..DeadLetterQuery::default()
        };
        assert!(store.dead_letters(other_app).await.unwrap().is_empty());
        assert_eq!(store.expire_dead_letters(6).await.unwrap(), 1);
        assert!(store.dead_letters(DeadLetterQuery::default()).await.unwrap().is_empty());
    }

    fn accept_job(ticket: InboxTicket) -> Job {
        Job::Accept {
            ticket,
            meta: InboxMeta {
                app_id: "app".into(),
                count: 2,
                consumed: 0,
            },
            payload: r#"{"name":"e"}"#.into(),
            reply: None,
        }
    }

    fn commit_job(marks: &[(InboxTicket, u32, bool)]) -> Job {
        let marks = marks
            .iter()
            .map(|&(ticket, consumed, complete)| InboxMark {
                ticket,
                consumed,
                complete,
            })
            .collect();
        let commit = Commit {
            marks,
            ..Commit::default()
        };
        Job::Commit(commit, Some(oneshot::channel().0))
    }

    fn memory_writer() -> Writer {
        Writer {
            path: PathBuf::new(),
            db: None,
            journal: None,
            wait_for_disk: false,
            last_fold: Instant::now(),
            unwritten: Arc::default(),
            dead_count: Arc::default(),
            failing: Arc::default(),
            gather: Some(GATHER),
            held: HashMap::new(),
            deferred: Vec::new(),
        }
    }

    /// The tickets and progress of the requests `group` writes.
    fn written(group: &[Job]) -> Vec<(InboxTicket, u32)> {
        group
            .iter()
            .filter_map(|job| match job {
                Job::Accept { ticket, meta, .. } => Some((*ticket, meta.consumed)),
                _ => None,
            })
            .collect()
    }

    /// A hold no request outlasts, however slow the machine.
    const LONG: Duration = Duration::from_secs(3600);

    /// Writes (as a group that succeeds) every held request.
    fn write_all_held(writer: &mut Writer) -> Vec<(InboxTicket, u32)> {
        let (group, tentative) = writer.hold_back(Vec::new(), Duration::ZERO);
        writer.settle(tentative);
        assert!(writer.held.is_empty());
        written(&group)
    }

    #[test]
    fn held_requests_are_written_only_if_not_batched_whole_in_time() {
        let mut writer = memory_writer();
        let (group, tentative) = writer.hold_back(vec![accept_job(1), accept_job(2), accept_job(3)], LONG);
        assert!(group.is_empty(), "all three are held");
        writer.settle(tentative);
        // 1 is batched whole, 2 half; 7 was written before: its mark stays.
        let (group, tentative) = writer.hold_back(vec![commit_job(&[(1, 2, true), (2, 1, false), (7, 2, true)])], LONG);
        let [Job::Commit(commit, _)] = group.as_slice() else {
            panic!("the commit goes on")
        };
        assert_eq!(commit.marks.iter().map(|m| m.ticket).collect::<Vec<_>>(), [7]);
        writer.settle(tentative);
        // Due: 2 with its progress and 3 are written; 1 never.
        assert_eq!(write_all_held(&mut writer), [(2, 1), (3, 0)]);
    }

    #[test]
    fn a_group_that_fails_leaves_the_held_requests_as_they_were() {
        let mut writer = memory_writer();
        let (_, tentative) = writer.hold_back(vec![accept_job(1), accept_job(2)], LONG);
        writer.settle(tentative);
        // A commit batching 1 whole and 2 half, in a group that is due and
        // fails (it is not settled): its marks and writes never happened.
        let (group, _failed) = writer.hold_back(vec![commit_job(&[(1, 2, true), (2, 1, false)])], Duration::ZERO);
        assert_eq!(
            written(&group),
            [(2, 1)],
            "1 is batched whole; 2 goes with the commit's progress"
        );
        // The batcher retries the commit later; meanwhile both are due.
        assert_eq!(write_all_held(&mut writer), [(1, 0), (2, 0)]);
    }

    #[test]
    fn a_request_whose_sender_waits_for_the_disk_or_in_fsync_mode_is_never_held() {
        let mut writer = memory_writer();
        let mut waiting = accept_job(1);
        if let Job::Accept { reply, .. } = &mut waiting {
            *reply = Some(oneshot::channel().0);
        }
        assert_eq!(written(&writer.hold_back(vec![waiting], HOLD).0), [(1, 0)]);
        writer.gather = None;
        assert_eq!(written(&writer.hold_back(vec![accept_job(2)], HOLD).0), [(2, 0)]);
    }

    /// Whether `dir`'s store file holds `text` (the payload of an inbox
    /// record is stored as is), read beside the open store.
    fn file_holds(dir: &Path, text: &str) -> bool {
        let bytes = std::fs::read(dir.join(STORE_FILE)).unwrap();
        bytes.windows(text.len()).any(|w| w == text.as_bytes())
    }

    #[tokio::test]
    async fn an_idle_writer_writes_a_held_request_once_it_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path(), false, u64::MAX).unwrap();
        recovered(&store).await;
        let marked = Event::parse_joined(r#"{"name":"e","channel":"held-then-written"}"#)
            .unwrap()
            .remove(0);
        accept(&store, &[marked]).await;
        // No job follows: the writer wakes for it by itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file_holds(dir.path(), "held-then-written") {
            assert!(Instant::now() < deadline, "the held request was never written");
            tokio::task::yield_now().await;
        }
        assert!(store.health().is_ok());
    }

    #[tokio::test]
    async fn a_request_batched_while_held_leaves_no_inbox_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Memory durability: the commit usually reaches the writer
            // within the hold (if not, the records are written and deleted:
            // the outcome is the same); the store's drop writes what is
            // still held.
            let store = DurableStore::open(dir.path(), false, u64::MAX).unwrap();
            recovered(&store).await;
            let whole = accept(&store, &[event(1), event(2)]).await;
            let half = accept(&store, &[event(3), event(4)]).await;
            store
                .commit(Commit {
                    marks: vec![
                        InboxMark {
                            ticket: whole,
                            consumed: 2,
                            complete: true,
                        },
                        InboxMark {
                            ticket: half,
                            consumed: 1,
                            complete: false,
                        },
                    ],
                    deliveries: vec![record(1, r#"{"name":"e","channel":"c1"}"#)],
                    retired: None,
                })
                .await
                .unwrap();
        }
        let store = reopen(dir.path());
        let recovered = recovered(&store).await;
        assert_eq!(recovered.inbox.len(), 1, "only the half-batched request is left");
        assert_eq!(recovered.inbox[0].consumed, 1);
        assert_eq!(recovered.inbox[0].events.len(), 2);
        assert_eq!(recovered.deliveries.len(), 1);
    }

    #[test]
    fn a_damaged_record_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_database(&dir.path().join(STORE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(INBOX)
                .unwrap()
                .insert(1, b"\x01garbage-record".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let error = DurableStore::open(dir.path(), true, u64::MAX).unwrap_err();
        assert!(
            error.0.contains("is damaged (inbox record 1: checksum mismatch)"),
            "{error}"
        );
    }
}
