//! The official Pusher libraries (npm and PyPI) as peers: publishing and verifying.

use super::*;

// ---------------------------------------------------------------------------
// The official Pusher libraries as peers.

pub(crate) fn peers_dir() -> PathBuf {
    std::env::var_os("TEST_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers"))
}

pub(crate) fn node() -> String {
    std::env::var("TEST_PEERS_NODE").unwrap_or_else(|_| "node".to_string())
}

pub(crate) fn python() -> PathBuf {
    std::env::var_os("TEST_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| peers_dir().join(".venv/bin/python"))
}

pub(crate) fn check_peers_installed() {
    assert!(
        peers_dir().join("node_modules/pusher").is_dir(),
        "the npm `pusher` package is not installed; run scripts/setup-tests.sh"
    );
}

pub(crate) fn run_peer(mut command: Command, stdin: &str) -> String {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}; run scripts/setup-tests.sh"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What the official npm client's signed `post` got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Publishes `body` (sent byte for byte) with npm `pusher`'s signed
/// `post({path: "/webhook_events", body})`. `extra` adds flags such as
/// `--timestamp-offset -700` or `--tamper`.
pub fn publish_with_npm(daemon_url: &str, app: &str, key: &str, secret: &str, body: &str, extra: &[&str]) -> Answer {
    check_peers_installed();
    let mut command = Command::new(node());
    command
        .arg(peers_dir().join("publish.js"))
        .args(["--url", daemon_url, "--app-id", app, "--key", key, "--secret", secret])
        .args(extra);
    let out = run_peer(command, body);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    Answer {
        status: v["status"].as_u64().unwrap() as u16,
        body: v["body"].as_str().unwrap_or_default().to_string(),
    }
}

/// npm `pusher`'s verdicts on deliveries: (isValid, restringify equal, content type ok).
pub fn verify_with_npm(key: &str, secret: &str, deliveries: &[Received]) -> Vec<serde_json::Value> {
    check_peers_installed();
    let input: String = deliveries.iter().map(|d| d.to_peer_line() + "\n").collect();
    let mut command = Command::new(node());
    command
        .arg(peers_dir().join("verify.js"))
        .args(["--key", key, "--secret", secret]);
    run_peer(command, &input)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// PyPI `pusher`'s `validate_webhook` verdicts on deliveries.
pub fn verify_with_pypi(key: &str, secret: &str, deliveries: &[Received]) -> Vec<bool> {
    let input: String = deliveries.iter().map(|d| d.to_peer_line() + "\n").collect();
    let mut command = Command::new(python());
    command
        .arg(peers_dir().join("verify.py"))
        .args(["--key", key, "--secret", secret]);
    run_peer(command, &input)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["valid"]
                .as_bool()
                .unwrap()
        })
        .collect()
}

/// Asserts both official libraries accept every delivery.
pub fn assert_officially_valid(key: &str, secret: &str, deliveries: &[Received]) {
    assert!(!deliveries.is_empty());
    for (d, v) in deliveries.iter().zip(verify_with_npm(key, secret, deliveries)) {
        assert_eq!(v["valid"], true, "npm pusher refused {d:#?}");
        assert_eq!(v["content_type_ok"], true, "{d:#?}");
        assert_eq!(
            v["restringify_equal"], true,
            "JSON.stringify(JSON.parse(body)) != body for {d:#?}"
        );
    }
    for (d, ok) in deliveries.iter().zip(verify_with_pypi(key, secret, deliveries)) {
        assert!(ok, "PyPI pusher refused {d:#?}");
    }
}
