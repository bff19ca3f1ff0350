"""The stage record (detnas/run/record.py): opened before a stage's work (the config resolved
once, the fingerprint, the provenance, the tracker and its store checked), written after it
(metrics.json and config.yaml with the cost and the provenance, atomically)."""

import json
import time
from pathlib import Path

import pytest
import yaml

from detnas import cost
from detnas.plan import config
from detnas.plan.typed import config_hash, to_dict
from detnas.provenance import fingerprint
from detnas.run import stop, tracking, train
from detnas.run.record import StageRecord
from detnas.search import fitness, rank

TAGS = {"ablation": "detnas", "dataset": "synth", "detector": "fpn", "space": "tiny"}


class Recorder(tracking.NullTracker):
    def __init__(self, tags, gpus=0):
        super().__init__(cost.Meter(gpus, tags))  # as tracking.start meters
        self.tags, self.status, self.artifact = tags, None, None

    def finish(self, status="FINISHED"):
        self.status = status


@pytest.fixture
def started(monkeypatch):
    """The trackers the stages start, in order (`tracking.start` replaced by a recorder)."""
    trackers = []

    def start(cfg, name, tags, gpus=0, arch=None, out=None, resolved=None):
        trackers.append(Recorder(tags, gpus))
        trackers[-1].resolved = resolved
        return trackers[-1]

    monkeypatch.setattr(tracking, "start", start)
    return trackers


def test_open_resolves_once_and_write_leaves_metrics_and_config_with_cost_and_provenance(
        tmp_path, started):
    cfg = config.load(None)
    data = tmp_path / "data.json"
    data.write_text("{}")
    with StageRecord.open(cfg, "retrain-detection", tmp_path / "out", TAGS, inputs=[data, None],
                          facts={"arch": "x"}, about={"tags": TAGS},
                          sources={"init": data}) as record:
        (tracker,) = started
        assert tracker.resolved is record.config == to_dict(cfg)  # one dict for the tracker too
        assert tracker.tags["config_hash"] == config_hash(cfg)
        assert record.fingerprint == fingerprint(to_dict(cfg), [data], stage="retrain-detection",
                                                 arch="x")
        prov = record.provenance
        assert list(prov)[4:] == ["stage", "tags", "fingerprint", "sources", "config"]
        assert prov["fingerprint"] == record.fingerprint and prov["sources"]["init"]["path"]
        written = record.write({"steps": 3}, provenance=True)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == written and list(metrics) == ["steps", "cost", "provenance"]
    assert metrics["cost"]["stage"] == "retrain-detection" and metrics["cost"]["wall_s"] > 0
    assert metrics["provenance"] == {k: v for k, v in prov.items() if k != "config"}
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()) == json.loads(
        json.dumps(prov))  # with the config
    assert tracker.status == "FINISHED"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.yaml", "metrics.json"]


def test_a_failed_write_keeps_the_previous_files(tmp_path, started):
    cfg = config.load(None)
    record = StageRecord.open(cfg, "search", tmp_path, TAGS)
    record.write({"best_fitness": 0.5})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TypeError):
        record.write({"best_fitness": object()})  # not JSON: nothing is replaced
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_run_ends_failed_on_an_error_and_killed_on_a_stop(tmp_path, started):
    cfg = config.load(None)
    with pytest.raises(ValueError), StageRecord.open(cfg, "search", tmp_path, TAGS):
        raise ValueError("the work failed")
    with pytest.raises(stop.Stopped), StageRecord.open(cfg, "search", tmp_path, TAGS):
        raise stop.Stopped(15, "at step 2")
    assert [t.status for t in started] == ["FAILED", "KILLED"]
    assert not any(tmp_path.iterdir())  # nothing written without `write`


def _rank_inputs(tmp_path: Path, *overrides: str):
    images = tmp_path / "images"
    images.mkdir()
    train_ann, search_ann = tmp_path / "train.json", tmp_path / "search.json"
    train_ann.write_text("{}")
    search_ann.write_text("{}")
    cfg = config.load(None, ["space=tiny", "rank.archs=3", "rank.pool=50",
                             f"results={tmp_path / 'results'}", *overrides])
    supernets = {"pretrained": tmp_path / "pretrained.pt"}
    return cfg, (next(iter(cfg.datasets)), "fpn", supernets, images, train_ann, search_ann,
                 tmp_path / "out")


def test_rank_checks_the_store_before_any_training(tmp_path, monkeypatch):
    junk = tmp_path / "store.db"
    junk.write_text("not a database\n" * 200)
    uri = f"sqlite:///{junk}"
    cfg, args = _rank_inputs(tmp_path, "tracking.enabled=true", f"tracking.uri={uri}")

    def trained(*a, **k):
        raise AssertionError("a standalone network was trained before the store was checked")

    monkeypatch.setattr(train, "train_detector", trained)
    with pytest.raises(ValueError, match=f"tracking.uri {uri}: the MLflow store cannot be"):
        rank.rank_stage(cfg, *args)
    assert not (tmp_path / "out").exists()


def test_rank_s_cost_covers_the_training_and_the_fitness_scoring(tmp_path, monkeypatch):
    cfg, args = _rank_inputs(tmp_path, "tracking.enabled=false")
    metric = cfg.datasets[args[0]].metric
    pause = 0.1

    def trained(cfg, spec, *a, **k):  # a standalone training: its score, no files
        return {metric: float(len(spec["arch"]))}

    def scoring(spec):
        def score(arch):
            time.sleep(pause)
            return float(sum(arch.choices))
        return score

    monkeypatch.setattr(train, "train_detector", trained)
    monkeypatch.setattr(fitness, "fitness_spec", lambda *a, **k: None)
    monkeypatch.setattr(fitness, "build_fitness", scoring)
    result = rank.rank_stage(cfg, *args)
    saved = json.loads((tmp_path / "out" / "rank.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert list(saved)[-2:] == ["cost", "provenance"]
    assert saved["cost"]["stage"] == "rank" and saved["cost"]["wall_s"] >= 3 * pause
    assert saved["provenance"]["stage"] == "rank" and saved["provenance"]["config"]["space"] == (
        "tiny")
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["stage"] == "rank"
