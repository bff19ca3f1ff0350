"""Do the verdicts of one study survive another run of it (another seed, another machine)?

    python scripts/verdict_stability.py RUN_A/tables.json RUN_B/tables.json [RUN_C ...]
    python scripts/verdict_stability.py INTEL.json AMD.json --sigma-from S0.json S1.json S2.json

Reads the reports' ``tables.json`` (`detnas report`) and checks, for every pair of runs, what the
README promises of a rerun elsewhere:

- **no contradiction**: no comparison of two rows that one run decides one way ("a better") and
  the other the other way ("b better"); undetermined in one and decided in the other is not a
  contradiction;
- **coverage**: at least 90% of each run's detection figures (row, dataset, detector) inside the
  other run's 95% interval of a rerun (`detnas.report.noise.interval`), both ways.

A run judges with its own noise model (`detnas.report.noise`: its replicates' pooled spread and
its test resamples). A run of one replicate per row has no training noise of its own; with
``--sigma-from``, every such run is judged with the training noise measured by the given runs of
the same recipe at other seeds (each row's figures over those runs, pooled over the rows of a
dataset and detector), and its test noise read from its interval over test images (the reports
before replicates kept the 95% bootstrap interval; a difference then takes both rows' test
variances, unpaired, which overstates it a little).

Prints one table per pair and the runs' verdicts; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from itertools import combinations
from pathlib import Path

from detnas.report import noise

COVERAGE = 0.90
Z95 = 1.959964  # the old reports' 95% percentile intervals, read back as normal ones


def _cells(tables: dict) -> dict[tuple[str, str, str], dict]:
    """(dataset, detector, row) -> {"values", "interval", "test_sd"} of a report."""
    out = {}
    for ds, table in tables["tables"].items():
        for row in table["rows"]:
            for det in table["detectors"]:
                if row["map"].get(det) is None:
                    continue
                own = "map_test_interval" in row  # a report with replicates (noise.py)
                seeds = row.get("map_seeds", {}).get(det) or {}
                values = list(seeds.values()) or [row["map"][det]]
                test = (row["map_test_interval"] if own else row["map_interval"]).get(det)
                test_sd = row.get("map_test_sd", {}).get(det)
                if test_sd is None and test:
                    test_sd = (test[1] - test[0]) / (2 * Z95)
                interval = row["map_interval"].get(det) if own else None
                out[(ds, det, row["row"])] = {"values": values, "interval": interval,
                                              "test_sd": test_sd or 0.0}
    return out


def calibration(runs: list[dict]) -> dict[tuple[str, str], noise.TrainingNoise]:
    """(dataset, detector) -> the training noise of the figures over ``runs`` (each row's mean
    per run; the rows pooled)."""
    by_row: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for key, cell in _cells(run).items():
            by_row.setdefault(key, []).append(statistics.fmean(cell["values"]))
    cols: dict[tuple[str, str], list[list[float]]] = {}
    for (ds, det, _), values in by_row.items():
        cols.setdefault((ds, det), []).append(values)
    return {col: noise.TrainingNoise.pooled(rows, f"rows over {len(runs)} runs at other seeds")
            for col, rows in cols.items()}


def judged(tables: dict, calibrated: dict | None) -> tuple[dict, dict]:
    """``(figures, verdicts)`` of a run: (dataset, detector, row) -> (mean, interval), and
    (dataset, detector, a, b) -> outcome. A run with its own training noise keeps its report's;
    one without is judged with ``calibrated`` (None: its comparisons stay undetermined)."""
    cells = _cells(tables)
    own = any(c["interval"] for c in cells.values())
    figures, verdicts = {}, {}
    for key, c in cells.items():
        fig = noise.Figure(c["values"])
        if own:
            band = c["interval"]
        else:
            t = (calibrated or {}).get(key[:2], noise.TrainingNoise(None, 0, ""))
            band = noise.interval(fig, t, test_sd=c["test_sd"], rerun=True)
            band = list(band) if band else None
        figures[key] = (fig.mean, band)
    unknown = noise.TrainingNoise(None, 0, "")
    for ds, table in tables["tables"].items():
        if own:
            verdicts |= {(ds, det, v["a"], v["b"]): v["outcome"]
                         for det, entries in table["verdicts"].items()
                         for v in entries if "outcome" in v}
            continue
        for det, a, b in _comparisons(table["detectors"]):
            ka, kb = (ds, det, a), (ds, det, b)
            if ka in cells and kb in cells:
                sd = (cells[ka]["test_sd"] ** 2 + cells[kb]["test_sd"] ** 2) ** 0.5
                verdicts[(ds, det, a, b)] = noise.compare(
                    noise.Figure(cells[ka]["values"]), noise.Figure(cells[kb]["values"]),
                    (calibrated or {}).get((ds, det), unknown), test_sd=sd).outcome
    return figures, verdicts


def _comparisons(detectors: list[str]) -> list[tuple[str, str, str]]:
    """(detector, a, b) of the paper's comparisons (`detnas.plan.study`), for a report that has no
    verdicts of its own."""
    from detnas.plan import study

    return [(det, a.name, b.name) for a, b, _ in study.comparisons(study.ROWS)
            for det in detectors]


def compare(x: tuple[dict, dict], y: tuple[dict, dict]) -> dict:
    """The checks of run y against run x (both `judged`)."""
    (fx, vx), (fy, vy) = x, y
    common = sorted(fx.keys() & fy.keys())

    def covered(f_in: dict, f_band: dict) -> tuple[int, int]:
        bands = [(f_in[k][0], f_band[k][1]) for k in common if f_band[k][1]]
        return sum(lo <= m <= hi for m, (lo, hi) in bands), len(bands)

    opposite = {noise.A_BETTER: noise.B_BETTER, noise.B_BETTER: noise.A_BETTER}
    keys = sorted(vx.keys() & vy.keys())
    return {"figures": len(common), "y_in_x": covered(fy, fx), "x_in_y": covered(fx, fy),
            "comparisons": len(keys),
            "contradictions": [k for k in keys if opposite.get(vx[k]) == vy[k]],
            "agree_decided": sum(vx[k] == vy[k] != noise.UNDETERMINED for k in keys),
            "decided": (sum(vx[k] != noise.UNDETERMINED for k in keys),
                        sum(vy[k] != noise.UNDETERMINED for k in keys))}


def _share(pair: tuple[int, int]) -> str:
    n, total = pair
    return f"{n}/{total} ({100 * n / total:.0f}%)" if total else "no intervals"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="tables.json of each run")
    p.add_argument("--sigma-from", nargs="+", type=Path, default=[], metavar="TABLES",
                   help="runs of the same recipe at other seeds: the training noise of the "
                        "runs of one replicate per row")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two runs")
    load = lambda path: json.loads(path.read_text())  # noqa: E731
    calibrated = calibration([load(r) for r in args.sigma_from]) if args.sigma_from else None
    if calibrated:
        for (ds, det), t in sorted(calibrated.items()):
            sigma = "unknown" if t.sigma is None else f"{100 * t.sigma:.1f} points"
            print(f"training noise {ds} / {det}: {sigma} ({t.source})")
    runs = [(str(path), judged(load(path), calibrated)) for path in args.runs]
    ok = True
    print("| run x | run y | figures | y inside x's interval | x inside y's interval | "
          "comparisons | decided (x / y) | decided alike | contradictions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (x, jx), (y, jy) in combinations(runs, 2):
        c = compare(jx, jy)
        good = not c["contradictions"] and all(
            total and n / total >= COVERAGE for n, total in (c["y_in_x"], c["x_in_y"]))
        ok &= bool(good)
        print(f"| {x} | {y} | {c['figures']} | {_share(c['y_in_x'])} | {_share(c['x_in_y'])} | "
              f"{c['comparisons']} | {c['decided'][0]} / {c['decided'][1]} | "
              f"{c['agree_decided']} | {len(c['contradictions'])} |")
        for k in c["contradictions"]:
            print(f"  contradiction: {' / '.join(k)}")
    print("verdicts hold across the runs" if ok else
          f"verdicts do not hold: a contradiction, or under {COVERAGE:.0%} of the figures inside "
          "the other run's interval")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
