"""pneumoflow.core.canonical: settings compared by value, not by spelling."""

from __future__ import annotations

import pytest
import yaml

from pneumoflow.core.canonical import canonical, read_numbers

SCHEMA = {
    "type": "object",
    "properties": {
        "lr": {"type": "number"},
        "name": {"type": "string"},
        "weights": {"type": ["string", "null"]},
        "nested": {"$ref": "#/$defs/n"},
    },
    "$defs": {"n": {"type": "object", "properties": {"epochs": {"type": "integer"}}}},
}


@pytest.mark.parametrize("spelling", ["0.001", "1e-3", "1.0e-3", '"0.001"', "'1E-3'"])
def test_every_spelling_of_a_number_is_the_same_value(spelling):
    config = read_numbers(yaml.safe_load(f"lr: {spelling}\nnested: {{epochs: 3.0}}"), SCHEMA)
    assert config == {"lr": 0.001, "nested": {"epochs": 3}}
    assert isinstance(config["nested"]["epochs"], int)


def test_strings_where_the_schema_wants_strings_stay_strings():
    config = read_numbers({"name": "1e-3", "weights": "12", "lr": "fast"}, SCHEMA)
    assert config == {"name": "1e-3", "weights": "12", "lr": "fast"}  # "fast": validation's to refuse


def test_canonical_json_ignores_key_order_and_integral_floats():
    assert canonical({"b": 1.0, "a": {"y": 2, "x": 0.5}}) == canonical({"a": {"x": 0.5, "y": 2.0}, "b": 1})
    assert canonical({"a": 1, "gpus": 2}, drop=("gpus",)) == '{"a":1}'
    assert canonical({"lr": 0.001}) != canonical({"lr": 0.002})
