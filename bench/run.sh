#!/usr/bin/env bash
# jobloop benchmarks beside the seed script, supervisord, horust and the
# physical floors, in one run on this machine. Prints a markdown table.
#
#   bench/run.sh                 full run (~15-20 min; installs the peers)
#   BENCH_SMOKE=1 bench/run.sh   CI smoke: few iterations, no thresholds, < 2 min
#
# Settings (environment):
#   SEED_SCRIPT   the seed loop (default ../shared/seed/run-agent.sh); when
#                 absent its columns say "skipped"
#   BENCH_ONLY    comma list of figures: cpu,turnaround,idle,memory,otlp,output,auth,metrics,startup
#   BENCH_JSON    where the raw numbers go (default bench/results/latest.json)
#   BENCH_TMPDIR  where the scratch dir (run logs, state.json) goes (default /tmp)
#   HORUST_ROOT   cargo install root for horust 0.1.14 (full run only;
#                 default /tmp/jobloop-bench-horust); BENCH_NO_PEERS=1 skips both peers
# Network: only 127.0.0.1. Needs: cargo, gcc, python3; wrk for /metrics load.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
smoke=${BENCH_SMOKE:-0}
say() { printf '[bench] %s\n' "$*" >&2; }

# 1. jobloop, release build (cargo rebuilds only when stale)
say "building jobloop (release)"
cargo build --release --locked --quiet
export JOBLOOP_BIN="$root/target/release/jobloop"
BENCH_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || BENCH_REV="$BENCH_REV + uncommitted changes"
export BENCH_REV

# 2. helpers: spawn floor, timestamps, output spewer, auth job, sleep shim
build=$root/bench/.build
mkdir -p "$build"
for src in bench/helpers/*.c; do
  out=$build/$(basename "$src" .c)
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
    gcc -O2 -Wall -o "$out" "$src"
  fi
done
export BENCH_HELPERS=$build

# 3. the seed
export SEED_SCRIPT=${SEED_SCRIPT:-../shared/seed/run-agent.sh}
if [ -f "$SEED_SCRIPT" ]; then
  SEED_SCRIPT=$(cd "$(dirname "$SEED_SCRIPT")" && pwd)/$(basename "$SEED_SCRIPT")
  command -v jq >/dev/null || say "warning: jq is missing; the seed will write empty state files (BASELINE Q7)"
else
  say "seed script absent: $SEED_SCRIPT (its columns are skipped)"
fi

# 4. peers: supervisord from PyPI into a venv; horust from crates.io (full run only)
export SUPERVISORD="" SUPERVISORD_SKIP="" HORUST="" HORUST_SKIP=""
if [ "${BENCH_NO_PEERS:-0}" = 1 ]; then
  SUPERVISORD_SKIP="BENCH_NO_PEERS=1"; HORUST_SKIP="BENCH_NO_PEERS=1"
else
  venv=$root/bench/.venv
  if [ ! -x "$venv/bin/supervisord" ]; then
    say "installing supervisor into $venv"
    if ! { python3 -m venv "$venv" && timeout 120 "$venv/bin/pip" install --quiet --disable-pip-version-check supervisor; } >&2; then
      SUPERVISORD_SKIP="pip install supervisor failed"
    fi
  fi
  [ -x "$venv/bin/supervisord" ] && SUPERVISORD=$venv/bin/supervisord
  [ -n "$SUPERVISORD" ] || SUPERVISORD_SKIP=${SUPERVISORD_SKIP:-"not installable"}

  hroot=${HORUST_ROOT:-/tmp/jobloop-bench-horust}
  if [ -x "$hroot/bin/horust" ]; then
    HORUST=$hroot/bin/horust
  elif [ "$smoke" = 1 ]; then
    HORUST_SKIP="not built in the smoke (the full run does: cargo install horust --version 0.1.14)"
  else
    say "building horust 0.1.14 into $hroot (a few minutes)"
    if timeout 1200 cargo install horust --version 0.1.14 --locked --root "$hroot" >"$build/horust-install.log" 2>&1; then
      HORUST=$hroot/bin/horust
    else
      HORUST_SKIP="cargo install horust --version 0.1.14 failed (see bench/.build/horust-install.log)"
    fi
  fi
fi

# 5. measure
export BENCH_WORK
BENCH_WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/jobloop-bench.XXXXXX")
trap 'rc=$?; if [ $rc = 0 ]; then rm -rf "$BENCH_WORK"; else echo "[bench] failed (rc $rc); scratch kept in $BENCH_WORK" >&2; fi' EXIT
mkdir -p bench/results
export BENCH_JSON=${BENCH_JSON:-$root/bench/results/$([ "$smoke" = 1 ] && echo smoke || echo latest).json}
say "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
python3 bench/bench.py
say "raw numbers: $BENCH_JSON"
