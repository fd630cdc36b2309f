"""Patient-level train/val/test split, stratified by class, stable under additions."""

from __future__ import annotations

from collections import defaultdict

from pneumoflow.core.ids import stable_fraction

SPLITS = ("train", "val", "test")


def assign_splits(
    patient_ids: list[str], strata: list[str], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Split name per patient, in input order.

    Within each stratum, patients are ordered by a seeded hash of their id; the
    first round(n * test_fraction) go to test, the next round(n * val_fraction)
    to val, the rest to train. The same ids and seed always give the same split,
    and adding patients moves few existing ones.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"split fractions must be >= 0 and sum below 1, got val={val_fraction} test={test_fraction}"
        )
    if len(patient_ids) != len(strata):
        raise ValueError(f"{len(patient_ids)} ids but {len(strata)} strata")
    groups: dict[str, list[str]] = defaultdict(list)
    for pid, stratum in zip(patient_ids, strata, strict=True):
        groups[stratum].append(pid)
    assigned: dict[str, str] = {}
    for members in groups.values():
        members.sort(key=lambda pid: stable_fraction(pid, salt=f"split:{seed}:"))
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        for rank, pid in enumerate(members):
            assigned[pid] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [assigned[pid] for pid in patient_ids]
