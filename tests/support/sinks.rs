//! Sink components in the tests: the fixture sinks built from source, and
//! the odd servers the containment tests point them at (one that counts
//! connections and never answers, one whose body never ends, one that holds
//! its answers until the test lets them go).

use super::*;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Builds the fixture sinks (`raw-sink`, `hostile-sink`) for wasm32-wasip2
/// once per test process; returns the directory holding the components.
pub fn wasm_sinks() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            super::cargo_wasm::build_wasm_packages(Path::new(env!("CARGO_MANIFEST_DIR")), &["raw-sink", "hostile-sink"])
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// The path of one built sink component (`raw_sink.wasm`).
pub fn wasm_sink(file: &str) -> PathBuf {
    let path = wasm_sinks().join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Waits until the daemon's log holds `needle`; returns the log.
pub async fn wait_log(daemon: &Daemon, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let logs = daemon.logs();
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "the log never showed {needle:?}; logs:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until one line of the daemon's log holds every one of `needles`;
/// returns that line.
pub async fn wait_log_line(daemon: &Daemon, needles: &[&str]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let logs = daemon.logs();
        if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line showed all of {needles:?}; logs:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A listener that counts the connections made to it and answers none
/// (each is closed at once): what a request that must never go out aims at.
pub struct CountingListener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl CountingListener {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, SeqCst);
                drop(stream);
            }
        });
        Self { addr, accepted }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }
}

/// Most an [`EndlessBody`] connection sends before giving up on being cut.
const ENDLESS_GIVES_UP_AT: u64 = 512 << 20;

/// A server answering every request `200` with a body that never ends
/// (close-delimited, 16 KiB writes) until the client hangs up.
pub struct EndlessBody {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections the client closed while the body was still flowing.
    cut: Arc<AtomicUsize>,
    /// The most bytes sent on one connection.
    most_sent: Arc<AtomicU64>,
    notify: Arc<Notify>,
}

impl EndlessBody {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            cut: Arc::default(),
            most_sent: Arc::default(),
            notify: Arc::default(),
        };
        let (connections, cut, most_sent, notify) = (
            server.connections.clone(),
            server.cut.clone(),
            server.most_sent.clone(),
            server.notify.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.fetch_add(1, SeqCst);
                let (cut, most_sent, notify) = (cut.clone(), most_sent.clone(), notify.clone());
                tokio::spawn(async move {
                    // The request head, then the answer (the body is never
                    // read: requests here are GETs).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer =
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 16 << 10];
                    let mut sent = 0u64;
                    while sent < ENDLESS_GIVES_UP_AT {
                        if stream.write_all(&chunk).await.is_err() {
                            cut.fetch_add(1, SeqCst);
                            break;
                        }
                        sent += chunk.len() as u64;
                        most_sent.fetch_max(sent, SeqCst);
                    }
                    notify.notify_waiters();
                });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until the client has cut at least one endless body; returns
    /// the most bytes any connection sent.
    pub async fn wait_cut(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.notify.notified();
            if self.cut.load(SeqCst) > 0 {
                return self.most_sent.load(SeqCst);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no endless body was cut: {} connections, the longest sent {} bytes",
                    self.connections.load(SeqCst),
                    self.most_sent.load(SeqCst)
                );
            }
        }
    }
}

/// A receiver that records each request at once and holds every answer
/// (200) until [`HeldReceiver::release`]: a delivery the test can keep in
/// flight as long as it needs.
#[derive(Clone)]
pub struct HeldReceiver {
    pub addr: SocketAddr,
    state: Arc<HeldState>,
}

struct HeldState {
    received: Mutex<Vec<Received>>,
    notify: Notify,
    open: tokio::sync::watch::Sender<bool>,
}

impl HeldReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(HeldState {
            received: Mutex::default(),
            notify: Notify::new(),
            open: tokio::sync::watch::Sender::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(held).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Lets every held answer (and every later one) go.
    pub fn release(&self) {
        self.state.open.send_replace(true);
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until a request holding `needle` in its body arrived.
    pub async fn wait_for_body(&self, needle: &str) -> Received {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.state.notify.notified();
            if let Some(found) = self.all().into_iter().find(|r| r.body.contains(needle)) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no request held {needle:?}; got {:#?}", self.all());
            }
        }
    }
}

async fn held(State(state): State<Arc<HeldState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        answered: 200,
    });
    state.notify.notify_waiters();
    let mut open = state.open.subscribe();
    let _ = open.wait_for(|open| *open).await;
    StatusCode::OK
}
