"""Shared helpers of the benchmarks: generated RSNA-format data and a results table."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("PNEUMOFLOW_BENCH_DIR", "/tmp/pneumoflow-bench"))


def sample(n: int, size: int = 1024, seed: int = 11) -> Path:
    """A generated RSNA-format sample of n images (made once, reused by later runs)."""
    from pneumoflow.sources.synthetic import generate  # pydicom: only where a sample is made

    folder = WORK / f"sample-{n}-{size}-{seed}"
    if not (folder / "done").exists():
        generate(folder, n=n, seed=seed, size=size, n_test=3, workers=os.cpu_count() or 1)
        (folder / "done").touch()
    return folder


def jobs_printed(output: str) -> dict[str, int]:
    """{rule: jobs} from the job blocks a Snakemake run printed: the jobs it ran (a dry run:
    would run), a checkpoint's later jobs included. Not the "Job stats" table: that is the
    plan made before a checkpoint ran, and lists jobs the re-evaluation then skips."""
    rules = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", output, re.M)
    return {rule: rules.count(rule) for rule in sorted(set(rules))}


def preprocessing_targets(sizes: Iterable[int], n_shards: int) -> list[str]:
    """Every arrays file (each size x split x shard) and the QC table of a fresh run, as
    targets: `--until` would stop at the checkpoints (what follows them is known only once
    they have run)."""
    from pneumoflow.core.ids import shard_name
    from pneumoflow.core.split import SPLITS

    arrays = [
        f"results/arrays/{size}px/{split}/{shard_name(shard)}.npz"
        for size in sorted(set(sizes))
        for split in SPLITS
        for shard in range(n_shards)
    ]
    return [*arrays, "results/qc/rejected.tsv"]


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall-clock seconds of `repeat` calls (best: least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def timed_in_turns(
    runs: dict[str, Callable[[], object]], prepare: Callable[[], object], repeat: int = 5
) -> dict[str, float]:
    """Best wall-clock seconds of each of `runs`, taking turns: round after round, each run once,
    after `prepare()` (not timed). Taking turns spreads slow spells of a shared disk over every
    run alike, where `timed` would put a whole spell on one of them."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, fn in runs.items():
            prepare()
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def report(name: str, rows: list[dict], notes: dict | None = None) -> None:
    """Print a markdown table and keep it as benchmarks/results/<name>.json."""
    columns = list(rows[0])
    print(f"\n{name}  ({platform.node()}, {os.cpu_count()} CPUs)")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    for key, value in (notes or {}).items():
        print(f"{key}: {value}")
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "notes": notes or {}, "cpus": os.cpu_count()}, indent=2))
