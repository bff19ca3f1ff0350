"""The study's headline: one record per row of the study (ablation, dataset, detector) with the
numbers a reader compares first: AP50, mmAP (the means over the replicates found), the seeds
they rest on and the 95% interval a rerun of the dataset's metric lands in (training and test
noise, `detnas.report.noise`), top-1, backbone FLOPs and GPU-hours, or CPU-hours for a CPU study
(the row's stages and those it builds on, `detnas.report.ledger`).

The report opens with it (`detnas.report.document`); ``scripts/collect_metrics.py`` writes each
record as one small file under ``<results>/headline/`` (`file_name`), DVC's metrics, so that
``dvc metrics show`` prints one line per row of the study.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from detnas.plan.config import StudyConfig
from detnas.report.paper import DETECTOR_NAMES
from detnas.report.results import Results
from detnas.report.tables import _pct, _si  # the main table's number formats

FIELDS = ("ap50", "mmap", "seeds", "low", "high", "top1", "flops", "gpu_hours", "cpu_hours")
"""The numbers of a headline record, in printed order."""


def _seed_mean(res: Results, row: str, ds: str, det: str, metric: str) -> float | None:
    values = [r[metric] for r in res.det_reps.get((row, ds, det), {}).values()
              if isinstance(r.get(metric), int | float)]
    return statistics.fmean(values) if values else None


def headline(res: Results, tables: dict, costs: dict) -> list[dict]:
    """The headline records of a study, in the main tables' order.

    Args:
        res: the study's results (`detnas.report.results.collect`).
        tables: dataset -> its main table (`detnas.report.tables.main_table`).
        costs: `detnas.report.ledger.cost_tables`.

    Returns:
        ``{"row", "name", "dataset", "detector", *FIELDS}`` per row, dataset and detector
        (``low`` / ``high``: the 95% interval of a rerun of the dataset's metric, None while the
        training noise is unknown); a number the study does not have is None.
    """
    cost = {(r["row"], r["dataset"], r["detector"]): r for r in costs["rows"]}
    records = []
    for ds, table in tables.items():
        for det in table["detectors"]:
            for entry in table["rows"]:
                row = entry["row"]
                low, high = entry["map_interval"][det] or (None, None)
                records.append({
                    "row": row, "name": entry["name"], "dataset": ds, "detector": det,
                    "ap50": _seed_mean(res, row, ds, det, "ap50"),
                    "mmap": _seed_mean(res, row, ds, det, "mmap"),
                    "seeds": len(entry["map_seeds"][det]) or None, "low": low, "high": high,
                    "top1": entry["top1"][det], "flops": entry["backbone_flops"][det],
                    **_compute(cost.get((row, ds, det)))})
    return records


def _compute(cost: dict | None) -> dict:
    if cost is None:
        return {"gpu_hours": None, "cpu_hours": None}
    return {"gpu_hours": cost["gpu_hours"], "cpu_hours": cost["cpu_s"] / 3600}


def _compute_cell(record: dict) -> str:
    """GPU-hours where the row ran on GPUs, else its CPU-hours (a GPU-hour column of zeros says
    nothing of a CPU study's cost)."""
    if record.get("gpu_hours"):
        return f"{record['gpu_hours']:.3f} GPU-h"
    if record.get("cpu_hours") is not None:
        return f"{record['cpu_hours']:.3f} CPU-h"
    return "—"


def format_headline(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the headline table (percent, FLOPs as the main table has
    them)."""
    header = ["model", "dataset / detector", "AP50 %", "mmAP %", "seeds",
              "95% interval of a rerun", "top-1 %", "backbone FLOPs", "compute"]
    rows = [[r["name"], f"{r['dataset']} / {DETECTOR_NAMES.get(r['detector'], r['detector'])}",
             _pct(r["ap50"]), _pct(r["mmap"]), str(r["seeds"] or "—"),
             "—" if r["low"] is None else f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}]",
             _pct(r["top1"]), _si(r["flops"]), _compute_cell(r)] for r in records]
    return header, rows


def file_name(record: dict) -> str:
    """``<dataset>-<detector>-<row>.json``: one headline file per row of the study."""
    return f"{record['dataset']}-{record['detector']}-{record['row']}.json"


def study_headline(cfg: StudyConfig, results: str | Path) -> list[dict]:
    """`headline` of the results folder ``results``, read afresh (what the report computes)."""
    from detnas.report.ledger import collect_costs, cost_tables
    from detnas.report.results import collect
    from detnas.report.tables import main_table

    res = collect(cfg, results)
    tables = {ds: main_table(cfg, res, ds) for ds in cfg.datasets}
    return headline(res, tables, cost_tables(cfg, collect_costs(res.root)))
