#!/usr/bin/env bash
# Cancel the given PBS job ids (Snakemake calls this on Ctrl-C). SGE: same, with qdel.
exec qdel "$@"
