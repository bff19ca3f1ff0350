"""The report's cost ledger: stage records found by tag, summed per row of the study."""

from __future__ import annotations

import json

import pytest

from detnas import report
from detnas.plan import config
from detnas.report.ledger import collect_costs, cost_tables

# folder -> (stage, ablation, dataset, detector, arch, wall hours on 8 GPUs, peak RSS MB)
RECORDS = {
    "supernet/cls": ("supernet-pretrain", "supernet", "", "", "", 1.0, 100),
    "supernet/synth/fpn/pretrained": ("supernet-finetune", "detnas", "synth", "fpn", "", .5, 200),
    "supernet/synth/retinanet/pretrained": ("supernet-finetune", "detnas", "synth", "retinanet",
                                            "", .5, 200),
    "supernet/synth/fpn/scratch": ("supernet-finetune", "scratch", "synth", "fpn", "", 1.0, 200),
    "search/synth/fpn/detnas": ("search", "detnas", "synth", "fpn", "", .25, 300),
    "search/synth/fpn/random": ("search", "random", "synth", "fpn", "", .25, 300),
    "search/cls/clsnas": ("search", "clsnas", "imagenet", "", "", .25, 300),
    "retrain/detnas/synth/fpn/cls": ("retrain-classification", "detnas", "", "", "A", 2.0, 400),
    "retrain/detnas/synth/retinanet/cls": ("retrain-classification", "detnas", "", "", "B",
                                           2.0, 900),
    "retrain/detnas/synth/fpn": ("retrain-detection", "detnas", "synth", "fpn", "A", 1.0, 500),
    "retrain/resnet50/cls": ("retrain-classification", "resnet50", "", "", "resnet50", 3.0, 600),
    "nats/synth/fpn": ("nats-search", "nats", "synth", "fpn", "pending", .5, 700),
    "retrain/nats/synth/fpn": ("retrain-detection", "nats", "synth", "fpn", "r50-d", 1.0, 500),
}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for folder, (stage, ablation, ds, det, arch, hours, rss) in RECORDS.items():
        tags = {k: v for k, v in (("stage", stage), ("ablation", ablation), ("dataset", ds),
                                  ("detector", det), ("arch", arch)) if v}
        record = {"wall_s": hours * 3600, "gpus": 8, "gpu_hours": 8 * hours,
                  "cpu_s": hours * 3600, "peak_rss_mb": rss, "cuda_peak_mb": None, **tags}
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "metrics.json").write_text(json.dumps({"mmap": 0.1, "cost": record}))
    (root / "retrain/old").mkdir(parents=True)
    (root / "retrain/old/metrics.json").write_text('{"mmap": 0.1}')  # written before the ledger
    (root / "retrain/bad").mkdir()
    (root / "retrain/bad/metrics.json").write_text("{")  # unreadable: skipped
    copy = root / "mlartifacts/0a1b/artifacts"  # MLflow's copy of a search's metrics.json
    copy.mkdir(parents=True)
    (copy / "metrics.json").write_text((root / "search/synth/fpn/detnas/metrics.json").read_text())
    (root / "retrain/partial").mkdir()
    (root / "retrain/partial/metrics.json").write_text('{"cost": {"wall_s": 1}}')  # skipped
    return root


def test_row_totals_count_what_each_row_built_on(results, tmp_path):
    cfg = config.load(None, ["space=tiny", "datasets={synth: {kind: synthetic}}",
                             "detectors=[fpn, retinanet]"])
    records = collect_costs(results)
    assert len(records) == len(RECORDS)
    tables = cost_tables(cfg, records)
    rows = {(r["row"], r["detector"]): r for r in tables["rows"]}
    detnas = rows[("detnas", "fpn")]  # pretrain, fpn fine-tuning, search, arch A's cls, det
    assert detnas["gpu_hours"] == 8 * (1.0 + .5 + .25 + 2.0 + 1.0) and detnas["stages"] == 5
    assert detnas["paths"] == ["supernet/cls", "supernet/synth/fpn/pretrained",
                               "search/synth/fpn/detnas", "retrain/detnas/synth/fpn/cls",
                               "retrain/detnas/synth/fpn"]
    assert detnas["peak_rss_mb"] == 500  # not the RetinaNet cell's classification run (900)
    assert rows[("random", "fpn")]["gpu_hours"] == 8 * (1.0 + .5 + .25)  # DetNAS's supernet
    assert rows[("scratch", "fpn")]["gpu_hours"] == 8 * 1.0  # no ImageNet pre-training
    assert rows[("clsnas", "fpn")]["gpu_hours"] == 8 * (1.0 + .25)
    assert rows[("nats", "fpn")]["gpu_hours"] == 8 * (3.0 + .5 + 1.0)  # ResNet-50's ImageNet run
    assert rows[("detnas", "retinanet")]["gpu_hours"] == 8 * (1.0 + .5 + 2.0)
    assert tables["total"]["gpu_hours"] == 8 * sum(r[5] for r in RECORDS.values())
    assert tables["total"]["stages"] == len(RECORDS)

    data = report.build_report(cfg, results, tmp_path / "out")  # in the default report
    assert data["cost"]["total"]["gpu_hours"] == tables["total"]["gpu_hours"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Cost" in md and "### Per row of the study" in md
    assert "| DetNAS | synth/fpn | 5 | 4:45:00 | 38.000 |" in md
    assert "| study (each stage once) | all | 13 | 13:15:00 | 106.000 |" in md
