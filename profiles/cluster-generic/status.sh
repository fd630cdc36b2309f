#!/usr/bin/env bash
# Print running, success or failed for a PBS job id (Snakemake cluster-generic status command).
# A qstat hiccup prints running, so Snakemake asks again instead of failing a healthy job.
# SGE: `qstat -j ID` while queued/running, then `qacct -j ID` for exit_status and failed.
set -uo pipefail
jobid=$1
if ! info=$(qstat -x -f "$jobid" 2>&1); then
    case "$info" in
        *"Unknown Job Id"*) echo failed ;;
        *) echo running ;;
    esac
    exit 0
fi
state=$(awk -F' = ' '$1 ~ /job_state$/ {print $2}' <<<"$info")
exit_status=$(awk -F' = ' '$1 ~ /[Ee]xit_status$/ {print $2}' <<<"$info")
case "$state" in
    F | C) if [ "$exit_status" = 0 ]; then echo success; else echo failed; fi ;;
    *) echo running ;;
esac
