"""Start-up cost of each Snakemake job: the imports of every script in scripts/, each in a fresh
process, wall time and the slowest modules (`python -X importtime`).

    .venv/bin/python benchmarks/bench_imports.py [--repeat 3]

The script's own top-level imports are what a job pays before it does any work (Snakemake's
wrapper adds its own, the same for every job). Prints a markdown table; keeps it in
benchmarks/results/imports.json.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import time
from pathlib import Path

from common import report

REPO = Path(__file__).resolve().parents[1]


def import_lines(script: Path) -> str:
    """The script's module-level import statements as code."""
    tree = ast.parse(script.read_text())
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))


def time_imports(code: str, repeat: int, repo: Path) -> tuple[float, list[tuple[str, float]]]:
    """(best wall seconds of `code` in a fresh interpreter, [(module, cumulative s)] slowest top level)."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        best = min(best, time.perf_counter() - start)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], check=True, env=env, capture_output=True, text=True
    ).stderr
    top = []
    for line in trace.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) == 3 and not parts[2].startswith("  "):  # a module imported at top level
            top.append((parts[2].strip(), int(parts[1]) / 1e6))
    return best, sorted(top, key=lambda t: -t[1])[:4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to measure (e.g. main's)")
    args = parser.parse_args()
    bare, _ = time_imports("pass", args.repeat, args.repo)
    rows = []
    for script in sorted((args.repo / "scripts").glob("*.py")):
        wall, top = time_imports(import_lines(script), args.repeat, args.repo)
        heavy = ", ".join(f"{name} {seconds:.2f}" for name, seconds in top)
        rows.append({"script": script.name, "imports (s)": round(wall - bare, 2), "slowest (s)": heavy})
    report("imports", rows, {"bare interpreter (s)": round(bare, 3)})


if __name__ == "__main__":
    main()
