//! The status page in a real browser: Debian's headless Chromium driven by
//! playwright-core (tests/peers/status_page.mjs), against the real daemon
//! and a real receiver that goes down and comes back. The page is logged
//! into with the token, shows the webhook ok, then failing by itself, and
//! its Replay button sends the dead letter, which the receiver gets. No
//! console errors (the CSP would report any inline script or style); a
//! screenshot is saved as target/test-artifacts/status-page.png. A second
//! app's webhooks, three on one receiver path that redaction shortens alike,
//! show each its own id, kind and target, and a dead letter shows the id
//! its webhook has in the webhooks table. A browser that sends
//! `Authorization: Bearer` on every request gets the page without the form.
//! Three daemons on one Redis: the page of one shows each node's share and
//! every partition's owner, as the nodes' `/readyz` say.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use support::*;

const TOKEN: &str = "status-page-token-0123456789";

// Multi-threaded: the test thread blocks reading the browser's lines while
// the receivers (tasks of this runtime) answer the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_failing_webhook_and_replays_its_dead_letter_with_the_button() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing; run scripts/setup-tests.sh (Debian chromium)"
    );
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        &format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"enabled": false}},
                "webhooks": [{{"url": "{}", "event_types": ["channel_occupied"],
                               "retry": {{"max_attempts": 2, "min_backoff_ms": 50, "max_backoff_ms": 100}}}}]}}"#,
            receiver.url("/hook")
        ),
    );
    receiver.by_default(
        "/mine/two",
        Reply::status(400)
            .with_header("x-receiver", "status-page")
            .with_body("room-b is not a channel we know"),
    );
    apps.write(
        "b.json",
        &format!(
            r#"{{"id": "b", "key": "kb", "secret": "sb", "batching": {{"enabled": false}},
                "webhooks": [{{"url": "{base}/mine/one", "event_types": ["channel_vacated"]}},
                             {{"url": "{base}/mine/two", "event_types": ["channel_occupied"]}},
                             {{"id": "audit", "url": "{base}/mine/three", "event_types": ["channel_vacated"],
                              "rate_limit": {{"per_second": 5}}}}]}}"#,
            base = receiver.url("")
        ),
    );
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[
            ("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("HOOKLINE_ADMIN_TOKEN", TOKEN),
        ]),
    );
    let admin = format!("http://{}", daemon.admin.unwrap());
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);

    // One delivery before the browser looks: the webhook is ok.
    let occupy = |room: &str| events_body(&[("channel_occupied", room)]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &occupy("room-1")).await.0, 200);
    receiver.wait_for("/hook", 1).await;
    // And app `b`'s `/mine/two` dead-letters one at once.
    assert_eq!(native(&daemon, "b", "kb", "sb", &occupy("room-b")).await.0, 200);
    daemon.wait_metric("hookline_dead_letters", 1.0).await;

    let mut browser = Command::new(node())
        .arg(peers_dir().join("status_page.mjs"))
        .args([&admin, TOKEN])
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .current_dir(peers_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node");
    let mut to_browser = browser.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The browser's next line, or a failure naming what it printed.
    let mut seen = Vec::new();
    let mut expect = |prefix: &str| -> String {
        loop {
            match rx.recv_timeout(PATIENCE * 2) {
                Ok(line) => {
                    seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                    assert!(
                        !line.starts_with("PROBLEMS"),
                        "the browser saw problems: {line}\nlines: {seen:?}"
                    );
                }
                Err(_) => panic!("the browser never printed {prefix:?}; it printed {seen:?}"),
            }
        }
    };

    expect("STEP logged-in");
    expect("STEP bearer");
    expect("STEP ok");
    // The receiver goes down; the next event fails, is retried, and dies.
    receiver.stop();
    assert_eq!(native(&daemon, "a", "ka", "sa", &occupy("room-2")).await.0, 200);
    expect("STEP failing");
    daemon.wait_metric("hookline_dead_letters", 2.0).await;
    // Back up (same address), and the button replays the letter.
    let back = Receiver::start_on(receiver.addr).await;
    writeln!(to_browser, "go").unwrap();
    // The tables as the browser shows them: every webhook by its own id,
    // kind and target, and each dead letter by its webhook's id.
    let tables: serde_json::Value = serde_json::from_str(&expect("TABLES ")).unwrap();
    let shown: Vec<[String; 5]> = serde_json::from_value(tables["webhooks"].clone()).unwrap();
    let hook = |path: &str| receiver.url(path);
    let row = |app: &str, id: &str, target: &str, limit: &str| [app, id, "http", target, limit].map(str::to_string);
    let redacted = hook("/mine/...");
    // The rate limit under its webhook's attempts in flight.
    let expected = vec![
        row("a", &hook("/hook"), &hook("/hook"), ""),
        row("b", &redacted, &redacted, ""),
        row("b", &format!("{redacted}#2"), &redacted, ""),
        row("b", "audit", &redacted, "≤ 5/s"),
    ];
    assert_eq!(shown, expected, "the webhooks table");
    let letters: Vec<[String; 2]> = serde_json::from_value(tables["letters"].clone()).unwrap();
    let mut letters_sorted = letters.clone();
    letters_sorted.sort();
    assert_eq!(
        letters_sorted,
        [
            ["a".to_string(), hook("/hook")],
            ["b".to_string(), format!("{redacted}#2")]
        ],
        "each dead letter names its webhook as the webhooks table does"
    );
    for [app, webhook] in &letters {
        assert!(
            shown.iter().any(|row| &row[0] == app && &row[1] == webhook),
            "dead letter of {app}/{webhook} names no webhook in {shown:?}"
        );
    }
    // Filtered by name (and still after a refresh), by health, and sorted
    // failing first.
    let filters: serde_json::Value = serde_json::from_str(&expect("FILTERS ")).unwrap();
    let rows = |key: &str| -> Vec<[String; 2]> { serde_json::from_value(filters[key].clone()).unwrap() };
    let audit = vec![["audit".to_string(), "idle".to_string()]];
    assert_eq!(rows("byName"), audit, "{filters}");
    assert_eq!(rows("byNameAfterRefresh"), audit, "{filters}");
    let failing = rows("failing");
    assert!(
        failing.len() == 2 && failing.iter().all(|[_, health]| health == "failing"),
        "{filters}"
    );
    let sorted: Vec<String> = rows("sorted").into_iter().map(|[_, health]| health).collect();
    assert_eq!(sorted, ["failing", "failing", "idle", "idle"], "{filters}");
    assert_eq!(filters["count"], "4 of 4");
    // The attempts panel of b's second webhook: its 400 and the body.
    let attempts: serde_json::Value = serde_json::from_str(&expect("ATTEMPTS ")).unwrap();
    assert_eq!(attempts["of"], format!("b / {redacted}#2"), "{attempts}");
    assert_eq!(attempts["outcome"], "failed 400", "{attempts}");
    assert_eq!(attempts["body"], "room-b is not a channel we know", "{attempts}");
    assert!(
        attempts["headers"]
            .as_str()
            .unwrap()
            .contains("x-receiver: status-page"),
        "{attempts}"
    );
    assert_eq!(
        attempts["open"], true,
        "the answer stays open across a refresh: {attempts}"
    );
    let id = expect("LETTER ");
    expect("STEP replayed");
    let replayed = back.wait_for("/hook", 1).await;
    assert_eq!(replayed[0].header("x-hookline-batch-id"), id);
    assert_eq!(replayed[0].json()["events"][0]["channel"], "room-2");
    expect("DONE");
    drop(to_browser);
    assert!(browser.wait().unwrap().success());
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    assert!(
        daemon
            .logs()
            .lines()
            .any(|l| l.contains("admin action: dead letters replay") && l.contains(&id)),
        "no audit line for the replay"
    );
}

/// Three nodes on one Redis (contract §9): once they hold fair shares, the
/// status page of one of them, read in Chromium, shows each node with its
/// share and every partition with the owner each node's `/readyz` names.
#[tokio::test]
async fn the_page_shows_each_nodes_share_and_every_partitions_owner() {
    const PARTITIONS: usize = 8;
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    let redis = RedisServer::start();
    let apps = AppsDir::new();
    apps.write("a.json", r#"{"id": "a", "key": "ka", "secret": "sa", "webhooks": []}"#);
    let start = |name: &str| {
        let mut options = DaemonOptions::with_env(&[
            ("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("HOOKLINE_ADMIN_TOKEN", TOKEN),
        ]);
        options.env.extend(redis.daemon_env(name));
        Daemon::start_with(apps.path(), options)
    };
    let nodes = [start("a"), start("b"), start("c")];
    // Fair shares: 3, 3 and 2 of 8, each partition once.
    let deadline = std::time::Instant::now() + PATIENCE;
    let owners = loop {
        let mut owners = std::collections::BTreeMap::new();
        let mut counts = Vec::new();
        for node in &nodes {
            let status = readyz(node).await;
            let owned = status["ownership"]["owned"].as_array().cloned().unwrap_or_default();
            counts.push(owned.len());
            for partition in owned {
                owners.insert(
                    partition.to_string(),
                    status["ownership"]["node"].as_str().unwrap().to_string(),
                );
            }
        }
        counts.sort_unstable();
        if counts == [2, 3, 3] && owners.len() == PARTITIONS {
            break owners;
        }
        assert!(std::time::Instant::now() < deadline, "no fair shares: {counts:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("status-page-cluster.png");
    let admin = format!("http://{}", nodes[0].admin.unwrap());
    let output = Command::new(node())
        .arg(peers_dir().join("cluster_page.mjs"))
        .args([&admin, TOKEN, "3", &PARTITIONS.to_string()])
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .current_dir(peers_dir())
        .stderr(Stdio::inherit())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the browser failed: {stdout}");
    let shown: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CLUSTER "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("no CLUSTER line: {stdout}"));
    let expected_owners: serde_json::Value = serde_json::to_value(&owners).unwrap();
    assert_eq!(shown["owners"], expected_owners, "every partition's owner");
    let mut shares = std::collections::BTreeMap::new();
    for owner in owners.values() {
        *shares.entry(owner.clone()).or_insert(0u64) += 1;
    }
    assert_eq!(
        shown["shares"],
        serde_json::to_value(&shares).unwrap(),
        "each node's share"
    );
}
