"""Settings compared by value, not by spelling: what rule params and fingerprints are made of.

A rule param that holds a dict compares with its key order, and YAML 1.1 (PyYAML,
which Snakemake uses) reads `1e-3` as the *string* "1e-3" while `0.001` is a
float. Here a config is brought to one spelling per value: numbers written as
strings become numbers where the schema wants a number, integral floats become
ints (`1.0` and `1` are the same value), and dicts become JSON with sorted keys.

Stdlib only: the Snakefile calls it on every parse.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

_NUMBER = re.compile(r"^[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _wants_number(schema: Mapping) -> bool:
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    return bool({"number", "integer"} & set(kinds)) and "string" not in kinds


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    ref = schema.get("$ref")
    if not ref:
        return schema
    if not ref.startswith("#/"):
        raise ValueError(f"expected a local $ref such as #/$defs/name, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}


def read_numbers(config: dict, schema: Mapping, root: Mapping | None = None) -> dict:
    """Turn numbers written as strings ("1e-3", "0.001") into numbers where `schema` wants a
    number or an integer, in place; other values are left for validation to judge."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, value in list(config.items()):
        sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
        if sub is None:
            continue
        sub = _resolve(sub, root)
        if isinstance(value, dict):
            read_numbers(value, sub, root)
        elif isinstance(value, str) and _wants_number(sub) and _NUMBER.match(value.strip()):
            config[key] = float(value.replace("_", ""))
    return canonical_numbers(config)


def canonical_numbers(value: Any) -> Any:
    """`value` with every integral float made an int (recursively, dicts and lists in place)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = canonical_numbers(item)
    elif isinstance(value, list):
        value[:] = [canonical_numbers(item) for item in value]
    return value


def canonical(value: Any, drop: Iterable[str] = ()) -> str:
    """Canonical JSON of `value` (top-level keys in `drop` left out): sorted keys, integral
    floats as ints, no spaces. Equal values, equal strings."""
    if isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k not in set(drop)}
    return json.dumps(
        canonical_numbers(json.loads(json.dumps(value, default=str))),
        sort_keys=True,
        separators=(",", ":"),
    )


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """{distribution: installed version} ('absent' when not installed): part of a fingerprint,
    so a result made with other library versions is not taken for this one."""
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions
