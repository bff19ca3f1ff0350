"""DVC round trip: run (stub CLI), scripts/dvc_push.sh (`make dvc-push`) to a local remote,
clone, scripts/dvc_pull.sh (`make dvc-pull`), and Snakemake has nothing to do. DVC commands run
one at a time (repository-wide lock)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TEST = ["--configfile", "config/test.yaml"]


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_push_clone_pull_and_nothing_to_do(stub_study, tmp_path):
    repo, env = stub_study.root, stub_study.env
    for name in ("scripts", "detnas"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    (repo / ".gitignore").write_text("/results/\n/logs/\n.snakemake/\n/.stub-bin/\n"
                                     "/stub-calls.log\n__pycache__/\n")
    remote = tmp_path.parent / f"{tmp_path.name}-remote"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh(["dvc", "remote", "add", "-d", "storage", str(remote)], repo, env)
    sh([*git, "add", "-A"], repo, env)
    sh([*git, "commit", "-qm", "study"], repo, env)

    stub_study.snakemake("--cores", "2", *TEST)
    sh(["scripts/dvc_push.sh"], repo, env)
    sh([*git, "add", "dvc.lock"], repo, env)
    sh([*git, "commit", "-qm", "record the study"], repo, env)

    metrics = json.loads(sh(["dvc", "metrics", "show", "--json"], repo, env))
    table = metrics[""]["data"]["results/metrics.json"]["data"]
    assert table["detnas"]["synth"]["fpn"]["mmap"] == 0.1
    assert table["shufflenetv2"]["cls"]["top1"] == 0.3
    plots = json.loads(sh(["dvc", "plots", "show", "--json"], repo, env))["data"]
    assert "results/plots/search-synth-fpn-detnas.csv" in plots
    assert any(name.startswith("results/report/figures/") for name in plots)

    clone = tmp_path.parent / f"{tmp_path.name}-clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    shutil.copytree(repo / ".stub-bin", clone / ".stub-bin")
    assert not (clone / "results").exists()
    sh(["scripts/dvc_pull.sh", *TEST], clone, env)
    ckpt = clone / "results/retrain/detnas/synth/fpn/checkpoint.pt"
    assert ckpt.read_text() == (repo / ckpt.relative_to(clone)).read_text()
    assert (clone / "results/mlflow.db").exists() or (clone / "results/tracking.json").exists()
    dry = subprocess.run(["snakemake", "-n", *TEST], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert "Nothing to be done" in dry.stdout, dry.stdout
    shutil.rmtree(remote)
    shutil.rmtree(clone)
