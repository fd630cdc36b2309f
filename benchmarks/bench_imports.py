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
    """The script's module-level import statements as code: core.job and the rule's stage module.
    Not counted: what run() imports when it runs (the data source's reader, sources.readers)."""
    body = ast.parse(script.read_text()).body
    return "\n".join(ast.unparse(node) for node in body if isinstance(node, ast.Import | ast.ImportFrom))


def time_imports(code: str, repeat: int, repo: Path) -> tuple[float, list[tuple[str, float]]]:
    """(best wall seconds of `code` in a fresh interpreter, [(package, cumulative s)] of the
    slowest third-party packages it loads)."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        best = min(best, time.perf_counter() - start)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], check=True, env=env, capture_output=True, text=True
    ).stderr
    packages: dict[str, float] = {}
    for line in trace.splitlines()[1:]:
        parts = line.split("|")
        name = parts[-1].strip() if len(parts) == 3 else ""
        if name and "." not in name and name in THIRD_PARTY:
            packages[name] = max(packages.get(name, 0.0), int(parts[1]) / 1e6)
    return best, sorted(packages.items(), key=lambda t: -t[1])[:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--repo", type=Path, action="append", help="checkout(s) to measure side by side (default: this one)"
    )
    args = parser.parse_args()
    repos = args.repo or [REPO]
    bare, _ = time_imports("pass", args.repeat, repos[0])
    rows = []
    for script in sorted((repos[-1] / "scripts").glob("*.py")):
        row = {"script": script.name}
        for repo in repos:
            wall, top = time_imports(import_lines(repo / "scripts" / script.name), args.repeat, repo)
            row[f"{repo.name} (s)"] = round(wall - bare, 2)
        row[f"packages loaded, {repos[-1].name}"] = " ".join(f"{name} {sec:.2f}" for name, sec in top)
        rows.append(row)
    report("imports", rows, {"bare interpreter (s)": round(bare, 3)})


THIRD_PARTY = {
    "numpy", "pandas", "cv2", "pydicom", "tqdm", "matplotlib", "skimage", "scipy", "mlflow", "torch",
    "torchvision", "tensorflow", "keras", "sklearn", "yaml", "PIL",
}  # fmt: skip


if __name__ == "__main__":
    main()
