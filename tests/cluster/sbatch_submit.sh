#!/usr/bin/env bash
# The cluster-generic test's submit command: hand the job script to the local Slurm, print its id.
# Usage: sbatch_submit.sh RULE THREADS MEM_MB JOBSCRIPT
set -euo pipefail
rule=$1 threads=$2 mem_mb=$3 jobscript=$4
mkdir -p logs/cluster
sbatch --parsable --job-name="smk.$rule" --comment="rule_$rule" --cpus-per-task="$threads" \
    --mem="$mem_mb" --output="logs/cluster/%j.out" "$jobscript"
