#!/usr/bin/env python3
"""Renders the monitoring mixin (mixin/) into the files the repository ships.

    python3 scripts/render-mixin.py          # rewrite the rendered files
    python3 scripts/render-mixin.py --check  # exit 1 if any differs (CI: drift)

mixin/render.jsonnet names each file and its content; jsonnet (Debian's
`jsonnet` package) evaluates it, and this script writes each as YAML (rule
files, the PrometheusRule) or JSON (the dashboard) with a header saying
where it comes from. Never edit the rendered files: edit mixin/ and run
this. Needs jsonnet and PyYAML.
"""
import difflib
import json
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]

HEADER = """\
# GENERATED from mixin/ by scripts/render-mixin.py: do not edit. Change
# mixin/*.libsonnet (or render your own copy with your _config, see
# docs/monitoring.md), then run that script; tests/deploy/check.sh fails
# while this file and the mixin differ.
"""
HEADERS = {
    "alerts/jobloop.rules.yml": HEADER + """\
#
# Prometheus alerting rules for jobloop: `rule_files: [".../jobloop.rules.yml"]`.
# Unit tests: alerts/tests/ (`promtool test rules alerts/tests/*.yml`);
# runbook: alerts/runbook.md, one section per alert. The defaults assume the
# scrape job "jobloop"; see mixin/config.libsonnet for the knobs.
""",
    "alerts/tests/rules/annotation-scraping.rules.yml": HEADER + """\
#
# The same rules with jobloopSelector set for annotation-based pod discovery
# (job "kubernetes-pods"), loaded by alerts/tests/annotation-scraping-test.yml.
""",
    "deploy/kubernetes/prometheusrule.yaml": HEADER + """\
#
# For the Prometheus operator. Your Prometheus' ruleSelector must match these
# labels (kube-prometheus-stack selects `release: <its release name>` by
# default: add that label). The rules select job="jobloop"
# (podmonitor.yaml's jobLabel makes it so).
""",
}


class Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL), sequences indented."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)

# Keys first in this order, the rest after, for readable rules.
ORDER = ["apiVersion", "kind", "metadata", "name", "alert", "record", "expr", "for", "labels", "annotations",
         "summary", "description", "runbook_url"]


def ordered(obj):
    if isinstance(obj, dict):
        keys = sorted(obj, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), ""))
        return {k: ordered(obj[k]) for k in keys}
    if isinstance(obj, list):
        return [ordered(x) for x in obj]
    return obj


def render() -> dict:
    try:
        version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
        out = subprocess.run(["jsonnet", "-J", str(ROOT / "mixin"), "--ext-str", f"version={version}",
                              str(ROOT / "mixin/render.jsonnet")],
                             check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("jsonnet is not installed: apt-get install jsonnet")
    except subprocess.CalledProcessError as e:
        sys.exit(f"jsonnet failed on mixin/render.jsonnet:\n{e.stderr}")
    files = {}
    for rel, content in json.loads(out).items():
        if rel.endswith(".json"):
            files[rel] = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
        else:
            body = yaml.dump(ordered(content), Dumper=Dumper, sort_keys=False, width=100000, allow_unicode=True)
            files[rel] = HEADERS.get(rel, HEADER) + body
    return files


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] and not check:
        print(__doc__.strip())
        return 2
    drift = 0
    for rel, text in render().items():
        path = ROOT / rel
        old = path.read_text() if path.exists() else ""
        if old == text:
            print(f"ok   {rel} is the mixin rendered")
            continue
        if check:
            drift += 1
            print(f"FAIL {rel} differs from the mixin rendered:")
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                       f"{rel} (shipped)", f"{rel} (rendered)", n=1))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {rel}")
    if drift:
        print("fix: python3 scripts/render-mixin.py")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
