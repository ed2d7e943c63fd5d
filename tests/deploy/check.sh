#!/usr/bin/env bash
# Offline checks of everything an operator deploys: the monitoring mixin and
# the files rendered from it (alert rules, dashboard, PrometheusRule: no
# drift), the rules' unit tests and runbook, Grafana provisioning, the
# docker-compose stack and Dockerfile (without a Docker engine), and the
# Kubernetes manifests (core kinds by kubernetes-validate, the operator's
# kinds by the JSON schemas of tests/deploy/schemas/).
#
#   tests/deploy/check.sh          # from the repository root (or anywhere)
#
# Needs: promtool and amtool (Debian: prometheus, prometheus-alertmanager),
# jsonnet, jq, docker-compose (Debian packages), python3 with PyYAML and
# jsonschema, and kubernetes-validate (PyPI; it brings both modules). Prints one line per check, runs them all, and
# exits 1 if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

passed=0
failed=0
failed_names=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run NAME COMMAND...: runs one check, prints its output indented, counts it.
run() {
    local name=$1
    shift
    printf '==> %s\n' "$name"
    if "$@" >"$tmp/out" 2>&1; then
        sed 's/^/    /' "$tmp/out"
        printf 'PASS %s\n' "$name"
        passed=$((passed + 1))
    else
        sed 's/^/    /' "$tmp/out"
        printf 'FAIL %s\n' "$name"
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}

need_tools() {
    local missing=0 tool
    for tool in promtool amtool jsonnet jq docker-compose kubernetes-validate python3; do
        if command -v "$tool" >/dev/null 2>&1; then
            echo "found $tool: $(command -v "$tool")"
        else
            echo "MISSING $tool"
            missing=1
        fi
    done
    if ! python3 -c 'import yaml, jsonschema' 2>/dev/null; then
        echo "MISSING python3 module yaml (PyYAML) or jsonschema"
        missing=1
    fi
    if [ "$missing" = 1 ]; then
        echo "install: apt-get install -y --no-install-recommends prometheus prometheus-alertmanager jsonnet jq docker-compose"
        echo "         pip install kubernetes-validate   (brings PyYAML)"
        return 1
    fi
}

dashboard_shape() {
    local d=dashboards/jobloop.json
    jq empty "$d" || return 1
    echo "parses as JSON"
    [ "$(jq -r .uid "$d")" = jobloop ] || { echo "uid is not 'jobloop'"; return 1; }
    echo "fixed uid: jobloop"
    [ "$(jq -r '.schemaVersion >= 36' "$d")" = true ] || { echo "schemaVersion < 36 (Grafana 10+)"; return 1; }
    echo "schemaVersion $(jq .schemaVersion "$d")"
    local vars
    vars=$(jq -r '[.templating.list[].name] | join(",")' "$d")
    [ "$vars" = "datasource,namespace,job,pod" ] || { echo "variables are '$vars', want datasource,namespace,job,pod"; return 1; }
    echo "variables: $vars"
    [ "$(jq -r '.templating.list[0] | .type + "/" + .query' "$d")" = datasource/prometheus ] \
        || { echo "\$datasource is not a Prometheus data source variable"; return 1; }
    for f in dashboards/provisioning/*.yaml; do
        python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f" || return 1
        echo "$f parses"
    done
}

compose_prometheus_config() {
    # The compose config names its rule files by their path inside the
    # container; point it at the repository's file for promtool.
    sed "s#/etc/prometheus/rules/\*\.yml#$PWD/alerts/jobloop.rules.yml#" deploy/compose/prometheus.yml \
        >"$tmp/prometheus.yml"
    promtool check config "$tmp/prometheus.yml"
}

kubernetes_validate() {
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        echo "kubernetes-validate is not on PATH: pip install kubernetes-validate"
        return 1
    fi
    kubernetes-validate --strict deploy/kubernetes/*.yaml deploy/kubernetes/examples/*.yaml || return 1
    # kubernetes-validate only warns about kinds it has no schema for
    # (the operator's PodMonitor and PrometheusRule); lint.py crds checks
    # those against tests/deploy/schemas/, and promtool the PrometheusRule's rules.
    local out
    out=$(kubernetes-validate --strict deploy/kubernetes/*.yaml deploy/kubernetes/examples/*.yaml 2>&1)
    if grep -E "Couldn't find schema" <<<"$out" | grep -vE "kind (PodMonitor|PrometheusRule) " ; then
        echo "unexpected kind without schema"
        return 1
    fi
}

docker_context() {
    # No Docker engine here: check instead that the build context (the
    # repository minus .dockerignore) holds what the Dockerfile's
    # `cargo build --release --locked` needs: every target the manifest
    # names, and a Cargo.lock that matches Cargo.toml.
    python3 tests/deploy/lint.py docker-context "$tmp/context" || return 1
    echo "context: $(find "$tmp/context" -type f | wc -l) files, $(du -sh "$tmp/context" | cut -f1)"
    if ! command -v cargo >/dev/null 2>&1; then
        echo "skipped the cargo part: cargo not on PATH"
        return 0
    fi
    (cd "$tmp/context" && cargo metadata --locked --quiet --format-version 1 >"$tmp/metadata.json") || return 1
    echo "cargo metadata --locked resolves in the build context"
    local src missing=0
    while read -r src; do
        if [ -e "$src" ]; then
            echo "target source present: ${src#"$tmp/context/"}"
        else
            echo "target source missing from the build context: ${src#"$tmp/context/"}"
            missing=1
        fi
    done < <(jq -r '.packages[] | select(.source == null) | .targets[].src_path' "$tmp/metadata.json")
    [ "$missing" = 0 ]
}

prometheusrule_rules() {
    python3 tests/deploy/lint.py prometheusrule-spec "$tmp/prometheusrule.rules.yml" &&
        promtool check rules "$tmp/prometheusrule.rules.yml"
}

run "tools are installed" need_tools
run "mixin renders exactly the shipped alerts, dashboard and PrometheusRule (no drift)" python3 scripts/render-mixin.py --check
run "mixin: jsonnetfmt --test (formatted)" bash -c 'jsonnetfmt --test mixin/*.libsonnet mixin/*.jsonnet && echo formatted'
run "promtool check rules alerts/jobloop.rules.yml (and the annotation-scraping rendering)" \
    promtool check rules alerts/jobloop.rules.yml alerts/tests/rules/annotation-scraping.rules.yml
run "promtool test rules alerts/tests/*.yml" promtool test rules alerts/tests/*.yml
run "alerts: selector on every series, labels, annotations, runbook URLs and sections, inhibit rule, unit-test coverage" \
    python3 tests/deploy/lint.py alerts
run "dashboard: JSON, fixed uid, variables datasource/namespace/job/pod" dashboard_shape
run "dashboard: panel queries use only metrics of tests/fixtures/metrics.txt (and up)" python3 tests/deploy/lint.py dashboard
run "docker-compose -f docker-compose.yml config --quiet" docker-compose -f docker-compose.yml config --quiet
run "compose: mounted files exist, ports and env agree with SPEC, Dockerfile" python3 tests/deploy/lint.py compose
run "Dockerfile build context: cargo --locked resolves with .dockerignore applied" docker_context
run "promtool check config deploy/compose/prometheus.yml (with the rules)" compose_prometheus_config
run "amtool check-config deploy/compose/alertmanager.yml" amtool check-config deploy/compose/alertmanager.yml
run "kubernetes-validate --strict deploy/kubernetes/*.yaml" kubernetes_validate
run "kubernetes: labels, env order, image, probes, drain and grace period, PDB, HPA, no Secret, scrape" \
    python3 tests/deploy/lint.py kubernetes
run "kubernetes: PodMonitor and PrometheusRule match tests/deploy/schemas/" python3 tests/deploy/lint.py crds
run "PrometheusRule rules pass promtool check rules" prometheusrule_rules
run "shell scripts parse (bash -n)" bash -c 'for f in tests/deploy/*.sh; do bash -n "$f" && echo "$f"; done'

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failed_names[@]}"
fi
echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
