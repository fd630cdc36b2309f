"""The config schema is the one home of the settings' defaults and limits."""

from __future__ import annotations

import dataclasses

import pytest

from pneumoflow.cli import build_parser
from pneumoflow.core import schema
from pneumoflow.models.baseline import BaselineConfig
from pneumoflow.training.classifier import ClassifierConfig
from pneumoflow.training.unet import UnetConfig


@pytest.mark.parametrize(
    "settings, path",
    [
        (ClassifierConfig("vgg16"), "models.vgg16"),
        (
            ClassifierConfig("resnet101"),
            "models.resnet101",
        ),  # the defaults ClassifierConfig reads are vgg16's
        (UnetConfig(), "models.unet"),
        (BaselineConfig(), "models.baseline"),
    ],
)
def test_training_settings_have_each_schema_key_and_its_default(settings, path):
    expected = {k: v for k, v in schema.defaults(path).items() if k not in schema.JOB_KEYS}
    if isinstance(settings, ClassifierConfig):
        expected.update(expected.pop("augment"))
    got = {k: v for k, v in dataclasses.asdict(settings).items() if k != "name"}
    assert got == expected


def test_the_command_line_takes_its_defaults_from_the_schema():
    args = build_parser().parse_args(["manifest", "labels.csv", "classes.csv", "dicoms"])
    assert (args.shards, args.val_fraction, args.seed, args.max_rejected_fraction) == (
        schema.default("preprocess.shards"),
        schema.default("split.val_fraction"),
        schema.default("split.seed"),
        schema.default("qc.max_rejected_fraction"),
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["manifest", "l", "c", "d", "--val-fraction", "1.5"],
         "--val-fraction: 1.5 is greater than or equal to the maximum of 1 (config split.val_fraction"),
        (["manifest", "l", "c", "d", "--shards", "0"],
         "--shards: 0 is less than the minimum of 1 (config preprocess.shards"),
        (["synth", "out", "--size", "10"],
         "--size: 10 is less than the minimum of 64 (config data.synthetic.image_size"),
    ],
)  # fmt: skip
def test_the_command_line_refuses_what_the_schema_refuses(argv, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_setting_the_schema_allows_passes_through():
    assert build_parser().parse_args(["manifest", "l", "c", "d", "--shards", "4"]).shards == 4
