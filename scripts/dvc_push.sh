#!/usr/bin/env bash
# Record a finished study with DVC and push it to the default remote.
#   scripts/dvc_push.sh            (make dvc-push)
# Then commit dvc.lock (and .dvc/config on first use) to git, so a clone can `make dvc-pull`.
# Remote: configure one once, e.g. `dvc remote add -d storage s3://bucket/detnas`, or set
# DETNAS_DVC_REMOTE=URL here to add it as the default remote. DVC takes a repository-wide lock:
# run one DVC command at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d .dvc ] || dvc init -q
if [ -n "${DETNAS_DVC_REMOTE:-}" ]; then
    dvc remote add -d -f storage "$DETNAS_DVC_REMOTE"
fi
python scripts/collect_metrics.py results
dvc commit -f study
dvc push
echo "dvc_push: pushed; now commit the record: git add dvc.lock .dvc/config && git commit"
