#!/usr/bin/env bash
# The test command: installs what the tests need (redis-server), starts a private Redis on a
# free loopback port, runs format/lint checks and the whole test suite against it, and stops
# what it started. Works on a fresh Debian machine with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v curl >/dev/null 2>&1 || missing="$missing curl"   # the CLI test runs a signed curl command
# The web UI test drives Debian's Chromium through chromedriver (no browser downloads).
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
# The chart test renders the Helm templates with Go's text/template and sprig, as helm does
# (no helm package is reachable from these machines).
command -v go >/dev/null 2>&1 || missing="$missing golang-go"
[ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || missing="$missing golang-github-masterminds-sprig-dev"
[ -d /usr/share/gocode/src/gopkg.in/yaml.v3 ] || missing="$missing golang-gopkg-yaml.v3-dev"
if [ -n "$missing" ]; then
  echo "==> installing$missing"
  need_root apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 16379)
redis_dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --maxmemory-policy noeviction --daemonize no >"$redis_dir/redis.log" 2>&1 &
redis_pid=$!
cleanup() { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$redis_dir"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
  sleep 0.1
done
redis-cli -p "$port" ping | grep -q PONG || { echo "redis-server did not start"; cat "$redis_dir/redis.log"; exit 1; }
export DSX_TEST_REDIS_URL="redis://127.0.0.1:$port/"
echo "==> redis-server $(redis-server --version | awk '{print $3}') on port $port"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
# --all-targets also runs each criterion benchmark once as a smoke test.
log="$redis_dir/test.log"
set +e
cargo test --workspace --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
