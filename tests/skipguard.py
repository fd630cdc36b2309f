"""Under CI, a test that skips for want of something the machine lacks fails the run instead.

Tests that need what a machine may not offer carry `@pytest.mark.needs(kind)`: `cluster` (a
local Slurm: slurm-wlm, munge, root) or `tmpfs` (root that may mount a tmpfs). Where such a
test skips and the environment has CI=true, its skip is turned into a failure, so that CI can
never stay green with the Slurm path untested. An explicit opt-out names each kind and why:

    PNEUMOFLOW_ALLOW_SKIP="cluster: this runner has no root; tmpfs: no CAP_SYS_ADMIN"

tests/conftest.py imports the two hooks below.
"""

from __future__ import annotations

import os

import pytest

ALLOW_VAR = "PNEUMOFLOW_ALLOW_SKIP"
KINDS = ("cluster", "tmpfs")


def allowed_skips(text: str) -> dict[str, str]:
    """{kind: reason} of a PNEUMOFLOW_ALLOW_SKIP value "kind: reason; kind: reason";
    ValueError when an entry lacks its reason or names an unknown kind."""
    allowed = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        kind, _, reason = (part.strip() for part in entry.partition(":"))
        if kind not in KINDS or not reason:
            raise ValueError(
                f"{ALLOW_VAR} entry {entry!r}: expected '<kind>: <reason>' with kind one of "
                f"{', '.join(KINDS)}, e.g. {ALLOW_VAR}='cluster: this runner has no root'"
            )
        allowed[kind] = reason
    return allowed


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def pytest_configure(config: pytest.Config) -> None:
    kinds = ", ".join(KINDS)
    config.addinivalue_line(
        "markers",
        f"needs(kind): skips where the machine lacks kind ({kinds}); fails instead under CI=true",
    )
    try:
        allowed_skips(os.environ.get(ALLOW_VAR, ""))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("needs")
    if marker is None or not report.skipped or not in_ci():
        return
    kind = marker.args[0]
    allowed = allowed_skips(os.environ.get(ALLOW_VAR, ""))
    why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    why = why.removeprefix("Skipped: ")
    if kind in allowed:
        report.longrepr = (*report.longrepr[:2], f"{why} (allowed by {ALLOW_VAR}: {allowed[kind]})")
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{item.nodeid} needs {kind} and skipped under CI=true: {why}\n"
        f"Install what it needs (.ci/run does where it can), or allow the skip by naming why: "
        f"{ALLOW_VAR}='{kind}: <reason>'"
    )
