#!/usr/bin/env bash
# Scan one large file end to end (filesystem connector → dsx-connect worker → built-in scanner,
# auth on, embedded store) and report throughput and dsx-connect's peak RSS growth.
# A thin wrapper around `dsx-bench large-file` (scripts/bench.sh runs it as part of the suite).
# Usage: scripts/measure-large-file.sh [size-in-MiB, default 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p dsx-bench -p dsx-connect-cli -p filesystem-connector
exec target/release/dsx-bench large-file --size-mib "${1:-1024}"
