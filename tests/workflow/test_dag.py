"""The DAG: its shape per config, config errors, and what a change or a kill makes Snakemake rerun.

Dry runs of the real Snakefile; runs use tests/workflow/stub_detnas.py as `detnas` (no training).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.workflow

TEST = ("--configfile", "config/test.yaml")
# The test config: one synthetic dataset, one detector.
TEST_JOBS = {
    "all": 1, "tracking_init": 1, "synth_detection": 1, "synth_classification": 1, "split": 1,
    "supernet_classification": 1, "supernet_detection": 2, "search_detection": 3,
    "search_detection_rep": 3, "search_classification": 1, "search_classification_rep": 1,
    "arch_spec": 2, "nats_search": 1, "nats_search_rep": 1, "retrain_classifier": 3,
    "retrain_classifier_rep": 3, "retrain_classifier_searched": 3,
    "retrain_classifier_searched_rep": 3, "retrain_detector": 7, "retrain_detector_rep": 7,
    "rank": 1, "report": 1,
}


def test_default_config_multiplies_by_detectors(study):
    jobs = study.planned()
    assert jobs["supernet_detection"] == 2 * 2  # pretrained, scratch x fpn, retinanet
    assert jobs["search_detection"] == 3 * 2  # detnas, scratch, random x 2 detectors
    assert jobs["retrain_detector"] == jobs["retrain_detector_rep"] == 7 * 2  # 7 rows x 2
    # detectors, each replicated (replicates: 2)
    assert jobs["search_detection_rep"] == 3 * 2  # search_seeds: 2
    assert jobs["supernet_classification"] == jobs["search_classification"] == 1
    assert "rank" not in jobs  # rank.enabled: false in the default
    assert sum(jobs.values()) == 77


def test_test_config_plans_the_same_dag_with_one_detector(study):
    assert study.planned(*TEST) == TEST_JOBS


def test_a_latency_limit_adds_the_latency_table_before_every_search(stub_study):
    stub_study.edit_config("test.yaml", "search", "max_latency", 5.0)
    assert stub_study.planned(*TEST) == {**TEST_JOBS, "latency_table": 1}
    stub_study.snakemake("results/search/cls/clsnas/metrics.json", "--cores", "2", *TEST)
    calls = (stub_study.root / "stub-calls.log").read_text().splitlines()
    assert calls.index("latency-table results/latency/table.json") < calls.index(
        "search evolution results/search/cls/clsnas")


def test_a_second_dataset_multiplies_the_dataset_stages(study):
    study.edit_config("test.yaml", "datasets", "other", {"kind": "synthetic", "num_train": 20,
                                                         "search_images": 8})
    jobs = study.planned(*TEST)
    assert jobs["synth_detection"] == jobs["split"] == 2
    assert jobs["retrain_detector"] == jobs["retrain_detector_rep"] == 14
    assert jobs["rank"] == 2
    assert jobs["retrain_classifier"] == 3  # shared rows are trained once
    assert jobs["supernet_classification"] == 1


@pytest.mark.parametrize(
    ("section", "key", "value", "words"),
    [
        ("search", "generatons", 3, ["generatons"]),
        ("search", "population", "many", ["population", "many"]),
        ("supernet_pretrain", "schedule", "cosine", ["schedule", "cosine"]),
        ("nats", "depth", 51, ["depth", "51"]),
        ("search", "generations", 0, ["generations", "0"]),  # refused before the DAG is planned
        ("supernet_pretrain", "lr", -0.1, ["lr", "-0.1"]),
    ],
)
def test_config_errors_name_the_key_and_value(study, section, key, value, words):
    study.edit_config("test.yaml", section, key, value)
    proc = study.snakemake("-n", *TEST, check=False)
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stderr + proc.stdout


def test_a_config_override_error_is_said_of_the_override_not_of_the_file(study):
    proc = study.snakemake("-n", *TEST, "--config", "seed=-1", check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "--config seed: seed: -1" in out, out
    assert "test.yaml: seed" not in out
    study.edit_config("test.yaml", "search", "generations", 0)  # the file's own error
    proc = study.snakemake("-n", *TEST, "--config", "seed=1", check=False)
    assert "test.yaml: search.generations: 0" in proc.stderr + proc.stdout


def test_bad_detector_and_synthetic_root_are_rejected(study):
    import yaml

    path = study.root / "config" / "test.yaml"
    data = yaml.safe_load(path.read_text())
    data["detectors"] = ["fpnx"]
    path.write_text(yaml.safe_dump(data))
    proc = study.snakemake("-n", *TEST, check=False)
    assert proc.returncode != 0 and "fpnx" in proc.stderr + proc.stdout
    data["detectors"] = ["fpn"]
    data["datasets"]["synth"]["root"] = "/elsewhere"
    path.write_text(yaml.safe_dump(data))
    proc = study.snakemake("-n", *TEST, check=False)
    assert proc.returncode != 0 and "datasets.synth.root" in proc.stderr + proc.stdout


def test_a_configfile_replaces_the_default_and_config_overrides_apply(stub_study):
    import yaml

    stub_study.snakemake("results/tracking.json", "--cores", "1", *TEST, "--config", "seed=7")
    written = yaml.safe_load((stub_study.root / "results" / "config.yaml").read_text())
    assert written["seed"] == 7 and written["space"] == "test"
    assert list(written["datasets"]) == ["synth"] and written["detectors"] == ["fpn"]


@pytest.mark.slow
def test_only_the_run_holding_the_lock_writes_the_study_config(stub_study):
    """A second invocation with another config, dry or refused by the lock, leaves the running
    study's config (the one its jobs read) as it was; a dry run alone writes nothing."""
    root, config = stub_study.root, stub_study.root / "results" / "config.yaml"
    stub_study.snakemake("-n", *TEST)
    assert not (root / "results").exists()  # a dry run writes nothing
    env = dict(stub_study.env, STUB_HANG="results/supernet/cls", STUB_HANG_FLAG=str(root / "hang"))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", *TEST]  # it takes the lock
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (root / "hang").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        written = config.read_text()
        assert "seed: 0\n" in written
        other = ("--config", "seed=7")
        subprocess.run([*cmd, "-n", *other], cwd=root, env=stub_study.env, capture_output=True,
                       timeout=300)  # (it plans, and stops at the running job's output)
        refused = subprocess.run([*cmd, "--rerun-incomplete", *other], cwd=root,
                                 env=stub_study.env, capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and "cannot be locked" in refused.stdout + refused.stderr
        assert config.read_text() == written
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def finished(stub_study):
    """The test config's whole DAG run once with the stub CLI."""
    stub_study.snakemake("--cores", "2", *TEST)
    assert (stub_study.root / "results" / "report" / "report.html").exists()
    return stub_study


def _last_call(study) -> str:
    return (study.root / "stub-calls.log").read_text().splitlines()[-1]


@pytest.mark.slow
def test_nothing_to_do_after_a_run_and_the_parent_run_ends_with_it(finished):
    assert finished.planned(*TEST) == {}
    assert _last_call(finished) == "tracking finish FINISHED"  # onsuccess
    finished.edit_config("test.yaml", "retrain_finetune", "lr", 0.02)
    env = dict(finished.env, STUB_FAIL="retrain/detnas")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--nolock", "--cores", "1", *TEST],
                          cwd=finished.root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert _last_call(finished) == "tracking finish FAILED"  # onerror


@pytest.mark.slow
def test_the_snakemake_report_builds_without_docutils_warnings(finished):
    """Its captions are reStructuredText with a link target per category: a category name with
    a colon ("Retrain: ...") made two targets "retrain", a docutils warning per caption."""
    proc = finished.snakemake("--report", "results/report/snakemake.html", *TEST)
    out = proc.stdout + proc.stderr
    assert "Report created" in out and "WARNING" not in out, out


RERUNS = {  # a config change -> the jobs that rerun (every other job stays); every stage after
    # the supernets runs twice (test.yaml: replicates 2, search_seeds 2)
    ("search", "generations", 5): {
        "search_detection": 3, "search_detection_rep": 3, "search_classification": 1,
        "search_classification_rep": 1, "retrain_classifier": 1, "retrain_classifier_rep": 1,
        "retrain_classifier_searched": 3, "retrain_classifier_searched_rep": 3,
        "retrain_detector": 4, "retrain_detector_rep": 4, "rank": 1, "report": 1, "all": 1,
    },
    ("supernet_finetune", "steps", 5): {
        "supernet_detection": 2, "search_detection": 3, "search_detection_rep": 3,
        "retrain_classifier_searched": 3, "retrain_classifier_searched_rep": 3,
        "retrain_detector": 3, "retrain_detector_rep": 3, "rank": 1, "report": 1, "all": 1,
    },
    ("retrain_finetune", "lr", 0.02): {"retrain_detector": 7, "retrain_detector_rep": 7,
                                       "report": 1, "all": 1},
    ("nats", "groups", 1): {"nats_search": 1, "nats_search_rep": 1, "retrain_detector": 1,
                            "retrain_detector_rep": 1, "report": 1, "all": 1},
    ("rank", "archs", 2): {"rank": 1, "report": 1, "all": 1},
    ("tracking", "experiment", "other"): {"tracking_init": 1},
}


@pytest.mark.slow
def test_a_config_change_reruns_only_what_depends_on_it(finished):
    original = (finished.root / "config" / "test.yaml").read_text()
    for (section, key, value), expected in RERUNS.items():
        finished.edit_config("test.yaml", section, key, value)
        assert finished.planned(*TEST) == expected, (section, key)
        (finished.root / "config" / "test.yaml").write_text(original)
    assert finished.planned(*TEST) == {}


@pytest.mark.slow
def test_a_killed_run_is_rerun_cleanly(finished):
    """Snakemake and its job killed mid-write: the job is incomplete and reruns, nothing else."""
    root = finished.root
    finished.edit_config("test.yaml", "retrain_finetune", "lr", 0.02)  # 14 detector jobs to run
    env = dict(finished.env, STUB_HANG="retrain/detnas/synth/fpn",
               STUB_HANG_FLAG=str(root / "hang"))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", *TEST]  # it takes the lock
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (root / "hang").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = root / "results/retrain/detnas/synth/fpn/checkpoint.pt"
    assert partial.read_text() == "partial"
    # The stale lock stops the next run until `snakemake --unlock` (docs/resume.md) ...
    locked = subprocess.run([*cmd, "--rerun-incomplete"], cwd=root, env=finished.env,
                            capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    subprocess.run([*cmd, "--unlock"], cwd=root, env=finished.env, check=True,
                   capture_output=True, timeout=300)
    # The partial output is known to be incomplete: plain Snakemake refuses to go on ...
    refused = finished.snakemake("-n", *TEST, check=False)
    assert refused.returncode != 0 and "ncomplete" in refused.stdout + refused.stderr
    # ... and the profiles' rerun-incomplete reruns it (with what had not run yet).
    plan = finished.planned(*TEST, "--rerun-incomplete")
    assert plan["retrain_detector"] >= 1 and "supernet_detection" not in plan
    finished.snakemake("--cores", "2", "--rerun-incomplete", *TEST)
    assert partial.read_text() != "partial"
    assert finished.planned(*TEST) == {}


def test_a_replicate_job_runs_one_valid_config_with_its_replicate(study):
    """A replicate's jobs pass --set overrides that the CLI's config check accepts, and seed
    the replicate's run apart from the study's data and supernets."""
    import re

    from detnas.plan import config

    out = study.snakemake("results/retrain/detnas/synth/fpn/rep1/metrics.json", "-n", "-p",
                          *TEST).stdout
    for command in ("train detector", "train classifier", "search evolution"):
        line = next(line for line in out.splitlines() if command in line and "rep1" in line)
        overrides = re.findall(r"--set '?([^' ]+)'?", line)
        cfg = config.load(study.root / "config" / "test.yaml", overrides)
        assert cfg.seed == 0 and cfg.replicate == 1 and cfg.run_seed == 1000
