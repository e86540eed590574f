use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server` on a loopback port, killed on drop. Tests that take the store
/// away (`stop`) and bring it back (`start_again`) use this directly.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Append-only file with an fsync per write: what is acknowledged survives `stop`.
    durable: bool,
}

impl RedisServer {
    /// Start a fresh server. Panics with install instructions when `redis-server` is missing:
    /// a test that needs Redis must never pass silently without one.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = Self { child: None, port: crate::free_port(), dir, durable: false };
        server.start_again();
        server
    }

    /// A server configured as production should be (AOF, `appendfsync always`): a `stop` and
    /// `start_again` is a restart that keeps every acknowledged write.
    pub fn start_durable() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = Self { child: None, port: crate::free_port(), dir, durable: true };
        server.start_again();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill the server (the store "goes away").
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (after `stop`).
    pub fn start_again(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it (apt-get install redis-server) or run scripts/test.sh"
                )
            });
        self.child = Some(child);
        wait_for_pong(self.port, Duration::from_secs(10));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_pong(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if ping(port) {
            return;
        }
        assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The Redis a test should use: the shared one named by `DSX_TEST_REDIS_URL` (CI starts it),
/// otherwise a private server owned by this value.
pub struct TestRedis {
    pub url: String,
    _private: Option<RedisServer>,
}

impl TestRedis {
    pub fn get() -> Self {
        match std::env::var("DSX_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Self { url, _private: None },
            _ => {
                let server = RedisServer::start();
                Self { url: server.url(), _private: Some(server) }
            }
        }
    }
}
