"""The rows of the study (detnas/plan/study.py): every row, the paper's and one a config adds (a
DetNAS search with `search.objective: pareto`), has its outputs in the layout, its line in the
report, its cost in the ledger and its MLflow group; the workflow's side is
tests/workflow/test_rows.py.

Each test runs once per row (timm-style): a row added to the study is checked with no new test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from detnas import report
from detnas.plan import config, layout, study, typed
from detnas.report.ledger import collect_costs, cost_tables
from detnas.run import tracking

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "results"
PARETO = {"title": "DetNAS (Pareto front)", "overrides": {"search.objective": "pareto"},
          "colour": "#2ca02c", "compared_with": ["detnas"]}
"""A row a config adds: the evolution of DetNAS keeping the cost x fitness front."""
STUDY = {"space": "tiny", "datasets": {"synth": {"kind": "synthetic", "metric": "mmap"}},
         "detectors": ["fpn", "retinanet"], "ablations": {"pareto": PARETO}}
CFG = config.from_data(STUDY, "test")
ROWS = study.rows(CFG)
CELLS = [(ds, det) for ds in CFG.datasets for det in CFG.detectors]


def test_the_paper_rows_and_a_config_row():
    assert [r.name for r in study.ROWS] == ["shufflenetv2", "resnet50", "clsnas", "detnas",
                                            "scratch", "random", "nats"]
    assert [r.name for r in ROWS] == [r.name for r in study.ROWS] + ["pareto"]
    assert study.rows(config.load(None)) == study.ROWS  # the default adds none
    pareto = study.row(CFG, "pareto")
    assert (pareto.kind, pareto.strategy, pareto.supernet, pareto.fitness) == (
        "searched", "evolution", "pretrained", "detection")
    study.check(ROWS)
    # the workflow's singletons: one search of one architecture for the study, one NATS
    assert [r.name for r in ROWS if r.kind == "searched" and r.shared] == ["clsnas"]
    assert [r.name for r in ROWS if r.kind == "nats"] == ["nats"]


def test_the_papers_figures_are_of_rows_of_the_study():
    assert {ref.row for ref in report.PAPER} <= {r.name for r in study.ROWS}


def test_the_report_prints_the_method_after_the_rows_it_is_compared_with():
    order = [r.name for r in study.table_order(ROWS)]
    assert order == ["shufflenetv2", "resnet50", "clsnas", "scratch", "random", "detnas", "nats",
                     "pareto"]
    for row in ROWS:
        for other, _ in row.compared_with:
            assert order.index(other) < order.index(row.name)


@pytest.mark.parametrize(("overrides", "words"), [
    ({"search.objectiv": "pareto"}, ["ablations.pareto.overrides", "objectiv"]),
    ({"search.objective": "best"}, ["ablations.pareto.overrides", "best"]),
    ({"seed": 3}, ["ablations.pareto.overrides.seed", "search"]),
])
def test_a_rows_overrides_are_checked_keys_of_its_search(overrides, words):
    data = {**STUDY, "ablations": {"pareto": {**PARETO, "overrides": overrides}}}
    with pytest.raises(ValueError) as error:
        config.from_data(data, "test")
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(("name", "row", "words"), [
    ("detnas", {}, ["ablations.detnas", "paper's table"]),
    ("Pareto front", {}, ["folder name"]),
    ("pareto", {"compared_with": ["detnaz"]}, ["compared_with", "detnaz"]),
    ("pareto", {"supernet": "cls"}, ["supernet", "cls"]),
])
def test_a_config_row_is_refused_where_it_would_break_the_study(name, row, words):
    with pytest.raises(ValueError) as error:
        config.from_data({**STUDY, "ablations": {name: row}}, "test")
    for word in words:
        assert word in str(error.value)


def test_a_study_without_config_rows_keeps_its_resolved_config():
    """An empty ``ablations`` is left out of the resolved config: its hash (tags, provenance)
    and the fingerprints of resumable state stay those of a study before the section."""
    cfg = config.load(None)
    assert "ablations" not in typed.to_dict(cfg)
    assert typed.to_dict(CFG)["ablations"]["pareto"]["overrides"] == PARETO["overrides"]
    assert config.from_data(typed.to_dict(CFG), "resolved").ablations == CFG.ablations


def test_a_late_field_is_left_out_only_at_its_default():
    """Every `typed.late` field (``ablations``, ``detector_batch_size``) at its default leaves
    the resolved config as it was before the field existed; set, it is kept and read back."""
    cfg = config.load(None, ["retrain_finetune.detector_batch_size={}"])
    assert "detector_batch_size" not in typed.to_dict(cfg)["retrain_finetune"]
    default = typed.to_dict(config.load(REPO / "config" / "config.yaml"))
    assert default["retrain_finetune"]["detector_batch_size"] == {"retinanet": 8}
    set_ = config.load(None, ["supernet_pretrain.detector_batch_size={fpn: 2}"])
    data = typed.to_dict(set_)
    assert data["supernet_pretrain"]["detector_batch_size"] == {"fpn": 2}
    assert "detector_batch_size" not in data["resnet_pretrain"]
    assert config.from_data(data, "resolved") == set_
    assert typed.config_hash(set_) != typed.config_hash(config.load(
        None, ["supernet_pretrain.detector_batch_size={}"]))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_row_has_its_outputs_in_the_layout(row):
    outputs = layout.outputs(CFG)
    mine = [o for o in outputs if o.row == row.name]
    for ds, det in CELLS:
        assert f"{layout.detection_dir(row.name, ds, det)}/{layout.METRICS}" in [
            o.path for o in mine if o.kind == "detection"]
    classifiers = [o for o in mine if o.kind == "classifier"]
    if row.classifier_row != row.name:  # a borrowed classifier (NATS: ResNet-50's)
        assert not classifiers
    else:
        assert len(classifiers) == (1 if row.shared else len(CELLS))
    searches = [o for o in mine if o.kind == "search"]
    assert len(searches) == (0 if row.kind != "searched" else 1 if row.shared else len(CELLS))
    if row.kind == "baseline":
        assert layout.arch_json(row.name) == f"archs/{row.name}/{layout.ARCH}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The report's fixture results, with the pareto row's outputs (DetNAS's, copied) and one
    cost record per stage of the study, each tagged as its stage tags it (`stage_records`)."""
    root = tmp_path_factory.mktemp("study") / "results"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.py"))
    for ds, det in CELLS:
        for src, dest in ((layout.search_dir(ds, det, "detnas"),
                           layout.search_dir(ds, det, "pareto")),
                          (layout.detection_dir("detnas", ds, det),
                           layout.detection_dir("pareto", ds, det))):
            shutil.copytree(root / src, root / dest, dirs_exist_ok=True)
    for folder, tags in stage_records().items():
        path = root / folder / layout.METRICS
        data = json.loads(path.read_text()) if path.exists() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**data, "cost": {
            "wall_s": 3600.0, "gpus": 1, "gpu_hours": 1.0, "cpu_s": 1.0, "peak_rss_mb": 1.0,
            "cuda_peak_mb": None, **tags}}))
    return root


def stage_records() -> dict[str, dict]:
    """folder -> the cost tags of every stage of the study (`detnas.cost.LEDGER_TAGS`): each
    stage tags itself with the row it runs for; a supernet with its own tag."""
    records = {layout.classification_supernet_dir(): {
        "stage": "supernet-pretrain", "ablation": study.SUPERNETS["cls"].tag}}
    for ds, det in CELLS:
        for init in study.DETECTION_SUPERNETS:
            records[layout.supernet_dir(ds, det, init)] = {
                "stage": "supernet-finetune", "ablation": study.SUPERNETS[init].tag,
                "dataset": ds, "detector": det}
    for row in ROWS:
        cells = [("", "")] if row.shared else CELLS
        for ds, det in cells:
            if row.kind == "searched":
                records[layout.search_dir(ds, det, row.name)] = {
                    "stage": "search", "ablation": row.name, "dataset": ds or "imagenet",
                    "detector": det}
            if row.kind == "nats":
                records[layout.nats_dir(ds, det)] = {"stage": "nats-search", "ablation": row.name,
                                                     "dataset": ds, "detector": det}
        for ds, det in CELLS:
            if row.classifier_row == row.name:
                records[layout.classifier_dir(row.name, ds, det)] = {
                    "stage": "retrain-classification", "ablation": row.name,
                    "arch": f"{row.name}-{ds}-{det}" if not row.shared else row.name}
            records[layout.detection_dir(row.name, ds, det)] = {
                "stage": "retrain-detection", "ablation": row.name, "dataset": ds,
                "detector": det,
                "arch": f"{row.name}-{ds}-{det}" if not row.shared else row.name}
    return records


def built_on(row: study.Row, ds: str, det: str) -> set[str]:
    """The folders of the stages a row's detection retraining depends on, as the workflow's
    rules wire them: its search and the supernets that search starts from, its classifier
    (or the one it borrows), NATS's search."""
    folders = {layout.detection_dir(row.name, ds, det),
               layout.classifier_dir(row.name, ds, det)}
    if row.kind == "searched":
        folders.add(layout.search_dir(ds, det, row.name))
        net = study.SUPERNETS[row.supernet]
        while net is not None:
            folders.add(layout.classification_supernet_dir() if net.name == "cls"
                        else layout.supernet_dir(ds, det, net.name))
            net = study.SUPERNETS.get(net.init) if net.init else None
    if row.kind == "nats":
        folders.add(layout.nats_dir(ds, det))
    return folders


@pytest.fixture(scope="module")
def built(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report.build_report(CFG, results, out)
    return json.loads((out / layout.TABLES).read_text()), (out / layout.REPORT_MD).read_text()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_row_has_its_line_in_the_report(built, row):
    tables, md = built
    for ds in CFG.datasets:
        names = [r["name"] for r in tables["tables"][ds]["rows"]]
        assert names.count(row.title) == 1
        assert f"| {row.title} | `" in md  # its main-table line, with its architecture
    headline = [r for r in tables["headline"] if r["row"] == row.name]
    assert [(r["dataset"], r["detector"]) for r in headline] == CELLS


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_row_has_its_cost_in_the_ledger(results, row):
    """A row costs what its retraining was built on, each stage once; the study's total counts
    every stage once."""
    records = collect_costs(results)
    tables = cost_tables(CFG, records)
    for ds, det in CELLS:
        (line,) = [r for r in tables["rows"] if (r["row"], r["dataset"], r["detector"]) == (
            row.name, ds, det)]
        assert set(line["paths"]) == built_on(row, ds, det), (row.name, ds, det)
        assert line["gpu_hours"] == len(built_on(row, ds, det))
    assert tables["total"]["stages"] == len(stage_records())


def test_the_config_row_is_compared_and_drawn(built):
    tables, md = built
    notes = tables["observations"]
    assert any(n.startswith("synth / FPN: DetNAS (Pareto front) and DetNAS found the same "
                            "network") for n in notes)
    assert "DetNAS (Pareto front) synth FPN" in [k["label"] for k in tables["kernels"]]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_row_has_its_mlflow_group(row):
    """The experiment's view groups the runs by their ``ablation`` tag, which every stage of a
    row sets to the row's name (the rules pass it as --ablation: tests/workflow/test_rows.py)."""
    view = json.loads(tracking._ablation_view())
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "ablation"}]
    tags = tracking.stage_tags(CFG, "retrain-detection", ablation=row.name, dataset="synth")
    assert tags["ablation"] == row.name and list(tags)[:2] == ["stage", "ablation"]


def test_a_rows_search_runs_with_its_overrides(tmp_path, monkeypatch):
    """`detnas search --ablation pareto` searches with the row's settings, tagged pareto."""
    from detnas.cli import main
    from detnas.search import stage

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    seen = []
    monkeypatch.setattr(stage, "search_stage", lambda cfg, *a, spec, **k: seen.append(
        (cfg.search.objective, k["ablation"])) or {})
    for ablation in ("pareto", "detnas"):
        assert main(["search", "evolution", "--config", str(path), "--set", "device=cpu",
                     "--supernet", "s.pt", "--data", "a.json", "--images", "i",
                     "--recalib-annotations", "b.json", "--recalib-image-dir", "i",
                     "--ablation", ablation, "--out", str(tmp_path / ablation)]) == 0
    assert seen == [("pareto", "pareto"), ("fitness", "detnas")]


def test_a_misspelt_ablation_is_refused_naming_the_rows(tmp_path, monkeypatch, capsys):
    """`detnas search --ablation detnsa` used to search with the base settings, tagged detnsa
    (`study.find` found no row, and no row has no overrides)."""
    from detnas.cli import main
    from detnas.search import stage

    monkeypatch.setattr(stage, "search_stage", lambda *a, **k: pytest.fail("searched"))
    args = ["search", "evolution", "--set", "device=cpu", "--supernet", "s.pt", "--data",
            "a.json", "--images", "i", "--recalib-annotations", "b.json", "--recalib-image-dir",
            "i", "--out", str(tmp_path / "out")]
    assert main([*args, "--ablation", "detnsa"]) == 2
    assert capsys.readouterr().err == (
        "detnas: error: --ablation 'detnsa': not a row of the study searched with detection "
        "fitness (known: detnas, scratch, random)\n")
    assert main([*args, "--ablation", "clsnas"]) == 2  # a row of the other fitness
    assert "--ablation 'clsnas': not a row of the study searched with detection" in (
        capsys.readouterr().err)


def test_collect_metrics_has_the_config_row(results, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "collect_metrics", Path(__file__).parents[1] / "scripts" / "collect_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    (copy / layout.CONFIG).write_text(yaml.safe_dump(typed.to_dict(CFG)))
    assert module.main([str(copy)]) == 0
    table = json.loads((copy / "metrics.json").read_text())
    assert {r.name for r in ROWS} <= set(table)
    assert "mmap" in table["pareto"]["synth"]["fpn"]
    assert (copy / "headline" / "synth-fpn-pareto.json").exists()
    assert (copy / "plots" / "search-synth-fpn-pareto.csv").exists()
