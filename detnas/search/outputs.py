"""What a search leaves in its output folder: arch.json, history.csv, metrics.json (written by
the stage's record, `detnas.run.record`) and plots; a Pareto search (``objective: pareto``) also
front.json and front.png.

``history.csv`` has one row per evaluated candidate (``order`` is the evaluation index, the same
for any number of workers), enough to plot evolution against random search by evaluations.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from detnas.io import atomic_write, save_json
from detnas.plan import layout
from detnas.plan.flops import cost_table
from detnas.plan.space import Arch
from detnas.search.evolution import SearchState, pareto_front, top_k

HISTORY_FIELDS = ("order", "generation", "arch", "fitness", "backbone_flops", "backbone_params",
                  "latency_ms")
"""``latency_ms``: predicted by the search's latency table (empty without one)."""


def write_history(path: str | Path, state: SearchState) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(state.history, key=lambda r: r["order"]))
    data = buffer.getvalue().encode()
    return atomic_write(path, lambda f: f.write(data))


def best_arch(state: SearchState, metric: str, provenance: dict) -> dict:
    """The content of ``arch.json``: the best candidate as a backbone spec, plus its numbers."""
    (best,) = top_k(state.history, 1)
    arch = Arch.parse(best["arch"], state.space)
    cost = cost_table(state.space, int(state.settings["flops_input_size"])).backbone(arch)
    return {"kind": "shufflenet", "space": state.space, "arch": best["arch"],
            "backbone_flops": cost.flops, "backbone_params": cost.params,
            **({"latency_ms": best["latency_ms"]} if "latency_ms" in best else {}),
            "fitness": best["fitness"], "metric": metric, "strategy": state.strategy,
            "provenance": provenance}


def search_metrics(state: SearchState, latency_check: list[dict] | None = None) -> dict:
    """The content of ``metrics.json``; ``latency_check``: predicted vs measured latency of the
    top candidates (`detnas.latency.check_winners`), when the search had a latency table."""
    (best,) = top_k(state.history, 1)
    minutes = state.elapsed_s / 60
    metrics = {"strategy": state.strategy, "best_fitness": best["fitness"],
               "best_arch": best["arch"], "evaluations": len(state.history),
               "generations": len(state.generations), "elapsed_s": state.elapsed_s,
               "candidates_per_min": len(state.history) / minutes if minutes > 0 else math.nan,
               "final_mean_fitness": state.generations[-1]["mean"] if state.generations else None}
    if "latency_ms" in best:
        metrics["best_latency_ms"] = best["latency_ms"]
    data = front(state)
    if data is not None:
        metrics["front_size"] = len(data["front"])
    if latency_check:
        metrics["latency_check"] = latency_check
        metrics["latency_max_error"] = max(abs(r["error"]) for r in latency_check)
    return metrics


def front(state: SearchState) -> dict | None:
    """The content of ``front.json`` of a Pareto search (None otherwise): the candidates no
    other dominates in (cost, fitness), by cost ascending."""
    if state.settings.get("objective") != "pareto":
        return None
    column = state.settings["pareto_cost"]
    return {"cost": column, "front": [
        {k: r[k] for k in ("arch", "fitness", *HISTORY_FIELDS[4:], "order") if k in r}
        for r in pareto_front(state.history, column)]}


def plot_front(state: SearchState, data: dict, path: Path, metric: str) -> Path:
    """``front.png``: every candidate's cost against its fitness, the front as a step line."""
    from matplotlib import pyplot as plt

    column = data["cost"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter([r[column] for r in state.history], [r["fitness"] for r in state.history],
               s=10, color="0.6", label="candidates")
    ax.step([r[column] for r in data["front"]], [r["fitness"] for r in data["front"]],
            where="post", color="red", marker="o", ms=4, label="non-dominated front")
    ax.set(xlabel={"latency_ms": "predicted backbone latency (ms)",
                   "backbone_flops": "backbone FLOPs"}[column], ylabel=metric,
           title=f"{state.strategy} search, Pareto front")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig, path: Path) -> Path:
    """Write figure ``fig`` to ``path`` as a PNG, atomically, and close it."""
    from matplotlib import pyplot as plt

    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


def plot(state: SearchState, out_dir: str | Path, metric: str) -> list[Path]:
    """``fitness.png`` (best and mean per generation) and ``flops_fitness.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    gens = [g["generation"] for g in state.generations]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(gens, [g["best"] for g in state.generations], marker="o", label="best so far")
    ax.plot(gens, [g["mean"] for g in state.generations], marker=".", label="generation mean")
    ax.set(xlabel="generation", ylabel=metric, title=f"{state.strategy} search ({state.space})")
    ax.legend()
    fig.tight_layout()
    paths = [_save(fig, out_dir / "fitness.png")]

    fig, ax = plt.subplots(figsize=(5, 3.5))
    points = ax.scatter([r["backbone_flops"] / 1e6 for r in state.history],
                        [r["fitness"] for r in state.history],
                        c=[r["generation"] for r in state.history], s=10, cmap="viridis")
    fig.colorbar(points, ax=ax, label="generation")
    if state.settings["max_flops"]:
        ax.axvline(state.settings["max_flops"] / 1e6, color="red", ls="--", label="FLOPs limit")
        ax.legend()
    ax.set(xlabel=f"backbone MFLOPs at {int(state.settings['flops_input_size'])}px",
           ylabel=metric, title="candidates")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "flops_fitness.png"))
    return paths


def write_outputs(state: SearchState, out_dir: str | Path, metric: str, provenance: dict,
                  latency_check: list[dict] | None = None) -> dict[str, Path]:
    """Write the files of a finished search into ``out_dir`` but ``metrics.json`` (its
    `search_metrics`, which the stage's record writes with its cost:
    `detnas.run.record.StageRecord.write`); returns them by name."""
    out_dir = Path(out_dir)
    paths = {"arch": save_json(out_dir / layout.ARCH, best_arch(state, metric, provenance)),
             "history": write_history(out_dir / layout.HISTORY, state)}
    fitness_png, flops_png = plot(state, out_dir, metric)
    paths.update(fitness_plot=fitness_png, flops_plot=flops_png)
    data = front(state)
    if data is not None:
        paths["front"] = save_json(out_dir / "front.json", data)
        paths["front_plot"] = plot_front(state, data, out_dir / "front.png", metric)
    return paths
