//! Sink components in JavaScript (`sdk/js-sink`, `@hookline/sink`): the
//! sink of `tests/sinks/js` is built from source in this run with the SDK's
//! build command (componentize-js: StarlingMonkey, whose `fetch` goes over
//! `wasi:http`), loaded by the real daemon and delivering to a local
//! receiver declared with `allow_private`. Its answers map to outcomes the
//! way an HTTP webhook's do; a request to a host the webhook does not
//! declare is refused by the host, which JavaScript sees as
//! `TypeError: NetworkError` and the SDK turns into a retry naming it.
//!
//! The component is about 12 MiB: each daemon (and `check`) compiles it
//! once, so the file starts one daemon for all the delivery checks.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::*;

const KIND: &str = "wasm:sink_js.wasm";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Builds `tests/sinks/js` with the SDK's build command (installed there by
/// `scripts/setup-tests.sh`), once per test process; returns the component.
fn js_sink() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = repo("tests/sinks/js");
            let build = dir.join("node_modules/@hookline/sink/bin/hookline-sink-js.mjs");
            assert!(
                build.is_file(),
                "{} is missing: scripts/setup-tests.sh installs the JavaScript sinks' packages",
                build.display()
            );
            let out_dir = repo("target/wasm-sdk");
            std::fs::create_dir_all(&out_dir).unwrap();
            let out = out_dir.join(format!("sink_js-{}.wasm", std::process::id()));
            let output = Command::new("node")
                .current_dir(&dir)
                .arg(&build)
                .args(["build", "sink.js", "-o"])
                .arg(&out)
                .output()
                .unwrap_or_else(|e| panic!("run node: {e}"));
            assert!(
                output.status.success(),
                "building tests/sinks/js failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            out
        })
        .clone()
}

/// Copies the built component into the apps directory as `sink_js.wasm`,
/// so the app file names it relative to itself.
fn install(apps: &AppsDir) {
    std::fs::copy(js_sink(), apps.path().join("sink_js.wasm")).unwrap();
}

/// An `allowed_hosts` entry for a local server (`http://127.0.0.1:PORT`).
fn local(origin: &str) -> Value {
    json!({"origin": origin, "allow_private": true})
}

/// Waits until the daemon's log holds `needle`; returns the log.
async fn log_showing(daemon: &Daemon, needle: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let logs = daemon.logs();
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never showed {needle:?}; logs:\n{logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The longest a compile of the component may take (a debug daemon on a
/// busy machine: tens of seconds).
const COMPILE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(300);

/// Starts a daemon on an empty apps directory, then writes `app` there and
/// waits until it is loaded: the component compiles after the daemon is
/// up, for as long as it takes, instead of within the harness's start
/// patience.
async fn start_loading(apps: &AppsDir, app: &Value) -> Daemon {
    let daemon = Daemon::start(apps.path());
    apps.write("app.json", &app.to_string());
    let deadline = std::time::Instant::now() + COMPILE_AT_MOST;
    let id = app["id"].as_str().unwrap();
    loop {
        let logs = daemon.logs();
        if logs.contains(&format!("added=[\"{id}\"]")) {
            return daemon;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "app {id} was not loaded within {COMPILE_AT_MOST:?}; logs:\n{logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One daemon, four webhooks of one app: the JavaScript sink forwarding the
/// signed batch (its first answer a 503 with `Retry-After`), the same sink
/// posting the parsed events, the same sink aimed at a host its
/// `allowed_hosts` does not declare, and a plain HTTP webhook beside them.
#[tokio::test]
async fn a_javascript_sink_delivers_and_an_undeclared_host_is_a_retry_naming_network_error() {
    let receiver = Receiver::start().await;
    // Where the undeclared webhook aims: nothing may ever reach it.
    let elsewhere = Receiver::start().await;
    receiver.script("/fwd", vec![Reply::status(503).with_header("retry-after", "1")]);
    let apps = AppsDir::new();
    install(&apps);
    let allowed = json!([local(&receiver.url(""))]);
    let sink = |config: Value| json!({"wasm": "sink_js.wasm", "config": config, "allowed_hosts": allowed});
    let app = json!({"id": "js", "key": "js-key", "secret": "js-secret", "batching": {"max_wait_ms": 10},
        "webhooks": [
            {"id": "fwd", "sink": sink(json!({"url": receiver.url("/fwd")})), "event_types": ["channel_occupied"],
             "retry": {"min_backoff_ms": 20, "max_backoff_ms": 5000}},
            {"id": "events", "sink": sink(json!({"url": receiver.url("/events"), "mode": "events"})),
             "event_types": ["channel_occupied"]},
            {"id": "undeclared", "sink": sink(json!({"url": elsewhere.url("/x")})), "event_types": ["channel_occupied"],
             "retry": {"max_attempts": 2, "min_backoff_ms": 10, "max_backoff_ms": 20}},
            {"id": "plain", "url": receiver.url("/plain"), "event_types": ["channel_occupied"]}]});
    let daemon = start_loading(&apps, &app).await;

    let body = r#"{"events":[{"name":"channel_occupied","channel":"room-1"},{"name":"channel_occupied","channel":"presence-h\u00e9","colour":"red"}]}"#;
    assert_eq!(native(&daemon, "js", "js-key", "js-secret", body).await.0, 200);

    // Forwarded: the exact signed body and headers, on both attempts; the
    // 503's Retry-After was honoured (the webhook's own backoff is 20 ms).
    let forwarded = receiver.wait_for("/fwd", 2).await;
    let (first, second) = (&forwarded[0], &forwarded[1]);
    assert_eq!((first.answered, second.answered), (503, 200));
    let gap = second.at - first.at;
    assert!(
        gap >= std::time::Duration::from_millis(1000),
        "retried after {gap:?}, before Retry-After: 1"
    );
    for attempt in [first, second] {
        assert_eq!(attempt.header("x-pusher-key"), "js-key");
        assert_eq!(attempt.header("x-pusher-signature"), sign("js-secret", &attempt.body));
    }
    assert_eq!(
        first.header("x-hookline-batch-id"),
        second.header("x-hookline-batch-id")
    );
    let plain = receiver.wait_for("/plain", 1).await;
    assert_eq!(
        second.json()["events"],
        plain[0].json()["events"],
        "the sink forwards what HTTP sends"
    );

    // Posted as parsed events: the request's fields as plain JS values.
    let posted = receiver.wait_for("/events", 1).await;
    let sent = posted[0].json();
    assert_eq!(sent["app"], "js");
    assert_eq!(sent["webhook"], "events");
    assert_eq!(sent["attempt"], 1);
    assert_eq!(
        sent["events"],
        json!([{"name": "channel_occupied", "channel": "room-1", "userId": null, "extra": null},
               {"name": "channel_occupied", "channel": "presence-h\u{e9}", "userId": null, "extra": {"colour": "red"}}])
    );
    assert!(!posted[0].header("x-batch-id").is_empty());

    // Undeclared: refused by the host before any connection; JavaScript
    // sees a NetworkError, the SDK answers retry naming it, and once the
    // attempts run out the batch is a dead letter with that reason.
    log_showing(
        &daemon,
        &format!("{} is not in the webhook's allowed_hosts", elsewhere.url("")),
    )
    .await;
    daemon.wait_metric(&attempts(KIND, "dead_letter"), 1.0).await;
    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let reason = letters[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("request failed: TypeError: NetworkError"),
        "{letters:#?}"
    );
    assert_eq!(letters[0]["webhook_id"], "undeclared", "{letters:#?}");
    assert!(elsewhere.all().is_empty(), "a request reached the undeclared host");
    assert!(
        daemon
            .logs()
            .contains("asked to retry: request failed: TypeError: NetworkError"),
        "{}",
        daemon.logs()
    );
}

/// `check` runs the sink's `validateConfig`: of two webhooks on the same
/// component (compiled once), the one whose config lacks `url` is refused
/// naming the field, the other passes.
#[test]
fn check_runs_the_javascript_validate_config() {
    let apps = AppsDir::new();
    install(&apps);
    let webhook = |config: Value| {
        json!({"event_types": ["channel_occupied"],
               "sink": {"wasm": "sink_js.wasm", "config": config, "allowed_hosts": ["https://example.com"]}})
    };
    let app = json!({"id": "js", "key": "k", "secret": "s", "webhooks": [
        webhook(json!({"url": "https://example.com/in"})),
        webhook(json!({"mode": "forward"}))]});
    apps.write("app.json", &app.to_string());
    let (ok, stderr) = check(&apps);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("webhook 1: `sink.wasm`")
            && stderr.contains("config refused by the sink: config.url must be a string"),
        "{stderr}"
    );
    assert!(!stderr.contains("webhook 0"), "{stderr}");
}

/// The sink's own tests run natively (`node --test`: node's fetch against
/// the SDK's local receiver).
#[test]
fn the_javascript_sink_tests_pass_natively() {
    let output = Command::new("node")
        .current_dir(repo("tests/sinks/js"))
        .arg("--test")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The JavaScript SDK's WIT directory holds the same files as `sdk/wit`.
#[test]
fn the_javascript_sdk_carries_the_same_wit() {
    let same = |ours: &str, theirs: &str| {
        assert_eq!(
            std::fs::read_to_string(repo(ours)).unwrap(),
            std::fs::read_to_string(repo(theirs)).unwrap(),
            "copy {theirs} to {ours}"
        );
    };
    same("sdk/js-sink/wit/sink.wit", "sdk/wit/sink.wit");
    same("sdk/js-sink/wit/deps/filter.wit", "sdk/wit/filter.wit");
    let mut deps: Vec<_> = std::fs::read_dir(repo("sdk/wit/deps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    deps.sort();
    for dep in &deps {
        same(&format!("sdk/js-sink/wit/deps/{dep}"), &format!("sdk/wit/deps/{dep}"));
    }
    let mut ours: Vec<_> = std::fs::read_dir(repo("sdk/js-sink/wit/deps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ours.sort();
    deps.push("filter.wit".to_string());
    deps.sort();
    assert_eq!(
        ours, deps,
        "sdk/js-sink/wit/deps has other files than sdk/wit/deps plus filter.wit"
    );
}

/// Runs `PROGRAM ARGS` in `dir` and asserts it succeeds.
fn run_ok(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .current_dir(dir)
        .args(args)
        .env("HOOKLINE_BIN", "")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `hookline sink new --lang js` starts a project whose own tests pass
/// natively and which builds into a component.
#[test]
fn sink_new_lang_js_scaffolds_a_project_that_tests_and_builds() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("my-js-sink");
    let created = Command::new(hookline_bin())
        .args(["sink", "new"])
        .arg(&dir)
        .args(["--lang", "js", "--sdk"])
        .arg(repo("sdk"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("npm run build"));
    // From npm's cache, which scripts/setup-tests.sh filled.
    run_ok(
        &dir,
        "npm",
        &[
            "install",
            "--install-links",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
        ],
    );
    run_ok(&dir, "node", &["--test"]);
    run_ok(&dir, "npm", &["run", "build"]);
    let wasm = std::fs::metadata(dir.join("my_js_sink.wasm")).expect("npm run build writes my_js_sink.wasm");
    assert!(
        wasm.len() > 1 << 20,
        "a StarlingMonkey component is megabytes, not {} bytes",
        wasm.len()
    );
}
