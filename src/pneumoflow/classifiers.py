"""VGG16 and ResNet101 pneumonia classifiers, built as in the seed study.

ImageNet weights come from a local torchvision weight file (nothing is
downloaded): VGG16 keeps its features frozen and gets a 2-class last layer;
ResNet101 is frozen whole and gets a small MLP head. Without a weight file the
network starts from random init and trains whole: a frozen random backbone
would learn nothing.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from pneumoflow.catalog import WEIGHT_FILES, WEIGHTS_URL

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A configured weight file that is missing, unsafe or for another architecture."""


@dataclass(frozen=True)
class Arch:
    """How to build one classifier: torchvision constructor, weight file name, head surgery."""

    constructor: Callable[..., nn.Module]
    weights_file: str
    replace_head: Callable[[nn.Module], None]
    # the part frozen when pretrained (the head is replaced afterwards, so it stays trainable)
    frozen_part: Callable[[nn.Module], nn.Module]


def split_backbone(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(frozen backbone, trainable head) of a pretrained classifier: head(backbone(x)) == model(x).

    backbone: (B, 3, S, S) float32 -> (B, D) float32 features (D = 25088 for VGG16, 2048 for
    ResNet101); the head shares its parameters with `model`, so training it trains the model.
    """
    if name == "vgg16":
        return nn.Sequential(model.features, model.avgpool, nn.Flatten(1)), model.classifier
    if name == "resnet101":
        trunk = [model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2]
        return nn.Sequential(*trunk, model.layer3, model.layer4, model.avgpool, nn.Flatten(1)), model.fc
    raise ValueError(f"unknown classifier {name!r}; choose one of {sorted(ARCHS)}")


def _vgg16_head(model: nn.Module) -> None:
    model.classifier[6] = nn.Linear(4096, 2)


def _resnet101_head(model: nn.Module) -> None:
    model.fc = nn.Sequential(nn.Linear(2048, 128), nn.ReLU(inplace=True), nn.Linear(128, 2))


ARCHS = {
    "vgg16": Arch(torchvision.models.vgg16, WEIGHT_FILES["vgg16"], _vgg16_head, lambda m: m.features),
    "resnet101": Arch(torchvision.models.resnet101, WEIGHT_FILES["resnet101"], _resnet101_head, lambda m: m),
}


def load_state_dict(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """Read a torchvision state dict safely (weights_only); WeightsError says what to do."""
    where = f"models.{name}.weights={str(path)!r}"
    fetch = f"get torchvision's ImageNet file {ARCHS[name].weights_file} from {WEIGHTS_URL} and copy it here"
    if not Path(path).is_file():
        raise WeightsError(f"{where}: file not found; {fetch}, or set weights: null to train from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(f"{where}: not a plain PyTorch state dict ({str(exc)[:200]}); {fetch}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{where}: holds a {type(state).__name__}, not a state dict of tensors; {fetch}")
    return state


def build_classifier(name: str, weights: str | Path | None) -> tuple[nn.Module, bool]:
    """(model with a 2-class output, pretrained) for `name` in ARCHS.

    With weights, the ImageNet state dict is loaded before the head is replaced
    and the backbone is frozen; without, everything is trainable.
    Input: (B, 3, S, S) float32, ImageNet-normalized; output: (B, 2) logits.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown classifier {name!r}; choose one of {sorted(ARCHS)}")
    arch = ARCHS[name]
    model = arch.constructor(weights=None)
    if weights is not None:
        state = load_state_dict(weights, name)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(
                f"models.{name}.weights={str(weights)!r} does not match {name}: {str(exc).splitlines()[0]} "
                f"(expected torchvision's {arch.weights_file})"
            ) from exc
        for param in arch.frozen_part(model).parameters():
            param.requires_grad = False
    arch.replace_head(model)
    return model, weights is not None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def set_train_mode(model: nn.Module, name: str, pretrained: bool) -> None:
    """model.train(), but frozen layers stay in eval mode so BatchNorm statistics stay ImageNet's."""
    model.train()
    if pretrained:
        ARCHS[name].frozen_part(model).eval()
        if name == "resnet101":
            model.fc.train()
