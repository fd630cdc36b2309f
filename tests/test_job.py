"""core.job: a Snakemake job's keywords reach a stage's run() by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pneumoflow.core.job import arguments


class Named(dict):
    """Stands in for Snakemake's named lists: items() gives (name, value)."""


def job(**sections):
    parts = {s: Named(sections.get(s, {})) for s in ("wildcards", "input", "output", "params", "log")}
    return SimpleNamespace(rule="demo", threads=3, **parts)


def stage(*, shard, manifest, npz, size=256, threads=1):
    return shard, manifest, npz, size, threads


def test_each_keyword_comes_from_the_section_that_names_it():
    snakemake = job(
        wildcards={"shard": "07"},
        input={"manifest": "m.tsv", "jpg": "jpg/07"},
        output={"npz": "a.npz"},
        params={"code": "digest", "size": 128},
    )
    kwargs = arguments(snakemake, stage)
    assert kwargs == {"shard": "07", "manifest": "m.tsv", "npz": "a.npz", "size": 128, "threads": 3}
    assert stage(**kwargs) == ("07", "m.tsv", "a.npz", 128, 3)  # `code` and `jpg` are not passed


def test_several_files_under_one_name_arrive_as_a_list_of_str():
    snakemake = job(wildcards={"shard": "00"}, input={"manifest": ["a.tsv", "b.tsv"]}, output={"npz": "x"})
    assert arguments(snakemake, stage)["manifest"] == ["a.tsv", "b.tsv"]


def test_a_name_in_two_sections_is_refused():
    snakemake = job(wildcards={"shard": "00"}, input={"manifest": "m"}, output={"npz": "x", "manifest": "y"})
    with pytest.raises(ValueError, match=r"output.manifest has the name of input.manifest"):
        arguments(snakemake, stage)


def test_a_param_named_like_the_rule_or_its_threads_is_refused():
    snakemake = job(wildcards={"shard": "00"}, params={"threads": 4})
    with pytest.raises(ValueError, match=r"params.threads has the name of threads"):
        arguments(snakemake, stage)


def test_a_keyword_the_rule_does_not_give_is_named():
    snakemake = job(wildcards={"shard": "00"}, input={"manifest": "m"})
    with pytest.raises(TypeError, match=r"rule demo gives no npz"):
        arguments(snakemake, stage)
