#!/usr/bin/env python3
"""Fails when the top-level modules of src/ import each other in a cycle.

ARCHITECTURE.md promises that imports go one way: a module uses only the
modules below it. This counts the `crate::` references of each file
(outside its unit tests), folds them to top-level modules, and reports every
cycle with the files that make it, so a new upward import is caught in CI.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
# `#[cfg(test)] mod tests { ... }` at a file's end, or a whole tests.rs:
# test code may reach anywhere.
TEST_TAIL = re.compile(r"^#\[cfg\(test\)\]\s*\nmod tests \{", re.M)
REFERENCE = re.compile(r"crate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"use crate::\{([^}]*)\}", re.S)


def top_module(path: pathlib.Path) -> str:
    first = path.relative_to(SRC).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def references(text: str) -> set:
    found = set(REFERENCE.findall(text))
    for group in GROUP.findall(text):
        found |= {item.strip().split("::")[0] for item in group.split(",") if item.strip()}
    return found


def main() -> int:
    edges = {}  # module -> {module it imports: [files]}
    for path in sorted(SRC.rglob("*.rs")):
        if path.name == "tests.rs" or path.name in ("lib.rs", "main.rs"):
            continue
        text = path.read_text()
        match = TEST_TAIL.search(text)
        if match:
            text = text[: match.start()]
        source = top_module(path)
        for target in references(text):
            if target != source and (SRC / f"{target}.rs").exists() or (SRC / target).is_dir():
                if target != source:
                    edges.setdefault(source, {}).setdefault(target, []).append(
                        str(path.relative_to(SRC.parent))
                    )

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in edges.get(node, {}):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = [
        (a, b, files)
        for a, targets in sorted(edges.items())
        for b, files in sorted(targets.items())
        if reaches(b, a)
    ]
    for a, b, files in cycles:
        print(f"layers: {a} -> {b} is part of a cycle (in {', '.join(sorted(set(files)))})")
    print(f"layers: {len(edges)} modules with imports, {len(cycles)} edges in cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
