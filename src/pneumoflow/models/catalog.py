"""The classifiers the pipeline knows and torchvision's ImageNet weight files for them.

Free of torch on purpose: the Snakefile reads it at parse time, in every job.
tests/test_classifiers.py checks these names against torchvision's own weights enums.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_URL = "https://download.pytorch.org/models/"
# `weights: imagenet` means IMAGENET1K_V1 for both: the weights of torchvision's old
# `pretrained=True`, which the seed study used. ResNet101's IMAGENET1K_V2 (a newer training
# recipe, 81.9% vs 77.4% top-1) can be asked for by name.
IMAGENET = "IMAGENET1K_V1"
WEIGHT_FILES = {
    "vgg16": {"IMAGENET1K_V1": "vgg16-397923af.pth"},
    "resnet101": {"IMAGENET1K_V1": "resnet101-63fe2227.pth", "IMAGENET1K_V2": "resnet101-cd907fc2.pth"},
}
CLASSIFIERS = tuple(WEIGHT_FILES)


def hub_checkpoints() -> Path:
    """torch.hub's weight cache, `$TORCH_HOME/hub/checkpoints` (torch.hub.get_dir() + /checkpoints)."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.getenv("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def imagenet_name(model: str, weights: str | None) -> str | None:
    """The torchvision enum member that a `weights:` value names (imagenet -> IMAGENET1K_V1), or
    None for null and for file paths."""
    if weights is None:
        return None
    weights = os.fspath(weights)
    name = IMAGENET if weights.lower() == "imagenet" else weights
    if name.startswith("IMAGENET1K_") and name not in WEIGHT_FILES[model]:
        raise ValueError(
            f"models.{model}.weights={weights!r}: torchvision has no such {model} weights; "
            f"choose imagenet or one of {sorted(WEIGHT_FILES[model])}, a file path, or null"
        )
    return name if name in WEIGHT_FILES[model] else None


def weights_file(model: str, weights: str | None) -> Path | None:
    """The local file a `weights:` value stands for: the hub cache file for imagenet or an
    enum name, the path itself otherwise, None for null (no pretrained weights)."""
    enum_name = imagenet_name(model, weights)
    if enum_name is not None:
        return hub_checkpoints() / WEIGHT_FILES[model][enum_name]
    return None if weights is None else Path(weights)


def missing_weights_message(model: str, weights: str) -> str:
    """What to do when the hub cache has no file for `weights` and it cannot be downloaded."""
    enum_name = imagenet_name(model, weights)
    if enum_name is None:
        raise ValueError(f"models.{model}.weights={weights!r} names a file, not torchvision's weights")
    file_name = WEIGHT_FILES[model][enum_name]
    return (
        f"models.{model}.weights={weights!r} needs torchvision's {file_name} in {hub_checkpoints()} "
        f"(torch's hub cache; set TORCH_HOME to move it) and it could not be downloaded from "
        f"{WEIGHTS_URL}{file_name}. Download it there on a machine that is online, or set "
        f"weights to a file path, or to null (no pretrained weights)"
    )
