//! The example sink components (`examples/sinks/{slack,cloudevents,datadog}`)
//! end to end: built from source in this run, loaded by the real daemon from
//! an app file (each origin declared with `allow_private` on 127.0.0.1), and
//! checked by receivers that validate what they get with the official
//! libraries — PyPI `slack_sdk` (Block Kit, Slack's limits) and PyPI
//! `cloudevents` (CloudEvents 1.0) — or against the documented shape (the
//! Datadog Events API v1, its `DD-API-KEY` added by the host). Then
//! `hookline sink run` with the CloudEvents example: delivered, a 503, and a
//! request refused for want of `--allow`.
//!
//! The receivers are tests/peers/{slack,cloudevents,datadog}_receiver.py
//! (tests/peers/sink_receiver.py is their server): each answers 400 with the
//! validation error for a request of the wrong shape, so a malformed message
//! shows as a dead letter here as well as in the receiver's log.
//!
//! No Pusher signature travels to check: none of the three examples
//! forwards the signed body or its `X-Pusher-*` headers (each sends its own
//! envelope); tests/sink_components.rs checks a forwarding sink's.

mod support;

// The harness's wasm build, as tests/support/sinks.rs uses it (that module
// keeps it private and builds only the fixture sinks).
#[path = "support/cargo_wasm.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod cargo_wasm;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::*;

/// Builds the three examples for wasm32-wasip2 once per test process;
/// returns the directory holding `slack.wasm`, `cloudevents.wasm` and
/// `datadog.wasm`.
fn examples() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_wasm::build_wasm_packages(
                Path::new(env!("CARGO_MANIFEST_DIR")),
                &["slack", "cloudevents", "datadog"],
            )
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// Copies an example's component into `apps/sinks/`, so the app file names
/// it relative to itself as the examples' READMEs do.
fn install(apps: &AppsDir, file: &str) {
    let dir = apps.path().join("sinks");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::copy(examples().join(file), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// An `allowed_hosts` entry for a receiver on 127.0.0.1.
fn local(origin: &str) -> Value {
    json!({"origin": origin, "allow_private": true})
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// One of the Python receivers (tests/peers/*_receiver.py), on a free port;
/// killed on drop (and it exits by itself when this process dies: its stdin
/// closes).
struct Peer {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
}

impl Peer {
    fn start(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(peers_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}; run scripts/setup-tests.sh"));
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{script} did not start: {line:?}; run scripts/setup-tests.sh"))
            .parse()
            .unwrap();
        Self {
            child,
            _stdin: stdin,
            addr,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn control(&self, what: &str, command: Value) {
        let answer = reqwest::Client::new()
            .post(self.url(&format!("/_test/{what}")))
            .body(command.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204, "{what}");
    }

    /// Queues answers for the next valid requests to `path`.
    async fn script(&self, path: &str, answers: Value) {
        self.control("script", json!({"path": path, "answers": answers})).await;
    }

    /// The answer to valid requests to `path` once its script is used up.
    async fn by_default(&self, path: &str, answer: Value) {
        self.control("default", json!({"path": path, "answer": answer})).await;
    }

    /// Every request received so far, in arrival order (see
    /// sink_receiver.py for the record's fields).
    async fn requests(&self) -> Vec<Value> {
        let answer = reqwest::Client::new()
            .get(self.url("/_test/requests"))
            .send()
            .await
            .unwrap();
        serde_json::from_str(&answer.text().await.unwrap()).unwrap()
    }

    /// The requests to `path`.
    async fn on(&self, path: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that every request the receiver got passed its validation.
fn assert_all_valid(requests: &[Value]) {
    for request in requests {
        assert_eq!(
            request["valid"], true,
            "the receiver refused a request: {}\n{request:#}",
            request["error"]
        );
    }
}

/// Waits until `n` batches of the sink kind `kind` are settled: delivered
/// or dead-lettered (a receiver's 400 for a malformed message dead-letters
/// it, and the test then fails at once on the receiver's reason rather than
/// after waiting out a delivery that will never come).
async fn wait_settled(daemon: &Daemon, kind: &str, n: f64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = daemon.metrics_text().await;
        let settled = metric_in(&text, &attempts(kind, "success")) + metric_in(&text, &attempts(kind, "dead_letter"));
        if settled >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{kind}: {settled} of {n} batches settled; the daemon's log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The value of the metric line starting with `selector` in `text` (0 when absent).
fn metric_in(text: &str, selector: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(selector).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The batch id the daemon delivered for `webhook`, from its log.
async fn delivered_batch_id(daemon: &Daemon, webhook: &str) -> String {
    let webhook = format!("webhook={webhook} ");
    let line = wait_log_line(daemon, &["delivered", &webhook, "batch_id="]).await;
    line.split("batch_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// Events of every kind Pusher sends, and one it does not know (passed
/// through untouched, extra field and all).
fn sample_events() -> Vec<Value> {
    vec![
        json!({"name": "channel_occupied", "channel": "room-1"}),
        json!({"name": "member_added", "channel": "presence-lobby", "user_id": "u-1"}),
        json!({"name": "client_event", "channel": "private-chat", "event": "client-typing",
               "data": "{\"on\":true}", "socket_id": "123.456", "user_id": "u-2"}),
        json!({"name": "subscription_count", "channel": "room-1", "subscription_count": 3}),
        json!({"name": "cache_miss", "channel": "cache-prices"}),
        json!({"name": "custom_thing", "channel": "room-2", "extra": {"k": [1, 2]}}),
    ]
}

/// POSTs `events` to the daemon as one signed native ingest request.
async fn send(daemon: &Daemon, app: &str, key: &str, secret: &str, events: &[Value]) {
    let body = json!({ "events": events }).to_string();
    let (status, text) = native(daemon, app, key, secret, &body).await;
    assert_eq!(status, 200, "{text}; the daemon's log:\n{}", daemon.logs());
}

// ---------------------------------------------------------------------------
// slack

/// `n` events for the Slack tests: `room-<i>` channels; a few client events
/// with data (one with characters mrkdwn escapes).
fn slack_events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| match i % 10 {
            3 => json!({"name": "client_event", "channel": format!("room-{i}"), "event": "client-msg",
                        "data": "{\"text\":\"a < b & c > d\"}", "socket_id": "1.2", "user_id": "u<3>"}),
            5 => json!({"name": "member_added", "channel": format!("room-{i}"), "user_id": format!("u-{i}")}),
            _ => json!({"name": "channel_occupied", "channel": format!("room-{i}")}),
        })
        .collect()
}

/// The channels named by a message's sections (`*name* on `room-7``), in order.
fn section_channels(message: &Value) -> Vec<String> {
    message["summary"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|text| {
            let text = text.as_str().unwrap();
            let first = text.lines().next().unwrap();
            first
                .split(" on `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .unwrap_or_else(|| panic!("a section not naming its channel: {text:?}"))
                .to_string()
        })
        .collect()
}

/// How many times each channel appears across `messages`.
fn channel_counts(messages: &[&Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in messages {
        for channel in section_channels(message) {
            *counts.entry(channel).or_insert(0) += 1;
        }
    }
    counts
}

fn slack_app(receiver: &Peer, path: &str) -> Value {
    json!({"id": "slack-app", "key": "slack-key", "secret": "slack-secret",
           "batching": {"max_wait_ms": 50, "max_events": 100},
           "webhooks": [{"id": "alerts", "event_types": ["channel_occupied", "member_added", "client_event"],
             "sink": {"wasm": "sinks/slack.wasm",
                      "config": {"url": receiver.url(path), "text_prefix": ":bell:"},
                      "allowed_hosts": [local(&receiver.url(""))]},
             "retry": {"min_backoff_ms": 20, "max_backoff_ms": 5000}}]})
}

/// 100 events in one batch: three messages of at most 50 blocks (a header
/// and 49 sections, then 49, then 2), a 5000-character `data` cut to a
/// 3000-character section ending in `…`, every event once, every message
/// valid Block Kit by `slack_sdk`.
#[tokio::test]
async fn slack_messages_are_valid_block_kit_chunked_to_slacks_limits() {
    let receiver = Peer::start("slack_receiver.py", &[]);
    let apps = AppsDir::new();
    install(&apps, "slack.wasm");
    apps.write("app.json", &slack_app(&receiver, "/services/T0/B0/chunks").to_string());
    let daemon = Daemon::start_with(apps.path(), DaemonOptions::default());

    let mut events = slack_events(100);
    events[7]["data"] = json!("x".repeat(5000));
    events[7]["name"] = json!("client_event");
    events[7]["event"] = json!("client-big");
    send(&daemon, "slack-app", "slack-key", "slack-secret", &events).await;

    wait_settled(&daemon, "wasm:slack.wasm", 1.0).await;
    let messages = receiver.on("/services/T0/B0/chunks").await;
    assert_all_valid(&messages);
    let blocks: Vec<u64> = messages
        .iter()
        .map(|m| m["summary"]["blocks"].as_u64().unwrap())
        .collect();
    assert_eq!(blocks, [50, 50, 3], "one batch of 100 events, 49 per message");
    for (i, message) in messages.iter().enumerate() {
        let header = format!(":bell: 100 events from app slack-app ({}/3)", i + 1);
        assert_eq!(message["summary"]["header"], header.as_str());
        assert_eq!(message["summary"]["text"], header.as_str());
        assert_eq!(message["status"], 200);
    }
    let all: Vec<&Value> = messages.iter().collect();
    let counts = channel_counts(&all);
    assert_eq!(counts.len(), 100, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(section_channels(&messages[2]), ["room-98", "room-99"], "in order");

    let sections = |m: &Value| -> Vec<String> {
        m["summary"]["sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let first = sections(&messages[0]);
    let long = &first[7];
    assert_eq!(long.chars().count(), 3000, "cut to Slack's 3000 characters");
    assert!(long.starts_with("*client_event* on `room-7`"), "{long:.80}");
    assert!(long.ends_with('…'), "{}", &long[long.len() - 20..]);
    // mrkdwn's escapes for the characters that make links and mentions.
    assert_eq!(
        first[3],
        "*client_event* on `room-3`\nuser: `u&lt;3&gt;`\nsocket: `1.2`\nevent: `client-msg`\n```{\"text\":\"a &lt; b &amp; c &gt; d\"}```"
    );
    assert_eq!(first[5], "*member_added* on `room-5`\nuser: `u-5`");
    assert!(dlq_letters(&daemon.dir.path().join("data")).is_empty());
}

/// Slack answers the second message of a two-message batch 429 with
/// `Retry-After: 1`: the next attempt comes no sooner than a second later
/// and, as the example promises, resumes at the refused message — the first
/// one, already accepted, is not sent again.
#[tokio::test]
async fn slack_429_retry_after_is_honoured_and_the_retry_resumes_at_the_refused_message() {
    let receiver = Peer::start("slack_receiver.py", &[]);
    let path = "/services/T0/B0/throttled";
    receiver
        .script(
            path,
            json!([{"status": 200, "body": "ok"},
                   {"status": 429, "headers": {"Retry-After": "1"}, "body": "rate_limited"}]),
        )
        .await;
    let apps = AppsDir::new();
    install(&apps, "slack.wasm");
    apps.write("app.json", &slack_app(&receiver, path).to_string());
    let daemon = Daemon::start_with(apps.path(), DaemonOptions::default());

    send(&daemon, "slack-app", "slack-key", "slack-secret", &slack_events(60)).await;

    wait_settled(&daemon, "wasm:slack.wasm", 1.0).await;
    let messages = receiver.on(path).await;
    assert_all_valid(&messages);
    let statuses: Vec<u64> = messages.iter().map(|m| m["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 429, 200], "the retry resends the refused message only");
    let headers: Vec<&str> = messages
        .iter()
        .map(|m| m["summary"]["header"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            ":bell: 60 events from app slack-app (1/2)",
            ":bell: 60 events from app slack-app (2/2)",
            ":bell: 60 events from app slack-app (2/2)",
        ]
    );
    assert_eq!(messages[1]["body"], messages[2]["body"]);
    let gap = messages[2]["at"].as_f64().unwrap() - messages[1]["at"].as_f64().unwrap();
    assert!(gap >= 1.0, "retried {gap:.3} s after a 429 with Retry-After: 1");
    // Every event once across the messages Slack accepted.
    let accepted: Vec<&Value> = messages.iter().filter(|m| m["status"] == 200).collect();
    let counts = channel_counts(&accepted);
    assert_eq!(counts.len(), 60, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(dlq_letters(&daemon.dir.path().join("data")).is_empty());
}

// ---------------------------------------------------------------------------
// cloudevents

/// Checks the CloudEvents of one delivery of `events`, as the receiver
/// parsed them: one per event, in order, `id` `<batch id>-<index>`,
/// `source` `/hookline/<app>/<webhook>`, `type` `com.pusher.<name>`,
/// `subject` the channel, `data` the event object, `time` RFC 3339 (the
/// receiver checked its form) within the test's run.
fn assert_cloud_events(parsed: &[Value], events: &[Value], batch_id: &str, source: &str, started: f64) {
    assert_eq!(parsed.len(), events.len(), "one CloudEvent per event: {parsed:#?}");
    for (index, (ce, event)) in parsed.iter().zip(events).enumerate() {
        assert_eq!(ce["id"], format!("{batch_id}-{index}").as_str(), "{ce:#}");
        assert_eq!(ce["source"], source);
        assert_eq!(
            ce["type"],
            format!("com.pusher.{}", event["name"].as_str().unwrap()).as_str()
        );
        assert_eq!(ce["subject"], event["channel"]);
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(&ce["data"], event, "data is the event object");
        let time = ce["time"].as_str().unwrap();
        let at = chrono_free_rfc3339_secs(time);
        assert!(
            at >= started.floor() - 1.0 && at <= now_secs() + 1.0,
            "time {time} is not within the test's run"
        );
    }
}

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS(.fff)Z` (the form
/// the example writes; the receiver already checked it is RFC 3339).
fn chrono_free_rfc3339_secs(text: &str) -> f64 {
    let (date, time) = text.split_once('T').unwrap();
    let time = time.strip_suffix('Z').unwrap_or_else(|| panic!("{text} is not UTC"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

/// Both modes of the CloudEvents example, validated by the `cloudevents`
/// SDK: batched (one `application/cloudevents-batch+json` array per batch)
/// and structured (one `application/cloudevents+json` request per event).
#[tokio::test]
async fn cloudevents_in_both_modes_validate_as_cloudevents_1_0_with_the_sdk() {
    let receiver = Peer::start("cloudevents_receiver.py", &[]);
    let apps = AppsDir::new();
    install(&apps, "cloudevents.wasm");
    let sink = |config: Value| {
        json!({"wasm": "sinks/cloudevents.wasm", "config": config,
               "allowed_hosts": [local(&receiver.url(""))]})
    };
    let events = sample_events();
    let names: Vec<&Value> = events.iter().map(|e| &e["name"]).collect();
    let app = json!({"id": "ce-app", "key": "ce-key", "secret": "ce-secret", "batching": {"max_wait_ms": 50},
        "webhooks": [
            {"id": "broker", "event_types": names,
             "sink": sink(json!({"url": receiver.url("/batch")}))},
            {"id": "knative", "event_types": names,
             "sink": sink(json!({"url": receiver.url("/structured"), "mode": "structured"}))}]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), DaemonOptions::default());
    let started = now_secs();

    send(&daemon, "ce-app", "ce-key", "ce-secret", &events).await;
    wait_settled(&daemon, "wasm:cloudevents.wasm", 2.0).await;

    let batch = receiver.on("/batch").await;
    assert_all_valid(&batch);
    assert_eq!(batch.len(), 1, "one request per batch: {batch:#?}");
    assert_eq!(
        batch[0]["headers"]["content-type"],
        "application/cloudevents-batch+json"
    );
    assert_eq!(batch[0]["summary"]["mode"], "batch");
    let batch_id = delivered_batch_id(&daemon, "broker").await;
    assert_cloud_events(
        batch[0]["summary"]["events"].as_array().unwrap(),
        &events,
        &batch_id,
        "/hookline/ce-app/broker",
        started,
    );

    let structured = receiver.on("/structured").await;
    assert_all_valid(&structured);
    assert_eq!(structured.len(), events.len(), "one request per event");
    let parsed: Vec<Value> = structured
        .iter()
        .map(|r| {
            assert_eq!(r["headers"]["content-type"], "application/cloudevents+json");
            assert_eq!(r["summary"]["mode"], "structured");
            r["summary"]["events"][0].clone()
        })
        .collect();
    let structured_id = delivered_batch_id(&daemon, "knative").await;
    assert_cloud_events(&parsed, &events, &structured_id, "/hookline/ce-app/knative", started);

    // (source, id) is unique: the receiver can de-duplicate on it.
    let mut ids: Vec<(String, String)> = batch[0]["summary"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(&parsed)
        .map(|ce| (ce["source"].to_string(), ce["id"].to_string()))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "{ids:?}");
    assert!(dlq_letters(&daemon.dir.path().join("data")).is_empty());
}

// ---------------------------------------------------------------------------
// datadog

/// Read by the daemon from its environment as `${DD_API_KEY}`.
const DD_API_KEY: &str = "dd-4f1c9e2b7a6d8c3e5f0a1b2c3d4e5f6a";

/// Every file under `dir`, recursively, as bytes, with its path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

/// The Datadog example: one Events API v1 request per event, carrying the
/// `DD-API-KEY` the host added from `allowed_hosts[].headers` with
/// `${DD_API_KEY}` from the daemon's environment; a webhook whose
/// `allowed_hosts` gives no key sends none (the sink sets no credential),
/// is answered 403 and dead-letters with the example's reason. The key is
/// in neither the daemon's log, nor its data directory (dead letters,
/// store), nor any body the sink produced.
#[tokio::test]
async fn datadog_gets_its_api_key_from_the_host_and_a_403_dead_letters() {
    let receiver = Peer::start("datadog_receiver.py", &["--api-key", DD_API_KEY]);
    receiver
        .by_default("/api/v1/events", json!({"status": 202, "body": "{\"status\":\"ok\"}"}))
        .await;
    let apps = AppsDir::new();
    install(&apps, "datadog.wasm");
    let origin = receiver.url("");
    let app = json!({"id": "dd-app", "key": "dd-key", "secret": "dd-secret", "batching": {"max_wait_ms": 50},
        "webhooks": [
            {"id": "datadog", "event_types": ["channel_occupied", "member_added"],
             "sink": {"wasm": "sinks/datadog.wasm", "config": {"site": origin, "tags": ["env:test"]},
                      "allowed_hosts": [{"origin": origin, "allow_private": true,
                                         "headers": {"DD-API-KEY": "${DD_API_KEY}"}}]}},
            {"id": "no-key", "event_types": ["channel_vacated"],
             "sink": {"wasm": "sinks/datadog.wasm", "config": {"site": origin, "alert_type": "warning"},
                      "allowed_hosts": [local(&origin)]}}]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), DaemonOptions::with_env(&[("DD_API_KEY", DD_API_KEY)]));
    let started = now_secs();

    let events = [
        json!({"name": "channel_occupied", "channel": "room-1"}),
        json!({"name": "member_added", "channel": "presence-lobby", "user_id": "u-1"}),
        json!({"name": "channel_vacated", "channel": "room-9"}),
    ];
    send(&daemon, "dd-app", "dd-key", "dd-secret", &events).await;
    wait_settled(&daemon, "wasm:datadog.wasm", 2.0).await;

    let requests = receiver.on("/api/v1/events").await;
    let (keyed, unkeyed): (Vec<&Value>, Vec<&Value>) =
        requests.iter().partition(|r| r["headers"].get("dd-api-key").is_some());
    // The keyed webhook: one valid event per request, the key as given.
    assert_eq!(keyed.len(), 2, "{requests:#?}");
    assert_all_valid(&keyed.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
    let batch_id = delivered_batch_id(&daemon, "datadog").await;
    for (request, event) in keyed.iter().zip(&events) {
        assert_eq!(request["headers"]["dd-api-key"], DD_API_KEY);
        assert_eq!(request["status"], 202);
        let body = &request["summary"];
        let (name, channel) = (event["name"].as_str().unwrap(), event["channel"].as_str().unwrap());
        assert_eq!(body["title"], format!("{name} on {channel}").as_str());
        let text: Value = serde_json::from_str(body["text"].as_str().unwrap()).unwrap();
        assert_eq!(&text, event, "text is the event as JSON");
        let date = body["date_happened"].as_f64().unwrap();
        assert!(date >= started.floor() - 1.0 && date <= now_secs() + 1.0, "{date}");
        assert_eq!(body["aggregation_key"], batch_id.as_str());
        assert_eq!(body["alert_type"], "info");
        assert_eq!(body["source_type_name"], "hookline");
        assert_eq!(
            body["tags"],
            json!([
                "app:dd-app",
                format!("channel:{channel}"),
                format!("event:{name}"),
                "env:test"
            ])
        );
    }
    // The webhook with no key in allowed_hosts: the sink sent none of its
    // own; Datadog's 403 is final, the reason saying where the key goes.
    assert_eq!(unkeyed.len(), 1, "a 403 is not retried: {requests:#?}");
    assert_eq!(unkeyed[0]["status"], 403);
    assert_eq!(unkeyed[0]["error"], "DD-API-KEY missing or wrong");
    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["webhook_id"], "no-key", "{letters:#?}");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "Datadog refused the API key (403): list it as the DD-API-KEY header of {origin} in the webhook's allowed_hosts"
        )),
        "{reason}"
    );

    // The key is nowhere but in the requests' header.
    let logs = daemon.logs();
    assert!(logs.contains("delivered"), "the log is being read: {logs}");
    assert!(!logs.contains(DD_API_KEY), "the key is in the daemon's log:\n{logs}");
    for (path, bytes) in files_under(daemon.dir.path()) {
        assert!(
            !bytes.windows(DD_API_KEY.len()).any(|w| w == DD_API_KEY.as_bytes()),
            "the key is in {}",
            path.display()
        );
    }
    for request in &requests {
        assert!(!request["body"].as_str().unwrap().contains(DD_API_KEY), "{request:#}");
    }
}

// ---------------------------------------------------------------------------
// hookline sink run

/// Runs `hookline sink run` with `args`; its exit success, stdout, stderr.
async fn sink_run(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(hookline_bin())
            .args(["sink", "run"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `hookline sink run` with the CloudEvents example and a batch file: for
/// real to the receiver (`delivered`, exit 0, the SDK validated it); a 503
/// (`retry…`, exit 1); without `--allow` the request is refused by the host
/// and the SDK rejects it naming allowed_hosts (exit 1), and with `--allow`
/// but not `--allow-private` the loopback receiver is refused too, the SDK
/// rejecting it naming allow_private; neither refused request reaches the
/// receiver.
#[tokio::test]
async fn sink_run_delivers_the_cloudevents_example_and_reports_what_it_could_not() {
    let receiver = Peer::start("cloudevents_receiver.py", &[]);
    receiver
        .by_default("/down", json!({"status": 503, "body": "down for maintenance"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch.json");
    let events = sample_events();
    std::fs::write(&batch, Value::Array(events.clone()).to_string()).unwrap();
    let wasm = examples().join("cloudevents.wasm");
    // `allow`: no --allow at all, --allow without --allow-private, or both.
    let run = |path: &str, allow: Allow| {
        let mut args = vec![
            wasm.to_str().unwrap().to_string(),
            "--config".into(),
            json!({"url": receiver.url(path)}).to_string(),
            "--batch".into(),
            batch.to_str().unwrap().to_string(),
            "--app".into(),
            "run-app".into(),
            "--webhook".into(),
            "run-hook".into(),
        ];
        if allow != Allow::Nothing {
            args.extend(["--allow".into(), receiver.url("")]);
        }
        if allow == Allow::Private {
            args.push("--allow-private".into());
        }
        sink_run(args)
    };
    let started = now_secs();

    let (ok, stdout, stderr) = run("/run", Allow::Private).await;
    assert!(ok, "exit 1: {stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "delivered", "{stderr}");
    let got = receiver.on("/run").await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_all_valid(&got);
    assert_eq!(got[0]["summary"]["mode"], "batch");
    let parsed = got[0]["summary"]["events"].as_array().unwrap();
    let batch_id = parsed[0]["id"]
        .as_str()
        .unwrap()
        .strip_suffix("-0")
        .unwrap()
        .to_string();
    assert!(!batch_id.is_empty());
    assert_cloud_events(parsed, &events, &batch_id, "/hookline/run-app/run-hook", started);

    let (ok, stdout, stderr) = run("/down", Allow::Private).await;
    assert!(!ok, "a 503 exited 0: {stdout}");
    assert!(stdout.starts_with("retry"), "{stdout}\n{stderr}");
    assert!(stdout.contains("503"), "{stdout}");
    assert_eq!(receiver.on("/down").await.len(), 1);

    let (ok, stdout, stderr) = run("/denied", Allow::Nothing).await;
    assert!(!ok, "an undeclared origin exited 0: {stdout}");
    // HTTP-request-denied: only an app-file change fixes it, so the SDK
    // rejects at once.
    assert!(stdout.starts_with("reject: "), "{stdout}\n{stderr}");
    assert!(stdout.contains("allowed_hosts"), "{stdout}\n{stderr}");
    assert_eq!(
        receiver.requests().await.len(),
        2,
        "a refused request reached the receiver"
    );

    // The origin allowed, but 127.0.0.1 without --allow-private: refused by
    // the host after its own resolution, the log saying what to set.
    let (ok, stdout, stderr) = run("/private", Allow::Origin).await;
    assert!(!ok, "a loopback origin without --allow-private exited 0: {stdout}");
    // destination-IP-prohibited: rejected like a denied origin, the reason
    // saying what to set.
    assert!(stdout.starts_with("reject: "), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("non-public address") && stdout.contains(r#"set "allow_private": true"#),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains(r#"set "allow_private": true"#), "{stdout}\n{stderr}");
    assert_eq!(
        receiver.requests().await.len(),
        2,
        "a request to a loopback address reached the receiver"
    );
}

/// What `hookline sink run` is given to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allow {
    Nothing,
    Origin,
    Private,
}
