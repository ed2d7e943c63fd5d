#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and black-box tests (on one
# release build), then the checks of what operators deploy (promtool rules
# and unit tests, dashboard, compose, Kubernetes) and the end-to-end test
# with a real Prometheus scraping jobloop. `.ci/run` installs the tools and
# runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Every runner's "N passed, M failed" goes into one total at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "module layers (no import cycle between the modules of src/)"
python3 scripts/check-layers.py

step "cargo clippy (warnings are errors)"
cargo clippy --release --all-targets --locked -- -D warnings

step "cargo doc (broken doc links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --locked

step "cargo test --release (unit and black-box tests)"
cargo test --release --locked 2>&1 | tee -a "$log"

bin="$PWD/target/release/jobloop"

if [ -x tests/deploy/check.sh ]; then
  step "deploy files: alerts, dashboard, compose, kubernetes"
  tests/deploy/check.sh 2>&1 | tee -a "$log"
fi

if [ -x tests/deploy/prometheus-e2e.sh ]; then
  step "end to end: a real Prometheus scrapes jobloop"
  tests/deploy/prometheus-e2e.sh "$bin" 2>&1 | tee -a "$log"
fi

if [ -x bench/run.sh ]; then
  step "benchmark smoke (few iterations, no thresholds)"
  BENCH_SMOKE=1 bench/run.sh
fi

if [ -x bench/budget.sh ]; then
  step "resident memory and code size against bench/budget.json (no times)"
  # The product build, as users get it: `cargo test` builds the binary with
  # the dev-dependencies' features (tokio's test-util, tonic's server),
  # another build whose symbol names bench/symbol-order.txt does not match.
  cargo build --release --locked --quiet
  bench/budget.sh "$bin" 2>&1 | tee -a "$log"
fi

step "all tests passed"
passed=$(grep -E '^(test result: ok\.|[a-z0-9]+:) [0-9]+ passed' "$log" \
  | sed -E 's/^[^0-9]*([a-z0-9]+: )?([0-9]+) passed.*/\2/' | awk '{ s += $1 } END { print s + 0 }')
echo "jobloop: ${passed:-0} passed, 0 failed"
