//! The nats sink end to end, against Debian's `nats-server` (one per test,
//! with JetStream, its own store directory and a free port), consumed with
//! async-nats and verified with the official Pusher library.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use serde_json::{Value, json};
use support::*;

/// A `nats-server` with JetStream on 127.0.0.1, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The JetStream store and the server's log.
    dir: tempfile::TempDir,
    /// A configuration file's text, when the server needs one.
    config: Option<String>,
    /// Whether it runs JetStream (`-js`).
    jetstream: bool,
}

impl NatsServer {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server with this configuration file (`max_payload`,
    /// `authorization`), when given.
    fn start_with(config: Option<String>) -> Self {
        Self::start_configured(config, true)
    }

    /// A core-NATS-only server: no JetStream.
    fn start_without_jetstream() -> Self {
        Self::start_configured(None, false)
    }

    fn start_configured(config: Option<String>, jetstream: bool) -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut server = Self {
                child: None,
                port,
                dir,
                config: config.clone(),
                jetstream,
            };
            if server.spawn() {
                return server;
            }
            dir = server.into_dir();
        }
        panic!("nats-server did not start on any of 10 free ports");
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        self.stop_now();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Starts the process on `self.port` with `self.dir` as its store and
    /// waits until it accepts connections; false if it exited (port taken).
    fn spawn(&mut self) -> bool {
        // A fresh log: readiness is read from it.
        let _ = std::fs::remove_file(self.log_path());
        let mut command = Command::new("nats-server");
        if self.jetstream {
            command.arg("-js");
        }
        command
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-l")
            .arg(self.log_path());
        if let Some(text) = &self.config {
            let config = self.dir.path().join("server.conf");
            std::fs::write(&config, text).unwrap();
            command.arg("-c").arg(config);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nats-server: {e}; run scripts/setup-tests.sh"));
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("nats-server exited with {status}: {}", self.log());
                self.child = None;
                return false;
            }
            if self.log().contains("Server is ready") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nats-server did not get ready: {}", self.log());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM, as an operator would) and waits for it.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "nats-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and store.
    fn restart(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        // The port may still be held for a moment after the stop.
        while !self.spawn() {
            assert!(Instant::now() < deadline, "nats-server did not restart: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.unwrap()
    }

    async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Creates a stream capturing `subjects`, retrying while JetStream starts.
async fn create_stream(js: &jetstream::Context, config: stream::Config) -> stream::Stream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match js.create_stream(config.clone()).await {
            Ok(stream) => return stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot create stream {}: {e}", config.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn stream_config(name: &str, subject: &str) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        ..Default::default()
    }
}

/// A NATS message as the Pusher verifiers read a delivery.
fn received(subject: &str, headers: Option<&async_nats::HeaderMap>, payload: &[u8]) -> Received {
    let mut map = BTreeMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            assert_eq!(values.len(), 1, "header {name} is set once");
            map.insert(name.to_string().to_ascii_lowercase(), values[0].to_string());
        }
    }
    Received {
        path: subject.to_string(),
        headers: map,
        body: String::from_utf8(payload.to_vec()).unwrap(),
        at: Instant::now(),
        answered: 200,
    }
}

/// Every message in a stream, in order.
async fn stream_messages(js: &jetstream::Context, name: &str) -> Vec<Received> {
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            out.push(received(&message.subject, Some(&message.headers), &message.payload));
        }
    }
    out
}

/// Waits until the stream holds at least `count` messages; returns them all.
async fn wait_for_messages(js: &jetstream::Context, name: &str, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let messages = stream_messages(js, name).await;
        if messages.len() >= count {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} holds {} messages, wanted {count}",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The events of every message, in order.
fn all_events(messages: &[Received]) -> Vec<Value> {
    messages
        .iter()
        .flat_map(|m| m.json()["events"].as_array().unwrap().clone())
        .collect()
}

fn assert_npm_valid(key: &str, secret: &str, messages: &[Received]) {
    assert!(!messages.is_empty());
    for (message, verdict) in messages.iter().zip(verify_with_npm(key, secret, messages)) {
        assert_eq!(verdict["valid"], true, "npm pusher refused {message:#?}");
        assert_eq!(verdict["restringify_equal"], true, "{message:#?}");
    }
}

/// A body of `n` events named `name` whose data are `tag-0`, `tag-1`, …
fn numbered_events(name: &str, tag: &str, from: usize, n: usize, pad: usize) -> String {
    let events: Vec<Value> = (from..from + n)
        .map(|i| json!({"name": name, "channel": "c", "data": format!("{tag}-{i}{}", "x".repeat(pad))}))
        .collect();
    json!({ "events": events }).to_string()
}

fn event_tag(event: &Value) -> String {
    event["data"].as_str().unwrap().trim_end_matches('x').to_string()
}

fn fast_retry(max_attempts: u64) -> Value {
    json!({"min_backoff_ms": 100, "max_backoff_ms": 500, "max_attempts": max_attempts})
}

#[tokio::test]
async fn signed_batches_reach_a_jetstream_stream_and_core_subscribers() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, stream_config("HOOKS", "hooks.js")).await;
    let watcher = server.client().await;
    let mut core = watcher.subscribe("hooks.core").await.unwrap();
    watcher.flush().await.unwrap();

    let apps = AppsDir::new();
    let app = json!({"id": "n", "key": "nk", "secret": "ns", "webhooks": [
        {"nats_subject": "hooks.js", "event_types": ["client_event"], "nats": {"url": server.url()},
         "headers": {"X-Env": "test", "X-Pusher-Signature": "forged"}},
        {"nats_subject": "hooks.core", "event_types": ["client_event"],
         "nats": {"url": server.url(), "jetstream": false}}
    ]});
    apps.write("nats.json", &app.to_string());
    let daemon = Daemon::start(apps.path());

    let body = r#"{"events":[{"name":"client_event","channel":"private-é","event":"client-msg","data":"héllo 😀 \"q\" \\ \u0001\n","user_id":"u"}]}"#;
    assert_eq!(native(&daemon, "n", "nk", "ns", body).await.0, 200);

    let stored = wait_for_messages(&js, "HOOKS", 1).await;
    let core_message = tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut core))
        .await
        .expect("a core NATS message")
        .unwrap();
    let core_received = received("hooks.core", core_message.headers.as_ref(), &core_message.payload);
    daemon.wait_idle().await;
    let stored_again = stream_messages(&js, "HOOKS").await;
    assert_eq!(stored_again.len(), 1, "one batch, one message");

    let message = &stored[0];
    assert_eq!(message.header("x-pusher-key"), "nk");
    assert_ne!(message.header("x-pusher-signature"), "forged", "the signed headers win");
    assert_eq!(
        message.header("x-env"),
        "test",
        "the webhook's headers are NATS headers"
    );
    assert_eq!(message.header("content-type"), "application/json");
    assert!(!message.header("x-hookline-batch-id").is_empty());
    assert!(!message.header("x-hookline-batch-time").is_empty());
    assert_eq!(
        message.header("nats-msg-id"),
        message.header("x-hookline-batch-id"),
        "the batch id is the stream's dedupe id"
    );
    assert_eq!(
        message.json()["events"][0]["data"],
        "héllo 😀 \"q\" \\ \u{1}\n",
        "the payload is the exact signed body"
    );
    assert_eq!(core_received.header("x-pusher-key"), "nk");
    assert_npm_valid("nk", "ns", &[message.clone_for_test(), core_received]);

    // One byte flipped, npm pusher refuses it: the check can fail.
    let mut tampered = message.clone_for_test();
    tampered.body = tampered.body.replacen("client-msg", "client-msh", 1);
    assert_eq!(verify_with_npm("nk", "ns", &[tampered])[0]["valid"], false);

    let describe = daemon.logs();
    assert!(!describe.contains("forged"), "no header value is logged");
    assert_eq!(daemon.metric(&attempts("nats", "success")).await, 2.0);
}

/// `Received` has no `Clone` in the shared harness.
trait CloneForTest {
    fn clone_for_test(&self) -> Received;
}

impl CloneForTest for Received {
    fn clone_for_test(&self) -> Received {
        Received {
            path: self.path.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            at: self.at,
            answered: self.answered,
        }
    }
}

#[tokio::test]
async fn a_batch_over_the_servers_max_payload_is_split_and_each_part_verifies() {
    const MAX_PAYLOAD: usize = 4096;
    let server = NatsServer::start_with(Some(format!("max_payload: {MAX_PAYLOAD}\n")));
    let js = server.jetstream().await;
    create_stream(&js, stream_config("BIG", "hooks.big")).await;

    let apps = AppsDir::new();
    let app = json!({"id": "b", "key": "bk", "secret": "bs",
        "batching": {"enabled": true, "max_wait_ms": 200, "max_events": 100},
        "webhooks": [{"nats_subject": "hooks.big", "event_types": ["big"], "nats": {"url": server.url()}}]});
    apps.write("big.json", &app.to_string());
    let daemon = Daemon::start(apps.path());

    // 12 events of about 600 bytes: about 7.5 KB in one batch, and the
    // daemon assumes the 1 MiB default until it has connected once.
    let body = numbered_events("big", "e", 0, 12, 600);
    assert_eq!(native(&daemon, "b", "bk", "bs", &body).await.0, 200);
    let deadline = Instant::now() + PATIENCE;
    let messages = loop {
        let messages = stream_messages(&js, "BIG").await;
        if all_events(&messages).len() >= 12 {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "{} events arrived",
            all_events(&messages).len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    daemon.wait_idle().await;
    assert!(messages.len() >= 2, "split into {} messages", messages.len());
    for message in &messages {
        let headers: usize = message
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 12;
        assert!(
            message.body.len() + headers <= MAX_PAYLOAD,
            "a part of {} bytes",
            message.body.len()
        );
    }
    let mut tags: Vec<String> = all_events(&messages).iter().map(event_tag).collect();
    tags.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("e-{i}")).collect();
    want.sort();
    assert_eq!(tags, want, "every event once");
    let ids: std::collections::HashSet<&str> = messages.iter().map(|m| m.header("nats-msg-id")).collect();
    assert_eq!(ids.len(), messages.len(), "each part has its own batch id");
    assert_npm_valid("bk", "bs", &messages);
    assert!(daemon.metric(&attempts("nats", "split")).await >= 1.0);
    assert!(dlq_letters(&daemon.dir.path().join("data")).is_empty());
}

#[tokio::test]
async fn kill_9_mid_load_loses_no_accepted_event_and_stores_none_twice() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, stream_config("LOAD", "hooks.load")).await;

    let apps = AppsDir::new();
    let app = json!({"id": "k", "key": "kk", "secret": "ks",
        "batching": {"enabled": true, "max_wait_ms": 20, "max_events": 10},
        "webhooks": [{"nats_subject": "hooks.load", "event_types": ["load"], "nats": {"url": server.url()},
                      "retry": fast_retry(0)}]});
    apps.write("load.json", &app.to_string());
    let data = tempfile::tempdir().unwrap();
    let options = DaemonOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    const SENDERS: usize = 5;
    const REQUESTS: usize = 6;
    const PER_REQUEST: usize = 10;
    const EVENTS: usize = SENDERS * REQUESTS * PER_REQUEST;
    let mut daemon = Daemon::start_with(apps.path(), options.clone());
    // Five clients post at once; the daemon is killed once a third of the
    // events reached the stream, while batches are being published.
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let url = daemon.url();
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for r in 0..REQUESTS {
                let first = (s * REQUESTS + r) * PER_REQUEST;
                let body = numbered_events("load", "l", first, PER_REQUEST, 0);
                match post_native(&url, "k", "kk", "ks", &body).await {
                    Ok(response) if response.status() == 200 => {
                        accepted.lock().unwrap().extend(first..first + PER_REQUEST)
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + PATIENCE;
    while all_events(&stream_messages(&js, "LOAD").await).len() < EVENTS / 3 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.signal("KILL");
    daemon.wait();
    for sender in senders {
        sender.await.unwrap();
    }
    let at_kill = stream_messages(&js, "LOAD").await.len();
    let accepted = accepted.lock().unwrap().clone();
    eprintln!(
        "at the kill: {} of {EVENTS} events accepted, {} in the stream",
        accepted.len(),
        all_events(&stream_messages(&js, "LOAD").await).len()
    );

    let daemon = Daemon::start_with(apps.path(), options);
    daemon.wait_idle().await;
    let deadline = Instant::now() + PATIENCE;
    let messages = loop {
        let messages = stream_messages(&js, "LOAD").await;
        let tags: std::collections::HashSet<String> = all_events(&messages).iter().map(event_tag).collect();
        if accepted.iter().all(|i| tags.contains(&format!("l-{i}"))) {
            break messages;
        }
        assert!(Instant::now() < deadline, "accepted events missing after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    daemon.wait_idle().await;
    let messages = if messages.len() == stream_messages(&js, "LOAD").await.len() {
        messages
    } else {
        stream_messages(&js, "LOAD").await
    };
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for event in all_events(&messages) {
        *seen.entry(event_tag(&event)).or_default() += 1;
    }
    let missing: Vec<&usize> = accepted
        .iter()
        .filter(|i| !seen.contains_key(&format!("l-{i}")))
        .collect();
    assert!(missing.is_empty(), "lost accepted events {missing:?}");
    let duplicated: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated events {duplicated:?}");
    let ids: std::collections::HashSet<&str> = messages.iter().map(|m| m.header("nats-msg-id")).collect();
    assert_eq!(ids.len(), messages.len(), "no batch stored twice");
    // Publishes the restarted daemon made whose batch was already stored:
    // the stream acknowledged them as duplicates and kept one copy.
    let published = daemon.metric(&attempts("nats", "success")).await as usize;
    eprintln!(
        "after the restart: {published} publishes, {} new messages, so {} resends dropped by Nats-Msg-Id",
        messages.len() - at_kill,
        published.saturating_sub(messages.len() - at_kill)
    );
    assert_npm_valid("kk", "ks", &messages[..messages.len().min(20)]);
}

/// Bytes waiting unread in the server's sockets on its port (`ss`'s
/// Recv-Q): a publish the stopped server has not read yet.
fn unread_by_server(port: u16) -> usize {
    let output = Command::new("ss")
        .args(["-Htn", "state", "established", "sport", "=", &format!(":{port}")])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

#[tokio::test]
async fn a_resend_after_a_crash_before_the_pub_ack_is_dropped_by_the_stream() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, stream_config("ACK", "hooks.ack")).await;
    let apps = AppsDir::new();
    let app = json!({"id": "p", "key": "pk", "secret": "ps",
        "webhooks": [{"nats_subject": "hooks.ack", "event_types": ["p"], "nats": {"url": server.url()},
                      "retry": fast_retry(0)}]});
    apps.write("ack.json", &app.to_string());
    let data = tempfile::tempdir().unwrap();
    let options = DaemonOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let mut daemon = Daemon::start_with(apps.path(), options.clone());
    // Connected, with one batch delivered.
    assert_eq!(
        native(&daemon, "p", "pk", "ps", &events_body(&[("p", "warm")])).await.0,
        200
    );
    wait_for_messages(&js, "ACK", 1).await;
    daemon.wait_idle().await;

    // The server is frozen: the next publish reaches its socket but no
    // PubAck comes back. The daemon dies waiting for it.
    let pid = server.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let resumed = scopeguard(|| {
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
    });
    assert_eq!(
        native(&daemon, "p", "pk", "ps", &events_body(&[("p", "crash")]))
            .await
            .0,
        200
    );
    let deadline = Instant::now() + PATIENCE;
    while unread_by_server(server.port) == 0 {
        assert!(Instant::now() < deadline, "the publish never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.signal("KILL");
    daemon.wait();
    drop(resumed);
    // The server stores the publish it had not read (its ack goes nowhere)…
    let stored = wait_for_messages(&js, "ACK", 2).await;
    let batch_id = stored[1].header("nats-msg-id").to_string();
    assert_eq!(stored[1].json()["events"][0]["channel"], "crash");

    // …and the restarted daemon, which never saw the ack, sends the batch
    // again with the same Nats-Msg-Id: the stream acknowledges it as a
    // duplicate and keeps one copy.
    let daemon = Daemon::start_with(apps.path(), options);
    daemon.wait_metric(&attempts("nats", "success"), 1.0).await;
    daemon.wait_idle().await;
    let messages = stream_messages(&js, "ACK").await;
    assert_eq!(messages.len(), 2, "the resend was de-duplicated");
    assert_eq!(messages[1].header("nats-msg-id"), batch_id);
    assert_npm_valid("pk", "ps", &messages);
}

/// Runs `f` when dropped (also on a panic).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

#[tokio::test]
async fn a_full_stream_throttles_without_using_up_attempts_or_tripping_the_breaker() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let full = create_stream(
        &js,
        stream::Config {
            max_messages: 1,
            discard: stream::DiscardPolicy::New,
            ..stream_config("FULL", "hooks.full")
        },
    )
    .await;
    js.publish("hooks.full", "filler".into()).await.unwrap().await.unwrap();

    let apps = AppsDir::new();
    let app = json!({"id": "t", "key": "tk", "secret": "ts",
        "webhooks": [{"nats_subject": "hooks.full", "event_types": ["t"], "nats": {"url": server.url()},
                      "retry": fast_retry(1)}]});
    apps.write("full.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "t", "tk", "ts", &events_body(&[("t", "c")])).await.0,
        200
    );
    // With max_attempts 1, a counted failure would dead-letter at once;
    // six retries show the refusals are not counted (and five counted
    // failures in a row would open the breaker).
    daemon.wait_metric(&attempts("nats", "retry"), 6.0).await;
    assert!(
        dlq_letters(&daemon.dir.path().join("data")).is_empty(),
        "a throttled batch is not dead-lettered"
    );
    let metrics = daemon.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"hookline_circuit_state{app="t",webhook="hooks.full"} 0"#),
        "the breaker stays closed: {metrics}"
    );
    full.purge().await.unwrap();
    let messages = wait_for_messages(&js, "FULL", 1).await;
    assert_eq!(messages[0].json()["events"][0]["name"], "t");
    assert_npm_valid("tk", "ts", &messages);
    daemon.wait_idle().await;
    assert!(dlq_letters(&daemon.dir.path().join("data")).is_empty());
}

#[tokio::test]
async fn nats_stopped_and_restarted_delivery_resumes_and_nothing_is_lost() {
    let mut server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, stream_config("RESTART", "hooks.restart")).await;

    let apps = AppsDir::new();
    let app = json!({"id": "r", "key": "rk", "secret": "rs",
        "batching": {"enabled": true, "max_wait_ms": 20, "max_events": 10},
        "webhooks": [{"nats_subject": "hooks.restart", "event_types": ["r"], "nats": {"url": server.url()},
                      "retry": fast_retry(0)}]});
    apps.write("restart.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "r", "rk", "rs", &numbered_events("r", "r", 0, 1, 0))
            .await
            .0,
        200
    );
    wait_for_messages(&js, "RESTART", 1).await;
    drop(js);

    server.stop();
    for r in 0..5 {
        let body = numbered_events("r", "r", 1 + r * 10, 10, 0);
        assert_eq!(native(&daemon, "r", "rk", "rs", &body).await.0, 200);
    }
    daemon.wait_metric(&attempts("nats", "retry"), 2.0).await;
    server.restart();
    let js = server.jetstream().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events = all_events(&stream_messages(&js, "RESTART").await).len();
        if events >= 51 {
            break;
        }
        assert!(Instant::now() < deadline, "{events} events after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.wait_idle().await;
    let messages = stream_messages(&js, "RESTART").await;
    let mut tags: Vec<String> = all_events(&messages).iter().map(event_tag).collect();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 51, "every event, once");
    assert_eq!(all_events(&messages).len(), 51, "none twice");
    assert_npm_valid("rk", "rs", &messages);
    let logs = daemon.logs();
    assert!(logs.contains("nats:hooks.restart@127.0.0.1"), "{logs}");
}

/// A stream deleted while the daemon runs is a missing resource, like a
/// deleted queue: the next batch is dead-lettered at its first attempt,
/// naming the subject (no retry storm), and a replay once a stream captures
/// the subject again delivers it.
#[tokio::test]
async fn a_deleted_stream_dead_letters_naming_the_subject_and_a_replay_delivers_once_it_is_back() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, stream_config("GONE", "hooks.gone")).await;

    let apps = AppsDir::new();
    let app = json!({"id": "g", "key": "gk", "secret": "gs",
        "webhooks": [{"nats_subject": "hooks.gone", "event_types": ["g"], "nats": {"url": server.url()},
                      "retry": {"min_backoff_ms": 200, "max_backoff_ms": 400, "max_attempts": 5}}]});
    apps.write("gone.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "g", "gk", "gs", &events_body(&[("g", "first")]))
            .await
            .0,
        200
    );
    wait_for_messages(&js, "GONE", 1).await;

    js.delete_stream("GONE").await.unwrap();
    assert_eq!(
        native(&daemon, "g", "gk", "gs", &events_body(&[("g", "second")]))
            .await
            .0,
        200
    );
    daemon.wait_metric(&attempts("nats", "dead_letter"), 1.0).await;
    assert_eq!(
        daemon.metric(&attempts("nats", "retry")).await,
        0.0,
        "a missing stream is not retried"
    );
    let data = daemon.dir.path().join("data");
    let letters = dlq_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(
        letters[0]
            .to_string()
            .contains(r#"no JetStream stream captures the subject \"hooks.gone\""#),
        "{:#}",
        letters[0]
    );

    create_stream(&js, stream_config("GONE", "hooks.gone")).await;
    let (ok, stdout, stderr) = dlq(&data, &["replay", "--all"]);
    assert!(ok, "{stdout}{stderr}");
    let messages = wait_for_messages(&js, "GONE", 1).await;
    assert_eq!(messages[0].json()["events"][0]["channel"], "second");
    assert_npm_valid("gk", "gs", &messages);
}

/// JetStream is the default: a server without it cannot acknowledge a
/// publish, and no retry will change that, so the batch is dead-lettered at
/// once, saying what to do, instead of waited on for the whole retry window.
#[tokio::test]
async fn a_server_without_jetstream_dead_letters_saying_to_enable_it() {
    let server = NatsServer::start_without_jetstream();
    let apps = AppsDir::new();
    let app = json!({"id": "n", "key": "nk", "secret": "ns",
        "webhooks": [{"nats_subject": "hooks.plain", "event_types": ["g"], "nats": {"url": server.url()},
                      "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200, "max_attempts": 5}}]});
    apps.write("plain.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "n", "nk", "ns", &events_body(&[("g", "c")])).await.0,
        200
    );
    daemon.wait_metric(&attempts("nats", "dead_letter"), 1.0).await;
    assert_eq!(daemon.metric(&attempts("nats", "retry")).await, 0.0);
    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert!(
        letters[0].to_string().contains("does not have JetStream enabled"),
        "{:#}",
        letters[0]
    );
}

#[tokio::test]
async fn users_nkeys_and_permissions_a_refused_publish_or_login_dead_letters() {
    let server = NatsServer::start_with(Some(
        r#"authorization {
  users = [
    {user: admin, password: "admin-pw"}
    {user: hook, password: "hook-pw",
     permissions: {publish: {allow: ["hooks.allowed"]}, subscribe: {allow: ["_INBOX.>"]}}}
    {nkey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4,
     permissions: {publish: {allow: ["hooks.nkey"]}, subscribe: {allow: ["_INBOX.>"]}}}
  ]
}
"#
        .to_string(),
    ));
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-pw".into())
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(admin);
    create_stream(&js, stream_config("PERM", "hooks.>")).await;

    let hook = |subject: &str, id: &str, password: &str| {
        json!({"id": id, "nats_subject": subject, "event_types": ["channel_occupied"], "timeout_ms": 1500,
               "nats": {"url": server.url(), "user": "hook", "password": password}})
    };
    let apps = AppsDir::new();
    let app = json!({"id": "u", "key": "uk", "secret": "us", "webhooks": [
        hook("hooks.allowed", "allowed", "hook-pw"),
        hook("hooks.denied", "denied", "hook-pw"),
        hook("hooks.allowed", "wrong-password", "not-the-pw"),
        {"id": "nkey", "nats_subject": "hooks.nkey", "event_types": ["channel_occupied"],
         "nats": {"url": server.url(), "nkey": NKEY_SEED}}]});
    apps.write("perm.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "u", "uk", "us", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    wait_for_messages(&js, "PERM", 2).await;
    daemon.wait_metric(&attempts("nats", "dead_letter"), 2.0).await;
    daemon.wait_idle().await;
    let messages = stream_messages(&js, "PERM").await;
    let mut subjects: Vec<&str> = messages.iter().map(|m| m.path.as_str()).collect();
    subjects.sort();
    assert_eq!(subjects, ["hooks.allowed", "hooks.nkey"], "only the permitted subjects");
    assert_npm_valid("uk", "us", &messages);

    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let letter = |id: &str| {
        letters
            .iter()
            .find(|l| l["webhook_id"] == id)
            .unwrap_or_else(|| panic!("no letter for {id}: {letters:#?}"))
            .to_string()
    };
    let denied = letter("denied");
    assert!(
        denied.contains("hooks.denied") && denied.contains("permission"),
        "{denied}"
    );
    let wrong = letter("wrong-password");
    assert!(wrong.contains("refused the connection's credentials"), "{wrong}");
    let logs = daemon.logs();
    assert!(
        !logs.contains("hook-pw") && !logs.contains("not-the-pw"),
        "no password is logged"
    );
    assert!(!denied.contains("hook-pw") && !wrong.contains("not-the-pw"));
    assert!(!logs.contains(NKEY_SEED), "no seed is logged");
}

/// The user nkey pair of the NATS documentation's examples; the server
/// config names its public key, UDXU4RCS….
const NKEY_SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";

#[tokio::test]
async fn a_token_and_a_server_list_with_a_dead_first_server() {
    let server = NatsServer::start_with(Some("authorization { token: \"t0ken-s3cret\" }\n".to_string()));
    let admin = async_nats::ConnectOptions::with_token("t0ken-s3cret".into())
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(admin);
    create_stream(&js, stream_config("TOKEN", "hooks.token")).await;
    // Port 1 refuses connections: the client goes on to the next server.
    let dead = "nats://127.0.0.1:1";
    let apps = AppsDir::new();
    let app = json!({"id": "k", "key": "kk", "secret": "ks", "webhooks": [
        {"nats_subject": "hooks.token", "event_types": ["channel_occupied"],
         "nats": {"url": format!("{dead}, {}", server.url()), "token": "t0ken-s3cret"}},
        {"id": "array", "nats_subject": "hooks.token", "event_types": ["channel_occupied"],
         "nats": {"url": [dead, server.url()], "token": "t0ken-s3cret"}}]});
    apps.write("token.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "k", "kk", "ks", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    let messages = wait_for_messages(&js, "TOKEN", 2).await;
    daemon.wait_idle().await;
    assert_eq!(stream_messages(&js, "TOKEN").await.len(), 2);
    assert_npm_valid("kk", "ks", &messages);
    assert!(dlq_letters(&daemon.dir.path().join("data")).is_empty());
    assert!(!daemon.logs().contains("t0ken-s3cret"), "no token is logged");
}

/// A throwaway CA and a server certificate for 127.0.0.1, made with the
/// openssl command (Debian's, from scripts/setup-tests.sh).
fn test_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}; run scripts/setup-tests.sh"));
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hookline test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[tokio::test]
async fn a_tls_server_is_reached_with_the_webhooks_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let server = NatsServer::start_with(Some(format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
        cert.display().to_string(),
        key.display().to_string()
    )));
    let tls_url = format!("tls://127.0.0.1:{}", server.port);
    let admin = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .require_tls(true)
        .connect(&tls_url)
        .await
        .unwrap();
    let js = jetstream::new(admin);
    create_stream(&js, stream_config("TLS", "hooks.tls")).await;

    let apps = AppsDir::new();
    let app = json!({"id": "s", "key": "sk", "secret": "ss", "webhooks": [
        {"nats_subject": "hooks.tls", "event_types": ["channel_occupied"],
         "nats": {"url": tls_url, "tls": {"ca_file": ca, "required": true}}},
        {"id": "untrusted", "nats_subject": "hooks.tls", "event_types": ["channel_occupied"],
         "nats": {"url": tls_url, "tls": {"required": true}}, "retry": fast_retry(2)}]});
    apps.write("tls.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "s", "sk", "ss", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    let messages = wait_for_messages(&js, "TLS", 1).await;
    assert_npm_valid("sk", "ss", &messages);
    // Without the CA the certificate is not trusted: a connection error,
    // retried (and counted) until the attempts run out.
    daemon.wait_metric(&attempts("nats", "dead_letter"), 1.0).await;
    daemon.wait_idle().await;
    assert_eq!(stream_messages(&js, "TLS").await.len(), 1);
    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["webhook_id"], "untrusted");
    assert!(letters[0].to_string().contains("NATS at 127.0.0.1"), "{:#}", letters[0]);
}

#[tokio::test]
async fn check_refuses_a_wildcard_subject_and_names_the_key() {
    let apps = AppsDir::new();
    apps.write(
        "wild.json",
        &json!({"id": "w", "key": "wk", "secret": "ws", "webhooks": [
            {"nats_subject": "hooks.*", "event_types": ["channel_occupied"]}]})
        .to_string(),
    );
    apps.write(
        "auth.json",
        &json!({"id": "a", "key": "ak", "secret": "as", "webhooks": [
            {"nats_subject": "hooks.a", "event_types": ["channel_occupied"],
             "nats": {"url": "nats://127.0.0.1:1", "token": "t0ken-s3cret", "user": "u", "password": "p"}}]})
        .to_string(),
    );
    apps.write(
        "header.json",
        &json!({"id": "h", "key": "hk", "secret": "hs", "webhooks": [
            {"nats_subject": "hooks.h", "event_types": ["channel_occupied"], "headers": {"X-Bad:Name": "v"}}]})
        .to_string(),
    );
    apps.write(
        "good.json",
        &json!({"id": "ok", "key": "ok", "secret": "s", "webhooks": [
            {"nats_subject": "hooks.ok", "event_types": ["channel_occupied"], "nats": {"url": "nats://127.0.0.1:1, 127.0.0.1:2"}}]})
        .to_string(),
    );
    let (ok, stderr) = check(&apps);
    assert!(!ok);
    assert!(
        stderr.contains("wild.json: app \"w\": webhook 0: `nats_subject` \"hooks.*\" contains a wildcard"),
        "{stderr}"
    );
    assert!(
        stderr.contains("auth.json") && stderr.contains("more than one of `credentials`"),
        "{stderr}"
    );
    assert!(!stderr.contains("t0ken-s3cret"), "{stderr}");
    assert!(
        stderr.contains("header.json") && stderr.contains("`X-Bad:Name`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("good.json"),
        "a valid nats webhook passes offline: {stderr}"
    );

    // The shipped example passes offline (its secrets filled in, as the
    // environment would).
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps/nats.json.example"),
    )
    .unwrap();
    let good = AppsDir::new();
    good.write(
        "nats.json",
        &example
            .replace("${NATS_DEMO_SECRET}", "s3cret")
            .replace("${NATS_TOKEN}", "t0ken"),
    );
    let (ok, stderr) = check(&good);
    assert!(ok, "{stderr}");
}
