"""VGG16 and ResNet101 pneumonia classifiers.

With ImageNet weights (the seed study): VGG16 keeps its features frozen and gets
a 2-class last layer; ResNet101 is frozen whole and gets a small MLP head.

Without pretrained weights (`weights: null`, the built-in sample's default, since
nothing is downloaded there): a linear probe. The backbone stays frozen at its
seeded random init, each stage's output is averaged over space (VGG16: the last
conv block, 512 values; ResNet101: layer1..layer4, 3,840 values), standardized
with the training split's statistics and fed to one Linear layer. Training the
whole random network with SGD for a few epochs learns nothing on a small sample
(it called every test image normal); the probe separates it (README, The models).
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

from pneumoflow.models import catalog

log = logging.getLogger(__name__)

SEED_HEAD, PROBE_HEAD = "seed", "probe"


class WeightsError(ValueError):
    """A configured weight file that is missing, unsafe or for another architecture."""


@dataclass(frozen=True)
class Arch:
    """Everything model-specific about one classifier."""

    constructor: Callable[..., nn.Module]
    weights_enum: str  # torchvision's weights enum, e.g. VGG16_Weights
    # the seed's head surgery and the part frozen when pretrained (the new head stays trainable)
    replace_head: Callable[[nn.Module], None]
    frozen_part: Callable[[nn.Module], nn.Module]
    seed_split: Callable[[nn.Module], tuple[nn.Module, nn.Module]]  # (frozen backbone, head)
    probe_stages: Callable[[nn.Module], list[nn.Module]]  # stages whose pooled outputs the probe reads


def _vgg16_head(model: nn.Module) -> None:
    model.classifier[6] = nn.Linear(4096, 2)


def _resnet101_head(model: nn.Module) -> None:
    model.fc = nn.Sequential(nn.Linear(2048, 128), nn.ReLU(inplace=True), nn.Linear(128, 2))


def _resnet_trunk(model: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
    return [stem, model.layer2, model.layer3, model.layer4]


ARCHS = {
    "vgg16": Arch(
        torchvision.models.vgg16,
        "VGG16_Weights",
        _vgg16_head,
        lambda m: m.features,
        lambda m: (nn.Sequential(m.features, m.avgpool, nn.Flatten(1)), m.classifier),
        lambda m: [m.features],
    ),
    "resnet101": Arch(
        torchvision.models.resnet101,
        "ResNet101_Weights",
        _resnet101_head,
        lambda m: m,
        lambda m: (nn.Sequential(*_resnet_trunk(m), m.avgpool, nn.Flatten(1)), m.fc),
        _resnet_trunk,
    ),
}


class PooledStages(nn.Module):
    """(B, 3, S, S) float32 -> (B, D) float32: each stage's output averaged over space, concatenated."""

    def __init__(self, stages: list[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean((2, 3)))
        return torch.cat(pooled, 1)


class Standardize(nn.Module):
    """(B, D) -> (B, D): (x - mean) / std with the training split's statistics (buffers, saved)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ProbeClassifier(nn.Module):
    """A frozen random backbone's pooled stage outputs -> Standardize -> Linear(D, 2)."""

    def __init__(self, backbone: PooledStages, dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(Standardize(dim), nn.Linear(dim, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def load_state_dict(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """Read a torchvision state dict safely (weights_only); WeightsError says what to do."""
    where = f"models.{name}.weights={str(path)!r}"
    fetch = "use weights: imagenet (torchvision's file through torch's hub cache) or torchvision's own file"
    if not Path(path).is_file():
        raise WeightsError(f"{where}: file not found; {fetch}, or set weights: null to train without")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(f"{where}: not a plain PyTorch state dict ({str(exc)[:200]}); {fetch}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{where}: holds a {type(state).__name__}, not a state dict of tensors; {fetch}")
    return state


def torchvision_weights(name: str, weights: str):
    """torchvision's weights enum member for an imagenet-style `weights:` value (e.g.
    ResNet101_Weights.IMAGENET1K_V1); its .url names the file the hub cache holds."""
    enum = getattr(torchvision.models, ARCHS[name].weights_enum)
    return enum[catalog.imagenet_name(name, weights)]


def ensure_weights(name: str, weights: str | None) -> Path | None:
    """The local file for a `weights:` value, downloading torchvision's file into torch's hub cache
    when it is missing there (as torchvision does). WeightsError when that fails (offline)."""
    path = catalog.weights_file(name, weights)
    if weights is None or path is None or path.is_file() or catalog.imagenet_name(name, weights) is None:
        return path
    url = torchvision_weights(name, weights).url
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # torchvision's file names carry the start of their sha256: check_hash verifies it
        torch.hub.load_state_dict_from_url(
            url, model_dir=str(path.parent), check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as exc:
        raise WeightsError(f"{catalog.missing_weights_message(name, weights)} ({exc})") from exc
    return path


def build_classifier(name: str, weights: str | None, head: str | None = None) -> tuple[nn.Module, str]:
    """(model with a 2-class output, head kind) for `name` in ARCHS.

    `weights` is a `models.<name>.weights` value: imagenet or a torchvision enum name (from the hub
    cache), a file path, or None. With weights the ImageNet state dict is loaded, the backbone
    frozen and the seed's head added (head kind "seed"); without, the linear probe (kind "probe").
    `head` forces a kind (loading a saved model). Input: (B, 3, S, S) float32, ImageNet-normalized;
    output: (B, 2) logits.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown classifier {name!r}; choose one of {sorted(ARCHS)}")
    arch = ARCHS[name]
    kind = head or (PROBE_HEAD if weights is None else SEED_HEAD)
    model = arch.constructor(weights=None)
    path = ensure_weights(name, weights)
    if path is not None:  # weights given: None means no pretrained weights
        state = load_state_dict(path, name)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(
                f"models.{name}.weights={str(weights)!r} does not match {name}: {str(exc).splitlines()[0]} "
                f"(expected torchvision's {name} ImageNet file)"
            ) from exc
    if kind == PROBE_HEAD:
        backbone = PooledStages(arch.probe_stages(model))
        with torch.no_grad():
            dim = backbone.eval()(torch.zeros(1, 3, 32, 32)).shape[1]
        model = ProbeClassifier(backbone, dim)
        frozen = model.backbone
    else:
        frozen = arch.frozen_part(model)
    for param in frozen.parameters():
        param.requires_grad = False
    if kind == SEED_HEAD:
        arch.replace_head(model)  # after freezing: the new head trains
    return model, kind


def split_backbone(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(frozen backbone, trainable head) of a classifier: head(backbone(x)) == model(x).

    backbone: (B, 3, S, S) float32 -> (B, D) float32 features (seed heads: D = 25088 for VGG16,
    2048 for ResNet101; probe: the pooled stages); the head shares its parameters with `model`,
    so training it trains the model.
    """
    if isinstance(model, ProbeClassifier):
        return model.backbone, model.head
    return ARCHS[name].seed_split(model)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but modules whose parameters are all frozen stay in eval mode, so their
    BatchNorm statistics stay those of the weights (ImageNet, or the random init)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
