//! Running sinks natively, as Hookline would, against a local HTTP server:
//! a sink crate's `cargo test` needs no wasm.
//!
//! [`request`] builds a [`Request`] the way the host does (a real signed
//! body and headers); [`deliver`] validates a config and runs the sink's
//! `deliver` once; [`Receiver`] is an HTTP server on `127.0.0.1` that
//! records what it is sent and answers what the test scripts.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Event, Outcome, Request, Sink, event_json, parse_config};

/// Validates `config` (JSON text, as in the app file) as the host does at
/// load, then delivers `request` once.
pub fn deliver<S: Sink>(config: &str, request: &Request) -> Result<Outcome, String> {
    let parsed = parse_config::<S::Config>(config)?;
    S::validate_config(&parsed)?;
    Ok(S::deliver(request, &parsed))
}

/// Validates `config` as the host does when the app file loads.
pub fn validate<S: Sink>(config: &str) -> Result<(), String> {
    S::validate_config(&parse_config::<S::Config>(config)?)
}

/// A request of these events, with the defaults [`RequestBuilder`] lists.
pub fn request(events: Vec<Event>) -> RequestBuilder {
    RequestBuilder {
        app_id: "app".to_string(),
        webhook_id: "webhook".to_string(),
        batch_id: "0190a1b2c3d4-0".to_string(),
        attempt: 1,
        time_ms: now_ms(),
        events,
        key: "test-key".to_string(),
        secret: "test-secret".to_string(),
        headers: Vec::new(),
        timeout_ms: 10_000,
    }
}

/// Builds a [`Request`] as the host does. Defaults: app `app`, webhook
/// `webhook`, batch `0190a1b2c3d4-0`, attempt 1, stamped now, key
/// `test-key`, secret `test-secret`, timeout 10 s, no webhook headers.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    app_id: String,
    webhook_id: String,
    batch_id: String,
    attempt: u32,
    time_ms: u64,
    events: Vec<Event>,
    key: String,
    secret: String,
    headers: Vec<(String, String)>,
    timeout_ms: u64,
}

impl RequestBuilder {
    /// The app id.
    pub fn app_id(mut self, id: impl Into<String>) -> Self {
        self.app_id = id.into();
        self
    }

    /// The webhook id.
    pub fn webhook_id(mut self, id: impl Into<String>) -> Self {
        self.webhook_id = id.into();
        self
    }

    /// The batch id.
    pub fn batch_id(mut self, id: impl Into<String>) -> Self {
        self.batch_id = id.into();
        self
    }

    /// The attempt number (1 is the first).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The attempt's time (ms since the Unix epoch): the body's `time_ms`
    /// and [`Request::time_ms`]; here also `X-Hookline-Batch-Time`, which
    /// in Hookline is when the batch was formed.
    pub fn time_ms(mut self, ms: u64) -> Self {
        self.time_ms = ms;
        self
    }

    /// The app's key and secret, which sign the body.
    pub fn credentials(mut self, key: impl Into<String>, secret: impl Into<String>) -> Self {
        self.key = key.into();
        self.secret = secret.into();
        self
    }

    /// One of the webhook's own `headers`, sent after the signed ones.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The webhook's `timeout_ms`.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// The request: body `{"time_ms":…,"events":[…]}`, signed.
    pub fn build(self) -> Request {
        let body = serde_json::json!({
            "time_ms": self.time_ms,
            "events": self.events.iter().map(event_json).collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&body).expect("a JSON value serializes");
        let mut headers = vec![
            ("X-Pusher-Key".to_string(), self.key),
            ("X-Pusher-Signature".to_string(), sign(&self.secret, &body)),
            ("X-Hookline-Batch-Id".to_string(), self.batch_id.clone()),
            ("X-Hookline-Batch-Time".to_string(), self.time_ms.to_string()),
        ];
        headers.extend(self.headers);
        Request {
            app_id: self.app_id,
            webhook_id: self.webhook_id,
            batch_id: self.batch_id,
            attempt: self.attempt,
            time_ms: self.time_ms,
            events: self.events,
            body,
            headers,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// `X-Pusher-Signature` of `body`: the lowercase hex HMAC-SHA256 with the
/// app secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An answer the [`Receiver`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer with this status, no headers and no body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// A request the [`Receiver`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `POST`, `GET`, …
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics, naming the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.text()))
    }
}

/// A local HTTP/1.1 server on `127.0.0.1:0`, in a thread, that records
/// every request and answers from a script: queued answers first, in
/// order, then the default answer (`200` with no body unless
/// [`Receiver::set_default`] changed it). A request is recorded before it
/// is answered, so once a sink's `deliver` returns, [`Receiver::requests`]
/// holds what it sent. Stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    queued: VecDeque<Answer>,
    default: Option<Answer>,
}

impl Receiver {
    /// Starts a receiver.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        let state = state.clone();
                        // One thread per connection: a client that keeps
                        // one open must not block the next.
                        std::thread::spawn(move || serve(stream, &state));
                    }
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues an answer for the next request not yet answered.
    pub fn respond_with(&self, answer: Answer) {
        self.lock().queued.push_back(answer);
    }

    /// The answer once the queue is empty.
    pub fn set_default(&self, answer: Answer) {
        self.lock().default = Some(answer);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.lock().received.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a connection thread leaves the data intact.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one connection: one request, answered with `Connection: close`.
fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let Some(received) = read_request(&mut reader) else {
        return;
    };
    let answer = {
        let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.received.push(received);
        state
            .queued
            .pop_front()
            .or_else(|| state.default.clone())
            .unwrap_or_else(|| Answer::status(200))
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    ));
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer.body);
    let _ = stream.flush();
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header("content-length") {
        body = vec![0; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
    }
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn builds_requests_as_the_host_does() {
        let mut event = Event::new("member_added", "presence-room");
        event.user_id = Some("u1".into());
        let request = request(vec![event])
            .time_ms(1700000000000)
            .batch_id("b-1")
            .header("X-Tenant", "acme")
            .build();
        assert_eq!(
            String::from_utf8(request.body.clone()).unwrap(),
            r#"{"time_ms":1700000000000,"events":[{"name":"member_added","channel":"presence-room","user_id":"u1"}]}"#
        );
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "X-Pusher-Key",
                "X-Pusher-Signature",
                "X-Hookline-Batch-Id",
                "X-Hookline-Batch-Time",
                "X-Tenant"
            ]
        );
        assert_eq!(request.header("x-pusher-key"), Some("test-key"));
        assert_eq!(request.header("X-Hookline-Batch-Time"), Some("1700000000000"));
        // The RFC 4231 test case 2 vector, to pin the signature scheme.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            request.header("X-Pusher-Signature"),
            Some(sign("test-secret", &request.body).as_str())
        );
    }

    #[test]
    fn the_receiver_records_and_answers_from_its_script() {
        let receiver = Receiver::start();
        receiver.respond_with(Answer::status(429).header("Retry-After", "3").body("slow down"));
        let first = http::Request::post(format!("{}/hook?x=1", receiver.url()))
            .header("X-Test", "1")
            .body(vec![7u8; 10_000])
            .send()
            .unwrap();
        assert_eq!(first.status, 429);
        assert_eq!(first.retry_after_ms(), Some(3000));
        assert_eq!(first.text(), "slow down");
        let second = http::Request::get(receiver.url()).send().unwrap();
        assert_eq!(second.status, 200);
        let received = receiver.requests();
        assert_eq!(received.len(), 2);
        assert_eq!(
            (received[0].method.as_str(), received[0].path.as_str()),
            ("POST", "/hook?x=1")
        );
        assert_eq!(received[0].header("x-test"), Some("1"));
        assert_eq!(received[0].body, vec![7u8; 10_000]);
        assert_eq!((received[1].method.as_str(), received[1].path.as_str()), ("GET", "/"));
    }

    #[test]
    fn forwards_the_signed_body_untouched() {
        let receiver = Receiver::start();
        let request = request(vec![Event::new("channel_vacated", "room-9")]).build();
        let outcome = Outcome::from_http(request.forward(format!("{}/in", receiver.url())).send());
        assert_eq!(outcome, Outcome::Delivered);
        let got = &receiver.requests()[0];
        assert_eq!(got.body, request.body);
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(
            got.header("x-pusher-signature"),
            Some(sign("test-secret", &got.body).as_str())
        );
    }

    #[test]
    fn a_closed_port_is_a_retry_naming_the_origin() {
        let addr = {
            let receiver = Receiver::start();
            receiver.addr()
        };
        let outcome = Outcome::from_http(http::Request::post(format!("http://{addr}/")).send());
        let Outcome::Retry { after_ms: None, reason } = outcome else {
            panic!("a refused connection is transient: {outcome:?}");
        };
        assert!(reason.contains(&addr.to_string()), "{reason}");
    }
}
