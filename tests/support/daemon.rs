//! The daemon under test: starting it, its logs, metrics, signals, `/readyz` and `hookline dlq`.

use super::*;

/// The `hookline` binary under test.
pub fn hookline_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookline")
}

/// A running daemon, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The admin listener's address, when `admin.listen` is set.
    pub admin: Option<SocketAddr>,
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
    /// Returns once the daemon listens, while its filters may still be
    /// loading in the background; by default the start also waits for
    /// them (patiently while a compile is under way), as tests of what
    /// filters do expect.
    pub filters_in_background: bool,
}

impl DaemonOptions {
    /// Options with these environment variables (`HOOKLINE_*` settings).
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        Self {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Self::default()
        }
    }
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
                if let Some(addr) = line.strip_prefix("admin api on ") {
                    let _ = tx.send((true, addr.parse().expect("an address")));
                } else if let Some(addr) = listening_address(&line) {
                    let _ = tx.send((false, addr));
                }
            }
        });
        // The admin line, if any, comes before the ingest one. A start
        // that compiles filters (a language runtime: seconds, more on a busy
        // machine) is waited for while a compile is under way; otherwise
        // the daemon must make progress (its log grows) within PATIENCE.
        let mut admin = None;
        let begun = Instant::now();
        let mut progress = (begun, 0u64);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((true, addr)) => admin = Some(addr),
                Ok((false, addr)) => break addr,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let logged = std::fs::metadata(&stderr_path).map(|m| m.len()).unwrap_or(0);
                    // A log that grows is progress for a while (a start that
                    // only logs retries is stuck); a compile, until it ends.
                    let grew = logged != progress.1 && begun.elapsed() < PATIENCE * 3;
                    if grew
                        || (logged > 0
                            && compiles_under_way(&std::fs::read_to_string(&stderr_path).unwrap_or_default()) > 0)
                    {
                        progress = (Instant::now(), logged);
                    }
                    if progress.0.elapsed() < PATIENCE && begun.elapsed() < START_AT_MOST {
                        continue;
                    }
                    let _ = child.kill();
                    panic!(
                        "hookline did not start: no progress for {PATIENCE:?} (or not ready after {START_AT_MOST:?}); stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "hookline did not start: it exited ({status:?}); stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        };
        let daemon = Self {
            child: Some(child),
            addr,
            admin,
            dir,
            stderr_path,
        };
        if !options.filters_in_background {
            daemon.wait_filters_loaded_blocking();
        }
        daemon
    }

    /// Waits until `/readyz` lists no filter loading in the background:
    /// up to START_AT_MOST, while the log shows a compile under way at
    /// least every PATIENCE.
    fn wait_filters_loaded_blocking(&self) {
        let (begun, mut progress) = (Instant::now(), Instant::now());
        loop {
            let compiling = readyz_blocking(self.addr).map(|s| s["compiling"].as_array().map_or(0, Vec::len));
            if compiling == Some(0) {
                return;
            }
            if compiles_under_way(&self.logs()) > 0 {
                progress = Instant::now();
            }
            assert!(
                progress.elapsed() < PATIENCE && begun.elapsed() < START_AT_MOST,
                "the daemon's filters did not load (compiling: {compiling:?}); stderr:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
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
        self.metrics_text()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(selector).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// `/metrics` as text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of every series of a metric (`hookline_queue_depth`, all
    /// labels); 0 when absent.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        metric_sum_in(&self.metrics_text().await, name)
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

/// The longest a daemon's start may take, compiles and all.
const START_AT_MOST: Duration = Duration::from_secs(600);

/// Waits until no filter loads in the background any more (`/readyz`'s
/// `compiling` is empty): up to START_AT_MOST, while the log shows a
/// compile under way at least every PATIENCE. Returns that status.
pub async fn wait_filters_loaded(daemon: &Daemon) -> serde_json::Value {
    let (begun, mut progress) = (Instant::now(), Instant::now());
    loop {
        let status = readyz(daemon).await;
        if status["compiling"].as_array().is_some_and(Vec::is_empty) {
            return status;
        }
        if compiles_under_way(&daemon.logs()) > 0 {
            progress = Instant::now();
        }
        assert!(
            progress.elapsed() < PATIENCE && begun.elapsed() < START_AT_MOST,
            "the daemon's filters did not load: {status}; logs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many component compilations (filters and sink components) a
/// daemon's log shows started and not yet finished (its "compiling filter"
/// and "compiling sink component" lines less their "… compiled" and "… did
/// not compile" lines).
pub fn compiles_under_way(log: &str) -> usize {
    ["filter", "sink component"]
        .iter()
        .map(|noun| {
            let started = log.matches(&format!("compiling {noun}")).count();
            let finished = log.matches(&format!("{noun} compiled")).count()
                + log.matches(&format!("{noun} did not compile")).count();
            started.saturating_sub(finished)
        })
        .sum()
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

/// The sum of every series of metric `name` in a `/metrics` text.
pub fn metric_sum_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `hookline check --apps APPS`; returns (success, stderr).
pub fn check(apps: &AppsDir) -> (bool, String) {
    let output = Command::new(hookline_bin())
        .args(["check", "--apps"])
        .arg(apps.path())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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

/// `/readyz` as JSON, from a plain HTTP/1.0 exchange (for code that does
/// not run on the test's runtime); `None` if the daemon did not answer.
fn readyz_blocking(addr: SocketAddr) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: hookline\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
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
