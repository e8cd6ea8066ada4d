//! A real HTTP receiver that records every delivery and answers as scripted, and temporary apps directories.

use super::*;

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
    /// The answer's body (empty by default).
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            delay: Duration::ZERO,
            body: String::new(),
        }
    }
    pub fn with_body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
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
    /// Turns true to stop listening.
    stop: Arc<tokio::sync::watch::Sender<bool>>,
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
        let stop = Arc::new(tokio::sync::watch::Sender::new(false));
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .unwrap()
        });
        Self { addr, state, stop }
    }

    /// Goes down: the listener closes (connections are refused) and idle
    /// connections are closed.
    pub fn stop(&self) {
        self.stop.send_replace(true);
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
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
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

/// How many of `received` arrived in each of the `seconds` whole seconds
/// after `from`.
pub fn arrivals_per_second(received: &[Received], from: Instant, seconds: usize) -> Vec<usize> {
    let mut counts = vec![0; seconds];
    for r in received {
        if let Some(since) = r.at.checked_duration_since(from) {
            let second = since.as_secs() as usize;
            if second < seconds {
                counts[second] += 1;
            }
        }
    }
    counts
}

/// Asserts that, after a burst, `received` arrived at `per_second` ±
/// `within` in each of the ten seconds from 200 ms past the first arrival.
pub fn assert_ten_seconds_at(received: &[Received], per_second: usize, within: usize) {
    let first = received.iter().map(|r| r.at).min().expect("something arrived");
    let seconds = arrivals_per_second(received, first + Duration::from_millis(200), 10);
    for (second, count) in seconds.iter().enumerate() {
        assert!(
            count.abs_diff(per_second) <= within,
            "second {second} of the flood brought {count} deliveries, not {per_second} ± {within}: {seconds:?}"
        );
    }
}

/// Sends `events` `channel_occupied` events (channels `c-0`, `c-1`, …) to
/// an app in requests of ten, as fast as the daemon answers.
pub async fn flood(daemon_url: &str, app: (&str, &str, &str), events: usize) {
    let (id, key, secret) = app;
    for start in (0..events).step_by(10) {
        let channels: Vec<String> = (start..(start + 10).min(events)).map(|i| format!("c-{i}")).collect();
        let body = events_body(
            &channels
                .iter()
                .map(|c| ("channel_occupied", c.as_str()))
                .collect::<Vec<_>>(),
        );
        let response = post_native(daemon_url, id, key, secret, &body).await.unwrap();
        assert_eq!(response.status(), 200, "the flood was refused");
    }
}
