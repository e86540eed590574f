#!/usr/bin/env bash
# The benchmark suite in one command: builds release, starts a private redis-server on a free
# loopback port, runs the criterion micro-benchmarks, the HTTP load scenarios (auth on and off),
# the end-to-end pipeline (embedded store and Redis) and the large-file run, then writes
# docs/performance.md with every target marked PASS or MISS.
#
# Without --quick, the pipelines and `scan/request` run three times each and the report judges
# their medians (the host is noisy; the current and baseline builds take turns).
#
# Usage: bash scripts/bench.sh [--quick] [--out FILE] [--baseline REV]
#   --quick     small sizes and short runs (a fast look; the document says so)
#   --out       where to write the document (default docs/performance.md)
#   --baseline  also build REV (a commit) in a temporary worktree and run the pipelines with
#               its binaries in the same run, for a before/after on one machine
#   --baseline-bin DIR  the same with binaries already built from REV (with --baseline REV)
# Everything runs on loopback; every run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
out=docs/performance.md
baseline=""
baseline_bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --baseline) baseline=$2; shift ;;
    --baseline-bin) baseline_bin=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  http_duration=3s; http_warmup=1s; files=1000; large_mib=128; repeat=1
  criterion_args=(--warm-up-time 0.5 --measurement-time 1)
else
  # The machine is noisy: the CPU-per-file, `scan/request` and `auth_check` figures are medians of `repeat` runs.
  http_duration=10s; http_warmup=2s; files=10000; large_mib=1024; repeat=3
  criterion_args=(--warm-up-time 1 --measurement-time 3)
fi
concurrency=32

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
if [ -n "$missing" ]; then
  echo "==> installing$missing"
  need_root apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

echo "==> cargo build --release"
cargo build --release --quiet -p dsx-bench -p dsx-connect-cli -p filesystem-connector
bin=target/release

work=$(mktemp -d)
results="$work/results"
mkdir -p "$results"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --maxmemory-policy noeviction --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping | grep -q PONG || { echo "redis-server did not start"; cat "$work/redis.log"; exit 1; }
redis_url="redis://127.0.0.1:$redis_port/"
redis_version=$(redis-server --version | awk '{print $3}' | sed 's/v=//')
echo "==> redis-server $redis_version on port $redis_port"

failed=()
# step NAME CMD...: run one benchmark; a failure is recorded and the suite goes on.
step() {
  local name=$1; shift
  echo "==> $name"
  if ! "$@"; then
    echo "!! $name failed" >&2
    failed+=("$name")
  fi
}

# ---- criterion ----
criterion() {
  local pkg=$1 bench=$2 file=$3
  cargo bench --quiet -p "$pkg" --bench "$bench" -- "${criterion_args[@]}" >"$results/$file" 2>"$work/$file.err" \
    || { cat "$work/$file.err" >&2; return 1; }
  grep -E 'time:|thrpt:' "$results/$file" | head -20
}
step "criterion dsx-hmac verify" criterion dsx-hmac verify criterion-verify.txt
step "criterion dsx-filter matcher" criterion dsx-filter matcher criterion-matcher.txt
step "criterion dsx-store cycle" criterion dsx-store cycle criterion-store.txt

# ---- the baseline build ----
# The baseline build's binaries, when asked for: built in a temporary worktree unless given.
base_bin=""
if [ -n "$baseline" ] && [ -n "$baseline_bin" ]; then
  base_bin=$baseline_bin
elif [ -n "$baseline" ]; then
  base_tree="$work/baseline"
  if git worktree add -q --detach "$base_tree" "$baseline" \
     && (cd "$base_tree" && CARGO_TARGET_DIR="$work/baseline-target" cargo build --release --quiet -p dsx-connect -p filesystem-connector); then
    base_bin="$work/baseline-target/release"
  else failed+=("baseline build of $baseline"); fi
  git worktree remove --force "$base_tree" 2>/dev/null || true
fi

# ---- HTTP load on Redis ----
enroll=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
operator=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

# start_server NAME AUTH(true|false) [BIN_DIR]: dsx-connect --role api on Redis; sets
# server_url/server_pid.
start_server() {
  local name=$1 auth=$2 dir=${3:-$bin} port
  port=$(free_port)
  env -u DSXCONNECT_ENROLLMENT_TOKEN \
    DSXCONNECT_AUTH__ENABLED="$auth" DSXCONNECT_AUTH__ENROLLMENT_TOKEN="$enroll" \
    DSXCONNECT_AUTH__ADMIN_TOKENS="$operator" DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE=0 \
    DSXCONNECT_REDIS_URL="$redis_url" DSXCONNECT_APP_ENV="bench-$name-$$" \
    DSXCONNECT_DATA_DIR="$work/$name" DSXCONNECT_LOG_LEVEL=warn \
    "$dir/dsx-connect" serve --listen "127.0.0.1:$port" --role api >"$work/$name.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  server_url="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    curl -fs "$server_url/dsx-connect/api/v1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "dsx-connect ($name) did not start:"; cat "$work/$name.log"; return 1
}
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }

http() {
  local url=$1 scenario=$2 file=$3; shift 3
  DSXCONNECT_ENROLLMENT_TOKEN="$enroll" "$bin/dsx-bench" http --url "$url" --scenario "$scenario" \
    --concurrency "$concurrency" --duration "$http_duration" --warmup "$http_warmup" --json "$results/$file" \
    --watch-pid "dsx-connect=$server_pid" --watch-pid "redis=$redis_pid" "$@"
}

# `auth_check` with auth off and on, taking turns, each on a fresh server: p99 on a shared
# 2-CPU host moves with the minute, so the report judges the medians.
for r in $(seq 1 "$repeat"); do
  if start_server "auth-off-$r" false; then
    step "http auth-check, auth off ($r/$repeat)" http "$server_url" auth-check "http-auth-off.$r.json" --no-auth
    stop_server
  else failed+=("auth-off server"); fi
  if start_server "auth-on-$r" true; then
    step "http auth-check, auth on ($r/$repeat)" http "$server_url" auth-check "http-auth-on.$r.json"
    if [ "$r" = 1 ]; then step "http register burst" http "$server_url" register http-register.json; fi
    stop_server
  else failed+=("auth-on server"); fi
done
# `scan/request` on a fresh server each time (an empty queue), taking turns with the baseline build.
for r in $(seq 1 "$repeat"); do
  if start_server "scan-request-$r" true; then
    step "http scan-request, auth on ($r/$repeat)" http "$server_url" scan-request "http-scan-request.$r.json"
    stop_server
  else failed+=("scan-request server"); fi
  if [ -n "$base_bin" ]; then
    if start_server "baseline-scan-request-$r" true "$base_bin"; then
      step "baseline $baseline http scan-request ($r/$repeat)" http "$server_url" scan-request \
        "baseline-http-scan-request.$r.json"
      stop_server
    else failed+=("baseline scan-request server"); fi
  fi
done

# ---- pipeline and large file ----
pipeline() {
  local label=$1 file=$2; shift 2
  step "$label" "$bin/dsx-bench" pipeline --files "$files" --size 4096 --json "$results/$file" "$@"
}
# Current and baseline builds take turns, so a slow minute of the host hits both alike.
for r in $(seq 1 "$repeat"); do
  pipeline "pipeline $files files, embedded ($r/$repeat)" "pipeline-embedded.$r.json" --store embedded
  pipeline "pipeline $files files, embedded, HTTPS ($r/$repeat)" "pipeline-embedded-tls.$r.json" \
    --store embedded --tls
  if [ -n "$base_bin" ]; then
    pipeline "baseline $baseline pipeline, embedded ($r/$repeat)" "baseline-pipeline-embedded.$r.json" \
      --store embedded --bin-dir "$base_bin"
  fi
  pipeline "pipeline $files files, Redis ($r/$repeat)" "pipeline-redis.$r.json" --store redis \
    --redis-url "$redis_url" --watch-pid "redis=$redis_pid"
  if [ -n "$base_bin" ]; then
    pipeline "baseline $baseline pipeline, Redis ($r/$repeat)" "baseline-pipeline-redis.$r.json" \
      --store redis --redis-url "$redis_url" --watch-pid "redis=$redis_pid" --bin-dir "$base_bin"
  fi
done
step "large file $large_mib MiB" "$bin/dsx-bench" large-file --size-mib "$large_mib" --json "$results/large-file.json"

# ---- the document ----
notes=(
  "HTTP runs: concurrency $concurrency, $http_warmup warm-up + $http_duration measured each, Redis $redis_version (private, no persistence), one dsx-bench process as the load generator."
  "Criterion: \`${criterion_args[*]}\`."
  "Pipeline: $files files × 4 KiB, each store (and HTTPS) run $repeat times, as are \`scan/request\` and \`auth_check\` (auth off and on taking turns); large file: $large_mib MiB; files are written to a temp dir first, so they are read from the page cache."
  ${baseline:+"Baseline: the pipelines and \`scan/request\` were also run with binaries built from \`$baseline\` (same machine, same run), for the before/after rows."}
)
[ "$quick" = 1 ] && quick_flag=(--quick) || quick_flag=()
for f in "${failed[@]}"; do notes+=("**Failed in this run:** $f (see the script's output)."); done
"$bin/dsx-bench" report --dir "$results" --out "$out" "${quick_flag[@]}" "${notes[@]/#/--note=}"
echo "==> wrote $out"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed steps: ${failed[*]}" >&2
  exit 1
fi
