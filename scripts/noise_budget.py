"""What a study can resolve, and what it costs to resolve more.

    python scripts/noise_budget.py RUN/tables.json [RUN2/tables.json ...] [--plot OUT.png]

From the reports of one recipe (one or several study seeds, each with its replicates): the
training noise of one replicate (the replicates' spread within each run, pooled over the rows
and the runs), the test images' noise of a difference between two rows (the median over the
pairs of rows, at the runs' test split), and the study's cost split into what every replicate
adds (its jobs: the stages under a ``rep<K>/`` folder) and the rest (data, supernets, the first
search and the ranking check). Then the smallest difference between two rows that a study of
the same recipe calls at 95% (`detnas.report.noise.resolvable`, the degrees of freedom those of
a study of that many replicates) against the replicates per row and the test split's size, and
the study's time on the machine of the runs (job seconds over the 2 cores).

Prints Markdown tables; ``--plot`` draws the curves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from detnas.report import noise

SEEDS = (1, 2, 3, 4, 6, 8, 12)
TEST_SCALE = (0.4, 1, 2, 4)  # test split sizes, as multiples of the runs'
CORES = 2


def measure(runs: list[dict]) -> dict:
    """Per (dataset, detector): sigma (pooled within-run replicate spread), its df, the rows,
    the test noise of a difference; and the cost of a replicate and of the rest."""
    cols: dict[tuple[str, str], dict] = {}
    for run in runs:
        for ds, table in run["tables"].items():
            for det in table["detectors"]:
                col = cols.setdefault((ds, det), {"rows": [], "test": [], "replicates": []})
                values = [list(r["map_seeds"][det].values()) for r in table["rows"]
                          if r["map_seeds"].get(det)]
                col["rows"] += values
                col["replicates"].append(table["noise"][det]["replicates"])
                if table["noise"][det]["test_sd_difference"] is not None:
                    col["test"].append(table["noise"][det]["test_sd_difference"])
    out = {}
    for key, col in cols.items():
        t = noise.TrainingNoise.pooled(col["rows"])
        out[key] = {"sigma": t.sigma, "df": t.df, "rows": len(col["rows"]) // len(runs),
                    "test_sd": statistics.median(col["test"]) if col["test"] else 0.0,
                    "replicates": max(col["replicates"])}
    costs = []
    for run in runs:
        stages = run["cost"]["stages"]
        reps = max(v["replicates"] for v in out.values())
        extra = sum(s["wall_s"] for s in stages if "/rep" in f"/{s['path']}/")
        total = sum(s["wall_s"] for s in stages)
        per_rep = extra / max(reps - 1, 1)
        costs.append((total - reps * per_rep, per_rep))
    fixed = statistics.fmean(c[0] for c in costs)
    per_rep = statistics.fmean(c[1] for c in costs)
    return {"columns": out, "fixed_s": fixed, "replicate_s": per_rep}


def row_spread(runs: list[dict]) -> list[dict]:
    """Per dataset, detector and row: the standard deviation of one seed's figure within a
    study (its replicates, pooled over the runs), that of the study means across the runs
    (another study seed: other data, supernets and searches too), and top-1's within a study."""
    cells: dict[tuple[str, str, str], dict] = {}
    for run in runs:
        for ds, table in run["tables"].items():
            for r in table["rows"]:
                for det in table["detectors"]:
                    c = cells.setdefault((ds, det, r["name"]), {"reps": [], "means": [],
                                                                "top1": []})
                    if r["map_seeds"].get(det):
                        c["reps"].append(list(r["map_seeds"][det].values()))
                        c["means"].append(r["map"][det])
                    if (r.get("top1_std") or {}).get(det) is not None:
                        c["top1"].append(r["top1_std"][det] ** 2)
    out = []
    for (ds, det, name), c in cells.items():
        within = noise.TrainingNoise.pooled(c["reps"])
        top1 = c["top1"]  # each study's variance of one seed's top-1
        out.append({"dataset": ds, "detector": det, "row": name, "within": within.sigma,
                    "between": statistics.stdev(c["means"]) if len(c["means"]) > 1 else None,
                    "top1": statistics.fmean(top1) ** 0.5 if top1 else None,
                    "runs": len(c["means"])})
    return out


def curve(m: dict) -> list[dict]:
    """Resolvable difference (points) per column, replicates and test split size, with the
    study's minutes on the runs' machine."""
    out = []
    for n in SEEDS:
        minutes = (m["fixed_s"] + n * m["replicate_s"]) / CORES / 60
        for scale in TEST_SCALE:
            entry = {"seeds": n, "test_scale": scale, "minutes": minutes}
            for (ds, det), c in m["columns"].items():
                df = c["rows"] * (n - 1)
                t = noise.TrainingNoise.calibrated(c["sigma"], df, "") if df else \
                    noise.TrainingNoise(None, 0, "")
                r = noise.resolvable(t, n, c["test_sd"] / scale ** 0.5)
                entry[f"{ds}/{det}"] = None if r is None else 100 * r
            out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="tables.json of runs of one recipe")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the curves")
    args = p.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.runs]
    m = measure(runs)
    print("| dataset / detector | training noise of one seed (points) | df | rows | "
          "test noise of a difference (points) |")
    print("|---|---|---|---|---|")
    for (ds, det), c in m["columns"].items():
        print(f"| {ds} / {det} | {100 * c['sigma']:.1f} | {c['df']} | {c['rows']} | "
              f"{100 * c['test_sd']:.1f} |")
    pts = lambda x: "—" if x is None else f"{100 * x:.1f}"  # noqa: E731
    print("\n| dataset / detector | row | std of one seed within a study | std of the study "
          "means across runs | top-1: std of one seed | runs |")
    print("|---|---|---|---|---|---|")
    for r in row_spread(runs):
        print(f"| {r['dataset']} / {r['detector']} | {r['row']} | {pts(r['within'])} | "
              f"{pts(r['between'])} | {pts(r['top1'])} | {r['runs']} |")
    print(f"\ncost: {m['fixed_s']:.0f} job-seconds fixed, {m['replicate_s']:.0f} per replicate "
          f"({m['replicate_s'] / CORES / 60:.1f} min on {CORES} cores)\n")
    rows = curve(m)
    cols = [f"{ds}/{det}" for ds, det in m["columns"]]
    print("| seeds per row | test split (x the runs') | study minutes | "
          + " | ".join(f"{c}: smallest difference called (points)" for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for r in rows:
        cells = ["—" if r[c] is None else f"{r[c]:.1f}" for c in cols]
        print(f"| {r['seeds']} | {r['test_scale']:g} | {r['minutes']:.1f} | "
              + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 4), squeeze=False)
        for ax, c in zip(axes[0], cols, strict=True):
            for scale in TEST_SCALE:
                pts = [(r["minutes"], r[c]) for r in rows
                       if r["test_scale"] == scale and r[c] is not None]
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"test split x{scale:g}")
            ax.axhline(5, color="grey", linestyle="--", linewidth=1)
            ax.set(title=c, xlabel="study minutes on this machine (seeds per row: "
                   f"{', '.join(map(str, SEEDS[1:]))})",
                   ylabel="smallest difference called at 95% (AP points)")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
