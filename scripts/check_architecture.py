#!/usr/bin/env python3
"""Checks the architecture rules that the compiler does not:

1. Purity: the pure crates (domain, stats, policy, webhooks core) depend on no IO crate: no async runtime,
   no database driver, no HTTP, no filesystem-watching or networking crate. Read from
   `cargo tree` (normal dependencies, every feature the workspace enables).
2. No module cycles inside `api/` and `crates/store/`: between the top-level modules of each
   crate (a module with its children counts as one), `use crate::…` and `super::…` edges
   must form no cycle.

Exits 1 and names what is wrong; prints what was checked otherwise.
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PURE = ["verdict-domain", "verdict-stats", "verdict-policy", "verdict-webhooks-core"]
IO_CRATES = {
    "tokio", "mio", "async-std", "smol", "futures-io", "hyper", "axum", "reqwest", "tower",
    "mongodb", "rusqlite", "libsqlite3-sys", "redis", "tokio-cron-scheduler", "socket2",
    "tracing-subscriber",
}
CYCLE_FREE = ["api/src", "crates/store/src"]


def purity():
    problems = []
    for crate in PURE:
        out = subprocess.run(
            ["cargo", "tree", "-p", crate, "-e", "normal", "--prefix", "none", "--offline"],
            cwd=ROOT, capture_output=True, text=True,
        )
        if out.returncode != 0:
            out = subprocess.run(
                ["cargo", "tree", "-p", crate, "-e", "normal", "--prefix", "none"],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )
        deps = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
        bad = sorted(deps & IO_CRATES)
        if bad:
            problems.append(f"{crate} depends on IO crates: {', '.join(bad)}")
        else:
            print(f"purity: {crate} ({len(deps)} crates in its tree) depends on no IO crate")
    return problems


def top_module(src: pathlib.Path, file: pathlib.Path) -> str:
    rel = file.relative_to(src).parts
    if len(rel) == 1:
        return rel[0].removesuffix(".rs")
    return rel[0]


def module_edges(src: pathlib.Path):
    edges = {}
    for file in src.rglob("*.rs"):
        if file.name == "lib.rs" and file.parent == src:
            continue
        here = top_module(src, file)
        # Code only: a doc comment's link is not a dependency.
        text = "\n".join(
            line for line in file.read_text().splitlines()
            if not line.lstrip().startswith("//")
        )
        targets = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        nested = len(file.relative_to(src).parts) > 1 and file.name != "mod.rs"
        if not nested:
            # `super::x` from a top-level module names a sibling.
            targets |= set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
        for t in targets:
            is_module = (src / f"{t}.rs").exists() or (src / t).is_dir()
            if t != here and is_module:
                edges.setdefault(here, set()).add(t)
    return edges


def find_cycle(edges):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def cycles():
    problems = []
    for rel in CYCLE_FREE:
        edges = module_edges(ROOT / rel)
        cycle = find_cycle(edges)
        if cycle:
            problems.append(f"{rel}: module cycle {' -> '.join(cycle)}")
        else:
            n = sum(len(v) for v in edges.values())
            print(f"modules: {rel} has no module cycle ({len(edges)} modules, {n} edges)")
    return problems


def main():
    problems = purity() + cycles()
    for p in problems:
        print(f"architecture: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
