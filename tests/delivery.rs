//! Delivery end to end: routing per webhook, batching, signatures checked
//! by the official Pusher libraries, exact JavaScript re-stringification,
//! retries, and shutdown flushing.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn start(apps_json: &str, receiver: &Receiver) -> (AppsDir, Daemon) {
    start_with(apps_json, receiver, DaemonOptions::default())
}

/// Sends app `a` (key `ka`, secret `sa`) one `channel_occupied` on `room-1`.
async fn occupy_room_1(daemon: &Daemon) {
    let body = events_body(&[("channel_occupied", "room-1")]);
    assert_eq!(native(daemon, "a", "ka", "sa", &body).await.0, 200);
}

fn start_with(apps_json: &str, receiver: &Receiver, options: DaemonOptions) -> (AppsDir, Daemon) {
    let apps = receiver.apps(apps_json);
    let daemon = Daemon::start_with(apps.path(), options);
    (apps, daemon)
}

#[tokio::test]
async fn each_webhook_gets_exactly_its_events_in_its_own_signed_body() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 200}, "webhooks": [
            {"url": "RECEIVER/lifecycle", "event_types": ["channel_occupied", "channel_vacated"]},
            {"url": "RECEIVER/chat", "event_types": ["client_event"],
             "filter": {"channel_name_starts_with": "private-", "channel_name_ends_with": "-chat"}},
            {"url": "RECEIVER/presence", "event_types": ["member_added", "member_removed", "channel_occupied"],
             "filters": {"channel_name_starts_with": "presence-"}},
            {"url": "RECEIVER/never", "event_types": ["cache_miss"]}
        ]}"#,
        &receiver,
    );
    let body = r#"{"events":[
        {"name":"channel_occupied","channel":"presence-lobby"},
        {"name":"client_event","channel":"private-room-chat","event":"client-typing","data":"{}","socket_id":"1.2"},
        {"name":"client_event","channel":"private-room","event":"client-typing","data":"{}","socket_id":"1.2"},
        {"name":"member_added","channel":"presence-lobby","user_id":"u1"},
        {"name":"channel_vacated","channel":"room-2"},
        {"name":"member_added","channel":"other","user_id":"u2"}
    ]}"#;
    let answer = publish_with_npm(&daemon.url(), "a", "ka", "sa", body, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    receiver.wait_for("/lifecycle", 1).await;
    receiver.wait_for("/chat", 1).await;
    receiver.wait_for("/presence", 1).await;
    daemon.wait_metric("hookline_batches_formed_total", 1.0).await;
    // Every delivery of the batch is done: nothing else can arrive now.
    daemon.wait_idle().await;

    let channels = |path: &str| -> Vec<(String, String)> {
        let got = receiver.on(path);
        assert_eq!(got.len(), 1, "{path} gets one batch");
        got[0].json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["channel"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let pair = |n: &str, c: &str| (n.to_string(), c.to_string());
    assert_eq!(
        channels("/lifecycle"),
        [
            pair("channel_occupied", "presence-lobby"),
            pair("channel_vacated", "room-2")
        ]
    );
    assert_eq!(channels("/chat"), [pair("client_event", "private-room-chat")]);
    assert_eq!(
        channels("/presence"),
        [
            pair("channel_occupied", "presence-lobby"),
            pair("member_added", "presence-lobby")
        ]
    );
    assert!(receiver.on("/never").is_empty(), "an empty selection sends nothing");

    let all = receiver.all();
    let signatures: std::collections::HashSet<_> =
        all.iter().map(|r| r.header("x-pusher-signature").to_string()).collect();
    assert_eq!(signatures.len(), 3, "each webhook has its own body and signature");
    assert_officially_valid("ka", "sa", &all);
    for delivery in &all {
        assert_eq!(delivery.header("content-type"), "application/json");
        assert_eq!(delivery.header("x-pusher-key"), "ka");
        assert!(delivery.header("user-agent").starts_with("hookline/"));
        assert!(!delivery.header("x-hookline-batch-id").is_empty());
        let batch_time: u64 = delivery.header("x-hookline-batch-time").parse().unwrap();
        assert!(batch_time <= delivery.json()["time_ms"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn bodies_restringify_exactly_in_javascript() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": [{"url": "RECEIVER/h", "event_types": ["client_event"]}]}"#,
        &receiver,
    );
    // Raw bytes as a client might send them: odd numbers, integer-like keys
    // after others, duplicate keys, escapes, non-ASCII, emoji, control chars.
    let body = concat!(
        r#"{"events":[{"name":"client_event","channel":"private-x","event":"client-msg","#,
        r#""data":"h\u00e9llo \"w\u00f6rld\" \\ \/ \ud83d\ude00 😀 \u0001\t\n\u001f \u2028 中文","#,
        r#""b":1.0,"a":1e21,"big":12345678901234567890,"neg":-0,"small":1E-7,"10":"ten","2":"two","#,
        r#""dup":1,"dup":{"z":1,"y":[1.50,2e0]},"lone":"\ud800"}]}"#
    );
    let answer = publish_with_npm(&daemon.url(), "a", "ka", "sa", body, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got = receiver.wait_for("/h", 1).await;
    let text = &got[0].body;
    let events_start = text.find("\"events\":").unwrap();
    assert_eq!(
        &text[events_start..],
        concat!(
            r#""events":[{"2":"two","10":"ten","name":"client_event","channel":"private-x","event":"client-msg","#,
            "\"data\":\"h\u{e9}llo \\\"w\u{f6}rld\\\" \\\\ / \u{1F600} \u{1F600} \\u0001\\t\\n\\u001f \u{2028} \u{4E2D}\u{6587}\",",
            r#""b":1,"a":1e+21,"big":12345678901234567000,"neg":0,"small":1e-7,"dup":{"z":1,"y":[1.5,2]},"lone":"\ud800"}]}"#
        )
    );
    // The official verifiers, including Node's JSON.stringify(JSON.parse(body)) === body.
    assert_officially_valid("ka", "sa", &got);
}

#[tokio::test]
async fn events_within_the_window_share_one_batch_and_max_events_splits() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"[{"id": "w", "key": "kw", "secret": "sw", "batching": {"max_wait_ms": 1000, "max_events": 1000},
             "webhooks": [{"url": "RECEIVER/window", "event_types": ["channel_occupied"]}]},
            {"id": "m", "key": "km", "secret": "sm", "batching": {"max_wait_ms": 300, "max_events": 3},
             "webhooks": [{"url": "RECEIVER/max", "event_types": ["channel_occupied"], "ordering": "strict"}]}]"#,
        &receiver,
    );
    let sent_at = Instant::now();
    // Three requests at once: however slow each fsync is, all three are
    // in before the first one's window closes.
    let bodies: Vec<String> = (0..3)
        .map(|i| events_body(&[("channel_occupied", &format!("c{i}"))]))
        .collect();
    let (a, b, c) = tokio::join!(
        native(&daemon, "w", "kw", "sw", &bodies[0]),
        native(&daemon, "w", "kw", "sw", &bodies[1]),
        native(&daemon, "w", "kw", "sw", &bodies[2])
    );
    assert_eq!((a.0, b.0, c.0), (200, 200, 200));
    let window = receiver.wait_for("/window", 1).await;
    assert_eq!(
        window[0].event_count(),
        3,
        "three requests within the window form one batch"
    );
    assert!(
        sent_at.elapsed() >= Duration::from_millis(1000),
        "the batch waited for its window"
    );

    let seven: Vec<(String, String)> = (0..7)
        .map(|i| ("channel_occupied".to_string(), format!("m{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = seven.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(native(&daemon, "m", "km", "sm", &events_body(&refs)).await.0, 200);
    let max = receiver.wait_for_events("/max", 7).await;
    let sizes: Vec<usize> = max.iter().map(Received::event_count).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let channels: Vec<String> = max
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .map(|e| e["channel"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        channels,
        (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "a strict webhook keeps formation order"
    );
    assert_officially_valid("km", "sm", &max);
}

#[tokio::test]
async fn with_batching_off_every_event_is_its_own_delivery() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
            "webhooks": [{"url": "RECEIVER/h", "event_types": ["member_added"]}]}"#,
        &receiver,
    );
    let body = events_body(&[("member_added", "p1"), ("member_added", "p2"), ("member_added", "p3")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    let got = receiver.wait_for("/h", 3).await;
    assert!(got.iter().all(|r| r.event_count() == 1));
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("x-hookline-batch-id").to_string())
        .collect();
    assert_eq!(ids.len(), 3, "each its own batch id");
    assert_officially_valid("ka", "sa", &got);
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_with_the_same_batch_id_and_a_400_is_not() {
    let receiver = Receiver::start().await;
    receiver.script("/flaky", vec![Reply::status(503).with_header("retry-after", "1")]);
    receiver.script("/refuses", vec![Reply::status(400)]);
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": [
            {"url": "RECEIVER/flaky", "event_types": ["channel_occupied"],
             "retry": {"min_backoff_ms": 10, "max_backoff_ms": 5000}},
            {"url": "RECEIVER/refuses", "event_types": ["channel_occupied"]}]}"#,
        &receiver,
    );
    assert_eq!(
        native(&daemon, "a", "ka", "sa", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    let flaky = receiver.wait_for("/flaky", 2).await;
    assert_eq!(
        flaky[0].header("x-hookline-batch-id"),
        flaky[1].header("x-hookline-batch-id")
    );
    assert_eq!(flaky[0].json()["events"], flaky[1].json()["events"]);
    // The policy's own first backoff is at most 20 ms (10 ms doubled): only
    // Retry-After makes the wait a second.
    assert!(
        flaky[1].at - flaky[0].at >= Duration::from_millis(1000),
        "Retry-After: 1 was honoured"
    );
    assert!(
        flaky[1].json()["time_ms"].as_u64() > flaky[0].json()["time_ms"].as_u64(),
        "re-stamped"
    );
    assert_officially_valid("ka", "sa", &flaky);

    // The 400 is final: once it is dead-lettered no attempt can follow.
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="http",outcome="dead_letter"}"#,
            1.0,
        )
        .await;
    assert_eq!(receiver.on("/refuses").len(), 1, "a 400 is not retried");
    assert_eq!(
        daemon
            .metric(r#"hookline_delivery_attempts_total{sink="http",outcome="success"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn webhook_headers_are_sent_but_never_replace_the_signed_ones() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": [{"url": "RECEIVER/h", "event_types": ["cache_miss"],
            "headers": {"Authorization": "Bearer t", "X-Pusher-Signature": "forged", "Content-Type": "text/plain"}}]}"#,
        &receiver,
    );
    assert_eq!(
        native(&daemon, "a", "ka", "sa", &events_body(&[("cache_miss", "c")]))
            .await
            .0,
        200
    );
    let got = receiver.wait_for("/h", 1).await;
    assert_eq!(got[0].header("authorization"), "Bearer t");
    assert_ne!(got[0].header("x-pusher-signature"), "forged");
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_officially_valid("ka", "sa", &got);
}

#[tokio::test]
async fn sigterm_delivers_the_open_batch_before_exiting() {
    a_stop_signal_delivers_the_open_batch_before_exiting("TERM").await;
}

#[tokio::test]
async fn sigint_delivers_the_open_batch_before_exiting() {
    a_stop_signal_delivers_the_open_batch_before_exiting("INT").await;
}

async fn a_stop_signal_delivers_the_open_batch_before_exiting(signal: &str) {
    let receiver = Receiver::start().await;
    let (_apps, mut daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 600000},
            "webhooks": [{"url": "RECEIVER/h", "event_types": ["channel_occupied"]}]}"#,
        &receiver,
    );
    let body = events_body(&[("channel_occupied", "c1"), ("channel_occupied", "c2")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    assert!(receiver.all().is_empty(), "the batch is still open");
    daemon.signal(signal);
    let status = tokio::task::spawn_blocking(move || {
        let status = daemon.wait();
        (status, daemon)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit status {:?}; logs:\n{}",
        status.0,
        status.1.logs()
    );
    let got = receiver.on("/h");
    assert_eq!(got.len(), 1, "delivered before exit");
    assert_eq!(got[0].event_count(), 2);
}

#[tokio::test]
async fn each_app_signs_with_its_own_secret() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"[{"id": "one", "key": "k1", "secret": "s1", "webhooks": [{"url": "RECEIVER/one", "event_types": ["channel_occupied"]}]},
            {"id": "two", "key": "k2", "secret": "s2", "webhooks": [{"url": "RECEIVER/two", "event_types": ["channel_occupied"]}]}]"#,
        &receiver,
    );
    let body = events_body(&[("channel_occupied", "c")]);
    assert_eq!(native(&daemon, "one", "k1", "s1", &body).await.0, 200);
    assert_eq!(native(&daemon, "two", "k2", "s2", &body).await.0, 200);
    let one = receiver.wait_for("/one", 1).await;
    let two = receiver.wait_for("/two", 1).await;
    assert_officially_valid("k1", "s1", &one);
    assert_officially_valid("k2", "s2", &two);
    assert_eq!(
        verify_with_npm("k1", "s1", &two)[0]["valid"],
        false,
        "the verifier can fail"
    );
}

#[tokio::test]
async fn a_429_is_retried_without_using_up_attempts() {
    let receiver = Receiver::start().await;
    let busy = || Reply::status(429).with_header("retry-after", "0");
    receiver.script("/busy", vec![busy(), Reply::status(429), busy()]);
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": [
            {"url": "RECEIVER/busy", "event_types": ["channel_occupied"],
             "retry": {"max_attempts": 1, "min_backoff_ms": 10, "max_backoff_ms": 20}}]}"#,
        &receiver,
    );
    let body = events_body(&[("channel_occupied", "c")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    // Three 429s (one without Retry-After) and a success: more tries than
    // max_attempts, none used up.
    let got = receiver.wait_for("/busy", 4).await;
    assert_eq!(
        got[0].header("x-hookline-batch-id"),
        got[3].header("x-hookline-batch-id")
    );
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="http",outcome="success"}"#,
            1.0,
        )
        .await;
    assert_eq!(
        daemon
            .metric(r#"hookline_delivery_attempts_total{sink="http",outcome="dead_letter"}"#)
            .await,
        0.0
    );
}

/// `min_backoff_ms` is a floor: whatever failed (a 5xx, a 429 with or
/// without `Retry-After: 0`, a 503 with `Retry-After: 0`), the receiver
/// never sees an attempt sooner than `min_backoff_ms` after the one before.
#[tokio::test]
async fn a_retry_never_comes_sooner_than_min_backoff_ms() {
    let receiver = Receiver::start().await;
    receiver.script(
        "/floor",
        vec![
            Reply::status(503),
            Reply::status(500),
            Reply::status(429).with_header("retry-after", "0"),
            Reply::status(503).with_header("retry-after", "0"),
            Reply::status(429),
            Reply::status(502),
            Reply::status(503),
        ],
    );
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": [
            {"url": "RECEIVER/floor", "event_types": ["channel_occupied"],
             "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200}}]}"#,
        &receiver,
    );
    let body = events_body(&[("channel_occupied", "c")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    // Seven failures, then the scripted 200.
    let got = receiver.wait_for("/floor", 8).await;
    assert!(got[7].status_ok(), "the eighth attempt succeeds: {got:#?}");
    let gaps: Vec<Duration> = got.windows(2).map(|pair| pair[1].at - pair[0].at).collect();
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= Duration::from_millis(100),
            "retry {} came {gap:?} after the attempt before it (min_backoff_ms is 100); gaps: {gaps:?}",
            i + 1
        );
    }
    assert_eq!(
        got[0].header("x-hookline-batch-id"),
        got[7].header("x-hookline-batch-id")
    );
}

/// `ordering: "strict"`: one batch at a time in formation order, a failing
/// one holding those behind it until it succeeds.
#[tokio::test]
async fn strict_ordering_holds_later_batches_behind_a_failing_one() {
    let receiver = Receiver::start().await;
    receiver.script("/strict", vec![Reply::status(503), Reply::status(503)]);
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false}, "webhooks": [
            {"url": "RECEIVER/strict", "event_types": ["channel_occupied"], "ordering": "strict",
             "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200}}]}"#,
        &receiver,
    );
    for channel in ["first", "second", "third"] {
        let body = events_body(&[("channel_occupied", channel)]);
        assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    }
    let got = receiver.wait_for("/strict", 5).await;
    let channels: Vec<String> = got
        .iter()
        .map(|r| r.json()["events"][0]["channel"].as_str().unwrap().to_string())
        .collect();
    // Two failed tries of the first, its success, then the others in order.
    assert_eq!(channels, ["first", "first", "first", "second", "third"], "{got:#?}");
}

/// `max_in_flight` batches of one webhook are sent at once, never more.
#[tokio::test]
async fn max_in_flight_bounds_concurrent_attempts() {
    let receiver = Receiver::start().await;
    receiver.by_default("/slow", Reply::status(200).after(Duration::from_millis(1500)));
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false}, "webhooks": [
            {"url": "RECEIVER/slow", "event_types": ["channel_occupied"], "max_in_flight": 3}]}"#,
        &receiver,
    );
    for i in 0..9 {
        let body = events_body(&[("channel_occupied", &format!("c{i}"))]);
        assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    }
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="http",outcome="success"}"#,
            9.0,
        )
        .await;
    assert_eq!(receiver.most_in_flight(), 3);
}

/// `timeout_ms`: an attempt the target does not answer in time fails and
/// is retried, with the same batch id.
#[tokio::test]
async fn timeout_ms_ends_a_slow_attempt_and_retries_it() {
    let receiver = Receiver::start().await;
    receiver.script("/late", vec![Reply::status(200).after(Duration::from_secs(30))]);
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": [
            {"url": "RECEIVER/late", "event_types": ["channel_occupied"], "timeout_ms": 200,
             "retry": {"min_backoff_ms": 10, "max_backoff_ms": 20}}]}"#,
        &receiver,
    );
    let body = events_body(&[("channel_occupied", "c")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    // The first answer would take 30 s; the retry comes long before.
    let got = receiver.wait_for("/late", 2).await;
    assert_eq!(
        got[0].header("x-hookline-batch-id"),
        got[1].header("x-hookline-batch-id")
    );
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="http",outcome="success"}"#,
            1.0,
        )
        .await;
    assert_eq!(daemon.metric(&attempts("http", "retry")).await, 1.0);
}

/// `rate_limit`: at 50 per second with a burst of 10, a flood of 600
/// single-event deliveries arrives at 50 ± 5 a second, and waiting for a
/// token is neither an attempt nor a failure.
#[tokio::test]
async fn a_rate_limited_webhook_receives_a_flood_at_its_rate() {
    let receiver = Receiver::start().await;
    let (_apps, daemon) = start(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false}, "webhooks": [
            {"url": "RECEIVER/limited", "event_types": ["channel_occupied"],
             "rate_limit": {"per_second": 50, "burst": 10}}]}"#,
        &receiver,
    );
    flood(&daemon.url(), ("a", "ka", "sa"), 600).await;
    let got = receiver.wait_for("/limited", 600).await;
    // The burst goes at once; after it, one delivery every 20 ms.
    assert_ten_seconds_at(&got, 50, 5);
    assert_eq!(daemon.metric(&attempts("http", "success")).await, 600.0);
    assert_eq!(daemon.metric(&attempts("http", "retry")).await, 0.0);
    let waited = daemon.metric_sum("hookline_rate_limited_total").await;
    assert!(waited >= 580.0, "only {waited} deliveries waited for a token");
}

/// `tls` (docs/contract.md §5): a receiver that requires a client
/// certificate refuses a webhook without one, whose batch is retried with
/// a reason that says so; with `client_cert` and `client_key` the same
/// delivery arrives and the official Pusher library verifies it; and
/// `server_name` checks a certificate issued to `localhost` on a URL that
/// names 127.0.0.1.
#[tokio::test]
async fn a_client_certificate_opens_a_receiver_that_requires_one() {
    let receiver = Receiver::start().await;
    let port = free_addr().port();
    let front = TlsFront::requiring_client_certificates(port, receiver.addr.port());
    let pem = |name: &str| front.ca.file(name).display().to_string();
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        &serde_json::json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
        "webhooks": [
            {"id": "without", "url": format!("https://localhost:{port}/without"), "event_types": ["channel_occupied"],
             "tls": {"ca": pem("ca.pem")},
             "retry": {"min_backoff_ms": 50, "max_backoff_ms": 100}},
            {"id": "with", "url": format!("https://localhost:{port}/with"), "event_types": ["channel_occupied"],
             "tls": {"ca": pem("ca.pem"), "client_cert": pem("client.pem"), "client_key": pem("client.key")}},
            {"id": "named", "url": format!("https://127.0.0.1:{port}/named"), "event_types": ["channel_occupied"],
             "tls": {"ca": pem("ca.pem"), "client_cert": pem("client.pem"), "client_key": pem("client.key"),
                     "server_name": "localhost"}}
        ]})
        .to_string(),
    );
    let daemon = Daemon::start(apps.path());
    occupy_room_1(&daemon).await;
    let with = receiver.wait_for("/with", 1).await;
    let named = receiver.wait_for("/named", 1).await;
    assert_eq!(
        verify_with_pypi("ka", "sa", &[with[0].clone(), named[0].clone()]),
        [true, true]
    );
    // The one without a certificate never got through, and says why.
    daemon.wait_metric(&attempts("http", "retry"), 2.0).await;
    assert!(receiver.on("/without").is_empty());
    let logs = daemon.logs();
    let failure = logs
        .lines()
        .find(|l| l.contains("delivery failed, retrying") && l.contains("without"))
        .unwrap_or_else(|| panic!("no retry logged for the webhook without a certificate:\n{logs}"));
    assert!(
        failure.contains("CertificateRequired") && failure.contains("tls.client_cert"),
        "the retry's reason does not say a certificate was missing: {failure}"
    );
    eprintln!("without a client certificate: {failure}");
}

/// `hookline check` reads the PEM files of `tls` and names the one at
/// fault.
#[test]
fn check_names_the_pem_file_at_fault() {
    let ca = TestCa::new();
    let apps = AppsDir::new();
    let not_pem = apps.write("not-a-cert.pem", "hello\n");
    let webhook = |tls: serde_json::Value| {
        serde_json::json!({"id": "a", "key": "ka", "secret": "sa", "webhooks": [
            {"url": "https://localhost:9/h", "event_types": ["channel_occupied"], "tls": tls}]})
        .to_string()
    };
    apps.write(
        "a.json",
        &webhook(serde_json::json!({"client_cert": not_pem, "client_key": ca.file("client.key")})),
    );
    let (ok, out) = check(&apps);
    assert!(
        !ok && out.contains("tls.client_cert") && out.contains("not-a-cert.pem"),
        "{out}"
    );
    apps.write(
        "a.json",
        &webhook(serde_json::json!({"client_cert": ca.file("client.pem"), "client_key": "missing.key"})),
    );
    let (ok, out) = check(&apps);
    assert!(
        !ok && out.contains("tls.client_key") && out.contains("missing.key"),
        "{out}"
    );
    apps.write(
        "a.json",
        &webhook(
            serde_json::json!({"client_cert": ca.file("client.pem"), "client_key": ca.file("client.key"),
            "ca": ca.file("ca.pem"), "server_name": "localhost"}),
        ),
    );
    let (ok, out) = check(&apps);
    assert!(ok, "{out}");
}

/// `proxy` per webhook, and `delivery.proxy` for the rest with `NO_PROXY`
/// honoured, through a real tinyproxy (which adds its `Via` header).
#[tokio::test]
async fn deliveries_go_through_the_proxy_their_webhook_or_the_daemon_names() {
    let receiver = Receiver::start().await;
    let proxy = Tinyproxy::start();
    let apps = AppsDir::new();
    let direct_port = receiver.addr.port();
    apps.write(
        "a.json",
        &serde_json::json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
        "webhooks": [
            {"url": receiver.url("/own"), "event_types": ["channel_occupied"], "proxy": proxy.url()},
            {"url": receiver.url("/default"), "event_types": ["channel_occupied"]},
            {"url": format!("http://localhost:{direct_port}/excepted"), "event_types": ["channel_occupied"]}
        ]})
        .to_string(),
    );
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_DELIVERY_PROXY", &proxy.url()), ("NO_PROXY", "localhost")]),
    );
    occupy_room_1(&daemon).await;
    let mut via = Vec::new();
    for path in ["/own", "/default", "/excepted"] {
        via.push(receiver.wait_for(path, 1).await[0].header("via").to_string());
    }
    assert!(
        via[0].contains("tinyproxy"),
        "the webhook's own proxy was not used: {via:?}"
    );
    assert!(via[1].contains("tinyproxy"), "delivery.proxy was not used: {via:?}");
    assert_eq!(via[2], "", "NO_PROXY=localhost went through the proxy");
    assert_eq!(proxy.requests(), 2, "{}", proxy.log());
}

/// A real OTLP/HTTP receiver (tests/peers/otlp_receiver.py, decoding with
/// PyPI `opentelemetry-proto`): the spans it received, as JSON.
struct OtlpReceiver {
    process: std::process::Child,
    port: u16,
    spans: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl OtlpReceiver {
    fn start() -> Self {
        use std::io::BufRead;
        let mut process = Command::new(python())
            .arg(peers_dir().join("otlp_receiver.py"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the OTLP receiver (scripts/setup-tests.sh installs opentelemetry-proto)");
        let mut lines = std::io::BufReader::new(process.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a first line").unwrap();
        let port = first
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("the OTLP receiver said {first:?}"))
            .parse()
            .unwrap();
        let (tx, spans) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                match line.strip_prefix("SPAN ") {
                    Some(span) => drop(tx.send(serde_json::from_str(span).unwrap())),
                    None => panic!("the OTLP receiver refused what it got: {line}"),
                }
            }
        });
        Self { process, port, spans }
    }

    /// Spans received until `done` says they are all there.
    fn until(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => seen.push(span),
                Err(_) => panic!("the spans never all arrived; got {seen:#?}"),
            }
        }
        seen
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Traces (contract §5): with an OTLP endpoint set, one ingest request's
/// `traceparent` is the parent of its span; the batch formed from two
/// requests is the first's child and links to the second's; the filter
/// chain and every attempt are the batch's children; the receiver gets the
/// attempt's `traceparent` (the ingest's trace id) unless its webhook says
/// `"traceparent": false`. The spans are decoded by the official protobuf
/// definitions.
#[tokio::test]
async fn a_trace_runs_from_the_ingest_request_to_the_receiver() {
    let otlp = OtlpReceiver::start();
    let receiver = Receiver::start().await;
    receiver.script("/traced", vec![Reply::status(503)]);
    let filter = wasm_filter("drop_by_channel.wasm");
    let (_apps, daemon) = start_with(
        &format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"max_wait_ms": 400}},
                "webhooks": [
                  {{"id": "traced", "url": "{traced}", "event_types": ["channel_occupied"],
                    "filters": [{{"wasm": "{filter}", "config": {{"channels": ["debug-*"]}}}}],
                    "retry": {{"min_backoff_ms": 50, "max_backoff_ms": 100}}}},
                  {{"id": "quiet", "url": "{quiet}", "event_types": ["channel_occupied"], "traceparent": false}}
                ]}}"#,
            traced = receiver.url("/traced"),
            quiet = receiver.url("/quiet"),
            filter = filter.display(),
        ),
        &receiver,
        DaemonOptions::with_env(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://127.0.0.1:{}", otlp.port),
            ),
            ("OTEL_SERVICE_NAME", "hookline-traced"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]),
    );
    // Two requests within one batch window: the first continues a trace.
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let path = "/apps/a/webhook_events";
    let body = events_body(&[("channel_occupied", "room-1")]);
    let query = hookline_core::signing::pusher_signed_query("ka", "sa", path, body.as_bytes(), unix_ms() / 1000);
    let answer = reqwest::Client::new()
        .post(format!("{}{path}?{query}", daemon.url()))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let second = events_body(&[("channel_occupied", "room-2")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &second).await.0, 200);
    let traced = receiver.wait_for("/traced", 2).await;
    let quiet = receiver.wait_for("/quiet", 1).await;
    assert_eq!(traced[1].event_count(), 2, "the two requests are one batch");

    let named = |spans: &[serde_json::Value], name: &str| spans.iter().filter(|s| s["name"] == name).count();
    let spans = otlp.until(|spans| {
        named(spans, "ingest") >= 2
            && named(spans, "batch") >= 1
            && named(spans, "filter") >= 1
            && named(spans, "deliver") >= 3
    });
    let all = |name: &str| -> Vec<&serde_json::Value> { spans.iter().filter(|s| s["name"] == name).collect() };
    assert!(spans.iter().all(|s| s["service"] == "hookline-traced"), "{spans:#?}");
    let ingests = all("ingest");
    let first = ingests
        .iter()
        .find(|s| s["trace_id"] == trace_id)
        .expect("the traced request's span");
    assert_eq!(
        first["parent_span_id"], parent_id,
        "the request's traceparent is the ingest span's parent"
    );
    let other = ingests
        .iter()
        .find(|s| s["trace_id"] != trace_id)
        .expect("the other request's span");
    assert_eq!(
        other["parent_span_id"], "",
        "a request without traceparent starts a trace"
    );
    let batch = all("batch")[0];
    assert_eq!(batch["trace_id"], trace_id);
    assert_eq!(
        batch["parent_span_id"], first["span_id"],
        "the batch is the first request's child"
    );
    assert_eq!(
        batch["links"],
        serde_json::json!([{"trace_id": other["trace_id"], "span_id": other["span_id"]}]),
        "the batch links to the other request it was formed from"
    );
    let filter_span = all("filter")[0];
    assert_eq!(filter_span["parent_span_id"], batch["span_id"]);
    assert_eq!(filter_span["attributes"]["webhook"], "traced");
    let delivers = all("deliver");
    assert!(
        delivers
            .iter()
            .all(|d| d["parent_span_id"] == batch["span_id"] && d["trace_id"] == trace_id),
        "{delivers:#?}"
    );
    // Each attempt's traceparent names its own span, in the ingest's trace.
    for (hit, attempt, outcome) in [(&traced[0], 1, "failed"), (&traced[1], 2, "delivered")] {
        let header = hit.header("traceparent").to_string();
        let span = delivers
            .iter()
            .find(|d| d["attributes"]["webhook"] == "traced" && d["attributes"]["attempt"] == attempt)
            .unwrap_or_else(|| panic!("no span of attempt {attempt}: {delivers:#?}"));
        assert_eq!(
            header,
            format!("00-{trace_id}-{}-01", span["span_id"].as_str().unwrap())
        );
        assert_eq!(span["attributes"]["outcome"], outcome);
    }
    assert_eq!(quiet[0].header("traceparent"), "", "`traceparent: false` sends none");
}
