"""MLflow tracking on a real SQLite store: the parent run's end, stage artifacts, the cost ledger
and the experiment's shared view grouped by ablation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from detnas import cost
from detnas.cli import main
from detnas.plan import config, typed
from detnas.run import tracking

TAGS = {"stage": "retrain-detection", "ablation": "detnas", "dataset": "synth",
        "detector": "fpn", "arch": "0-00-00-0"}


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"space": "test", "device": "cpu", "results": str(tmp_path),
                                    "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db",
                                                 "experiment": "t"}}))
    return path, config.load(path)


def test_stage_run_artifacts_cost_and_the_parent_runs_end(study, capsys):
    from mlflow.tracking import MlflowClient

    path, cfg = study
    assert main(["tracking", "init", "--config", str(path)]) == 0
    parent = capsys.readouterr().out.strip()
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("t")
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{tracking.ABLATION_VIEW}"])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "ablation"}]
    assert "metrics.`mmap`" in view["selectedColumns"]

    spec = {"kind": "shufflenet", "space": "test", "arch": TAGS["arch"]}
    with tracking.start(cfg, "retrain", TAGS, gpus=2, arch=spec) as tracker:
        time.sleep(0.05)
        record = tracker.cost()
    assert record["gpus"] == 2 and record["wall_s"] >= 0.05
    assert record["gpu_hours"] == pytest.approx(2 * record["wall_s"] / 3600)
    assert {k: record[k] for k in TAGS} == TAGS
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.metrics["cost.gpu_hours"] == pytest.approx(record["gpu_hours"])
    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert artifacts == {"config.yaml", "arch.json"}
    local = client.download_artifacts(tracker.run_id, "config.yaml", str(path.parent))
    assert yaml.safe_load(Path(local).read_text()) == typed.to_dict(cfg)  # resolved config
    stored = list((path.parent / "mlartifacts").rglob("arch.json"))  # under the results folder
    assert len(stored) == 1 and yaml.safe_load(stored[0].read_text()) == spec

    assert client.get_run(parent).info.status == "RUNNING"
    assert main(["tracking", "finish", "--config", str(path), "--status", "FAILED"]) == 0
    assert client.get_run(parent).info.status == "FAILED"
    assert main(["tracking", "finish", "--config", str(path), "--status", "FINISHED"]) == 0
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).info.end_time is not None


def test_finish_without_a_parent_run_is_a_no_op(study, capsys):
    path, cfg = study
    assert tracking.finish_parent(cfg.results, "FINISHED") is None
    assert main(["tracking", "finish", "--config", str(path), "--status", "FAILED"]) == 0
    assert "nothing to finish" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--status: 'DONE'"):
        tracking.finish_parent(cfg.results, "DONE")


def test_the_meter_counts_cpu_time_and_memory_and_no_gpu_on_the_cpu():
    meter = cost.Meter(0, {"stage": "search", "ablation": "random", "other": "x"})
    before = meter.read()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:  # burn CPU
        pass
    block = b"x" * int((before["peak_rss_mb"] + 64) * 2**20)  # past the peak so far
    after = meter.read()
    del block
    assert after["cpu_s"] >= before["cpu_s"] + 0.19
    assert after["peak_rss_mb"] >= before["peak_rss_mb"] + 60
    assert after["gpus"] == after["gpu_hours"] == 0 and after["cuda_peak_mb"] is None
    assert after["stage"] == "search" and "other" not in after  # the ledger's tags only
    with pytest.raises(ValueError, match="gpus: -1"):
        cost.Meter(-1)


def _store(root: Path) -> str:
    """The store of the study in ``root``, by absolute path: MLflow caches a store per URI in a
    process, so the tests do not reuse the relative ``sqlite:///results/mlflow.db`` across
    folders as separate processes do."""
    return f"sqlite:///{root}/results/mlflow.db"


def _relative_study(tmp_path: Path, monkeypatch) -> Path:
    """A study in the working directory ``tmp_path/a``, its results given as ``results``."""
    root = tmp_path / "a"
    root.mkdir()
    monkeypatch.chdir(root)
    (root / "study.yaml").write_text(yaml.safe_dump(
        {"space": "test", "device": "cpu", "results": "results",
         "tracking": {"uri": _store(root), "experiment": "t"}}))
    return root


def test_a_copied_store_finds_its_artifacts_in_the_copy(tmp_path, monkeypatch):
    import shutil

    from mlflow.tracking import MlflowClient

    root = _relative_study(tmp_path, monkeypatch)
    assert main(["tracking", "init", "--config", "study.yaml"]) == 0
    cfg = config.load("study.yaml")
    with tracking.start(cfg, "retrain", TAGS) as tracker:
        pass
    run_id = tracker.run_id
    client = MlflowClient(cfg.tracking.uri)
    assert client.get_run(run_id).info.artifact_uri.startswith("results/mlartifacts/")
    assert client.get_experiment(tracking.DEFAULT_EXPERIMENT_ID).artifact_location == (
        "results/mlartifacts/0")  # no path of this folder in the store, Default's included

    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    shutil.rmtree(root)
    monkeypatch.chdir(copy)
    client = MlflowClient(_store(copy))
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml"}
    data = tmp_path / "f.txt"
    data.write_text("x")
    tracking.log_files(_store(copy), "t", "results", run_id, "x", {}, [data], "export")
    assert (copy / "results/mlartifacts" / run_id / "artifacts/export/f.txt").exists()
    assert not root.exists()


def test_a_store_with_absolute_locations_is_refused_until_relocated(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = _store(_relative_study(tmp_path, monkeypatch))
    elsewhere = tmp_path / "original" / "results" / tracking.ARTIFACTS
    client = MlflowClient(uri)
    exp_id = client.create_experiment("t", str(elsewhere))  # as a store recorded elsewhere
    run_id = client.create_run(exp_id).info.run_id
    data = tmp_path / "f.txt"
    data.write_text("x")
    with pytest.raises(ValueError, match="outside the results folder results.*relocate"):
        tracking.log_files(uri, "t", "results", run_id, "x", {}, [data], "export")
    with pytest.raises(ValueError, match="outside the results folder"):  # before any run
        tracking.start(config.load("study.yaml"), "retrain", TAGS)
    assert len(client.search_runs([exp_id])) == 1
    assert not elsewhere.exists()

    default = client.get_experiment(tracking.DEFAULT_EXPERIMENT_ID)
    assert Path(default.artifact_location).is_absolute()  # as MLflow makes it in a new store
    assert main(["tracking", "relocate", "--config", "study.yaml"]) == 0
    assert client.get_run(run_id).info.artifact_uri == f"results/mlartifacts/{run_id}/artifacts"
    assert client.get_experiment(default.experiment_id).artifact_location == "results/mlartifacts/0"
    assert tracking.relocate(uri, "t", "results") is None  # done
    tracking.log_files(uri, "t", "results", run_id, "x", {}, [data], "export")
    assert [a.path for a in client.list_artifacts(run_id, "export")] == ["export/f.txt"]


def test_the_report_logs_the_headline_with_its_noise_on_the_parent_run(study, capsys):
    """`detnas report` puts each row's figure, its seeds and its 95% interval on the study's
    parent run (the report's fixture: two replicates of synth / FPN)."""
    from mlflow.tracking import MlflowClient

    path, cfg = study
    assert main(["tracking", "init", "--config", str(path)]) == 0
    parent = capsys.readouterr().out.strip()
    fixture = Path(__file__).parent / "fixtures" / "results"
    data = yaml.safe_load(path.read_text()) | {
        "space": "tiny", "replicates": 2, "datasets": {"synth": {"metric": "mmap"}}}
    path.write_text(yaml.safe_dump(data))
    assert main(["report", "--config", str(path), "--results", str(fixture), "--out",
                 str(path.parent / "report")]) == 0
    metrics = MlflowClient(cfg.tracking.uri).get_run(parent).data.metrics
    headline = json.loads((path.parent / "report" / "tables.json").read_text())["headline"]
    detnas = next(r for r in headline if (r["row"], r["detector"]) == ("detnas", "fpn"))
    assert metrics["synth/fpn/detnas/seeds"] == 2
    assert metrics["synth/fpn/detnas/low"] == pytest.approx(detnas["low"])
    assert metrics["synth/fpn/detnas/high"] == pytest.approx(detnas["high"])
    assert metrics["synth/fpn/detnas/mmap"] == pytest.approx(detnas["mmap"])
    assert "synth/retinanet/detnas/low" not in metrics  # one seed there: no interval
