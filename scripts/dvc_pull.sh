#!/usr/bin/env bash
# Restore a recorded study (checkpoints, data, MLflow store, report) in a clone:
#   scripts/dvc_pull.sh [SNAKEMAKE ARGS, e.g. --configfile config/test.yaml]     (make dvc-pull)
# DVC writes the files with fresh, arbitrary modification times; `snakemake --touch` then marks
# them up to date in DAG order, so a following `snakemake -n` has nothing to do. Pass the same
# --configfile the study ran with. --no-hooks: the Snakefile's onsuccess would end the MLflow
# parent run again (a new end time), changing the restored store; the pull leaves every restored
# file as it was pushed, so `dvc status` stays clean.
# It says one line: what was restored, from which remote (the output of both commands, a few
# hundred lines, only when one fails). The default remote is checked first: a local folder that
# is not there is said in one line naming it (DVC itself would end with "Checkout failed ... Is
# your cache up to date?", naming no remote).
set -euo pipefail
cd "$(dirname "$0")/.."

remote=$(dvc remote default 2>/dev/null) || remote=""
if [ -z "$remote" ]; then
    echo "dvc_pull: no default DVC remote in .dvc/config: the study's repository records the" \
         "one it was pushed to (docs/dvc-mlflow.md)" >&2
    exit 1
fi
url=$(dvc config "remote.$remote.url")
case "$url" in
    file://*) folder=${url#file://} ;;
    *://*) folder="" ;;  # S3, SSH, ...: DVC reaches it, and says why not
    *) folder=$url ;;
esac
if [ -n "$folder" ] && [ ! -d "$folder" ]; then
    echo "dvc_pull: DVC remote '$remote' is the folder $folder, which does not exist: mount it," \
         "or point the remote at where the study was pushed:" \
         "dvc remote modify --local $remote url PATH" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! dvc pull >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
restored=$(grep -E "^[0-9]+ files? |^Everything is up to date" "$log" | tail -n 1)
if ! snakemake --touch --no-hooks --cores 1 "$@" --quiet all >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
echo "dvc_pull: ${restored:-restored} from DVC remote '$remote' ($url); Snakemake marked the" \
     "restored outputs up to date"
