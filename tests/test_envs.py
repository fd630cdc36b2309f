"""envs/*.yaml stay in step with pyproject.toml (checked offline: no conda needed)."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from pneumoflow.core import codeclosure

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        s for group in project["optional-dependencies"].values() for s in group
    ]
    pins = {}
    for spec in specs:
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", spec).groups()
        pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def _env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep["pip"]:
                name, version = spec.split("==")
                pins[name.lower()] = version
        elif "=" in dep:
            name, version = dep.split("=", 1)
            pins[name.lower()] = version
    return pins


def test_every_rule_names_an_existing_env():
    rules = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    named = set(re.findall(r'"\.\./envs/([\w-]+\.yaml)"', rules))
    assert named and named <= {p.name for p in ENVS}


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject(env):
    pins = _pyproject_pins()
    env_pins = _env_pins(env)
    assert env_pins.pop("python") == "3.11"
    assert env_pins, f"{env.name} pins nothing"
    for name, version in env_pins.items():
        assert name in pins, f"{env.name}: {name} is not pinned in pyproject.toml"
        assert pins[name] == version, f"{env.name}: {name}=={version} but pyproject pins {pins[name]}"


# --- every third-party module a rule's code imports is provided by the rule's env ---

# Envs a rule picks with a function (evaluate: the U-Net's or the classifiers' env).
ENV_FUNCTIONS = {"get_evaluation_env": ("tensorflow.yaml", "torch.yaml")}


def _rule_blocks() -> dict[str, str]:
    """{rule name: its text} for every rule in rules/*.smk (loop rules by their `name:`)."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^\s*(?:rule|checkpoint)\b(?=\s*\w*:)", smk.read_text(), flags=re.M)[1:]:
            named = re.match(r"\s*(\w+):", block) or re.search(r'name:\s*f?"([\w{}]+)"', block)
            name = named.group(1)
            # a rule defined per data source (manifest) appears twice
            blocks[name if name not in blocks else f"{name} (2)"] = block
    return blocks


def _rule_envs_and_script(block: str) -> tuple[tuple[str, ...], Path]:
    conda = re.search(r"conda:\s*\n\s*(\S+)", block).group(1)
    envs = ENV_FUNCTIONS[conda] if conda in ENV_FUNCTIONS else (re.fullmatch(r'"\.\./envs/(.+)"', conda)[1],)
    script = re.search(r'script:\s*\n\s*"\.\./(.+)"', block).group(1)
    return envs, REPO / script


def third_party_imports(script: Path) -> dict[str, bool]:
    """{top-level third-party module: only ever imported lazily?} for a script and the
    pneumoflow modules it reaches, followed transitively (the closure the rules hash)."""
    return codeclosure.walk(script)[1]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def provided_by(env: Path) -> frozenset[str]:
    """Distributions an env installs: what it lists plus what those require (read from the
    installed metadata of this venv, so no network)."""
    todo, provided = [_normalise(n) for n in _env_pins(env) if n != "python"], set()
    while todo:
        name = todo.pop()
        if name in provided:
            continue
        provided.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_normalise(req.name))
    return frozenset(provided)


@cache
def _distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def missing_from_env(env: Path, modules: set[str]) -> set[str]:
    dists = _distributions()
    provided = provided_by(env)
    return {m for m in modules if not {_normalise(d) for d in dists.get(m, [m])} & provided}


RULES = _rule_blocks()


def test_rule_blocks_found():
    assert {"manifest", "dicom_to_jpg", "arrays", "train_unet", "train_{model}", "evaluate", "report"} <= set(
        RULES
    )


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_env_provides_every_import(rule):
    envs, script = _rule_envs_and_script(RULES[rule])
    imports = third_party_imports(script)
    assert imports or rule == "qc_rejected", f"{rule}: no third-party import found in {script.name}"
    eager = {m for m, lazy in imports.items() if not lazy}
    for env in envs:
        missing = missing_from_env(REPO / "envs" / env, eager)
        assert not missing, f"rule {rule} imports {sorted(missing)}, which envs/{env} does not provide"
    # A rule whose env is picked per model needs each lazy import in at least one of its envs.
    for module in {m for m, lazy in imports.items() if lazy}:
        assert any(not missing_from_env(REPO / "envs" / e, {module}) for e in envs), (
            f"rule {rule} imports {module}, which none of envs/{', envs/'.join(envs)} provides"
        )


def test_missing_import_is_caught(tmp_path):
    """The check itself fails on an env without pandas, for a module importing pandas."""
    env = tmp_path / "env.yaml"
    env.write_text("dependencies:\n  - python=3.11\n  - numpy=2.4.6\n")
    assert missing_from_env(env, {"pandas", "numpy"}) == {"pandas"}
