"""The config schema, schemas/config.schema.yaml: the one home of every setting's default.

The Snakefile validates the config against it (filling in the defaults); the training
settings (ClassifierConfig, UnetConfig, BaselineConfig) take their defaults from it, and
the command line takes its defaults from it and checks its values against it (cli._setting,
with jsonschema: not imported here, so that no training job's environment needs it).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "config.schema.yaml"
# Keys of models.<m> that say whether and where it runs, not what it learns: left out of its
# training settings and of what reruns its jobs.
JOB_KEYS = ("enabled", "gpus", "threads")


@cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())


def definition(path: str) -> dict:
    """The schema of the setting at dotted `path` (e.g. "split.val_fraction", "models.vgg16"),
    with $ref followed."""
    node = schema()
    for key in path.split("."):
        node = node["properties"][key]
        while "$ref" in node:
            node = schema()["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def default(path: str) -> Any:
    return definition(path)["default"]


def defaults(path: str) -> dict[str, Any]:
    """{key: default} of the object at `path`; an object-valued key gives its own defaults
    (e.g. a classifier's augment: {hflip, rotate_degrees, scale})."""
    found = {}
    for key, prop in definition(path)["properties"].items():
        found[key] = defaults(f"{path}.{key}") if "properties" in prop else prop.get("default")
    return found
