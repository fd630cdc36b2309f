"""envs/*.yaml stay in step with pyproject.toml (checked offline: no conda needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

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
