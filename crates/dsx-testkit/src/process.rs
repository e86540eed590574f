use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real binary started for a test, with its stdout and stderr captured to a file.
/// Killed on drop. `DSXCONNECT*` variables of the test's own environment are not inherited,
/// so only what the test passes configures it.
pub struct Service {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Spawn `bin args…` with `env`. The caller chooses the port (see `free_port`).
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, String)], port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("service.log");
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone().expect("dup log")).stderr(out);
        for (key, _) in std::env::vars() {
            if key.starts_with("DSXCONNECT") {
                cmd.env_remove(key);
            }
        }
        cmd.env("DSXCONNECT_LOG_FORMAT", "text").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        Self { child: Some(child), port, log, _dir: dir }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Wait until `GET path` answers with `expect_status`, or panic with the log.
    pub fn wait_http(&mut self, path: &str, expect_status: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = http_status(self.port, path) {
                if status == expect_status {
                    return;
                }
            }
            if let Some(code) = self.exit_code() {
                panic!("service exited ({code:?}) before it was ready; log:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "service not ready on {path} within {limit:?}; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `Some(exit code)` once the process has ended.
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).map(|s| s.code())
    }

    /// Wait for the process to end by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.exit_code() {
                return code;
            }
            assert!(Instant::now() < deadline, "process still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send a signal by name (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Minimal blocking `GET` returning the status code (readiness polling only).
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}
