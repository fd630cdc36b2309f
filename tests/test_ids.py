from collections import Counter

import pytest

from pneumoflow.core.ids import auto_shard_count, is_plain_id, shard_name, shard_of


@pytest.mark.parametrize(
    "patient_id, plain",
    [
        ("0004cfab-14fd-4e49-80ba-63a80b6bddd6", True),
        ("patient_01.v2", True),
        ("../etc/passwd", False),
        ("a/b", False),
        ("a\\b", False),
        ("a..b", False),
        ("", False),
        (".hidden", False),
        ("x" * 200, False),
    ],
)
def test_is_plain_id(patient_id, plain):
    assert is_plain_id(patient_id) is plain


def test_shard_is_a_pure_function_of_the_id():
    ids = [f"patient-{i}" for i in range(2000)]
    first = [shard_of(pid, 8) for pid in ids]
    assert first == [shard_of(pid, 8) for pid in reversed(ids)][::-1]
    counts = Counter(first)
    assert set(counts) == set(range(8))
    # 2000 ids over 8 shards: 250 expected, a hash keeps every shard near it
    assert all(180 < c < 320 for c in counts.values()), counts


def test_shard_does_not_depend_on_other_ids():
    # adding ids never moves one already assigned
    assert shard_of("abc", 8) == shard_of("abc", 8)
    assert all(0 <= shard_of(f"id{i}", 3) < 3 for i in range(100))


def test_shard_rejects_zero_shards():
    with pytest.raises(ValueError, match="n_shards"):
        shard_of("abc", 0)


def test_shard_name_is_zero_padded():
    assert shard_name(3) == "03"
    assert shard_name(12) == "12"


@pytest.mark.parametrize(
    "n_images, shards",
    [(0, 1), (30, 1), (240, 1), (4000, 1), (4001, 2), (8000, 2), (8001, 4), (26_684, 8), (10**7, 64)],
)
def test_auto_shard_count_is_a_power_of_two_sized_by_the_images(n_images, shards):
    assert auto_shard_count(n_images) == shards


def test_doubling_the_shards_splits_each_shard_in_two():
    # auto shards grow by doubling: shard k of n becomes 2k or 2k + 1 of 2n, never another
    ids = [f"patient-{i}" for i in range(500)]
    assert all(shard_of(pid, 8) // 2 == shard_of(pid, 4) for pid in ids)
