//! Durability end to end: kill -9 under load, a receiver down across a
//! restart, dead letters and `hookline dlq`, the circuit breaker, a full
//! disk, and a damaged store file.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

fn options(data: &Path, env: &[(&str, &str)]) -> DaemonOptions {
    DaemonOptions {
        data_dir: Some(data.to_path_buf()),
        ..DaemonOptions::with_env(env)
    }
}

/// Where the daemons of a test keep their backlog.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Embedded,
    Redis,
}

/// The store a test runs on: the embedded one in the data directory, or a
/// Redis of its own (one node; a restarted daemon takes the partitions
/// back once the dead one's leases run out).
struct StoreUnderTest {
    redis: Option<RedisServer>,
}

impl StoreUnderTest {
    fn new(backend: Backend) -> Self {
        Self {
            redis: matches!(backend, Backend::Redis).then(RedisServer::start),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        self.redis.as_ref().map(|r| r.daemon_env("node")).unwrap_or_default()
    }

    fn options(&self, data: &Path, env: &[(&str, &str)]) -> DaemonOptions {
        let mut options = options(data, env);
        options.env.extend(self.env());
        options
    }

    /// `hookline dlq` with this store's settings.
    fn dlq(&self, data: &Path, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(hookline_bin())
            .arg("dlq")
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .envs(self.env())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn dlq_letters(&self, data: &Path) -> Vec<serde_json::Value> {
        let (ok, out, err) = self.dlq(data, &["list", "--json"]);
        assert!(ok, "dlq list failed: {err}");
        let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
        answer["letters"].as_array().unwrap().clone()
    }
}

/// Runs a test on the embedded store and on Redis.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name(super::Backend::Embedded).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$name(super::Backend::Redis).await
            }
        }
    )*};
}

on_both_stores!(
    kill_9_under_load_loses_nothing_that_got_a_2xx,
    a_receiver_down_across_a_restart_gets_everything_when_back,
    dead_letters_are_listed_shown_replayed_and_purged,
    a_failing_endpoint_opens_its_circuit_which_closes_by_itself,
    memory_durability_accepts_delivers_and_keeps_what_waits_across_a_restart,
    the_grace_period_bounds_shutdown_and_what_is_left_resumes,
    kill_9_in_memory_mode_loses_only_the_last_moments,
);

/// App `a` (key `ka`, secret `sa`), batching off, one webhook at `/h`.
const ONE_WEBHOOK_UNBATCHED: &str = r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
    "webhooks": [{"url": "RECEIVER/h", "event_types": ["channel_occupied", "client_event"]}]}"#;

/// Every event channel a receiver got, with the batch ids it came in.
fn channels_by_batch(received: &[Received]) -> HashMap<String, HashSet<String>> {
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for r in received {
        let batch_id = r.header("x-hookline-batch-id").to_string();
        for event in r.json()["events"].as_array().unwrap() {
            let channel = event["channel"].as_str().unwrap().to_string();
            seen.entry(channel).or_default().insert(batch_id.clone());
        }
    }
    seen
}

/// POSTs a signed native request; `None` when the daemon is unreachable.
async fn try_native(url: &str, app: &str, key: &str, secret: &str, body: &str) -> Option<u16> {
    let response = post_native(url, app, key, secret, body).await.ok()?;
    Some(response.status().as_u16())
}

async fn kill_9_under_load_loses_nothing_that_got_a_2xx(backend: Backend) {
    kill_9_under_load(backend, &[], None).await;
}

/// `durability = "memory"` answers before the write, so a kill -9 may lose
/// what the daemon had not yet handed to the kernel (the store journals
/// each group without a flush: a killed process loses nothing written).
/// That is the last moments before the kill; every event acknowledged
/// longer ago than `MEMORY_LOSS_BOUND` arrives, none under two batch ids.
async fn kill_9_in_memory_mode_loses_only_the_last_moments(backend: Backend) {
    kill_9_under_load(
        backend,
        &[("HOOKLINE_INGEST_DURABILITY", "memory")],
        Some(MEMORY_LOSS_BOUND),
    )
    .await;
}

/// Far more than the writer holds a request back (5 ms) and gathers (1 ms),
/// however loaded the machine: a bound on the loss, not a timing.
const MEMORY_LOSS_BOUND: Duration = Duration::from_secs(1);

/// Five rounds of load, each ended by a kill -9 at a pseudo-random moment,
/// then one start: every acknowledged event arrives (except, with
/// `may_lose`, those acknowledged within that long before a kill), and
/// none under two batch ids.
async fn kill_9_under_load(backend: Backend, env: &[(&str, &str)], may_lose: Option<Duration>) {
    let store = StoreUnderTest::new(backend);
    let receiver = Receiver::start().await;
    // Requests of three events against batches of seven: batches straddle
    // requests, so the inbox is released part by part.
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 10, "max_events": 7},
             "webhooks": [{"url": "RECEIVER/h", "event_types": ["channel_occupied", "client_event"]}]}"#,
    );
    let data = tempfile::tempdir().unwrap();
    // Each acknowledged event's channel, with when it was acknowledged.
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut kills = Vec::new();
    let next = Arc::new(AtomicU64::new(0));
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    eprintln!("kill moments seed: {seed}");
    for round in 0..5u64 {
        let daemon = Daemon::start_with(apps.path(), store.options(data.path(), env));
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (url, stop, acked, next) = (daemon.url(), stop.clone(), acked.clone(), next.clone());
            load.push(tokio::spawn(async move {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(3, Ordering::Relaxed);
                    let channels: Vec<String> = (n..n + 3).map(|i| format!("c-{i}")).collect();
                    let events: Vec<(&str, &str)> = channels.iter().map(|c| ("channel_occupied", c.as_str())).collect();
                    if try_native(&url, "a", "ka", "sa", &events_body(&events)).await == Some(200) {
                        let now = Instant::now();
                        acked.lock().unwrap().extend(channels.into_iter().map(|c| (c, now)));
                        sent += 1;
                    }
                }
                sent
            }));
        }
        // Once requests are being accepted (however long a loaded machine
        // takes to get there), a pseudo-random moment up to 500 ms later.
        let accepted_before = acked.lock().unwrap().len();
        let deadline = Instant::now() + PATIENCE;
        while acked.lock().unwrap().len() == accepted_before {
            assert!(Instant::now() < deadline, "round {round}: no request was accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // With a loss allowed, long enough that most of the round's events
        // are older than it at the kill.
        let wait = (seed.wrapping_mul(round * 2 + 1).wrapping_add(round * 7919)) % 500;
        let least = may_lose.map_or(Duration::ZERO, |window| window * 2);
        tokio::time::sleep(least + Duration::from_millis(wait)).await;
        drop(daemon); // SIGKILL
        // After the kill: every answer came before it.
        kills.push(Instant::now());
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for task in load {
            sent += task.await.unwrap();
        }
        assert!(sent > 0, "round {round}: no request was accepted before the kill");
    }
    // What must arrive: with `may_lose`, not what was acknowledged within
    // that long before the first kill that came after it.
    let all = acked.lock().unwrap().len();
    let acked: HashSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| {
            may_lose.is_none_or(|window| {
                kills
                    .iter()
                    .find(|kill| *kill >= *at)
                    .is_none_or(|kill| kill.duration_since(**at) >= window)
            })
        })
        .map(|(channel, _)| channel.clone())
        .collect();
    assert!(
        acked.len() * 3 > all,
        "a third of the acknowledged events at least must be owed: {} of {all}",
        acked.len()
    );
    let daemon = Daemon::start_with(apps.path(), store.options(data.path(), env));
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let seen = channels_by_batch(&receiver.on("/h"));
        let missing: Vec<&String> = acked.iter().filter(|c| !seen.contains_key(*c)).collect();
        if missing.is_empty() {
            let mixed: Vec<_> = seen.iter().filter(|(_, ids)| ids.len() > 1).collect();
            assert!(
                mixed.is_empty(),
                "an event was delivered again under another batch id: {mixed:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never arrived, e.g. {:?}; logs:\n{}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)],
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_officially_valid("ka", "sa", &receiver.on("/h")[..20.min(receiver.on("/h").len())]);
}

async fn a_receiver_down_across_a_restart_gets_everything_when_back(backend: Backend) {
    let store = StoreUnderTest::new(backend);
    let down = free_addr();
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        &format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"enabled": false}},
                 "webhooks": [{{"url": "http://{down}/h", "event_types": ["channel_occupied"], "retry": {{"min_backoff_ms": 20, "max_backoff_ms": 100}}}}]}}"#
        ),
    );
    let data = tempfile::tempdir().unwrap();
    // A memory budget of one byte: every waiting batch keeps its events only
    // on disk, and a restart reads none of them back until their attempt.
    let env = [
        ("HOOKLINE_SHUTDOWN_GRACE_MS", "300"),
        ("HOOKLINE_DELIVERY_MAX_MEMORY_BYTES", "1"),
    ];
    let mut daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    let channels: Vec<String> = (0..10).map(|i| format!("down-{i}")).collect();
    for channel in &channels {
        let body = events_body(&[("channel_occupied", channel)]);
        assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    }
    // Attempts failed until the circuit opened.
    daemon.wait_metric(&attempts("http", "retry"), 5.0).await;
    daemon
        .wait_metric(
            &format!(r#"hookline_circuit_state{{app="a",webhook="http://{down}/h"}}"#),
            2.0,
        )
        .await;
    // The budget is visible: waiting batches went to disk only.
    assert!(
        daemon.metric("hookline_batches_spilled_total").await >= 1.0,
        "no batch spilled; logs:\n{}",
        daemon.logs()
    );
    daemon.signal("TERM");
    let (status, daemon) = tokio::task::spawn_blocking(move || (daemon.wait(), daemon))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}; logs:\n{}", daemon.logs());
    assert!(daemon.logs().contains("resume at the next start"), "{}", daemon.logs());

    let receiver = Receiver::start_on(down).await;
    let daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    let got = receiver.wait_for_events("/h", channels.len()).await;
    let seen = channels_by_batch(&got);
    for channel in &channels {
        assert!(seen.contains_key(channel), "{channel} never arrived");
    }
    assert_officially_valid("ka", "sa", &got);
    drop(daemon);
}

async fn dead_letters_are_listed_shown_replayed_and_purged(backend: Backend) {
    let store = StoreUnderTest::new(backend);
    let receiver = Receiver::start().await;
    receiver.script("/h", vec![Reply::status(400)]);
    receiver.script("/gone", vec![Reply::status(410)]);
    let apps = AppsDir::new();
    let config = |with_gone: bool| {
        let gone = r#",{"id": "gone", "url": "RECEIVER/gone", "event_types": ["channel_vacated"]}"#;
        format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"enabled": false}},
                 "webhooks": [{{"id": "main", "url": "RECEIVER/h", "event_types": ["channel_occupied"]}}{}]}}"#,
            if with_gone { gone } else { "" }
        )
        .replace("RECEIVER", &receiver.url(""))
    };
    apps.write("a.json", &config(true));
    let data = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with(apps.path(), store.options(data.path(), &[]));
    let body = events_body(&[("channel_occupied", "room-1"), ("channel_vacated", "room-2")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    daemon.wait_metric(&attempts("http", "dead_letter"), 2.0).await;
    daemon.wait_metric("hookline_dead_letters", 2.0).await;
    let first = receiver.on("/h").remove(0);
    let id = first.header("x-hookline-batch-id").to_string();

    // What users need to decide: id, app, webhook, status, reason.
    let (ok, list, err) = store.dlq(data.path(), &["list"]);
    assert!(ok, "{err}");
    // The columns README lists.
    assert!(
        list.starts_with("ID\tAPP\tWEBHOOK\tEVENTS\tATTEMPTS\tLAST STATUS\tAGE\tREASON\n"),
        "{list}"
    );
    let line = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in:\n{list}"));
    for part in ["\ta\t", "\tmain\t", "\t400\t", "answered 400"] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    let (ok, shown, err) = store.dlq(data.path(), &["show", &id]);
    assert!(ok, "{err}");
    for part in ["attempts:    1", "last status: 400", "status 400", "\"room-1\""] {
        assert!(shown.contains(part), "{part:?} missing from:\n{shown}");
    }

    // Replay: same batch id and events, re-stamped, re-signed.
    let (ok, out, err) = store.dlq(data.path(), &["replay", &id]);
    assert!(ok, "{out}{err}");
    let again = receiver.wait_for("/h", 2).await;
    assert_eq!(again[1].header("x-hookline-batch-id"), id);
    assert_eq!(again[1].json()["events"], first.json()["events"]);
    assert!(again[1].json()["time_ms"].as_u64() > first.json()["time_ms"].as_u64());
    assert_officially_valid("ka", "sa", &again);
    let letters = store.dlq_letters(data.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["webhook_id"], "gone");

    // A replay whose webhook is gone is an error, and the letter stays.
    let generation = readyz(&daemon).await["generation"].as_u64().unwrap();
    apps.write("a.json", &config(false));
    wait_ready(&daemon, "reload", |s| s["generation"].as_u64() > Some(generation)).await;
    let (ok, _, err) = store.dlq(data.path(), &["replay", "--all"]);
    assert!(!ok);
    assert!(err.contains("has no webhook \"gone\""), "{err}");
    assert_eq!(store.dlq_letters(data.path()).len(), 1);

    // Without a daemon, the CLI works on the store itself.
    daemon.signal("TERM");
    let (status, _daemon) = tokio::task::spawn_blocking(move || (daemon.wait(), daemon))
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(store.dlq_letters(data.path()).len(), 1);
    let (ok, out, err) = store.dlq(data.path(), &["purge", "--app", "a"]);
    assert!(ok, "{out}{err}");
    assert!(store.dlq_letters(data.path()).is_empty());
}

async fn a_failing_endpoint_opens_its_circuit_which_closes_by_itself(backend: Backend) {
    let store = StoreUnderTest::new(backend);
    let receiver = Receiver::start().await;
    receiver.script("/h", vec![Reply::status(503); 4]);
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
             "webhooks": [{"id": "w", "url": "RECEIVER/h", "event_types": ["channel_occupied"], "retry": {"min_backoff_ms": 5, "max_backoff_ms": 10}}]}"#,
    );
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("HOOKLINE_DELIVERY_CIRCUIT_FAILURES", "3"),
        ("HOOKLINE_DELIVERY_CIRCUIT_OPEN_MS", "400"),
    ];
    let daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    assert_eq!(
        native(&daemon, "a", "ka", "sa", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    let state = r#"hookline_circuit_state{app="a",webhook="w"}"#;
    daemon.wait_metric(state, 2.0).await;
    daemon.wait_metric(&attempts("http", "success"), 1.0).await;
    assert_eq!(daemon.metric(state).await, 0.0, "closed again");
    let got = receiver.on("/h");
    assert_eq!(got.len(), 5, "three failures, a failed probe, a good probe");
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[2] >= Duration::from_millis(400), "paused while open: {gaps:?}");
    assert!(
        gaps[3] >= Duration::from_millis(800),
        "twice as long after a failed probe: {gaps:?}"
    );
    assert!(daemon.logs().contains("circuit open"), "{}", daemon.logs());
}

/// A small tmpfs, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs failed: this test fills a real small filesystem and needs root"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                return path;
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_loses_nothing_and_service_resumes() {
    let fs = SmallFs::mount("16m");
    let receiver = Receiver::start().await;
    let apps = receiver.apps(ONE_WEBHOOK_UNBATCHED);
    let daemon = Daemon::start_with(apps.path(), options(&fs.path().join("data"), &[]));
    let padding = "x".repeat(32 * 1024);
    let body = |n: usize| {
        serde_json::json!({"events": [{"name": "client_event", "channel": format!("full-{n}"),
            "event": "client-x", "data": padding}]})
        .to_string()
    };
    let mut acked = Vec::new();
    assert_eq!(native(&daemon, "a", "ka", "sa", &body(0)).await.0, 200);
    acked.push("full-0".to_string());

    let filler = fs.fill();
    let mut refusal = None;
    for n in 1..400 {
        let (status, text) = native(&daemon, "a", "ka", "sa", &body(n)).await;
        match status {
            200 => acked.push(format!("full-{n}")),
            503 => {
                refusal = Some(text);
                break;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    let refusal = refusal.expect("a full disk must make ingest answer 503");
    assert!(refusal.contains("could not be stored"), "{refusal}");
    assert!(refusal.contains("No space left"), "{refusal}");
    let status = readyz(&daemon).await;
    assert_eq!(status["ready"], false, "{status}");
    assert!(status["store"].as_str().unwrap().contains("No space left"), "{status}");

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut n = 1000;
    loop {
        let (status, _) = native(&daemon, "a", "ka", "sa", &body(n)).await;
        if status == 200 {
            acked.push(format!("full-{n}"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest never recovered; logs:\n{}",
            daemon.logs()
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver
        .wait_until(|got| {
            let seen = channels_by_batch(got);
            acked.iter().all(|c| seen.contains_key(c))
        })
        .await;
    assert_eq!(readyz(&daemon).await["store"], "ok");
    drop(daemon);
}

#[tokio::test]
async fn a_damaged_store_is_refused_at_start_with_a_clear_error() {
    let receiver = Receiver::start().await;
    receiver.script("/h", vec![Reply::status(503); 1000]);
    let apps = receiver.apps(ONE_WEBHOOK_UNBATCHED);
    let data = tempfile::tempdir().unwrap();
    let env = [("HOOKLINE_SHUTDOWN_GRACE_MS", "100")];
    let mut daemon = Daemon::start_with(apps.path(), options(data.path(), &env));
    let marker = "marker-for-the-damage-test";
    let body = events_body(&[("channel_occupied", marker)]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    daemon.wait_metric(&attempts("http", "retry"), 1.0).await;
    daemon.signal("TERM");
    let (status, _daemon) = tokio::task::spawn_blocking(move || (daemon.wait(), daemon))
        .await
        .unwrap();
    assert!(status.success());

    let store = data.path().join("store.redb");
    let mut bytes = std::fs::read(&store).unwrap();
    let mut flipped = 0;
    for at in 0..bytes.len().saturating_sub(marker.len()) {
        if bytes[at..].starts_with(marker.as_bytes()) {
            bytes[at] ^= 0x20;
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the pending event is in the store file");
    std::fs::write(&store, &bytes).unwrap();

    let mut child = Command::new(hookline_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--apps"])
        .arg(apps.path())
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hookline served from a damaged store");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(stderr.contains(&store.display().to_string()), "{stderr}");
    assert!(stderr.contains("move the file aside"), "{stderr}");
    // The file keeps what it held, for recovery.
    let after = std::fs::read(&store).unwrap();
    assert_eq!(after.len(), bytes.len(), "the damaged file keeps its size");
    let mut damaged = marker.as_bytes().to_vec();
    damaged[0] ^= 0x20;
    let kept = after
        .windows(damaged.len())
        .filter(|w| *w == damaged.as_slice())
        .count();
    assert_eq!(kept, flipped, "the damaged records are still in the file");
}

/// Without a daemon, a replay waits in the store for the next start; then
/// it is signed with the app's current (rotated) secret, keeps its batch id,
/// and gets a fresh retry window (its first one ran out long ago).
#[tokio::test]
async fn an_offline_replay_waits_for_the_next_start_and_is_resigned_with_a_fresh_window() {
    let receiver = Receiver::start().await;
    receiver.script("/h", vec![Reply::status(400)]);
    let apps = AppsDir::new();
    let config = |secret: &str| {
        format!(
            r#"{{"id": "a", "key": "ka", "secret": "{secret}", "batching": {{"enabled": false}},
                 "webhooks": [{{"id": "main", "url": "{}", "event_types": ["channel_occupied"],
                                "retry": {{"max_age_ms": 3000, "min_backoff_ms": 50, "max_backoff_ms": 100}}}}]}}"#,
            receiver.url("/h")
        )
    };
    apps.write("a.json", &config("old-secret"));
    let data = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with(apps.path(), options(data.path(), &[]));
    let body = events_body(&[("channel_occupied", "room-1")]);
    assert_eq!(native(&daemon, "a", "ka", "old-secret", &body).await.0, 200);
    daemon.wait_metric("hookline_dead_letters", 1.0).await;
    let id = receiver.on("/h")[0].header("x-hookline-batch-id").to_string();
    daemon.signal("TERM");
    let (status, _daemon) = tokio::task::spawn_blocking(move || (daemon.wait(), daemon))
        .await
        .unwrap();
    assert!(status.success());

    // The secret is rotated, and the batch's first retry window runs out.
    apps.write("a.json", &config("new-secret"));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let args = ["replay", id.as_str(), "--apps", apps.path().to_str().unwrap()];
    let (ok, out, err) = dlq(data.path(), &args);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("queued in the store; the daemon sends them when it starts"),
        "{out}"
    );
    assert_eq!(receiver.on("/h").len(), 1, "nothing is sent without a daemon");

    // At the next start: one failure is retried (a fresh window), then it
    // is delivered, signed with the new secret.
    receiver.script("/h", vec![Reply::status(503)]);
    let daemon = Daemon::start_with(apps.path(), options(data.path(), &[]));
    let got = receiver.wait_for("/h", 3).await;
    for attempt in &got[1..] {
        assert_eq!(attempt.header("x-hookline-batch-id"), id);
    }
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="http",outcome="success"}"#,
            1.0,
        )
        .await;
    assert_officially_valid("ka", "new-secret", &got[2..]);
    assert!(dlq_letters(data.path()).is_empty());
}

/// `durability = "memory"`: answered before the disk write, but still
/// written: what waits at a clean stop is delivered after the restart.
async fn memory_durability_accepts_delivers_and_keeps_what_waits_across_a_restart(backend: Backend) {
    let store = StoreUnderTest::new(backend);
    let receiver = Receiver::start().await;
    receiver.by_default("/h", Reply::status(503));
    let apps = receiver.apps(ONE_WEBHOOK_UNBATCHED);
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("HOOKLINE_INGEST_DURABILITY", "memory"),
        ("HOOKLINE_SHUTDOWN_GRACE_MS", "100"),
    ];
    let mut daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    for i in 0..5 {
        let body = events_body(&[("channel_occupied", &format!("m-{i}"))]);
        assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    }
    daemon.wait_metric(&attempts("http", "retry"), 5.0).await;
    daemon.signal("TERM");
    let (status, _daemon) = tokio::task::spawn_blocking(move || (daemon.wait(), daemon))
        .await
        .unwrap();
    assert!(status.success());

    receiver.by_default("/h", Reply::status(200));
    let daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    let got = receiver.wait_until(|all| {
        (0..5).all(|i| {
            all.iter()
                .any(|r| r.status_ok() && r.body.contains(&format!("\"m-{i}\"")))
        })
    });
    got.await;
    drop(daemon);
}

/// SIGTERM gives in-flight deliveries `shutdown.grace_ms`, not more: an
/// attempt the receiver would answer in 30 s does not hold the exit, and
/// its batch is sent again (same batch id) after the restart.
async fn the_grace_period_bounds_shutdown_and_what_is_left_resumes(backend: Backend) {
    let store = StoreUnderTest::new(backend);
    let receiver = Receiver::start().await;
    receiver.script("/h", vec![Reply::status(200).after(Duration::from_secs(30))]);
    let apps = receiver.apps(ONE_WEBHOOK_UNBATCHED);
    let data = tempfile::tempdir().unwrap();
    let env = [("HOOKLINE_SHUTDOWN_GRACE_MS", "300")];
    let mut daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    let body = events_body(&[("channel_occupied", "slow")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    let first = receiver.wait_for("/h", 1).await;
    daemon.signal("TERM");
    let (status, daemon) = tokio::task::spawn_blocking(move || (daemon.wait(), daemon))
        .await
        .unwrap();
    assert!(status.success());
    assert!(daemon.logs().contains("grace period over"), "{}", daemon.logs());

    let _daemon = Daemon::start_with(apps.path(), store.options(data.path(), &env));
    let again = receiver.wait_for("/h", 2).await;
    assert_eq!(
        again[1].header("x-hookline-batch-id"),
        first[0].header("x-hookline-batch-id")
    );
}

/// Bulk dead-letter work (`hookline dlq`, contract §7): of 10 000 dead
/// letters, the ones whose reason and time window match are picked out — a
/// dry run says how many and touches nothing — and replayed at the rate
/// asked for, while the rest stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_dead_letters_are_filtered_and_replayed_at_the_rate_asked() {
    const RATE: usize = 500;
    let receiver = Receiver::start().await;
    receiver.by_default("/gone", Reply::status(410));
    receiver.by_default("/bad", Reply::status(400));
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false}, "webhooks": [
            {"url": "RECEIVER/gone", "event_types": ["channel_occupied"]},
            {"url": "RECEIVER/bad", "event_types": ["channel_vacated"]}]}"#,
    );
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(apps.path(), options(data.path(), &[]));
    // Two waves of 5 000 letters: 3 000 answered 410, 2 000 answered 400.
    let wave = async |first: usize| {
        for start in (first..first + 5_000).step_by(10) {
            let events: Vec<(&str, String)> = (start..start + 10)
                .map(|i| {
                    (
                        if i % 5 < 3 {
                            "channel_occupied"
                        } else {
                            "channel_vacated"
                        },
                        format!("c-{i}"),
                    )
                })
                .collect();
            let events: Vec<(&str, &str)> = events.iter().map(|(n, c)| (*n, c.as_str())).collect();
            assert_eq!(native(&daemon, "a", "ka", "sa", &events_body(&events)).await.0, 200);
        }
    };
    wave(0).await;
    daemon.wait_metric("hookline_dead_letters", 5_000.0).await;
    let between = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 1;
    wave(5_000).await;
    daemon.wait_metric("hookline_dead_letters", 10_000.0).await;
    let until = between.to_string();
    let pick = ["--reason", "answered 410", "--until", until.as_str()];

    let (ok, out, err) = dlq(data.path(), &[&["replay", "--dry-run"][..], &pick].concat());
    assert!(ok, "{err}");
    assert!(out.contains("3000 dead letters would be touched"), "{out}");
    assert_eq!(dlq_letters(data.path()).len(), 10_000, "a dry run touched letters");

    receiver.by_default("/gone", Reply::status(200));
    let rate = RATE.to_string();
    let (ok, out, err) = dlq(data.path(), &[&["replay", "--rate", rate.as_str()][..], &pick].concat());
    assert!(ok, "{err}");
    assert!(out.contains("3000 dead letters: done"), "{out}");
    let got = receiver.wait_for("/gone", 6_000 + 3_000).await;
    let replayed: Vec<Received> = got.into_iter().filter(|r| r.status_ok()).collect();
    assert_eq!(replayed.len(), 3_000);
    let channels: HashSet<String> = replayed
        .iter()
        .map(|r| r.json()["events"][0]["channel"].as_str().unwrap().to_string())
        .collect();
    assert!(
        channels.iter().all(|c| c[2..].parse::<usize>().unwrap() < 5_000),
        "a letter of the second wave was replayed"
    );
    let first = replayed.iter().map(|r| r.at).min().unwrap();
    let last = replayed.iter().map(|r| r.at).max().unwrap();
    let spread = last - first;
    assert!(
        spread >= Duration::from_millis(2_999 * 1_000 / RATE as u64 - 200),
        "3 000 letters at {RATE}/s arrived within {spread:?}"
    );
    for (second, count) in arrivals_per_second(&replayed, first, spread.as_secs() as usize)
        .iter()
        .enumerate()
    {
        assert!(
            *count <= RATE + RATE / 10,
            "second {second} of the replay brought {count} letters, over {RATE}/s"
        );
    }
    daemon.wait_idle().await;
    assert_eq!(
        dlq_letters(data.path()).len(),
        7_000,
        "the letters outside the filter stay"
    );
}

/// Retention (contract §2 `dead_letters`): an app with `max_count: 3`
/// keeps its three newest dead letters; an app with `max_age_ms` loses its
/// letters once they are that old, and a daemon stopped meanwhile deletes
/// them when it starts again. Each deletion is counted by cause.
#[tokio::test]
async fn dead_letters_past_their_apps_max_age_or_max_count_are_deleted_even_across_a_restart() {
    // Long enough that a busy machine stops the first daemon before the
    // aged letters are due.
    const MAX_AGE: Duration = Duration::from_secs(4);
    let receiver = Receiver::start().await;
    receiver.by_default("/counted", Reply::status(400));
    receiver.by_default("/aged", Reply::status(400));
    let apps = receiver.apps(&format!(
        r#"[{{"id": "counted", "key": "kc", "secret": "sc", "batching": {{"enabled": false}},
             "dead_letters": {{"max_count": 3}},
             "webhooks": [{{"url": "RECEIVER/counted", "event_types": ["channel_occupied"]}}]}},
            {{"id": "aged", "key": "ka", "secret": "sa", "batching": {{"enabled": false}},
             "dead_letters": {{"max_age_ms": {}}},
             "webhooks": [{{"url": "RECEIVER/aged", "event_types": ["channel_occupied"]}}]}}]"#,
        MAX_AGE.as_millis()
    ));
    let data = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with(apps.path(), options(data.path(), &[]));
    for i in 0..5 {
        let body = events_body(&[("channel_occupied", &format!("c-{i}"))]);
        assert_eq!(native(&daemon, "counted", "kc", "sc", &body).await.0, 200);
        // One at a time, so "the oldest" is well defined.
        receiver.wait_for("/counted", i + 1).await;
    }
    for i in 0..2 {
        let body = events_body(&[("channel_occupied", &format!("a-{i}"))]);
        assert_eq!(native(&daemon, "aged", "ka", "sa", &body).await.0, 200);
    }
    daemon
        .wait_metric(r#"hookline_dead_letters_expired_total{cause="count"}"#, 2.0)
        .await;
    daemon.wait_metric("hookline_dead_letters", 5.0).await;
    let died = Instant::now();
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let letters = dlq_letters(data.path());
    assert_eq!(
        letters.iter().filter(|l| l["app_id"] == "aged").count(),
        2,
        "the aged letters went before the restart"
    );
    let kept: Vec<String> = letters
        .iter()
        .filter(|l| l["app_id"] == "counted")
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    let newest: Vec<String> = receiver.on("/counted")[2..]
        .iter()
        .map(|r| r.header("x-hookline-batch-id").to_string())
        .collect();
    assert_eq!(kept, newest, "max_count kept other than the three newest");
    // What is tested is time passing while no daemon runs.
    if let Some(left) = MAX_AGE.checked_sub(died.elapsed()) {
        std::thread::sleep(left + Duration::from_millis(100));
    }
    let daemon = Daemon::start_with(apps.path(), options(data.path(), &[]));
    daemon
        .wait_metric(r#"hookline_dead_letters_expired_total{cause="age"}"#, 2.0)
        .await;
    daemon.wait_metric("hookline_dead_letters", 3.0).await;
    drop(daemon);
    assert!(dlq_letters(data.path()).iter().all(|l| l["app_id"] == "counted"));
}
