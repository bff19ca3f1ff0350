"""Collect a finished study's numbers into the files dvc.yaml declares as metrics and plots.

    python scripts/collect_metrics.py [RESULTS]

writes RESULTS/metrics.json ({row: {dataset: {detector: {mmap, ..., "seed1": {mmap, ...}}},
"cls": {top1, ...}}, "rank": {dataset: {detector: {supernet: {kendall_tau, ...}}}}}, what
`dvc metrics show/diff` compare) and RESULTS/plots/search-<dataset>-<detector>-<ablation>.csv (one
per search history, what `dvc plots show/diff` draw). Run by scripts/dvc_push.sh.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def numbers(path: Path) -> dict:
    """The numeric fields of a metrics.json (not its arch, provenance and the like)."""
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def collect(results: Path) -> dict:
    table: dict = {}
    for path in sorted(results.glob("retrain/*/*/*/metrics.json")):
        row, dataset, detector = path.parts[-4:-1]
        table.setdefault(row, {}).setdefault(dataset, {})[detector] = numbers(path)
    for path in sorted(results.glob("retrain/*/*/*/seed*/metrics.json")):  # retrain_seeds
        row, dataset, detector, seed = path.parts[-5:-1]
        table.setdefault(row, {}).setdefault(dataset, {}).setdefault(detector, {})[seed] = \
            numbers(path)
    for path in sorted(results.glob("rank/*/*/rank.json")):  # the ranking check
        dataset, detector = path.parts[-3:-1]
        supernets = json.loads(path.read_text())["supernets"]
        table.setdefault("rank", {}).setdefault(dataset, {})[detector] = {
            init: {k: v for k, v in s.items() if isinstance(v, float)}
            for init, s in supernets.items()}
    for path in sorted(results.glob("retrain/**/cls/metrics.json")):
        key = path.parent.parent.relative_to(results / "retrain").parts
        node = table.setdefault(key[0], {})
        for part in key[1:]:
            node = node.setdefault(part, {})
        node["cls"] = numbers(path)
    return table


def copy_histories(results: Path) -> list[Path]:
    plots = results / "plots"
    shutil.rmtree(plots, ignore_errors=True)
    plots.mkdir(parents=True)
    copied = []
    for path in sorted(results.glob("search/**/history.csv")):
        name = "-".join(path.parent.relative_to(results / "search").parts)
        copied.append(Path(shutil.copyfile(path, plots / f"search-{name}.csv")))
    return copied


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else "results")
    if not results.is_dir():
        print(f"collect_metrics: {results}: no such folder (run the study first)", file=sys.stderr)
        return 2
    table = collect(results)
    (results / "metrics.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    copied = copy_histories(results)
    print(f"collect_metrics: {len(table)} rows -> {results}/metrics.json, "
          f"{len(copied)} search histories -> {results}/plots/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
