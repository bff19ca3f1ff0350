"""Loading a results folder: metrics, search histories and architectures (`collect`)."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detnas.io import load_json
from detnas.plan import layout
from detnas.plan.config import StudyConfig

log = logging.getLogger(__name__)


@dataclass
class Results:
    """Every input found under a results folder, and the expected ones that were not."""

    root: Path
    cls: dict = field(default_factory=dict)  # row or (row, dataset, detector) -> the first
    # replicate's classifier metrics
    det: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (row, ds, det) -> the
    # first replicate's detection metrics
    cls_reps: dict = field(default_factory=dict)  # the key of cls -> replicate -> metrics
    det_reps: dict[tuple[str, str, str], dict[int, dict]] = field(default_factory=dict)  # the
    # key of det -> replicate -> metrics, of every replicate found (the first included)
    rank: dict[tuple[str, str], dict] = field(default_factory=dict)  # (ds, det) -> rank.json
    histories: dict[str, list[dict]] = field(default_factory=dict)  # search key -> rows (the
    # first search seed's)
    search_archs: dict[str, dict] = field(default_factory=dict)  # search key -> arch.json
    search_runs: dict[str, dict[int, dict]] = field(default_factory=dict)  # search key -> search
    # seed -> {"history": rows, "arch": arch.json}, of every seed found
    nats: dict[tuple[str, str], dict] = field(default_factory=dict)  # (ds, det) -> arch.json
    missing: list[str] = field(default_factory=list)  # relative paths
    inputs: dict[str, dict] = field(default_factory=dict)  # relative path -> provenance


search_key = layout.search_name


def _read(res: Results, rel: str, reader=load_json, required: bool = True) -> Any:
    """Read ``res.root/rel``; None (and a ``missing`` entry) when absent or unreadable."""
    path = res.root / rel
    if not path.exists():
        if required:
            res.missing.append(rel)
        return None
    try:
        data = reader(path)
    except ValueError as e:
        log.warning("skipping unreadable input: %s", e)
        res.missing.append(f"{rel} (unreadable)")
        return None
    if isinstance(data, dict):
        res.inputs[rel] = data.get("provenance", {})
    return data


def read_history(path: str | Path) -> list[dict]:
    """Rows of a search ``history.csv`` sorted by evaluation order; bad rows are skipped.

    Raises:
        ValueError: the file lacks one of the columns order, generation, arch, fitness.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        needed = {"order", "generation", "arch", "fitness"}
        if not needed <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: needs columns {sorted(needed)}, has {reader.fieldnames}")
        rows = []
        for line in reader:
            try:
                flops = line.get("backbone_flops")
                rows.append({"order": int(line["order"]), "generation": int(line["generation"]),
                             "arch": line["arch"], "fitness": float(line["fitness"]),
                             "backbone_flops": float(flops) if flops else None})
            except (TypeError, ValueError):
                log.warning("%s: skipping bad row %s", path, line)
    return sorted(rows, key=lambda r: r["order"])


def collect(cfg: StudyConfig, root: str | Path) -> Results:
    """Read every input the config implies under ``root`` (`detnas.plan.layout.outputs`); absent
    ones
    go to ``missing``."""
    res = Results(Path(root))
    for out in layout.outputs(cfg):
        if out.kind == "supernet":  # its cost only: the ledger finds it
            continue
        data = _read(res, out.path, read_history if out.kind == "search" else load_json)
        cell = (out.row, out.dataset, out.detector)
        if data is None or (out.kind == "search" and not data):
            continue
        key = search_key(out.dataset, out.detector, out.row)
        if out.kind == "classifier":
            res.cls_reps.setdefault(cell if out.dataset else out.row, {})[out.rep] = data
        elif out.kind == "detection":
            res.det_reps.setdefault(cell, {})[out.rep] = data
        elif out.kind in ("search", "search_arch"):
            run = res.search_runs.setdefault(key, {}).setdefault(out.rep, {})
            run["history" if out.kind == "search" else "arch"] = data
        elif out.kind == "rank":
            res.rank[(out.dataset, out.detector)] = data
        elif out.kind == "nats" and out.rep == 0:
            res.nats[(out.dataset, out.detector)] = data
    for reps, first in ((res.cls_reps, res.cls), (res.det_reps, res.det)):
        first.update({k: runs[0] for k, runs in reps.items() if 0 in runs})
    for key, runs in res.search_runs.items():
        if "history" in runs.get(0, {}):
            res.histories[key] = runs[0]["history"]
        if "arch" in runs.get(0, {}):
            res.search_archs[key] = runs[0]["arch"]
    log.info("report inputs: %d read, %d missing", len(res.inputs) + len(res.histories),
             len(res.missing))
    return res
