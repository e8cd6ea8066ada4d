//! The threat model as tests: the real binary against hostile ingest
//! clients, hostile receivers and careless operators (ARCHITECTURE.md,
//! "Threat model"). Each test names what an attacker or a mistake tries and
//! shows the daemon refuses it, or contains it, and stays healthy.

mod support;

use std::time::Duration;

use support::*;

const APPS: &str = r#"[
  {"id": "app-1", "key": "key-1", "secret": "secret-1", "batching": {"max_wait_ms": 10}, "webhooks": [
     {"url": "RECEIVER/hooks", "event_types": ["channel_occupied", "member_added"]}]},
  {"id": "off", "key": "key-off", "secret": "secret-off", "enabled": false, "webhooks": []}
]"#;

async fn setup() -> (Receiver, AppsDir, Daemon) {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let daemon = Daemon::start(apps.path());
    (receiver, apps, daemon)
}

fn relay_body(time_ms: &str, channel: &str) -> String {
    format!(r#"{{"time_ms":{time_ms},"events":[{{"name":"channel_occupied","channel":"{channel}"}}]}}"#)
}

// --- Ingest clients ---------------------------------------------------------

/// A captured relay request must not be replayable: not from the future
/// (it would stay fresh for years), not with a time that is no time.
#[tokio::test]
async fn relay_times_in_the_future_or_not_whole_numbers_are_refused() {
    let (_receiver, _apps, daemon) = setup().await;
    let ten_years = (unix_ms() + 10 * 365 * 86_400_000).to_string();
    let in_two_minutes = (unix_ms() + 120_000).to_string();
    let fraction = format!("{}.5", unix_ms());
    for time in [
        ten_years.as_str(),
        &in_two_minutes,
        "1e400",
        "-1",
        &fraction,
        "\"now\"",
        "null",
    ] {
        let body = relay_body(time, "room-1");
        let (status, text) = relay(&daemon, "key-1", &sign("secret-1", &body), &body).await;
        assert_eq!(status, 401, "time_ms {time}: {text}");
        assert!(text.contains("time_ms"), "{text}");
    }
    // A little ahead (clock skew) is fine.
    let body = relay_body(&(unix_ms() + 30_000).to_string(), "room-1");
    assert_eq!(relay(&daemon, "key-1", &sign("secret-1", &body), &body).await.0, 200);
    assert_eq!(
        daemon
            .metric(r#"hookline_events_received_total{app="app-1",ingest="relay"}"#)
            .await,
        1.0,
        "relay events are counted"
    );
}

/// The contract's order: 401 (a stale request) before 403 (a disabled app).
#[tokio::test]
async fn a_stale_request_to_a_disabled_app_is_401_not_403() {
    let (_receiver, _apps, daemon) = setup().await;
    let stale = relay_body(&(unix_ms() - 700_000).to_string(), "room-1");
    let (status, text) = relay(&daemon, "key-off", &sign("secret-off", &stale), &stale).await;
    assert_eq!(status, 401, "{text}");
    let fresh = relay_body(&unix_ms().to_string(), "room-1");
    let (status, text) = relay(&daemon, "key-off", &sign("secret-off", &fresh), &fresh).await;
    assert_eq!(status, 403, "{text}");
    // And 403 before 400 (malformed).
    let broken = "{\"time_ms\": 1, \"events\": [";
    assert_eq!(
        relay(&daemon, "key-off", &sign("secret-off", broken), broken).await.0,
        403
    );
    // A stale time is 401 even when an event is malformed too, and a body
    // with no time at all is 401: replay protection comes first.
    let stale_and_nameless = format!(r#"{{"time_ms":{},"events":[{{"channel":"c"}}]}}"#, unix_ms() - 700_000);
    let signature = sign("secret-1", &stale_and_nameless);
    assert_eq!(relay(&daemon, "key-1", &signature, &stale_and_nameless).await.0, 401);
    let timeless = r#"{"events":[{"name":"channel_occupied","channel":"c"}]}"#;
    let (status, text) = relay(&daemon, "key-1", &sign("secret-1", timeless), timeless).await;
    assert_eq!(status, 401, "{text}");
}

/// The same signed relay request sent again (a retry, or a replay within
/// the freshness window) is answered 200 and accepted once.
#[tokio::test]
async fn an_identical_relay_request_is_accepted_once() {
    let (receiver, _apps, daemon) = setup().await;
    let body = relay_body(&unix_ms().to_string(), "only-once");
    let signature = sign("secret-1", &body);
    for _ in 0..3 {
        let (status, text) = relay(&daemon, "key-1", &signature, &body).await;
        assert_eq!((status, text.as_str()), (200, "{}"));
    }
    // The same signature in upper case is the same request.
    let (status, _) = relay(&daemon, "key-1", &signature.to_uppercase(), &body).await;
    assert_eq!(status, 200);
    let marker = relay_body(&unix_ms().to_string(), "after");
    assert_eq!(
        relay(&daemon, "key-1", &sign("secret-1", &marker), &marker).await.0,
        200
    );
    receiver
        .wait_until(|all| all.iter().any(|r| r.body.contains("\"after\"")))
        .await;
    // Everything accepted before the marker was delivered before it or
    // with it (batches are formed in order); nothing waits any more.
    daemon.wait_idle().await;
    let copies: usize = receiver.all().iter().map(|r| r.body.matches("only-once").count()).sum();
    assert_eq!(copies, 1);
    assert_eq!(
        daemon
            .metric(r#"hookline_events_received_total{app="app-1",ingest="relay"}"#)
            .await,
        2.0
    );
}

/// Every answer is JSON, even to paths and methods nobody serves.
#[tokio::test]
async fn odd_paths_get_json_answers() {
    let (_receiver, _apps, daemon) = setup().await;
    let client = reqwest::Client::new();
    for (method, path, status) in [
        ("POST", "/apps/%FF/webhook_events", 404),
        ("POST", "/apps/%C0%AF/webhook_events", 404),
        ("POST", "/nothing/here", 404),
        ("GET", "/apps/app-1/webhook_events", 404),
        ("DELETE", "/pusher/webhooks", 404),
    ] {
        let response = client
            .request(method.parse().unwrap(), format!("{}{path}", daemon.url()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
}

// --- Receivers --------------------------------------------------------------

fn one_webhook_app(receiver: &Receiver, retry: &str) -> AppsDir {
    receiver.apps(&format!(
        r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"max_wait_ms": 5}},
            "webhooks": [{{"url": "RECEIVER/hooks", "event_types": ["channel_occupied"], "retry": {retry}}}]}}"#
    ))
}

/// `429` with `Retry-After: 0` asks for an immediate retry: honouring it
/// literally would resend (and fsync) in a tight loop for a day. Each retry
/// waits at least `min_backoff_ms`.
#[tokio::test]
async fn retry_after_zero_is_not_a_tight_loop() {
    let receiver = Receiver::start().await;
    let throttle = || Reply::status(429).with_header("retry-after", "0");
    receiver.script("/hooks", vec![throttle(), throttle(), throttle()]);
    let apps = one_webhook_app(&receiver, r#"{"min_backoff_ms": 300, "max_backoff_ms": 600}"#);
    let daemon = Daemon::start(apps.path());
    let body = events_body(&[("channel_occupied", "c")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    let attempts = receiver.wait_for("/hooks", 4).await;
    for pair in attempts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(300), "retried after {gap:?}");
    }
    // The fourth attempt was answered 200: delivered.
    daemon.wait_metric(&attempts_metric("success"), 1.0).await;
}

fn attempts_metric(outcome: &str) -> String {
    attempts("http", outcome)
}

/// A throttle is not a success: it must not close (or keep closed) the
/// circuit of an endpoint that otherwise fails.
#[tokio::test]
async fn a_429_is_never_a_breaker_success() {
    let receiver = Receiver::start().await;
    receiver.script(
        "/hooks",
        vec![
            Reply::status(503),
            Reply::status(429).with_header("retry-after", "0"),
            Reply::status(503),
        ],
    );
    let apps = one_webhook_app(&receiver, r#"{"min_backoff_ms": 50, "max_backoff_ms": 100}"#);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[
            ("HOOKLINE_DELIVERY_CIRCUIT_FAILURES", "2"),
            ("HOOKLINE_DELIVERY_CIRCUIT_OPEN_MS", "200"),
        ]),
    );
    let body = events_body(&[("channel_occupied", "c")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    // 503, 429, 503: two failures in a row as far as the breaker goes.
    receiver.wait_for("/hooks", 4).await;
    let logs = daemon.logs();
    assert!(logs.contains("circuit open"), "{logs}");
}

/// A `Retry-After` date far in the future is a long wait (capped by the
/// policy), not a crash of the attempt that would lose its place.
#[tokio::test]
async fn a_retry_after_date_far_in_the_future_is_a_capped_wait() {
    let receiver = Receiver::start().await;
    receiver.script(
        "/hooks",
        vec![
            Reply::status(429).with_header("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
            Reply::status(429).with_header("retry-after", "Fri, 31 Dec 99999999999999 23:59:59 GMT"),
        ],
    );
    let apps = one_webhook_app(&receiver, r#"{"min_backoff_ms": 100, "max_backoff_ms": 200}"#);
    let daemon = Daemon::start(apps.path());
    let body = events_body(&[("channel_occupied", "far")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    let attempts = receiver.wait_for("/hooks", 3).await;
    assert!(attempts[2].body.contains("far"));
    let logs = daemon.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

// --- Careless operators and other local users ------------------------------

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn filtered_app(receiver: &Receiver) -> AppsDir {
    let apps = AppsDir::new();
    let app = serde_json::json!({"id": "a", "key": "ka", "secret": "sa",
        "webhooks": [{"url": receiver.url("/h"), "event_types": ["channel_occupied"],
            "filters": [{"wasm": wasm_filter("drop_by_channel.wasm").to_str().unwrap(),
                         "config": {"channels": ["x"]}}]}]});
    apps.write("a.json", &app.to_string());
    apps
}

/// Under `umask 000` every file the daemon makes would be world-writable;
/// the compiled filter cache is native code it runs. All of it is owner-only.
#[tokio::test]
async fn the_data_directory_is_owner_only_whatever_the_umask() {
    let receiver = Receiver::start().await;
    let apps = filtered_app(&receiver);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions {
            data_dir: Some(data_dir.clone()),
            umask: Some(0),
            ..Default::default()
        },
    );
    assert_eq!(
        native(&daemon, "a", "ka", "sa", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    receiver.wait_for("/h", 1).await;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("store.redb")), 0o600);
    assert_eq!(mode(&data_dir.join("admin.sock")), 0o600);
    let cache = data_dir.join("filter-cache");
    assert_eq!(mode(&cache), 0o700);
    let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(entries.len() >= 2, "a key and a compiled filter: {entries:?}");
    for entry in entries {
        assert_eq!(mode(&entry), 0o600, "{}", entry.display());
    }
}

/// A compiled filter is only loaded when this daemon signed it: one planted
/// in the cache (here: another daemon's, valid for wasmtime) is compiled
/// anew instead of run.
#[tokio::test]
async fn a_planted_compiled_filter_is_not_trusted() {
    let receiver = Receiver::start().await;
    let apps = filtered_app(&receiver);
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    for dir in [&first, &second] {
        let daemon = Daemon::start_with(
            apps.path(),
            DaemonOptions {
                data_dir: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
        );
        assert_eq!(daemon.metric("hookline_filter_compilations_total").await, 1.0);
    }
    // Plant the first daemon's entry (compiled code and its MAC, signed
    // with the first daemon's key) in the second's cache.
    let mut planted = 0;
    for file in std::fs::read_dir(first.path().join("filter-cache")).unwrap() {
        let file = file.unwrap().path();
        let name = file.file_name().unwrap().to_str().unwrap();
        if name.ends_with(".cwasm") || name.ends_with(".cwasm.mac") {
            std::fs::copy(&file, second.path().join("filter-cache").join(name)).unwrap();
            planted += 1;
        }
    }
    assert_eq!(planted, 2, "an entry is the compiled component and its MAC");
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions {
            data_dir: Some(second.path().to_path_buf()),
            ..Default::default()
        },
    );
    assert_eq!(daemon.metric("hookline_filter_cache_hits_total").await, 0.0);
    assert_eq!(daemon.metric("hookline_filter_compilations_total").await, 1.0);
    assert!(
        daemon.logs().contains("not signed with this daemon's cache key"),
        "{}",
        daemon.logs()
    );
}

fn check_within(apps: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(hookline_bin());
    command
        .args(["check", "--apps"])
        .arg(apps)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("hookline check did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What would fail every batch at send time, or hang the load, fails
/// `check` (and the load) at once instead.
#[test]
fn check_catches_unsendable_headers_and_unreadable_filter_paths() {
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        r#"{"id": "a", "key": "ka", "secret": "s", "webhooks": [
            {"url": "http://127.0.0.1:1/h", "event_types": ["channel_occupied"],
             "headers": {"Authorization": "Bearer ${HOOKLINE_HOSTILE_TOKEN}"}}]}"#,
    );
    apps.write(
        "b.json",
        r#"{"id": "b", "key": "kb", "secret": "s", "filters": [{"wasm": "/dev/zero"}], "webhooks": [
            {"url": "http://127.0.0.1:1/h", "event_types": ["channel_occupied"]}]}"#,
    );
    let (ok, stderr) = check_within(apps.path(), &[("HOOKLINE_HOSTILE_TOKEN", "t0ken\n")]);
    assert!(!ok);
    assert!(
        stderr.contains("header `Authorization` has a value that is not a valid HTTP header value"),
        "{stderr}"
    );
    assert!(!stderr.contains("t0ken"), "the value is never shown: {stderr}");
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

// --- Slow and greedy clients -------------------------------------------------

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or `PATIENCE` passes);
/// returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open; got {:?}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

const HALF_HEADERS: &[u8] = b"POST /apps/app-1/webhook_events HTTP/1.1\r\nHost: x\r\n";
const HALF_BODY: &[u8] =
    b"POST /apps/app-1/webhook_events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"events\":";

/// A client that sends its headers or its body too slowly is answered 408
/// or disconnected after `read_timeout_ms`; the others are served meanwhile.
#[tokio::test]
async fn stalled_clients_are_timed_out() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_INGEST_READ_TIMEOUT_MS", "300")]),
    );
    let mut silent = TcpStream::connect(daemon.addr).await.unwrap();
    let mut half_headers = TcpStream::connect(daemon.addr).await.unwrap();
    half_headers.write_all(HALF_HEADERS).await.unwrap();
    let mut half_body = TcpStream::connect(daemon.addr).await.unwrap();
    half_body.write_all(HALF_BODY).await.unwrap();
    assert_eq!(
        reqwest::get(format!("{}/healthz", daemon.url()))
            .await
            .unwrap()
            .status(),
        200
    );
    read_until_closed(&mut silent).await;
    read_until_closed(&mut half_headers).await;
    let answer = read_until_closed(&mut half_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("read_timeout_ms"), "{answer}");
}

/// Past `max_connections`, new connections are closed at once, and the
/// daemon serves again as soon as some close.
#[tokio::test]
async fn connections_past_the_cap_are_closed() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_INGEST_MAX_CONNECTIONS", "4")]),
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(daemon.addr).await.unwrap();
        stream.write_all(HALF_HEADERS).await.unwrap();
        held.push(stream);
    }
    // Accepted in order: once the fifth is closed, the four are in.
    let mut fifth = TcpStream::connect(daemon.addr).await.unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut fifth).await;
    assert!(answer.is_empty(), "{answer}");
    drop(held);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match reqwest::get(format!("{}/healthz", daemon.url())).await {
            Ok(response) if response.status() == 200 => break,
            _ => {
                assert!(std::time::Instant::now() < deadline, "never served again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(daemon.logs().contains("connection limit reached"), "{}", daemon.logs());
}

/// Hundreds of clients that never finish a request do not hold SIGTERM:
/// the daemon closes them and exits while they are still connected; one
/// whose body was still arriving is answered 503.
#[tokio::test]
async fn stalled_clients_do_not_hold_shutdown() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let mut daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_SHUTDOWN_GRACE_MS", "500")]),
    );
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut stream = TcpStream::connect(daemon.addr).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(HALF_HEADERS).await.unwrap();
        }
        stalled.push(stream);
    }
    let mut half_body = TcpStream::connect(daemon.addr).await.unwrap();
    half_body.write_all(HALF_BODY).await.unwrap();
    // Served before the signal: the daemon is healthy with all of them.
    assert_eq!(
        reqwest::get(format!("{}/healthz", daemon.url()))
            .await
            .unwrap()
            .status(),
        200
    );
    daemon.signal("TERM");
    let status = tokio::task::spawn_blocking(move || daemon.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let answer = read_until_closed(&mut half_body).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(stalled);
}

/// A daemon on its own data directory (where the admin socket is), with
/// this open-file limit if given.
async fn admin_daemon(nofile: Option<u64>) -> (Receiver, AppsDir, tempfile::TempDir, Daemon) {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions {
            data_dir: Some(data.path().to_path_buf()),
            nofile,
            ..Default::default()
        },
    );
    (receiver, apps, data, daemon)
}

/// The admin socket takes one bounded line: a client that sends an endless
/// one is answered with an error, and the daemon keeps answering others.
#[tokio::test]
async fn the_admin_socket_refuses_an_endless_line() {
    use tokio::net::UnixStream;
    let (_receiver, _apps, data, daemon) = admin_daemon(None).await;
    let socket = data.path().join("admin.sock");
    let mut endless = UnixStream::connect(&socket).await.unwrap();
    // Past the 64 KiB a request may be, and no newline.
    endless.write_all(&vec![b'x'; (64 << 10) + 1]).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, endless.read_to_end(&mut answer)).await;
        format!("{}{read:?}", String::from_utf8_lossy(&answer))
    });
    let answer = writer.await.unwrap();
    assert!(answer.contains("not one line of at most"), "{answer:?}");
    // Meanwhile and after, the CLI works through the socket.
    let (ok, out, err) = dlq(data.path(), &["list"]);
    assert!(ok, "{err}");
    assert!(out.contains("no dead letters"), "{out}");
    drop(daemon);
}

/// A client that connects to the admin socket and says nothing is answered
/// with an error after 10 s and let go; it never holds its task forever.
#[tokio::test]
async fn the_admin_socket_lets_a_silent_client_go() {
    use tokio::net::UnixStream;
    let (_receiver, _apps, data, _daemon) = admin_daemon(None).await;
    let mut silent = UnixStream::connect(data.path().join("admin.sock")).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, silent.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "still held after {PATIENCE:?}");
    assert!(answer.contains("no request line within 10 s"), "{answer:?}");
}

/// When the admin socket cannot accept (out of file descriptors), it waits
/// 50 ms between tries instead of spinning, and answers again once
/// descriptors are free.
#[tokio::test]
async fn admin_accept_errors_back_off() {
    use tokio::net::UnixStream;
    let (_receiver, _apps, data, daemon) = admin_daemon(Some(256)).await;
    let socket = data.path().join("admin.sock");
    let started = std::time::Instant::now();
    // Silent clients hold a descriptor each for 10 s; past the limit the
    // kernel still queues connections (backlog) and accept fails.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(stream) = UnixStream::connect(&socket).await {
            flood.push(stream);
        }
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while !daemon.logs().contains("admin socket: cannot accept") {
        assert!(
            std::time::Instant::now() < deadline,
            "accept never failed:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warnings = daemon.logs().matches("admin socket: cannot accept").count() as u128;
    let most = started.elapsed().as_millis() / 50 + 5;
    assert!(
        warnings <= most,
        "{warnings} accept errors in {:?}: a busy loop",
        started.elapsed()
    );
    drop(flood);
    // Free again: the CLI works through the socket.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (ok, out, err) = dlq(data.path(), &["list"]);
        if ok && out.contains("no dead letters") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never answered again: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- Filter code --------------------------------------------------------------

/// A filter that leaves WASI resources open does not pile them up in a
/// reused instance: each call after such a one gets a fresh instance, and
/// every batch is still delivered.
#[tokio::test]
async fn a_filter_leaking_wasi_resources_is_not_reused() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = serde_json::json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 5},
        "webhooks": [{"url": receiver.url("/h"), "event_types": ["channel_occupied"],
            "filters": [{"wasm": wasm_filter("hostile_filter.wasm").to_str().unwrap(),
                         "config": {"mode": "leak-pollables"}}]}]});
    apps.write("a.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    for i in 0..3 {
        let body = events_body(&[("channel_occupied", &format!("leak-{i}"))]);
        assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
        receiver
            .wait_until(|all| all.iter().any(|r| r.body.contains(&format!("leak-{i}"))))
            .await;
    }
    let logs = daemon.logs();
    assert!(
        logs.matches("left WASI resources open").count() >= 3,
        "every call's instance is discarded:\n{logs}"
    );
}

/// The connection cap stays below the open-file limit (raised to the hard
/// limit first), so a flood of idle connections meets the cap, not EMFILE:
/// the daemon keeps serving and delivering.
#[tokio::test]
async fn the_connection_cap_fits_the_open_file_limit() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions {
            nofile: Some(256),
            ..Default::default()
        },
    );
    assert!(
        daemon.logs().contains("above what the open-file limit allows"),
        "{}",
        daemon.logs()
    );
    // More idle connections than descriptors.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = TcpStream::connect(daemon.addr).await {
            flood.push(stream);
        }
    }
    // The cap closed the excess; with some closed, ingest and delivery work.
    flood.truncate(100);
    let body = events_body(&[("channel_occupied", "after-flood")]);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match post_native(&daemon.url(), "app-1", "key-1", "secret-1", &body).await {
            Ok(response) if response.status() == 200 => break,
            _ => {
                assert!(std::time::Instant::now() < deadline, "never served again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    receiver.wait_for("/hooks", 1).await;
    assert!(!daemon.logs().contains("Too many open files"), "{}", daemon.logs());
}

/// `wasi:sockets` is linked with every operation denied: a filter that
/// connects, resolves a name and binds a UDP socket loads, gets an error
/// for each (its `err` goes to `on_error`), nothing reaches the listener it
/// aimed at, and other apps keep flowing.
#[tokio::test]
async fn a_filter_cannot_open_a_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = serde_json::json!([
        {"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 5},
         "webhooks": [{"url": receiver.url("/phoned"), "event_types": ["channel_occupied"],
            "filters": [{"wasm": wasm_filter("uses_sockets.wasm").to_str().unwrap(),
                         "config": {"connect": target}, "on_error": "drop"}]}]},
        {"id": "b", "key": "kb", "secret": "sb", "batching": {"max_wait_ms": 5},
         "webhooks": [{"url": receiver.url("/other"), "event_types": ["channel_occupied"]}]}
    ]);
    apps.write("apps.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    let body = events_body(&[("channel_occupied", "phone-home")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    assert_eq!(native(&daemon, "b", "kb", "sb", &body).await.0, 200);
    receiver.wait_for("/other", 1).await;
    daemon
        .wait_metric(r#"hookline_filter_calls_total{verdict="error"}"#, 1.0)
        .await;
    let logs = daemon.logs();
    for denied in ["connect:", "lookup:", "udp:"] {
        assert!(logs.contains(denied), "{denied} missing:\n{logs}");
    }
    assert!(logs.to_lowercase().contains("denied"), "{logs}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection reached the listener"
    );
    assert!(receiver.on("/phoned").is_empty());
}

/// Peak resident memory of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

/// A `replace` whose 3000 event names all point at one 1 MiB string in
/// guest memory is refused while it is lifted, once its text passes the
/// 64 MiB output cap: the daemon never copies gigabytes for it.
#[tokio::test]
async fn a_replace_aliasing_one_string_is_refused_before_it_is_copied() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = serde_json::json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 5},
        "webhooks": [{"url": receiver.url("/h"), "event_types": ["channel_occupied"],
            "filters": [{"wasm": wasm_filter("hostile_filter.wasm").to_str().unwrap(),
                         "config": {"mode": "replace-aliased"}}]}]});
    apps.write("a.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    let body = events_body(&[("channel_occupied", "alias")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    daemon
        .wait_metric(r#"hookline_filter_calls_total{verdict="error"}"#, 1.0)
        .await;
    let logs = daemon.logs();
    assert!(logs.contains("returned more than 64 MiB of text"), "{logs}");
    let peak = peak_rss_mib(daemon.pid());
    assert!(peak < 512, "the daemon peaked at {peak} MiB");
}
