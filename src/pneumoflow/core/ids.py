"""Patient identifiers: validation and stable shard assignment."""

from __future__ import annotations

import hashlib
import re

# RSNA ids are UUIDs; we accept any plain token that is safe as a file name.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_plain_id(patient_id: str) -> bool:
    """True when `patient_id` is safe as a file name: no path separators, no `..`."""
    return bool(_PLAIN_ID.match(patient_id)) and ".." not in patient_id


def stable_fraction(patient_id: str, salt: str = "") -> float:
    """Map an id to [0, 1) with sha1, the same on every machine and Python run."""
    digest = hashlib.sha1(f"{salt}{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shard_of(patient_id: str, n_shards: int) -> int:
    """Shard number in [0, n_shards) for a patientId; a pure function of the id."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return int(stable_fraction(patient_id, salt="shard:") * n_shards)


# preprocess.shards: auto. The count depends on the image count only (never on the machine's
# cores), so the same data gives the same shards, and so the same training order, anywhere.
IMAGES_PER_SHARD = 4000
MAX_AUTO_SHARDS = 64


def auto_shard_count(n_images: int) -> int:
    """Shards for `n_images`: the smallest power of two that keeps each shard at or under
    IMAGES_PER_SHARD images on average, from 1 to MAX_AUTO_SHARDS.

    Powers of two because shard_of(id, 2n) is 2 * shard_of(id, n) or one more: when the count
    doubles, each new shard is half of one old shard, and it changes only when the image count
    passes 4,000, 8,000, 16,000, ... (26,684 RSNA images: 8 shards of about 3,300).
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    shards = 1
    while shards * IMAGES_PER_SHARD < n_images and shards < MAX_AUTO_SHARDS:
        shards *= 2
    return shards


def shard_name(shard: int) -> str:
    """Zero-padded shard label used in paths, e.g. 3 -> '03'."""
    return f"{shard:02d}"
