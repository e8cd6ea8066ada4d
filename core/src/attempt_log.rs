//! The attempt log: each webhook's last attempts, with what the receiver
//! answered (docs/contract.md §10).
//!
//! Lanes record every attempt here as it ends ([`AttemptLog::record`]):
//! a ring per webhook in memory, bounded in entries and in bytes. Once a
//! second ([`AttemptLog::run`]) the rings that changed are saved whole to
//! the store, which keeps one value per webhook, so the log survives a
//! restart and, on Redis, is read by every node. The node delivering a
//! webhook's batches (its app's partition owner) is the one writing its
//! log; a ring it did not hold yet is first merged behind what the store
//! kept, so a restart or a hand-over continues the log rather than
//! replacing it. Rings left idle are dropped from memory; the store keeps
//! them.
//!
//! Recording costs a lock and the entry's strings; nothing on the
//! delivery path waits for the store.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_sink_api::{Answer, DeliveryError};
use serde::{Deserialize, Serialize};

use crate::delivery::LaneKey;
use crate::store::{SharedStore, StoreError};

/// How often changed rings are saved to the store.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Saves a ring may miss (no new attempt) before it leaves memory.
const IDLE_SAVES: u32 = 30;
/// What an entry costs beside its strings, for the byte bound.
const ENTRY_OVERHEAD: usize = 160;

/// What a request header's value is shown as when it may hold a secret.
pub const REDACTED: &str = "(redacted)";

/// One attempt as the log keeps it (and `GET
/// /api/v1/apps/{app}/webhooks/{id}/attempts` shows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedAttempt {
    /// Increases by one per entry of this webhook's log: pass the last one
    /// seen as `before` for the next page.
    pub seq: u64,
    /// When the attempt started (ms since the Unix epoch).
    pub at_ms: u64,
    /// `X-Hookline-Batch-Id`.
    pub batch_id: String,
    /// Which attempt of the batch (1 for the first; a throttle does not
    /// count).
    pub attempt: u32,
    /// Events in the batch.
    pub events: usize,
    /// How long the attempt took (ms).
    pub latency_ms: f64,
    /// `delivered` or `failed`.
    pub outcome: Outcome,
    /// The status the receiver answered, if it answered with one.
    pub status: Option<u16>,
    /// What kind of failure; `null` on success.
    pub error_class: Option<ErrorClass>,
    /// What went wrong, as the dead letter would say it.
    pub error: Option<String>,
    /// The headers the engine sent beside the body: the signed ones, with
    /// `X-Pusher-Signature` and the webhook's own `headers` redacted.
    pub request_headers: Vec<Header>,
    /// The receiver's response headers (HTTP webhooks), as `[name, value]`
    /// pairs.
    #[serde(with = "header_pairs")]
    pub response_headers: http::HeaderMap,
    /// The first 4 KiB of the receiver's response body (HTTP webhooks), as
    /// text.
    pub response_body: Option<String>,
    /// Whether the body was longer than what is kept.
    #[serde(default)]
    pub response_body_truncated: bool,
}

impl LoggedAttempt {
    /// An entry for an attempt that ended with `outcome` after `latency`;
    /// `request_headers` are already redacted ([`redacted_request_headers`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        at_ms: u64,
        batch_id: &str,
        attempt: u32,
        events: usize,
        latency: Duration,
        outcome: &Result<(), DeliveryError>,
        request_headers: Vec<Header>,
        answer: Option<Answer>,
    ) -> Self {
        let answer = answer.unwrap_or_default();
        let body = (!answer.body.is_empty() || !answer.headers.is_empty())
            .then(|| String::from_utf8_lossy(&answer.body).into_owned());
        Self {
            seq: 0,
            at_ms,
            batch_id: batch_id.to_string(),
            attempt,
            events,
            latency_ms: latency.as_micros() as f64 / 1000.0,
            outcome: if outcome.is_ok() {
                Outcome::Delivered
            } else {
                Outcome::Failed
            },
            status: match outcome {
                Ok(()) => None,
                Err(error) => error.status(),
            },
            error_class: outcome.as_ref().err().map(ErrorClass::of),
            error: outcome.as_ref().err().map(ToString::to_string),
            request_headers,
            response_headers: answer.headers,
            response_body: body,
            response_body_truncated: answer.body_truncated,
        }
    }

    /// About what the entry holds in memory and in the store.
    fn bytes(&self) -> usize {
        let sent: usize = self.request_headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
        let answered: usize = self
            .response_headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 8)
            .sum();
        ENTRY_OVERHEAD
            + self.batch_id.len()
            + self.error.as_ref().map_or(0, String::len)
            + sent
            + answered
            + self.response_body.as_ref().map_or(0, String::len)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The target took the batch.
    Delivered,
    /// It did not (see the error).
    Failed,
}

/// What kind of failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The target answered with a status that is not a success.
    Status,
    /// No answer within the timeout.
    Timeout,
    /// No connection (DNS, refused, reset, TLS).
    Connect,
    /// A 429 or the target's throttling error.
    Throttled,
    /// Too large for the target (the batch is split).
    TooLarge,
    /// A failure the target or the engine says is transient.
    Transient,
    /// A failure no retry fixes.
    Final,
}

impl ErrorClass {
    fn of(error: &DeliveryError) -> Self {
        match error {
            DeliveryError::Status { code: 429, .. } | DeliveryError::Throttled { .. } => Self::Throttled,
            DeliveryError::Status { .. } => Self::Status,
            DeliveryError::Timeout => Self::Timeout,
            DeliveryError::Connect(_) => Self::Connect,
            DeliveryError::TooLarge(_) => Self::TooLarge,
            DeliveryError::Transient(_) | DeliveryError::TransientAfter { .. } => Self::Transient,
            DeliveryError::Final(_) => Self::Final,
        }
    }
}

/// The headers handed to the sink, as the log shows them: the signed ones
/// but the signature, the `traceparent`, and the names only of the
/// webhook's own (they often carry credentials).
pub(crate) fn redacted_request_headers(signed: &[(&'static str, String)], extra: &[(String, String)]) -> Vec<Header> {
    let signed = signed.iter().map(|(name, value)| {
        let shown = if name.eq_ignore_ascii_case("X-Pusher-Signature") {
            Cow::Borrowed(REDACTED)
        } else {
            Cow::Owned(value.clone())
        };
        (Cow::Borrowed(*name), shown)
    });
    let extra = extra.iter().map(|(name, value)| {
        let shown = if name == "traceparent" {
            Cow::Owned(value.clone())
        } else {
            Cow::Borrowed(REDACTED)
        };
        (Cow::Owned(name.clone()), shown)
    });
    extra.chain(signed).collect()
}

/// A header as the log keeps it: fixed names and redactions are not copied
/// per attempt.
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// Response headers as `[name, value]` pairs (a value that is not text
/// shows as its length).
mod header_pairs {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(headers: &http::HeaderMap, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(headers.iter().map(|(name, value)| {
            let shown = value
                .to_str()
                .map_or_else(|_| format!("({} bytes, not text)", value.len()), str::to_string);
            (name.as_str(), shown)
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<http::HeaderMap, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(deserializer)?;
        let mut headers = http::HeaderMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, value);
            }
        }
        Ok(headers)
    }
}

/// A page of one webhook's log.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptPage {
    /// Newest first.
    pub attempts: Vec<LoggedAttempt>,
    /// Entries in the log (all pages).
    pub total: usize,
    /// Pass as `before` for the next page; `null` on the last.
    pub next: Option<u64>,
}

/// How much each webhook's log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Entries kept per webhook (`delivery.attempt_log`).
    pub entries: usize,
    /// Bytes kept per webhook (`delivery.attempt_log_bytes`), at least the
    /// newest entry.
    pub bytes: usize,
}

/// The rings of every webhook this node delivers to; see the module docs.
#[derive(Debug)]
pub(crate) struct AttemptLog {
    store: SharedStore,
    bounds: LogBounds,
    rings: Mutex<HashMap<LaneKey, Ring>>,
    /// One save round at a time (the timer's, or one a read asked for).
    saving: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<LoggedAttempt>,
    bytes: usize,
    /// The `seq` the next entry gets (once `merged`).
    next_seq: u64,
    /// Whether what the store kept is in `entries`; until then new entries
    /// are numbered from 0 and renumbered on the merge.
    merged: bool,
    /// Changed since the last save.
    dirty: bool,
    /// Saves since it last changed.
    idle: u32,
}

impl Ring {
    fn push(&mut self, mut entry: LoggedAttempt, bounds: LogBounds) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
        self.trim(bounds);
        self.dirty = true;
        self.idle = 0;
    }

    fn trim(&mut self, bounds: LogBounds) {
        while self.entries.len() > bounds.entries || (self.bytes > bounds.bytes && self.entries.len() > 1) {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes();
            }
        }
    }

    /// Puts what the store kept ahead of what was recorded since.
    fn merge(&mut self, kept: Vec<LoggedAttempt>, bounds: LogBounds) {
        let recorded = std::mem::take(&mut self.entries);
        self.bytes = 0;
        self.next_seq = kept.last().map_or(0, |last| last.seq + 1);
        for entry in kept {
            self.next_seq = self.next_seq.max(entry.seq + 1);
            self.bytes += entry.bytes();
            self.entries.push_back(entry);
        }
        for entry in recorded {
            self.push(entry, bounds);
        }
        self.trim(bounds);
        self.merged = true;
    }
}

impl AttemptLog {
    pub(crate) fn new(store: SharedStore, bounds: LogBounds) -> Arc<Self> {
        Arc::new(Self {
            store,
            bounds,
            rings: Mutex::default(),
            saving: tokio::sync::Mutex::new(()),
        })
    }

    /// Adds an attempt to its webhook's log (saved within a second).
    pub(crate) fn record(&self, app_id: &str, webhook_id: &Arc<str>, entry: LoggedAttempt) {
        let mut rings = self.rings.lock().expect("rings lock is never held across a panic");
        let key = (Arc::from(app_id), webhook_id.clone());
        rings.entry(key).or_default().push(entry, self.bounds);
    }

    /// Saves the rings that changed, every [`SAVE_EVERY`], until the log
    /// is dropped.
    pub(crate) async fn run(log: std::sync::Weak<Self>) {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(log) = log.upgrade() else { return };
            log.save().await;
        }
    }

    /// Saves every ring that changed since the last save (first merging a
    /// new one behind what the store kept); drops rings long idle.
    pub(crate) async fn save(&self) {
        let _one = self.saving.lock().await;
        let changed: Vec<(LaneKey, bool)> = {
            let mut rings = self.rings.lock().expect("rings lock is never held across a panic");
            rings.retain(|_, ring| {
                if !ring.dirty {
                    ring.idle += 1;
                }
                ring.dirty || ring.idle < IDLE_SAVES
            });
            rings
                .iter()
                .filter(|(_, ring)| ring.dirty)
                .map(|(key, ring)| (key.clone(), ring.merged))
                .collect()
        };
        for ((app_id, webhook_id), merged) in changed {
            if !merged {
                let kept = match self.kept(&app_id, &webhook_id).await {
                    Ok(kept) => kept,
                    Err(error) => {
                        tracing::warn!(app = %app_id, webhook = %hookline_sink_api::redact_for_logs(&webhook_id), %error,
                            "cannot read the attempt log; saving it later");
                        continue;
                    }
                };
                let mut rings = self.rings.lock().expect("rings lock is never held across a panic");
                if let Some(ring) = rings.get_mut(&(app_id.clone(), webhook_id.clone())) {
                    ring.merge(kept, self.bounds);
                }
            }
            let text = {
                let mut rings = self.rings.lock().expect("rings lock is never held across a panic");
                let Some(ring) = rings.get_mut(&(app_id.clone(), webhook_id.clone())) else {
                    continue;
                };
                ring.dirty = false;
                serde_json::to_string(&ring.entries).expect("log entries always serialise")
            };
            if let Err(error) = self.store.save_attempt_log(&app_id, &webhook_id, text).await {
                tracing::warn!(app = %app_id, webhook = %hookline_sink_api::redact_for_logs(&webhook_id), %error,
                    "cannot save the attempt log; trying again in a second");
                let mut rings = self.rings.lock().expect("rings lock is never held across a panic");
                if let Some(ring) = rings.get_mut(&(app_id, webhook_id)) {
                    ring.dirty = true;
                }
            }
        }
    }

    /// What the store kept of one webhook's log, oldest first.
    async fn kept(&self, app_id: &str, webhook_id: &str) -> Result<Vec<LoggedAttempt>, StoreError> {
        let Some(text) = self.store.attempt_log(app_id, webhook_id).await? else {
            return Ok(Vec::new());
        };
        serde_json::from_str(&text).map_err(|e| StoreError(format!("the attempt log is unreadable ({e})")))
    }

    /// One page of a webhook's log, newest first: at most `limit` entries
    /// older than `before` (a `seq`). This node's latest attempts are saved
    /// first, so the page holds them.
    pub(crate) async fn page(
        &self,
        app_id: &str,
        webhook_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AttemptPage, StoreError> {
        self.save().await;
        let kept = self.kept(app_id, webhook_id).await?;
        let total = kept.len();
        let mut older: Vec<LoggedAttempt> = kept
            .into_iter()
            .rev()
            .filter(|entry| before.is_none_or(|before| entry.seq < before))
            .collect();
        let more = older.len() > limit;
        older.truncate(limit);
        let next = if more {
            older.last().map(|entry| entry.seq)
        } else {
            None
        };
        Ok(AttemptPage {
            attempts: older,
            total,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(batch: &str, body: &str) -> LoggedAttempt {
        let answer = Answer::new(http::HeaderMap::new(), &bytes::Bytes::from(body.to_string()));
        LoggedAttempt::new(
            1,
            batch,
            1,
            1,
            Duration::from_millis(2),
            &Ok(()),
            Vec::new(),
            Some(answer),
        )
    }

    const BOUNDS: LogBounds = LogBounds {
        entries: 3,
        bytes: 10_000,
    };

    #[test]
    fn a_ring_keeps_the_newest_entries_within_its_count_and_bytes() {
        let mut ring = Ring::default();
        for n in 0..5 {
            ring.push(entry(&format!("b{n}"), "ok"), BOUNDS);
        }
        let kept: Vec<_> = ring.entries.iter().map(|e| (e.seq, e.batch_id.as_str())).collect();
        assert_eq!(kept, [(2, "b2"), (3, "b3"), (4, "b4")]);

        let big = "x".repeat(4000);
        for n in 0..3 {
            ring.push(entry(&format!("big{n}"), &big), BOUNDS);
        }
        // Three 4 KB bodies do not fit in 10 000 bytes: two do.
        assert_eq!(ring.entries.len(), 2);
        assert!(ring.bytes <= BOUNDS.bytes, "{}", ring.bytes);
        assert_eq!(ring.entries.back().unwrap().batch_id, "big2");
    }

    #[test]
    fn a_merge_puts_what_the_store_kept_first_and_numbers_on_from_it() {
        let mut ring = Ring::default();
        ring.push(entry("new", "ok"), BOUNDS);
        let kept: Vec<LoggedAttempt> = (0..3)
            .map(|n| LoggedAttempt {
                seq: 10 + n,
                ..entry(&format!("old{n}"), "ok")
            })
            .collect();
        ring.merge(kept, BOUNDS);
        let seen: Vec<_> = ring.entries.iter().map(|e| (e.seq, e.batch_id.as_str())).collect();
        assert_eq!(seen, [(11, "old1"), (12, "old2"), (13, "new")]);
        ring.push(entry("newer", "ok"), BOUNDS);
        assert_eq!(ring.entries.back().unwrap().seq, 14);
    }

    #[test]
    fn request_headers_hide_the_signature_and_the_webhooks_own_values() {
        let signed = [
            ("X-Pusher-Key", "key".to_string()),
            ("X-Pusher-Signature", "abc".to_string()),
        ];
        let extra = [("Authorization".to_string(), "Bearer secret".to_string())];
        let shown = redacted_request_headers(&signed, &extra);
        let shown: Vec<(String, String)> = shown
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            shown,
            [
                ("Authorization".to_string(), REDACTED.to_string()),
                ("X-Pusher-Key".to_string(), "key".to_string()),
                ("X-Pusher-Signature".to_string(), REDACTED.to_string()),
            ]
        );
    }

    #[test]
    fn a_failed_attempt_keeps_its_status_class_and_the_answer() {
        let answer = Answer::new(
            http::HeaderMap::from_iter([(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"))]),
            &bytes::Bytes::from_static(b"no such channel"),
        );
        let failed = Err(DeliveryError::Status {
            code: 400,
            retry_after: None,
            detail: String::new(),
        });
        let logged = LoggedAttempt::new(
            5,
            "b",
            2,
            3,
            Duration::from_micros(1500),
            &failed,
            Vec::new(),
            Some(answer),
        );
        assert_eq!(logged.outcome, Outcome::Failed);
        assert_eq!(logged.status, Some(400));
        assert_eq!(logged.error_class, Some(ErrorClass::Status));
        assert_eq!(logged.response_body.as_deref(), Some("no such channel"));
        assert_eq!(logged.latency_ms, 1.5);
    }
}
