"""The report's figures, drawn with matplotlib's Agg canvas (no display needed)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from detnas.io import atomic_write
from detnas.plan import study
from detnas.plan.config import StudyConfig
from detnas.plan.dilations import parse_dilations
from detnas.plan.space import REGISTRY, Arch
from detnas.report.paper import CHOICE_COLOURS, CHOICE_LABELS, DETECTOR_NAMES
from detnas.report.results import Results, search_key
from detnas.report.tables import search_curve
from detnas.search.evolution import pareto_front


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
            if cfg.rank.enabled and det in cfg.rank.checked_detectors(cfg.detectors):
                out[f"rank_{name}.png"] = (f"Ranking check ({where}): supernet fitness against "
                                           "the standalone-trained score of the same nets.")
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


def _style(method: str, rows: tuple[study.Row, ...]) -> tuple[str, str | None]:
    """The label and colour of a row's series (a name that is no row: itself, the next)."""
    row = next((r for r in rows if r.name == method), None)
    return (row.title, row.colour) if row else (method, None)


def plot_placeholder(path: Path, text: str) -> Path:
    """A small figure that says why there is nothing to plot."""
    fig = _figure(5, 1.2)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return _save(fig, path)


def plot_search(histories: dict[str, list[dict]], path: Path, title: str,
                rows: tuple[study.Row, ...] = study.ROWS) -> Path:
    """Best-so-far fitness against evaluations, and best / mean fitness per generation, of each
    row's search (``histories``: row name -> history; labels and colours: ``rows``)."""
    if not histories:
        return plot_placeholder(path, f"{title}: no search history")
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    for method, history in histories.items():
        c = search_curve(history)
        label, colour = _style(method, rows)
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
                       max_flops: float = 0.0, front: bool = False,
                       rows: tuple[study.Row, ...] = study.ROWS) -> Path:
    """Scatter of backbone FLOPs against fitness of every evaluated candidate, with the search's
    FLOPs limit (if any) as a vertical line; ``front``: each method's FLOPs x fitness
    non-dominated front as a step line (the Pareto search, ``search.objective: pareto``)."""
    points = {m: [(r["backbone_flops"] / 1e6, r["fitness"]) for r in h
                  if r["backbone_flops"] is not None] for m, h in histories.items()}
    points = {m: p for m, p in points.items() if p}
    if not points:
        return plot_placeholder(path, f"{title}: no FLOPs in the search histories")
    fig = _figure(6, 4)
    ax = fig.subplots()
    for method, p in points.items():
        xs, ys = zip(*p, strict=True)
        label, colour = _style(method, rows)
        ax.scatter(xs, ys, s=12, alpha=0.6, color=colour, label=label)
        if front:
            candidates = [{"order": i, "flops": x, "fitness": y} for i, (x, y) in enumerate(p)]
            line = pareto_front(candidates, "flops")
            ax.step([r["flops"] for r in line], [r["fitness"] for r in line], where="post",
                    color=colour, lw=1.2, label=f"{label}: front")
    if max_flops > 0:
        ax.axvline(max_flops / 1e6, color="black", ls=":", label="FLOPs limit")
    ax.set(xlabel="backbone MFLOPs (224x224)", ylabel="fitness", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_rank(rank: dict | None, path: Path, title: str) -> Path:
    """Scatter of each net's supernet fitness (x) against its standalone score (y), one series
    per supernet, with Kendall's tau and Spearman's rho in the legend."""
    if not rank or not rank.get("supernets"):
        return plot_placeholder(path, f"{title}: no ranking check")
    from detnas.report.paper import METRIC_NAMES

    fig = _figure(6, 4)
    ax = fig.subplots()
    colours = {init: _style(s.tag, study.ROWS)[1] for init, s in study.SUPERNETS.items()}
    y = [100 * v for v in rank["standalone"]]
    for init, s in rank["supernets"].items():
        stats = ", ".join(f"{name} {'—' if s[k] is None else format(s[k], '+.2f')}"
                          for name, k in (("tau", "kendall_tau"), ("rho", "spearman_rho")))
        ax.scatter([100 * v for v in s["fitness"]], y, s=24, alpha=0.8, color=colours.get(init),
                   label=f"{init} supernet ({stats})")
    metric = METRIC_NAMES.get(rank["metric"], rank["metric"])
    ax.set(xlabel=f"supernet fitness ({metric} %, search split)",
           ylabel=f"standalone {metric} % (search split)", title=title)
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
    rows = study.rows(cfg)
    written = []
    for ds in cfg.datasets:
        for det in cfg.detectors:
            name, where = f"{_safe(ds)}_{_safe(det)}", f"{ds} / {DETECTOR_NAMES.get(det, det)}"
            hist = {r.name: res.histories[search_key(ds, det, r.name)] for r in rows
                    if r.cell_search and search_key(ds, det, r.name) in res.histories}
            written.append(plot_search(hist, figures / f"search_{name}.png", where, rows))
            written.append(plot_flops_fitness(hist, figures / f"flops_fitness_{name}.png", where,
                                              cfg.search.max_flops,
                                              front=cfg.search.objective == "pareto",
                                              rows=rows))
            if f"rank_{name}.png" in names:
                written.append(plot_rank(res.rank.get((ds, det)), figures / f"rank_{name}.png",
                                         f"Ranking check, {where}"))
        drawn = [(a["label"], a["arch"]) for a in archs if a["dataset"] in (None, ds)]
        written.append(plot_archs(drawn, figures / f"archs_{_safe(ds)}.png",
                                  f"Architectures, {ds} (space {cfg.space})"))
    paper = [(n.name, n.arch) for n in REGISTRY.values() if n.space == "300M"]
    written.append(plot_archs(paper, figures / "archs_paper.png", "Published (300M space)"))
    nats = {f"{ds} / {DETECTOR_NAMES.get(det, det)}": s for (ds, det), s in res.nats.items()}
    written.append(plot_nats(nats, figures / "nats_dilations.png"))
    assert sorted(p.name for p in written) == sorted(names), "figure names out of sync"
    return written
