"""Rows read from disk one at a time: the classifiers' split and feature cache."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pneumoflow.core.diskrows import DiskRows, save_rows
from pneumoflow.models.torchdata import ArrayDataset
from pneumoflow.training.classifier import load_split


def _shards(tmp_path, sizes=(5, 3, 4), side=8):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 255, (n, side, side), dtype=np.uint8) for n in sizes]
    paths = []
    for i, images in enumerate(parts):
        paths.append(tmp_path / f"{i}.npz")
        np.savez(paths[-1], images=images, labels=np.arange(len(images), dtype=np.uint8) % 2)
    return paths, np.concatenate(parts)


def test_rows_of_several_shards_read_as_one_array(tmp_path):
    paths, want = _shards(tmp_path)
    rows = DiskRows([(p, "images") for p in paths])
    assert len(rows) == 12 and rows.row_shape == (8, 8) and rows.dtype == np.uint8
    for i in range(12):
        np.testing.assert_array_equal(rows[i], want[i])
    with pytest.raises(IndexError):
        rows[12]
    again = pickle.loads(pickle.dumps(rows))  # as a spawned DataLoader worker gets it
    np.testing.assert_array_equal(again[7], want[7])


def test_loader_over_disk_rows_gives_the_in_memory_batches(tmp_path):
    paths, want = _shards(tmp_path)
    images, labels = load_split(paths, "train")
    batches = {}
    for name, source, workers in (("disk", images, 2), ("memory", want, 0)):
        loader = DataLoader(ArrayDataset(source, labels), batch_size=5, shuffle=True,
                            generator=torch.Generator().manual_seed(1), num_workers=workers)  # fmt: skip
        batches[name] = [(x.clone(), y.clone()) for x, y in loader]
    for (x, y), (x_mem, y_mem) in zip(batches["disk"], batches["memory"], strict=True):
        assert x.shape[1:] == (1, 8, 8) and torch.equal(x, x_mem) and torch.equal(y, y_mem)


def test_files_rows_cannot_be_read_from_are_refused(tmp_path):
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="is compressed.*rebuild it"):
        DiskRows([(compressed, "images")])
    objects = tmp_path / "o.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds pickled Python objects"):
        DiskRows([(objects, None)])
    with pytest.raises(ValueError, match="no such array"):
        DiskRows([(compressed, "masks")])
    paths, _ = _shards(tmp_path)
    with pytest.raises(ValueError, match="different shapes"):
        DiskRows([(paths[0], "images"), (paths[0], "labels")])
    truncated = tmp_path / "t.npy"
    np.save(truncated, np.zeros((4, 100), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-50])
    with pytest.raises(OSError, match="shorter than its header says"):
        DiskRows([(truncated, None)])[3]


def test_saved_rows_read_back_and_count_is_checked(tmp_path):
    batches = [np.full((3, 5), i, np.float32) for i in range(3)]
    rows = save_rows(tmp_path / "f.npy", iter(batches), 9)
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), np.concatenate(batches))
    np.testing.assert_array_equal(rows[4], np.full(5, 1, np.float32))
    with pytest.raises(ValueError, match="2 rows written, 3 announced"):
        save_rows(tmp_path / "g.npy", iter([np.zeros((2, 5))]), 3)


def test_reading_a_split_holds_a_batch_not_the_split(tmp_path):
    """One pass over 240 MB of shards, as a training epoch reads them, in a fresh process."""
    paths, _ = _shards(tmp_path, sizes=(1200,) * 4, side=224)  # 4 shards of 60 MB
    code = f"""
import re
from torch.utils.data import DataLoader
from pneumoflow.models.torchdata import ArrayDataset
from pneumoflow.training.classifier import load_split
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
before = peak()
images, labels = load_split({[str(p) for p in paths]!r}, "train")
seen = sum(len(y) for _, y in DataLoader(ArrayDataset(images, labels), batch_size=32, shuffle=True))
print(seen, peak() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seen, growth_mb = map(int, out.split())
    assert seen == 4800
    assert growth_mb < 60, f"peak RSS grew by {growth_mb} MB over a 240 MB split"
