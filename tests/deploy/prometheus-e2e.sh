#!/usr/bin/env bash
# End-to-end test of what operators deploy, against a real Prometheus and a
# real Alertmanager.
#
#   tests/deploy/prometheus-e2e.sh target/release/jobloop
#
# Starts several jobloop instances on free 127.0.0.1 ports, each running a
# small job this script writes, in the scenarios the alerts are about:
#
#   unhealthy  always fails; AGENT_BACKOFF_START=100ms AGENT_MAX_FAILURES=3 -> halts unhealthy
#   expired    prints "OAuth token expired"                                  -> halts token-expired
#   healthy    exits 0, AGENT_IDLE_SLEEP=200ms; rotate hook `false` fails;
#              preflight `true`; tiny AGENT_RUN_LOG_MAX_BYTES and AGENT_LOG_KEEP
#              so truncation and retention counters move
#   long       `sleep 600`                                                   -> one job running for long
#   failing    always fails; AGENT_MAX_FAILURES=0 (never halts), 100ms..200ms backoff
#   stalled    exits 0, AGENT_IDLE_SLEEP=1h                                  -> no iteration finishes
#   flaky      fails 2 runs of every 3, AGENT_MAX_FAILURES=3                 -> never halts, high failure ratio
#   long2      `sleep 600`                                                   -> a second busy instance
#   diskfull   run logs on a 64 KiB tmpfs (root only; skipped elsewhere,
#              failed under CI=true)                                        -> run-log write errors
#   dead, dead2  ports nobody listens on                                     -> scrapes fail
#   halt-1..3  always fail, AGENT_MAX_FAILURES=1, namespace "fleet-a"        -> a whole fleet halted
#
# Each target gets the labels a Kubernetes scrape adds: namespace ("e2e", or
# "fleet-a" for halt-*) and pod (its name). Namespace e2e has 4 of its targets
# halted or down (under half: no fleet alert); fleet-a all 3.
#
# and a Prometheus (the Debian package's /usr/bin/prometheus, or $PROMETHEUS)
# on 127.0.0.1 with a generated config: scrape and rule evaluation every 1 s,
# the mixin's alerts loaded (mixin/mixin.libsonnet through jsonnet, with
# every `for:` shortened: 3 s for JobloopFleetHalted, 10 s for the others, so
# the fleet alert is always active before the per-pod ones), sending to an
# Alertmanager ($ALERTMANAGER, default Debian's prometheus-alertmanager) run
# with deploy/compose/alertmanager.yml's route and inhibit rules, timings cut
# to seconds and a webhook receiver: a python3 http.server of this script
# that appends each notification to a file. Every wait polls a condition
# with a deadline. Then, through Prometheus' HTTP API, it checks that
#   (a) every metric name in tests/fixtures/metrics.txt was scraped,
#   (b) every query of every panel in dashboards/jobloop.json returns data
#       once its variables are substituted,
#   (c) each alert's expression, as Prometheus loaded it, is true for the
#       instance of the scenario that should fire it and false for a
#       neighbouring one; alerts whose expression holds unscaled must also
#       show up as pending or firing in Prometheus' own evaluation;
#   (d) Prometheus, started with --enable-feature=exemplar-storage, scraped
#       OpenMetrics with exemplars: /api/v1/query_exemplars returns, for the
#       duration buckets and the iteration counter of the halted and the
#       stalled instances, exemplars whose trace_id and span_id are those of
#       one of that instance's run-log headers,
#   (e) Alertmanager delivered: JobloopFleetHalted for fleet-a; the two
#       JobloopDown alerts of namespace e2e grouped in one notification;
#       JobloopUnhealthy of e2e; and held back (inhibited, shown so by its
#       API, never delivered) the three JobloopUnhealthy of fleet-a.
# At the end Prometheus, Alertmanager, the webhook and every jobloop are
# stopped by their pids.
#
# Scaling in (c): a test cannot wait for thresholds of minutes or an hour,
# so for three alerts the expression is evaluated with one number replaced,
# listed in the `scenario` lines below (JobloopStalled's 600 s margin -> 2 s,
# JobloopIterationTooLong's 3600 s -> 2 s, JobloopNoRecentSuccess's 6 h ->
# 2 s). The replaced text must occur
# in the loaded expression, or the check fails (so a changed rule cannot
# silently skip it). `for:` durations are not waited for: the promtool unit
# tests in alerts/tests/ cover them.
#
# Needs: prometheus, promtool, prometheus-alertmanager, jsonnet, curl, jq,
# python3 with PyYAML (free ports, the Alertmanager config, the webhook).
# KEEP_E2E_DIR=1 keeps the work directory (logs, Prometheus data) for a look.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 JOBLOOP_BIN   (e.g. target/release/jobloop)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
PROMETHEUS=${PROMETHEUS:-prometheus}
if [ -z "${ALERTMANAGER:-}" ]; then
    ALERTMANAGER=$(command -v prometheus-alertmanager || command -v alertmanager || echo prometheus-alertmanager)
fi
for tool in "$PROMETHEUS" "$ALERTMANAGER" promtool jsonnet curl jq python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

# Nothing from the caller's environment may redirect jobloop's settings or
# traces.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(AGENT_|OTEL_|TRACEPARENT$)' || true)

work=$(mktemp -d /tmp/jobloop-e2e.XXXXXX)
pids=()
tmpfs_mounted=
passed=0
failed=0

cleanup() {
    local rc=$? pid deadline
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 15))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "pid $pid did not stop within 15 s of SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    [ -z "$tmpfs_mounted" ] || umount -l "$tmpfs_mounted" 2>/dev/null || true
    if [ "${KEEP_E2E_DIR:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until
# it succeeds; false (and a message) after SECONDS.
wait_until() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after ${limit}s waiting for: $what"
            return 1
        fi
        sleep 0.2
    done
}

used_ports=" "
free_port() {
    local port
    while :; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        case "$used_ports" in *" $port "*) continue ;; esac
        used_ports+="$port "
        echo "$port"
        return
    done
}

# ------------------------------------------------------------------ jobs
mkdir -p "$work/jobs"
cat >"$work/jobs/fail.sh" <<'EOF'
#!/bin/sh
echo "e2e: failing on purpose (iteration $JOBLOOP_ITERATION)"
exit 1
EOF
cat >"$work/jobs/expired.sh" <<'EOF'
#!/bin/sh
echo "calling the API"
echo "error: OAuth token expired" >&2
exit 1
EOF
cat >"$work/jobs/ok.sh" <<'EOF'
#!/bin/sh
# About 2 KiB of output: more than the healthy instance's AGENT_RUN_LOG_MAX_BYTES.
i=0
while [ "$i" -lt 32 ]; do
    echo "e2e: line $i of a successful run, padded to sixty-four bytes ....."
    i=$((i + 1))
done
exit 0
EOF
cat >"$work/jobs/sleep.sh" <<'EOF'
#!/bin/sh
exec sleep 600
EOF
cat >"$work/jobs/flaky.sh" <<'EOF'
#!/bin/sh
# Fails 2 runs of every 3: never 3 in a row.
[ $((JOBLOOP_ITERATION % 3)) -eq 0 ] && exit 0
echo "e2e: flaky failure (iteration $JOBLOOP_ITERATION)"
exit 1
EOF
cat >"$work/jobs/big.sh" <<'EOF'
#!/bin/sh
# 200 KiB of output: more than the diskfull instance's log tmpfs holds.
head -c 204800 /dev/zero | tr '\0' x
echo
EOF
chmod +x "$work/jobs/"*.sh

# ------------------------------------------------------------- instances
declare -A PORT
names=()

declare -A NS
# start [--ns NAMESPACE] NAME JOB [VAR=VALUE...]
start() {
    local ns=e2e
    if [ "$1" = --ns ]; then ns=$2; shift 2; fi
    local name=$1 job=$2
    shift 2
    NS[$name]=$ns
    local port
    port=$(free_port)
    PORT[$name]=$port
    names+=("$name")
    mkdir -p "$work/$name"
    (
        cd "$work/$name"
        exec env AGENT_LISTEN="127.0.0.1:$port" AGENT_LOG_DIR="${LOG_DIR:-$work/$name/logs}" \
            AGENT_STATE_DIR="$work/$name/state" AGENT_SHUTDOWN_GRACE=2s AGENT_KILL_GRACE=1s \
            AGENT_LOG_LEVEL=info "$@" "$BIN" run -- "$work/jobs/$job"
    ) >"$work/$name/jobloop.log" 2>&1 &
    pids+=($!)
    echo "started $name: pid $!, 127.0.0.1:$port, job $job${*:+, $*}"
}

start unhealthy fail.sh AGENT_BACKOFF_START=100ms AGENT_MAX_FAILURES=3
start expired expired.sh
start healthy ok.sh AGENT_IDLE_SLEEP=200ms AGENT_ROTATE_CMD=false AGENT_PREFLIGHT_CMD=true \
    AGENT_RUN_LOG_MAX_BYTES=1024 AGENT_LOG_KEEP=5
start long sleep.sh
start failing fail.sh AGENT_MAX_FAILURES=0 AGENT_BACKOFF_START=100ms AGENT_BACKOFF_MAX=200ms
start stalled ok.sh AGENT_IDLE_SLEEP=1h
start flaky flaky.sh AGENT_MAX_FAILURES=3 AGENT_BACKOFF_START=50ms AGENT_BACKOFF_MAX=100ms AGENT_IDLE_SLEEP=100ms
start long2 sleep.sh
for i in 1 2 3; do
    start --ns fleet-a "halt-$i" fail.sh AGENT_MAX_FAILURES=1
done
# Run logs on a tmpfs too small for one run's output (needs root to mount).
mkdir -p "$work/diskfull/logs"
if mount -t tmpfs -o size=64k jobloop-e2e "$work/diskfull/logs" 2>"$work/mount.err"; then
    tmpfs_mounted=$work/diskfull/logs
    LOG_DIR=$tmpfs_mounted start diskfull big.sh AGENT_IDLE_SLEEP=200ms AGENT_LOG_KEEP=0 AGENT_LOG_MAX_AGE=0 \
        AGENT_LOG_MAX_BYTES=0
else
    echo "no diskfull instance: cannot mount a tmpfs (needs root): $(cat "$work/mount.err")"
fi
for name in dead dead2; do
    PORT[$name]=$(free_port)
    NS[$name]=e2e
    echo "$name target: 127.0.0.1:${PORT[$name]} (nothing listens there)"
done

inst() { echo "127.0.0.1:${PORT[$1]}"; }

state_of() { curl -sf --max-time 2 "http://$(inst "$1")/state"; }
# state_is NAME JQ_CONDITION: the instance's /state satisfies the condition.
state_is() { state_of "$1" | jq -e "$2" >/dev/null; }

diagnose() {
    local name
    echo "--- diagnostics"
    for name in "${names[@]}"; do
        echo "[$name] /state: $(state_of "$name" 2>&1 | head -c 600 || true)"
        echo "[$name] last log lines:"
        tail -n 5 "$work/$name/jobloop.log" 2>/dev/null | sed 's/^/    /' || true
    done
    echo "[prometheus] last log lines:"
    tail -n 10 "$work/prometheus.log" 2>/dev/null | sed 's/^/    /' || true
}

echo
echo "==> jobloop instances reach their scenario"
scenario_state() {
    local name=$1 cond=$2 limit=${3:-30}
    if wait_until "$limit" "$name: $cond" state_is "$name" "$cond"; then
        ok "$name: /state satisfies $cond"
    else
        bad "$name: /state never satisfied $cond"
    fi
}
scenario_state unhealthy '.status == "unhealthy"'
scenario_state expired '.status == "token-expired"'
scenario_state healthy '.iteration >= 10'
scenario_state long '.status == "running"'
scenario_state failing '.consecutiveFailures >= 3 and .status != "unhealthy"'
scenario_state stalled '.status == "idle" and .iteration == 1'
scenario_state flaky '.iteration >= 9 and .status != "unhealthy"'
scenario_state long2 '.status == "running"'
for i in 1 2 3; do scenario_state "halt-$i" '.status == "unhealthy"'; done
[ -z "$tmpfs_mounted" ] || scenario_state diskfull '.iteration >= 3'

if curl -sf "http://$(inst healthy)/metrics" >"$work/healthy.metrics" &&
    promtool check metrics <"$work/healthy.metrics" >"$work/check-metrics.out" 2>&1; then
    ok "healthy: /metrics passes promtool check metrics"
else
    bad "healthy: /metrics fails promtool check metrics: $(head -c 800 "$work/check-metrics.out" 2>/dev/null)"
fi

# ------------------------------------------------------------ prometheus
# ---------------------------------------------------------- alertmanager
# The webhook receiver: appends each notification (one JSON document) as a
# line to webhook.jsonl.
WPORT=$(free_port)
cat >"$work/webhook.py" <<'EOF'
import http.server, json, sys
out = sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "a") as f:
            f.write(json.dumps(json.loads(body)) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
EOF
: >"$work/webhook.jsonl"
python3 "$work/webhook.py" "$WPORT" "$work/webhook.jsonl" >"$work/webhook.log" 2>&1 &
pids+=($!)
# The shipped route and inhibit rules, with a webhook receiver and timings
# of seconds.
python3 - "$ROOT/deploy/compose/alertmanager.yml" "$work/alertmanager.yml" "http://127.0.0.1:$WPORT/" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["route"].update(receiver="e2e-webhook", group_wait="1s", group_interval="2s", repeat_interval="1h")
cfg["receivers"] = [{"name": "e2e-webhook", "webhook_configs": [{"url": sys.argv[3], "send_resolved": False}]}]
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
EOF
APORT=$(free_port)
AM="http://127.0.0.1:$APORT"
"$ALERTMANAGER" --config.file="$work/alertmanager.yml" --storage.path="$work/alertmanager-data" \
    --web.listen-address="127.0.0.1:$APORT" --cluster.listen-address= --log.level=warn \
    >"$work/alertmanager.log" 2>&1 &
pids+=($!)
echo
echo "==> Alertmanager pid $!, $AM; webhook 127.0.0.1:$WPORT"
if wait_until 30 "Alertmanager ready" curl -sf "$AM/-/ready"; then
    ok "Alertmanager is ready"
else
    bad "Alertmanager did not become ready: $(tail -n 5 "$work/alertmanager.log")"
    exit 1
fi

# ------------------------------------------------------------ prometheus
# The mixin's alerts with shorter `for:` (see the header); the expressions
# are exactly the shipped ones.
cat >"$work/rules.jsonnet" <<'EOF'
local jobloop = import 'mixin.libsonnet';
{
  groups: [
    g { rules: [r { 'for': if r.alert == 'JobloopFleetHalted' then '3s' else '10s' } for r in g.rules] }
    for g in jobloop.prometheusAlerts.groups
  ],
}
EOF
jsonnet -J "$ROOT/mixin" "$work/rules.jsonnet" >"$work/rules.json"
promtool check rules "$work/rules.json" >/dev/null

PPORT=$(free_port)
PROM="http://127.0.0.1:$PPORT"
{
    echo "global:"
    echo "  scrape_interval: 1s"
    echo "  scrape_timeout: 1s"
    echo "  evaluation_interval: 1s"
    echo "rule_files:"
    echo "  - $work/rules.json"
    echo "alerting:"
    echo "  alertmanagers:"
    echo "    - static_configs:"
    echo "        - targets: [\"127.0.0.1:$APORT\"]"
    echo "scrape_configs:"
    echo "  - job_name: jobloop"
    echo "    static_configs:"
    for name in "${names[@]}" dead dead2; do
        echo "      - targets: [\"$(inst "$name")\"]"
        echo "        labels: {namespace: ${NS[$name]}, pod: $name}"
    done
} >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
    --web.listen-address="127.0.0.1:$PPORT" --log.level=warn --rules.alert.resend-delay=1s \
    --enable-feature=exemplar-storage >"$work/prometheus.log" 2>&1 &
pids+=($!)
echo
echo "==> Prometheus pid $!, $PROM"
if wait_until 30 "Prometheus ready" curl -sf "$PROM/-/ready"; then
    ok "Prometheus is ready"
else
    bad "Prometheus did not become ready"
    diagnose
    exit 1
fi

# query EXPR: the instant query's JSON body (fails on an API error).
query() {
    curl -sf --max-time 5 -G --data-urlencode "query=$1" "$PROM/api/v1/query" | jq -e 'select(.status == "success")'
}
has_data() { query "$1" | jq -e '.data.result | length > 0' >/dev/null; }
# instances EXPR: the instance labels in the result, one per line.
instances() { query "$1" | jq -r '.data.result[].metric.instance // empty'; }
in_result() { instances "$1" | grep -qxF "$2"; }

n_jobloops=${#names[@]}
if wait_until 30 "all targets scraped" has_data \
    "count(up{job=\"jobloop\"} == 1) == $n_jobloops and count(up{job=\"jobloop\"} == 0) == 2"; then
    ok "Prometheus scrapes $n_jobloops jobloops (up 1) and the two dead targets (up 0)"
else
    bad "Prometheus does not see the targets as expected: $(query 'up' | jq -c '[.data.result[] | {i: .metric.instance, v: .value[1]}]')"
fi

# -------------------------------------------------------------- (a) names
echo
echo "==> (a) every metric name of tests/fixtures/metrics.txt was scraped"
# The golden exposition's TYPE lines name every family jobloop exports
# (process_* included); a histogram is scraped as _bucket, _sum and _count.
expected=()
while read -r _ _ name kind; do
    if [ "$kind" = histogram ]; then
        expected+=("${name}_bucket" "${name}_sum" "${name}_count")
    else
        expected+=("$name")
    fi
done < <(grep '^# TYPE ' tests/fixtures/metrics.txt)
[ "${#expected[@]}" -gt 0 ] || bad "no TYPE lines in tests/fixtures/metrics.txt"
names_present() {
    curl -sf "$PROM/api/v1/label/__name__/values" | jq -r '.data[]' >"$work/names.txt" || return 1
    local n
    for n in "${expected[@]}"; do grep -qxF "$n" "$work/names.txt" || return 1; done
}
wait_until 20 "all metric names in Prometheus" names_present || true
for n in "${expected[@]}"; do
    if grep -qxF "$n" "$work/names.txt" 2>/dev/null; then
        ok "scraped $n"
    else
        bad "never scraped: $n"
    fi
done

# ---------------------------------------------------------- (b) dashboard
echo
echo "==> (b) every dashboard panel query returns data"
# Grafana's variables, as they expand with "All" selected (.*, the
# variables' allValue) and a 1 s scrape interval ($__rate_interval is at
# least four scrape intervals).
substitute() {
    sed -e 's/\$__rate_interval/10s/g; s/\$__interval/2s/g; s/\$__range/5m/g' \
        -e 's/\${job}/.*/g; s/\$job/.*/g; s/\${namespace}/.*/g; s/\$namespace/.*/g' \
        -e 's/\${pod}/.*/g; s/\$pod/.*/g; s/\${datasource}//g'
}
# The variables' own queries: label_values(METRIC{MATCHERS}, LABEL), asked the
# way Grafana asks them (/api/v1/label/LABEL/values?match[]=...).
variable_values() {
    local def=$1 metric label
    metric=$(sed -E 's/^label_values\((.*), *([a-z_]+)\)$/\1/' <<<"$def" | substitute)
    label=$(sed -E 's/^label_values\((.*), *([a-z_]+)\)$/\2/' <<<"$def")
    curl -sf -G --data-urlencode "match[]=$metric" "$PROM/api/v1/label/$label/values" | jq -r '.data[]'
}
for var in namespace job pod; do
    def=$(jq -r --arg v "$var" '.templating.list[] | select(.name == $v) | .definition' dashboards/jobloop.json)
    case $var in namespace) want=2 ;; job) want=1 ;; pod) want=$n_jobloops ;; esac
    count_values() { [ "$(variable_values "$def" | wc -l)" -eq "$want" ]; }
    if wait_until 10 "variable $var" count_values; then
        ok "variable \$$var ($def) offers $(variable_values "$def" | tr '\n' ' ')"
    else
        bad "variable \$$var ($def) offers '$(variable_values "$def" | tr '\n' ' ')', want $want values"
    fi
done

jq -c '.panels[] | (., .panels[]?) | select(.targets) | {title, targets: [.targets[] | {refId, expr}]}' \
    dashboards/jobloop.json >"$work/panels.jsonl"
while read -r panel; do
    title=$(jq -r .title <<<"$panel")
    while read -r target; do
        ref=$(jq -r .refId <<<"$target")
        expr=$(jq -r .expr <<<"$target" | substitute)
        if grep -q '\$' <<<"$expr"; then
            bad "panel \"$title\" $ref: unsubstituted variable in: $expr"
        elif wait_until 30 "data for panel $title $ref" has_data "$expr"; then
            ok "panel \"$title\" $ref returns $(query "$expr" | jq '.data.result | length') series"
        else
            bad "panel \"$title\" $ref returns no data: $expr"
        fi
    done < <(jq -c '.targets[]' <<<"$panel")
done <"$work/panels.jsonl"

# The alert annotations: Prometheus' ALERTS series of jobloop's alerts.
ann_expr=$(jq -r '.annotations.list[] | select(.expr) | .expr' dashboards/jobloop.json | substitute)
if wait_until 30 "alert annotations" has_data "$ann_expr"; then
    ok "annotation query returns $(query "$ann_expr" | jq '.data.result | length') firing alerts: $ann_expr"
else
    bad "annotation query returns nothing: $ann_expr"
fi

# The state timeline maps a number per instance to a state name through the
# panel's value mappings: check it names the state each scenario is in.
state_panel=$(jq -c '[.panels[] | (., .panels[]?) | select(.type == "state-timeline")] | first' dashboards/jobloop.json)
state_expr=$(jq -r '.targets[0].expr' <<<"$state_panel" | substitute)
timeline_shows() {
    local value
    value=$(query "$state_expr" | jq -r --arg i "$(inst "$1")" '.data.result[] | select(.metric.instance == $i) | .value[1]')
    [ -n "$value" ] || return 1
    [ "$(jq -r --arg v "$value" '.fieldConfig.defaults.mappings[].options[$v].text // empty' <<<"$state_panel")" = "$2" ]
}
for pair in unhealthy:unhealthy expired:token-expired long:running stalled:idle; do
    name=${pair%%:*} want=${pair#*:}
    if wait_until 10 "timeline shows $want for $name" timeline_shows "$name" "$want"; then
        ok "panel \"State per instance\" shows $name as $want"
    else
        bad "panel \"State per instance\" does not show $name as $want"
    fi
done

# ------------------------------------------------------------- (c) alerts
echo
echo "==> (c) each alert's expression is true in its scenario"
curl -sf "$PROM/api/v1/rules?type=alert" |
    jq -c '.data.groups[].rules[] | {name, query}' >"$work/rules.jsonl"
jq -r .name "$work/rules.jsonl" | sort >"$work/rule-names.txt"
[ -s "$work/rule-names.txt" ] && ok "Prometheus loaded $(wc -l <"$work/rule-names.txt") alert rules" ||
    bad "Prometheus loaded no alert rules from alerts/jobloop.rules.yml"

# scenario ALERT FIRES_FOR NOT_FOR [FROM TO]
#   FIRES_FOR / NOT_FOR: an instance name above, or "job" for job-level alerts
#   (FIRES_FOR: the result has the series; NOT_FOR: the unscaled expression
#   has no result). FROM/TO: the scaling replacement (see the header).
scenario() {
    local alert=$1 fires=$2 not=$3 from=${4:-} to=${5:-}
    local expr scaled
    expr=$(jq -r --arg n "$alert" 'select(.name == $n) | .query' "$work/rules.jsonl")
    if [ -z "$expr" ]; then
        bad "$alert: not loaded by Prometheus"
        return
    fi
    scaled=$expr
    if [ -n "$from" ]; then
        if ! grep -qF -- "$from" <<<"$expr"; then
            bad "$alert: scaling '$from' -> '$to' no longer applies to: $expr"
            return
        fi
        scaled=${expr//"$from"/"$to"}
    fi
    if [ "$fires" = job ]; then
        if wait_until 20 "$alert true" has_data "$scaled"; then
            ok "$alert: true (${from:+scaled '$from' -> '$to': }$(query "$scaled" | jq -c '[.data.result[] | .metric]'))"
        else
            bad "$alert: expression never true: $scaled"
        fi
    elif wait_until 20 "$alert true for $fires" in_result "$scaled" "$(inst "$fires")"; then
        ok "$alert: true for $fires${from:+ (scaled '$from' -> '$to')}"
    else
        bad "$alert: never true for $fires ($(inst "$fires")): $scaled -> $(instances "$scaled" | tr '\n' ' ')"
    fi
    if [ "$not" = job ]; then
        if has_data "$expr"; then
            bad "$alert: unscaled expression is already true: $expr"
        else
            ok "$alert: unscaled expression is false"
        fi
    elif in_result "$scaled" "$(inst "$not")"; then
        bad "$alert: also true for $not, which must not fire it"
    else
        ok "$alert: not true for $not"
    fi
    echo "$alert" >>"$work/scenario-names.txt"
}

: >"$work/scenario-names.txt"
scenario JobloopDown dead healthy
scenario JobloopTokenExpired expired unhealthy
scenario JobloopUnhealthy unhealthy expired
scenario JobloopFailing failing unhealthy
scenario JobloopFailureRatioHigh flaky healthy
scenario JobloopNoRecentSuccess failing healthy '> 21600' '> 2'
scenario JobloopStalled stalled long '+ 600' '+ 2'
scenario JobloopIterationTooLong long stalled '> 3600' '> 2'
scenario JobloopHookFailing healthy failing
if [ -n "$tmpfs_mounted" ]; then
    scenario JobloopWriteErrors diskfull healthy
elif [ "${CI:-}" = true ]; then
    bad "JobloopWriteErrors: no diskfull instance under CI (cannot mount a tmpfs)"
else
    echo "skip JobloopWriteErrors: no diskfull instance (cannot mount a tmpfs; run as root)"
    echo JobloopWriteErrors >>"$work/scenario-names.txt"
fi
if in_result "$(jq -r 'select(.name == "JobloopFailing") | .query' "$work/rules.jsonl")" "$(inst flaky)"; then
    bad "JobloopFailing: true for flaky, which never fails 3 times in a row"
else
    ok "JobloopFailing: not true for flaky (2 of 3 runs fail, never 3 in a row)"
fi

# JobloopFleetHalted: by namespace and job; fleet-a has all 3 halted, e2e
# 4 of its targets halted or down, under half.
fleet_namespaces() {
    query "$(jq -r 'select(.name == "JobloopFleetHalted") | .query' "$work/rules.jsonl")" |
        jq -r '.data.result[] | .metric.namespace' | sort | tr '\n' ' '
}
fleet_is_a() { [ "$(fleet_namespaces)" = "fleet-a " ]; }
if wait_until 20 "JobloopFleetHalted true for fleet-a only" fleet_is_a; then
    ok "JobloopFleetHalted: true for namespace fleet-a only"
else
    bad "JobloopFleetHalted: true for namespaces '$(fleet_namespaces)', want 'fleet-a '"
fi
echo JobloopFleetHalted >>"$work/scenario-names.txt"

# JobloopAbsent: true when no target of the job exists. Its selector is
# pointed at a job with no targets; unscaled it is false (6 targets exist).
expr=$(jq -r 'select(.name == "JobloopAbsent") | .query' "$work/rules.jsonl")
if [ -n "$expr" ] && grep -qF 'job="jobloop"' <<<"$expr"; then
    absent=${expr//'job="jobloop"'/'job="jobloop-e2e-none"'}
    if has_data "$absent"; then ok "JobloopAbsent: true for a job without targets"; else bad "JobloopAbsent: false for a job without targets: $absent"; fi
    if has_data "$expr"; then bad "JobloopAbsent: true although jobloop targets exist"; else ok "JobloopAbsent: false while jobloop targets exist"; fi
    echo JobloopAbsent >>"$work/scenario-names.txt"
else
    bad "JobloopAbsent: not loaded, or its selector job=\"jobloop\" changed: $expr"
fi

missing=$(sort "$work/scenario-names.txt" | comm -23 "$work/rule-names.txt" -)
[ -z "$missing" ] && ok "every loaded alert has a scenario" || bad "alerts without a scenario: $missing"

# Prometheus' own rule evaluation: alerts whose unscaled expression holds
# must be pending (or firing, for a slow run) with the right instance.
alert_active() {
    curl -sf "$PROM/api/v1/alerts" |
        jq -e --arg n "$1" --arg i "$2" \
            '[.data.alerts[] | select(.labels.alertname == $n and .labels.instance == $i and (.state == "pending" or .state == "firing"))] | length > 0'
}
for pair in JobloopDown:dead JobloopDown:dead2 JobloopTokenExpired:expired JobloopUnhealthy:unhealthy \
    JobloopFailing:failing JobloopFailureRatioHigh:flaky JobloopHookFailing:healthy JobloopUnhealthy:halt-1; do
    alert=${pair%%:*} name=${pair#*:}
    if wait_until 20 "$alert active" alert_active "$alert" "$(inst "$name")"; then
        ok "$alert is $(curl -sf "$PROM/api/v1/alerts" | jq -r --arg n "$alert" '[.data.alerts[] | select(.labels.alertname == $n) | .state] | first') for $name in Prometheus"
    else
        bad "$alert is not pending or firing for $name in Prometheus"
    fi
done
for pair in JobloopUnhealthy:expired JobloopTokenExpired:unhealthy JobloopFailing:unhealthy JobloopFailing:flaky; do
    alert=${pair%%:*} name=${pair#*:}
    if alert_active "$alert" "$(inst "$name")" >/dev/null; then
        bad "$alert is active for $name, which must not fire it"
    else
        ok "$alert is not active for $name"
    fi
done

# ---------------------------------------------------------- (d) exemplars
echo
echo "==> (d) exemplars link the scraped series to the runs' traces"
# exemplars_of SERIES INSTANCE: "trace_id span_id" of each exemplar Prometheus
# stored for SERIES of INSTANCE over the last ten minutes.
exemplars_of() {
    curl -sf --max-time 5 -G --data-urlencode "query=$1{instance=\"$(inst "$2")\"}" \
        --data-urlencode "start=$(($(date +%s) - 600))" --data-urlencode "end=$(($(date +%s) + 60))" \
        "$PROM/api/v1/query_exemplars" |
        jq -r '.data[]?.exemplars[]? | "\(.labels.trace_id) \(.labels.span_id)"' | sort -u
}
# The ids of every run-log header of an instance, "trace_id span_id" lines.
headers_of() {
    head -q -n 1 "$work/$1"/logs/runs/*.log 2>/dev/null |
        sed -nE 's/^# jobloop iteration=[0-9]+ trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16}) .*/\1 \2/p' | sort -u
}
has_exemplars() { [ -n "$(exemplars_of "$1" "$2")" ]; }
for name in unhealthy stalled; do
    for series in jobloop_iteration_duration_seconds_bucket jobloop_iterations_total; do
        if ! wait_until 20 "exemplars of $series for $name" has_exemplars "$series" "$name"; then
            bad "$name: Prometheus stored no exemplar for $series"
            continue
        fi
        unknown=$(comm -23 <(exemplars_of "$series" "$name") <(headers_of "$name"))
        if [ -z "$unknown" ]; then
            ok "$name: $series exemplars ($(exemplars_of "$series" "$name" | wc -l)) carry run-log header ids"
        else
            bad "$name: $series exemplars with ids of no run-log header: $unknown"
        fi
    done
done

# -------------------------------------------------------- (e) alertmanager
echo
echo "==> (e) Alertmanager groups, inhibits and delivers to the webhook"
# notified JQ_CONDITION: some notification the webhook received satisfies it.
notified() { jq -e -s "[.[] | select($1)] | length > 0" "$work/webhook.jsonl" >/dev/null; }
# delivered: "alertname namespace pod" of every alert delivered so far.
delivered() { jq -r -s '.[].alerts[] | "\(.labels.alertname) \(.labels.namespace) \(.labels.pod)"' "$work/webhook.jsonl" | sort -u; }
expect_notified() {
    local what=$1 cond=$2
    if wait_until 40 "$what" notified "$cond"; then
        ok "webhook received $what"
    else
        bad "webhook never received $what; delivered: $(delivered | tr '\n' ';')"
    fi
}
expect_notified "JobloopFleetHalted for fleet-a (critical)" \
    '.commonLabels.alertname == "JobloopFleetHalted" and .commonLabels.namespace == "fleet-a" and .commonLabels.severity == "critical"'
expect_notified "the two JobloopDown of namespace e2e in one notification (grouped)" \
    '.groupLabels.alertname == "JobloopDown" and .groupLabels.namespace == "e2e" and ([.alerts[].labels.pod] | sort) == ["dead", "dead2"]'
expect_notified "JobloopUnhealthy of namespace e2e (no fleet alert there: not inhibited)" \
    '.commonLabels.alertname == "JobloopUnhealthy" and .commonLabels.namespace == "e2e" and .alerts[0].labels.pod == "unhealthy"'
# The three per-pod halts of fleet-a reached Alertmanager and are inhibited
# by the fleet alert (Alertmanager's own API says so) ...
inhibited_pods() {
    curl -sf -G --data-urlencode 'filter=alertname="JobloopUnhealthy"' --data-urlencode 'filter=namespace="fleet-a"' \
        --data-urlencode inhibited=true "$AM/api/v2/alerts" |
        jq -r '[.[] | select(.status.state == "suppressed" and (.status.inhibitedBy | length) > 0) | .labels.pod] | sort | join(",")'
}
three_inhibited() { [ "$(inhibited_pods)" = "halt-1,halt-2,halt-3" ]; }
if wait_until 40 "fleet-a's JobloopUnhealthy inhibited" three_inhibited; then
    ok "Alertmanager holds back JobloopUnhealthy of halt-1, halt-2, halt-3 (inhibited by JobloopFleetHalted)"
else
    bad "Alertmanager does not show fleet-a's JobloopUnhealthy as inhibited: '$(inhibited_pods)'"
fi
# ... and none of them is ever delivered. They are in Alertmanager (above),
# as the delivered e2e halt was; watch three more group intervals (2 s) to
# show they stay back.
leaked() { delivered | grep -q '^JobloopUnhealthy fleet-a '; }
deadline=$((SECONDS + 6))
while [ "$SECONDS" -lt "$deadline" ] && ! leaked; do sleep 0.5; done
if leaked; then
    bad "a JobloopUnhealthy of fleet-a was delivered despite the fleet alert: $(delivered | grep fleet-a | tr '\n' ';')"
else
    ok "no JobloopUnhealthy of fleet-a delivered ($(wc -l <"$work/webhook.jsonl") notifications received)"
fi

echo
[ "$failed" -eq 0 ] || diagnose
echo "took ${SECONDS}s"
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
