//! The sqs sink end to end: against moto's server (a local SQS, through
//! tests/peers/moto_peer.py) for delivery, FIFO, splitting, a crash and a
//! deleted queue, and against tests/peers/sqs_server.py, which verifies
//! every request's SigV4 signature with botocore, for throttling.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::*;

const AKID: &str = "AKIDHOOKLINESQS";
const SECRET_KEY: &str = "hookline/sqs/secret+key";

/// Daemon options without any AWS configuration leaking in from the
/// machine, and no instance-metadata lookups.
fn isolated_aws() -> DaemonOptions {
    let env: Vec<(String, String)> = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    DaemonOptions {
        env,
        ..Default::default()
    }
}

/// The `sqs` object with inline credentials (moto accepts any).
fn sqs_options(extra: Value) -> Value {
    let mut options = json!({"client_options": {
        "credentials": {"accessKeyId": AKID, "secretAccessKey": SECRET_KEY}}});
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    options
}

/// The events of every message, each message's body parsed.
fn events_of(messages: &[SqsMessage]) -> Vec<Value> {
    messages
        .iter()
        .flat_map(|m| {
            serde_json::from_str::<Value>(&m.body).unwrap()["events"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect()
}

fn verify(key: &str, secret: &str, messages: &[SqsMessage]) {
    let received: Vec<Received> = messages.iter().map(SqsMessage::to_received).collect();
    assert_officially_valid(key, secret, &received);
}

#[tokio::test]
async fn standard_and_fifo_queues_get_signed_batches() {
    let moto = Moto::start();
    let standard = moto.create_queue("hooks");
    let fifo = moto.create_queue("hooks.fifo");
    let apps = AppsDir::new();
    let app = json!({"id": "s", "key": "sk", "secret": "ss", "webhooks": [
        {"id": "std", "sqs_queue_url": standard, "region": "us-east-1", "event_types": ["client_event"],
         "headers": {"X-Env": "test", "x-pusher-signature": "forged"}, "sqs": sqs_options(json!({}))},
        {"id": "fifo", "sqs_queue_url": fifo, "event_types": ["client_event"],
         "sqs": sqs_options(json!({"region": "us-east-1", "group_by": "channel"}))}
    ]});
    apps.write("sqs.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws());

    let body = json!({"events": [
        {"name": "client_event", "channel": "private-a", "event": "client-x", "data": "héllo 😀 \"q\" \\ \u{1}\n", "user_id": "u"},
        {"name": "client_event", "channel": "private-b", "event": "client-y", "data": "{}", "user_id": "u"},
        {"name": "client_event", "channel": "private-a", "event": "client-z", "data": "2", "user_id": "u"}
    ]})
    .to_string();
    assert_eq!(native(&daemon, "s", "sk", "ss", &body).await.0, 200);

    let on_standard = moto
        .wait_messages_by(&standard, PATIENCE, |all| events_of(all).len() >= 3)
        .await;
    assert_eq!(events_of(&on_standard).len(), 3);
    verify("sk", "ss", &on_standard);
    for m in &on_standard {
        assert_eq!(m.attribute("X-Env"), "test", "webhook headers travel as attributes");
        assert_eq!(m.attribute("X-Pusher-Key"), "sk");
        assert_ne!(m.attribute("X-Pusher-Signature"), "forged", "signed attributes win");
        assert!(!m.attributes.contains_key("x-pusher-signature"), "{:?}", m.attributes);
        assert!(!m.attribute("X-Hookline-Batch-Id").is_empty());
        assert!(m.attribute("X-Hookline-Batch-Time").parse::<u64>().is_ok());
        assert_eq!(m.group_id, None);
    }

    // group_by channel: one batch per channel, grouped by it, deduplicated
    // by batch id.
    let on_fifo = moto.wait_messages(&fifo, 2).await;
    assert_eq!(on_fifo.len(), 2, "{on_fifo:#?}");
    verify("sk", "ss", &on_fifo);
    let mut groups = BTreeMap::new();
    for m in &on_fifo {
        let events = events_of(std::slice::from_ref(m));
        let channel = events[0]["channel"].as_str().unwrap().to_string();
        assert!(
            events.iter().all(|e| e["channel"] == channel.as_str()),
            "one channel per batch"
        );
        assert_eq!(m.group_id.as_deref(), Some(channel.as_str()));
        assert_eq!(m.deduplication_id.as_deref(), Some(m.attribute("X-Hookline-Batch-Id")));
        groups.insert(channel, events.len());
    }
    assert_eq!(
        groups,
        BTreeMap::from([("private-a".to_string(), 2), ("private-b".to_string(), 1)])
    );
    let a = on_fifo
        .iter()
        .find(|m| m.group_id.as_deref() == Some("private-a"))
        .unwrap();
    let names: Vec<Value> = events_of(std::slice::from_ref(a))
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("client-x"), json!("client-z")],
        "order kept within a channel"
    );
}

#[tokio::test]
async fn a_batch_over_the_message_limit_is_split_and_every_part_verifies() {
    let moto = Moto::start();
    let queue = moto.create_queue("small");
    let apps = AppsDir::new();
    let app = json!({"id": "b", "key": "bk", "secret": "bs", "batching": {"max_wait_ms": 200}, "webhooks": [
        {"sqs_queue_url": queue, "region": "us-east-1", "event_types": ["client_event"],
         "headers": {"X-Env": "test"}, "sqs": sqs_options(json!({"max_body_bytes": 4096}))}
    ]});
    apps.write("sqs.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws());
    let events: Vec<Value> = (0..24)
        .map(|i| json!({"name": "client_event", "channel": "c", "event": format!("client-{i}"), "data": "x".repeat(400)}))
        .collect();
    assert_eq!(
        native(&daemon, "b", "bk", "bs", &json!({ "events": events }).to_string())
            .await
            .0,
        200
    );
    let messages = moto
        .wait_messages_by(&queue, PATIENCE, |all| events_of(all).len() >= 24)
        .await;
    assert!(
        messages.len() >= 3,
        "24 events of 400 bytes in 4 KiB messages: {}",
        messages.len()
    );
    let mut names: Vec<String> = events_of(&messages)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    names.sort_by_key(|n| n[7..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..24).map(|i| format!("client-{i}")).collect();
    assert_eq!(names, expected, "every event once");
    for m in &messages {
        let size = m.body.len()
            + m.attributes
                .iter()
                .map(|(k, v)| k.len() + "String".len() + v.len())
                .sum::<usize>();
        assert!(size <= 4096, "a message of {size} bytes, attributes included");
    }
    let ids: std::collections::BTreeSet<&str> = messages.iter().map(|m| m.attribute("X-Hookline-Batch-Id")).collect();
    assert_eq!(ids.len(), messages.len(), "each part has its own batch id");
    verify("bk", "bs", &messages);
}

#[tokio::test]
async fn fifo_kill_9_mid_load_delivers_every_event_exactly_once() {
    let moto = Moto::start();
    let queue = moto.create_queue("crash.fifo");

    // moto drops a FIFO message whose deduplication id it saw in the last
    // five minutes, as SQS does: the restart's resends rely on it.
    let probe = moto.create_queue("probe.fifo");
    for _ in 0..2 {
        moto.call(
            "sqs",
            "send_message",
            json!({"QueueUrl": probe, "MessageBody": "once", "MessageGroupId": "g", "MessageDeduplicationId": "same"}),
        );
    }
    assert_eq!(moto.receive_all(&probe).len(), 1, "moto de-duplicates FIFO messages");

    let apps = AppsDir::new();
    let app = json!({"id": "k", "key": "kk", "secret": "ks", "batching": {"max_events": 10, "max_wait_ms": 20},
        "webhooks": [{"sqs_queue_url": queue, "region": "us-east-1", "event_types": ["client_event"],
                      "max_in_flight": 4,
                      "sqs": sqs_options(json!({"group_by": "channel"}))}]});
    apps.write("sqs.json", &app.to_string());
    let data = tempfile::tempdir().unwrap();
    let options = DaemonOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..isolated_aws()
    };

    const REQUESTS: usize = 30;
    const PER_REQUEST: usize = 10;
    let daemon = Daemon::start_with(apps.path(), options.clone());
    for r in 0..REQUESTS {
        let events: Vec<Value> = (0..PER_REQUEST)
            .map(|i| {
                json!({"name": "client_event", "channel": format!("c{}", (r * PER_REQUEST + i) % 5),
                       "event": "client-n", "data": format!("{}", r * PER_REQUEST + i)})
            })
            .collect();
        assert_eq!(
            native(&daemon, "k", "kk", "ks", &json!({ "events": events }).to_string())
                .await
                .0,
            200
        );
    }
    // Killed while deliveries are in flight (some sent and not yet marked
    // delivered, some not sent).
    let delivered_before = daemon
        .metric(r#"hookline_delivery_attempts_total{sink="sqs",outcome="success"}"#)
        .await;
    drop(daemon); // SIGKILL
    eprintln!("deliveries done before the kill: {delivered_before}");

    let daemon = Daemon::start_with(apps.path(), options);
    daemon.wait_idle().await;
    let messages = moto
        .wait_messages_by(&queue, PATIENCE, |all| events_of(all).len() >= REQUESTS * PER_REQUEST)
        .await;
    // Idle: nothing else is coming; anything more would be a duplicate.
    let mut all = messages;
    all.extend(moto.receive_all(&queue));
    let mut seen: Vec<u64> = events_of(&all)
        .iter()
        .map(|e| e["data"].as_str().unwrap().parse().unwrap())
        .collect();
    seen.sort();
    let expected: Vec<u64> = (0..(REQUESTS * PER_REQUEST) as u64).collect();
    assert_eq!(seen, expected, "every event exactly once");
    for m in &all {
        assert_eq!(m.deduplication_id.as_deref(), Some(m.attribute("X-Hookline-Batch-Id")));
    }
    verify("kk", "ks", &all);
}

#[tokio::test]
async fn a_fifo_batch_resent_after_a_lost_answer_arrives_once() {
    let moto = Moto::start();
    let queue = moto.create_queue("lossy.fifo");
    // The first SendMessage reaches moto, but its answer is lost.
    let relay = LossyRelay::start(moto.endpoint(), 1).await;
    let apps = AppsDir::new();
    let app = json!({"id": "l", "key": "lk", "secret": "ls", "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200},
        "webhooks": [{"sqs_queue_url": queue, "region": "us-east-1", "event_types": ["client_event"],
                      "sqs": sqs_options(json!({"group_by": "app", "client_options": {
                          "endpoint": relay.endpoint(),
                          "credentials": {"accessKeyId": AKID, "secretAccessKey": SECRET_KEY}}}))}]});
    apps.write("sqs.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws());
    assert_eq!(
        native(&daemon, "l", "lk", "ls", &events_body(&[("client_event", "c")]))
            .await
            .0,
        200
    );
    daemon.wait_metric(&attempts("sqs", "success"), 1.0).await;
    daemon.wait_idle().await;
    assert_eq!(
        daemon.metric(&attempts("sqs", "retry")).await,
        1.0,
        "the lost answer was retried"
    );
    assert_eq!(relay.forwarded(), 2, "moto got the batch twice");
    let mut messages = moto.wait_messages(&queue, 1).await;
    messages.extend(moto.receive_all(&queue));
    assert_eq!(
        messages.len(),
        1,
        "moto dropped the resend by its deduplication id: {messages:#?}"
    );
    assert_eq!(messages[0].group_id.as_deref(), Some("l"), "group_by app");
    verify("lk", "ls", &messages);
}

#[tokio::test]
async fn a_deleted_queue_dead_letters_at_once_naming_the_queue() {
    let moto = Moto::start();
    let queue = moto.create_queue("doomed");
    let apps = AppsDir::new();
    let app = json!({"id": "d", "key": "dk", "secret": "ds", "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200},
        "webhooks": [{"id": "doomed", "sqs_queue_url": queue, "region": "us-east-1", "event_types": ["client_event"],
                      "sqs": sqs_options(json!({}))}]});
    apps.write("sqs.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws());
    let body = events_body(&[("client_event", "c")]);
    assert_eq!(native(&daemon, "d", "dk", "ds", &body).await.0, 200);
    assert_eq!(moto.wait_messages(&queue, 1).await.len(), 1);

    moto.delete_queue(&queue);
    for i in 0..3 {
        // Distinct requests (an identical signed request is accepted once).
        let body = events_body(&[("client_event", &format!("c{i}"))]);
        assert_eq!(native(&daemon, "d", "dk", "ds", &body).await.0, 200);
        daemon
            .wait_metric(&attempts("sqs", "dead_letter"), f64::from(i + 1))
            .await;
    }
    daemon.wait_idle().await;
    assert_eq!(daemon.metric(&attempts("sqs", "retry")).await, 0.0, "no retry storm");
    assert_eq!(daemon.metric(&attempts("sqs", "success")).await, 1.0);
    let letters = dlq_letters(&daemon.dir.path().join("data"));
    assert_eq!(letters.len(), 3, "{letters:#?}");
    for letter in &letters {
        let text = letter.to_string();
        assert!(text.contains(&queue), "the reason names the queue: {letter:#}");
        assert!(text.contains("does not exist"), "{letter:#}");
        assert_eq!(letter["attempts"], 1, "{letter:#}");
    }
}

#[tokio::test]
async fn throttling_is_retried_without_using_up_attempts_and_every_request_is_signed() {
    let server = SqsServer::start(&[(AKID, SECRET_KEY)]);
    server
        .script(json!([{"kind": "throttle"}, {"kind": "throttling"}, {"kind": "kms_throttled"}, {"kind": "throttle"}]))
        .await;
    let queue = format!("{}/123456789012/limited", server.endpoint());
    let apps = AppsDir::new();
    let app = json!({"id": "t", "key": "tk", "secret": "ts",
        "retry": {"max_attempts": 1, "min_backoff_ms": 100, "max_backoff_ms": 200},
        "webhooks": [{"sqs_queue_url": queue, "region": "eu-west-1", "event_types": ["client_event"],
                      "sqs": sqs_options(json!({}))}]});
    apps.write("sqs.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws());
    assert_eq!(
        native(&daemon, "t", "tk", "ts", &events_body(&[("client_event", "c")]))
            .await
            .0,
        200
    );
    let all = server
        .wait_until("four throttles, then a success", |all| {
            all.iter().any(|r| r["status"] == 200)
        })
        .await;
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["throttle", "throttling", "kms_throttled", "throttle", "ok"]);
    for r in &all {
        assert_eq!(r["signature_valid"], true, "{r:#}");
        assert_eq!(r["access_key"], AKID);
        assert_eq!(r["region"], "eu-west-1");
        assert_eq!(r["target"], "AmazonSQS.SendMessage");
        assert_eq!(r["input"]["QueueUrl"], queue.as_str());
    }
    let batch = |r: &Value| r["input"]["MessageAttributes"]["X-Hookline-Batch-Id"]["StringValue"].clone();
    assert!(all.iter().all(|r| batch(r) == batch(&all[0])), "one batch, resent");
    // The exact signed body, verified as a consumer would.
    let ok = &all[4]["input"];
    let attributes: BTreeMap<String, String> = ok["MessageAttributes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["StringValue"].as_str().unwrap().to_string()))
        .collect();
    let message = SqsMessage {
        body: ok["MessageBody"].as_str().unwrap().to_string(),
        attributes,
        message_id: String::new(),
        group_id: None,
        deduplication_id: None,
        receive_count: 1,
    };
    verify("tk", "ts", &[message]);
    daemon.wait_idle().await;
    assert_eq!(daemon.metric(&attempts("sqs", "dead_letter")).await, 0.0);
}

/// SQS carries at most 10 message attributes, 4 of them the signed
/// headers: more webhook `headers`, or a name SQS refuses, is a load error
/// saying what to change, so nothing is accepted for a webhook that could
/// never deliver it.
#[test]
fn more_webhook_headers_than_sqs_attributes_allow_are_refused_saying_what_to_change() {
    let headers: serde_json::Map<String, Value> = (0..7).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let apps = AppsDir::new();
    let app = json!({"id": "h", "key": "hk", "secret": "hs", "webhooks": [
        {"sqs_queue_url": "http://127.0.0.1:9/123456789012/q", "region": "eu-west-1",
         "event_types": ["client_event"], "headers": headers},
        {"sqs_queue_url": "http://127.0.0.1:9/123456789012/q", "region": "eu-west-1",
         "event_types": ["client_event"], "headers": {"AWS.Trace": "t"}}]});
    apps.write("sqs.json", &app.to_string());
    let (ok, stderr) = check(&apps);
    assert!(!ok, "{stderr}");
    for part in [
        "webhook 0: `headers`: the webhook's `headers` hold 7 headers",
        "keep at most 6 headers on an sqs webhook",
        "webhook 1: `headers`:",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from:\n{stderr}");
    }
}

#[tokio::test]
async fn check_refuses_bad_sqs_webhooks_naming_the_key() {
    let apps = AppsDir::new();
    let app = json!({"id": "c", "key": "ck", "secret": "cs", "webhooks": [
        {"sqs_queue_url": "http://localhost:4566/000000000000/local", "event_types": ["client_event"]},
        {"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/std", "event_types": ["client_event"],
         "sqs": {"group_by": "channel"}},
        {"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q", "region": "us-east-1",
         "event_types": ["client_event"]}
    ]});
    apps.write("bad.json", &app.to_string());
    let (ok, stderr) = check(&apps);
    assert!(!ok, "{stderr}");
    for part in [
        "webhook 0: the SQS webhook for \"http://localhost:4566/000000000000/local\" names no region; set `region` (or `sqs.region`)",
        "webhook 1: `sqs.group_by` applies to FIFO queues only",
        "webhook 2: `region` (us-east-1) and `sqs_queue_url",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from:\n{stderr}");
    }

    let good = AppsDir::new();
    let app = json!({"id": "g", "key": "gk", "secret": "gs", "webhooks": [
        {"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo", "event_types": ["client_event"],
         "sqs": {"group_by": "app"}}]});
    good.write("good.json", &app.to_string());
    // The shipped example, its secrets filled in as the environment would.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps/sqs.json.example"),
    )
    .unwrap()
    .replace("${SQS_DEMO_SECRET}", "s3cret")
    .replace("${CHAT_AWS_ACCESS_KEY_ID}", "AKIDEXAMPLE")
    .replace("${CHAT_AWS_SECRET_ACCESS_KEY}", "example-secret");
    good.write("sqs.json", &example);
    let (ok, stderr) = check(&good);
    assert!(ok, "{stderr}");
}

/// docs/tutorials/sqs.md, run as written (the conventions of tests/docs.rs:
/// ` ```sh ` must succeed, ` ```sh background ready="TEXT" ` is started and
/// waited for, ` ```sh skip="why" ` is not run, ` ```LANG file=PATH `
/// writes PATH), in a scratch directory, with the test venv's moto and
/// boto3 and the test peers' npm packages standing in for the reader's.
#[test]
fn the_sqs_tutorial_runs_as_written() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    for port in [5099, 7079] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use and the SQS tutorial needs it: stop what runs there"
        );
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/tutorials/sqs.md")).unwrap();
    let section = &page[page.find("\n## The tutorial\n").expect("a tutorial section")..];
    let mut script = String::from(
        "set -eo pipefail\n\
         wait_ready() { for _ in $(seq 1 600); do grep -qF -- \"$2\" \"$1\" && return 0; \
         kill -0 \"$3\" 2>/dev/null || { cat \"$1\" >&2; return 1; }; sleep 0.1; done; cat \"$1\" >&2; return 1; }\n",
    );
    let (mut runnable, mut background) = (0, 0);
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```").filter(|i| !i.is_empty()) else {
            continue;
        };
        let body: String = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(|l| format!("{l}\n"))
            .collect();
        let attribute = |name: &str| {
            info.split_once(&format!("{name}="))
                .map(|(_, rest)| rest.trim_start_matches('"').split('"').next().unwrap().to_string())
        };
        if let Some(path) = attribute("file") {
            script.push_str(&format!(
                "mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'TUTORIAL_EOF'\n{body}TUTORIAL_EOF\n"
            ));
        } else if !info.starts_with("sh") || attribute("skip").is_some() {
            continue;
        } else if info.contains("background") {
            background += 1;
            let ready = attribute("ready").expect("a background block says when it is ready");
            script.push_str(&format!(
                "{} > bg-{background}.log 2>&1 &\nwait_ready bg-{background}.log '{ready}' $!\n",
                body.trim()
            ));
        } else {
            script.push_str(&body);
        }
        runnable += 1;
    }
    assert!(runnable >= 7, "the tutorial's blocks were not found: {script}");

    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(hookline_bin(), bin.join("hookline")).unwrap();
    let venv_bin = python().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("NODE_PATH", peers_dir().join("node_modules"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: moto and the daemon stop with it.
        .process_group(0)
        .spawn()
        .unwrap();
    struct Group(u32);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _group = Group(child.id());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let logs: String = (1..=background)
        .map(|n| std::fs::read_to_string(work.path().join(format!("bg-{n}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n");
    assert!(
        output.status.success(),
        "the tutorial failed as written:\n--- stdout\n{stdout}\n--- stderr\n{}\n--- background\n{logs}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("http://127.0.0.1:5099/123456789012/pusher-events\n"),
        "the queue URL the page shows: {stdout}"
    );
    assert!(stdout.contains("verified: channel_occupied room-1\n"), "{stdout}");
}
