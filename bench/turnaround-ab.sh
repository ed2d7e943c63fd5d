#!/usr/bin/env bash
# Paired turnaround of two or more jobloop binaries: each round runs the
# back-to-back posix_spawn floor, then every binary in turn, on the same
# job (bench/helpers/tstamp.c), and prints each one's median turnaround
# (job exit -> next job start, ms). On a noisy VM a change shows in the
# pairs long before it shows in bench/run.sh's ranges.
#
#   bench/turnaround-ab.sh ROUNDS BIN [BIN ...]
#
# e.g. git stash; cargo build --release; cp target/release/jobloop /tmp/a
#      git stash pop; cargo build --release
#      bench/turnaround-ab.sh 8 /tmp/a target/release/jobloop
# Needs gcc and python3. Run logs and state.json go under a temp dir on
# the disk /tmp is on (the turnaround depends on that file system).
set -eu
[ $# -ge 2 ] || { sed -n '2,13p' "$0"; exit 64; }
rounds=$1
shift
helpers=$(cd "$(dirname "$0")/helpers" && pwd)
work=$(mktemp -d /tmp/jobloop-ab.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
gcc -O2 -o "$work/tstamp" "$helpers/tstamp.c"
gcc -O2 -o "$work/spawnfloor" "$helpers/spawnfloor.c"
n=800

median() {
  python3 - "$1" <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
starts = [int(l[2:]) for l in lines if l.startswith("S ")]
ends = [int(l[2:]) for l in lines if l.startswith("E ")]
gaps = sorted((starts[i + 1] - ends[i]) / 1e6 for i in range(5, min(len(starts), len(ends)) - 1))
print("%.3f" % gaps[len(gaps) // 2])
PY
}

for _ in $(seq "$rounds"); do
  rm -f "$work/floor.st"
  TSTAMP_FILE=$work/floor.st "$work/spawnfloor" $n "$work/tstamp" >/dev/null
  line="floor $(median "$work/floor.st")"
  for bin in "$@"; do
    rm -rf "$work/d" "$work/job.st"
    mkdir -p "$work/d"
    AGENT_IDLE_SLEEP=0 AGENT_LISTEN=127.0.0.1:0 AGENT_LOG_DIR=$work/d/logs \
      AGENT_STATE_DIR=$work/d/state TSTAMP_FILE=$work/job.st \
      "$bin" run -- "$work/tstamp" 2>/dev/null &
    pid=$!
    deadline=$((SECONDS + 120))
    while [ "$(grep -c '^E' "$work/job.st" 2>/dev/null || echo 0)" -lt $((n + 10)) ]; do
      [ $SECONDS -lt $deadline ] || { echo "$bin: no $n iterations in 120 s" >&2; exit 1; }
      sleep 0.05
    done
    kill -TERM $pid
    wait $pid || true
    line="$line  $bin $(median "$work/job.st")"
  done
  echo "$line"
done
