#!/usr/bin/env python3
"""Offline checks of the operator-facing files, called by tests/deploy/check.sh.

    python3 tests/deploy/lint.py alerts      # rules vs runbook vs unit tests
    python3 tests/deploy/lint.py dashboard   # panel queries use only known metrics
    python3 tests/deploy/lint.py compose     # compose mounts exist, ports/env agree with SPEC
    python3 tests/deploy/lint.py kubernetes  # probes, grace, labels, PDB, HPA, security, scrape
    python3 tests/deploy/lint.py crds        # PodMonitor and PrometheusRule against tests/deploy/schemas/
    python3 tests/deploy/lint.py prometheusrule-spec OUT  # write the PrometheusRule's spec as a rule file
    python3 tests/deploy/lint.py docker-context OUT       # copy the Docker build context to OUT

Each prints one `ok` or `FAIL` line per fact it checks and exits 1 if any
failed. Needs python3 and PyYAML (crds: jsonschema too). Reads nothing
outside the repository.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "deploy"
PORT = 9464  # SPEC section 1: AGENT_LISTEN default 0.0.0.0:9464

failures = 0


def ok(msg):
    print(f"ok   {msg}")


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL {msg}")


def expect(cond, msg):
    (ok if cond else fail)(msg)
    return cond


def load_yaml(rel):
    return yaml.safe_load((ROOT / rel).read_text())


def metric_names():
    """Metric family -> type, from the TYPE lines of the golden exposition
    tests/fixtures/metrics.txt (which the black-box test
    metrics::the_exposition_matches_the_golden_file keeps equal to a real
    scrape): SPEC section 7's names, the extra counters and process_*."""
    names = {}
    for line in (ROOT / "tests/fixtures/metrics.txt").read_text().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names[name] = kind
    if not names:
        fail("tests/fixtures/metrics.txt has no TYPE lines")
    return names


def settings():
    return {l.strip() for l in (HERE / "settings.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")}


def crate_version():
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    return m.group(1) if m else None


def seconds(value):
    """SPEC section 1 durations: bare integer = seconds, or 500ms / 25s / 5m / 1h."""
    value = str(value).strip()
    if re.fullmatch(r"\d+", value):
        return float(value)
    total, pos = 0.0, 0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise ValueError(f"not a duration: {value!r}")
    return total


def github_anchor(heading):
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


# --------------------------------------------------------------------- alerts
def selector_everywhere(name, expr, selector):
    """Every series selector of EXPR starts with the mixin's SELECTOR."""
    for metric in promql_metrics(expr):
        for m in re.finditer(rf"(?<![\w:]){re.escape(metric)}(?![\w:])", expr):
            if not expr[m.end():].startswith("{" + selector):
                fail(f"{name}: {metric} without the selector {{{selector}}}: ...{expr[m.start():m.end() + 40]}")
                return False
    return True


def check_alerts():
    rules = load_yaml("alerts/jobloop.rules.yml")
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    expect(len(alerts) >= 11, f"{len(alerts)} alerts in alerts/jobloop.rules.yml")
    required = {"JobloopDown", "JobloopUnhealthy", "JobloopTokenExpired", "JobloopFailing", "JobloopStalled",
                "JobloopIterationTooLong", "JobloopHookFailing", "JobloopFleetHalted", "JobloopAbsent",
                "JobloopFailureRatioHigh", "JobloopNoRecentSuccess", "JobloopWriteErrors"}
    names = [a["alert"] for a in alerts]
    expect(required <= set(names), f"the alerts of STYLE section 7 exist (missing: {sorted(required - set(names))})")
    expect(len(names) == len(set(names)), "alert names are unique")

    runbook = (ROOT / "alerts/runbook.md").read_text()
    headings = re.findall(r"^#{2,4} (.+)$", runbook, re.M)
    anchors = {github_anchor(h) for h in headings}
    sections = {h.strip() for h in re.findall(r"^## (.+)$", runbook, re.M)}

    tests = {}
    for path in sorted((ROOT / "alerts/tests").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for t in doc.get("tests", []):
            for case in t.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "silent"
                tests.setdefault(case["alertname"], {"fires": 0, "silent": 0})[kind] += 1
                for exp in case.get("exp_alerts") or []:
                    ann = exp.get("exp_annotations", {})
                    if set(ann) != {"summary", "description", "runbook_url"} or "severity" not in exp.get("exp_labels", {}):
                        fail(f"{path.relative_to(ROOT)}: a firing case of {case['alertname']} lacks full labels/annotations")

    for a in alerts:
        n = a["alert"]
        labels, ann = a.get("labels", {}), a.get("annotations", {})
        expect(re.fullmatch(r"Jobloop[A-Z][A-Za-z]+", n) is not None, f"{n}: CamelCase with prefix Jobloop")
        expect(labels.get("severity") in {"critical", "warning", "info"}, f"{n}: severity {labels.get('severity')!r}")
        s = ann.get("summary", "")
        expect(s.endswith(".") and "{{" not in s, f"{n}: summary is static and ends in a period")
        expect("{{" in ann.get("description", ""), f"{n}: description is templated")
        url = ann.get("runbook_url", "")
        expect(re.fullmatch(rf"https://[^\s#]+#{n.lower()}", url) is not None,
               f"{n}: runbook_url is an absolute URL to its anchor ({url!r})")
        selector_everywhere(n, a["expr"], 'job="jobloop"')
        expect(n in sections and n.lower() in anchors, f"{n}: runbook section '## {n}' (anchor #{n.lower()})")
        expect(bool(a.get("for")), f"{n}: has a for: duration")
        t = tests.get(n, {"fires": 0, "silent": 0})
        expect(t["fires"] >= 1 and t["silent"] >= 2,
               f"{n}: unit tests with {t['fires']} firing and {t['silent']} silent cases (need >= 1 and >= 2)")
    severities = {a["alert"]: a["labels"]["severity"] for a in alerts}
    expect(severities.get("JobloopFleetHalted") == "critical"
           and all(severities.get(n) == "warning" for n in ("JobloopUnhealthy", "JobloopTokenExpired", "JobloopDown")),
           "severities: per-instance halts and JobloopDown warning, JobloopFleetHalted critical")
    prefixes = {a["annotations"]["runbook_url"].split("#")[0] for a in alerts}
    expect(len(prefixes) == 1, f"every runbook_url points into one runbook ({sorted(prefixes)})")
    other = load_yaml("alerts/tests/rules/annotation-scraping.rules.yml")
    sel = 'job="kubernetes-pods", app_kubernetes_io_name="jobloop"'
    ok_all = all([selector_everywhere(r["alert"], r["expr"], sel) for g in other["groups"] for r in g["rules"]])
    expect(ok_all, "the annotation-scraping rendering puts its selector on every series too")
    am = load_yaml("deploy/compose/alertmanager.yml")
    inhibit = [r for r in am.get("inhibit_rules", [])
               if "alertname = JobloopFleetHalted" in r.get("source_matchers", [])]
    targets = " ".join(" ".join(r.get("target_matchers", [])) for r in inhibit)
    expect(bool(inhibit) and all(n in targets for n in ("JobloopUnhealthy", "JobloopTokenExpired"))
           and all({"namespace", "job"} <= set(r.get("equal", [])) for r in inhibit),
           "alertmanager.yml: JobloopFleetHalted inhibits the per-instance halts of the same namespace and job")
    for sec in sections:
        if sec.startswith("Jobloop"):
            expect(sec in names, f"runbook section {sec} belongs to an alert")
    links = set(re.findall(r"\]\(#([^)]+)\)", runbook))
    missing = sorted(l for l in links if l not in anchors)
    expect(not missing, f"runbook's internal links resolve (broken: {missing})")


# ------------------------------------------------------------------ dashboard
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan", "e"}


def promql_metrics(expr):
    """Metric names in a PromQL expression (a small lexer, not a parser)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "{}", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", "[]", e)                       # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("(") or word.startswith("$"):
            continue
        if m.start() > 0 and e[m.start() - 1] in "$.":
            continue
        names.add(word)
    return names


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def check_dashboard():
    dash = json.loads((ROOT / "dashboards/jobloop.json").read_text())
    known = metric_names()
    allowed = set(known)
    for n, kind in known.items():
        if kind == "histogram":
            allowed |= {f"{n}_bucket", f"{n}_sum", f"{n}_count"}
    used, ids, boxes = set(), set(), []
    for p in panels_of(dash):
        title = p.get("title", "?")
        if p.get("id") in ids:
            fail(f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        g = p["gridPos"]
        boxes.append((title, g["x"], g["y"], g["w"], g["h"]))
        expect(bool(p.get("description")), f"panel {title!r}: has a description")
        for t in p.get("targets", []):
            ds = (t.get("datasource") or p.get("datasource") or {}).get("uid")
            expect(ds == "${datasource}", f"panel {title!r} {t.get('refId')}: data source is ${{datasource}}")
            for name in promql_metrics(t["expr"]):
                is_known = name in allowed or name == "up"
                expect(is_known, f"panel {title!r} {t.get('refId')}: metric {name} is in tests/fixtures/metrics.txt (or is up)")
                used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in known else name)
            if "$job" not in t["expr"] or "$namespace" not in t["expr"]:
                fail(f"panel {title!r} {t.get('refId')}: query does not filter on $namespace and $job")
            for window in re.findall(r"\[([^\]]*)\]", t["expr"]):
                expect(window == "$__rate_interval", f"panel {title!r} {t.get('refId')}: range [{window}] is $__rate_interval")
            legend = t.get("legendFormat", "")
            if "{{instance}}" in legend:
                fail(f"panel {title!r} {t.get('refId')}: legend shows the instance (a pod IP), not the pod")
            if "by (" in t["expr"] and "instance" in t["expr"].split("by (")[1].split(")")[0]:
                expect("{{pod}}" in legend, f"panel {title!r} {t.get('refId')}: per-instance legend names the pod")
    for i, (t1, x1, y1, w1, h1) in enumerate(boxes):
        for t2, x2, y2, w2, h2 in boxes[i + 1:]:
            if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                fail(f"panels {t1!r} and {t2!r} overlap")
    exprs = [t["expr"] for p in panels_of(dash) for t in p.get("targets", [])]
    expect(any("rate(jobloop_busy_seconds_total{" in e for e in exprs), "dashboard: a utilisation panel (rate of jobloop_busy_seconds_total)")
    expect(any("jobloop_job_cpu_seconds_total{" in e for e in exprs) and any("jobloop_job_max_rss_bytes{" in e for e in exprs),
           "dashboard: per-run cost panels (job CPU, job peak memory)")
    vars_ = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("namespace", "pod"):
        v = vars_.get(name, {})
        expect(v.get("type") == "query" and v.get("includeAll") and v.get("allValue") == ".*",
               f"dashboard: variable ${name} (all = .*, which also matches a missing label)")
    anns = dash.get("annotations", {}).get("list", [])
    expect(any("ALERTS{" in a.get("expr", "") for a in anns), "dashboard: firing alerts as annotations")
    unused = sorted(n for n in known if n not in used and n.startswith("jobloop_"))
    print(f"info metrics shown on no panel: {', '.join(unused) or 'none'}")
    ds = load_yaml("dashboards/provisioning/datasources.yaml")
    uids = {d["uid"]: d["type"] for d in ds["datasources"]}
    expect(uids.get("prometheus") == "prometheus", "provisioning: Prometheus data source with uid 'prometheus'")
    prom = next((d for d in ds["datasources"] if d["uid"] == "prometheus"), {})
    expect("timeInterval" not in (prom.get("jsonData") or {}),
           "provisioning: no hard-coded timeInterval ($__rate_interval follows the real scrape interval)")
    expect(any(t in {"jaeger", "tempo", "zipkin"} for t in uids.values()), "provisioning: a trace data source")
    # Exemplars (SPEC section 7): the duration panel asks for them, and the
    # Prometheus data source links their trace_id to the trace data source.
    duration = [t for p in panels_of(dash) for t in p.get("targets", [])
                if "jobloop_iteration_duration_seconds_bucket" in t.get("expr", "") and t.get("exemplar") is True]
    expect(bool(duration), "dashboard: a duration query shows exemplars (\"exemplar\": true)")
    prom_ds = next((d for d in ds["datasources"] if d["uid"] == "prometheus"), {})
    links = (prom_ds.get("jsonData") or {}).get("exemplarTraceIdDestinations") or []
    expect(any(l.get("name") == "trace_id" and uids.get(l.get("datasourceUid")) in {"jaeger", "tempo", "zipkin"}
               for l in links),
           f"provisioning: Prometheus links exemplar label trace_id to the trace data source ({links})")
    prov = load_yaml("dashboards/provisioning/dashboards.yaml")
    paths = [p["options"]["path"] for p in prov["providers"]]
    expect(len(paths) == 1, f"provisioning: one dashboard provider ({paths})")


# -------------------------------------------------------------------- compose
def dockerignored(rel, patterns):
    first = rel.split("/")[0]
    return any(p.strip("/") in (rel, first) for p in patterns)


DOCKERFILE_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                           "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def check_dockerfile(text):
    """The Dockerfile's shape, since no Docker engine can build it here."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    unknown = sorted({w for w, _ in instructions if w not in DOCKERFILE_INSTRUCTIONS})
    expect(not unknown, f"Dockerfile: only known instructions (unknown: {unknown})")
    stages = [m.group(1) for w, r in instructions if w == "FROM" for m in [re.search(r"\bAS\s+(\S+)", r, re.I)] if m]
    froms = [r.split()[0] for w, r in instructions if w == "FROM"]
    expect(len(froms) >= 2, f"Dockerfile: multi-stage ({froms})")
    for w, r in instructions:
        for ref in re.findall(r"--from=(\S+)", r):
            expect(ref in stages, f"Dockerfile: COPY --from={ref} names a stage")
        if w == "COPY":
            expect(len([a for a in r.split() if not a.startswith("--")]) >= 2, f"Dockerfile: COPY {r} has a destination")
        if w == "HEALTHCHECK":
            flags = re.findall(r"--([a-z-]+)=", r)
            expect(set(flags) <= {"interval", "timeout", "start-period", "start-interval", "retries"},
                   f"Dockerfile: HEALTHCHECK flags {flags}")
            expect(" CMD " in f" {r} ", "Dockerfile: HEALTHCHECK has a CMD")
    entry = [r for w, r in instructions if w == "ENTRYPOINT"]
    expect(entry and json.loads(entry[-1])[0] == "jobloop", f"Dockerfile: jobloop is the entrypoint ({entry})")
    cmd = [r for w, r in instructions if w == "CMD"]
    copied = [r.split()[-1] for w, r in instructions if w == "COPY"]
    demo = json.loads(cmd[-1])[-1] if cmd else ""
    expect(bool(cmd) and demo in copied, f"Dockerfile: the default command runs the demo job it copies ({demo})")
    expect("cargo build --release --locked" in joined, "Dockerfile: builds with cargo build --release --locked")


def check_compose():
    compose = load_yaml("docker-compose.yml")
    services = compose["services"]
    known = settings()
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")):
                expect((ROOT / src).exists(), f"compose {name}: mounted {src} exists")
        build = svc.get("build")
        if build:
            ctx = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = ctx / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            expect(dockerfile.is_file(), f"compose {name}: {dockerfile.relative_to(ROOT)} exists")
            ignore = [l.strip() for l in (ctx / ".dockerignore").read_text().splitlines()
                      if l.strip() and not l.startswith("#")] if (ctx / ".dockerignore").exists() else []
            text = dockerfile.read_text()
            for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
                parts = [p for p in line.split() if not p.startswith("--")]
                if "--from" in line:
                    continue
                for src in parts[:-1]:
                    if src == ".":
                        continue
                    expect((ctx / src).exists() and not dockerignored(src, ignore),
                           f"Dockerfile: COPY source {src} exists and is not in .dockerignore")
            check_dockerfile(text)
            expect(re.search(rf"^EXPOSE\s+{PORT}\b", text, re.M) is not None, f"Dockerfile: EXPOSE {PORT}")
            expect(re.search(rf"^HEALTHCHECK .*\n?.*127\.0\.0\.1:{PORT}", text, re.M) is not None,
                   f"Dockerfile: HEALTHCHECK asks the daemon on port {PORT}")
            expect(re.search(r"^USER\s+(?!0\b|root\b)\S+", text, re.M) is not None, "Dockerfile: runs as a non-root USER")
            for var in re.findall(r"\b(AGENT_[A-Z_]+)=", text):
                expect(var in known, f"Dockerfile: {var} is a SPEC section 1 setting")

    jl = services.get("jobloop", {})
    env = jl.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    for var in env:
        if var.startswith("AGENT_"):
            expect(var in known, f"compose jobloop: {var} is a SPEC section 1 setting")
    listen = str(env.get("AGENT_LISTEN", f"0.0.0.0:{PORT}"))
    expect(listen.endswith(f":{PORT}"), f"compose jobloop: AGENT_LISTEN {listen} uses port {PORT}")
    ports = [str(p) for p in jl.get("ports", [])]
    expect(any(p.split(":")[-1].split("/")[0] == str(PORT) for p in ports), f"compose jobloop: publishes {PORT} ({ports})")
    grace = seconds(env.get("AGENT_SHUTDOWN_GRACE", "25s"))
    kill = seconds(env.get("AGENT_KILL_GRACE", "10s"))
    stop = seconds(jl.get("stop_grace_period", "10s"))
    expect(stop >= grace + kill + 5, f"compose jobloop: stop_grace_period {stop:g}s >= AGENT_SHUTDOWN_GRACE {grace:g}s"
           f" + AGENT_KILL_GRACE {kill:g}s + 5s (SPEC section 5)")
    expect(str(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).endswith(":4317"),
           "compose jobloop: exports OTLP (gRPC, 4317) to the trace backend")
    expect(any("jaeger" in str(s.get("image", "")) for s in services.values()), "compose: a Jaeger service")

    prom = load_yaml("deploy/compose/prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for sc in jobs.get("jobloop", {}).get("static_configs", []) for t in sc["targets"]]
    expect(targets == [f"jobloop:{PORT}"], f"prometheus.yml: job 'jobloop' scrapes jobloop:{PORT} ({targets})")
    mounts = [v for v in services["prometheus"]["volumes"] if v.startswith("./alerts/jobloop.rules.yml:")]
    rule_glob = prom["rule_files"][0]
    in_glob = bool(mounts) and pathlib.PurePosixPath(mounts[0].split(":")[1]).match(rule_glob)
    expect(in_glob, f"compose prometheus: alerts/jobloop.rules.yml is mounted where rule_files ({rule_glob}) finds it")
    expect("--enable-feature=exemplar-storage" in services["prometheus"].get("command", []),
           "compose prometheus: runs with --enable-feature=exemplar-storage (keeps jobloop's exemplars)")
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    expect("alertmanager" in services and am == ["alertmanager:9093"], "prometheus.yml: sends to the Alertmanager service")

    graf = services["grafana"]
    genv = graf.get("environment", {})
    expect(str(genv.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "true", "compose grafana: anonymous viewing on")
    prov_path = load_yaml("dashboards/provisioning/dashboards.yaml")["providers"][0]["options"]["path"]
    dash_mount = [v for v in graf["volumes"] if v.startswith("./dashboards/jobloop.json:")]
    expect(bool(dash_mount) and dash_mount[0].split(":")[1].startswith(prov_path + "/"),
           f"compose grafana: the dashboard is mounted under the provider path {prov_path}")
    ds = load_yaml("dashboards/provisioning/datasources.yaml")
    for d in ds["datasources"]:
        host = re.match(r"https?://([^:/]+)", d["url"]).group(1)
        expect(host in services, f"provisioning: data source {d['name']} points at compose service {host}")


# ----------------------------------------------------------------- kubernetes
def k8s_docs(folder="deploy/kubernetes"):
    """The documents of the apply path: *.yaml directly in FOLDER (kubectl
    apply -f FOLDER does not descend into examples/ or prometheus-adapter/)."""
    docs = []
    for path in sorted((ROOT / folder).glob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            if d:
                docs.append((path.name, d))
    return docs


APP_LABELS = ("name", "instance", "version", "component", "part-of")


def check_kubernetes():
    docs = k8s_docs()
    by_kind = {}
    for name, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    known = settings()
    version = crate_version()
    expect("Secret" not in by_kind, "no Secret in the apply path (re-applying would overwrite renewed credentials)")
    for name, d in docs:
        labels = d["metadata"].get("labels", {})
        missing = [k for k in APP_LABELS if f"app.kubernetes.io/{k}" not in labels]
        expect(not missing, f"{name} {d['kind']}: labels app.kubernetes.io/{{{','.join(APP_LABELS)}}} (missing {missing})")
        if "app.kubernetes.io/version" in labels:
            expect(labels["app.kubernetes.io/version"] == version,
                   f"{name} {d['kind']}: app.kubernetes.io/version {labels['app.kubernetes.io/version']} = Cargo.toml {version}")
    dep = by_kind["Deployment"][0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    env_list = c.get("env", [])
    env = {e["name"]: e for e in env_list}
    if "HorizontalPodAutoscaler" in by_kind:
        expect("replicas" not in spec, "Deployment: no replicas (the HorizontalPodAutoscaler owns the count)")
    else:
        expect(spec.get("replicas", 1) > 1, f"Deployment: replicas {spec.get('replicas')} > 1")
    for var in env:
        if var.startswith("AGENT_"):
            expect(var in known, f"Deployment: {var} is a SPEC section 1 setting")
    # Kubernetes expands $(VAR) only for variables defined earlier in the list.
    defined = set()
    for e in env_list:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
            expect(ref in defined, f"Deployment: {e['name']} uses $({ref}) after {ref} is defined")
        defined.add(e["name"])
    listen = env.get("AGENT_LISTEN", {}).get("value", f"0.0.0.0:{PORT}")
    expect(listen.endswith(f":{PORT}"), f"Deployment: AGENT_LISTEN {listen} uses port {PORT}")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    expect(PORT in ports.values(), f"Deployment: containerPort {PORT}")
    image = c.get("image", "")
    expect(image.endswith(f":{version}"),
           f"Deployment: image {image} is pinned to the crate version {version}")
    tpl_labels = spec["template"]["metadata"]["labels"]
    expect(tpl_labels.get("app.kubernetes.io/version") == version, "Deployment: pods labelled with the crate version")
    expect(all(f"app.kubernetes.io/{k}" in tpl_labels for k in APP_LABELS), "Deployment: pods carry every app.kubernetes.io label")

    def probe(kind, path):
        p = c.get(kind, {}).get("httpGet", {})
        port = p.get("port")
        port = ports.get(port, port)
        expect(p.get("path") == path and port == PORT, f"Deployment: {kind} GET {path} on {PORT} (got {p.get('path')} on {port})")

    probe("livenessProbe", "/livez")
    probe("readinessProbe", "/readyz")
    expect("startupProbe" in c, "Deployment: has a startupProbe")
    expect(env.get("AGENT_STOP_MODE", {}).get("value") == "drain", "Deployment: AGENT_STOP_MODE=drain")
    grace = seconds(env.get("AGENT_SHUTDOWN_GRACE", {}).get("value", "25s"))
    kill = seconds(env.get("AGENT_KILL_GRACE", {}).get("value", "10s"))
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    expect(tgp >= grace + kill + 5, f"Deployment: terminationGracePeriodSeconds {tgp} >= AGENT_SHUTDOWN_GRACE {grace:g}s"
           f" + AGENT_KILL_GRACE {kill:g}s + 5s (SPEC section 5)")
    res = c.get("resources", {})
    expect(all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")),
           "Deployment: cpu and memory requests and limits")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    non_root = (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
                and csc.get("runAsUser", psc.get("runAsUser", 1)) != 0)
    expect(non_root, "Deployment: non-root security context (runAsNonRoot, uid != 0)")
    expect(csc.get("allowPrivilegeEscalation") is False, "Deployment: allowPrivilegeEscalation false")
    secret_vols = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    mounted = [m for m in c.get("volumeMounts", []) if m["name"] in secret_vols]
    examples = {d["metadata"]["name"] for _, d in k8s_docs("deploy/kubernetes/examples") if d["kind"] == "Secret"}
    expect(bool(mounted) and all(secret_vols[m["name"]] in examples for m in mounted),
           f"Deployment: the Secret it mounts ({sorted(secret_vols.values())}) has an example in deploy/kubernetes/examples/")
    labels = tpl_labels
    ann = spec["template"]["metadata"].get("annotations", {})
    expect(ann.get("prometheus.io/port") == str(PORT), f"Deployment: scrape annotations name port {PORT}")

    def selects_pods(kind, sel):
        expect(bool(sel) and all(labels.get(k) == v for k, v in sel.items()), f"{kind}: selector matches the pods")

    pdb = by_kind.get("PodDisruptionBudget", [None])[0]
    if expect(pdb is not None, "PodDisruptionBudget exists"):
        expect(pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
               "PodDisruptionBudget: unhealthyPodEvictionPolicy AlwaysAllow (halted pods are NotReady)")
        selects_pods("PodDisruptionBudget", pdb["spec"]["selector"].get("matchLabels", {}))
    hpa = by_kind.get("HorizontalPodAutoscaler", [None])[0]
    if expect(hpa is not None, "HorizontalPodAutoscaler exists"):
        ref = hpa["spec"]["scaleTargetRef"]
        expect(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"], "HPA: scales the Deployment")
        names = [m["pods"]["metric"]["name"] for m in hpa["spec"].get("metrics", []) if m["type"] == "Pods"]
        adapter = yaml.safe_load((ROOT / "deploy/kubernetes/prometheus-adapter/values.yaml").read_text())
        served = {r["name"]["as"]: r for r in adapter["rules"]["custom"]}
        expect(len(names) == 1 and names[0] in served, f"HPA: custom metric {names} is served by prometheus-adapter/values.yaml ({sorted(served)})")
        rule = served.get(names[0] if names else "", {})
        expect("jobloop_busy_seconds_total" in rule.get("seriesQuery", "") and "rate(<<.Series>>" in rule.get("metricsQuery", ""),
               "prometheus-adapter: the metric is rate(jobloop_busy_seconds_total) per pod")
        expect(hpa["spec"].get("minReplicas", 1) >= 2, "HPA: minReplicas >= 2 (a fleet)")
    pm = by_kind.get("PodMonitor", [None])[0]
    if expect(pm is not None, "PodMonitor exists"):
        selects_pods("PodMonitor", pm["spec"]["selector"].get("matchLabels", {}))
        expect(pm["spec"].get("jobLabel") in labels and labels[pm["spec"]["jobLabel"]] == "jobloop",
               "PodMonitor: jobLabel makes the scrape job 'jobloop' (the mixin's default selector)")
        for ep in pm["spec"]["podMetricsEndpoints"]:
            expect(ep.get("port") in ports and ep.get("path", "/metrics") == "/metrics",
                   f"PodMonitor: endpoint port {ep.get('port')} path {ep.get('path')}")
    pr = by_kind.get("PrometheusRule", [None])[0]
    expect(pr is not None, "PrometheusRule exists")


def check_crds():
    """The operator's kinds, which kubernetes-validate has no schema for,
    against the JSON schemas of tests/deploy/schemas/."""
    import jsonschema
    schemas = {"PodMonitor": "podmonitor.schema.json", "PrometheusRule": "prometheusrule.schema.json"}
    seen = set()
    for name, d in k8s_docs():
        if d["kind"] not in schemas:
            continue
        seen.add(d["kind"])
        schema = json.loads((HERE / "schemas" / schemas[d["kind"]]).read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(d), key=lambda e: list(e.path))
        expect(not errors, f"{name}: {d['kind']} matches tests/deploy/schemas/{schemas[d['kind']]}"
               + "".join(f"\n       {'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]))
    expect(seen == set(schemas), f"the apply path has a {' and a '.join(sorted(schemas))} ({sorted(seen)})")


def copy_docker_context(out):
    """Copies the Docker build context (the repository minus .dockerignore) to OUT."""
    import fnmatch
    import shutil
    patterns = [l.strip().strip("/") for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]

    def ignored(rel):
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.replace("**/", "")) or
                   rel.split("/")[0] == p for p in patterns)

    out = pathlib.Path(out)
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if ignored(rel) or any(ignored(a.as_posix()) for a in pathlib.PurePosixPath(rel).parents
                               if a.as_posix() != "."):
            continue
        if path.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / rel)


def write_prometheusrule_spec(out):
    pr = next(d for _, d in k8s_docs() if d["kind"] == "PrometheusRule")
    pathlib.Path(out).write_text(yaml.safe_dump(pr["spec"], sort_keys=False))


def main():
    cmd = sys.argv[1:2]
    if cmd == ["alerts"]:
        check_alerts()
    elif cmd == ["dashboard"]:
        check_dashboard()
    elif cmd == ["compose"]:
        check_compose()
    elif cmd == ["kubernetes"]:
        check_kubernetes()
    elif cmd == ["crds"]:
        check_crds()
    elif cmd == ["docker-context"] and len(sys.argv) == 3:
        copy_docker_context(sys.argv[2])
    elif cmd == ["prometheusrule-spec"] and len(sys.argv) == 3:
        write_prometheusrule_spec(sys.argv[2])
    else:
        print(__doc__.strip())
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
