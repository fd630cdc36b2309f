"""From a Snakemake job to a stage's `run()`: one rule keyword, one argument name.

Each `scripts/<rule>.py` is four lines: import this module, `start(snakemake)`, import the
stage, then `run(**arguments(snakemake, run))`. `arguments` hands `run` the rule's wildcards,
input, output, params and named logs under the names the rule gives them, plus `rule` and
`threads`; a keyword `run` does not take is left out (e.g. the `images` param, which only
triggers reruns, and `code` except where the run cache's fingerprint takes it). A name found
twice, or a keyword of `run` the rule does not give, is an error that names it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pneumoflow.core.logs import to_file

SECTIONS = ("wildcards", "input", "output", "params", "log")


def start(snakemake: Any, gpus: int | None = None) -> None:
    """Log to the rule's first log file; with `gpus`, claim that many GPUs (0: none) before
    torch or TensorFlow is imported (jobenv.claim_gpus)."""
    to_file(snakemake.log[0])
    if gpus is not None:
        from pneumoflow.core.jobenv import claim_gpus

        claim_gpus(gpus)


def _plain(value: Any) -> Any:
    """A Snakemake named list (several files under one name) as a plain list of str."""
    return [str(v) for v in value] if isinstance(value, list) else value


def job_values(snakemake: Any) -> dict[str, Any]:
    """{keyword: value} of every named wildcard, input, output, param and log of the job."""
    found: dict[str, Any] = {"rule": snakemake.rule, "threads": snakemake.threads}
    where = {"rule": "rule", "threads": "threads"}
    for section in SECTIONS:
        for name, value in getattr(snakemake, section).items():
            if name in found:
                raise ValueError(
                    f"rule {snakemake.rule}: {section}.{name} has the name of {where[name]}; "
                    "rename one of them"
                )
            found[name], where[name] = _plain(value), f"{section}.{name}"
    return found


def arguments(snakemake: Any, run: Callable[..., Any]) -> dict[str, Any]:
    """The keyword arguments of `run` taken from the job by name (see the module docstring)."""
    values = job_values(snakemake)
    wanted = inspect.signature(run).parameters.values()
    missing = [p.name for p in wanted if p.name not in values and p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(
            f"rule {snakemake.rule} gives no {', '.join(missing)}, which {run.__module__}.run needs; "
            "add them to the rule's input, output, params or log"
        )
    return {p.name: values[p.name] for p in wanted if p.name in values}
