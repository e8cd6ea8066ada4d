//! WASM filters end to end: the example filters, compiled from source for
//! wasm32-wasip2 in this test run, change deliveries as their configs say;
//! hostile filters are contained by every `on_error` mode while another app
//! keeps flowing; forbidden imports and rejected configs fail to load; the
//! compile cache survives a restart.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn filter_entry(file: &str, config: Value) -> Value {
    json!({"wasm": wasm_filter(file).to_str().unwrap(), "config": config})
}

#[tokio::test]
async fn the_example_filters_change_deliveries_as_configured() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = json!({"id": "f", "key": "fk", "secret": "fs", "batching": {"max_wait_ms": 300},
    "filters": [filter_entry("drop_by_channel.wasm", json!({"channels": ["debug-*"]}))],
    "webhooks": [
        {"url": receiver.url("/all"), "event_types": ["client_event", "member_added"]},
        {"url": receiver.url("/redacted"), "event_types": ["client_event"],
         "filters": [filter_entry("redact_client_data.wasm", json!({"keys": ["email"], "replacement": "***"}))]},
        {"url": receiver.url("/collapsed"), "event_types": ["client_event"],
         "filters": [filter_entry("collapse_client_events.wasm", json!({"events": ["client-typing"]}))]},
        {"url": receiver.url("/no-bots"), "event_types": ["member_added"],
         "filters": [filter_entry("drop_by_channel.wasm", json!({"user_ids": ["bot"]}))]}
    ]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    let body = r#"{"events":[
        {"name":"client_event","channel":"debug-1","event":"client-typing","data":"{}"},
        {"name":"client_event","channel":"room","event":"client-typing","data":"{\"n\":1}","socket_id":"1.1"},
        {"name":"client_event","channel":"room","event":"client-message","data":"{\"text\":\"hi\",\"email\":\"a@b.c\"}","weird":1.0},
        {"name":"client_event","channel":"room","event":"client-typing","data":"{\"n\":2}"},
        {"name":"member_added","channel":"presence-room","user_id":"bot"},
        {"name":"member_added","channel":"presence-room","user_id":"ann"}
    ]}"#;
    assert_eq!(native(&daemon, "f", "fk", "fs", body).await.0, 200);
    let all = receiver.wait_for("/all", 1).await;
    let redacted = receiver.wait_for("/redacted", 1).await;
    let collapsed = receiver.wait_for("/collapsed", 1).await;
    let no_bots = receiver.wait_for("/no-bots", 1).await;

    // The app's chain dropped debug-* for every webhook; kept events are the
    // original bytes (note `"weird":1` re-stringified, not rewritten).
    let events = |r: &Received| r.json()["events"].as_array().unwrap().clone();
    assert_eq!(events(&all[0]).len(), 5);
    assert!(
        all[0]
            .body
            .contains(r#""data":"{\"text\":\"hi\",\"email\":\"a@b.c\"}","weird":1}"#),
        "{}",
        all[0].body
    );
    let message = &events(&redacted[0])[1];
    assert_eq!(message["data"], r#"{"text":"hi","email":"***"}"#);
    assert_eq!(message["weird"], 1, "extra fields survive a replace");
    let collapsed_events: Vec<(String, String)> = events(&collapsed[0])
        .iter()
        .map(|e| (e["event"].as_str().unwrap().into(), e["data"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        collapsed_events,
        [
            (
                "client-message".to_string(),
                r#"{"text":"hi","email":"a@b.c"}"#.to_string()
            ),
            ("client-typing".into(), r#"{"n":2}"#.into())
        ]
    );
    assert_eq!(events(&no_bots[0]).len(), 1);
    assert_eq!(events(&no_bots[0])[0]["user_id"], "ann");
    assert_officially_valid("fk", "fs", &[all, redacted, collapsed, no_bots].concat());

    // Every call is counted by verdict and timed: the app's filter once per
    // webhook (a `select`), the redaction a `replace`.
    let calls = |verdict: &str| format!(r#"hookline_filter_calls_total{{verdict="{verdict}"}}"#);
    assert!(daemon.metric(&calls("select")).await >= 4.0);
    assert!(daemon.metric(&calls("replace")).await >= 1.0);
    assert_eq!(daemon.metric(&calls("error")).await, 0.0);
    assert!(daemon.metric("hookline_filter_duration_seconds_count").await >= 6.0);
}

const MODES: [&str; 6] = [
    "loop",
    "memory",
    "panic",
    "err",
    "select-out-of-range",
    "replace-empty-channel",
];

#[tokio::test]
async fn hostile_filters_are_contained_by_every_on_error_mode_while_another_app_flows() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let mut webhooks = Vec::new();
    for mode in MODES {
        for on_error in ["skip", "drop", "retry"] {
            let mut entry = filter_entry("hostile_filter.wasm", json!({"mode": mode}));
            entry["on_error"] = json!(on_error);
            if mode == "memory" {
                // Touching 64 MiB can take longer than the default 50 ms on
                // a loaded machine; this mode is about the memory cap.
                entry["cpu_ms"] = json!(5000);
            }
            webhooks.push(
                json!({"id": format!("{mode}/{on_error}"), "url": receiver.url(&format!("/{mode}/{on_error}")),
                "event_types": ["channel_occupied"], "filters": [entry]}),
            );
        }
    }
    let hostile = json!({"id": "hostile", "key": "hk", "secret": "hs",
        "retry": {"max_age_ms": 1500, "min_backoff_ms": 100, "max_backoff_ms": 300}, "webhooks": webhooks});
    let calm = json!({"id": "calm", "key": "ck", "secret": "cs", "batching": {"max_wait_ms": 20},
        "webhooks": [{"url": receiver.url("/calm"), "event_types": ["channel_occupied"]}]});
    apps.write("apps.json", &json!([hostile, calm]).to_string());
    let daemon = Daemon::start(apps.path());

    let body = events_body(&[("channel_occupied", "c1"), ("channel_occupied", "c2")]);
    assert_eq!(native(&daemon, "hostile", "hk", "hs", &body).await.0, 200);
    // Meanwhile, the calm app's events keep arriving promptly.
    for i in 0..10 {
        let sent = Instant::now();
        assert_eq!(
            native(
                &daemon,
                "calm",
                "ck",
                "cs",
                &events_body(&[("channel_occupied", &format!("calm-{i}"))])
            )
            .await
            .0,
            200
        );
        receiver.wait_for("/calm", i + 1).await;
        // A stalled daemon would hold it for the sleeping filter's 10 s; a
        // slow machine takes tens of milliseconds, not seconds.
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "calm delivery {i} took {:?}",
            sent.elapsed()
        );
    }
    // skip: the filter is passed over, the batch delivered as it came in.
    for mode in MODES {
        let got = receiver.wait_for(&format!("/{mode}/skip"), 1).await;
        assert_eq!(got[0].event_count(), 2, "{mode}/skip");
    }
    // retry: never delivered unfiltered; dead-lettered when the window ends.
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="http",outcome="dead_letter"}"#,
            MODES.len() as f64,
        )
        .await;
    for mode in MODES {
        assert!(
            receiver.on(&format!("/{mode}/retry")).is_empty(),
            "{mode}/retry delivered unfiltered"
        );
        assert!(
            receiver.on(&format!("/{mode}/drop")).is_empty(),
            "{mode}/drop delivered"
        );
    }
    let logs = daemon.logs();
    for expected in [
        "ran past its CPU deadline",
        "hit its memory cap",
        "panicked or aborted",
        "returned an error: hostile filter returns an error on purpose",
        "select: index 99 is out of range for 2 events",
        "replace: event 0 has an empty channel",
    ] {
        assert!(logs.contains(expected), "logs lack {expected:?}:\n{logs}");
    }
}

#[tokio::test]
async fn a_retried_filter_runs_again_and_then_delivers() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    // A filter that fails until a time an hour away: the batch retries.
    let app = |until: u64| {
        let mut filter = filter_entry("hostile_filter.wasm", json!({"mode": "err-until"}));
        filter["config"]["until_ms"] = json!(until);
        json!({"id": "r", "key": "rk", "secret": "rs", "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200},
            "webhooks": [{"url": receiver.url("/later"), "event_types": ["channel_occupied"], "filters": [filter]}]})
        .to_string()
    };
    let file = apps.write("app.json", &app(unix_ms() + 3_600_000));
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "r", "rk", "rs", &events_body(&[("channel_occupied", "x")]))
            .await
            .0,
        200
    );
    let deadline = Instant::now() + PATIENCE;
    while !daemon.logs().contains("not yet:") {
        assert!(Instant::now() < deadline, "the filter never failed:\n{}", daemon.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiver.all().is_empty(), "never delivered unfiltered");
    // The filter's config changes (it now passes): the retry runs the
    // then-current filter and delivers.
    std::fs::write(&file, app(0)).unwrap();
    let got = receiver.wait_for("/later", 1).await;
    assert_eq!(got[0].event_count(), 1);
}

#[test]
fn the_example_apps_directory_passes_check() {
    wasm_filters();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps");
    let output = Command::new(hookline_bin())
        .args(["check", "--apps"])
        .arg(&examples)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok: 4 apps in 3 files"), "{stdout}");
}

#[test]
fn forbidden_imports_and_rejected_configs_fail_to_load() {
    let apps = AppsDir::new();
    let http_wat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filters/imports-wasi-http.wat");
    let app = json!([
        {"id": "http", "key": "k2", "secret": "s", "filters": [{"wasm": http_wat.to_str().unwrap()}],
            "webhooks": [{"url": "http://x/", "event_types": ["a"]}]},
        {"id": "config", "key": "k3", "secret": "s", "webhooks": [{"url": "http://x/", "event_types": ["a"],
            "filters": [filter_entry("hostile_filter.wasm", json!({"mode": "reject-config"}))]}]},
        {"id": "typo", "key": "k4", "secret": "s", "webhooks": [{"url": "http://x/", "event_types": ["a"],
            "filters": [filter_entry("drop_by_channel.wasm", json!({"chanels": ["x"]}))]}]}
    ]);
    apps.write("apps.json", &app.to_string());
    let (ok, stderr) = check(&apps);
    assert!(!ok);
    assert!(
        stderr.contains("imports `wasi:http/outgoing-handler@0.2.0`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("config refused by the filter: this config is rejected on purpose"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `chanels`"), "{stderr}");
}

fn filter_run(file: &str, config: &str, batch: &str) -> (bool, String, String) {
    let mut child = Command::new(hookline_bin())
        .args(["filter", "run"])
        .arg(wasm_filter(file))
        .args(["--config", config])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_filter_that_prints_on_every_call_keeps_working() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = json!({"id": "p", "key": "pk", "secret": "ps", "batching": {"enabled": false},
        "webhooks": [{"url": receiver.url("/chatty"), "event_types": ["channel_occupied"],
            "filters": [filter_entry("hostile_filter.wasm", json!({"mode": "chatty"}))]}]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    // One batch per request: each is a call on the same pooled instance,
    // printing 20 KiB, far past 64 KiB in all.
    for i in 0..8 {
        let channel = format!("c{i}");
        let body = events_body(&[("channel_occupied", channel.as_str())]);
        assert_eq!(native(&daemon, "p", "pk", "ps", &body).await.0, 200);
    }
    let got = receiver.wait_for("/chatty", 8).await;
    assert_eq!(got.len(), 8);
    let logs = daemon.logs();
    assert!(!logs.contains("trapped"), "printing made the filter fail:\n{logs}");
    assert!(logs.contains("chatty line 000"), "the filter's output is logged");
    assert!(!logs.contains("chatty line 150"), "a call logs at most 100 lines");
    assert!(logs.contains("the rest was dropped"), "and says so");
}

#[test]
fn filter_run_prints_each_verdict_and_the_resulting_batch() {
    let batch = r#"{"time_ms":7,"events":[{"name":"client_event","channel":"debug-1","event":"client-x","data":"{\"email\":\"e\"}"},{"name":"client_event","channel":"room","n":1.0}]}"#;
    let (ok, out, err) = filter_run("hostile_filter.wasm", r#"{"mode":"keep"}"#, batch);
    assert!(ok, "{err}");
    assert_eq!(out.lines().next(), Some("verdict: keep"));
    assert!(
        out.contains(r#"{"name":"client_event","channel":"room","n":1}]}"#),
        "{out}"
    );
    let (_, out, _) = filter_run("drop_by_channel.wasm", r#"{"channels":["debug-*"]}"#, batch);
    assert_eq!(
        out,
        "verdict: select [1]\n{\"time_ms\":7,\"events\":[{\"name\":\"client_event\",\"channel\":\"room\",\"n\":1}]}\n"
    );
    let (_, out, _) = filter_run("drop_by_channel.wasm", r#"{"channels":["*"]}"#, batch);
    assert_eq!(out, "verdict: drop (no event passed the filter)\n");
    let (_, out, _) = filter_run("redact_client_data.wasm", r#"{"keys":["email"]}"#, batch);
    assert!(out.starts_with("verdict: replace (2 events)\n"), "{out}");
    assert!(out.contains(r#""data":"{}""#), "{out}");
    let (ok, _, err) = filter_run("hostile_filter.wasm", r#"{"mode":"loop"}"#, batch);
    assert!(!ok);
    assert!(err.contains("ran past its CPU deadline"), "{err}");
    // Sleeping happens in the host, where no epoch check runs: the sleep
    // itself must end at the deadline (unbounded, it would return `keep`).
    let (ok, _, err) = filter_run("hostile_filter.wasm", r#"{"mode":"sleep"}"#, batch);
    assert!(!ok, "a filter sleeping 10 s passed its 50 ms deadline");
    assert!(err.contains("ran past its CPU deadline"), "{err}");
}

/// A filter whose `validate-config` refuses its config at start, where
/// filters load in the background: once the load fails, the file is
/// refused as at a reload (named in `file_errors`, its app gone), and the
/// other file's app keeps serving.
#[tokio::test]
async fn a_filter_refusing_its_config_at_start_refuses_its_file_once_loaded() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let bad = json!({"id": "typo", "key": "tk", "secret": "ts", "webhooks": [{"url": receiver.url("/typo"),
        "event_types": ["a"], "filters": [filter_entry("drop_by_channel.wasm", json!({"chanels": ["x"]}))]}]});
    apps.write("typo.json", &bad.to_string());
    apps.write(
        "good.json",
        &json!({"id": "good", "key": "gk", "secret": "gs",
            "webhooks": [{"url": receiver.url("/good"), "event_types": ["a"]}]})
        .to_string(),
    );
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions {
            filters_in_background: true,
            ..Default::default()
        },
    );
    // Refused, and its app gone: a reload the watcher starts meanwhile may
    // report the file's error first while the app still serves, until the
    // failed load's own reload takes it away.
    let status = wait_ready(&daemon, "the file refused and its app gone", |s| {
        !s["file_errors"].as_array().unwrap().is_empty() && s["apps"] == 1
    })
    .await;
    let error = status["file_errors"][0].as_str().unwrap();
    assert!(
        error.contains("typo.json") && error.contains("unknown field `chanels`"),
        "{status}"
    );
    assert_eq!(status["apps"], 1, "{status}");
    assert_eq!(status["compiling"], json!([]), "{status}");
    assert_eq!(
        native(&daemon, "typo", "tk", "ts", &events_body(&[("a", "c")])).await.0,
        404,
        "the refused file's app is gone"
    );
    assert_eq!(
        native(&daemon, "good", "gk", "gs", &events_body(&[("a", "c")])).await.0,
        200
    );
    receiver.wait_for("/good", 1).await;
    assert!(
        daemon.logs().contains("a filter loading in the background failed"),
        "{}",
        daemon.logs()
    );
}

#[tokio::test]
async fn a_restart_loads_filters_from_the_compile_cache() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = json!({"id": "c", "key": "ck", "secret": "cs", "webhooks": [{"url": receiver.url("/c"), "event_types": ["a"],
        "filters": [filter_entry("drop_by_channel.wasm", json!({"channels": ["x"]})),
                    filter_entry("collapse_client_events.wasm", json!(null))]}]});
    apps.write("app.json", &app.to_string());
    let data = tempfile::tempdir().unwrap();
    let options = DaemonOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let first = Daemon::start_with(apps.path(), options.clone());
    assert_eq!(first.metric("hookline_filter_compilations_total").await, 2.0);
    assert_eq!(first.metric("hookline_filter_cache_hits_total").await, 0.0);
    // Each compile is logged as it starts and as it ends, with its time.
    let logs = first.logs();
    for file in ["drop_by_channel.wasm", "collapse_client_events.wasm"] {
        let path = wasm_filter(file).display().to_string();
        let said = |what: &str| {
            logs.lines()
                .find(|l| l.contains(what) && l.contains(&path))
                .unwrap_or_else(|| panic!("no {what:?} line for {file}:\n{logs}"))
                .to_string()
        };
        assert!(said("compiling filter").contains("kib="));
        let done = said("filter compiled");
        let ms = done.split("ms=").nth(1).and_then(|v| v.split_whitespace().next());
        assert!(ms.is_some_and(|v| v.parse::<u64>().is_ok()), "{done}");
    }
    assert_eq!(compiles_under_way(&logs), 0);
    drop(first);
    let second = Daemon::start_with(apps.path(), options);
    assert_eq!(
        second.metric("hookline_filter_compilations_total").await,
        0.0,
        "no recompilation"
    );
    assert!(
        !second.logs().contains("compiling filter"),
        "a cache hit compiles nothing"
    );
    assert_eq!(second.metric("hookline_filter_cache_hits_total").await, 2.0);
    assert_eq!(
        native(&second, "c", "ck", "cs", &events_body(&[("a", "y")])).await.0,
        200
    );
    receiver.wait_for("/c", 1).await;
}

/// A chain slower than ingest: batches wait in the app's filter stage
/// (bounded), so ingest answers 503 past the intake budget instead of
/// holding events in memory; every accepted event is delivered once, in
/// the order it was accepted, and the stage's queue empties.
#[tokio::test]
async fn a_slow_chain_is_backpressure_and_keeps_the_order_events_were_accepted_in() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let app = json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
        "webhooks": [{"url": receiver.url("/h"), "event_types": ["channel_occupied"], "ordering": "strict",
            // Each call spins until its 40 ms deadline; `skip` then delivers
            // the batch unfiltered.
            "filters": [{"wasm": wasm_filter("hostile_filter.wasm").to_str().unwrap(),
                         "config": {"mode": "loop"}, "cpu_ms": 40, "on_error": "skip"}]}]});
    apps.write("a.json", &app.to_string());
    let daemon = Daemon::start_with(
        apps.path(),
        // An intake budget of a few events.
        DaemonOptions::with_env(&[("HOOKLINE_DELIVERY_MAX_MEMORY_BYTES", "4096")]),
    );
    // One at a time: delivered in this order, though the stage filters two
    // batches at once.
    for i in 0..6 {
        let body = events_body(&[("channel_occupied", &format!("seq-{i}"))]);
        assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    }
    let delivered = receiver.wait_for_events("/h", 6).await;
    let channels: Vec<String> = delivered
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .map(|e| e["channel"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(channels, (0..6).map(|i| format!("seq-{i}")).collect::<Vec<_>>());

    // Many at once: more than the budget and the stage can take in the
    // 2 s a request waits for room.
    let sends = (0..120).map(|i| {
        let body = events_body(&[("channel_occupied", &format!("burst-{i}"))]);
        let daemon = &daemon;
        async move { native(daemon, "a", "ka", "sa", &body).await }
    });
    let answers = futures_util::future::join_all(sends).await;
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    let behind: Vec<&String> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, body)| body)
        .collect();
    assert!(!behind.is_empty(), "no request was held back: {answers:?}");
    assert!(
        behind.iter().all(|b| b.contains("faster than it can batch and store")),
        "{behind:?}"
    );
    assert_eq!(accepted + behind.len(), 120, "{answers:?}");
    receiver.wait_for_events("/h", 6 + accepted).await;
    daemon.wait_idle().await;
    assert_eq!(daemon.metric("hookline_filter_queue_batches").await, 0.0);
    assert_eq!(
        receiver.all().iter().map(|r| r.event_count()).sum::<usize>(),
        6 + accepted,
        "every accepted event once"
    );
}
