"""The package's layers (README, Layout): no module imports one from a higher layer."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from import_graph import graph, layer  # noqa: E402


def test_no_module_imports_a_higher_layer():
    assert graph()["upward_imports"] == []


def test_every_stage_module_is_above_what_it_uses():
    assert layer("pneumoflow.stages.evaluate") > layer("pneumoflow.tracking.run_cache")
    assert (
        layer("pneumoflow.formats.images")
        < layer("pneumoflow.sources.rsna")
        < layer("pneumoflow.stages.manifest")
    )


def test_a_planted_upward_import_is_found(tmp_path):
    package = tmp_path / "pneumoflow"
    for sub in ("core", "stages"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "stages" / "arrays.py").write_text("from pneumoflow.core import tables\n")
    (package / "core" / "tables.py").write_text("def f():\n    from pneumoflow.stages import arrays\n")
    assert graph(tmp_path)["upward_imports"] == ["pneumoflow.core.tables -> pneumoflow.stages.arrays"]
