"""pneumoflow.core.codeclosure: a script's code is it plus every package module it reaches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pneumoflow.core import codeclosure

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "pneumoflow"


def names(script: str) -> set[str]:
    return {
        p.relative_to(SRC).as_posix()
        for p in codeclosure.closure(REPO / "scripts" / script)
        if SRC in p.parents
    }


def test_closure_follows_imports_transitively_and_inside_functions():
    found = names("evaluate.py")
    # evaluate imports metrics at the top, unet_inference and classifier_inference inside
    # a function; classifier_inference reaches classifiers
    assert {
        "__init__.py",
        "stages/__init__.py",
        "stages/evaluate.py",
        "models/metrics.py",
        "models/unet_inference.py",
        "models/classifiers.py",
    } <= found
    assert "training/classifier.py" not in found and "training/checkpoints.py" not in found
    assert "stages/train_classifier.py" not in found and "stages/report.py" not in found


def test_a_new_module_is_covered_without_listing_it(tmp_path, monkeypatch):
    package = tmp_path / "pneumoflow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stage.py").write_text("def run():\n    from . import helper\n")
    (package / "helper.py").write_text("from pneumoflow.sub.deep import x\n")
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text("x = 1\n")
    script = tmp_path / "script.py"
    script.write_text("from pneumoflow.stage import run\n")
    monkeypatch.setattr(codeclosure, "SRC", tmp_path)
    reached = {p.relative_to(tmp_path).as_posix() for p in codeclosure.closure(script)}
    assert reached == {
        "script.py",
        "pneumoflow/__init__.py",
        "pneumoflow/stage.py",
        "pneumoflow/helper.py",
        "pneumoflow/sub/__init__.py",
        "pneumoflow/sub/deep.py",
    }
    before = codeclosure.code_digest(script)
    (package / "sub" / "deep.py").write_text("x = 2\n")
    assert codeclosure.code_digest(script) != before


def test_digest_depends_on_bytes_not_on_mtime(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import os\n")
    before = codeclosure.code_digest(script)
    script.touch()
    assert codeclosure.code_digest(script) == before


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.name)
def test_no_module_imports_by_string(path):
    """Imports by string would be invisible to the closure, and so to the rerun trigger."""
    assert not re.search(r"import_module\(|__import__\(", path.read_text())


def test_every_rule_with_a_script_hashes_that_script_and_its_env():
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^\s*(?:rule|checkpoint)\b(?=\s*\w*:)", smk.read_text(), flags=re.M)[1:]:
            script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+\.py)"', block)
            if not script:
                continue
            code = re.search(r"code=(get_code\(\"(\w+\.py)\", \"(\w+)\"\)|get_evaluation_code)", block)
            assert code, f"{smk.name}: the rule running {script[1]} has no code param"
            if code[2]:
                assert code[2] == script[1]
                assert f'"../envs/{code[3]}.yaml"' in block
