"""ImageNet weights through torchvision's enums and torch's hub cache ($TORCH_HOME/hub/checkpoints).

No test here touches the network: the cache is filled with a random-init state dict saved under
torchvision's file name, and downloads are stubbed.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pneumoflow.models import catalog, classifiers
from pneumoflow.models.classifiers import WeightsError, build_classifier, ensure_weights

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME for this test (torch.hub.get_dir() follows it)."""
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def vgg16_state(tmp_path_factory) -> Path:
    """torchvision's vgg16 at a seeded random init, saved once (550 MB) for this module."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg16") / VGG16_FILE
    torch.save(torchvision.models.vgg16().state_dict(), path)
    yield path
    path.unlink()


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_hub_checkpoints_is_torchs_own_cache(torch_home):
    assert catalog.hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"
    assert catalog.hub_checkpoints() == torch_home / "hub" / "checkpoints"


@pytest.mark.parametrize(
    "model, enum_name", [(m, e) for m, files in catalog.WEIGHT_FILES.items() for e in files]
)
def test_weight_files_are_torchvisions_own(model, enum_name):
    enum = getattr(torchvision.models, classifiers.ARCHS[model].weights_enum)
    url = enum[enum_name].url
    assert url == catalog.WEIGHTS_URL + catalog.WEIGHT_FILES[model][enum_name]


@pytest.mark.parametrize(
    "model, weights, file_name",
    [
        ("vgg16", "imagenet", VGG16_FILE),
        ("vgg16", "ImageNet", VGG16_FILE),
        ("vgg16", "IMAGENET1K_V1", VGG16_FILE),
        ("resnet101", "imagenet", "resnet101-63fe2227.pth"),  # V1: the seed study's weights
        ("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth"),
    ],
)
def test_weights_values_name_hub_cache_files(torch_home, model, weights, file_name):
    assert catalog.weights_file(model, weights) == torch_home / "hub" / "checkpoints" / file_name


def test_paths_and_null_are_not_hub_files(torch_home, tmp_path):
    assert catalog.weights_file("vgg16", str(tmp_path / "mine.pth")) == tmp_path / "mine.pth"
    assert catalog.weights_file("vgg16", None) is None
    assert catalog.imagenet_name("vgg16", None) is None
    assert catalog.imagenet_name("vgg16", str(tmp_path / "mine.pth")) is None


def test_imagenet_weights_load_from_the_hub_cache(torch_home, vgg16_state, monkeypatch):
    """A cached file is used as it is: no download is tried."""
    cached = torch_home / "hub" / "checkpoints" / VGG16_FILE
    cached.parent.mkdir(parents=True)
    cached.symlink_to(vgg16_state)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    model, kind = build_classifier("vgg16", "imagenet")
    assert kind == "seed"
    saved = torch.load(vgg16_state, weights_only=True)
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, saved[f"features.{key}"]), key
    assert not any(p.requires_grad for p in model.features.parameters())
    head = model.classifier[6]
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (4096, 2)
    assert head.weight.requires_grad and head.bias.requires_grad
    # fc6 and fc7 keep the file's weights and train, as in the seed study
    assert torch.equal(model.classifier[0].weight, saved["classifier.0.weight"])
    assert model.classifier[0].weight.requires_grad


def test_missing_file_is_downloaded_into_the_hub_cache(torch_home, vgg16_state, monkeypatch):
    """What torchvision itself does: torch.hub fetches the enum's URL into the cache, hash checked."""
    calls = []

    def fake_download(url, model_dir, check_hash, weights_only):
        calls.append((url, Path(model_dir), check_hash))
        (Path(model_dir) / url.rsplit("/", 1)[1]).symlink_to(vgg16_state)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    path = ensure_weights("vgg16", "imagenet")
    assert calls == [(VGG16_URL, torch_home / "hub" / "checkpoints", True)]
    assert path == torch_home / "hub" / "checkpoints" / VGG16_FILE and path.is_file()
    ensure_weights("vgg16", "imagenet")
    assert len(calls) == 1  # cached now


@pytest.mark.parametrize("error", [urllib.error.URLError("no route to host"), OSError("network down")])
def test_offline_without_the_file_says_what_to_do(torch_home, monkeypatch, error):
    def offline(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as caught:
        build_classifier("vgg16", "imagenet")
    message = str(caught.value)
    assert VGG16_FILE in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert VGG16_URL in message
    assert "models.vgg16.weights='imagenet'" in message and "null" in message


def test_a_path_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(WeightsError, match="file not found"):
        build_classifier("vgg16", str(tmp_path / VGG16_FILE))
