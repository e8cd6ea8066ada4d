//! A real HTTP proxy: Debian's tinyproxy on a free port, logging every
//! request it forwards (scripts/setup-tests.sh installs it).

use super::*;

pub struct Tinyproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().port();
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 50\nLogLevel Info\nLogFile \"{}\"\n",
                dir.path().join("tinyproxy.log").display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy runs (scripts/setup-tests.sh installs it)");
        wait_listening(port, "tinyproxy");
        Self { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }

    /// Requests it forwarded.
    pub fn requests(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Request (file descriptor"))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
