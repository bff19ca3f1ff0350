"""scripts/collect_metrics.py reads a results folder through detnas.plan.layout (the fixture
tree)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "results"


def _script():
    spec = importlib.util.spec_from_file_location("collect_metrics",
                                                  REPO / "scripts" / "collect_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collect_metrics_reads_every_row_and_search_of_the_config(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results, ignore=shutil.ignore_patterns("*.py"))
    (results / "config.yaml").write_text(yaml.safe_dump(
        {"datasets": {"synth": {}}, "detectors": ["fpn", "retinanet"]}))
    assert _script().main([str(results)]) == 0
    table = json.loads((results / "metrics.json").read_text())
    assert table["detnas"]["synth"]["fpn"]["mmap"] == 0.121
    assert table["detnas"]["synth"]["retinanet"]["cls"]["top1"] == 0.43  # searched: per detector
    assert table["resnet50"]["cls"]["top1"] == 0.47  # shared rows: one classifier
    assert "voc" not in table["detnas"]  # a dataset the config does not have is not read
    plots = sorted(p.name for p in (results / "plots").iterdir())
    assert len(plots) == 3 * 2 + 1  # 3 searches x 2 detectors, and ClsNASNet
    assert "search-cls-clsnas.csv" in plots and "search-synth-fpn-detnas.csv" in plots


def test_the_headline_is_one_small_file_per_row_of_the_study(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results, ignore=shutil.ignore_patterns("*.py"))
    (results / "config.yaml").write_text(yaml.safe_dump(
        {"datasets": {"synth": {}}, "detectors": ["fpn", "retinanet"], "replicates": 2}))
    assert _script().main([str(results)]) == 0
    files = sorted(p.name for p in (results / "headline").iterdir())
    assert len(files) == 7 * 2  # the seven rows of the main table x 2 detectors
    detnas = json.loads((results / "headline/synth-fpn-detnas.json").read_text())
    assert set(detnas) <= {"ap50", "mmap", "seeds", "low", "high", "top1", "flops", "gpu_hours"}
    assert detnas["flops"] == 46858112 and detnas["top1"] == 0.435 and detnas["seeds"] == 2
    assert detnas["low"] < detnas["mmap"] < detnas["high"]  # the interval of the dataset's metric
    seeds = [json.loads((results / f"retrain/detnas/synth/fpn{s}/metrics.json").read_text())
             for s in ("", "/rep1")]
    assert detnas["mmap"] == sum(m["mmap"] for m in seeds) / 2  # the mean over the seeds
    assert all(len((results / "headline" / f).read_text()) < 200 for f in files)
