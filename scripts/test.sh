#!/usr/bin/env bash
# The test command: installs what the tests need (redis-server; moto for the S3 connector, in a
# virtualenv kept in target/test-venv), starts a private Redis and a moto server on free
# loopback ports, runs format/lint checks and the whole test suite against them, and stops
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
# The S3 connector's tests run against moto (an S3 + SQS server) from a virtualenv.
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
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
moto_pid=""
cleanup() {
  kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
  rm -rf "$redis_dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
  sleep 0.1
done
redis-cli -p "$port" ping | grep -q PONG || { echo "redis-server did not start"; cat "$redis_dir/redis.log"; exit 1; }
export DSX_TEST_REDIS_URL="redis://127.0.0.1:$port/"
echo "==> redis-server $(redis-server --version | awk '{print $3}') on port $port"

# moto in a virtualenv under target/ (ignored, reused by later runs; re-created when broken).
venv=target/test-venv
if ! "$venv/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
  echo "==> creating $venv with moto[server]"
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$redis_dir/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 150); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $moto_port), 0.2)" 2>/dev/null; then break; fi
  sleep 0.2
done
python3 -c "import socket; socket.create_connection(('127.0.0.1', $moto_port), 0.2)" 2>/dev/null \
  || { echo "moto_server did not start"; cat "$redis_dir/moto.log"; exit 1; }
export DSX_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"
echo "==> moto_server $("$venv/bin/python" -c 'import moto; print(moto.__version__)') on port $moto_port"

# A one-shot run gains nothing from incremental caches, which cost ~3.6 GB of disk on a cold build.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "==> disk free for target/: $(df -h . | awk 'NR==2 {print $4}')"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
# --all-targets also runs each criterion benchmark once as a smoke test.
log="$redis_dir/test.log"
set +e
# --workspace --all-targets builds every binary before the first test runs, with the features
# the tests resolved: tests use those (dsx_testkit::workspace_bin) instead of building them again.
DSX_TEST_WORKSPACE_BINS_BUILT=1 cargo test --workspace --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
