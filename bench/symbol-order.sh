#!/usr/bin/env bash
# Regenerates bench/symbol-order.txt: the functions jobloop runs, in the
# order the linker should place them (build.rs hands the file to lld with
# --symbol-ordering-file). Code that runs lands contiguous at the start of
# .text, so the pages the daemon touches (and the kernel's fault-around
# maps beside them) are few; code that never runs stays unmapped.
#
#   bench/symbol-order.sh        (~1 min: three short runs under callgrind)
#
# Groups, in this order: (1) what every daemon runs: start-up, the loop with
# a job that writes output, the probes, /metrics in both formats, stop;
# (2) what only an OTLP exporter runs (http/protobuf, the same over TLS,
# and gRPC). A symbol the
# next build no longer has is skipped by the linker, so a stale file costs
# memory, never correctness; rerun this after a dependency change and
# commit the result (bench/budget.sh fails when RSS regresses).
# Needs valgrind, curl, python3. Network: 127.0.0.1 only.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=$PWD/target/release/jobloop
work=$(mktemp -d /tmp/jobloop-order.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sink=$PWD/bench/helpers/otlp-sink.py

# One daemon under callgrind for $1 seconds; scrapes everything meanwhile.
profile() {
  local name=$1 secs=$2; shift 2
  local p; p=$(port)
  rm -rf "$work/d"; mkdir -p "$work/d"
  # AGENT_LOG_KEEP=20: retention (listing, deleting) runs within the profile.
  env AGENT_IDLE_SLEEP=0 AGENT_LOG_KEEP=20 AGENT_LISTEN=127.0.0.1:$p AGENT_LOG_DIR="$work/d/logs" \
      AGENT_STATE_DIR="$work/d/state" "$@" \
    valgrind --tool=callgrind --demangle=no --dump-instr=no --trace-children=no \
      --callgrind-out-file="$work/$name.cg" "$bin" run -- /bin/sh -c 'echo working; echo done' \
      2>"$work/$name.err" &
  local pid=$!
  local end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    sleep 1
    for path in /metrics /health /livez /readyz /state; do curl -s -o /dev/null "http://127.0.0.1:$p$path" || true; done
    curl -s -o /dev/null -H 'Accept: application/openmetrics-text; version=1.0.0' "http://127.0.0.1:$p/metrics" || true
  done
  kill -TERM $pid; wait $pid || true
}
# Every function name callgrind saw executed, in the order first seen.
names() {
  sed -n 's/^c\{0,1\}fn=([0-9]*) \(.*\)$/\1/p' "$1" | awk '!seen[$0]++'
}

profile base 8
sinkport=$(port)
python3 "$sink" "$sinkport" & 
profile http 6 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sinkport OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_BSP_SCHEDULE_DELAY=500
# The same over TLS (rustls, ring): a throw-away CA and a server certificate
# for 127.0.0.1, and the sink behind them.
bash "$(dirname "$0")/helpers/throwaway-ca.sh" "$work"
tlsport=$(port)
python3 "$sink" "$tlsport" "$work/server.pem" "$work/server.key" &
profile https 6 OTEL_EXPORTER_OTLP_ENDPOINT=https://127.0.0.1:$tlsport OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_EXPORTER_OTLP_CERTIFICATE="$work/ca.pem" OTEL_BSP_SCHEDULE_DELAY=500
# gRPC against the same port: the requests fail, the client code still runs.
profile grpc 6 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sinkport OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_BSP_SCHEDULE_DELAY=500

nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u > "$work/defined"
{
  names "$work/base.cg"
  names "$work/http.cg"
  names "$work/https.cg"
  names "$work/grpc.cg"
} | awk '!seen[$0]++' | grep -Fxf "$work/defined" > bench/symbol-order.txt
echo "bench/symbol-order.txt: $(wc -l < bench/symbol-order.txt) symbols ($(names "$work/base.cg" | grep -cFxf "$work/defined") in the base group)"
