//! Helpers for tests that talk to real things: a private `redis-server` process per test
//! (or the one CI shares through `DSX_TEST_REDIS_URL`), free loopback ports, unique namespaces.

#![forbid(unsafe_code)]

mod moto;
mod process;
pub mod python_fixtures;
mod redis;

pub use moto::{Moto, MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY};
pub use process::Service;
pub use redis::{RedisServer, TestRedis};

use std::net::TcpListener;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// A short random name, so tests sharing one Redis never see each other's keys.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// Set by `scripts/test.sh`: the running `cargo test --workspace --all-targets` built the
/// binaries before the first test started, with the features the tests resolved (cargo
/// builds a package's binaries for its integration tests, and every package whose binary
/// tests start has some). A `cargo build --bin` here would resolve features without
/// dev-dependencies and build half the dependency tree (aws-sdk-s3 included) a second time.
pub const BINS_BUILT_ENV: &str = "DSX_TEST_WORKSPACE_BINS_BUILT";

/// Path of a binary of this workspace, built once per test process so it is never stale.
/// Tests of one package use it to start another package's binary (cargo only provides
/// `CARGO_BIN_EXE_*` for their own); the server's own tests start `dsx-connect` this way
/// since that binary lives in the `dsx-connect-cli` package.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile dir");
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let prebuilt = std::env::var_os(BINS_BUILT_ENV).is_some_and(|v| v == "1") && path.exists();
    if !prebuilt && !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "--quiet", "--workspace", "--bin", name];
        if dir.file_name().is_some_and(|p| p == "release") {
            args.push("--release");
        }
        // `--workspace`: the binary may belong to another package than the test's. Without
        // cargo (a copied test executable), an existing binary is used as it is.
        match std::process::Command::new(cargo).args(&args).status() {
            Ok(status) => assert!(status.success(), "cargo build --bin {name} failed"),
            Err(err) => assert!(path.exists(), "cannot run cargo to build {name}: {err}"),
        }
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}
