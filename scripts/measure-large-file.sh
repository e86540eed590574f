#!/usr/bin/env bash
# Scan one large file end to end (filesystem connector → dsx-connect worker → built-in scanner,
# auth on, embedded store) and report throughput and dsx-connect's peak RSS growth.
# Usage: scripts/measure-large-file.sh [size-in-MiB, default 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
cargo build --release --quiet -p dsx-connect -p filesystem-connector
bin=target/release
work=$(mktemp -d)
# Stop the connector first so its signed unregister still reaches the server.
cleanup() { [ -n "${connector_pid:-}" ] && kill "$connector_pid" 2>/dev/null && sleep 0.5; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sport=$(free_port); cport=$(free_port)
mkdir -p "$work/asset" "$work/server" "$work/connector"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/asset/large.bin"

DSXCONNECT_AUTH__ENABLED=true DSXCONNECT_AUTH__ENROLLMENT_TOKEN=measure DSXCONNECT_AUTH__ADMIN_TOKENS=op \
DSXCONNECT_DATA_DIR="$work/server" DSXCONNECT_LOG_LEVEL=warn \
  "$bin/dsx-connect" serve --listen "127.0.0.1:$sport" &
server_pid=$!
until curl -fs "http://127.0.0.1:$sport/dsx-connect/api/v1/healthz" >/dev/null; do sleep 0.1; done
DSXCONNECTOR_ASSET="$work/asset" DSXCONNECTOR_DATA_DIR="$work/connector" DSXCONNECTOR_AUTH__ENABLED=true \
DSXCONNECT_ENROLLMENT_TOKEN=measure DSXCONNECTOR_CONNECTOR_URL="http://127.0.0.1:$cport" \
DSXCONNECTOR_DSX_CONNECT_URL="http://127.0.0.1:$sport" DSXCONNECTOR_LOG_LEVEL=warn \
  "$bin/filesystem-connector" --listen "127.0.0.1:$cport" &
connector_pid=$!
until curl -fs "http://127.0.0.1:$cport/filesystem-connector/readyz" >/dev/null; do sleep 0.1; done
uuid=$(cat "$work/connector/connector_uuid.txt")
rss_kib() { awk -v f="$1" '$1 == f":" {print $2}' "/proc/$server_pid/status"; }
before=$(rss_kib VmRSS)
start=$(date +%s.%N)
curl -fs -X POST -H "Authorization: Bearer op" \
  "http://127.0.0.1:$sport/dsx-connect/api/v1/connectors/full_scan/$uuid?job_id=large" >/dev/null
until curl -fs -H "Authorization: Bearer op" "http://127.0.0.1:$sport/dsx-connect/api/v1/scan/jobs/large" \
      | grep -q '"status":"completed"'; do sleep 0.2; done
end=$(date +%s.%N)
peak=$(rss_kib VmHWM)
verdict=$(curl -fs -H "Authorization: Bearer op" "http://127.0.0.1:$sport/dsx-connect/api/v1/scan/results/job/large" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print(r["verdict"]["verdict"], r["verdict"]["file_info"]["file_size_in_bytes"])')
python3 - "$size_mib" "$start" "$end" "$before" "$peak" "$verdict" <<'PY'
import sys
size, start, end, before, peak = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
secs = end - start
print(f"file: {size} MiB, verdict/size: {sys.argv[6]}")
print(f"elapsed: {secs:.2f} s, throughput: {size / secs:.0f} MiB/s")
print(f"dsx-connect RSS before: {before / 1024:.1f} MiB, peak: {peak / 1024:.1f} MiB, growth: {(peak - before) / 1024:.1f} MiB")
PY
