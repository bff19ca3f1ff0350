"""`scripts/verdict_stability.py`: do a study's verdicts survive another run of it?"""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("verdict_stability",
                                              REPO / "scripts" / "verdict_stability.py")
verdict_stability = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verdict_stability)


def _run(detnas=(0.70, 0.72), clsnas=(0.60, 0.61), outcome="a better", width=0.05):
    """A report with replicates: two rows of two seeds, their intervals, one verdict."""
    def row(name, values):
        mean = sum(values) / len(values)
        return {"row": name, "map": {"fpn": mean},
                "map_seeds": {"fpn": {str(1000 * i): v for i, v in enumerate(values)}},
                "map_interval": {"fpn": [mean - width, mean + width]},
                "map_test_interval": {"fpn": [mean - 0.02, mean + 0.02]},
                "map_test_sd": {"fpn": 0.01}}
    verdict = {"a": "detnas", "b": "clsnas", "outcome": outcome, "diff": 0.1}
    return {"tables": {"synth": {"detectors": ["fpn"],
                                 "rows": [row("detnas", detnas), row("clsnas", clsnas)],
                                 "verdicts": {"fpn": [verdict]}}}}


def _main(tmp_path, *runs, sigma_from=()):
    paths = []
    for i, run in enumerate((*runs, *sigma_from)):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run))
    args = [str(p) for p in paths[:len(runs)]]
    if sigma_from:
        args += ["--sigma-from", *map(str, paths[len(runs):])]
    return verdict_stability.main(args)


@pytest.mark.parametrize(("other", "holds"), [
    (_run(detnas=(0.72, 0.73)), True),  # inside the interval, the same verdict
    (_run(outcome="undetermined"), True),  # undetermined against decided: no contradiction
    (_run(outcome="b better"), False),  # decided both ways: a contradiction
    (_run(detnas=(0.80, 0.82), clsnas=(0.70, 0.71)), False),  # both figures outside: 50%
])
def test_contradictions_and_coverage(tmp_path, other, holds, capsys):
    assert (_main(tmp_path, _run(), other) == 0) == holds
    out = capsys.readouterr().out
    assert "| run x | run y |" in out
    assert ("contradiction: synth / fpn / detnas / clsnas" in out) == (
        other["tables"]["synth"]["verdicts"]["fpn"][0]["outcome"] == "b better")


def _old(detnas, clsnas, half=0.04):
    """A report of one seed per row (before replicates): intervals over test images only."""
    rows = [{"row": n, "map": {"fpn": v}, "map_interval": {"fpn": [v - half, v + half]}}
            for n, v in (("detnas", detnas), ("clsnas", clsnas))]
    return {"tables": {"synth": {"detectors": ["fpn"], "rows": rows}}}


def test_one_seed_runs_are_judged_with_the_noise_of_other_seeds(tmp_path, capsys):
    a, b = _old(0.70, 0.60), _old(0.75, 0.58)
    # without a calibration one seed has no training noise: no interval, nothing decided
    assert _main(tmp_path, a, b) == 1
    assert "no intervals" in capsys.readouterr().out
    # seeds that move the rows by 2 to 3 points: both runs fall inside the other's interval,
    # and DetNAS's 10 and 17 points are decided alike
    seeds = [_old(0.70, 0.60), _old(0.73, 0.62), _old(0.68, 0.59)]
    assert _main(tmp_path, a, b, sigma_from=seeds) == 0
    out = capsys.readouterr().out
    assert "training noise synth / fpn: 2.1 points" in out  # sqrt((12.7 + 4.7) / 4) e-4
    assert "| 2/2 (100%) | 2/2 (100%) |" in out
    assert "| 1 / 1 | 1 | 0 |" in out
    figures, verdicts = verdict_stability.judged(a, verdict_stability.calibration(seeds))
    assert verdicts[("synth", "fpn", "detnas", "clsnas")] == "a better"
    lo, hi = figures[("synth", "fpn", "detnas")][1]
    assert lo < 0.70 - 0.04 and hi > 0.70 + 0.04  # wider than the test images' interval alone


def test_noise_budget_curve_from_a_report(tmp_path, capsys):
    """`scripts/noise_budget.py`: the training noise a report's replicates measure, and the
    smallest difference called at 95% falling with more seeds per row."""
    from detnas.cli import main as detnas
    from detnas.report import noise

    spec = importlib.util.spec_from_file_location("noise_budget",
                                                  REPO / "scripts" / "noise_budget.py")
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    study = tmp_path / "study.yaml"
    study.write_text("space: tiny\nreplicates: 2\ndatasets: {synth: {kind: synthetic, "
                     "metric: mmap}}\ndetectors: [fpn]\ntracking: {enabled: false}\n")
    assert detnas(["report", "--config", str(study), "--results",
                   str(REPO / "tests" / "fixtures" / "results"), "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "tables.json").read_text())
    m = budget.measure([run])
    col = m["columns"][("synth", "fpn")]
    assert col["sigma"] == pytest.approx(0.004 / 2 ** 0.5, rel=1e-3) and col["df"] == 7
    rows = {(r["seeds"], r["test_scale"]): r["synth/fpn"] for r in budget.curve(m)}
    assert rows[(1, 1)] is None  # one seed: the training noise is unknown
    t = noise.TrainingNoise.calibrated(col["sigma"], 7, "")
    assert rows[(2, 1)] == pytest.approx(100 * noise.resolvable(t, 2, col["test_sd"]))
    assert rows[(2, 1)] > rows[(4, 1)] > rows[(12, 1)] and rows[(4, 4)] < rows[(4, 1)]
    assert budget.main([str(tmp_path / "tables.json")]) == 0
    assert "| synth / fpn | 0.3 | 7 | 7 |" in capsys.readouterr().out
