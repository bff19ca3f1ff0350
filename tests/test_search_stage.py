import csv
import json

import pytest
from search_fakes import make_noisy, noisy_fitness

from detnas import cost as cost_module
from detnas.cli import main
from detnas.io import save_checkpoint
from detnas.nets.models import model_meta
from detnas.plan import config
from detnas.plan.space import Arch
from detnas.run import tracking
from detnas.search import stage
from detnas.search.evolution import evaluation_budget


class Recorder(tracking.NullTracker):
    def __init__(self):
        super().__init__()
        self.tags, self.metrics, self.artifacts, self.status = {}, [], [], None

    def log_params(self, params):
        self.params = params

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, metrics))

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_artifact(self, path):
        self.artifacts.append(path.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.status = "FAILED" if exc[0] else "FINISHED"


def _cfg(**search):
    values = {"population": 6, "topk": 2, "generations": 3, "mutations": 2, "crossovers": 2}
    return config.load(None, [f"search.{k}={v}" for k, v in {**values, **search}.items()])


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_outputs_and_tracking(tmp_path, monkeypatch, strategy):
    recorder = Recorder()
    started = {}

    def start(cfg, name, tags, gpus=0, arch=None, out=None, resolved=None):
        started.update(name=name, tags=tags, gpus=gpus)
        recorder.meter = cost_module.Meter(gpus, tags)  # as tracking.start does
        return recorder

    monkeypatch.setattr(tracking, "start", start)
    cfg = _cfg(max_flops=60e6)
    metrics = stage.search_stage(cfg, strategy, tmp_path, factory=make_noisy, metric="mmap",
                                 ablation="scratch", dataset="synth", detector="fpn")
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert len(rows) == metrics["evaluations"] == evaluation_budget(cfg.search) == 18
    assert [int(r["order"]) for r in rows] == list(range(18))
    best = max(rows, key=lambda r: float(r["fitness"]))
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert arch["arch"] == best["arch"] == metrics["best_arch"]
    assert arch["fitness"] == pytest.approx(noisy_fitness(Arch.parse(best["arch"], "tiny")))
    assert arch["kind"] == "shufflenet" and arch["space"] == "tiny" and arch["metric"] == "mmap"
    assert arch["backbone_flops"] == int(best["backbone_flops"]) <= 60e6
    assert arch["provenance"]["seed"] == 0 and arch["provenance"]["config"]["space"] == "tiny"
    assert metrics["candidates_per_min"] > 0
    assert (tmp_path / "fitness.png").stat().st_size > 0
    assert (tmp_path / "flops_fitness.png").stat().st_size > 0
    tags = started["tags"]
    assert {k: tags[k] for k in ("stage", "ablation", "detector", "dataset", "space")} == {
        "stage": "search", "ablation": "scratch", "detector": "fpn", "dataset": "synth",
        "space": "tiny"}
    assert {"seed", "config_hash", "git_commit"} <= set(tags)
    assert recorder.tags["arch"] == best["arch"]
    assert [step for step, m in recorder.metrics if "mean_fitness" in m] == [0, 1, 2]
    assert {"arch.json", "history.csv", "metrics.json"} <= set(recorder.artifacts)
    assert recorder.status == "FINISHED"
    cost = json.loads((tmp_path / "metrics.json").read_text())["cost"]  # the ledger's record
    assert started["gpus"] == cost["gpus"] == cost["gpu_hours"] == 0  # a search on the CPU
    assert cost["wall_s"] > 0 and cost["stage"] == "search" and cost["ablation"] == "scratch"
    assert [m["cost.wall_s"] for _, m in recorder.metrics if "cost.wall_s" in m] == [
        cost["wall_s"]]


def test_cli_infeasible_limit_fails_before_loading_anything(tmp_path, capsys):
    code = main(["search", "evolution", "--set", "search.max_flops=1000000", "--supernet",
                 str(tmp_path / "missing.pt"), "--data", "a.json", "--images", "i",
                 "--recalib-annotations", "t.json", "--recalib-image-dir", "t", "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert "search.max_flops: 1e+06 is below the cheapest network of space tiny" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_supernet_of_another_space(tmp_path, capsys):
    meta = model_meta("detection", {"kind": "supernet", "space": "test"}, 2, "fpn")
    ckpt = save_checkpoint(tmp_path / "supernet.pt", {"model": {}, **meta})
    code = main(["search", "random", "--supernet", str(ckpt), "--data", "a.json", "--images",
                 "i", "--recalib-annotations", "t.json", "--recalib-image-dir", "t", "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert "supernet.pt: backbone.space is 'test' but the config searches space 'tiny'" in (
        capsys.readouterr().err)


def test_cli_names_missing_flags(tmp_path, capsys):
    assert main(["search", "evolution", "--supernet", "x.pt", "--data", "a.json", "--out",
                 str(tmp_path)]) == 2
    assert "--images is required with --fitness detection" in capsys.readouterr().err
    assert main(["search", "evolution", "--fitness", "classification", "--supernet", "x.pt",
                 "--data", "val", "--out", str(tmp_path)]) == 2
    assert "--recalib-data is required with --fitness classification" in capsys.readouterr().err
