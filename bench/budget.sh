#!/usr/bin/env bash
# Resident memory and code size against the committed budget
# (bench/budget.json): a regression guard for CI that asserts no times.
#
#   bench/budget.sh [path/to/jobloop]     (~15 s; default target/release/jobloop)
#
# Figures (job /bin/true, AGENT_IDLE_SLEEP=0, no scrapes):
#   - VmRSS after `iterations` runs, no OTLP;
#   - the same with OTLP http/protobuf to a local sink (a python3 one), and
#     over TLS to the same sink behind a throw-away CA (needs openssl);
#   - the growth of VmRSS from `iterations` to 4 x `iterations` runs;
#   - the size of the binary after `strip`.
# Each fails only above its budget times (1 + margin): a clear regression,
# not noise. Prints "budget: N passed, M failed" like the other runners.
# Needs jq, python3, openssl, strip (binutils). Network: 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$PWD/target/release/jobloop}
budget=bench/budget.json
work=$(mktemp -d /tmp/jobloop-budget.XXXXXX)
sink=""
cleanup() { [ -n "$sink" ] && kill "$sink" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
get() { jq -r ".$1" "$budget"; }
margin=$(get margin)
n=$(get iterations)
passed=0 failed=0

# check NAME MEASURED BUDGET UNIT
check() {
  local limit
  limit=$(awk -v b="$3" -v m="$margin" 'BEGIN { printf "%d", b * (1 + m) }')
  if [ "$2" -le "$limit" ]; then
    passed=$((passed + 1)); echo "ok    $1: $2 $4 (budget $3, fails above $limit)"
  else
    failed=$((failed + 1)); echo "FAIL  $1: $2 $4 (budget $3, fails above $limit)"
  fi
}

iteration() { jq -r '.iteration // 0' "$1/state/state.json" 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# wait_iter DIR PID N: until N runs are done (60 s at most)
wait_iter() {
  local deadline=$((SECONDS + 60))
  while [ "$(iteration "$1")" -lt "$3" ]; do
    kill -0 "$2" 2>/dev/null || { echo "jobloop exited early: $(cat "$1/err")" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $3 iterations" >&2; return 1; }
    sleep 0.05
  done
}
# daemon NAME [VAR=VALUE...]: starts one, prints its pid
daemon() {
  local d=$work/$1; shift
  mkdir -p "$d"
  env AGENT_IDLE_SLEEP=0 AGENT_LISTEN=127.0.0.1:0 AGENT_LOG_DIR="$d/logs" \
    AGENT_STATE_DIR="$d/state" "$@" "$bin" run -- /bin/true 2>"$d/err" >/dev/null &
  echo $!
}
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

# 1. no OTLP: RSS after n runs, and its growth to 4n
pid=$(daemon plain)
wait_iter "$work/plain" "$pid" "$n"
first=$(rss "$pid")
wait_iter "$work/plain" "$pid" $((4 * n))
second=$(rss "$pid")
stop "$pid"
check "VmRSS after $n runs, no OTLP" "$first" "$(get rss_kib_after_iterations)" KiB
check "VmRSS growth $n -> $((4 * n)) runs" $((second > first ? second - first : 0)) "$(get rss_growth_kib_to_4x_iterations)" KiB

# 2. OTLP http/protobuf to a sink that answers 200
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 bench/helpers/otlp-sink.py "$port" &
sink=$!
pid=$(daemon otlp OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
wait_iter "$work/otlp" "$pid" "$n"
check "VmRSS after $n runs, OTLP http/protobuf" "$(rss "$pid")" "$(get rss_kib_after_iterations_otlp_http)" KiB
stop "$pid"

# 3. the same over TLS (rustls), to the sink behind a throw-away CA
bash bench/helpers/throwaway-ca.sh "$work"
kill "$sink" 2>/dev/null || true
python3 bench/helpers/otlp-sink.py "$port" "$work/server.pem" "$work/server.key" &
sink=$!
pid=$(daemon otlp-tls OTEL_EXPORTER_OTLP_ENDPOINT="https://127.0.0.1:$port" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_EXPORTER_OTLP_CERTIFICATE="$work/ca.pem")
wait_iter "$work/otlp-tls" "$pid" "$n"
check "VmRSS after $n runs, OTLP http/protobuf over TLS" "$(rss "$pid")" "$(get rss_kib_after_iterations_otlp_https)" KiB
stop "$pid"

# 4. code size
strip -o "$work/stripped" "$bin"
check "stripped binary" "$(stat -c %s "$work/stripped")" "$(get stripped_binary_bytes)" bytes

echo "budget: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
