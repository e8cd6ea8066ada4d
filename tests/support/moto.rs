//! moto, a local AWS (SQS, SNS, EventBridge, ...), for the AWS sinks' tests,
//! and a local SQS endpoint that checks SigV4 (tests/peers/sqs_server.py).
//!
//! * [`Moto::start`] runs moto's server from the test venv on a free port
//!   (one per test file: keep it in a `OnceLock` and it dies with the
//!   process, or drop it);
//! * [`Moto::create_queue`], [`Moto::delete_queue`] and
//!   [`Moto::receive_all`] / [`Moto::wait_messages`] drive SQS through
//!   boto3 (tests/peers/moto_peer.py);
//! * [`Moto::call`] makes any other boto3 call (`sns`, `create_topic`,
//!   `{"Name": "t"}`) for the SNS and EventBridge tests (subscribing a
//!   queue to a topic, a rule targeting a queue, ...).
//!
//! moto does not check signatures; [`SqsServer`] does, for the tests that
//! need it (and scripts throttling and other errors).

use super::*;

/// moto's server, killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

/// One message received from a queue (and deleted from it).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SqsMessage {
    /// The message body.
    pub body: String,
    /// String message attributes by name.
    pub attributes: BTreeMap<String, String>,
    pub message_id: String,
    /// FIFO queues only.
    pub group_id: Option<String>,
    /// FIFO queues only.
    pub deduplication_id: Option<String>,
    /// SQS's ApproximateReceiveCount.
    pub receive_count: u64,
}

impl SqsMessage {
    /// The message as a delivery for [`verify_with_npm`]: the Pusher
    /// attributes as headers, with the content type a consumer passes to
    /// the library (SQS carries no content type; the body is JSON).
    pub fn to_received(&self) -> Received {
        let mut headers: BTreeMap<String, String> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        headers.insert("content-type".to_string(), "application/json".to_string());
        Received {
            path: String::new(),
            headers,
            body: self.body.clone(),
            at: Instant::now(),
            answered: 200,
        }
    }

    /// An attribute's value ("" when absent).
    pub fn attribute(&self, name: &str) -> &str {
        self.attributes.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Starts a peer script that prints `listening on ADDR` first.
fn start_listening_peer(script: &str, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(python())
        .arg(peers_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}; run scripts/setup-tests.sh"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{script} did not start: {line:?}; run scripts/setup-tests.sh"))
        .parse()
        .unwrap();
    (child, addr)
}

impl Moto {
    /// Starts moto on 127.0.0.1 (a free port) and waits until it answers.
    pub fn start() -> Self {
        let (child, addr) = start_listening_peer("moto_peer.py", &["serve"]);
        Self { child, addr }
    }

    /// `http://127.0.0.1:PORT`, the endpoint for every service.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs a moto_peer.py command; returns its JSON answer.
    pub fn run(&self, args: &[&str]) -> serde_json::Value {
        let mut command = Command::new(python());
        command
            .arg(peers_dir().join("moto_peer.py"))
            .args(["--endpoint", &self.endpoint()])
            .args(args);
        serde_json::from_str(run_peer(command, "").trim()).unwrap()
    }

    /// Any boto3 call (`"sns"`, `"create_topic"`, `{"Name": "t"}`), in us-east-1.
    pub fn call(&self, service: &str, operation: &str, params: serde_json::Value) -> serde_json::Value {
        self.run(&["call", service, operation, &params.to_string()])
    }

    /// Creates a queue (FIFO when `name` ends in `.fifo`); returns its URL
    /// (`http://127.0.0.1:PORT/123456789012/NAME`).
    pub fn create_queue(&self, name: &str) -> String {
        self.run(&["create-queue", name])["url"].as_str().unwrap().to_string()
    }

    /// Deletes a queue.
    pub fn delete_queue(&self, url: &str) {
        self.run(&["delete-queue", url]);
    }

    /// Receives (and deletes) every message available now.
    pub fn receive_all(&self, url: &str) -> Vec<SqsMessage> {
        serde_json::from_value(self.run(&["receive-all", url])).unwrap()
    }

    /// Receives until at least `n` messages came, within [`PATIENCE`];
    /// returns them all (more than `n` if more came).
    pub async fn wait_messages(&self, url: &str, n: usize) -> Vec<SqsMessage> {
        self.wait_messages_by(url, PATIENCE, |all| all.len() >= n).await
    }

    /// Receives until `done` holds for everything received, within `patience`.
    pub async fn wait_messages_by(
        &self,
        url: &str,
        patience: Duration,
        done: impl Fn(&[SqsMessage]) -> bool,
    ) -> Vec<SqsMessage> {
        let deadline = Instant::now() + patience;
        let mut all = Vec::new();
        loop {
            let queue = url.to_string();
            let endpoint = self.endpoint();
            let batch = tokio::task::spawn_blocking(move || {
                let mut command = Command::new(python());
                command
                    .arg(peers_dir().join("moto_peer.py"))
                    .args(["--endpoint", &endpoint, "receive-all", &queue]);
                serde_json::from_str::<Vec<SqsMessage>>(run_peer(command, "").trim()).unwrap()
            })
            .await
            .unwrap();
            all.extend(batch);
            if done(&all) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "moto queue {url}: gave up waiting; got {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local SQS endpoint that verifies SigV4 (tests/peers/sqs_server.py),
/// killed on drop.
pub struct SqsServer {
    child: Child,
    pub addr: SocketAddr,
}

impl SqsServer {
    /// Starts it accepting these `(access key id, secret)`.
    pub fn start(credentials: &[(&str, &str)]) -> Self {
        let mut args = vec!["--port".to_string(), "0".to_string()];
        for (id, secret) in credentials {
            args.push("--credentials".to_string());
            args.push(format!("{id}:{secret}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, addr) = start_listening_peer("sqs_server.py", &args);
        Self { child, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues scripted answers (`[{"kind": "throttle"}, …]`).
    pub async fn script(&self, responses: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_test/script", self.endpoint()))
            .body(serde_json::json!({ "responses": responses }).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Every request answered so far.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        let text = reqwest::get(format!("{}/_test/requests", self.endpoint()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        all.into_iter().filter(|r| r["status"].is_u64()).collect()
    }

    /// Waits until `done` holds for the requests answered so far.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let all = self.requests().await;
            if done(&all) {
                return all;
            }
            assert!(Instant::now() < deadline, "sqs server: {what}; got {all:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SqsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`LossyRelay`] does to the first requests it sees; each counts
/// from the relay's start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayFaults {
    /// The first `throttle` requests are not forwarded at all: they are
    /// answered with SNS's `Throttling` error (query-protocol XML, 400), as
    /// AWS sends it.
    pub throttle: usize,
    /// The first `lose` forwarded requests have their answer replaced by a
    /// 502: the sender sees a failure of a request that did take effect.
    pub lose: usize,
    /// The first `hold` forwarded requests have their answer held back for
    /// a minute: a sender killed meanwhile never learns that its request
    /// took effect.
    pub hold: usize,
}

/// An HTTP relay in front of an AWS endpoint (moto) that forwards every
/// request and passes the answer back, except for the [`RelayFaults`]: a
/// lost answer makes the sender send the request again (as after a network
/// cut or a crash between sending and recording).
pub struct LossyRelay {
    pub addr: SocketAddr,
    /// Requests forwarded upstream and answered there.
    forwarded: Arc<tokio::sync::watch::Sender<usize>>,
    /// Every request, throttled or forwarded.
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

impl LossyRelay {
    /// Starts the relay on 127.0.0.1 (a free port), in the test's runtime,
    /// losing the first `lose` answers.
    pub async fn start(upstream: String, lose: usize) -> Self {
        Self::start_with(
            upstream,
            RelayFaults {
                lose,
                ..RelayFaults::default()
            },
        )
        .await
    }

    /// Starts the relay on 127.0.0.1 (a free port), in the test's runtime,
    /// with these faults.
    pub async fn start_with(upstream: String, faults: RelayFaults) -> Self {
        use std::sync::atomic::Ordering;
        let forwarded = Arc::new(tokio::sync::watch::Sender::new(0usize));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, seen) = (forwarded.clone(), requests.clone());
        let client = reqwest::Client::new();
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (count, seen, client, upstream) = (count.clone(), seen.clone(), client.clone(), upstream.clone());
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) < faults.throttle {
                    let error = "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error>\
                        <Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
                        <RequestId>1</RequestId></ErrorResponse>";
                    return (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], error).into_response();
                }
                let mut request = client.post(format!("{upstream}{uri}")).body(body);
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        request = request.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = request.send().await.unwrap();
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                let mut kept = HeaderMap::new();
                for name in ["content-type", "x-amzn-query-error", "x-amzn-requestid"] {
                    if let Some(value) = answer.headers().get(name) {
                        kept.insert(name, value.to_str().unwrap().parse().unwrap());
                    }
                }
                let body = answer.bytes().await.unwrap();
                let mut n = 0;
                count.send_modify(|count| {
                    n = *count;
                    *count += 1;
                });
                if n < faults.hold {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                if n < faults.lose {
                    return (StatusCode::BAD_GATEWAY, "the relay lost the answer").into_response();
                }
                (status, kept, body).into_response()
            }
        };
        let router = axum::Router::new().fallback(axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            addr,
            forwarded,
            requests,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests were forwarded (and answered upstream) so far.
    pub fn forwarded(&self) -> usize {
        *self.forwarded.borrow()
    }

    /// Waits, within [`PATIENCE`], until at least `n` requests were
    /// forwarded and answered upstream (whatever the relay then does with
    /// the answers).
    pub async fn wait_forwarded(&self, n: usize) {
        let mut count = self.forwarded.subscribe();
        match tokio::time::timeout(PATIENCE, count.wait_for(|&count| count >= n)).await {
            Ok(result) => {
                result.unwrap();
            }
            Err(_) => panic!(
                "relay {}: {} of {n} requests reached the upstream",
                self.addr,
                self.forwarded()
            ),
        }
    }

    /// How many requests came, throttled or forwarded.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}
