"""Every row of the study (detnas/plan/study.py) has its jobs in the DAG of every config: the
default, the paper's (config/coco.yaml's structure, as the cluster rehearsal shrinks it) and the
test config with a row added in its `ablations` section (DetNAS with `search.objective: pareto`).
Each job of a row is tagged with it (`--ablation`: its MLflow group), the report reads its
outputs, and adding the row adds its jobs and changes no other job.

Dry runs of the real Snakefile; one run with tests/workflow/stub_detnas.py as `detnas` (slow).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dag import TEST_JOBS
from test_rehearsal import rehearsal_config

from detnas.plan import config, layout, study

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]
PARETO = {"title": "DetNAS (Pareto front)", "overrides": {"search.objective": "pareto"},
          "compared_with": ["detnas"]}


def _configs() -> dict[str, dict]:
    """config name -> its settings: the default, the paper's, the test config with a row."""
    load = lambda name: yaml.safe_load((REPO / "config" / name).read_text())  # noqa: E731
    return {"default": load("config.yaml"), "paper": rehearsal_config(load("coco.yaml")),
            "pareto": {**load("test.yaml"), "ablations": {"pareto": PARETO}}}


CONFIGS = _configs()
CASES = [(name, row) for name, data in CONFIGS.items()
         for row in study.rows(config.from_data(data, name))]


def _env(stub: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")])))
    if stub is not None:
        env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
    return env


def _snakemake(root: Path, *args: str, env=None) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--nolock", *args], cwd=root,
                          env=env or _env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _jobs(dry_run: str) -> list[dict]:
    """The jobs of a ``snakemake -n -p`` output: rule, inputs, outputs, shell command."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", dry_run):
        rule = re.match(r"(?:local)?rule (\w+):\n", block)
        if not rule:
            continue
        field = {k: re.search(rf"^    {k}: (.*)$", block, re.MULTILINE) for k in ("input",
                                                                                 "output")}
        shell = re.search(r"^Shell command: (.*)$", block, re.MULTILINE)
        jobs.append({"rule": rule[1], "shell": shell[1] if shell else "",
                     **{k: m[1].split(", ") if m else [] for k, m in field.items()}})
    return jobs


def _recipe(root: Path) -> Path:
    """The recipe in the scratch folder ``root``, with each case's config in config/."""
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / name, root / name)
    for name, data in CONFIGS.items():
        (root / "config" / f"rows_{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return _recipe(tmp_path_factory.mktemp("rows"))


@pytest.fixture(scope="module")
def dags(recipe) -> dict[str, list[dict]]:
    """config name -> the jobs of its dry run."""
    return {name: _jobs(_snakemake(recipe, "-n", "-p", "--configfile",
                                   f"config/rows_{name}.yaml"))
            for name in CONFIGS}


def _job(jobs: list[dict], output: str) -> dict:
    found = [j for j in jobs if output in j["output"]]
    assert len(found) == 1, f"no job writes {output}"
    return found[0]


@pytest.mark.parametrize(("name", "row"), CASES, ids=[f"{n}-{r.name}" for n, r in CASES])
def test_every_row_has_its_jobs_tagged_with_it(dags, name, row):
    cfg = config.from_data(CONFIGS[name], name)
    jobs, results = dags[name], cfg.results
    tagged = f"--ablation {row.name} "
    report = _job(jobs, f"{results}/{layout.REPORT_DIR}/{layout.TABLES}")
    for ds in cfg.datasets:
        for det in cfg.detectors:
            for rep in range(cfg.replicates):  # each replicate: its own chain of jobs
                metrics = f"{results}/{layout.detection_dir(row.name, ds, det, rep)}/" \
                          f"{layout.METRICS}"
                detection = _job(jobs, metrics)
                assert tagged in detection["shell"]
                assert (f"--set replicate={rep} " in detection["shell"]) == (rep > 0)
                assert metrics in report["input"]  # its line in the report
                classifier = f"{results}/{layout.classifier_dir(row.name, ds, det, rep)}/" \
                             f"{layout.METRICS}"
                assert classifier.replace(layout.METRICS, layout.CHECKPOINT) in \
                    detection["input"]
                if row.classifier_row == row.name:
                    assert tagged in _job(jobs, classifier)["shell"]
                    assert (f"--set replicate={rep} " in _job(jobs, classifier)["shell"]) == (
                        rep > 0)
                run = cfg.search_replicate(rep) if row.kind == "searched" else rep
                arch = f"{results}/{layout.arch_json(row.name, ds, det, run)}"
                assert arch in detection["input"]
                if row.kind == "searched":
                    search = _job(jobs, arch)
                    assert tagged in search["shell"] and f"search {row.strategy} " in \
                        search["shell"]
                    assert (f"--set replicate={run} " in search["shell"]) == (run > 0)
                    supernet = (layout.classification_supernet_dir() if row.supernet == "cls"
                                else layout.supernet_dir(ds, det, row.supernet))
                    assert f"{results}/{supernet}/{layout.CHECKPOINT}" in search["input"]
                elif row.kind == "baseline":
                    assert f"arch spec {row.name} " in _job(jobs, arch)["shell"]
                else:
                    nats = _job(jobs, arch)
                    assert nats["rule"] == ("nats_search_rep" if rep else "nats_search")
                    resnet = f"{results}/{layout.classifier_dir('resnet50', rep=rep)}/" \
                             f"{layout.CHECKPOINT}"
                    assert resnet in nats["input"]  # ResNet-50's classifier of its replicate


def test_a_row_added_in_the_config_adds_its_jobs_and_changes_no_other(recipe, dags):
    test = _jobs(_snakemake(recipe, "-n", "-p", "--configfile", "config/test.yaml"))
    added = [j for j in dags["pareto"] if j not in test]
    assert sorted(j["rule"] for j in added) == sorted([
        "search_detection", "search_detection_rep", "retrain_classifier_searched",
        "retrain_classifier_searched_rep", "retrain_detector", "retrain_detector_rep",
        "report"])  # the report: it reads the row's outputs
    assert all("pareto" in " ".join(j["output"] + j["input"]) for j in added)
    counts = {}
    for j in dags["pareto"]:
        counts[j["rule"]] = counts.get(j["rule"], 0) + 1
    more = {rule: 1 for rule in ("search_detection", "search_detection_rep",
                                 "retrain_classifier_searched", "retrain_classifier_searched_rep",
                                 "retrain_detector", "retrain_detector_rep")}
    assert counts == {rule: n + more.get(rule, 0) for rule, n in TEST_JOBS.items()}


@pytest.mark.slow
def test_a_row_added_in_the_config_runs_through_the_stub(tmp_path):
    """The whole DAG with the pareto row, with `detnas` stubbed: every path its rules pass
    exists; its search gets the row's settings in params (a change reruns it)."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "detnas").write_text(f"#!/bin/sh\nexec {sys.executable} "
                                 f"{REPO / 'tests' / 'workflow' / 'stub_detnas.py'} \"$@\"\n")
    (stub / "detnas").chmod(0o755)
    env = dict(_env(stub), STUB_LOG=str(tmp_path / "calls.log"))
    recipe = _recipe(tmp_path / "study")
    args = ("--configfile", "config/rows_pareto.yaml")
    _snakemake(recipe, "--cores", "2", *args, env=env)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert "search evolution results/search/synth/fpn/pareto" in calls
    assert calls.index("search evolution results/search/synth/fpn/pareto") < calls.index(
        "report results/report")
    data = yaml.safe_load((recipe / "config" / "rows_pareto.yaml").read_text())
    data["ablations"]["pareto"]["overrides"]["search.population"] = 6
    (recipe / "config" / "rows_pareto.yaml").write_text(yaml.safe_dump(data))
    rerun = _snakemake(recipe, "-n", *args, env=env)
    table = dict(re.findall(r"^(\w+)\s+(\d+)$", rerun.split("Job stats:", 1)[1], re.MULTILINE))
    assert table == {"search_detection": "1", "search_detection_rep": "1",
                     "retrain_classifier_searched": "1", "retrain_classifier_searched_rep": "1",
                     "retrain_detector": "1", "retrain_detector_rep": "1", "report": "1",
                     "all": "1", "total": "8"}
