//! A real Redis per test: `redis-server` on a unix socket in a temporary
//! directory, with AOF and `appendfsync always`, killed on drop.

use super::*;

/// The settings of a daemon on the Redis store at `url`: a 2 s lease and 8
/// partitions, so takeovers are quick and apps spread.
fn store_env(url: &str, node: &str) -> Vec<(String, String)> {
    [
        ("HOOKLINE_STORE_BACKEND", "redis"),
        ("HOOKLINE_STORE_REDIS_URL", url),
        ("HOOKLINE_STORE_NODE_ID", node),
        ("HOOKLINE_STORE_LEASE_MS", "2000"),
        ("HOOKLINE_STORE_PARTITIONS", "8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh server (AOF on, fsync on every write, no eviction).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self { child: None, dir };
        server.spawn(&[]);
        server
    }

    /// Starts a server with extra `--name value` settings (to be refused).
    pub fn start_with(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self { child: None, dir };
        server.spawn(settings);
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self, extra: &[&str]) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server runs (scripts/setup-tests.sh installs it)");
        self.child = Some(child);
        // Ready once it answers PING on its socket.
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.socket()) {
                let _ = stream.write_all(b"PING\r\n");
                let mut answer = [0u8; 7];
                if std::io::Read::read(&mut stream, &mut answer).is_ok_and(|n| n > 0) && answer.starts_with(b"+PONG") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start: {}", self.logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `store.redis_url` for this server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon settings that put its store here.
    pub fn daemon_env(&self, node: &str) -> Vec<(String, String)> {
        store_env(&self.url(), node)
    }

    /// kill -9, keeping the data directory (its AOF).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same directory: what the AOF holds comes back.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(&[]);
    }

    /// Runs a command with `redis-cli`; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-node Redis Cluster (no replicas) on free TCP ports, AOF with
/// `appendfsync always`, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    pub dir: tempfile::TempDir,
}

/// A port free for a node and for its cluster bus (port + 10000).
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let port = free_addr().port();
        if port > 55000 || taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_cluster_port(&ports);
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let log = std::fs::File::create(node_dir.join("redis.log")).unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                ])
                .args(["--cluster-config-file", "nodes.conf", "--dir"])
                .arg(&node_dir)
                .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("redis-server runs (scripts/setup-tests.sh installs it)");
            nodes.push(child);
            ports.push(port);
        }
        let cluster = Self { nodes, ports, dir };
        for &port in &cluster.ports {
            cluster.wait_for(port, &["ping"], "PONG");
        }
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stdout));
        for &port in &cluster.ports {
            cluster.wait_for(port, &["cluster", "info"], "cluster_state:ok");
        }
        cluster
    }

    fn wait_for(&self, port: u16, args: &[&str], expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(args)
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&output.stdout).contains(expected) {
                return;
            }
            assert!(Instant::now() < deadline, "redis node {port} never answered {expected}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cli` against the cluster's `node`-th node; its output.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.ports[node].to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The `node`-th node's port.
    pub fn port(&self, node: usize) -> u16 {
        self.ports[node]
    }

    /// The daemon settings that put its store on this cluster.
    pub fn daemon_env(&self, node: &str) -> Vec<(String, String)> {
        store_env(&format!("redis://127.0.0.1:{}", self.ports[0]), node)
    }

    /// How many of the cluster's nodes hold keys.
    pub fn nodes_with_keys(&self) -> usize {
        self.ports
            .iter()
            .filter(|port| {
                let output = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "dbsize"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
                    > 0
            })
            .count()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
