#!/usr/bin/env bash
# Steering benchmark (docs/BENCHMARKS.md, "Connection steering with one slow worker").
# One run: the same load against edgegw with kernel SO_REUSEPORT hashing, eBPF `hash` and
# eBPF `least-loaded`, with worker 1 made slow by CPU hogs pinned to its CPU. Prints the
# load generator's report and each worker's share of the accepted connections.
# Needs root (BPF), 2+ CPUs, openssl, curl, and `cargo build --release --bins` done.
# Usage: ebpf/bench_steering.sh [DURATION=15s] [RATE=300] [HOGS=1] [NICE=-15] [SCENARIO=newconn]
# (a hog at nice -15 leaves worker 1 about 3 % of its CPU: slow, yet never silent long
# enough to count as stalled, so it stays in the socket map under every policy)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
RATE=${2:-300}
HOGS=${3:-1}
NICE=${4:--15}
SCENARIO=${5:-newconn}
BIN=target/release
work=$(mktemp -d /tmp/edgegw-steer-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -out s.pem \
  -subj /CN=localhost -days 30 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c.key -out c.pem \
  -subj /CN=bench-client -days 30 2>/dev/null
openssl pkcs12 -export -in c.pem -inkey c.key -out c.pfx -passout pass:pw
be_port=$(port)
"$OLDPWD/$BIN/loadtest" backend --listen 127.0.0.1:$be_port --cert s.pem --key s.key >backend.log 2>&1 &
pids+=($!)

run_one() { # name mode policy
  local name=$1 mode=$2 policy=$3 lp ap mp gw hog
  lp=$(port); ap=$(port); mp=$(port)
  mkdir -p "$name"
  cat >"$name/edgegw.toml" <<CFG
[server]
workers = 2
data_dir = "$work/$name/data"
[listener]
address = "127.0.0.1:$lp"
key_exchange_groups = ["X25519"]
[admin]
address = "127.0.0.1:$ap"
token = "bench"
[metrics]
address = "127.0.0.1:$mp"
[steering]
mode = "$mode"
policy = "$policy"
CFG
  "$OLDPWD/$BIN/edgegw" run --config "$name/edgegw.toml" >"$name/edgegw.log" 2>&1 &
  gw=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$ap/apis" && break; sleep 0.1; done
  local auth=(-H "Authorization: Bearer bench" -H "Content-Type: application/json")
  curl -sf -o /dev/null -X PUT "${auth[@]}" "http://127.0.0.1:$ap/certificates/c1" \
    -d "{\"data\":\"$(base64 -w0 c.pfx)\",\"password\":\"pw\"}"
  curl -sf -o /dev/null -X PUT "${auth[@]}" "http://127.0.0.1:$ap/backends/be1" \
    -d "{\"url\":\"https://127.0.0.1:$be_port\",\"tls\":{\"validateCertificateChain\":false,\"validateCertificateName\":false},\"credentials\":{\"certificateId\":\"c1\"}}"
  curl -sf -o /dev/null -X PUT "${auth[@]}" "http://127.0.0.1:$ap/apis/api1" -d '{"path":"/api","backendId":"be1"}'
  # Worker 1 is pinned to CPU 1: make it slow with CPU hogs on that CPU.
  local hogs=()
  for _ in $(seq "$HOGS"); do taskset -c 1 nice -n "$NICE" sh -c 'while :; do :; done' & hogs+=($!); done
  sleep 0.5
  echo "=== $name (steering.mode=$mode policy=$policy, $HOGS CPU hog(s) at nice $NICE on worker 1's CPU) ==="
  grep -o 'connection steering: .*' "$name/edgegw.log" | head -1
  "$OLDPWD/$BIN/loadtest" run --scenario "$SCENARIO" --target "https://127.0.0.1:$lp/api/x" \
    --duration "$DURATION" --rate "$RATE" --connections 32 --groups X25519
  for h in "${hogs[@]}"; do kill "$h"; done
  sleep 0.3
  curl -s "http://127.0.0.1:$mp/metrics" | awk '/^edgegw_worker_accepted_connections_total/ {
      split($1, a, "\""); n[a[2]] = $2; t += $2 }
    END { for (w in n) printf "worker %s accepted %d (%.1f%%)\n", w, n[w], 100 * n[w] / t }' | sort
  kill "$gw"; wait "$gw" 2>/dev/null || true
}

run_one kernel kernel hash
run_one ebpf-hash ebpf hash
run_one ebpf-least-loaded ebpf least-loaded
