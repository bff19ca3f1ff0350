"""The results report: the paper's tables, the EA-against-random curves and the searched nets.

`build_report` reads a results folder (the layout below), writes ``report.md`` (figures linked),
``report.html`` (figures embedded, self-contained), ``tables.json`` and ``figures/*.png``. A
missing input never stops the report: its cells stay blank and the file is named in the report.

Inputs, relative to the results folder::

    retrain/{row}/cls/metrics.json                    top1, arch, space, provenance (baselines)
    retrain/{row}/{dataset}/{detector}/cls/metrics.json  the same, for searched rows
    retrain/{row}/{dataset}/{detector}/metrics.json   mmap, ap50, backbone_flops/params, arch
    search/{dataset}/{detector}/{method}/history.csv  order, generation, arch, fitness, flops
    search/{dataset}/{detector}/{method}/arch.json    the winner (method: detnas|scratch|random)
    search/cls/clsnas/{history.csv,arch.json}          the classification search (ClsNASNet)
    nats/{dataset}/{detector}/arch.json               dilations per layer and channel group

Figure file names depend on the config only (`expected_figures`), so a Snakemake rule can list
them as ``report()`` outputs; a figure without data is drawn as a labelled placeholder.
"""

from __future__ import annotations

import base64
import csv
import html
import logging
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detnas.checkpoint import atomic_write, git_commit, load_json, save_json
from detnas.config import StudyConfig, config_hash
from detnas.resnet import parse_dilations
from detnas.space import KERNEL_SIZES, REGISTRY, Arch

log = logging.getLogger(__name__)

ROWS = {
    "shufflenetv2": "ShuffleNetV2 (hand-crafted)",
    "resnet50": "ResNet-50",
    "clsnas": "ClsNASNet",
    "scratch": "DetNAS-scratch",
    "random": "DetNAS (random search)",
    "detnas": "DetNAS",
    "nats": "NATS (ResNet-50)",
}
"""The ablation rows of the main table, in order, with their printed names."""

SEARCH_METHODS = ("detnas", "scratch", "random")
"""Searches run per dataset and detector (ClsNASNet's search is ``search/cls/clsnas``)."""

DETECTOR_NAMES = {"fpn": "FPN", "retinanet": "RetinaNet"}
METRIC_NAMES = {"mmap": "mmAP", "ap50": "AP50"}
CHOICE_LABELS = ("3x3", "5x5", "7x7", "Xception")
CHOICE_COLOURS = ("#9ecae1", "#fdae6b", "#e6550d", "#74c476")
METHOD_COLOURS = {"detnas": "#d62728", "scratch": "#9467bd", "random": "#7f7f7f",
                  "clsnas": "#1f77b4"}


@dataclass(frozen=True)
class Ref:
    """One figure from the papers (percent), for the ``paper`` columns of the main table."""

    row: str  # a key of ROWS
    dataset: str  # coco | voc (the paper's dataset); "" for any
    detector: str  # fpn | retinanet; "" for any
    field: str  # top1 | map | flops
    value: float | str
    source: str


_DETNAS = ("DetNAS released 300M models: ImageNet top-1 error and COCO mmAP / VOC mAP "
           "(docs/reference/detnas.md); top-1 shown as 100 - error")
_DETNAS_PORT = "DetNAS authors' PyTorch port, COCO minival AP (docs/reference/detnas.md)"
_DETNAS_R50 = ("DetNAS released-models table, ResNet-50 (3.8G FLOPs) baseline, top-1 error 23.9 "
               "(docs/reference/detnas.md)")
_NATS = "NATS paper, Faster R-CNN + FPN, COCO minival mmAP (docs/reference/nats.md)"
_NATS_SAME = "NATS: dilation keeps the FLOPs and parameters of ResNet-50 (docs/reference/nats.md)"

PAPER: tuple[Ref, ...] = (
    Ref("detnas", "coco", "fpn", "top1", 73.8, _DETNAS),
    Ref("detnas", "coco", "fpn", "map", 36.4, _DETNAS),
    Ref("detnas", "coco", "fpn", "map", 36.6, _DETNAS_PORT),
    Ref("detnas", "coco", "fpn", "flops", "300M", _DETNAS),
    Ref("detnas", "coco", "retinanet", "top1", 74.0, _DETNAS),
    Ref("detnas", "coco", "retinanet", "map", 33.3, _DETNAS),
    Ref("detnas", "coco", "retinanet", "map", 34.1, _DETNAS_PORT),
    Ref("detnas", "coco", "retinanet", "flops", "300M", _DETNAS),
    Ref("detnas", "voc", "fpn", "top1", 74.1, _DETNAS),
    Ref("detnas", "voc", "fpn", "map", 81.5, _DETNAS),
    Ref("detnas", "voc", "fpn", "flops", "300M", _DETNAS),
    Ref("detnas", "voc", "retinanet", "top1", 74.6, _DETNAS),
    Ref("detnas", "voc", "retinanet", "map", 80.1, _DETNAS),
    Ref("detnas", "voc", "retinanet", "flops", "300M", _DETNAS),
    Ref("resnet50", "", "", "top1", 76.1, _DETNAS_R50),
    Ref("resnet50", "", "", "flops", "3.8G", _DETNAS_R50),
    Ref("resnet50", "coco", "fpn", "map", 37.3, _DETNAS_R50),
    Ref("resnet50", "coco", "fpn", "map", 36.4, _NATS),
    Ref("nats", "", "", "flops", "3.8G", _NATS_SAME),
    Ref("nats", "coco", "fpn", "map", 38.4, _NATS),
)
"""Reference figures (percent). Only numbers the references state; everything else stays blank
(ShuffleNetV2-20, ClsNASNet, DetNAS-scratch and random search have claims but no figures)."""

PAPER_CLAIMS = (
    "detection search beats classification search (ClsNASNet) by more than 1 mAP on COCO and "
    "more than 3 mAP on VOC",
    "random search lands within 1 mAP of the EA (best of 5 random models)",
    "detection-searched nets put large kernels in the shallow stages, ClsNASNet in the deep ones",
    "NATS: ResNet-50 36.4 -> 38.4 mmAP on COCO with FPN, at the same FLOPs and parameters",
)


# --- loading ----------------------------------------------------------------------------------


@dataclass
class Results:
    """Every input found under a results folder, and the expected ones that were not."""

    root: Path
    cls: dict = field(default_factory=dict)  # row or (row, dataset, detector) -> cls metrics
    det: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (row, ds, det)
    histories: dict[str, list[dict]] = field(default_factory=dict)  # search key -> rows
    search_archs: dict[str, dict] = field(default_factory=dict)  # search key -> arch.json
    nats: dict[tuple[str, str], dict] = field(default_factory=dict)  # (ds, det) -> arch.json
    missing: list[str] = field(default_factory=list)  # relative paths
    inputs: dict[str, dict] = field(default_factory=dict)  # relative path -> provenance


def search_key(dataset: str, detector: str, method: str) -> str:
    """The folder of a search under ``results/search`` (``cls/clsnas`` for ClsNASNet)."""
    return "cls/clsnas" if method == "clsnas" else f"{dataset}/{detector}/{method}"


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
    """Read every input the config implies under ``root``; absent ones go to ``missing``."""
    res = Results(Path(root))
    for row in ROWS:
        # NATS reuses the ResNet-50 classification weights, so its cls metrics are optional.
        if row in SEARCH_METHODS:
            continue
        cls = _read(res, f"retrain/{row}/cls/metrics.json", required=row != "nats")
        if cls is not None:
            res.cls[row] = cls
    for ds in cfg.datasets:
        for det in cfg.detectors:
            for row in ROWS:
                m = _read(res, f"retrain/{row}/{ds}/{det}/metrics.json")
                if m is not None:
                    res.det[(row, ds, det)] = m
                if row in SEARCH_METHODS:  # searched per dataset and detector
                    cls = _read(res, f"retrain/{row}/{ds}/{det}/cls/metrics.json")
                    if cls is not None:
                        res.cls[(row, ds, det)] = cls
            for method in SEARCH_METHODS:
                _collect_search(res, search_key(ds, det, method))
            nats = _read(res, f"nats/{ds}/{det}/arch.json")
            if nats is not None:
                res.nats[(ds, det)] = nats
    _collect_search(res, search_key("", "", "clsnas"))
    log.info("report inputs: %d read, %d missing", len(res.inputs) + len(res.histories),
             len(res.missing))
    return res


def _collect_search(res: Results, key: str) -> None:
    history = _read(res, f"search/{key}/history.csv", reader=read_history)
    if history:
        res.histories[key] = history
    arch = _read(res, f"search/{key}/arch.json")
    if arch is not None:
        res.search_archs[key] = arch


# --- the main table ---------------------------------------------------------------------------


def paper_dataset(kind: str) -> str:
    """The paper's dataset to compare with: VOC for VOC, COCO for COCO and the synthetic set."""
    return "voc" if kind == "voc" else "coco"


def paper_refs(row: str, dataset: str, detector: str, field_: str) -> list[Ref]:
    """The reference figures of one cell ("" in a `Ref` matches any dataset or detector)."""
    return [r for r in PAPER if r.row == row and r.field == field_
            and r.dataset in ("", dataset) and r.detector in ("", detector)]


def _row_arch(res: Results, row: str, ds: str, det: str) -> str | None:
    """The backbone of a cell: from its metrics, else the search's winner, else (for the rows
    that do not depend on the dataset) the classification run's arch."""
    m = res.det.get((row, ds, det)) or {}
    if m.get("arch"):
        return m["arch"]
    if row in SEARCH_METHODS or row == "clsnas":
        spec = res.search_archs.get(search_key(ds, det, row)) or {}
        if spec.get("arch") or row in SEARCH_METHODS:
            return spec.get("arch")
    cls_row = "resnet50" if row == "nats" else row
    return (res.cls.get(row) or res.cls.get(cls_row) or {}).get("arch")


def _top1(res: Results, row: str, ds: str, det: str) -> tuple[float | None, str]:
    """Top-1 of a row and a note; NATS falls back to ResNet-50's (the same weights)."""
    for key in ((row, ds, det), row):
        if "top1" in res.cls.get(key, {}):
            return res.cls[key]["top1"], ""
    if row == "nats" and "top1" in res.cls.get("resnet50", {}):
        return res.cls["resnet50"]["top1"], "ResNet-50's, weights reused"
    return None, ""


def main_table(cfg: StudyConfig, res: Results, dataset: str) -> dict:
    """The paper-shaped table of one dataset: one entry per ablation row.

    Returns:
        ``{"dataset", "kind", "metric", "paper_dataset", "detectors", "rows": [...]}``; each row has
        per-detector ``arch``, ``backbone_flops``, ``backbone_params``, ``map`` (fractions, as in
        the metrics files), ``top1``, and ``paper`` figures (percent) with their sources.
    """
    d = cfg.datasets[dataset]
    pds = paper_dataset(d.kind)
    rows = []
    for row, name in ROWS.items():
        top1 = {det: _top1(res, row, dataset, det) for det in cfg.detectors}
        notes = {note for _, note in top1.values() if note}
        entry: dict[str, Any] = {"row": row, "name": name,
                                 "top1": {det: t for det, (t, _) in top1.items()},
                                 "top1_note": notes.pop() if notes else "",
                                 "arch": {}, "backbone_flops": {}, "backbone_params": {},
                                 "map": {}, "paper": {"top1": {}, "map": {}, "flops": {}}}
        for det in cfg.detectors:
            m = res.det.get((row, dataset, det), {})
            entry["arch"][det] = _row_arch(res, row, dataset, det)
            entry["backbone_flops"][det] = m.get("backbone_flops")
            entry["backbone_params"][det] = m.get("backbone_params")
            entry["map"][det] = m.get(d.metric)
            for f in ("top1", "map", "flops"):
                entry["paper"][f][det] = [
                    {"value": r.value, "source": r.source} for r in paper_refs(row, pds, det, f)
                ]
        rows.append(entry)
    return {"dataset": dataset, "kind": d.kind, "metric": d.metric, "paper_dataset": pds,
            "detectors": list(cfg.detectors), "rows": rows}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _si(x: float | None) -> str:
    if x is None:
        return "—"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:g}"


def _joined(values: list[str]) -> str:
    """One cell for per-detector values: the value once when all agree, else ``a / b``."""
    if len(set(values)) == 1:
        return values[0]
    return " / ".join(values)


def format_main_table(table: dict, sources: dict[str, int]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of a main table; ``sources`` numbers the paper's sources
    (filled in as they are cited, for the footnotes)."""
    dets = table["detectors"]
    order = " / ".join(DETECTOR_NAMES.get(d, d) for d in dets)
    metric = METRIC_NAMES[table["metric"]]
    pds = table["paper_dataset"].upper()
    header = ["model", f"backbone ({order})", "backbone FLOPs", "params", "top-1 %"]
    header += [f"{DETECTOR_NAMES.get(d, d)} {metric} %" for d in dets]
    header += ["paper FLOPs", f"paper top-1 % ({order})"]
    header += [f"paper {pds} {DETECTOR_NAMES.get(d, d)} %" for d in dets]

    def cite(refs: list[dict]) -> str:
        out = []
        for r in refs:
            n = sources.setdefault(r["source"], len(sources) + 1)
            out.append(f"{r['value']} [{n}]")
        return ", ".join(out) if out else "—"

    rows = []
    for r in table["rows"]:
        top1 = _joined([_pct(r["top1"][d]) for d in dets]) + (
            f" ({r['top1_note']})" if r["top1_note"] else "")
        cells = [r["name"], _joined([f"`{r['arch'][d]}`" if r["arch"][d] else "—" for d in dets]),
                 _joined([_si(r["backbone_flops"][d]) for d in dets]),
                 _joined([_si(r["backbone_params"][d]) for d in dets]), top1]
        cells += [_pct(r["map"][d]) for d in dets]
        cells += [_joined([cite(r["paper"]["flops"][d]) for d in dets]),
                  _joined([cite(r["paper"]["top1"][d]) for d in dets])]
        cells += [cite(r["paper"]["map"][d]) for d in dets]
        rows.append(cells)
    return header, rows


# --- searches ---------------------------------------------------------------------------------


def search_curve(history: list[dict]) -> dict:
    """Best-so-far fitness per evaluation and best / mean fitness per generation."""
    best, running = [], float("-inf")
    for r in history:
        running = max(running, r["fitness"])
        best.append(running)
    gens: dict[int, list[float]] = {}
    for r in history:
        gens.setdefault(r["generation"], []).append(r["fitness"])
    keys = sorted(gens)
    return {"evaluations": list(range(1, len(history) + 1)), "best_so_far": best,
            "generations": keys, "generation_best": [max(gens[g]) for g in keys],
            "generation_mean": [statistics.fmean(gens[g]) for g in keys]}


def search_summary(history: list[dict]) -> dict:
    """Best, median and count of a search's fitness, and when the best was first reached."""
    fitness = [r["fitness"] for r in history]
    best = max(fitness)
    return {"evaluations": len(fitness), "best": best, "median": statistics.median(fitness),
            "mean": statistics.fmean(fitness), "best_at": fitness.index(best) + 1}


def evaluations_to_reach(history: list[dict], target: float) -> int | None:
    """1-based index of the first evaluation with fitness >= ``target`` (None if never)."""
    for i, r in enumerate(history, 1):
        if r["fitness"] >= target:
            return i
    return None


def search_tables(res: Results) -> dict:
    """Summary of every search found, keyed by search key."""
    return {key: search_summary(h) for key, h in sorted(res.histories.items())}


# --- architectures ----------------------------------------------------------------------------

RECEPTIVE_FIELDS = (3, 5, 7, 7)
"""Receptive field of each choice's depthwise path (Xception: three stacked 3x3 convs = 7)."""


def stage_kernel_means(arch: Arch, sizes: tuple[int, ...] = KERNEL_SIZES) -> list[float]:
    """Mean kernel size per stage (``sizes[choice]`` per block)."""
    return [statistics.fmean(sizes[c] for c in stage) for stage in arch.stages()]


def shallow_minus_deep(arch: Arch, sizes: tuple[int, ...] = KERNEL_SIZES) -> float:
    """Mean kernel size of the first half of the stages minus that of the second half."""
    means = stage_kernel_means(arch, sizes)
    half = len(means) // 2
    return statistics.fmean(means[:half]) - statistics.fmean(means[half:])


def searched_archs(cfg: StudyConfig, res: Results) -> list[dict]:
    """Every architecture to draw: the hand-crafted baseline, ClsNASNet, and each search's winner.

    Returns:
        Dicts with ``label``, ``method``, ``dataset``, ``detector`` and ``arch`` (an `Arch`).
    """
    out = [{"label": ROWS["shufflenetv2"], "method": "shufflenetv2", "dataset": None,
            "detector": None, "arch": _zero_arch(cfg)}]
    keys = [("", "", "clsnas")] + [(ds, det, m) for ds in cfg.datasets for det in cfg.detectors
                                   for m in SEARCH_METHODS]
    for ds, det, method in keys:
        spec = res.search_archs.get(search_key(ds, det, method))
        arch = _parse(spec, cfg.space)
        if arch is None:
            continue
        where = f" {ds} {DETECTOR_NAMES.get(det, det)}" if ds else ""
        out.append({"label": ROWS[method] + where, "method": method, "dataset": ds or None,
                    "detector": det or None, "arch": arch})
    return out


def _zero_arch(cfg: StudyConfig) -> Arch:
    from detnas.space import get_space

    return Arch(cfg.space, (0,) * get_space(cfg.space).num_blocks)


def _parse(spec: dict | None, space: str) -> Arch | None:
    if not spec or not spec.get("arch"):
        return None
    try:
        return Arch.parse(spec["arch"], spec.get("space", space))
    except ValueError as e:
        log.warning("cannot draw arch: %s", e)
        return None


def kernel_table(archs: list[dict]) -> list[dict]:
    """Mean kernel size per stage (Xception = 3, and = 7 as receptive field) of each arch."""
    return [{"label": a["label"], "method": a["method"], "arch": str(a["arch"]),
             "kernel_per_stage": stage_kernel_means(a["arch"]),
             "receptive_per_stage": stage_kernel_means(a["arch"], RECEPTIVE_FIELDS),
             "shallow_minus_deep": shallow_minus_deep(a["arch"])} for a in archs]


# --- observations -----------------------------------------------------------------------------


def observations(cfg: StudyConfig, res: Results, tables: dict, kernels: list[dict]) -> list[str]:
    """Short statements computed from the data, each beside the paper's claim where there is one."""
    out = []
    for ds in cfg.datasets:
        for det in cfg.detectors:
            out += _search_observation(res, ds, det)
            out += _map_observations(tables[ds], det)
    det_nets = [k for k in kernels if k["method"] in ("detnas", "scratch")]
    cls_net = [k for k in kernels if k["method"] == "clsnas"]
    if det_nets and cls_net:
        d = statistics.fmean(k["shallow_minus_deep"] for k in det_nets)
        c = cls_net[0]["shallow_minus_deep"]
        shallower = "puts" if d > c else "does not put"
        verdict = "as the paper reports" if d > c else "unlike the paper's observation"
        out.append(f"Mean kernel size, shallow stages minus deep stages: {d:+.2f} for the "
                   f"detection-searched nets (mean of {len(det_nets)}) against {c:+.2f} for "
                   f"ClsNASNet: detection search {shallower} larger kernels in shallower "
                   f"stages than classification search, {verdict}.")
    return out


def _search_observation(res: Results, ds: str, det: str) -> list[str]:
    ea = res.histories.get(search_key(ds, det, "detnas"))
    rnd = res.histories.get(search_key(ds, det, "random"))
    if not ea or not rnd:
        return []
    e, r = search_summary(ea), search_summary(rnd)
    reach = evaluations_to_reach(ea, r["best"])
    reach_text = (f"it matched random search's best after {reach} of {e['evaluations']} "
                  "evaluations" if reach else "it never matched random search's best")
    return [f"{ds} / {DETECTOR_NAMES.get(det, det)}: EA best fitness {e['best']:.4f} against "
            f"random search's best {r['best']:.4f} and median {r['median']:.4f} "
            f"({e['best'] - r['median']:+.4f} over the median); {reach_text}."]


def _map_observations(table: dict, det: str) -> list[str]:
    by_row = {r["row"]: r["map"][det] for r in table["rows"]}
    metric = METRIC_NAMES[table["metric"]]
    where = f"{table['dataset']} / {DETECTOR_NAMES.get(det, det)}"
    pairs = [("detnas", "shufflenetv2", ""), ("detnas", "clsnas",
              " (paper: > 1 on COCO, > 3 on VOC)"),
             ("detnas", "random", " (paper: within 1)"), ("detnas", "scratch", ""),
             ("nats", "resnet50", " (paper: +2.0 on COCO FPN)")]
    out = []
    for a, b, claim in pairs:
        if by_row.get(a) is not None and by_row.get(b) is not None:
            diff = 100 * (by_row[a] - by_row[b])
            out.append(f"{where}: {ROWS[a]} {diff:+.1f} {metric} over {ROWS[b]}{claim}.")
    return out


# --- figures ----------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def expected_figures(cfg: StudyConfig) -> dict[str, str]:
    """File name -> caption of every figure the report writes for ``cfg`` (always all of them)."""
    out = {}
    for ds in cfg.datasets:
        for det in cfg.detectors:
            name = f"{_safe(ds)}_{_safe(det)}"
            where = f"{ds}, {DETECTOR_NAMES.get(det, det)}"
            out[f"search_{name}.png"] = (f"EA against random search ({where}): best-so-far "
                                         "fitness per evaluation, best and mean per generation.")
            out[f"flops_fitness_{name}.png"] = f"Backbone FLOPs against fitness ({where})."
        out[f"archs_{_safe(ds)}.png"] = (f"Searched architectures for {ds}, block by block "
                                         "(kernel choice per block, stages separated).")
    out["archs_paper.png"] = "The paper's published architectures (300M space), for comparison."
    out["nats_dilations.png"] = "NATS: dilation chosen per layer and channel group."
    return out


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def plot_placeholder(path: Path, text: str) -> Path:
    """A small figure that says why there is nothing to plot."""
    fig = _figure(5, 1.2)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return _save(fig, path)


def plot_search(histories: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Best-so-far fitness against evaluations, and best / mean fitness per generation."""
    if not histories:
        return plot_placeholder(path, f"{title}: no search history")
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    for method, history in histories.items():
        c = search_curve(history)
        colour = METHOD_COLOURS.get(method)
        label = ROWS.get(method, method)
        ax1.step(c["evaluations"], c["best_so_far"], where="post", color=colour, label=label)
        ax2.plot(c["generations"], c["generation_best"], "-o", ms=3, color=colour,
                 label=f"{label}: best")
        ax2.plot(c["generations"], c["generation_mean"], "--", color=colour,
                 label=f"{label}: mean")
    ax1.set(xlabel="evaluations", ylabel="best fitness so far", title="best so far")
    ax2.set(xlabel="generation (random: batch of the same size)", ylabel="fitness",
            title="per generation")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_flops_fitness(histories: dict[str, list[dict]], path: Path, title: str,
                       max_flops: float = 0.0) -> Path:
    """Scatter of backbone FLOPs against fitness of every evaluated candidate, with the search's
    FLOPs limit (if any) as a vertical line."""
    points = {m: [(r["backbone_flops"] / 1e6, r["fitness"]) for r in h
                  if r["backbone_flops"] is not None] for m, h in histories.items()}
    points = {m: p for m, p in points.items() if p}
    if not points:
        return plot_placeholder(path, f"{title}: no FLOPs in the search histories")
    fig = _figure(6, 4)
    ax = fig.subplots()
    for method, p in points.items():
        xs, ys = zip(*p, strict=True)
        ax.scatter(xs, ys, s=12, alpha=0.6, color=METHOD_COLOURS.get(method),
                   label=ROWS.get(method, method))
    if max_flops > 0:
        ax.axvline(max_flops / 1e6, color="black", ls=":", label="FLOPs limit")
    ax.set(xlabel="backbone MFLOPs (224x224)", ylabel="fitness", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def arch_cells(arch: Arch, gap: float = 0.6) -> list[tuple[float, int, int]]:
    """(x position, stage, choice) of every block's cell, with a gap between stages."""
    cells, x = [], 0.0
    for stage, choices in enumerate(arch.stages()):
        for c in choices:
            cells.append((x, stage, c))
            x += 1
        x += gap
    return cells


def plot_archs(archs: list[tuple[str, Arch]], path: Path, title: str) -> Path:
    """One row of coloured cells per architecture, one cell per block (3x3/5x5/7x7/Xception)."""
    if not archs:
        return plot_placeholder(path, f"{title}: no architecture")
    from matplotlib.patches import Patch, Rectangle

    width = max(len(a.choices) for _, a in archs) + 2
    fig = _figure(min(3 + 0.32 * width, 18), 1.2 + 0.42 * len(archs))
    ax = fig.subplots()
    labels = ("3", "5", "7", "X")
    for i, (_, arch) in enumerate(archs):
        y = len(archs) - 1 - i
        for x, _stage, c in arch_cells(arch):
            ax.add_patch(Rectangle((x, y + 0.1), 0.9, 0.8, facecolor=CHOICE_COLOURS[c],
                                   edgecolor="black", lw=0.5))
            ax.text(x + 0.45, y + 0.5, labels[c], ha="center", va="center", fontsize=7)
    first = archs[0][1]
    for stage in range(len(first.stages())):
        xs = [x for x, s, _ in arch_cells(first) if s == stage]
        ax.text((xs[0] + xs[-1] + 0.9) / 2, len(archs) + 0.1, f"stage {stage + 1}",
                ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.2, max(x for x, _, _ in arch_cells(first)) + 1.1)
    ax.set_ylim(0, len(archs) + 0.6)
    ax.set_yticks([len(archs) - 1 - i + 0.5 for i in range(len(archs))])
    ax.set_yticklabels([label for label, _ in archs], fontsize=8)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=f"{lb}")
                       for c, lb in zip(CHOICE_COLOURS, CHOICE_LABELS, strict=True)],
              loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def dilation_matrix(spec: dict) -> tuple[list[str], list[list[float]], list[list[str]]]:
    """Layer names, the mean dilation per (layer, group) and its label (``2`` or ``1x2``)."""
    layers = list(spec.get("dilations", {}))
    values, labels = [], []
    for layer in layers:
        row_v, row_l = [], []
        for pair in parse_dilations(spec["dilations"][layer]):  # "1,2x3" -> (1, 1), (2, 3)
            row_v.append(statistics.fmean(pair))
            row_l.append(str(pair[0]) if pair[0] == pair[-1] else "x".join(map(str, pair)))
        values.append(row_v)
        labels.append(row_l)
    return layers, values, labels


def plot_nats(specs: dict[str, dict], path: Path) -> Path:
    """Heat map of the dilation per layer (rows) and channel group (columns), one per search."""
    specs = {k: v for k, v in specs.items() if v.get("dilations")}
    if not specs:
        return plot_placeholder(path, "NATS: no searched dilations")
    import numpy as np

    mats = {k: dilation_matrix(v) for k, v in specs.items()}
    n_layers = max(len(m[0]) for m in mats.values())
    fig = _figure(2.5 + 2.6 * len(mats), 1.5 + 0.25 * n_layers)
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    vmax = max(max(map(max, m[1])) for m in mats.values() if m[1])
    image = None
    for ax, (title, (layers, values, labels)) in zip(axes, mats.items(), strict=True):
        width = max(len(v) for v in values)
        grid = np.full((len(values), width), np.nan)
        for i, v in enumerate(values):
            grid[i, : len(v)] = v
        image = ax.imshow(grid, cmap="viridis", vmin=1, vmax=max(vmax, 1.01), aspect="auto")
        for i, row in enumerate(labels):
            for j, text in enumerate(row):
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < (1 + vmax) / 2 else "black")
        ax.set_yticks(range(len(layers)), layers, fontsize=7)
        ax.set_xticks(range(width), [f"g{j}" for j in range(width)], fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=list(axes), label="dilation", shrink=0.8)
    return _save(fig, path)


def write_figures(cfg: StudyConfig, res: Results, archs: list[dict], figures: Path) -> list[Path]:
    """Draw every figure of `expected_figures` into ``figures``."""
    names = expected_figures(cfg)
    written = []
    for ds in cfg.datasets:
        for det in cfg.detectors:
            name, where = f"{_safe(ds)}_{_safe(det)}", f"{ds} / {DETECTOR_NAMES.get(det, det)}"
            hist = {m: res.histories[search_key(ds, det, m)] for m in SEARCH_METHODS
                    if search_key(ds, det, m) in res.histories}
            written.append(plot_search(hist, figures / f"search_{name}.png", where))
            written.append(plot_flops_fitness(hist, figures / f"flops_fitness_{name}.png", where,
                                              cfg.search.max_flops))
        drawn = [(a["label"], a["arch"]) for a in archs if a["dataset"] in (None, ds)]
        written.append(plot_archs(drawn, figures / f"archs_{_safe(ds)}.png",
                                  f"Architectures, {ds} (space {cfg.space})"))
    paper = [(n.name, n.arch) for n in REGISTRY.values() if n.space == "300M"]
    written.append(plot_archs(paper, figures / "archs_paper.png", "Published (300M space)"))
    nats = {f"{ds} / {DETECTOR_NAMES.get(det, det)}": s for (ds, det), s in res.nats.items()}
    written.append(plot_nats(nats, figures / "nats_dilations.png"))
    assert sorted(p.name for p in written) == sorted(names), "figure names out of sync"
    return written


# --- the document: a list of blocks, rendered to Markdown and to HTML --------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    """Markdown of blocks ``("h", level, text)``, ``("p", text)``, ``("ul", items)``,
    ``("table", header, rows)`` and ``("img", relative path, caption)``."""
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]) or "- (none)")
        elif kind == "table":
            header, rows = args
            lines = ["| " + " | ".join(map(_md_cell, header)) + " |",
                     "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})\n\n*{args[1]}*")
    return "\n\n".join(out) + "\n"


def _html_inline(text: str) -> str:
    """Escape, then turn Markdown code spans into ``<code>``."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text)))


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}"
        "th{background:#eee}img{max-width:100%}figcaption{font-style:italic;font-size:13px}")


def render_html(blocks: list[tuple], base: Path, title: str) -> str:
    """A self-contained HTML page of the same blocks; images from ``base`` embedded as base64."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{_CSS}</style></head><body>"]
    for kind, *args in blocks:
        if kind == "h":
            out.append(f"<h{args[0]}>{_html_inline(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(args[0])}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{_html_inline(i)}</li>" for i in args[0]) or "<li>(none)</li>"
            out.append(f"<ul>{items}</ul>")
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in r) + "</tr>"
                           for r in rows)
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode((base / args[0]).read_bytes()).decode()
            out.append(f"<figure><img alt='{html.escape(args[1])}' "
                       f"src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(args[1])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- assembling the report --------------------------------------------------------------------


def provenance_table(res: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one per input file with its seed and git commit (and config hash when
    the inputs carry one)."""
    keys = ["seed", "git_commit"]
    if any("config_hash" in p for p in res.inputs.values()):
        keys.append("config_hash")
    rows = [[f"`{rel}`", *(str(p.get(k, "—")) for k in keys)]
            for rel, p in sorted(res.inputs.items())]
    return ["input", *(k.replace("_", " ") for k in keys)], rows


def _tables_blocks(tables: dict, sources: dict[str, int]) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Main results")]
    for ds, table in tables.items():
        metric = METRIC_NAMES[table["metric"]]
        blocks.append(("h", 3, f"{ds} ({table['kind']}; {metric})"))
        blocks.append(("table", *format_main_table(table, sources)))
    blocks.append(("p", "Our numbers are percent on our data; the paper columns are the "
                        "paper's figures on COCO (compared with COCO and the synthetic set) or "
                        "VOC. Top-1 is of the row's classification run (`retrain/{row}/cls`). "
                        "A blank paper cell means the references give no figure."))
    blocks.append(("ul", [f"[{n}] {s}" for s, n in sorted(sources.items(), key=lambda x: x[1])]))
    return blocks


def _search_blocks(cfg: StudyConfig, searches: dict) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Evolutionary search against random search")]
    rows = [[f"`{k}`", str(s["evaluations"]), f"{s['best']:.4f}", f"{s['median']:.4f}",
             f"{s['mean']:.4f}", str(s["best_at"])] for k, s in searches.items()]
    blocks.append(("table", ["search", "evaluations", "best fitness", "median", "mean",
                             "best found at"], rows))
    figs = expected_figures(cfg)
    for name, caption in figs.items():
        if name.startswith(("search_", "flops_fitness_")):
            blocks.append(("img", f"figures/{name}", caption))
    return blocks


def _arch_blocks(cfg: StudyConfig, kernels: list[dict]) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Searched architectures")]
    blocks.append(("p", "One cell per block: 3/5/7 = ShuffleNetV2 block with that depthwise "
                        "kernel, X = Xception block; stages separated."))
    for name, caption in expected_figures(cfg).items():
        if name.startswith("archs_"):
            blocks.append(("img", f"figures/{name}", caption))
    rows = [[k["label"], f"`{k['arch']}`", " / ".join(f"{m:.2f}" for m in k["kernel_per_stage"]),
             " / ".join(f"{m:.2f}" for m in k["receptive_per_stage"]),
             f"{k['shallow_minus_deep']:+.2f}"] for k in kernels]
    blocks.append(("h", 3, "Mean kernel size per stage"))
    blocks.append(("table", ["net", "arch", "kernel per stage (X = 3)",
                             "receptive field per stage (X = 7)", "shallow - deep"], rows))
    blocks.append(("h", 2, "NATS dilations"))
    caption = expected_figures(cfg)["nats_dilations.png"]
    blocks.append(("img", "figures/nats_dilations.png", caption))
    return blocks


def build_report(cfg: StudyConfig, results: str | Path, out: str | Path) -> dict:
    """Write ``report.md``, ``report.html``, ``tables.json`` and ``figures/`` under ``out``.

    Returns:
        The content of ``tables.json``.
    """
    out = Path(out)
    res = collect(cfg, results)
    tables = {ds: main_table(cfg, res, ds) for ds in cfg.datasets}
    searches = search_tables(res)
    archs = searched_archs(cfg, res)
    kernels = kernel_table(archs)
    notes = observations(cfg, res, tables, kernels)
    write_figures(cfg, res, archs, out / "figures")
    prov = {"config_hash": config_hash(cfg), "seed": cfg.seed, "space": cfg.space,
            "report_git_commit": git_commit(),
            "input_git_commits": sorted({str(p.get("git_commit")) for p in res.inputs.values()
                                         if p.get("git_commit")}),
            "input_seeds": sorted({p["seed"] for p in res.inputs.values() if "seed" in p}),
            "inputs": res.inputs}
    sources: dict[str, int] = {}
    blocks: list[tuple] = [("h", 1, "DetNAS / NATS results"),
                           ("p", f"Results folder `{res.root}`, space `{cfg.space}`, datasets "
                                 f"{', '.join(cfg.datasets)}, detectors "
                                 f"{', '.join(cfg.detectors)}.")]
    blocks += _tables_blocks(tables, sources)
    blocks += _search_blocks(cfg, searches)
    blocks += _arch_blocks(cfg, kernels)
    blocks += [("h", 2, "Observations"), ("ul", notes), ("h", 3, "The paper's claims"),
               ("ul", list(PAPER_CLAIMS)), ("h", 2, "Missing inputs"),
               ("ul", [f"`{m}`" for m in res.missing])]
    blocks += [("h", 2, "Provenance"),
               ("p", f"Config hash `{prov['config_hash']}`, seed {cfg.seed}, report built at "
                     f"commit `{prov['report_git_commit']}`; inputs from commits "
                     f"{', '.join(f'`{c}`' for c in prov['input_git_commits']) or '—'}, seeds "
                     f"{', '.join(map(str, prov['input_seeds'])) or '—'}."),
               ("table", *provenance_table(res))]
    data = {"tables": tables, "searches": searches, "kernels": kernels, "observations": notes,
            "missing": res.missing, "figures": list(expected_figures(cfg)),
            "paper_sources": {str(n): s for s, n in sources.items()}, "provenance": prov}
    save_json(out / "tables.json", data)
    md = render_markdown(blocks).encode()
    atomic_write(out / "report.md", lambda f: f.write(md))
    page = render_html(blocks, out, "DetNAS / NATS results").encode()
    atomic_write(out / "report.html", lambda f: f.write(page))
    log.info("report written to %s (%d missing inputs)", out, len(res.missing))
    return data
