//! Helpers for tests that talk to real things: a private `redis-server` process per test
//! (or the one CI shares through `DSX_TEST_REDIS_URL`), free loopback ports, unique namespaces.

mod process;
mod redis;

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
