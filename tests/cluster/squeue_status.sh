#!/usr/bin/env bash
# The cluster-generic test's status command: running, success or failed for a Slurm job id.
set -uo pipefail
state=$(squeue -h -t all -j "$1" -o %T 2>/dev/null)
case "$state" in
    COMPLETED) echo success ;;
    FAILED | CANCELLED* | TIMEOUT | OUT_OF_MEMORY | NODE_FAIL | BOOT_FAIL | DEADLINE | PREEMPTED) echo failed ;;
    *) echo running ;;
esac
