//! Group commit of accepted events. Requests that arrive while a round is
//! with Redis wait for the next round; a round joins the requests for the
//! same app (and config) into one inbox entry and sends the entries in one
//! pipeline per partition, all at once. So Redis appends, and with `appendfsync always` fsyncs, once
//! per round rather than once per request, and the owner reads fewer,
//! larger entries. Each request is answered once Redis answered its round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::conn::Conn;
use hookline_core::store::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::keys::PartitionKeys;

/// Most requests in one round.
const MAX_ROUND: usize = 512;
/// Most events in one inbox entry.
const MAX_ENTRY_EVENTS: usize = 2000;

/// One request's accepted events, waiting for a round.
struct Job {
    partition: u32,
    app_id: String,
    config: String,
    payload: String,
    count: usize,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Appends accepted events to their partitions' inboxes, a round at a time.
#[derive(Debug)]
pub(crate) struct Appender {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Appender {
    /// Starts the round task; `failing` is set while Redis refuses.
    pub(crate) fn start(conn: Conn, failing: Arc<Mutex<Option<String>>>) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(rounds(conn, failing, rx));
        Self { jobs }
    }

    /// Appends one request's events; resolves once Redis has them.
    pub(crate) async fn append(
        &self,
        partition: u32,
        app_id: &str,
        config: &str,
        payload: String,
        count: usize,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            partition,
            app_id: app_id.to_string(),
            config: config.to_string(),
            payload,
            count,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return Err(StoreError("the Redis appender stopped".to_string()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError("the Redis appender stopped".to_string())))
    }
}

/// One inbox entry being assembled from several requests.
struct Entry {
    partition: u32,
    app_id: String,
    config: String,
    payload: String,
    count: usize,
    replies: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

async fn rounds(conn: Conn, failing: Arc<Mutex<Option<String>>>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let entries = assemble(jobs);
        // One pipeline per partition (one slot, so a cluster takes it
        // whole), all in flight at once.
        let mut partitions: Vec<u32> = entries.iter().map(|e| e.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let sends = partitions.iter().map(|&partition| {
            let mut pipe = redis::pipe();
            let keys = PartitionKeys::new(partition);
            for entry in entries.iter().filter(|e| e.partition == partition) {
                pipe.cmd("XADD")
                    .arg(&keys.inbox)
                    .arg("*")
                    .arg("k")
                    .arg("e")
                    .arg("a")
                    .arg(&entry.app_id)
                    .arg("n")
                    .arg(entry.count)
                    .arg("v")
                    .arg(&entry.config)
                    .arg("e")
                    .arg(&entry.payload);
                // The partition's traffic, for balancing the nodes' work.
                pipe.cmd("INCRBY").arg(&keys.accepted).arg(entry.count).ignore();
            }
            let mut conn = conn.clone();
            async move {
                let result: redis::RedisResult<Vec<String>> = pipe.query_async(&mut conn).await;
                (partition, result.map(drop))
            }
        });
        let results: HashMap<u32, redis::RedisResult<()>> =
            futures_util::future::join_all(sends).await.into_iter().collect();
        let mut failed = None;
        for result in results.values() {
            if let Err(error) = result {
                failed = Some(format!("redis: {error}"));
            }
        }
        *failing.lock().expect("failing lock") = failed;
        for entry in entries {
            let answer = match &results[&entry.partition] {
                Ok(()) => Ok(()),
                Err(error) => Err(crate::store_error(error)),
            };
            for reply in entry.replies {
                let _ = reply.send(answer.clone());
            }
        }
    }
}

/// Joins consecutive requests for the same app and config, in arrival
/// order per app, into entries of at most `MAX_ENTRY_EVENTS` events.
fn assemble(jobs: Vec<Job>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut open: HashMap<(u32, String, String), usize> = HashMap::new();
    for job in jobs {
        let key = (job.partition, job.app_id, job.config);
        match open.get(&key) {
            Some(&i) if entries[i].count + job.count <= MAX_ENTRY_EVENTS => {
                let entry = &mut entries[i];
                entry.payload.push(',');
                entry.payload.push_str(&job.payload);
                entry.count += job.count;
                entry.replies.push(job.reply);
            }
            _ => {
                open.insert(key.clone(), entries.len());
                let (partition, app_id, config) = key;
                entries.push(Entry {
                    partition,
                    app_id,
                    config,
                    payload: job.payload,
                    count: job.count,
                    replies: vec![job.reply],
                });
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(app: &str, payload: &str, count: usize) -> (Job, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            partition: 0,
            app_id: app.to_string(),
            config: "v".to_string(),
            payload: payload.to_string(),
            count,
            reply,
        };
        (job, answer)
    }

    #[test]
    fn requests_for_one_app_join_in_order_and_others_stay_apart() {
        let (a1, _r1) = job("a", "1", 1);
        let (b1, _r2) = job("b", "x", 1);
        let (a2, _r3) = job("a", "2,3", 2);
        let entries = assemble(vec![a1, b1, a2]);
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].payload.as_str(), entries[0].count), ("1,2,3", 3));
        assert_eq!(entries[0].replies.len(), 2);
        assert_eq!(entries[1].payload, "x");
    }

    #[test]
    fn an_entry_stops_growing_at_the_event_cap() {
        let (a1, _r1) = job("a", "1", MAX_ENTRY_EVENTS);
        let (a2, _r2) = job("a", "2", 1);
        let entries = assemble(vec![a1, a2]);
        assert_eq!(entries.len(), 2);
    }
}
