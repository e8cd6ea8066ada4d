//! `hookline sink new NAME --lang rust` writes a project on the Rust sink
//! SDK whose own tests pass natively (against the SDK's local receiver, no
//! wasm), which builds for wasm32-wasip2, and whose component delivers in
//! the daemon through the SDK's `wasi:http` client: a 429's `Retry-After`
//! is honoured on the same batch id, and a request to an origin the
//! webhook does not allow comes back to the sink as a denial that
//! dead-letters the batch, naming `allowed_hosts`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::json;
use support::*;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn sink_new(dir: &Path, lang: &str) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(hookline_bin())
        .args(["sink", "new"])
        .arg(dir)
        .args(["--lang", lang, "--sdk"])
        .arg(repo.join("sdk"))
        .output()
        .unwrap()
}

/// Runs cargo in the project with the workspace's lock file (the versions
/// this suite already fetched) and a target directory under target/ that
/// keeps what it compiled for the next run.
fn cargo(project: &Path, args: &[&str]) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = project.join("Cargo.lock");
    if !lock.exists() {
        std::fs::copy(repo.join("Cargo.lock"), &lock).unwrap();
    }
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .current_dir(project)
        .args(args)
        .env("CARGO_TARGET_DIR", repo.join("target/scaffold"))
        .output()
        .unwrap()
}

/// Scaffolds `sink-e2e`, runs its tests natively and builds its component.
fn scaffolded_component(root: &Path) -> PathBuf {
    let dir = root.join("sink-e2e");
    let created = sink_new(&dir, "rust");
    assert!(created.status.success(), "{}", text(&created));
    assert!(
        String::from_utf8_lossy(&created.stdout).contains("cargo build --release --target wasm32-wasip2"),
        "{}",
        text(&created)
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("\"allowed_hosts\""), "{readme}");

    let tested = cargo(&dir, &["test"]);
    let output = text(&tested);
    assert!(tested.status.success(), "{output}");
    assert!(output.contains("test result: ok. 3 passed"), "{output}");

    let built = cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(built.status.success(), "{}", text(&built));
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scaffold/wasm32-wasip2/release/sink_e2e.wasm");
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

#[tokio::test]
async fn a_scaffolded_sink_tests_natively_builds_for_wasm_and_delivers_in_the_daemon() {
    let root = tempfile::tempdir().unwrap();
    let wasm = scaffolded_component(root.path());

    let receiver = Receiver::start().await;
    receiver.script("/events", vec![Reply::status(429).with_header("Retry-After", "1")]);
    let origin = receiver.url("");
    let origin = origin.trim_end_matches('/');
    let apps = AppsDir::new();
    let app = json!({"id": "s", "key": "sk", "secret": "ss", "batching": {"max_wait_ms": 50},
    "webhooks": [
        {"id": "allowed", "event_types": ["channel_occupied"],
         "sink": {"wasm": wasm.to_str().unwrap(), "config": {"url": receiver.url("/events")},
                  "allowed_hosts": [{"origin": origin, "allow_private": true}]}},
        {"id": "denied", "event_types": ["channel_occupied"],
         "sink": {"wasm": wasm.to_str().unwrap(), "config": {"url": receiver.url("/elsewhere")},
                  "allowed_hosts": [{"origin": "http://127.0.0.1:9", "allow_private": true}]}}
    ]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start(apps.path());
    let body = r#"{"events":[{"name":"channel_occupied","channel":"room-1"}]}"#;
    assert_eq!(native(&daemon, "s", "sk", "ss", body).await.0, 200);

    // The 429 is retried no sooner than its Retry-After, with the batch id.
    let got = receiver.wait_for("/events", 2).await;
    assert_eq!(got[0].answered, 429);
    assert!(got[1].status_ok());
    let key = got[0].header("idempotency-key").to_string();
    assert!(!key.is_empty());
    assert_eq!(got[1].header("idempotency-key"), key);
    assert_eq!(
        got[1].json(),
        json!([{"name": "channel_occupied", "channel": "room-1"}])
    );
    assert!(got[1].at - got[0].at >= std::time::Duration::from_secs(1));

    // The other webhook's origin is not allowed: the SDK reports the host's
    // denial and the sink rejects, so the batch is a dead letter naming
    // allowed_hosts, and nothing reached the receiver.
    let data = daemon.dir.path().join("data");
    let deadline = Instant::now() + PATIENCE;
    let letters = loop {
        let letters = dlq_letters(&data);
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 1, "{}", daemon.logs());
    let letter = letters[0].to_string();
    assert!(letter.contains("allowed_hosts"), "{letter}");
    assert!(letter.contains("denied"), "{letter}");
    assert!(receiver.on("/elsewhere").is_empty());
}

#[test]
fn sink_new_refuses_other_languages_and_never_overwrites() {
    // `--lang js`: tests/sink_js.rs.
    let root = tempfile::tempdir().unwrap();
    let python = sink_new(&root.path().join("py-sink"), "python");
    assert!(!python.status.success());
    assert!(text(&python).contains("rust"), "{}", text(&python));

    let dir = root.path().join("twice");
    assert!(sink_new(&dir, "rust").status.success());
    let again = sink_new(&dir, "rust");
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
}
