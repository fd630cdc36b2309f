"""The one place a data source is chosen: data.source -> its reader.

A reader is a module with four functions (rsna and imagefolder; the synthetic sample is
generated in the RSNA layout, so the RSNA reader reads it):
- list_inputs(data_dir) -> [(id, entry with .stat())]: the candidate images, whose sizes and
  times the Snakefile digests to rerun exactly the shards whose images changed;
- source_settings(config) -> dict: the config values its manifest reads (a rule param);
- write_manifest(data_dir, settings, *, n_shards, manifest_out, boxes_out, rejected_out,
  rejected_log, max_rejected_fraction): the manifest, boxes and refusals;
- write_jpgs(manifest_tsv, shard, data_dir, out_dir, rejected_out): one shard's JPGs.
"""

from __future__ import annotations

from types import ModuleType

SOURCES = ("synthetic", "rsna", "imagefolder")


def reader(source: str) -> ModuleType:
    """The reader module of data.source `source`."""
    if source in ("rsna", "synthetic"):
        from pneumoflow.sources import rsna

        return rsna
    if source == "imagefolder":
        from pneumoflow.sources import imagefolder  # OpenCV and pandas: only for this source

        return imagefolder
    raise ValueError(f"expected data.source {', '.join(SOURCES)}; got {source!r}")
