"""The results report on a tiny fake results tree (tests/fixtures/results).

The fixture has every input for dataset ``synth`` (FPN and RetinaNet); for ``voc`` (a VOC-kind
dataset, AP50) only FPN, without the DetNAS-scratch run; ``nats`` has no classification metrics.
Only synth / FPN has a second replicate of its detectors (``rep1/``: 0.004 above the first, on
the same test resamples), bootstrap values and a ranking check; every classifier has two.
"""

import json
import shutil
import statistics
from itertools import pairwise
from pathlib import Path

import pytest

from detnas import report
from detnas.cli import main
from detnas.plan import config
from detnas.plan.space import Arch

FIXTURE = Path(__file__).parent / "fixtures" / "results"
STUDY = """\
space: tiny
datasets:
  synth: {kind: synthetic, metric: mmap}
  voc: {kind: voc, metric: ap50}
detectors: [fpn, retinanet]
replicates: 2
rank: {enabled: true, detectors: [fpn]}
"""
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "study.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def built(study, tmp_path_factory):
    """The report written once through the CLI; returns its folder."""
    out = tmp_path_factory.mktemp("report")
    rc = main(["report", "--config", str(study), "--set", "search.max_flops=45000000",
               "--results", str(FIXTURE), "--out", str(out)])
    assert rc == 0
    return out


def _fixture_json(rel):
    return json.loads((FIXTURE / rel).read_text())


def _row(tables, dataset, row):
    return next(r for r in tables["tables"][dataset]["rows"] if r["row"] == row)


def test_outputs_and_figure_names(built, study):
    cfg = config.load(study)
    names = set(report.expected_figures(cfg))
    assert {p.name for p in (built / "figures").iterdir()} == names
    assert "search_synth_fpn.png" in names and "nats_dilations.png" in names
    for name in names:
        assert (built / "figures" / name).read_bytes().startswith(PNG)
    html = (built / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(names)  # self-contained
    md = (built / "report.md").read_text()
    assert md.count("](figures/") == len(names)


def test_main_table_values_from_metrics(built):
    tables = json.loads((built / "tables.json").read_text())
    synth = tables["tables"]["synth"]
    assert [r["row"] for r in synth["rows"]] == [  # the paper's order: the method after the rows
        # it is compared with (detnas.plan.study.table_order)
        "shufflenetv2", "resnet50", "clsnas", "scratch", "random", "detnas", "nats"]
    detnas = _row(tables, "synth", "detnas")
    fpn = _fixture_json("retrain/detnas/synth/fpn/metrics.json")
    assert detnas["map"]["retinanet"] == _fixture_json(
        "retrain/detnas/synth/retinanet/metrics.json")["mmap"]  # one seed: its value
    assert detnas["arch"]["fpn"] == fpn["arch"]
    assert detnas["backbone_flops"]["fpn"] == fpn["backbone_flops"]
    assert detnas["top1"]["fpn"] == pytest.approx(statistics.fmean(  # over its replicates
        _fixture_json(f"retrain/detnas/synth/fpn/{rep}cls/metrics.json")["top1"]
        for rep in ("", "rep1/")))
    # a VOC-kind dataset is compared on AP50, not mmAP
    voc_fpn = _fixture_json("retrain/detnas/voc/fpn/metrics.json")
    assert tables["tables"]["voc"]["metric"] == "ap50"
    assert _row(tables, "voc", "detnas")["map"]["fpn"] == voc_fpn["ap50"] != voc_fpn["mmap"]


def test_nats_top1_reuses_resnet50(built):
    tables = json.loads((built / "tables.json").read_text())
    nats = _row(tables, "synth", "nats")
    assert nats["top1"]["fpn"] == pytest.approx(statistics.fmean(
        _fixture_json(f"retrain/resnet50/{rep}cls/metrics.json")["top1"] for rep in ("", "rep1/")))
    assert "ResNet-50" in nats["top1_note"]
    assert not any("nats/cls" in m for m in tables["missing"])


def test_missing_inputs_are_blank_and_named(built):
    tables = json.loads((built / "tables.json").read_text())
    missing = set(tables["missing"])
    assert "retrain/scratch/voc/fpn/metrics.json" in missing
    assert "search/voc/retinanet/detnas/history.csv" in missing
    assert "retrain/detnas/synth/fpn/metrics.json" not in missing
    scratch = _row(tables, "voc", "scratch")
    assert scratch["map"] == {"fpn": None, "retinanet": None}
    assert scratch["arch"]["fpn"] is None  # never borrowed from another dataset's search
    md = (built / "report.md").read_text()
    assert "`retrain/scratch/voc/fpn/metrics.json`" in md
    assert "| DetNAS-scratch | — | — | — |" in md


def test_paper_reference_columns(built):
    md = (built / "report.md").read_text()
    tables = json.loads((built / "tables.json").read_text())
    detnas = _row(tables, "synth", "detnas")["paper"]  # synthetic compares with COCO
    assert [r["value"] for r in detnas["map"]["fpn"]] == [36.4, 36.6]
    assert [r["value"] for r in _row(tables, "voc", "detnas")["paper"]["map"]["fpn"]] == [81.5]
    assert _row(tables, "synth", "shufflenetv2")["paper"]["map"]["fpn"] == []  # no invented figure
    assert [r["value"] for r in _row(tables, "synth", "nats")["paper"]["map"]["fpn"]] == [38.4]
    assert "36.4 [" in md and "81.5 [" in md
    assert "ShuffleNetV2 (hand-crafted)" in md and "DetNAS (random search)" in md
    # synthetic row: FPN 12.3 ± 0.3 (2 seeds) [its bootstrap interval], RetinaNet 11.1 (one
    # seed, no bootstrap), beside 36.4 (paper)
    main_results = md[md.index("## Main results"):]
    line = next(x for x in main_results.splitlines() if x.startswith("| DetNAS |"))
    assert "| 12.3 ± 0.3 [" in line and "| 11.1 |" in line and "36.4" in line


def test_search_curve_and_summary():
    history = report.read_history(FIXTURE / "search/synth/fpn/detnas/history.csv")
    fitness = [r["fitness"] for r in history]
    curve = report.search_curve(history)
    assert curve["best_so_far"][-1] == max(fitness)
    assert all(a <= b for a, b in pairwise(curve["best_so_far"]))
    assert curve["generations"] == [0, 1, 2, 3]
    gen0 = [r["fitness"] for r in history if r["generation"] == 0]
    assert curve["generation_mean"][0] == pytest.approx(statistics.fmean(gen0))
    assert curve["generation_best"][0] == max(gen0)
    summary = report.search_summary(history)
    assert summary["median"] == statistics.median(fitness)
    assert fitness[summary["best_at"] - 1] == max(fitness)
    assert report.evaluations_to_reach(history, 10.0) is None
    assert report.evaluations_to_reach(history, fitness[0]) == 1


def test_read_history_rejects_missing_columns(tmp_path):
    bad = tmp_path / "history.csv"
    bad.write_text("order,arch\n0,00-00-0000-00\n")
    with pytest.raises(ValueError, match="fitness"):
        report.read_history(bad)


def test_observations_compare_ea_with_random(built):
    tables = json.loads((built / "tables.json").read_text())
    ea = report.read_history(FIXTURE / "search/synth/fpn/detnas/history.csv")
    rnd = report.read_history(FIXTURE / "search/synth/fpn/random/history.csv")
    best = max(r["fitness"] for r in ea)
    median = statistics.median(r["fitness"] for r in rnd)
    note = next(o for o in tables["observations"] if o.startswith("synth / FPN: EA best"))
    assert f"{best:.4f}" in note and f"{median:.4f}" in note
    kernels = [o for o in tables["observations"] if o.startswith("Mean kernel size")]
    assert len(kernels) == 1 and "as the paper reports" in kernels[0]


def test_kernel_statistics():
    arch = Arch.parse("01-23-0123-01", "tiny")
    assert report.stage_kernel_means(arch) == [4.0, 5.0, 4.5, 4.0]
    assert report.stage_kernel_means(arch, report.RECEPTIVE_FIELDS) == [4.0, 7.0, 5.5, 4.0]
    assert report.shallow_minus_deep(arch) == pytest.approx(4.5 - 4.25)
    cells = report.arch_cells(arch, gap=0.5)
    assert [c for _, _, c in cells] == list(arch.choices)
    assert [x for x, _, _ in cells][:4] == [0, 1, 2.5, 3.5]  # a gap between stages


def test_dilation_matrix():
    spec = {"dilations": {"layer1.0": "1,2,2x3", "layer2.0": "3,1,1"}}
    layers, values, labels = report.dilation_matrix(spec)
    assert layers == ["layer1.0", "layer2.0"]
    assert values == [[1, 2, 2.5], [3, 1, 1]]
    assert labels[0] == ["1", "2", "2x3"]


def test_empty_results_still_render(study, tmp_path):
    cfg = config.load(study)
    data = report.build_report(cfg, tmp_path / "nothing", tmp_path / "out")
    assert "retrain/detnas/synth/fpn/metrics.json" in data["missing"]
    assert {p.name for p in (tmp_path / "out" / "figures").iterdir()} == set(
        report.expected_figures(cfg))
    assert all(r["map"]["fpn"] is None for r in data["tables"]["synth"]["rows"])
    assert "<table>" in (tmp_path / "out" / "report.html").read_text()


def test_markdown_and_html_rendering(tmp_path):
    blocks = [("h", 2, "T"), ("table", ["a|b", "c"], [["`x`", "<y>"]]), ("ul", ["i"])]
    md = report.render_markdown(blocks)
    assert "## T" in md and "| a\\|b | c |" in md and "- i" in md
    page = report.render_html(blocks, tmp_path, "t")
    assert "<code>x</code>" in page and "&lt;y&gt;" in page and "<li>i</li>" in page


def test_replicates_mean_std_and_interval_with_both_noises(built):
    from detnas.report import noise

    tables = json.loads((built / "tables.json").read_text())
    seeds = [_fixture_json(f"retrain/detnas/synth/fpn/{s}metrics.json")["mmap"]
             for s in ("", "rep1/")]
    detnas = _row(tables, "synth", "detnas")
    assert detnas["map_seeds"]["fpn"] == {"0": seeds[0], "1000": seeds[1]}  # replicate_seed
    assert detnas["map"]["fpn"] == pytest.approx(statistics.fmean(seeds))
    assert detnas["map_std"]["fpn"] == pytest.approx(statistics.stdev(seeds))
    assert detnas["map_std"]["retinanet"] is None  # its second replicate is missing, and named
    assert "retrain/detnas/synth/retinanet/rep1/metrics.json" in tables["missing"]
    assert detnas["top1"]["fpn"] == pytest.approx(0.435)  # two classifier replicates
    # every FPN row moves 0.004 between its replicates: pooled sigma 0.004 / sqrt(2), 7 df
    fpn = tables["tables"]["synth"]["noise"]["fpn"]
    assert fpn["sigma"] == pytest.approx(0.004 / 2 ** 0.5, rel=1e-3) and fpn["df"] == 7
    assert tables["tables"]["synth"]["noise"]["retinanet"]["sigma"] is None
    boots = [_fixture_json(f"retrain/detnas/synth/fpn/{s}metrics.json")["bootstrap"]["mmap"]
             for s in ("", "rep1/")]
    fig = noise.Figure(seeds, boots)
    training = noise.TrainingNoise.calibrated(fpn["sigma"], fpn["df"], "")
    assert detnas["map_interval"]["fpn"] == pytest.approx(
        list(noise.interval(fig, training, rerun=True)))  # where a rerun lands
    assert detnas["map_mean_interval"]["fpn"] == pytest.approx(list(noise.interval(fig, training)))
    lo, hi = detnas["map_mean_interval"]["fpn"]
    test_lo, test_hi = detnas["map_test_interval"]["fpn"]
    assert lo < test_lo and hi > test_hi  # both sources: wider than the test images' alone
    assert detnas["map_interval"]["retinanet"] is None
    header = (built / "report.md").read_text()
    assert "(mean ± std of 2 seeds) [95% interval of a rerun: training and test noise]" in header


def test_test_interval_is_over_the_replicates_means(built):
    import numpy as np

    tables = json.loads((built / "tables.json").read_text())
    boots = [_fixture_json(f"retrain/detnas/synth/fpn/{s}metrics.json")["bootstrap"]["mmap"]
             for s in ("", "rep1/")]
    interval = _row(tables, "synth", "detnas")["map_test_interval"]
    assert interval["fpn"] == pytest.approx(list(np.percentile(np.mean(boots, 0), [2.5, 97.5])))
    assert interval["retinanet"] is None


def test_verdicts_weigh_differences_against_both_noises(built):
    tables = json.loads((built / "tables.json").read_text())
    verdicts = tables["tables"]["synth"]["verdicts"]
    v = next(v for v in verdicts["fpn"] if (v["a"], v["b"]) == ("detnas", "random"))
    assert v["seeds"] == [2, 2] and v["diff"] == pytest.approx(0.007, abs=1e-9)
    lo, hi = v["interval"]
    assert lo < 0 < hi and v["outcome"] == "undetermined"
    nats = next(v for v in verdicts["fpn"] if (v["a"], v["b"]) == ("nats", "resnet50"))
    assert nats["outcome"] == "a better" and nats["interval"][0] > 0  # +1.2 points
    notes = tables["observations"]
    note = next(o for o in notes if o.startswith("synth / FPN: DetNAS +0.7 mmAP over DetNAS "
                                                  "(random search) (means of 2 seeds)"))
    assert "undetermined" in note and "contains 0" in note
    retina = next(o for o in notes if o.startswith("synth / RetinaNet: DetNAS "))
    assert "one seed per row leaves the training noise unknown" in retina
    assert next(v for v in verdicts["retinanet"] if v["a"] == "detnas")["interval"] is None


def test_ranking_check_in_the_report(built):
    from detnas.report.readme import readme_block

    tables = json.loads((built / "tables.json").read_text())
    rows = {r["supernet"]: r for r in tables["ranking"]}
    assert set(rows) == {"pretrained", "scratch"}
    assert rows["pretrained"]["kendall_tau"] == 0.6667 and rows["pretrained"]["archs"] == 4
    assert rows["scratch"]["kendall_tau"] is None
    md = (built / "report.md").read_text()
    assert "| synth | FPN | pretrained | 4 | 4.0 / 1.5 | +0.67 (0.33) | +0.80 (0.20) |" in md
    assert "![Ranking check (synth, FPN)" in md
    assert any("Kendall tau +0.67" in o for o in tables["observations"])
    # the nets span 4.0 points, one moves 1.5 with a second seed: more than twice the noise
    assert any("span 4.0 points" in o and "more than twice the training noise" in o
               for o in tables["observations"])
    assert any("undefined" in o and "scratch supernet" in o for o in tables["observations"])
    block = readme_block(tables)
    assert "| synth | FPN | scratch | 4 | 4.0 / 1.5 | undefined (undefined) |" in block


def test_replicate_and_rank_settings_are_checked():
    cfg = config.load(None, ["replicates=3", "search_seeds=3", "replicate=2", "seed=7"])
    assert cfg.run_seed == 2007 and cfg.search_replicate(2) == 2
    assert config.load(None, ["replicates=3"]).search_replicate(2) == 0  # the one winner
    for bad, words in ((["replicates=3", "search_seeds=2"], "search_seeds"),
                       (["replicates=2", "replicate=2"], "replicate"),
                       (["replicates=0"], "replicates"),
                       (["detectors=[fpn]", "rank.detectors=[retinanet]"], "rank.detectors"),
                       (["rank.archs=1"], "rank")):
        with pytest.raises(ValueError, match=words):
            config.load(None, bad)


def test_the_report_opens_with_a_summary_of_its_findings(built):
    md = (built / "report.md").read_text()
    assert md.index("## Summary") < md.index("### Findings") < md.index("## Main results")
    summary = md[md.index("## Summary"):md.index("## Main results")]
    assert "| model | dataset / detector | AP50 % | mmAP % | seeds | 95% interval of a rerun | " \
           "top-1 % | backbone FLOPs | compute |" in summary
    lo, hi = _row(json.loads((built / "tables.json").read_text()), "synth", "detnas")[
        "map_interval"]["fpn"]
    assert (f"| DetNAS | synth / FPN | 30.2 | 12.3 | 2 | [{100 * lo:.1f}, {100 * hi:.1f}] | "
            "43.5 | 46.86M | — |") in summary
    assert "voc / RetinaNet" not in summary  # a cell the study did not run
    findings = summary[summary.index("### Findings"):]
    assert "synth / FPN: NATS (ResNet-50) +1.2 mmAP over ResNet-50" in findings
    assert "undetermined" not in findings  # only what is decided beyond the noise
    headline = json.loads((built / "tables.json").read_text())["headline"]
    assert {"row": "detnas", "dataset": "synth", "detector": "fpn", "top1": 0.435,
            "seeds": 2, "low": lo, "high": hi}.items() <= \
        next(r for r in headline if (r["row"], r["dataset"], r["detector"]) == (
            "detnas", "synth", "fpn")).items()


def test_two_rows_that_found_one_network_are_named_the_same_network(study, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results, ignore=shutil.ignore_patterns("*.py"))
    detnas = results / "retrain/detnas/synth/retinanet/metrics.json"
    shutil.copy(detnas, results / "retrain/random/synth/retinanet/metrics.json")
    shutil.copy(results / "search/synth/retinanet/detnas/arch.json",
                results / "search/synth/retinanet/random/arch.json")
    assert main(["report", "--config", str(study), "--results", str(results),
                 "--out", str(tmp_path / "report")]) == 0
    notes = json.loads((tmp_path / "report/tables.json").read_text())["observations"]
    arch = json.loads(detnas.read_text())["arch"]
    same = [n for n in notes if n.startswith("synth / RetinaNet: DetNAS and DetNAS (random")]
    assert same == [f"synth / RetinaNet: DetNAS and DetNAS (random search) found the same "
                    f"network, `{arch}` (mmAP 11.1 and 11.1: its retrainings)."]
    assert not any(n.startswith("synth / RetinaNet: DetNAS +0.0") for n in notes)
    md = (tmp_path / "report/report.md").read_text()
    assert same[0] in md[md.index("### Findings"):md.index("## Main results")]


def test_the_report_records_the_numeric_environment(built):
    """The report and the README block name the numeric environment the figures were made in:
    the same figures bit for bit need the same one."""
    from detnas.report.readme import readme_block

    tables = json.loads((built / "tables.json").read_text())
    assert tables["provenance"]["numeric_environments"] == [
        "torch 2.14.1, numpy 2.4.6, AVX512"]
    assert "numeric environment torch 2.14.1, numpy 2.4.6, AVX512" in (
        built / "report.md").read_text()
    assert "numeric environment torch 2.14.1, numpy 2.4.6, AVX512" in readme_block(tables)


def test_the_headline_states_cpu_hours_for_a_cpu_study():
    from detnas.report.headline import format_headline

    base = {"name": "DetNAS", "dataset": "synth", "detector": "fpn", "ap50": 0.5, "mmap": 0.2,
            "seeds": 2, "low": None, "high": None, "top1": 0.9, "flops": 1e6}
    _, rows = format_headline([{**base, "gpu_hours": 0.0, "cpu_hours": 0.25},
                               {**base, "gpu_hours": 2.0, "cpu_hours": 30.0},
                               {**base, "gpu_hours": None, "cpu_hours": None}])
    assert [r[-1] for r in rows] == ["0.250 CPU-h", "2.000 GPU-h", "—"]
