//! Sink components end to end (docs/contract.md §6b): components built from
//! source in this run (`tests/sinks/raw`, written against the raw WIT, and
//! `tests/sinks/hostile`), loaded by the real daemon and delivering to real
//! local receivers. A sink's outcomes become deliveries, retries (its
//! `Retry-After` the least wait) and dead letters; a hostile sink is
//! contained while the app's other webhooks keep flowing; a replaced
//! component file is swapped with in-flight deliveries finishing on the old
//! one; `check` names what is wrong; and the admin API, the status page and
//! the metrics show the kind `wasm:<file name>`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const RAW_KIND: &str = "wasm:raw_sink.wasm";
const HOSTILE_KIND: &str = "wasm:hostile_sink.wasm";
/// Read from the environment as `${SINK_TEST_SECRET}` in an
/// `allowed_hosts` entry's headers.
const SECRET: &str = "s3cret-sink-token-5e0b7d";
const ADMIN_TOKEN: &str = "sink-components-admin-token";

/// An `allowed_hosts` entry for a local server (`http://127.0.0.1:PORT`).
fn local(origin: &str) -> Value {
    json!({"origin": origin, "allow_private": true})
}

/// Copies a built component into the apps directory (under `sinks/`), so
/// the app file can name it relative to itself.
fn install(apps: &AppsDir, component: &str, as_name: &str) {
    let dir = apps.path().join("sinks");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{as_name}.tmp"));
    std::fs::copy(wasm_sink(component), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(as_name)).unwrap();
}

fn occupied(channel: &str) -> String {
    events_body(&[("channel_occupied", channel)])
}

fn with_admin(env: &[(&'static str, &'static str)]) -> DaemonOptions {
    let mut all = vec![
        ("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("HOOKLINE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    all.extend_from_slice(env);
    DaemonOptions::with_env(&all)
}

/// `GET` on the admin listener with the token; the answer's text.
async fn admin_get(daemon: &Daemon, path: &str) -> String {
    let answer = reqwest::Client::new()
        .get(format!("http://{}{path}", daemon.admin.unwrap()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{path}");
    answer.text().await.unwrap()
}

#[tokio::test]
async fn a_sink_on_the_raw_wit_delivers_retries_and_dead_letters_as_its_outcomes_say() {
    let receiver = Receiver::start().await;
    // The first attempt is asked to wait a second; the webhook's own
    // backoff is far shorter (20-40 ms for a first retry; Retry-After is
    // capped at max_backoff_ms), so the gap shows Retry-After was honoured.
    receiver.script("/ok", vec![Reply::status(503).with_header("retry-after", "1")]);
    receiver.by_default("/bad", Reply::status(400));
    let apps = AppsDir::new();
    install(&apps, "raw_sink.wasm", "raw_sink.wasm");
    let sink = |path: &str| {
        json!({"wasm": "sinks/raw_sink.wasm", "config": {"url": receiver.url(path)},
               "allowed_hosts": [local(&receiver.url(""))]})
    };
    let app = json!({"id": "raw", "key": "raw-key", "secret": "raw-secret", "batching": {"max_wait_ms": 10},
        "webhooks": [
            {"id": "ok", "sink": sink("/ok"), "event_types": ["channel_occupied"],
             "retry": {"min_backoff_ms": 20, "max_backoff_ms": 5000}},
            {"id": "bad", "sink": sink("/bad"), "event_types": ["channel_occupied"]},
            {"id": "plain", "url": receiver.url("/plain"), "event_types": ["channel_occupied"]}]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), with_admin(&[]));

    assert_eq!(
        native(&daemon, "raw", "raw-key", "raw-secret", &occupied("room-1"))
            .await
            .0,
        200
    );
    let attempts_ok = receiver.wait_for("/ok", 2).await;
    let (first, second) = (&attempts_ok[0], &attempts_ok[1]);
    assert_eq!((first.answered, second.answered), (503, 200));
    let gap = second.at - first.at;
    assert!(
        gap >= Duration::from_millis(1000),
        "retried after {gap:?}, before Retry-After: 1"
    );
    // The exact signed body with the signed headers, on each attempt (the
    // same batch and events; `time_ms` is stamped per attempt): the
    // official libraries accept it as a webhook.
    assert_eq!(first.json()["events"], second.json()["events"]);
    assert_eq!(
        first.header("x-hookline-batch-id"),
        second.header("x-hookline-batch-id")
    );
    assert_eq!(second.event_names(), ["channel_occupied"]);
    for attempt in [first, second] {
        assert_eq!(attempt.header("x-pusher-key"), "raw-key");
        assert_eq!(attempt.header("x-pusher-signature"), sign("raw-secret", &attempt.body));
    }
    // The plain HTTP webhook signs the same events the same way.
    let plain = receiver.wait_for("/plain", 1).await;
    assert_eq!(plain[0].json()["events"], second.json()["events"]);
    assert_officially_valid("raw-key", "raw-secret", &attempts_ok);

    // 400: `reject`, a dead letter at once, with the sink's reason.
    daemon.wait_metric(&attempts(RAW_KIND, "dead_letter"), 1.0).await;
    assert_eq!(receiver.on("/bad").len(), 1, "a reject is not retried");
    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let reason = letters[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("raw_sink.wasm rejected the batch: the receiver answered 400"),
        "{letters:#?}"
    );

    // The metrics, the admin API and the status page show the kind.
    daemon.wait_metric(&attempts(RAW_KIND, "success"), 1.0).await;
    assert_eq!(daemon.metric(&attempts(RAW_KIND, "retry")).await, 1.0);
    assert_eq!(daemon.metric(&attempts("http", "success")).await, 1.0);
    let view: Value = serde_json::from_str(&admin_get(&daemon, "/api/v1/apps").await).unwrap();
    let kinds: Vec<(&str, &str)> = view["apps"][0]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), w["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("ok", RAW_KIND), ("bad", RAW_KIND), ("plain", "http")],
        "{view}"
    );
    let page = admin_get(&daemon, "/").await;
    assert_eq!(
        page.matches(&format!(r#"<span class="kind">{RAW_KIND}</span>"#))
            .count(),
        2,
        "{page}"
    );
}

/// Every misbehaviour of `tests/sinks/hostile`, each in a webhook of its
/// own, beside a plain HTTP webhook and a well-behaved sink component of
/// the same app that must keep delivering promptly throughout.
#[tokio::test]
async fn a_hostile_sink_is_contained_while_the_apps_other_webhooks_keep_flowing() {
    let receiver = Receiver::start().await;
    let secret_holder = Receiver::start().await;
    let undeclared = CountingListener::start().await;
    let loopback = CountingListener::start().await;
    let endless = EndlessBody::start().await;
    receiver.by_default("/slow", Reply::status(200).after(Duration::from_millis(600)));

    let hostile = wasm_sink("hostile_sink.wasm");
    let mine = local(&receiver.url(""));
    // A webhook of the hostile sink in `mode`, its id the mode (or `id`).
    let webhook = |mode: &str, extra: Value| {
        let mut sink = json!({"wasm": hostile.to_str().unwrap(), "config": {"mode": mode},
                              "allowed_hosts": [mine.clone()]});
        let mut id = mode.to_string();
        for (k, v) in extra.as_object().unwrap() {
            if k == "id" {
                id = v.as_str().unwrap().to_string();
            } else if k == "config" {
                for (ck, cv) in v.as_object().unwrap() {
                    sink["config"][ck] = cv.clone();
                }
            } else {
                sink[k] = v.clone();
            }
        }
        json!({"id": id, "sink": sink, "event_types": ["channel_occupied"],
               "retry": {"min_backoff_ms": 100, "max_backoff_ms": 300}})
    };
    // `timeout_ms` is a webhook key, beside the sink: only the attempt's
    // deadline stops a guest that keeps waiting in the host.
    let mut busy_in_host = webhook("busy-in-host", json!({"cpu_ms": 50}));
    busy_in_host["timeout_ms"] = json!(300);
    let app = json!({"id": "h", "key": "hk", "secret": "hs", "batching": {"max_wait_ms": 10}, "webhooks": [
        {"id": "plain", "url": receiver.url("/plain"), "event_types": ["channel_occupied", "channel_vacated"]},
        {"id": "raw", "event_types": ["channel_occupied", "channel_vacated"],
         "sink": {"wasm": wasm_sink("raw_sink.wasm").to_str().unwrap(), "config": {"url": receiver.url("/raw")},
                  "allowed_hosts": [mine.clone()]}},
        webhook("undeclared-host", json!({"config": {"url": undeclared.url("/nope")}})),
        webhook("loopback", json!({"config": {"url": loopback.url("/nope")},
                                   "allowed_hosts": [loopback.url("")]})),
        // The same by name: the host resolves it and refuses the address.
        webhook("loopback", json!({"id": "loopback-by-name",
                                   "config": {"url": format!("http://localhost:{}/nope", loopback.addr.port())},
                                   "allowed_hosts": [format!("http://localhost:{}", loopback.addr.port())]})),
        webhook("spin", json!({"cpu_ms": 50})),
        busy_in_host,
        webhook("grow", json!({"memory_mb": 32})),
        webhook("endless-body", json!({"config": {"url": endless.url("/stream")},
                                       "allowed_hosts": [local(&endless.url(""))],
                                       "max_response_bytes": 65536})),
        webhook("echo-secret", json!({
            "config": {"url": secret_holder.url("/secret"), "report": receiver.url("/report")},
            "allowed_hosts": [
                {"origin": secret_holder.url(""), "allow_private": true,
                 "headers": {"X-Secret-Token": "Bearer ${SINK_TEST_SECRET}"}},
                mine.clone()]})),
        webhook("slow-network", json!({"config": {"url": receiver.url("/slow")}, "cpu_ms": 50})),
    ]});
    let apps = AppsDir::new();
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(
        apps.path(),
        // The breaker would pause the failing webhooks for seconds; they
        // are to keep misbehaving while the others deliver.
        DaemonOptions::with_env(&[
            ("SINK_TEST_SECRET", SECRET),
            ("HOOKLINE_DELIVERY_CIRCUIT_FAILURES", "100000"),
        ]),
    );

    assert_eq!(native(&daemon, "h", "hk", "hs", &occupied("trouble")).await.0, 200);
    // Each misbehaviour, as the log shows it (the sink's own reason, or the
    // host's words for a call it stopped).
    let port = |addr: std::net::SocketAddr| addr.port();
    for expected in [
        "undeclared-host: error ErrorCode::HttpRequestDenied".to_string(),
        format!(
            "outgoing request refused: http://127.0.0.1:{} is not in the webhook's allowed_hosts",
            port(undeclared.addr)
        ),
        "loopback: error ErrorCode::DestinationIpProhibited".to_string(),
        format!(
            "outgoing request refused: http://127.0.0.1:{} is a non-public address; set \"allow_private\": true",
            port(loopback.addr)
        ),
        "hostile_sink.wasm failed: ran past its CPU budget of 50 ms (cpu_ms;".to_string(),
        "hostile_sink.wasm failed: was still running when the attempt's time ran out (timeout_ms)".to_string(),
        "hostile_sink.wasm failed: hit its memory cap (memory_mb)".to_string(),
        "endless-body: error ErrorCode::HttpResponseBodySize(Some(65536))".to_string(),
    ] {
        wait_log(&daemon, &expected).await;
    }
    wait_log_line(
        &daemon,
        &[
            "webhook=loopback-by-name",
            "loopback: error ErrorCode::DestinationIpProhibited",
        ],
    )
    .await;

    // Meanwhile, the plain webhook and the well-behaved sink deliver each
    // event promptly: calm events go on until each hostile webhook has
    // misbehaved (and been retried) at least twice more.
    let failures = [
        "undeclared-host: error ErrorCode::HttpRequestDenied",
        "loopback: error ErrorCode::DestinationIpProhibited",
        "ran past its CPU budget of 50 ms",
        "was still running when the attempt's time ran out",
        "hit its memory cap (memory_mb)",
        "endless-body: error ErrorCode::HttpResponseBodySize",
    ];
    let counts = |logs: &str| failures.map(|f| logs.matches(f).count());
    let before = counts(&daemon.logs());
    let calm_since = Instant::now();
    for i in 0.. {
        let tag = format!("calm-{i}");
        let sent = Instant::now();
        let body = events_body(&[("channel_vacated", &tag)]);
        assert_eq!(native(&daemon, "h", "hk", "hs", &body).await.0, 200);
        for path in ["/plain", "/raw"] {
            receiver
                .wait_until(|all| all.iter().any(|r| r.path == path && r.body.contains(&tag)))
                .await;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "calm delivery {i} took {:?}",
            sent.elapsed()
        );
        let now = counts(&daemon.logs());
        if i >= 8 && before.iter().zip(now).all(|(b, n)| n >= b + 2) {
            break;
        }
        assert!(
            calm_since.elapsed() < PATIENCE,
            "the hostile webhooks stopped misbehaving: {failures:?} seen {before:?} then {now:?} times"
        );
    }

    // Refused requests never opened a connection.
    assert_eq!(undeclared.accepted(), 0, "a connection reached the undeclared host");
    assert_eq!(
        loopback.accepted(),
        0,
        "a connection reached 127.0.0.1 without allow_private"
    );
    // The endless body was cut by the host near the cap (the rest is what
    // the socket buffers took before the host hung up).
    let sent = endless.wait_cut().await;
    assert!(
        sent < 64 << 20,
        "the endless body ran to {sent} bytes before it was cut"
    );

    // The secret reached the receiver, in place of the guest's own value,
    // and nothing the guest could read held it.
    let report = receiver.wait_for("/report", 1).await[0].body.clone();
    let held = secret_holder.wait_for("/secret", 1).await;
    assert_eq!(held[0].header("x-secret-token"), format!("Bearer {SECRET}"));
    assert_eq!(held[0].header("x-guest-marker"), "set-by-the-guest");
    for seen in [
        "own headers after handle:\n",
        "x-guest-marker: set-by-the-guest",
        "x-secret-token: guest-value",
        "response status: 200",
        // Nothing in the environment (the daemon's has the secret).
        "environment:\narguments:",
    ] {
        assert!(report.contains(seen), "the report lacks {seen:?}:\n{report}");
    }
    assert!(!report.contains(SECRET), "the guest read the secret:\n{report}");

    // Network time is not CPU: a 600 ms answer with cpu_ms 50 is delivered.
    assert_eq!(
        receiver.wait_for("/slow", 1).await[0].header("x-forwarded-by"),
        "hostile-sink"
    );
    // Only echo-secret and slow-network can succeed.
    daemon.wait_metric(&attempts(HOSTILE_KIND, "success"), 2.0).await;
    let logs = daemon.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("delivery failed") && l.contains("slow-network")),
        "{logs}"
    );
    assert_eq!(receiver.on("/slow").len(), 1, "slow-network was not retried");
    assert!(!logs.contains(SECRET), "the secret reached the log");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// Replacing the component file swaps it (the next batch goes through the
/// new build) while the batch in flight finishes on the old one; a changed
/// `config` is picked up the same way.
#[tokio::test]
async fn a_replaced_component_is_swapped_and_the_delivery_in_flight_finishes_on_the_old_one() {
    let held = HeldReceiver::start().await;
    let apps = AppsDir::new();
    install(&apps, "raw_sink.wasm", "current.wasm");
    // Both fixtures read this config: raw-sink its `url`, hostile-sink its
    // `mode` too (it adds `x-forwarded-by`, so the receiver tells them apart).
    let write_app = |path: &str| {
        let app = json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 10},
            "webhooks": [{"id": "swap", "event_types": ["channel_occupied"],
                "sink": {"wasm": "sinks/current.wasm", "config": {"url": held.url(path), "mode": "forward"},
                         "allowed_hosts": [local(&held.url(""))]}}]});
        let tmp = apps.path().join(".a.json.tmp");
        std::fs::write(&tmp, app.to_string()).unwrap();
        std::fs::rename(&tmp, apps.path().join("a.json")).unwrap();
    };
    write_app("/h");
    let daemon = Daemon::start(apps.path());
    let generation = |s: &Value| s["generation"].as_u64().unwrap();
    let first = generation(&readyz(&daemon).await);

    assert_eq!(native(&daemon, "a", "ka", "sa", &occupied("before-swap")).await.0, 200);
    let in_flight = held.wait_for_body("before-swap").await;
    assert_eq!(in_flight.header("x-forwarded-by"), "", "raw-sink adds no header");

    install(&apps, "hostile_sink.wasm", "current.wasm");
    let second = generation(&wait_ready(&daemon, "the new component", |s| generation(s) > first).await);
    held.release();
    daemon.wait_metric(&attempts("wasm:current.wasm", "success"), 1.0).await;

    assert_eq!(native(&daemon, "a", "ka", "sa", &occupied("after-swap")).await.0, 200);
    let swapped = held.wait_for_body("after-swap").await;
    assert_eq!(swapped.header("x-forwarded-by"), "hostile-sink");
    assert_eq!(swapped.path, "/h");

    // A new config, same file.
    write_app("/h2");
    wait_ready(&daemon, "the new config", |s| generation(s) > second).await;
    assert_eq!(native(&daemon, "a", "ka", "sa", &occupied("new-config")).await.0, 200);
    let moved = held.wait_for_body("new-config").await;
    assert_eq!(
        (moved.path.as_str(), moved.header("x-forwarded-by")),
        ("/h2", "hostile-sink")
    );

    // The batch that was in flight was delivered once, by the old build:
    // not retried, not sent again by the new one.
    daemon.wait_idle().await;
    let copies: Vec<Received> = held
        .all()
        .into_iter()
        .filter(|r| r.body.contains("before-swap"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert_eq!(daemon.metric(&attempts("wasm:current.wasm", "retry")).await, 0.0);
    assert_eq!(daemon.metric(&attempts("wasm:current.wasm", "success")).await, 3.0);
}

/// Runs `hookline check` on `apps` with `env`; (success, stdout + stderr).
fn check_with(apps: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(hookline_bin())
        .args(["check", "--apps"])
        .arg(apps)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn check_passes_a_good_sink_and_names_what_is_wrong_with_a_bad_one() {
    let sink = |wasm: &str, config: Value, allowed_hosts: Value| {
        json!({"sink": {"wasm": wasm, "config": config, "allowed_hosts": allowed_hosts},
               "event_types": ["channel_occupied"]})
    };
    let app =
        |id: &str, webhook: Value| json!({"id": id, "key": format!("k-{id}"), "secret": "s", "webhooks": [webhook]});
    let good_hosts = json!(["https://hooks.example.com",
        {"origin": "https://api.example.com", "headers": {"Authorization": "Bearer ${SINK_TEST_TOKEN}"}}]);

    let good = AppsDir::new();
    install(&good, "raw_sink.wasm", "raw_sink.wasm");
    good.write(
        "good.json",
        &app(
            "good",
            sink(
                "sinks/raw_sink.wasm",
                json!({"url": "https://hooks.example.com/x"}),
                good_hosts.clone(),
            ),
        )
        .to_string(),
    );
    let (ok, out) = check_with(good.path(), &[("SINK_TEST_TOKEN", "t0ken-value")]);
    assert!(ok, "{out}");
    assert!(out.contains("ok: 1 app"), "{out}");

    let bad = AppsDir::new();
    install(&bad, "raw_sink.wasm", "raw_sink.wasm");
    install(&bad, "hostile_sink.wasm", "hostile_sink.wasm");
    let filter = wasm_filter("drop_by_channel.wasm");
    let files = [
        (
            "missing.json",
            app(
                "missing",
                sink("sinks/nowhere.wasm", json!({"url": "https://x"}), json!([])),
            ),
        ),
        (
            "filter.json",
            app(
                "filter",
                sink(filter.to_str().unwrap(), json!({"url": "https://x"}), json!([])),
            ),
        ),
        (
            "refused.json",
            app("refused", sink("sinks/raw_sink.wasm", json!({}), json!([]))),
        ),
        (
            "sleeps.json",
            app(
                "sleeps",
                sink(
                    "sinks/hostile_sink.wasm",
                    json!({"mode": "sleep-in-validate"}),
                    json!([]),
                ),
            ),
        ),
        (
            "origin.json",
            app(
                "origin",
                sink(
                    "sinks/raw_sink.wasm",
                    json!({"url": "https://x"}),
                    json!(["https://x.example.com/path"]),
                ),
            ),
        ),
        (
            "header.json",
            app(
                "header",
                sink(
                    "sinks/raw_sink.wasm",
                    json!({"url": "https://x"}),
                    json!(["https://ok.example.com",
                           {"origin": "https://api.example.com",
                            "headers": {"Authorization": "Bearer ${SINK_TEST_TOKEN}"}}]),
                ),
            ),
        ),
    ];
    for (file, app) in &files {
        bad.write(file, &app.to_string());
    }
    // A token ending in a newline (a secret file read as is): no header
    // value can hold it.
    let (ok, out) = check_with(bad.path(), &[("SINK_TEST_TOKEN", "t0ken-value\n")]);
    assert!(!ok, "{out}");
    let line = |file: &str| -> String { out.lines().filter(|l| l.contains(file)).collect::<Vec<_>>().join("\n") };
    let missing = line("missing.json");
    assert!(
        missing.contains("`sink.wasm`") && missing.contains("nowhere.wasm"),
        "{out}"
    );
    let not_a_sink = line("filter.json");
    assert!(
        not_a_sink.contains("`sink.wasm`")
            && not_a_sink.contains("does not implement the hookline:sink@0.1.0 `sink` world"),
        "{out}"
    );
    let sleeps = line("sleeps.json");
    assert!(sleeps.contains("validate-config did not return within 10 s"), "{out}");
    let refused = line("refused.json");
    assert!(
        refused.contains("`sink.wasm`") && refused.contains("config refused by the sink: config needs a \"url\""),
        "{out}"
    );
    let origin = line("origin.json");
    assert!(
        origin.contains("`sink.allowed_hosts[0]`") && origin.contains("has a path"),
        "{out}"
    );
    let header = line("header.json");
    assert!(
        header.contains("`sink.allowed_hosts[1]`") && header.contains("`Authorization`"),
        "{out}"
    );
    assert!(!out.contains("t0ken-value"), "a header value was shown:\n{out}");
}
