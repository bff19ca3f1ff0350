#!/usr/bin/env bash
# Record a finished study with DVC and push it to the default remote.
#   scripts/dvc_push.sh            (make dvc-push)
# The remote, once per repository (docs/dvc-mlflow.md): a local folder for the
# embedded default, `dvc remote add -d storage /srv/dvc/detnas`, or S3 / SSH for a team,
# `dvc remote add -d storage s3://bucket/detnas` (ssh://host/path); or DETNAS_DVC_REMOTE=URL here
# adds it as the default remote. Without a default remote nothing is written. Then commit the
# record, dvc.lock (and .dvc/config on first use), so that a clone can `make dvc-pull`. DVC takes a
# repository-wide lock: run one DVC command at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${DETNAS_DVC_REMOTE:-}" ]; then
    [ -d .dvc ] || dvc init -q
    dvc remote add -d -f storage "$DETNAS_DVC_REMOTE"
fi
if [ ! -d .dvc ] || ! dvc remote default >/dev/null 2>&1; then
    cat >&2 <<'MSG'
dvc_push: no default DVC remote, nothing written. Set one, then rerun `make dvc-push`:
    dvc remote add -d storage /srv/dvc/detnas          # a local folder (or a shared mount)
    dvc remote add -d storage s3://bucket/detnas       # S3 (pip install 'dvc[s3]')
    dvc remote add -d storage ssh://host/srv/detnas    # SSH (pip install 'dvc[ssh]')
or run `DETNAS_DVC_REMOTE=URL make dvc-push`. Commit .dvc/config so that clones find it.
MSG
    exit 1
fi
python scripts/collect_metrics.py results
dvc commit -f study
dvc push
echo "dvc_push: pushed; now commit the record: git add dvc.lock .dvc/config && git commit"
