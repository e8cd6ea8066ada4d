//! Throwaway certificates (a CA made here by the openssl command) and a
//! TLS front (socat) before a plaintext server, optionally requiring a
//! client certificate from that CA.

use super::*;

/// A CA, a server certificate for `localhost` (DNS name only, no IP), and
/// a client certificate, all PEM files in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=hookline-test-ca
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key -out client.csr -subj /CN=hookline-client
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client-ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client-ext
"#;
        let made = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir.path())
            .output()
            .expect("openssl runs");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        Self { dir }
    }

    /// A file of the CA's directory (`ca.pem`, `client.pem`, `client.key`…).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// socat serving TLS with the CA's server certificate on `port`,
/// forwarding to a plaintext `backend` port.
pub struct TlsFront {
    child: Child,
    pub ca: TestCa,
}

impl TlsFront {
    /// A front that asks for no client certificate.
    pub fn start(port: u16, backend: u16) -> Self {
        Self::start_with(port, backend, false)
    }

    /// A front that refuses clients without a certificate from the CA.
    pub fn requiring_client_certificates(port: u16, backend: u16) -> Self {
        Self::start_with(port, backend, true)
    }

    fn start_with(port: u16, backend: u16, verify_clients: bool) -> Self {
        let ca = TestCa::new();
        let verify = if verify_clients {
            format!("verify=1,cafile={}", ca.file("ca.pem").display())
        } else {
            "verify=0".to_string()
        };
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
                ca.file("server.pem").display(),
                ca.file("server.key").display()
            ))
            .arg(format!("TCP:127.0.0.1:{backend}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs (scripts/setup-tests.sh installs it)");
        wait_listening(port, "socat");
        Self { child, ca }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.ca.file("ca.pem")
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
