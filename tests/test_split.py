from collections import Counter

import pytest

from pneumoflow.core.split import assign_splits


def _ids(n, prefix="p"):
    return [f"{prefix}{i}" for i in range(n)]


def test_split_is_stratified_per_class():
    ids = _ids(100) + _ids(40, "q")
    strata = ["A"] * 100 + ["B"] * 40
    splits = assign_splits(ids, strata, 0.15, 0.15, seed=42)
    per_class = Counter(zip(strata, splits, strict=True))
    assert per_class[("A", "test")] == 15 and per_class[("A", "val")] == 15
    assert per_class[("B", "test")] == 6 and per_class[("B", "val")] == 6
    assert per_class[("A", "train")] == 70 and per_class[("B", "train")] == 28


def test_split_is_deterministic_and_seeded():
    ids, strata = _ids(200), ["A"] * 200
    first = assign_splits(ids, strata, 0.2, 0.2, seed=1)
    assert first == assign_splits(ids, strata, 0.2, 0.2, seed=1)
    assert first != assign_splits(ids, strata, 0.2, 0.2, seed=2)
    # input order does not matter
    shuffled = assign_splits(ids[::-1], strata, 0.2, 0.2, seed=1)[::-1]
    assert shuffled == first


def test_adding_patients_moves_few():
    before = dict(zip(_ids(1000), assign_splits(_ids(1000), ["A"] * 1000, 0.15, 0.15, 7), strict=True))
    ids = _ids(1100)
    after = dict(zip(ids, assign_splits(ids, ["A"] * 1100, 0.15, 0.15, 7), strict=True))
    moved = sum(before[p] != after[p] for p in before)
    assert moved < 100  # about 10% new patients displace at most a few boundary ones


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (-0.1, 0.2), (0.7, 0.4)])
def test_bad_fractions_are_refused(val, test):
    with pytest.raises(ValueError, match="split fractions"):
        assign_splits(["a"], ["A"], val, test, seed=0)
