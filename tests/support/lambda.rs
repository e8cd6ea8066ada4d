//! A local server speaking the Lambda Invoke API (checking SigV4), and the example handler.

use super::*;

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
