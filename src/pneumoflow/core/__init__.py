"""Small helpers every layer uses: atomic writes, tables, ids, splits, QC rows, logs,
job environment, provenance, code digests."""
