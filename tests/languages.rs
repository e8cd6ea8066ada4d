//! Filters in other languages than Rust, built from source in the test run
//! with their SDKs: the JavaScript and Python drop-by-channel deliver byte
//! for byte what the Rust one does and refuse a config naming the field,
//! and hostile JavaScript and Python are contained like hostile Rust.

mod support;

use serde_json::{Value, json};
use support::*;

fn entry(wasm: &std::path::Path, config: Value) -> Value {
    json!({"wasm": wasm.to_str().unwrap(), "config": config})
}

/// The `events` array of a delivery, as the bytes sent.
fn events_bytes(received: &Received) -> String {
    let body = &received.body;
    let at = body.find("\"events\":").expect("a batch body");
    body[at..].to_string()
}

/// Sends the same batches through one webhook per filter (of one app, so
/// they share its batches) and returns each webhook's deliveries' events,
/// as the bytes sent.
async fn deliveries_through(filters: &[(&str, std::path::PathBuf)]) -> Vec<Vec<String>> {
    let receiver = Receiver::start().await;
    let config = json!({"channels": ["debug-*", "*-internal"], "user_ids": ["bot"]});
    let webhooks: Vec<Value> = filters
        .iter()
        .map(|(id, wasm)| {
            json!({"id": id, "url": receiver.url(&format!("/{id}")),
                   "event_types": ["channel_occupied", "member_added", "client_event"],
                   "filters": [entry(wasm, config.clone())]})
        })
        .collect();
    let apps = AppsDir::new();
    let app = json!({"id": "f", "key": "fk", "secret": "fs", "batching": {"max_wait_ms": 50}, "webhooks": webhooks});
    apps.write("f.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    let batches = [
        r#"{"events":[{"name":"channel_occupied","channel":"debug-1"},{"name":"channel_occupied","channel":"room-1"}]}"#,
        r#"{"events":[{"name":"member_added","channel":"presence-a","user_id":"bot"},{"name":"member_added","channel":"presence-a","user_id":"ann","extra":{"b":1,"a":[2]}}]}"#,
        r#"{"events":[{"name":"client_event","channel":"private-chat","event":"client-msg","data":"{\"text\":\"h\u00e9\"}","socket_id":"1.2","user_id":"u"}]}"#,
        r#"{"events":[{"name":"channel_occupied","channel":"x-internal"}]}"#,
    ];
    for batch in batches {
        assert_eq!(native(&daemon, "f", "fk", "fs", batch).await.0, 200);
    }
    // room-1, ann and the client event.
    let mut delivered = Vec::new();
    for (id, _) in filters {
        let got = receiver.wait_for_events(&format!("/{id}"), 3).await;
        delivered.push(got.iter().map(events_bytes).collect::<Vec<_>>());
    }
    delivered
}

/// The same batches through the Rust, JavaScript and Python
/// drop-by-channel give byte-identical deliveries.
#[tokio::test]
async fn drop_by_channel_delivers_the_same_bytes_in_every_language() {
    let delivered = deliveries_through(&[
        ("rust", wasm_filter("drop_by_channel.wasm")),
        ("js", js_filter("examples/filters/drop-by-channel-js")),
        ("py", py_filter("examples/filters/drop-by-channel-py")),
    ])
    .await;
    assert_eq!(delivered[0], delivered[1], "javascript differs from rust");
    assert_eq!(delivered[0], delivered[2], "python differs from rust");
}

/// The same JavaScript module built for StarlingMonkey (componentize-js)
/// delivers the same bytes as the Rust filter too.
#[tokio::test]
async fn javascript_on_starlingmonkey_delivers_the_same_bytes() {
    let delivered = deliveries_through(&[
        ("rust", wasm_filter("drop_by_channel.wasm")),
        (
            "js-sm",
            js_filter_on("examples/filters/drop-by-channel-js", "starlingmonkey"),
        ),
    ])
    .await;
    assert_eq!(
        delivered[0], delivered[1],
        "javascript on starlingmonkey differs from rust"
    );
}

/// At start, a CPython filter compiles in the background (a cold compile
/// cache): the daemon listens at once and accepts the app's events while
/// `/readyz` lists the filter as compiling; the batch waits for the filter
/// and is delivered filtered once it has loaded.
#[tokio::test]
async fn a_python_filter_compiles_while_the_daemon_already_takes_events() {
    let wasm = py_filter("examples/filters/drop-by-channel-py");
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = json!({"id": "p", "key": "pk", "secret": "ps", "batching": {"max_wait_ms": 20},
        "webhooks": [{"url": receiver.url("/p"), "event_types": ["channel_occupied"],
                      "filters": [entry(&wasm, json!({"channels": ["debug-*"]}))]}]});
    apps.write("p.json", &app.to_string());
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions {
            filters_in_background: true,
            ..Default::default()
        },
    );
    let body = events_body(&[("channel_occupied", "debug-1"), ("channel_occupied", "room-1")]);
    assert_eq!(native(&daemon, "p", "pk", "ps", &body).await.0, 200);
    let status = readyz(&daemon).await;
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(
        status["compiling"],
        json!([wasm.display().to_string()]),
        "the events were accepted while the filter compiled"
    );
    assert!(receiver.on("/p").is_empty(), "nothing is delivered unfiltered");
    wait_filters_loaded(&daemon).await;
    let delivered = receiver.wait_for_events("/p", 1).await;
    let channels: Vec<String> = delivered
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .map(|e| e["channel"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(channels, ["room-1"], "the filter dropped debug-1");
    assert!(daemon.logs().contains("every filter loaded"), "{}", daemon.logs());
}

/// `validate-config` refuses a config naming the field, in every language.
#[test]
fn validate_config_errors_name_the_field_in_every_language() {
    for (language, wasm) in [
        ("rust", wasm_filter("drop_by_channel.wasm")),
        ("javascript", js_filter("examples/filters/drop-by-channel-js")),
        ("python", py_filter("examples/filters/drop-by-channel-py")),
        (
            "javascript on starlingmonkey",
            js_filter_on("examples/filters/drop-by-channel-js", "starlingmonkey"),
        ),
    ] {
        let apps = AppsDir::new();
        let app = json!({"id": "f", "key": "fk", "secret": "fs",
            "webhooks": [{"url": "http://127.0.0.1:9/", "event_types": ["channel_occupied"],
                          "filters": [entry(&wasm, json!({"chanels": ["x"]}))]}]});
        apps.write("f.json", &app.to_string());
        let (ok, stderr) = check(&apps);
        assert!(!ok, "{language}");
        assert!(stderr.contains("config refused by the filter"), "{language}: {stderr}");
        assert!(stderr.contains("unknown field `chanels`"), "{language}: {stderr}");
    }
}

/// Runs a hostile filter on one webhook per mode (`on_error: skip`, so each
/// still gets the batch unfiltered) beside a calm app, sends one event to
/// each app, waits for every delivery, and returns the daemon's logs.
async fn contained(wasm: &std::path::Path, modes: &[&str]) -> String {
    let receiver = Receiver::start().await;
    let webhooks: Vec<Value> = modes
        .iter()
        .map(|mode| {
            let mut filter = entry(wasm, json!({"mode": mode}));
            filter["on_error"] = json!("skip");
            if *mode == "memory" {
                // About the memory cap, not the clock.
                filter["cpu_ms"] = json!(5000);
            }
            json!({"id": mode, "url": receiver.url(&format!("/{mode}")), "event_types": ["channel_occupied"],
                   "filters": [filter]})
        })
        .collect();
    let apps = AppsDir::new();
    apps.write(
        "apps.json",
        &json!([
            {"id": "hostile", "key": "hk", "secret": "hs", "batching": {"max_wait_ms": 10}, "webhooks": webhooks},
            {"id": "calm", "key": "ck", "secret": "cs", "batching": {"max_wait_ms": 10},
             "webhooks": [{"url": receiver.url("/calm"), "event_types": ["channel_occupied"]}]}
        ])
        .to_string(),
    );
    let daemon = Daemon::start(apps.path());
    let body = events_body(&[("channel_occupied", "c1")]);
    assert_eq!(native(&daemon, "hostile", "hk", "hs", &body).await.0, 200);
    assert_eq!(native(&daemon, "calm", "ck", "cs", &body).await.0, 200);
    for mode in modes {
        receiver.wait_for(&format!("/{mode}"), 1).await;
    }
    receiver.wait_for("/calm", 1).await;
    assert_eq!(readyz(&daemon).await["ready"], true);
    daemon.logs()
}

/// A JavaScript filter that throws (an Error or any value), loops forever,
/// allocates without end or returns no verdict is handled by `on_error`
/// within its limits, and another app keeps flowing.
#[tokio::test]
async fn hostile_javascript_filters_are_contained() {
    let wasm = js_filter("tests/filters/hostile-js");
    let logs = contained(&wasm, &["throw", "throw-value", "loop", "memory", "bad-verdict"]).await;
    for expected in [
        "returned an error: hostile-js throws on purpose",
        r#"returned an error: {"code":42,"why":"hostile-js throws an object"}"#,
        "CPU deadline",
        "memory",
        "not a verdict",
        "hostile-js mode",
    ] {
        assert!(logs.contains(expected), "{expected:?} missing from:\n{logs}");
    }
}

/// A Python filter that raises, loops forever, allocates without end or
/// returns no verdict is handled by `on_error` within its limits (CPython
/// imports `wasi:sockets` unused: it loads against the deny-all linking).
#[tokio::test]
async fn hostile_python_filters_are_contained() {
    let wasm = py_filter("tests/filters/hostile-py");
    let logs = contained(&wasm, &["raise", "loop", "memory", "bad-verdict"]).await;
    for expected in [
        "returned an error: hostile-py raises on purpose",
        "CPU deadline",
        "memory",
        "not a verdict",
        "hostile-py mode",
    ] {
        assert!(logs.contains(expected), "{expected:?} missing from:\n{logs}");
    }
}

/// The JavaScript and Python SDKs ship the same WIT as the Rust one.
#[test]
fn every_sdk_carries_the_same_wit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rust = std::fs::read_to_string(root.join("sdk/wit/filter.wit")).unwrap();
    let js = std::fs::read_to_string(root.join("sdk/js/wit/filter.wit")).unwrap();
    assert_eq!(rust, js, "copy sdk/wit/filter.wit to sdk/js/wit/filter.wit");
    let python = std::fs::read_to_string(root.join("sdk/python/hookline_filter/wit/filter.wit")).unwrap();
    assert_eq!(
        rust, python,
        "copy sdk/wit/filter.wit to sdk/python/hookline_filter/wit/filter.wit"
    );
}

/// Runs `PROGRAM ARGS` in `dir` and asserts it succeeds.
fn run_ok(dir: &std::path::Path, program: &std::ffi::OsStr, args: &[&str]) {
    let output = std::process::Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"));
    assert!(
        output.status.success(),
        "{program:?} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A JavaScript filter's own tests run natively (`node --test`).
#[test]
fn the_javascript_example_tests_pass_natively() {
    run_ok(
        &repo("examples/filters/drop-by-channel-js"),
        "node".as_ref(),
        &["--test"],
    );
}

/// A Python filter's own tests run natively (`python -m unittest`).
#[test]
fn the_python_example_tests_pass_natively() {
    run_ok(
        &repo("examples/filters/drop-by-channel-py"),
        python().as_os_str(),
        &["-m", "unittest"],
    );
}

/// `hookline filter new` starts a project whose own tests pass natively, in
/// Python and in JavaScript (the Rust template is the SDK tutorial's, which
/// `tests/docs.rs` runs).
#[test]
fn filter_new_scaffolds_projects_whose_tests_pass() {
    let root = tempfile::tempdir().unwrap();
    let sdk = repo("sdk");
    let new = |dir: &std::path::Path, lang: &str| {
        std::process::Command::new(hookline_bin())
            .args(["filter", "new"])
            .arg(dir)
            .args(["--lang", lang, "--sdk"])
            .arg(&sdk)
            .output()
            .unwrap()
    };
    let py = root.path().join("my-py-filter");
    let created = new(&py, "python");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    run_ok(&py, python().as_os_str(), &["-m", "unittest"]);
    let js = root.path().join("my-js-filter");
    let created = new(&js, "js");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    // From npm's cache, which scripts/setup-tests.sh filled.
    let install = [
        "install",
        "--install-links",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
    ];
    run_ok(&js, "npm".as_ref(), &install);
    run_ok(&js, "node".as_ref(), &["--test"]);
    let again = new(&py, "python");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
