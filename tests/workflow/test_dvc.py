"""DVC round trip as docs/dvc-mlflow.md tells it: run (stub CLI,
real MLflow tracking), `make dvc-push` refused without a remote, the remote set, pushed and
recorded; clone into another folder, `make dvc-pull`, and the study is there as it was pushed
(`dvc status` clean, the MLflow parent run's times unchanged, Snakemake has nothing to do). The
first folder is then deleted: every MLflow run's artifacts open in the clone, and `detnas export`
writes into the clone only. DVC commands run one at a time (repository-wide lock)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from doc_pages import bash_blocks

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LOCAL_REMOTE = "/srv/dvc/detnas"  # docs/dvc-mlflow.md's remote, made a scratch folder

STAGE = """
import torch
from detnas.plan import config
from detnas.plan import typed
from detnas.run import tracking
from detnas.plan.config import DetectorConfig
from detnas.io import save_checkpoint
from detnas.nets.models import build_model, model_meta
from detnas.provenance import provenance

cfg = config.load("config/config.yaml")
spec = {"kind": "shufflenet", "space": "test", "arch": "1-23-01-3"}
tags = {"stage": "retrain-detection", "ablation": "detnas", "dataset": "synth",
        "detector": "fpn", "arch": spec["arch"]}
det = DetectorConfig(min_size=64, max_size=64)
with tracking.start(cfg, "retrain-detection:detnas", tags, arch=spec) as tracker:
    torch.manual_seed(0)
    model = build_model("detection", spec, 3, "fpn", det)
    prov = provenance(typed.to_dict(cfg), cfg.seed, tags=tags, mlflow_run_id=tracker.run_id)
    save_checkpoint("results/retrain/detnas/synth/fpn/checkpoint.pt",
                    {**model_meta("detection", spec, 3, "fpn", det),
                     "model": model.state_dict(), "provenance": prov})
"""
"""A real stage's MLflow run and checkpoint in place of the stub's: an untrained `test`-space
Faster R-CNN whose provenance names its run, as `detnas train detector` writes it."""


def run(cmd: str | list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          shell=isinstance(cmd, str))
    if ok:
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def page_commands(page: str) -> list[list[str]]:
    """The command lines of each bash block of a page of docs/."""
    return bash_blocks((REPO / "docs" / page).read_text())


def use_this_venv(root: Path) -> None:
    """The environment running the tests as ``root``'s .venv, up to date for `make setup`
    (pyproject.toml older than .venv/.installed: make never reinstalls into it)."""
    installed = Path(sys.prefix, ".installed")
    if not installed.exists():
        pytest.skip("make needs the venv `make setup` builds (.venv/.installed)")
    (root / ".venv").symlink_to(sys.prefix)
    stamp = installed.stat().st_mtime - 1
    os.utime(root / "pyproject.toml", (stamp, stamp))


def make_study_repo(repo: Path, env: dict) -> dict:
    """The recipe as a git repository with the test config as its default, the Makefile and the
    environment running the tests as its venv (`make` runs as written)."""
    for name in ("scripts", "detnas"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", "Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, repo / name)
    shutil.copy(repo / "config/test.yaml", repo / "config/config.yaml")
    use_this_venv(repo)
    (repo / ".gitignore").write_text((REPO / ".gitignore").read_text()
                                     + "/.stub-bin/\n/stub-calls.log\n")
    env = {**env, "STUB_TRACKING": "1", "OMP_NUM_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "study"], repo, env)
    return env


def parent_run(root: Path):
    from mlflow.tracking import MlflowClient

    parent = json.loads((root / "results/tracking.json").read_text())["parent_run_id"]
    return MlflowClient(f"sqlite:///{root}/results/mlflow.db").get_run(parent).info


def push_without_a_remote_writes_nothing(repo: Path, env: dict) -> None:
    proc = run(["make", "dvc-push"], repo, env, ok=False)
    assert proc.returncode != 0 and "no default DVC remote" in proc.stderr, proc.stderr
    assert "dvc remote add -d storage" in proc.stderr
    assert not (repo / "dvc.lock").exists() and not (repo / "results/metrics.json").exists()
    assert run(["git", "status", "--porcelain"], repo, env).stdout == ""


def test_a_pushed_study_pulled_into_another_folder_works_there(stub_study, tmp_path,
                                                              monkeypatch):
    from mlflow.tracking import MlflowClient

    repo = stub_study.root
    env = make_study_repo(repo, stub_study.env)
    stub_study.env = env
    stub_study.snakemake("--cores", "2")
    run([sys.executable, "-c", STAGE], repo, env)
    push_without_a_remote_writes_nothing(repo, env)

    record, in_clone = page_commands("dvc-mlflow.md")
    remote = tmp_path.parent / f"{tmp_path.name}-remote"
    for line in record:
        run(line.replace(LOCAL_REMOTE, str(remote)), repo, env)
    pushed = parent_run(repo)
    assert pushed.status == "FINISHED" and pushed.end_time

    clone = tmp_path.parent / f"{tmp_path.name}-clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    use_this_venv(clone)
    assert not (clone / "results").exists()
    shutil.rmtree(repo)  # the first folder is gone: nothing may read or write it
    out = {}
    for line in in_clone:
        if line.startswith("mlflow ui"):  # a server: the store is opened below instead
            continue
        proc = run(line, clone, env)
        out[line] = proc
        assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, (line, proc.stderr)
        if line.startswith("dvc "):  # e.g. "DVC failed to load some plots" (.snakemake_timestamp)
            assert proc.stderr == "", (line, proc.stderr)
    assert "up to date" in out["dvc status"].stdout, out["dvc status"].stdout
    said = out["make dvc-pull"].stdout.splitlines()  # make's echo of the command, then one line
    assert len(said) == 2 and re.fullmatch(
        rf"dvc_pull: \d+ files fetched and \d+ files added from DVC remote 'storage' \({remote}\); "
        "Snakemake marked the restored outputs up to date", said[1]), said
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""  # dvc_plots/ ignored
    assert "Nothing to be done" in out["snakemake -n"].stdout
    header = out["dvc metrics show"].stdout.splitlines()[0].split()  # the stub's metrics have
    assert header[0] == "Path" and {"ap50", "mmap", "seeds", "top1"} <= set(header[1:]) <= {
        "ap50", "mmap", "seeds", "low", "high", "top1", "flops", "gpu_hours"}  # no cost
    assert "results/headline/synth-fpn-detnas.json" in out["dvc metrics show"].stdout
    assert '"mmap": 0.1' in run(["dvc", "metrics", "show", "--json", "results/metrics.json"],
                                clone, env).stdout
    plots = json.loads(run(["dvc", "plots", "show", "--json"], clone, env).stdout)["data"]
    assert "results/plots/search-synth-fpn-detnas.csv" in plots
    assert sorted(n for n in plots if n.startswith("results/report/figures/")) == [
        "results/report/figures/search.png"]
    pulled = parent_run(clone)
    assert (pulled.status, pulled.start_time, pulled.end_time) == (
        pushed.status, pushed.start_time, pushed.end_time)

    monkeypatch.chdir(clone)  # where a user opens the store: `mlflow ui` in the study's folder
    client = MlflowClient(f"sqlite:///{clone}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("detnas-test").experiment_id])
    stage = next(r for r in runs if r.data.tags.get("stage") == "retrain-detection")
    assert {a.path for a in client.list_artifacts(stage.info.run_id)} == {"config.yaml",
                                                                           "arch.json"}
    for r in runs:
        dest = tmp_path.parent / f"{tmp_path.name}-download" / r.info.run_id
        dest.mkdir(parents=True)
        for artifact in client.list_artifacts(r.info.run_id):
            assert Path(client.download_artifacts(r.info.run_id, artifact.path, str(dest))
                        ).exists()

    real = {**env, "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                             if ".stub-bin" not in p)}
    export = next(line for line in page_commands("export.md")[0]
                  if line.startswith("detnas export") and "--part" not in line
                  and "--arch" not in line)
    sidecar = json.loads(run(export, clone, real).stdout)
    assert sidecar["out"] == "results/export/detnas-fpn"
    assert (clone / "results/export/detnas-fpn/backbone.json").exists()
    logged = {a.path for a in client.list_artifacts(stage.info.run_id, "export/backbone")}
    assert "export/backbone/backbone.json" in logged
    assert (clone / "results/mlartifacts" / stage.info.run_id / "artifacts/export").is_dir()
    assert not repo.exists()  # nothing written where the study came from
    for folder in (remote, clone, dest.parent):
        shutil.rmtree(folder)


def test_a_pull_from_a_remote_folder_that_is_gone_says_so_in_one_line(tmp_path):
    """Not DVC's "Checkout failed for following targets ... Is your cache up to date?", which
    names no remote: the remote folder is checked first."""
    from conftest import base_env

    repo, remote, env = tmp_path / "study", tmp_path / "remote", base_env()
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts/dvc_pull.sh", repo / "scripts")
    (repo / "results").mkdir()
    (repo / "results/metrics.json").write_text("{}")
    for cmd in ("git init -q", "dvc init -q", "dvc add -q results",
                f"dvc remote add -q -d storage {remote}", "dvc push -q"):
        run(cmd, repo, env)
    for folder in (remote, repo / ".dvc/cache", repo / "results"):  # a clone, the remote gone
        shutil.rmtree(folder)
    proc = run("scripts/dvc_pull.sh", repo, env, ok=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"dvc_pull: DVC remote 'storage' is the folder {remote}, which does not exist: mount it, "
        "or point the remote at where the study was pushed: dvc remote modify --local storage "
        "url PATH\n")
