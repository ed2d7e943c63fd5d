#!/usr/bin/env python3
"""Keeps deploy/kubernetes/prometheusrule.yaml equal to alerts/jobloop.rules.yml.

    python3 scripts/sync-prometheusrule.py          # rewrite the PrometheusRule
    python3 scripts/sync-prometheusrule.py --check  # exit 1 if the two differ

The PrometheusRule's spec.groups is the rule file's `groups:` block, copied
as text (comments included) and indented under `spec:`. --check compares the
two parsed documents, so a hand edit of either file that changes a rule is
caught, while comments and formatting may differ. Needs PyYAML (which
kubernetes-validate brings).
"""
import difflib
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "jobloop.rules.yml"
TARGET = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from alerts/jobloop.rules.yml by scripts/sync-prometheusrule.py:
# edit the rule file, then run that script. tests/deploy/check.sh fails while
# the two differ.
#
# For the Prometheus operator. Your Prometheus' ruleSelector must match these
# labels (kube-prometheus-stack selects `release: <its release name>` by
# default: add that label here). The rules expect the scrape job to be named
# "jobloop" (podmonitor.yaml's jobLabel does that).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: jobloop
  labels:
    app.kubernetes.io/name: jobloop
spec:
"""


def render() -> str:
    lines = RULES.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    except StopIteration:
        sys.exit(f"{RULES}: no top-level 'groups:' line")
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def dump(obj) -> list:
    return json.dumps(obj, indent=2, sort_keys=True).splitlines()


def check() -> int:
    rules = yaml.safe_load(RULES.read_text())
    docs = [d for d in yaml.safe_load_all(TARGET.read_text()) if d]
    if len(docs) != 1 or docs[0].get("kind") != "PrometheusRule":
        print(f"FAIL {TARGET.relative_to(ROOT)}: expected exactly one PrometheusRule document")
        return 1
    spec_groups = (docs[0].get("spec") or {}).get("groups")
    if spec_groups != rules.get("groups"):
        print(f"FAIL {TARGET.relative_to(ROOT)} has drifted from {RULES.relative_to(ROOT)}:")
        sys.stdout.writelines(
            line + "\n"
            for line in difflib.unified_diff(
                dump(rules.get("groups")), dump(spec_groups),
                "alerts/jobloop.rules.yml groups", "prometheusrule.yaml spec.groups", lineterm=""))
        print("fix: python3 scripts/sync-prometheusrule.py")
        return 1
    names = [r.get("alert") or r.get("record") for g in spec_groups for r in g["rules"]]
    print(f"ok   PrometheusRule carries the same {len(names)} rules as alerts/jobloop.rules.yml")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    if sys.argv[1:]:
        print(__doc__.strip())
        return 2
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return check()


if __name__ == "__main__":
    sys.exit(main())
