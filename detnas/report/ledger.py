"""The report's cost ledger: each stage's cost and the total of each row of the study.

Every stage's ``metrics.json`` carries a ``cost`` record (`detnas.cost`) with the stage's tags
(stage, ablation, dataset, detector, arch), so the ledger finds them anywhere under the results
folder and places them by tag, not by path. A row of the main table (per dataset and detector)
costs its own stages (tagged with its name) plus the ones it builds on
(`detnas.plan.study.upstream`: its supernets, a classifier it borrows): shared stages count in every
row that uses them; the study's total counts each stage once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from detnas.io import load_json
from detnas.plan import layout, study
from detnas.plan.config import StudyConfig

log = logging.getLogger(__name__)

MEASURED = ("wall_s", "gpus", "gpu_hours", "peak_rss_mb")  # what a record needs to be tabulated
STAGE_ORDER = ("supernet-pretrain", "supernet-finetune", "search", "nats-search",
               "retrain-classification", "retrain-detection")


def collect_costs(root: str | Path) -> list[dict]:
    """The cost records of every ``metrics.json`` under ``root`` (not MLflow's artifact copies),
    each with its folder (``path``, relative to ``root``)."""
    root = Path(root)
    records = []
    for path in sorted(root.rglob(layout.METRICS)):
        if layout.ARTIFACTS in path.relative_to(root).parts:  # MLflow's copy of a stage's output
            continue
        try:
            data = load_json(path)
        except ValueError as e:
            log.warning("cost ledger: skipping %s", e)
            continue
        record = data.get("cost") if isinstance(data, dict) else None
        if not isinstance(record, dict):
            continue  # written before the ledger, or not a stage's metrics
        if not all(isinstance(record.get(k), int | float) for k in MEASURED):
            log.warning("cost ledger: skipping %s: its cost record lacks %s", path, MEASURED)
            continue
        records.append({**record, "path": path.parent.relative_to(root).as_posix()})
    return records


def _total(records: list[dict]) -> dict:
    peaks = [r["cuda_peak_mb"] for r in records if r.get("cuda_peak_mb") is not None]
    return {"stages": len(records), "wall_s": sum(r["wall_s"] for r in records),
            "gpu_hours": sum(r["gpu_hours"] for r in records),
            "cpu_s": sum(r.get("cpu_s", 0.0) for r in records),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in records), default=0.0),
            "cuda_peak_mb": max(peaks) if peaks else None}


def _in_cell(record: dict, dataset: str, detector: str, datasets) -> bool:
    """A record belongs to a (dataset, detector) cell unless it names another one (a record of no
    configured dataset, e.g. the classification search's, belongs to every cell)."""
    ds, det = record.get("dataset", ""), record.get("detector", "")
    return (ds not in datasets or ds == dataset) and det in ("", detector)


def row_stages(records: list[dict], row: str, dataset: str, detector: str, datasets,
               upstream: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """The records of the stages that row ``row`` of cell (``dataset``, ``detector``) used: its
    own (tagged with its name) and the ``upstream`` ones, ``(stage, ablation tag)``
    (`detnas.plan.study.upstream`)."""
    wanted = {(None, row), *upstream}
    found = [r for r in records if _in_cell(r, dataset, detector, datasets)
             and ((None, r.get("ablation")) in wanted or (r.get("stage"), r.get("ablation"))
                  in wanted)]
    # A stage without dataset tags run once per cell (a searched row's classification
    # pre-training): the one of this cell's architecture.
    arch = next((r.get("arch") for r in found if r.get("stage") == "retrain-detection"), None)
    out, seen = [], set()
    for r in sorted(found, key=lambda r: r.get("arch") != arch):
        key = (r.get("stage"), r.get("ablation"), r.get("dataset"), r.get("detector"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return sorted(out, key=_stage_rank)


def _stage_rank(record: dict) -> tuple:
    stage = record.get("stage", "")
    rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
    return rank, record.get("path", "")


def cost_tables(cfg: StudyConfig, records: list[dict]) -> dict:
    """``{"stages": [...], "rows": [...], "total": {...}}``: every record, the totals of each row
    per dataset and detector, and the study's total (each stage once)."""
    rows = []
    study_rows = study.rows(cfg)
    for ds in cfg.datasets:
        for det in cfg.detectors:
            for row in study.table_order(study_rows):
                stages = row_stages(records, row.name, ds, det, cfg.datasets,
                                    study.upstream(row, study_rows))
                if stages:
                    rows.append({"row": row.name, "name": row.title, "dataset": ds,
                                 "detector": det,
                                 **_total(stages), "paths": [r["path"] for r in stages]})
    return {"stages": sorted(records, key=_stage_rank), "rows": rows, "total": _total(records)}


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def format_cost_tables(tables: dict) -> list[tuple[list[str], list[list[str]]]]:
    """Header and rows of the per-stage table and of the per-row table (with the study total)."""
    stage_rows = [[r.get("stage", "?"), r.get("ablation", ""),
                   "/".join(x for x in (r.get("dataset"), r.get("detector")) if x) or "—",
                   _duration(r["wall_s"]), str(r["gpus"]), f"{r['gpu_hours']:.3f}",
                   f"{r.get('cpu_s', 0.0) / 3600:.3f}", _mb(r["peak_rss_mb"]),
                   _mb(r.get("cuda_peak_mb")), f"`{r['path']}`"] for r in tables["stages"]]
    stage_header = ["stage", "ablation", "dataset/detector", "wall (h:mm:ss)", "GPUs",
                    "GPU-hours", "CPU-hours", "peak RSS (MB)", "peak CUDA (MB)", "output"]
    total = tables["total"]
    row_rows = [[r["name"], f"{r['dataset']}/{r['detector']}", str(r["stages"]),
                 _duration(r["wall_s"]), f"{r['gpu_hours']:.3f}", f"{r['cpu_s'] / 3600:.3f}",
                 _mb(r["peak_rss_mb"]), _mb(r["cuda_peak_mb"])] for r in tables["rows"]]
    row_rows.append(["study (each stage once)", "all", str(total["stages"]),
                     _duration(total["wall_s"]), f"{total['gpu_hours']:.3f}",
                     f"{total['cpu_s'] / 3600:.3f}", _mb(total["peak_rss_mb"]),
                     _mb(total["cuda_peak_mb"])])
    row_header = ["row", "dataset/detector", "stages", "wall (h:mm:ss, in sequence)",
                  "GPU-hours", "CPU-hours", "peak RSS (MB)", "peak CUDA (MB)"]
    return [(stage_header, stage_rows), (row_header, row_rows)]
