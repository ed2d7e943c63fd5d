#!/bin/sh
# A demo job for jobloop: each run does a little "work", then mostly
# succeeds, sometimes fails, and now and then reports expired credentials,
# so every path of the loop shows up in the metrics, the state and the logs.
# It links its run log by job id, as the seed's runner does.
set -u
job_id="demo-$(date +%s)-$$"
echo "claimed job ${job_id} (iteration ${JOBLOOP_ITERATION:-?}, trace ${TRACEPARENT:-none})"
if [ -n "${RUN_LOG:-}" ]; then
  mkdir -p "$(dirname "$(dirname "$RUN_LOG")")/jobs"
  ln -sf "$RUN_LOG" "$(dirname "$(dirname "$RUN_LOG")")/jobs/${job_id}.log" 2>/dev/null || true
fi
sleep "${DEMO_WORK_SECONDS:-1}"
roll=$(( $(od -An -N2 -tu2 /dev/urandom) % 100 ))
if [ "$roll" -lt "${DEMO_AUTH_PERCENT:-3}" ]; then
  echo "error: OAuth token has expired, please log in again" >&2
  exit 1
elif [ "$roll" -lt "${DEMO_FAIL_PERCENT:-25}" ]; then
  echo "error: upstream returned 502, giving up on ${job_id}" >&2
  exit 1
fi
echo "done: ${job_id}"
