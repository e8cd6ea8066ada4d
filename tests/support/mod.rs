//! Shared harness for the end-to-end tests: the real `hookline` binary on
//! 127.0.0.1, a real HTTP receiver, and the official Pusher libraries (npm
//! and PyPI) as peers.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// How long any awaited event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `hookline` binary under test.
pub fn hookline_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookline")
}

/// A running daemon, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

/// Options for starting a daemon.
#[derive(Default, Clone)]
pub struct DaemonOptions {
    /// Extra `HOOKLINE_*` (or other) environment variables.
    pub env: Vec<(String, String)>,
    /// Extra flags after `serve`.
    pub args: Vec<String>,
    /// The data directory (default: a fresh one per daemon).
    pub data_dir: Option<PathBuf>,
    /// The working directory (default: the test's), for relative paths.
    pub cwd: Option<PathBuf>,
    /// Runs the daemon under this umask (through `sh`).
    pub umask: Option<u32>,
    /// Runs the daemon with this open-file limit, soft and hard (through `sh`).
    pub nofile: Option<u64>,
}

impl Daemon {
    /// Starts `hookline serve --apps APPS --listen 127.0.0.1:0` and waits for
    /// its "listening on" line.
    pub fn start(apps: &Path) -> Self {
        Self::start_with(apps, DaemonOptions::default())
    }

    pub fn start_with(apps: &Path, options: DaemonOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = if options.umask.is_none() && options.nofile.is_none() {
            Command::new(hookline_bin())
        } else {
            let mut setup = String::new();
            if let Some(mask) = options.umask {
                setup.push_str(&format!("umask {mask:03o} && "));
            }
            if let Some(n) = options.nofile {
                setup.push_str(&format!("ulimit -n {n} && "));
            }
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{setup}exec \"$0\" \"$@\""))
                .arg(hookline_bin());
            sh
        };
        command
            .arg("serve")
            .arg("--apps")
            .arg(apps)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(options.data_dir.clone().unwrap_or_else(|| dir.path().join("data")))
            .args(&options.args)
            .env("RUST_LOG", "info,hookline_core=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in &options.env {
            command.env(k, v);
        }
        if let Some(cwd) = &options.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().expect("spawn hookline");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_address(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "hookline did not start; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        Self {
            child: Some(child),
            addr,
            dir,
            stderr_path,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (e.g. "TERM", "HUP") to the daemon.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the daemon to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hookline did not exit; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads a metric's value from /metrics (0 when absent). `selector` is
    /// the metric name with its labels as printed, e.g.
    /// `hookline_delivery_attempts_total{sink="http",outcome="success"}`.
    pub async fn metric(&self, selector: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(selector).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// The sum of every series of a metric (`hookline_queue_depth`, all
    /// labels); 0 when absent.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until no delivery is waiting or in flight (the queue-depth
    /// gauge is 0): whatever was formed has been delivered or given up on,
    /// so "nothing else arrives" can be checked.
    pub async fn wait_idle(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let depth = self.metric_sum("hookline_queue_depth").await;
            if depth == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{depth} deliveries still waiting; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a metric reaches at least `value`.
    pub async fn wait_metric(&self, selector: &str, value: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.metric(selector).await;
            if now >= value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{selector} stayed at {now}, wanted {value}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The address in the daemon's ready line on stdout: `listening on ADDR`,
/// or `{"listening":"ADDR"}` with `log_format = "json"`.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    if let Some(addr) = line.strip_prefix("listening on ") {
        return addr.parse().ok();
    }
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    json["listening"].as_str()?.parse().ok()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// The status the receiver answered it with.
    pub answered: u16,
}

impl Received {
    /// Whether the receiver answered it 2xx.
    pub fn status_ok(&self) -> bool {
        (200..300).contains(&self.answered)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// The `name`s of the delivered events.
    pub fn event_names(&self) -> Vec<String> {
        self.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn event_count(&self) -> usize {
        self.json()["events"].as_array().unwrap().len()
    }

    /// The line `verify.js`/`verify.py` read.
    pub fn to_peer_line(&self) -> String {
        serde_json::json!({"headers": self.headers, "body": self.body}).to_string()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// How long the answer takes (after the request is recorded).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            delay: Duration::ZERO,
        }
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Scripted replies per path, used in order; afterwards 200.
    replies: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// Replies every later request on a path gets once its script is used up.
    default_replies: Mutex<HashMap<String, Reply>>,
    notify: Notify,
    /// Requests being answered now, and the most at once so far.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

/// A real HTTP server recording every request.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// A receiver on a given address (one that was down until now).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(record).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An apps directory holding `apps_json` as `apps.json`, with every
    /// `RECEIVER` replaced by this receiver's base URL.
    pub fn apps(&self, apps_json: &str) -> AppsDir {
        let apps = AppsDir::new();
        apps.write("apps.json", &apps_json.replace("RECEIVER", &self.url("")));
        apps
    }

    /// What `path` answers once its script is used up (default 200).
    pub fn by_default(&self, path: &str, reply: Reply) {
        self.state
            .default_replies
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    /// The most requests this receiver was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Scripts the next replies on `path`.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .replies
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn on(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until `path` has received at least `n` requests; returns them.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        self.wait_until(|all| all.iter().filter(|r| r.path == path).count() >= n)
            .await;
        self.on(path)
    }

    /// Waits until `path` has received requests holding at least `n` events.
    pub async fn wait_for_events(&self, path: &str, n: usize) -> Vec<Received> {
        self.wait_until(|all| {
            all.iter()
                .filter(|r| r.path == path)
                .map(Received::event_count)
                .sum::<usize>()
                >= n
        })
        .await;
        self.on(path)
    }

    pub async fn wait_until(&self, done: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.state.notify.notified();
            if done(&self.state.received.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("receiver did not get what the test waited for; got {:#?}", self.all());
            }
        }
    }
}

async fn record(State(state): State<Arc<ReceiverState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let reply = state
        .replies
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .or_else(|| state.default_replies.lock().unwrap().get(&path).cloned())
        .unwrap_or(Reply::status(200));
    state.received.lock().unwrap().push(Received {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8(body.to_vec()).expect("deliveries are UTF-8"),
        at: Instant::now(),
        answered: reply.status,
    });
    state.notify.notify_waiters();
    if !reply.delay.is_zero() {
        use std::sync::atomic::Ordering::SeqCst;
        let now = state.in_flight.fetch_add(1, SeqCst) + 1;
        state.most_in_flight.fetch_max(now, SeqCst);
        tokio::time::sleep(reply.delay).await;
        state.in_flight.fetch_sub(1, SeqCst);
    }
    let mut response = StatusCode::from_u16(reply.status).unwrap().into_response();
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::try_from(k).unwrap(),
            axum::http::HeaderValue::try_from(v).unwrap(),
        );
    }
    response
}

/// A loopback address nothing listens on (yet).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs `hookline dlq --data-dir DATA ARGS…`; returns (success, stdout, stderr).
pub fn dlq(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(hookline_bin())
        .arg("dlq")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `hookline dlq list --json`'s letters.
pub fn dlq_letters(data_dir: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = dlq(data_dir, &["list", "--json"]);
    assert!(ok, "dlq list failed: {err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    answer["letters"].as_array().unwrap().clone()
}

/// The delivery-attempt counter of `sink` with `outcome`.
pub fn attempts(sink: &str, outcome: &str) -> String {
    format!(r#"hookline_delivery_attempts_total{{sink="{sink}",outcome="{outcome}"}}"#)
}

/// A temporary apps directory.
pub struct AppsDir {
    pub dir: tempfile::TempDir,
}

impl AppsDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------
// The official Pusher libraries as peers.

fn peers_dir() -> PathBuf {
    std::env::var_os("TEST_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers"))
}

fn node() -> String {
    std::env::var("TEST_PEERS_NODE").unwrap_or_else(|_| "node".to_string())
}

fn python() -> PathBuf {
    std::env::var_os("TEST_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| peers_dir().join(".venv/bin/python"))
}

fn check_peers_installed() {
    assert!(
        peers_dir().join("node_modules/pusher").is_dir(),
        "the npm `pusher` package is not installed; run scripts/setup-tests.sh"
    );
}

fn run_peer(mut command: Command, stdin: &str) -> String {
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

// ---------------------------------------------------------------------------
// Direct requests.

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// POSTs `body` to the relay endpoint signed with `secret`.
pub async fn relay(daemon: &Daemon, key: &str, signature: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/pusher/webhooks", daemon.url()))
        .header("content-type", "application/json")
        .header("x-pusher-key", key)
        .header("x-pusher-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub fn sign(secret: &str, body: &str) -> String {
    hookline_core::signing::hmac_sha256_hex(secret.as_bytes(), body.as_bytes())
}

/// POSTs a native ingest body signed by our own signer (for tests that are
/// not about signing itself).
pub async fn native_response(daemon: &Daemon, app: &str, key: &str, secret: &str, body: &str) -> reqwest::Response {
    post_native(&daemon.url(), app, key, secret, body).await.unwrap()
}

/// [`native_response`] against a base URL, with the transport error
/// instead of a panic (for daemons killed mid-request).
pub async fn post_native(
    base_url: &str,
    app: &str,
    key: &str,
    secret: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let path = format!("/apps/{app}/webhook_events");
    let query = hookline_core::signing::pusher_signed_query(key, secret, &path, body.as_bytes(), unix_ms() / 1000);
    reqwest::Client::new()
        .post(format!("{base_url}{path}?{query}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(PATIENCE)
        .send()
        .await
}

/// [`native_response`]'s status and body text.
pub async fn native(daemon: &Daemon, app: &str, key: &str, secret: &str, body: &str) -> (u16, String) {
    let response = native_response(daemon, app, key, secret, body).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `{"events":[...]}` of simple events `(name, channel)`.
pub fn events_body(events: &[(&str, &str)]) -> String {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|(name, channel)| serde_json::json!({"name": name, "channel": channel}))
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

// ---------------------------------------------------------------------------
// A local server speaking the Lambda Invoke API that verifies SigV4
// (tests/peers/lambda_server.py, on botocore's signer).

/// The Lambda Invoke API server, killed on drop.
pub struct LambdaServer {
    child: Child,
    pub addr: SocketAddr,
}

impl LambdaServer {
    /// Starts the server accepting these `(access key id, secret, token)`.
    pub fn start(credentials: &[(&str, &str, Option<&str>)]) -> Self {
        let mut command = Command::new(python());
        command.arg(peers_dir().join("lambda_server.py")).args(["--port", "0"]);
        for (id, secret, token) in credentials {
            let value = match token {
                Some(token) => format!("{id}:{secret}:{token}"),
                None => format!("{id}:{secret}"),
            };
            command.args(["--credentials", &value]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lambda_server.py; run scripts/setup-tests.sh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("lambda server address")
            .parse()
            .unwrap();
        Self { child, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues scripted answers for a function (`{"kind": "throttle", …}`).
    pub async fn script(&self, function: &str, responses: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_test/script", self.endpoint()))
            .body(serde_json::json!({"function": function, "responses": responses}).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Every request answered so far, refused ones included (a request
    /// still being answered has no status yet and is left out).
    pub async fn invocations(&self) -> Vec<serde_json::Value> {
        let url = format!("{}/_test/invocations", self.endpoint());
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        all.into_iter().filter(|i| i["status"].is_u64()).collect()
    }

    /// Waits until `done` holds for the requests received so far.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let all = self.invocations().await;
            if done(&all) {
                return all;
            }
            assert!(Instant::now() < deadline, "lambda server: {what}; got {all:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LambdaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the example Lambda handler (examples/lambda) with `node` on one raw
/// invocation payload; returns whether it accepted it.
pub fn example_lambda_accepts(secret: &str, payload: &str) -> bool {
    let mut command = Command::new(node());
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lambda/run-local.js"))
        .env("HOOKLINE_SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(payload.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    match output.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "run-local.js crashed ({other:?}): {}",
            String::from_utf8_lossy(&output.stdout)
        ),
    }
}

// ---------------------------------------------------------------------------
// WASM filters, compiled from source for wasm32-wasip2 in the test run.

/// Builds the example and fixture filters once per test process and returns
/// the directory holding the `.wasm` components.
pub fn wasm_filters() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = root.join("target/wasm");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let output = Command::new(cargo)
                .current_dir(root)
                .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
                .arg(&target)
                .args([
                    "-p",
                    "drop-by-channel",
                    "-p",
                    "redact-client-data",
                    "-p",
                    "collapse-client-events",
                ])
                .args(["-p", "hostile-filter", "-p", "uses-sockets"])
                .output()
                .expect("run cargo");
            assert!(
                output.status.success(),
                "building the filters for wasm32-wasip2 failed (scripts/setup-tests.sh installs the target):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            target.join("wasm32-wasip2/release")
        })
        .clone()
}

/// The path of one built filter component (`drop_by_channel.wasm`).
pub fn wasm_filter(file: &str) -> PathBuf {
    let path = wasm_filters().join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// `/readyz` as JSON.
pub async fn readyz(daemon: &Daemon) -> serde_json::Value {
    let text = reqwest::get(format!("{}/readyz", daemon.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until `/readyz` satisfies `done`; returns it.
pub async fn wait_ready(daemon: &Daemon, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = readyz(daemon).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz stayed {status}; logs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// POSTs a signed native request; returns (status, `X-Hookline-Generation`).
pub async fn native_generation(daemon: &Daemon, app: &str, key: &str, secret: &str, body: &str) -> (u16, Option<u64>) {
    let response = native_response(daemon, app, key, secret, body).await;
    let generation = response
        .headers()
        .get("x-hookline-generation")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (response.status().as_u16(), generation)
}
