#!/usr/bin/env bash
# End-to-end test of what operators deploy, against a real Prometheus.
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
#   dead       a port nobody listens on                                      -> scrape fails
#
# and a Prometheus (the Debian package's /usr/bin/prometheus, or $PROMETHEUS)
# on 127.0.0.1 with a generated config: scrape and rule evaluation every 1 s,
# alerts/jobloop.rules.yml loaded. Every wait polls a condition with a
# deadline. Then, through Prometheus' HTTP API, it checks that
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
#       one of that instance's run-log headers.
# At the end Prometheus and every jobloop are stopped by their pids.
#
# Scaling in (c): a test cannot wait for thresholds of minutes or an hour,
# so for three alerts the expression is evaluated with one number replaced,
# listed in the `scenario` lines below (JobloopStalled's 600 s margin -> 2 s,
# JobloopIterationTooLong's 3600 s -> 2 s, JobloopFleetHalted's 50% -> 25%,
# since 2 of the 6 instances here are halted). The replaced text must occur
# in the loaded expression, or the check fails (so a changed rule cannot
# silently skip it). `for:` durations are not waited for: the promtool unit
# tests in alerts/tests/ cover them.
#
# Needs: prometheus, promtool, curl, jq, python3 (for free ports only).
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
for tool in "$PROMETHEUS" promtool curl jq python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

# Nothing from the caller's environment may redirect jobloop's settings or
# traces.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(AGENT_|OTEL_|TRACEPARENT$)' || true)

work=$(mktemp -d /tmp/jobloop-e2e.XXXXXX)
pids=()
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
chmod +x "$work/jobs/"*.sh

# ------------------------------------------------------------- instances
declare -A PORT
names=()

# start NAME JOB [VAR=VALUE...]
start() {
    local name=$1 job=$2
    shift 2
    local port
    port=$(free_port)
    PORT[$name]=$port
    names+=("$name")
    mkdir -p "$work/$name"
    (
        cd "$work/$name"
        exec env AGENT_LISTEN="127.0.0.1:$port" AGENT_LOG_DIR="$work/$name/logs" \
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
PORT[dead]=$(free_port)
echo "dead target: 127.0.0.1:${PORT[dead]} (nothing listens there)"

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

if curl -sf "http://$(inst healthy)/metrics" >"$work/healthy.metrics" &&
    promtool check metrics <"$work/healthy.metrics" >"$work/check-metrics.out" 2>&1; then
    ok "healthy: /metrics passes promtool check metrics"
else
    bad "healthy: /metrics fails promtool check metrics: $(head -c 800 "$work/check-metrics.out" 2>/dev/null)"
fi

# ------------------------------------------------------------ prometheus
PPORT=$(free_port)
PROM="http://127.0.0.1:$PPORT"
{
    echo "global:"
    echo "  scrape_interval: 1s"
    echo "  scrape_timeout: 1s"
    echo "  evaluation_interval: 1s"
    echo "rule_files:"
    echo "  - $ROOT/alerts/jobloop.rules.yml"
    echo "scrape_configs:"
    echo "  - job_name: jobloop"
    echo "    static_configs:"
    echo "      - targets:"
    for name in "${names[@]}" dead; do
        echo "          - $(inst "$name")"
    done
} >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
    --web.listen-address="127.0.0.1:$PPORT" --log.level=warn \
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
    "count(up{job=\"jobloop\"} == 1) == $n_jobloops and count(up{job=\"jobloop\"} == 0) == 1"; then
    ok "Prometheus scrapes $n_jobloops jobloops (up 1) and the dead target (up 0)"
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
# Grafana's variables, as they expand with "All" selected and a 1 s scrape
# interval ($__rate_interval is at least four scrape intervals).
substitute() {
    sed -e 's/\${job}/jobloop/g; s/\$job/jobloop/g' \
        -e 's/\${instance}/.+/g; s/\$instance/.+/g' \
        -e 's/\$__rate_interval/10s/g; s/\$__interval/2s/g; s/\$__range/5m/g' \
        -e 's/\${datasource}//g'
}
# The variables' own queries: label_values(METRIC{MATCHERS}, LABEL), asked the
# way Grafana asks them (/api/v1/label/LABEL/values?match[]=...).
variable_values() {
    local def=$1 metric label
    metric=$(sed -E 's/^label_values\((.*), *([a-z_]+)\)$/\1/' <<<"$def" | substitute)
    label=$(sed -E 's/^label_values\((.*), *([a-z_]+)\)$/\2/' <<<"$def")
    curl -sf -G --data-urlencode "match[]=$metric" "$PROM/api/v1/label/$label/values" | jq -r '.data[]'
}
for var in job instance; do
    def=$(jq -r --arg v "$var" '.templating.list[] | select(.name == $v) | .definition' dashboards/jobloop.json)
    want=$([ "$var" = job ] && echo 1 || echo "$n_jobloops")
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
scenario JobloopStalled stalled long '+ 600' '+ 2'
scenario JobloopIterationTooLong long stalled '> 3600' '> 2'
scenario JobloopHookFailing healthy failing
scenario JobloopFleetHalted job job '>= 0.5' '>= 0.25'

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
for pair in JobloopDown:dead JobloopTokenExpired:expired JobloopUnhealthy:unhealthy \
    JobloopFailing:failing JobloopHookFailing:healthy; do
    alert=${pair%%:*} name=${pair#*:}
    if wait_until 20 "$alert active" alert_active "$alert" "$(inst "$name")"; then
        ok "$alert is $(curl -sf "$PROM/api/v1/alerts" | jq -r --arg n "$alert" '[.data.alerts[] | select(.labels.alertname == $n) | .state] | first') for $name in Prometheus"
    else
        bad "$alert is not pending or firing for $name in Prometheus"
    fi
done
for pair in JobloopUnhealthy:expired JobloopTokenExpired:unhealthy JobloopFailing:unhealthy; do
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

echo
[ "$failed" -eq 0 ] || diagnose
echo "took ${SECONDS}s"
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
