//! Ingest end to end: the official npm `pusher` client publishing through
//! the native endpoint, the relay endpoint, and every refusal of §3.3.

mod support;

use support::*;

const APPS: &str = r#"[
  {"id": "app-1", "key": "key-1", "secret": "secret-1", "webhooks": [
     {"url": "RECEIVER/hooks", "event_types": ["channel_occupied", "member_added"]}]},
  {"id": "off", "key": "key-off", "secret": "secret-off", "enabled": false, "webhooks": []}
]"#;

async fn setup() -> (Receiver, AppsDir, Daemon) {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(APPS);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_INGEST_MAX_BODY_BYTES", "4096")]),
    );
    (receiver, apps, daemon)
}

#[tokio::test]
async fn npm_pusher_signed_post_is_accepted_and_delivered() {
    let (receiver, _apps, daemon) = setup().await;
    let body = events_body(&[("channel_occupied", "room-1")]);
    let answer = publish_with_npm(&daemon.url(), "app-1", "key-1", "secret-1", &body, &[]);
    assert_eq!((answer.status, answer.body.as_str()), (200, "{}"));
    let got = receiver.wait_for("/hooks", 1).await;
    assert_eq!(got[0].event_names(), ["channel_occupied"]);
    assert_officially_valid("key-1", "secret-1", &got);
}

#[tokio::test]
async fn wrong_secret_stale_timestamp_and_tampered_body_are_refused() {
    let (_receiver, _apps, daemon) = setup().await;
    let body = events_body(&[("channel_occupied", "room-1")]);
    let wrong = publish_with_npm(&daemon.url(), "app-1", "key-1", "not-the-secret", &body, &[]);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("auth_signature does not match"), "{}", wrong.body);

    let stale = publish_with_npm(
        &daemon.url(),
        "app-1",
        "key-1",
        "secret-1",
        &body,
        &["--timestamp-offset", "-700"],
    );
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(stale.body.contains("auth_timestamp is 7"), "{}", stale.body);

    let tampered = publish_with_npm(&daemon.url(), "app-1", "key-1", "secret-1", &body, &["--tamper"]);
    assert_eq!(tampered.status, 401, "{}", tampered.body);
    assert!(tampered.body.contains("body_md5 does not match"), "{}", tampered.body);

    // A request within the allowed skew still passes.
    let ok = publish_with_npm(
        &daemon.url(),
        "app-1",
        "key-1",
        "secret-1",
        &body,
        &["--timestamp-offset", "-500"],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn relay_accepts_a_signed_pusher_webhook_and_refuses_bad_ones() {
    let (receiver, _apps, daemon) = setup().await;
    let body = format!(
        r#"{{"time_ms":{},"events":[{{"name":"member_added","channel":"presence-1","user_id":"u1"}}]}}"#,
        unix_ms()
    );
    let (status, text) = relay(&daemon, "key-1", &sign("secret-1", &body), &body).await;
    assert_eq!((status, text.as_str()), (200, "{}"));
    let got = receiver.wait_for("/hooks", 1).await;
    assert_eq!(got[0].json()["events"][0]["user_id"], "u1");

    let (status, text) = relay(&daemon, "key-1", &sign("other", &body), &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("X-Pusher-Signature"), "{text}");

    let (status, text) = relay(&daemon, "nobody", &sign("secret-1", &body), &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unknown app key"), "{text}");

    let old = format!(r#"{{"time_ms":{},"events":[]}}"#, unix_ms() - 700_000);
    let (status, text) = relay(&daemon, "key-1", &sign("secret-1", &old), &old).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("relay_max_age_ms"), "{text}");
}

#[tokio::test]
async fn refusals_have_their_status_and_say_what_is_wrong() {
    let (receiver, _apps, daemon) = setup().await;
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "unknown app",
            "nope",
            events_body(&[("channel_occupied", "c")]),
            404,
            "unknown app id",
        ),
        (
            "malformed JSON",
            "app-1",
            "{\"events\": [".to_string(),
            400,
            "not valid JSON",
        ),
        (
            "event without name",
            "app-1",
            r#"{"events":[{"channel":"c"}]}"#.to_string(),
            400,
            "event 0 has no `name`",
        ),
        (
            "event without channel",
            "app-1",
            r#"{"events":[{"name":"x"}]}"#.to_string(),
            400,
            "event 0 has no `channel`",
        ),
        (
            "no events array",
            "app-1",
            r#"{"event":[]}"#.to_string(),
            400,
            "no `events` array",
        ),
        (
            "oversize body",
            "app-1",
            format!(r#"{{"events":[{{"name":"a","channel":"{}"}}]}}"#, "x".repeat(5000)),
            413,
            "max_body_bytes",
        ),
    ];
    for (what, app, body, status, message) in cases {
        let (key, secret) = ("key-1", "secret-1");
        let (got, text) = native(&daemon, app, key, secret, &body).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(message), "{what}: {text}");
    }
    let (status, text) = native(
        &daemon,
        "off",
        "key-off",
        "secret-off",
        &events_body(&[("channel_occupied", "c")]),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("disabled"), "{text}");

    // The daemon keeps serving after all of that.
    let (status, _) = native(
        &daemon,
        "app-1",
        "key-1",
        "secret-1",
        &events_body(&[("channel_occupied", "after")]),
    )
    .await;
    assert_eq!(status, 200);
    let got = receiver.wait_for("/hooks", 1).await;
    assert_eq!(got.len(), 1, "only the last, valid request was delivered");
    assert_eq!(got[0].json()["events"][0]["channel"], "after");
}

#[tokio::test]
async fn unknown_app_is_404_before_the_body_size_is_checked() {
    let (_receiver, _apps, daemon) = setup().await;
    let big = format!(r#"{{"events":[{{"name":"a","channel":"{}"}}]}}"#, "x".repeat(5000));
    assert_eq!(native(&daemon, "nope", "k", "s", &big).await.0, 404);
    // 413 before 401: an oversize body with a bad signature is "too large".
    assert_eq!(native(&daemon, "app-1", "key-1", "wrong", &big).await.0, 413);
    // 401 before 403: a disabled app with a bad signature is "unauthorized".
    assert_eq!(
        native(&daemon, "off", "key-off", "wrong", &events_body(&[("a", "b")]))
            .await
            .0,
        401
    );
}

/// What a native POST was answered: status, `content-type` and
/// `x-hookline-generation`, then the body.
type Answer = ((u16, Option<String>, Option<String>), String);

/// POSTs `body` to `path`, signed as the Pusher HTTP API signs a POST to
/// `/apps/{app}/webhook_events`.
async fn post_signed_for(daemon: &Daemon, path: &str, app: &str, key: &str, secret: &str, body: &str) -> Answer {
    let signed_path = format!("/apps/{app}/webhook_events");
    let query =
        hookline_core::signing::pusher_signed_query(key, secret, &signed_path, body.as_bytes(), unix_ms() / 1000);
    let response = reqwest::Client::new()
        .post(format!("{}{path}?{query}", daemon.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let head = (
        response.status().as_u16(),
        header("content-type"),
        header("x-hookline-generation"),
    );
    (head, response.text().await.unwrap())
}

/// Native ingest is answered on a direct path unless the app id needs
/// decoding, which goes through the router: both answer alike.
#[tokio::test]
async fn a_percent_escaped_app_id_is_answered_as_the_plain_one() {
    let (receiver, _apps, daemon) = setup().await;
    let (plain_body, escaped_body) = (
        events_body(&[("channel_occupied", "plain")]),
        events_body(&[("channel_occupied", "escaped")]),
    );
    let plain = post_signed_for(
        &daemon,
        "/apps/app-1/webhook_events",
        "app-1",
        "key-1",
        "secret-1",
        &plain_body,
    )
    .await;
    let escaped = post_signed_for(
        &daemon,
        "/apps/app%2D1/webhook_events",
        "app-1",
        "key-1",
        "secret-1",
        &escaped_body,
    )
    .await;
    assert_eq!(plain.0.0, 200, "{}", plain.1);
    assert!(plain.0.2.is_some(), "x-hookline-generation is set");
    assert_eq!(escaped, plain);
    let got = receiver.wait_for_events("/hooks", 2).await;
    let mut channels: Vec<String> = got
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .map(|e| e["channel"].as_str().unwrap().to_string())
        .collect();
    channels.sort();
    assert_eq!(channels, ["escaped", "plain"]);

    // A refusal reads the same both ways too.
    let body = events_body(&[("a", "b")]);
    let unknown = post_signed_for(&daemon, "/apps/nope/webhook_events", "nope", "k", "s", &body).await;
    let unknown_escaped = post_signed_for(&daemon, "/apps/n%6Fpe/webhook_events", "nope", "k", "s", &body).await;
    assert_eq!(unknown.0.0, 404, "{}", unknown.1);
    assert_eq!(unknown_escaped, unknown);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let (_receiver, _apps, daemon) = setup().await;
    let health = reqwest::get(format!("{}/healthz", daemon.url())).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", daemon.url())).await.unwrap();
    assert_eq!(ready.status(), 200);
    let status: serde_json::Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(status["apps"], 2);
    let metrics = reqwest::get(format!("{}/metrics", daemon.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hookline_batches_formed_total 0"), "{metrics}");
}

/// The relay's refusals, each in the contract's order: 413 before 401,
/// 401 before 403, 403 before 400.
#[tokio::test]
async fn relay_refusals_have_their_status_in_the_contract_order() {
    let (_receiver, _apps, daemon) = setup().await;
    let big = format!(
        r#"{{"time_ms":{},"events":[{{"name":"e","channel":"{}"}}]}}"#,
        unix_ms(),
        "x".repeat(5000)
    );
    // Too large, and not even signed: 413.
    let (status, text) = relay(&daemon, "nobody", "bad", &big).await;
    assert_eq!(status, 413, "{text}");
    // Signed for a disabled app, but malformed: 403.
    let broken = "{\"events\": [";
    let (status, text) = relay(&daemon, "key-off", &sign("secret-off", broken), broken).await;
    assert_eq!(status, 403, "{text}");
    // Signed for an enabled app, malformed: 400 saying what is wrong.
    let (status, text) = relay(&daemon, "key-1", &sign("secret-1", broken), broken).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not valid JSON"), "{text}");
    let nameless = format!(r#"{{"time_ms":{},"events":[{{"channel":"c"}}]}}"#, unix_ms());
    let (status, text) = relay(&daemon, "key-1", &sign("secret-1", &nameless), &nameless).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("name"), "{text}");
}

/// Past `delivery.max_backlog_bytes` of undelivered events, both ingests
/// answer 503 (never a silent drop), and accept again once it drains.
#[tokio::test]
async fn a_full_backlog_answers_503_until_it_drains() {
    let receiver = Receiver::start().await;
    receiver.script("/hooks", vec![Reply::status(503); 3]);
    let apps = receiver.apps(
        r#"{"id": "app-1", "key": "key-1", "secret": "secret-1", "batching": {"enabled": false},
            "webhooks": [{"url": "RECEIVER/hooks", "event_types": ["channel_occupied"],
                          "retry": {"min_backoff_ms": 200, "max_backoff_ms": 300}}]}"#,
    );
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[
            ("HOOKLINE_DELIVERY_MAX_BACKLOG_BYTES", "10"),
            ("HOOKLINE_DELIVERY_CIRCUIT_FAILURES", "0"),
        ]),
    );
    let first = events_body(&[("channel_occupied", "first")]);
    assert_eq!(native(&daemon, "app-1", "key-1", "secret-1", &first).await.0, 200);
    // The first event is undelivered (its receiver answers 503): full.
    receiver.wait_for("/hooks", 1).await;
    let more = events_body(&[("channel_occupied", "more")]);
    let (status, text) = native(&daemon, "app-1", "key-1", "secret-1", &more).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("max_backlog_bytes"), "{text}");
    let relayed = format!(
        r#"{{"time_ms":{},"events":[{{"name":"channel_occupied","channel":"r"}}]}}"#,
        unix_ms()
    );
    let (status, _) = relay(&daemon, "key-1", &sign("secret-1", &relayed), &relayed).await;
    assert_eq!(status, 503);
    // Delivered on the fourth try: room again.
    receiver.wait_for("/hooks", 4).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = native(&daemon, "app-1", "key-1", "secret-1", &more).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "the backlog never drained");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
