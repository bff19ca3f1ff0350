"""Collect a finished study's numbers into the files dvc.yaml declares as metrics and plots.

    python scripts/collect_metrics.py [RESULTS]

writes RESULTS/headline/<dataset>-<detector>-<row>.json (one small file per row of the study: AP50,
mmAP, the seeds they rest on and the 95% interval with training and test noise, top-1, FLOPs,
GPU-hours, `detnas.report.headline`; what `dvc metrics show/diff` compare, one line per row),
RESULTS/metrics.json (every number: {row: {dataset: {detector: {mmap, ..., "rep1": {mmap, ...}}}},
"cls": {top1, ...}, "rep1": {"cls": ...}}, "rank": {dataset: {detector: {supernet:
{kendall_tau, ...}}}}}; `dvc metrics show results/metrics.json`) and
RESULTS/plots/search-<dataset>-<detector>-<ablation>[-rep<K>].csv (one per search history and
search seed, what `dvc plots
show/diff` draw), for the datasets and detectors of RESULTS/config.yaml (the config the workflow
wrote). Run by scripts/dvc_push.sh.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from detnas.io import atomic_write, save_text
from detnas.plan import layout
from detnas.plan.config import StudyConfig
from detnas.plan.typed import from_dict
from detnas.report.headline import FIELDS, file_name, study_headline


def numbers(path: Path) -> dict:
    """The numeric fields of a metrics.json (not its arch, provenance and the like)."""
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def study_config(results: Path) -> StudyConfig:
    """The config the workflow wrote into the results folder (its datasets and detectors)."""
    path = results / layout.CONFIG
    return from_dict(StudyConfig, yaml.safe_load(path.read_text()) or {}, str(path))


def _put(table: dict, keys: tuple[str, ...], path: Path) -> None:
    if path.exists():
        node = table
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = numbers(path)


def collect(results: Path, cfg: StudyConfig) -> dict:
    """Every retrained model's numbers, where detnas.plan.layout puts them
    (`detnas.plan.layout.outputs`);
    absent ones are left out."""
    table: dict = {}
    for out in layout.outputs(cfg):
        cell = (out.row, out.dataset, out.detector)
        rep = (f"rep{out.rep}",) if out.rep else ()  # a replicate after the first
        if out.kind == "classifier":
            _put(table, (*cell, *rep, "cls") if out.dataset else (out.row, *rep, "cls"),
                 results / out.path)
        elif out.kind == "detection":
            _put(table, (*cell, *rep), results / out.path)
        elif out.kind == "rank" and (results / out.path).exists():  # the ranking check
            supernets = json.loads((results / out.path).read_text())["supernets"]
            table.setdefault("rank", {}).setdefault(out.dataset, {})[out.detector] = {
                init: {k: v for k, v in s.items() if isinstance(v, float)}
                for init, s in supernets.items()}
    return table


def search_histories(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(name, history.csv relative to the results folder) of every search of the study."""
    return [(layout.search_name(o.dataset, o.detector, o.row) + (f"/rep{o.rep}" if o.rep else ""),
             o.path) for o in layout.outputs(cfg) if o.kind == "search"]


def copy_histories(results: Path, cfg: StudyConfig) -> list[Path]:
    plots = results / "plots"
    shutil.rmtree(plots, ignore_errors=True)
    plots.mkdir(parents=True)
    copied = []
    for name, rel in search_histories(cfg):
        if (results / rel).exists():
            dest = plots / f"search-{name.replace('/', '-')}.csv"
            data = (results / rel).read_bytes()
            copied.append(atomic_write(dest, lambda f, data=data: f.write(data)))
    return copied


def write_headline(results: Path, cfg: StudyConfig) -> list[Path]:
    """One file per row of the study under RESULTS/headline (its numbers; absent ones left out)."""
    folder = results / "headline"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = []
    for record in study_headline(cfg, results):
        numbers = {k: record[k] for k in FIELDS if record[k] is not None}
        if numbers:
            written.append(save_text(folder / file_name(record),
                                     json.dumps(numbers, indent=2) + "\n"))
    return written


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else "results")
    if not results.is_dir():
        print(f"collect_metrics: {results}: no such folder (run the study first)", file=sys.stderr)
        return 2
    cfg = study_config(results)
    table = collect(results, cfg)
    save_text(results / "metrics.json", json.dumps(table, indent=2, sort_keys=True) + "\n")
    headline = write_headline(results, cfg)
    copied = copy_histories(results, cfg)
    print(f"collect_metrics: {len(headline)} rows of the study -> {results}/headline/, "
          f"{len(table)} rows -> {results}/metrics.json, "
          f"{len(copied)} search histories -> {results}/plots/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
