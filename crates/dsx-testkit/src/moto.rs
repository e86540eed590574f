use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An S3 + SQS compatible server for tests: the shared one named by `DSX_TEST_S3_ENDPOINT`
/// (scripts/test.sh starts it), otherwise a private `moto_server` owned by this value and
/// killed on drop. Credentials are throwaway (`testing`).
pub struct Moto {
    pub endpoint: String,
    child: Option<Child>,
}

/// The throwaway credentials moto accepts; never real ones.
pub const MOTO_ACCESS_KEY: &str = "testing";
pub const MOTO_SECRET_KEY: &str = "testing";
pub const MOTO_REGION: &str = "us-east-1";

impl Moto {
    pub fn get() -> Self {
        if let Ok(url) = std::env::var("DSX_TEST_S3_ENDPOINT") {
            if !url.is_empty() {
                return Self { endpoint: url.trim_end_matches('/').to_owned(), child: None };
            }
        }
        let bin = moto_bin().unwrap_or_else(|| {
            panic!(
                "no moto_server for the S3 tests: run `bash scripts/test.sh` (it installs moto into target/test-venv and \
                 starts it), or set DSX_TEST_S3_ENDPOINT to a running one, or DSX_TEST_MOTO to a moto_server binary"
            )
        });
        let port = crate::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); run `bash scripts/test.sh`", bin.display()));
        let moto = Self { endpoint: format!("http://127.0.0.1:{port}"), child: Some(child) };
        wait_for_port(port, Duration::from_secs(30));
        moto
    }

    /// The environment a connector (or SDK) needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DSXCONNECTOR_S3_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", MOTO_SECRET_KEY.into()),
            ("AWS_REGION", MOTO_REGION.into()),
            // Never a real profile or instance role from the machine running the tests.
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `DSX_TEST_MOTO`, then the venv scripts/test.sh keeps in `target/test-venv`, then `PATH`.
fn moto_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("DSX_TEST_MOTO") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("moto_server")).find(|p| p.is_file())
}

fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server on port {port} did not start within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
