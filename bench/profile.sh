#!/usr/bin/env bash
# Profiles of jobloop on the benchmark's hot paths, for docs/benchmarks.md.
# Not part of the smoke. Writes summaries under bench/results/profile/.
#
#   bench/profile.sh            all of them
#   bench/profile.sh callgrind  one of: callgrind perf strace rss
#
# callgrind: instructions per function of jobloop itself (--trace-children=no),
#            job `true`, idle 0, ~10 s under valgrind; the count is repeatable.
# perf:      perf stat (task-clock, context switches, faults) of the whole
#            tree for 3000 iterations, and perf record -g (cpu-clock) of it.
# strace:    one iteration's syscalls, with wall-clock stamps, to see where
#            the turnaround goes (job exit -> next execve).
# rss:       /proc/PID/smaps_rollup and the largest mappings after 1000 runs.
set -eu  # no pipefail: the summaries are cut with head
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=$PWD/target/release/jobloop
out=$PWD/bench/results/profile
mkdir -p "$out"
work=$(mktemp -d /tmp/jobloop-profile.XXXXXX)
trap 'rm -rf "$work"' EXIT
what=${1:-all}
export AGENT_IDLE_SLEEP=0 AGENT_LISTEN=127.0.0.1:0
fresh() { rm -rf "$work/d"; mkdir -p "$work/d"; export AGENT_LOG_DIR=$work/d/logs AGENT_STATE_DIR=$work/d/state; }
iteration() { jq -r '.iteration // 0' "$AGENT_STATE_DIR/state.json" 2>/dev/null || echo 0; }
wait_iter() { while [ "$(iteration)" -lt "$1" ]; do sleep 0.2; done; }

if [ "$what" = all ] || [ "$what" = callgrind ]; then
  fresh
  valgrind --tool=callgrind --trace-children=no --callgrind-out-file="$work/cg.out" \
    "$bin" run -- /bin/true 2>"$work/cg.err" &
  pid=$!
  sleep 12
  n=$(iteration)
  kill -TERM $pid; wait $pid || true
  {
    echo "# callgrind, jobloop run -- /bin/true, idle 0: $n iterations (incl. start-up and stop)"
    callgrind_annotate --inclusive=no "$work/cg.out" 2>/dev/null | head -60
    echo
    echo "# inclusive"
    callgrind_annotate --inclusive=yes "$work/cg.out" 2>/dev/null | grep -v "^-" | sed -n "20,90p"
  } > "$out/callgrind.txt"
  echo "callgrind: $n iterations -> $out/callgrind.txt"
fi

if [ "$what" = all ] || [ "$what" = perf ]; then
  fresh
  "$bin" run -- /bin/true 2>/dev/null &
  pid=$!
  wait_iter 200
  i0=$(iteration)
  perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p $pid --per-thread -o "$work/perf-stat.txt" -- sleep 3 || true
  i1=$(iteration)
  perf record -e cpu-clock -F 2000 -g -p $pid -o "$work/perf.data" -- sleep 3 2>/dev/null || true
  kill -TERM $pid; wait $pid || true
  {
    echo "# perf stat -p jobloop --per-thread over 3 s: iterations $i0 -> $i1"
    cat "$work/perf-stat.txt"
    echo
    echo "# perf record -e cpu-clock -g (jobloop's own threads), top symbols"
    perf report -i "$work/perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null | grep -v '^$' | grep '%' | head -60
  } > "$out/perf.txt"
  echo "perf -> $out/perf.txt"
fi

if [ "$what" = all ] || [ "$what" = strace ]; then
  fresh
  gcc -O2 -o "$work/tstamp" bench/helpers/tstamp.c
  TSTAMP_FILE=$work/stamps timeout 4 strace -f -ttt -o "$work/trace" "$bin" run -- "$work/tstamp" 2>/dev/null || true
  # the 200th job: from its exit_group to the next execve of tstamp
  awk -v want=200 '/execve\(".*tstamp"/{n++} n==want || (n==want+1 && !done) {print} /execve\(".*tstamp"/ && n==want+1 {done=1}' "$work/trace" \
    | awk '/exit_group/{p=1} p' > "$out/strace-turnaround.txt"
  echo "strace: $(wc -l < "$out/strace-turnaround.txt") lines -> $out/strace-turnaround.txt"
fi

if [ "$what" = all ] || [ "$what" = rss ]; then
  fresh
  "$bin" run -- /bin/true 2>/dev/null &
  pid=$!
  wait_iter 1000
  {
    echo "# jobloop after $(iteration) iterations"
    grep -E 'VmRSS|VmHWM|RssAnon|RssFile|Threads' /proc/$pid/status
    cat /proc/$pid/smaps_rollup
    echo "# largest mappings by Rss (kB)"
    awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6; if(name=="") name="[anon]"} /^Rss:/{rss[name]+=$2} END{for(n in rss) print rss[n], n}' /proc/$pid/smaps | sort -rn | head -15
  } > "$out/rss.txt"
  kill -TERM $pid; wait $pid || true
  echo "rss -> $out/rss.txt"
fi
