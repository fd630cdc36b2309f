#!/usr/bin/env bash
# Submit one Snakemake job script with qsub (PBS Pro / Torque) and print the job id.
# Usage: submit.sh RULE THREADS MEM_MB RUNTIME_MIN GPUS QUEUE JOBSCRIPT
# SGE: replace the qsub line with
#   qsub -terse -V -cwd -N "smk.$rule" -pe smp "$threads" -l h_vmem="${mem_mb}M",h_rt="$walltime" \
#        -q "$queue" -j y -o logs/cluster/ "$jobscript"
set -euo pipefail
rule=$1 threads=$2 mem_mb=$3 runtime=$4 gpus=$5 queue=$6 jobscript=$7
walltime=$(printf '%02d:%02d:00' $((runtime / 60)) $((runtime % 60)))
select="select=1:ncpus=$threads:mem=${mem_mb}mb"
if [ "$gpus" -gt 0 ]; then select="$select:ngpus=$gpus"; fi
mkdir -p logs/cluster
qsub -V -N "smk.$rule" -q "$queue" -l "$select" -l walltime="$walltime" \
    -j oe -o logs/cluster/ "$jobscript"
