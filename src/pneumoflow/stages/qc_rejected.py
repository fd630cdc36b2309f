"""Rule qc_rejected: every refused input of the manifest and dicom_to_jpg jobs in one table."""

from __future__ import annotations

from pneumoflow.core.qc import combine


def run(*, manifest: str, shards: list[str], rejected: str) -> None:
    """Write to `rejected` the refusals of the `manifest` job and of each dicom_to_jpg shard."""
    combine([manifest, *shards], rejected)
