#!/usr/bin/env bash
# Restore a recorded study (checkpoints, data, MLflow store, report) in a clone:
#   scripts/dvc_pull.sh [SNAKEMAKE ARGS, e.g. --configfile config/test.yaml]     (make dvc-pull)
# DVC writes the files with fresh, arbitrary modification times; `snakemake --touch` then marks
# them up to date in DAG order, so a following `snakemake -n` has nothing to do. Pass the same
# --configfile the study ran with.
set -euo pipefail
cd "$(dirname "$0")/.."

dvc pull
snakemake --touch --cores 1 --quiet rules "$@"
