//! The sns and eventbridge sinks end to end, against moto's server mode
//! (one moto per test, on a free port): SNS topics with an SQS subscription
//! (raw message delivery) and EventBridge buses with a rule whose target is
//! an SQS queue. Every batch consumed from the queue is verified with the
//! official Pusher libraries. moto does not check SigV4 (the lambda and sqs
//! tests cover signing against endpoints that do), and cannot be made to
//! answer a failed PutEvents entry for a valid entry, so that case runs
//! against a local endpoint speaking the PutEvents API.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::*;

/// moto's account id, in every ARN it makes.
const ACCOUNT: &str = "123456789012";
/// moto_peer.py's region.
const REGION: &str = "us-east-1";

/// Daemon options without any AWS configuration leaking in from the
/// machine, and no instance-metadata lookups.
fn isolated_aws() -> DaemonOptions {
    DaemonOptions::with_env(&[
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
    ])
}

/// The `client_options` pointing a webhook at this endpoint.
fn client_options(endpoint: &str) -> Value {
    json!({"endpoint": endpoint, "credentials": {"accessKeyId": "testing", "secretAccessKey": "testing"}})
}

fn queue_arn(moto: &Moto, url: &str) -> String {
    moto.call(
        "sqs",
        "get_queue_attributes",
        json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
    )["Attributes"]["QueueArn"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A topic (FIFO when `name` ends in `.fifo`) with a queue subscribed with
/// raw message delivery; returns (topic ARN, queue URL).
fn topic_with_queue(moto: &Moto, name: &str) -> (String, String) {
    let fifo = name.ends_with(".fifo");
    let queue = moto.create_queue(&if fifo {
        format!("{}-q.fifo", name.trim_end_matches(".fifo"))
    } else {
        format!("{name}-q")
    });
    let attributes = if fifo { json!({"FifoTopic": "true"}) } else { json!({}) };
    let topic = moto.call("sns", "create_topic", json!({"Name": name, "Attributes": attributes}))["TopicArn"]
        .as_str()
        .unwrap()
        .to_string();
    moto.call(
        "sns",
        "subscribe",
        json!({"TopicArn": topic, "Protocol": "sqs", "Endpoint": queue_arn(moto, &queue),
               "Attributes": {"RawMessageDelivery": "true"}}),
    );
    (topic, queue)
}

/// A bus with a rule sending events of `source` to a new queue; returns the
/// queue URL.
fn bus_with_queue(moto: &Moto, bus: &str, source: &str) -> String {
    let queue = moto.create_queue(&format!("{bus}-q"));
    moto.call("events", "create_event_bus", json!({"Name": bus}));
    moto.call(
        "events",
        "put_rule",
        json!({"Name": format!("{bus}-rule"), "EventBusName": bus,
               "EventPattern": json!({"source": [source]}).to_string()}),
    );
    moto.call(
        "events",
        "put_targets",
        json!({"Rule": format!("{bus}-rule"), "EventBusName": bus,
               "Targets": [{"Id": "queue", "Arn": queue_arn(moto, &queue)}]}),
    );
    queue
}

fn start(app: &Value) -> (AppsDir, Daemon) {
    let apps = AppsDir::new();
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws());
    (apps, daemon)
}

fn event_count(messages: &[SqsMessage]) -> usize {
    messages
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(&m.body).unwrap()["events"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum()
}

fn received(messages: &[SqsMessage]) -> Vec<Received> {
    messages.iter().map(SqsMessage::to_received).collect()
}

/// What the EventBridge consumer does (tests/peers/eventbridge_detail.js):
/// each queued event's `detail.headers`, and `JSON.stringify(detail.payload)`
/// as the body; with the event's detail-type and source.
fn eventbridge_deliveries(messages: &[SqsMessage]) -> Vec<(Received, Value)> {
    let input: String = messages
        .iter()
        .map(|m| serde_json::to_string(&m.body).unwrap() + "\n")
        .collect();
    let mut command = std::process::Command::new(node());
    command.arg(peers_dir().join("eventbridge_detail.js"));
    run_peer(command, &input)
        .lines()
        .map(|line| {
            let out: Value = serde_json::from_str(line).unwrap();
            let headers = out["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let delivery = Received {
                path: String::new(),
                headers,
                body: out["body"].as_str().unwrap().to_string(),
                at: std::time::Instant::now(),
                answered: 200,
            };
            (delivery, out)
        })
        .collect()
}

fn letters_text(daemon: &Daemon) -> String {
    Value::Array(dlq_letters(&daemon.dir.path().join("data"))).to_string()
}

const UNICODE_DATA: &str = "héllo 😀 \"q\" \\ \u{1}\u{1f}\n\t";

#[tokio::test]
async fn sns_standard_and_fifo_topics_deliver_verified_batches_to_their_queues() {
    let moto = Moto::start();
    let (standard, standard_queue) = topic_with_queue(&moto, "hooks");
    let (fifo, fifo_queue) = topic_with_queue(&moto, "ordered.fifo");
    let options = json!({"client_options": client_options(&moto.endpoint())});
    let mut by_channel = options.clone();
    by_channel["group_by"] = json!("channel");
    let app = json!({"id": "s", "key": "sk", "secret": "ss", "batching": {"max_wait_ms": 200}, "webhooks": [
        {"sns_topic_arn": standard, "event_types": ["client_event"], "sns": options,
         "headers": {"X-Env": "test", "X-Pusher-Signature": "forged"}},
        {"id": "ordered", "sns_topic_arn": fifo, "event_types": ["client_event"], "sns": by_channel}]});
    let (_apps, daemon) = start(&app);
    let events: Vec<Value> = ["room-1", "room-2", "room-1"]
        .iter()
        .map(|c| json!({"name": "client_event", "channel": c, "event": "client-msg", "data": UNICODE_DATA}))
        .collect();
    let body = json!({"events": events}).to_string();
    assert_eq!(native(&daemon, "s", "sk", "ss", &body).await.0, 200);

    let plain = moto
        .wait_messages_by(&standard_queue, PATIENCE, |all| event_count(all) >= 3)
        .await;
    assert_eq!(event_count(&plain), 3);
    for m in &plain {
        assert_eq!(m.attribute("X-Pusher-Key"), "sk");
        assert_eq!(m.attribute("X-Env"), "test", "webhook headers are attributes");
        assert_ne!(m.attribute("X-Pusher-Signature"), "forged", "the signed attributes win");
        assert!(!m.attribute("X-Hookline-Batch-Id").is_empty());
        assert!(!m.attribute("X-Hookline-Batch-Time").is_empty());
        let json: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(json["events"][0]["data"], UNICODE_DATA);
    }
    assert_officially_valid("sk", "ss", &received(&plain));

    // FIFO, grouped by channel: one batch per channel, its group the
    // channel, its dedupe id the batch id.
    let ordered = moto
        .wait_messages_by(&fifo_queue, PATIENCE, |all| event_count(all) >= 3)
        .await;
    assert_eq!(event_count(&ordered), 3);
    let mut groups: Vec<&str> = ordered.iter().map(|m| m.group_id.as_deref().unwrap()).collect();
    groups.sort();
    assert_eq!(groups, ["room-1", "room-2"], "{ordered:#?}");
    for m in &ordered {
        let json: Value = serde_json::from_str(&m.body).unwrap();
        for event in json["events"].as_array().unwrap() {
            assert_eq!(
                event["channel"].as_str(),
                m.group_id.as_deref(),
                "one channel per batch"
            );
        }
        assert_eq!(m.deduplication_id.as_deref(), Some(m.attribute("X-Hookline-Batch-Id")));
    }
    assert_officially_valid("sk", "ss", &received(&ordered));

    // The verifier can fail: one byte of a body changed.
    let mut tampered = received(&plain[..1]);
    tampered[0].body = tampered[0].body.replacen("client-msg", "client-msh", 1);
    assert_eq!(verify_with_npm("sk", "ss", &tampered)[0]["valid"], false);
}

#[tokio::test]
async fn sns_batches_over_256_kib_are_split_and_every_part_verifies() {
    let moto = Moto::start();
    let (topic, queue) = topic_with_queue(&moto, "big");
    let app = json!({"id": "b", "key": "bk", "secret": "bs", "batching": {"max_wait_ms": 300}, "webhooks": [
        {"sns_topic_arn": topic, "event_types": ["client_event"],
         "sns": {"client_options": client_options(&moto.endpoint())}}]});
    let (_apps, daemon) = start(&app);
    // 40 events of about 8 KB: one batch of about 330 KB, over SNS's limit.
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"name": "client_event", "channel": format!("c{i}"), "event": "client-x", "data": "é".repeat(4000)}))
        .collect();
    let body = json!({"events": events}).to_string();
    assert_eq!(native(&daemon, "b", "bk", "bs", &body).await.0, 200);

    let messages = moto
        .wait_messages_by(&queue, PATIENCE, |all| event_count(all) >= 40)
        .await;
    assert_eq!(event_count(&messages), 40, "every event exactly once");
    assert!(messages.len() >= 2, "split into several messages: {}", messages.len());
    let mut channels: Vec<String> = Vec::new();
    for m in &messages {
        let attributes: usize = m
            .attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum();
        assert!(
            m.body.len() + attributes <= 256 * 1024,
            "{} bytes",
            m.body.len() + attributes
        );
        for event in serde_json::from_str::<Value>(&m.body).unwrap()["events"]
            .as_array()
            .unwrap()
        {
            channels.push(event["channel"].as_str().unwrap().to_string());
        }
    }
    channels.sort();
    channels.dedup();
    assert_eq!(channels.len(), 40);
    assert_officially_valid("bk", "bs", &received(&messages));
    assert_eq!(daemon.metric(&attempts("sns", "dead_letter")).await, 0.0);
}

#[tokio::test]
async fn sns_a_topic_deleted_while_running_dead_letters_naming_it_without_retries() {
    let moto = Moto::start();
    let (topic, queue) = topic_with_queue(&moto, "doomed");
    let app = json!({"id": "d", "key": "dk", "secret": "ds", "batching": {"enabled": false}, "webhooks": [
        {"sns_topic_arn": topic, "event_types": ["channel_occupied"],
         "retry": {"min_backoff_ms": 10, "max_backoff_ms": 20},
         "sns": {"client_options": client_options(&moto.endpoint())}}]});
    let (_apps, daemon) = start(&app);
    let body = events_body(&[("channel_occupied", "c1")]);
    assert_eq!(native(&daemon, "d", "dk", "ds", &body).await.0, 200);
    assert_eq!(moto.wait_messages(&queue, 1).await.len(), 1);

    moto.call("sns", "delete_topic", json!({"TopicArn": topic}));
    let body = events_body(&[("channel_occupied", "c2"), ("channel_occupied", "c3")]);
    assert_eq!(native(&daemon, "d", "dk", "ds", &body).await.0, 200);
    daemon.wait_metric("hookline_dead_letters", 2.0).await;
    let letters = letters_text(&daemon);
    assert!(letters.contains(&topic), "the reason names the topic: {letters}");
    assert!(letters.contains("does not exist"), "{letters}");
    assert_eq!(daemon.metric(&attempts("sns", "dead_letter")).await, 2.0);
    assert_eq!(daemon.metric(&attempts("sns", "retry")).await, 0.0, "no retry storm");
    assert!(moto.receive_all(&queue).is_empty());
}

#[tokio::test]
async fn eventbridge_events_reach_a_rule_target_and_verify_after_json_stringify() {
    let moto = Moto::start();
    let default_queue = bus_with_queue(&moto, "hooks-bus", "hookline");
    let custom_queue = bus_with_queue(&moto, "custom-bus", "com.example.pusher");
    let options = json!({"client_options": client_options(&moto.endpoint())});
    let mut custom = options.clone();
    custom["detail_type"] = json!("presence");
    custom["source"] = json!("com.example.pusher");
    let app = json!({"id": "e", "key": "ek", "secret": "es", "batching": {"max_wait_ms": 200}, "webhooks": [
        {"eventbridge_bus": "hooks-bus", "region": REGION, "event_types": ["client_event"], "eventbridge": options,
         "headers": {"X-Env": "test", "X-Pusher-Signature": "forged"}},
        {"eventbridge_bus": format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/custom-bus"),
         "event_types": ["client_event"], "eventbridge": custom}]});
    let (_apps, daemon) = start(&app);
    let events: Vec<Value> = ["room-1", "room-2"]
        .iter()
        .map(|c| json!({"name": "client_event", "channel": c, "event": "client-msg", "data": UNICODE_DATA, "user_id": "u"}))
        .collect();
    let body = json!({"events": events}).to_string();
    assert_eq!(native(&daemon, "e", "ek", "es", &body).await.0, 200);

    for (queue, detail_type, source) in [
        (&default_queue, "pusher.webhook", "hookline"),
        (&custom_queue, "presence", "com.example.pusher"),
    ] {
        let messages = moto
            .wait_messages_by(queue, PATIENCE, |all| {
                all.iter()
                    .map(|m| {
                        serde_json::from_str::<Value>(&m.body).unwrap()["detail"]["payload"]["events"]
                            .as_array()
                            .unwrap()
                            .len()
                    })
                    .sum::<usize>()
                    >= 2
            })
            .await;
        let deliveries = eventbridge_deliveries(&messages);
        for (delivery, out) in &deliveries {
            assert_eq!(out["detail_type"], detail_type);
            assert_eq!(out["source"], source);
            assert_eq!(delivery.header("x-pusher-key"), "ek");
            assert!(!delivery.header("x-hookline-batch-id").is_empty());
            assert_eq!(delivery.json()["events"][0]["data"], UNICODE_DATA);
            if source == "hookline" {
                assert_eq!(
                    delivery.header("x-env"),
                    "test",
                    "webhook headers are in detail.headers"
                );
                assert_ne!(
                    delivery.header("x-pusher-signature"),
                    "forged",
                    "the signed headers win"
                );
            }
        }
        // EventBridge re-serialised the detail (moto: Python's json.dumps,
        // spaces and \u escapes); JSON.stringify gives the signed bytes back.
        assert!(
            messages.iter().all(|m| m.body.contains("\"detail\": {\"payload\": ")),
            "{messages:#?}"
        );
        let deliveries: Vec<Received> = deliveries.into_iter().map(|(d, _)| d).collect();
        assert_officially_valid("ek", "es", &deliveries);
        let mut tampered = deliveries[..1].to_vec();
        tampered[0].body = tampered[0].body.replacen("client-msg", "client-msh", 1);
        assert_eq!(
            verify_with_npm("ek", "es", &tampered)[0]["valid"],
            false,
            "the verifier can fail"
        );
    }
}

#[tokio::test]
async fn eventbridge_entries_over_256_kib_are_split_and_every_part_verifies() {
    let moto = Moto::start();
    let queue = bus_with_queue(&moto, "big-bus", "hookline");
    let app = json!({"id": "b", "key": "bk", "secret": "bs", "batching": {"max_wait_ms": 300}, "webhooks": [
        {"eventbridge_bus": "big-bus", "region": REGION, "event_types": ["client_event"],
         "eventbridge": {"client_options": client_options(&moto.endpoint())}}]});
    let (_apps, daemon) = start(&app);
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"name": "client_event", "channel": format!("c{i}"), "event": "client-x", "data": "x".repeat(8000)}))
        .collect();
    let body = json!({"events": events}).to_string();
    assert_eq!(native(&daemon, "b", "bk", "bs", &body).await.0, 200);

    let count = |all: &[SqsMessage]| -> usize {
        all.iter()
            .map(|m| {
                serde_json::from_str::<Value>(&m.body).unwrap()["detail"]["payload"]["events"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum()
    };
    let messages = moto.wait_messages_by(&queue, PATIENCE, |all| count(all) >= 40).await;
    assert_eq!(count(&messages), 40, "every event exactly once");
    assert!(messages.len() >= 2, "split into several entries: {}", messages.len());
    let deliveries: Vec<Received> = eventbridge_deliveries(&messages).into_iter().map(|(d, _)| d).collect();
    for d in &deliveries {
        // Source + DetailType + Detail, as AWS counts an entry.
        assert!(d.body.len() + "hookline".len() + "pusher.webhook".len() < 256 * 1024);
    }
    assert_officially_valid("bk", "bs", &deliveries);
    assert_eq!(daemon.metric(&attempts("eventbridge", "dead_letter")).await, 0.0);
}

#[tokio::test]
async fn eventbridge_a_bus_deleted_while_running_dead_letters_naming_it_without_retries() {
    let moto = Moto::start();
    let queue = bus_with_queue(&moto, "doomed-bus", "hookline");
    let app = json!({"id": "d", "key": "dk", "secret": "ds", "batching": {"enabled": false}, "webhooks": [
        {"eventbridge_bus": "doomed-bus", "region": REGION, "event_types": ["channel_occupied"],
         "retry": {"min_backoff_ms": 10, "max_backoff_ms": 20},
         "eventbridge": {"client_options": client_options(&moto.endpoint())}}]});
    let (_apps, daemon) = start(&app);
    let body = events_body(&[("channel_occupied", "c1")]);
    assert_eq!(native(&daemon, "d", "dk", "ds", &body).await.0, 200);
    assert_eq!(moto.wait_messages(&queue, 1).await.len(), 1);

    moto.call("events", "delete_event_bus", json!({"Name": "doomed-bus"}));
    let body = events_body(&[("channel_occupied", "c2"), ("channel_occupied", "c3")]);
    assert_eq!(native(&daemon, "d", "dk", "ds", &body).await.0, 200);
    daemon.wait_metric("hookline_dead_letters", 2.0).await;
    let letters = letters_text(&daemon);
    assert!(letters.contains("the event bus doomed-bus does not exist"), "{letters}");
    assert_eq!(daemon.metric(&attempts("eventbridge", "dead_letter")).await, 2.0);
    assert_eq!(
        daemon.metric(&attempts("eventbridge", "retry")).await,
        0.0,
        "no retry storm"
    );
}

/// A local endpoint speaking EventBridge's PutEvents (JSON 1.1) that
/// answers 200 with the scripted per-entry error codes for each bus
/// (`None`: success), repeating the last one; records (bus, code) per call.
struct PutEventsEndpoint {
    addr: std::net::SocketAddr,
    calls: std::sync::Arc<std::sync::Mutex<Vec<Call>>>,
}

/// A PutEvents call: the bus and the error code answered (`None`: success).
type Call = (String, Option<String>);

impl PutEventsEndpoint {
    async fn start(script: HashMap<&'static str, Vec<Option<&'static str>>>) -> Self {
        use axum::response::IntoResponse;
        type Script = std::sync::Mutex<HashMap<String, std::collections::VecDeque<Option<&'static str>>>>;
        let script: std::sync::Arc<Script> = std::sync::Arc::new(std::sync::Mutex::new(
            script.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect(),
        ));
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let handler = move |body: axum::body::Bytes| {
            let script = script.clone();
            let recorded = recorded.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let bus = request["Entries"][0]["EventBusName"].as_str().unwrap().to_string();
                let code = {
                    let mut script = script.lock().unwrap();
                    let queue = script.get_mut(&bus).expect("a scripted bus");
                    if queue.len() > 1 {
                        queue.pop_front().unwrap()
                    } else {
                        queue[0]
                    }
                };
                recorded.lock().unwrap().push((bus.clone(), code.map(str::to_string)));
                let answer = match code {
                    None => json!({"FailedEntryCount": 0, "Entries": [{"EventId": "e-1"}]}),
                    Some(code) => json!({"FailedEntryCount": 1,
                        "Entries": [{"ErrorCode": code, "ErrorMessage": format!("scripted {code}")}]}),
                };
                ([("content-type", "application/x-amz-json-1.1")], answer.to_string()).into_response()
            }
        };
        let router = axum::Router::new().fallback(axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, calls }
    }

    fn calls(&self, bus: &str) -> Vec<Option<String>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, _)| b == bus)
            .map(|(_, c)| c.clone())
            .collect()
    }
}

#[tokio::test]
async fn eventbridge_a_failed_entry_in_a_200_answer_is_not_delivered() {
    let endpoint = PutEventsEndpoint::start(HashMap::from([
        (
            "flaky",
            vec![
                Some("ThrottlingException"),
                Some("ThrottlingException"),
                Some("ThrottlingException"),
                Some("InternalFailure"),
                None,
            ],
        ),
        ("refused", vec![Some("NotAuthorizedForSourceException")]),
    ]))
    .await;
    let options = json!({"client_options": client_options(&format!("http://{}", endpoint.addr))});
    let retry = json!({"max_attempts": 2, "min_backoff_ms": 10, "max_backoff_ms": 20});
    let app = json!({"id": "f", "key": "fk", "secret": "fs", "batching": {"enabled": false}, "webhooks": [
        {"eventbridge_bus": "flaky", "region": REGION, "event_types": ["channel_occupied"], "retry": retry, "eventbridge": options},
        {"eventbridge_bus": "refused", "region": REGION, "event_types": ["channel_occupied"], "retry": retry, "eventbridge": options}]});
    let (_apps, daemon) = start(&app);
    assert_eq!(
        native(&daemon, "f", "fk", "fs", &events_body(&[("channel_occupied", "c")]))
            .await
            .0,
        200
    );
    daemon.wait_metric(&attempts("eventbridge", "success"), 1.0).await;
    daemon.wait_metric("hookline_dead_letters", 1.0).await;
    // Three throttled answers did not use up the two attempts; the
    // InternalFailure used one, and the next call delivered.
    assert_eq!(endpoint.calls("flaky").len(), 5, "{:?}", endpoint.calls("flaky"));
    assert_eq!(endpoint.calls("flaky").last().unwrap(), &None);
    // A refused entry is final at once, though the call answered 200.
    assert_eq!(endpoint.calls("refused").len(), 1, "{:?}", endpoint.calls("refused"));
    let letters = letters_text(&daemon);
    assert!(
        letters.contains("the entry failed with NotAuthorizedForSourceException on the event bus refused"),
        "{letters}"
    );
    assert!(!letters.contains("flaky"), "{letters}");
}

#[tokio::test]
async fn check_refuses_a_malformed_topic_arn_and_a_bus_without_region() {
    let apps = AppsDir::new();
    apps.write(
        "sns.json",
        &json!({"id": "s", "key": "sk", "secret": "ss", "webhooks": [
            {"sns_topic_arn": "arn:aws:sqs:eu-west-1:123456789012:q", "event_types": ["a"]}]})
        .to_string(),
    );
    apps.write(
        "eventbridge.json",
        &json!({"id": "e", "key": "ek", "secret": "es", "webhooks": [
            {"eventbridge_bus": "my-bus", "event_types": ["a"]}]})
        .to_string(),
    );
    let (ok, stderr) = check(&apps);
    assert!(!ok);
    assert!(
        stderr.contains(
            "sns.json: app \"s\": webhook 0: `sns_topic_arn` \"arn:aws:sqs:eu-west-1:123456789012:q\" is not an SNS topic ARN"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("eventbridge.json: app \"e\": webhook 0: the EventBridge webhook for \"my-bus\" names no region; set `region` (or `eventbridge.region`)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_accepts_the_example_app_files() {
    // The shipped examples pass offline (their secrets filled in, as the
    // environment would).
    let apps = AppsDir::new();
    for name in ["sns.json.example", "eventbridge.json.example"] {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/apps")
                .join(name),
        )
        .unwrap();
        let filled = text
            .replace("${SNS_DEMO_SECRET}", "s3cret")
            .replace("${EVENTBRIDGE_DEMO_SECRET}", "s3cret")
            .replace("${CHAT_AWS_ACCESS_KEY_ID}", "AKIDEXAMPLE")
            .replace("${CHAT_AWS_SECRET_ACCESS_KEY}", "example-secret");
        apps.write(&name.replace(".example", ""), &filled);
    }
    let (ok, stderr) = check(&apps);
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn sns_fifo_a_resend_after_a_lost_answer_is_deduplicated_by_the_batch_id() {
    let moto = Moto::start();
    let (fifo, fifo_queue) = topic_with_queue(&moto, "resent.fifo");
    let (standard, standard_queue) = topic_with_queue(&moto, "resent-standard");
    // Each relay loses moto's first two answers: three publishes of one batch.
    let fifo_relay = LossyRelay::start(moto.endpoint(), 2).await;
    let standard_relay = LossyRelay::start(moto.endpoint(), 2).await;
    let retry = json!({"min_backoff_ms": 10, "max_backoff_ms": 20});
    let app = json!({"id": "r", "key": "rk", "secret": "rs", "batching": {"max_wait_ms": 200}, "webhooks": [
        {"sns_topic_arn": fifo, "event_types": ["client_event"], "retry": retry,
         "sns": {"client_options": client_options(&fifo_relay.endpoint())}},
        {"sns_topic_arn": standard, "event_types": ["client_event"], "retry": retry,
         "sns": {"client_options": client_options(&standard_relay.endpoint())}}]});
    let (_apps, daemon) = start(&app);
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"name": "client_event", "channel": "room", "event": "client-x", "data": format!("{i}")}))
        .collect();
    assert_eq!(
        native(&daemon, "r", "rk", "rs", &json!({"events": events}).to_string())
            .await
            .0,
        200
    );
    daemon.wait_metric(&attempts("sns", "success"), 2.0).await;
    assert_eq!(fifo_relay.forwarded(), 3, "the batch was published three times");
    assert_eq!(standard_relay.forwarded(), 3);

    // The standard topic delivered all three copies (the control)…
    let copies = moto.wait_messages(&standard_queue, 3).await;
    assert_eq!(copies.len(), 3, "{copies:#?}");
    let batch_id = copies[0].attribute("X-Hookline-Batch-Id");
    assert!(copies.iter().all(|m| m.attribute("X-Hookline-Batch-Id") == batch_id));
    // …the FIFO topic one: the resends carried the same dedupe id.
    let once = moto.wait_messages(&fifo_queue, 1).await;
    assert!(moto.receive_all(&fifo_queue).is_empty());
    assert_eq!(once.len(), 1, "{once:#?}");
    assert_eq!(
        once[0].deduplication_id.as_deref(),
        Some(once[0].attribute("X-Hookline-Batch-Id"))
    );
    assert_eq!(
        once[0].group_id.as_deref(),
        Some(fifo.as_str()),
        "group_by webhook: the webhook's id, which defaults to its topic ARN"
    );
    assert_eq!(event_count(&once), 3);
    assert_officially_valid("rk", "rs", &received(&once));
}

#[tokio::test]
async fn sns_fifo_kill_9_between_publish_and_answer_loses_nothing_and_duplicates_nothing() {
    let moto = Moto::start();
    let (fifo, fifo_queue) = topic_with_queue(&moto, "crash.fifo");
    let (standard, standard_queue) = topic_with_queue(&moto, "crash-standard");
    // Each relay holds back moto's first answer: the daemon is killed after
    // that publish took place and before it learnt so.
    let fifo_relay = LossyRelay::start_with(
        moto.endpoint(),
        RelayFaults {
            hold: 1,
            ..RelayFaults::default()
        },
    )
    .await;
    let standard_relay = LossyRelay::start_with(
        moto.endpoint(),
        RelayFaults {
            hold: 1,
            ..RelayFaults::default()
        },
    )
    .await;
    let webhook = |topic: &str, relay: &LossyRelay| {
        json!({"sns_topic_arn": topic, "event_types": ["client_event"],
               "retry": {"min_backoff_ms": 10, "max_backoff_ms": 50},
               "sns": {"client_options": client_options(&relay.endpoint())}})
    };
    let app = json!({"id": "k", "key": "kk", "secret": "ks", "batching": {"max_wait_ms": 20, "max_events": 10},
        "webhooks": [webhook(&fifo, &fifo_relay), webhook(&standard, &standard_relay)]});
    let apps = AppsDir::new();
    apps.write("app.json", &app.to_string());
    let data = tempfile::tempdir().unwrap();
    let options = || DaemonOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..isolated_aws()
    };
    let request = |r: usize| {
        let events: Vec<Value> = (0..5)
            .map(|i| {
                json!({"name": "client_event", "channel": format!("room-{}", i % 2), "event": "client-x",
                            "data": format!("e{}", r * 5 + i)})
            })
            .collect();
        json!({"events": events}).to_string()
    };
    let data_of = |messages: &[SqsMessage]| -> Vec<String> {
        messages
            .iter()
            .flat_map(|m| {
                serde_json::from_str::<Value>(&m.body).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["data"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };

    let daemon = Daemon::start_with(apps.path(), options());
    for r in 0..20 {
        assert_eq!(native(&daemon, "k", "kk", "ks", &request(r)).await.0, 200);
    }
    // Both first publishes took place (moto answered the relays, which
    // hold the answers). moto de-duplicates only against messages still in
    // a queue, so the FIFO queue is read only at the end.
    tokio::join!(fifo_relay.wait_forwarded(1), standard_relay.wait_forwarded(1));
    drop(daemon); // kill -9
    let daemon = Daemon::start_with(apps.path(), options());
    for r in 20..40 {
        assert_eq!(native(&daemon, "k", "kk", "ks", &request(r)).await.0, 200);
    }
    let mut standard_all = moto
        .wait_messages_by(&standard_queue, PATIENCE, |all| data_of(all).len() >= 200)
        .await;
    daemon.wait_idle().await;
    standard_all.extend(moto.receive_all(&standard_queue));
    let fifo_all = moto
        .wait_messages_by(&fifo_queue, PATIENCE, |all| data_of(all).len() >= 200)
        .await;

    // The standard topic shows the resend: the held batch arrived twice.
    let mut standard_seen = data_of(&standard_all);
    assert!(
        standard_seen.len() > 200,
        "the killed publish was resent: {}",
        standard_seen.len()
    );
    standard_seen.sort();
    standard_seen.dedup();
    assert_eq!(standard_seen.len(), 200, "nothing lost");

    // The FIFO topic de-duplicated it by its batch id.
    assert!(
        fifo_relay.forwarded() > fifo_all.len(),
        "{} publishes, {} messages",
        fifo_relay.forwarded(),
        fifo_all.len()
    );
    let mut seen = data_of(&fifo_all);
    assert_eq!(seen.len(), 200, "nothing duplicated");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200, "nothing lost");
    let mut ids: Vec<&str> = fifo_all.iter().map(|m| m.attribute("X-Hookline-Batch-Id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), fifo_all.len(), "one message per batch id");
    assert_officially_valid("kk", "ks", &received(&fifo_all));
}

#[tokio::test]
async fn sns_throttling_is_retried_without_using_up_attempts() {
    let moto = Moto::start();
    let (topic, queue) = topic_with_queue(&moto, "busy");
    let relay = LossyRelay::start_with(
        moto.endpoint(),
        RelayFaults {
            throttle: 3,
            ..RelayFaults::default()
        },
    )
    .await;
    let app = json!({"id": "t", "key": "tk", "secret": "ts", "batching": {"enabled": false}, "webhooks": [
        {"sns_topic_arn": topic, "event_types": ["channel_occupied"],
         "retry": {"max_attempts": 1, "min_backoff_ms": 10, "max_backoff_ms": 20},
         "sns": {"client_options": client_options(&relay.endpoint())}}]});
    let (_apps, daemon) = start(&app);
    let body = events_body(&[("channel_occupied", "c1")]);
    assert_eq!(native(&daemon, "t", "tk", "ts", &body).await.0, 200);
    // Three throttled answers and a publish: more tries than max_attempts.
    let messages = moto.wait_messages(&queue, 1).await;
    daemon.wait_metric(&attempts("sns", "success"), 1.0).await;
    assert_eq!(relay.forwarded(), 1);
    assert_eq!(relay.requests(), 4);
    assert_eq!(daemon.metric(&attempts("sns", "dead_letter")).await, 0.0);
    assert_officially_valid("tk", "ts", &received(&messages));
}
