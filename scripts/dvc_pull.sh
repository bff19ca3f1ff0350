#!/usr/bin/env bash
# Restore a recorded study (checkpoints, data, MLflow store, report) in a clone:
#   scripts/dvc_pull.sh [SNAKEMAKE ARGS, e.g. --configfile config/test.yaml]     (make dvc-pull)
# DVC writes the files with fresh, arbitrary modification times; `snakemake --touch` then marks
# them up to date in DAG order, so a following `snakemake -n` has nothing to do. Pass the same
# --configfile the study ran with. --no-hooks: the Snakefile's onsuccess would end the MLflow
# parent run again (a new end time), changing the restored store; the pull leaves every restored
# file as it was pushed, so `dvc status` stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."

dvc pull
snakemake --touch --no-hooks --cores 1 --quiet rules "$@"
