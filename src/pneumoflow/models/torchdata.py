"""Arrays -> PyTorch batches for the classifiers (one code path for training and prediction)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What to_model_input does, as saved in each model.pt (training.classifier.save_model)
NORMALIZATION = {"input": "uint8 grayscale / 255, as 3 channels", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) uint8 grayscale -> (B, 3, S, S) float32, ImageNet-normalized."""
    x = images.float().div_(255).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def augmentation(hflip: bool, rotate_degrees: float, scale: float) -> v2.Transform | None:
    """Per-image training augmentation on (1, S, S) uint8 tensors; None when all are off.

    Horizontal flips are off by default: they move the heart to the right side,
    which no real chest radiograph shows.
    """
    steps: list[v2.Transform] = []
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if rotate_degrees or scale:
        steps.append(v2.RandomAffine(degrees=rotate_degrees, scale=(1 - scale, 1 + scale) if scale else None))
    return v2.Compose(steps) if steps else None


class RowDataset(Dataset):
    """Items (row as stored, label int64) from `rows`, indexable by row: an array, or
    diskrows.DiskRows, which reads each row from disk when asked (cached backbone features)."""

    def __init__(self, rows, labels: np.ndarray):
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
        self.rows = rows
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.asarray(self.rows[index])), self.labels[index]


class ArrayDataset(RowDataset):
    """Items (image (1, S, S) uint8, label int64) from (S, S) uint8 rows, augmented by `transform`."""

    def __init__(self, images, labels: np.ndarray, transform: v2.Transform | None = None):
        super().__init__(images, labels)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = super().__getitem__(index)
        image = image.unsqueeze(0)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
