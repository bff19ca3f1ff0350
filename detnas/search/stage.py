"""The search stage: check the inputs, run (or resume) the search, write outputs, track in MLflow.

Output folder: ``state.json`` (resumable state, saved after every evaluation), ``arch.json``,
``history.csv``, ``metrics.json``, ``config.yaml`` (`detnas.run.record.StageRecord`),
``fitness.png``, ``flops_fitness.png``. With a latency table, metrics.json also compares the
predicted latency of the top candidates with their standalone backbones measured here
(`latency_check`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

from detnas.io import load_checkpoint
from detnas.latency import check_winners
from detnas.plan import config as study_config
from detnas.plan import layout
from detnas.plan.config import StudyConfig
from detnas.plan.latency import LatencyTable, load_table
from detnas.plan.space import Arch
from detnas.plan.typed import to_dict
from detnas.run.record import StageRecord
from detnas.search.evolution import (
    SearchState,
    check_settings,
    evaluation_budget,
    run_search,
    serial,
    top_k,
)
from detnas.search.fitness import FitnessSpec, build_fitness, check_checkpoint
from detnas.search.outputs import search_metrics, write_outputs
from detnas.search.parallel import WorkerPool, worker_index

log = logging.getLogger(__name__)

FitnessFactory = Callable[[], Callable[[Arch], float]]

def fitness_inputs(spec: FitnessSpec | None) -> tuple[list, dict]:
    """What a search's fingerprint holds of its fitness: the files it reads, by content (the
    supernet, the data), and its other settings (late settings at their default left out). With
    the config, the strategy and the tags they make what a search is made from (a state of
    another, e.g. of a supernet trained again, is set aside: `run_search`)."""
    paths = ("checkpoint", "data", "recalib_data", "images", "recalib_image_dir")
    fields = {} if spec is None else to_dict(spec)
    inputs = [fields.pop(name) or None for name in paths if name in fields]
    return inputs, ({"fitness": fields} if fields else {})


def worker_fitness(spec: FitnessSpec) -> Callable[[Arch], float]:
    """`build_fitness` on this worker's device: worker i of the pool on ``cuda:i`` (modulo the
    visible GPUs, so K workers may share fewer GPUs); the CPU for a CPU spec."""
    if spec.device == "cuda":
        import torch

        device = torch.device("cuda", worker_index() % torch.cuda.device_count())
        torch.cuda.set_device(device)
        spec = dataclasses.replace(spec, device=str(device))
    return build_fitness(spec)


def search_latency_table(cfg: StudyConfig) -> LatencyTable | None:
    """The latency table the search uses: needed by ``search.max_latency``, and used whenever
    ``latency.table`` names one (the history then carries every candidate's predicted latency).

    Raises:
        ValueError: the table is missing, corrupt, or of another space.
    """
    if not study_config.search_uses_latency(cfg):
        return None
    return load_table(study_config.latency_table_path(cfg), cfg.space)


def resolve_workers(workers: int, device: str) -> int:
    """``workers`` evaluation processes; 0: one per visible GPU (one on the CPU)."""
    if workers < 0:
        raise ValueError(f"search.workers: must be >= 0, got {workers}")
    if workers:
        return workers
    if device.startswith("cuda"):
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def _check_one_process() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("the search is one process that starts one evaluation worker per GPU; "
                         "run it with `detnas launch --gpus G -- search ...`, not under torchrun "
                         f"(WORLD_SIZE={os.environ['WORLD_SIZE']}: copies would write the same "
                         "outputs)")


def _fitness(spec: FitnessSpec | None, factory: FitnessFactory | None,
             metric: str | None) -> tuple[FitnessFactory, str]:
    """The fitness factory and its name in the outputs; a spec's checkpoint checked."""
    if spec is not None:
        check_checkpoint(load_checkpoint(spec.checkpoint), spec.checkpoint, spec)
        factory = factory or functools.partial(worker_fitness, spec)
        metric = metric or spec.metric
    if factory is None:
        raise ValueError("search_stage needs a fitness spec or a fitness factory")
    return factory, metric or "fitness"


def search_gpus(spec: FitnessSpec | None, workers: int) -> int:
    """The GPUs a search holds (`detnas.cost`): worker i evaluates on cuda:(i mod GPUs)."""
    if spec is None or not spec.device.startswith("cuda"):
        return 0
    import torch

    return min(workers, torch.cuda.device_count())


def _run(cfg: StudyConfig, strategy: str, factory: FitnessFactory, workers: int,
         latency: LatencyTable | None, record: StageRecord) -> SearchState:
    """Run (or resume) the search, in this process or with ``workers`` evaluation processes; its
    ``state.json`` is bound to the record's fingerprint."""
    def on_generation(stats: dict) -> None:
        record.tracker.log_metrics({"best_fitness": stats["best"], "mean_fitness": stats["mean"]},
                                   step=stats["generation"])

    rng = random.Random(cfg.run_seed)  # the replicate's proposals; the fitness is the study's
    state_path = record.out / "state.json"
    bound = {"fingerprint": record.fingerprint, "on_generation": on_generation}
    if workers == 1:
        state = run_search(strategy, cfg.space, cfg.search, serial(factory()), rng, state_path,
                           latency, **bound)
    else:
        with WorkerPool(factory, workers) as pool:
            state = run_search(strategy, cfg.space, cfg.search, pool, rng, state_path, latency,
                               **bound)
    if not state.history:
        raise ValueError(f"{state_path}: the search evaluated no candidate")
    return state


def latency_check(latency: LatencyTable | None, state: SearchState,
                  topk: int) -> list[dict] | None:
    """The predicted and the measured latency of the ``topk`` candidates' standalone backbones,
    measured here (`check_winners`; empty on a machine without the table's device)."""
    if latency is None:
        return None
    checked = check_winners(latency, [Arch.parse(r["arch"], state.space)
                                      for r in top_k(state.history, topk)])
    if not checked:
        log.warning("latency table measured on %s, which this machine does not have: "
                    "the winners' latency is not measured", latency.measurement.device)
    for row in checked:
        log.info("latency of %s: predicted %.3f ms, measured %.3f ms (%+.1f%%)",
                 row["arch"], row["predicted_ms"], row["measured_ms"], 100 * row["error"])
    return checked


def search_stage(cfg: StudyConfig, strategy: str, out_dir: str | Path, *,
                 spec: FitnessSpec | None = None, factory: FitnessFactory | None = None,
                 metric: str | None = None, ablation: str = "detnas", dataset: str = "",
                 detector: str = "", workers: int | None = None) -> dict:
    """Run the ``strategy`` search of study ``cfg`` into ``out_dir``; returns ``metrics.json``.

    Args:
        cfg: the study config (``cfg.search`` holds the settings, ``cfg.space`` the space).
        strategy: ``evolution`` or ``random`` (same budget: `evaluation_budget`).
        out_dir: output folder; a ``state.json`` there made from the same config and inputs
            (`fitness_inputs`) is resumed, another is set aside.
        spec: the supernet fitness; its checkpoint is checked before anything runs.
        factory: builds the fitness in each process instead of `worker_fitness` (tests,
            benchmarks); must be picklable when there are several workers.
        metric: the fitness's name in the outputs (default ``spec.metric``).
        ablation, dataset, detector: MLflow tags.
        workers: evaluation processes (`detnas launch` passes one per GPU of the job); default
            ``cfg.search.workers`` (0: one per visible GPU). The fitness does not depend on it.

    Raises:
        ValueError: a latency limit under the fastest network, a missing latency table or one
            of another space, a checkpoint of another space or task, a corrupt state file, or
            several copies of the search started by torchrun.
    """
    _check_one_process()
    latency = search_latency_table(cfg)
    check_settings(cfg.search, cfg.space, latency=latency)
    workers = resolve_workers(cfg.search.workers if workers is None else workers,
                              spec.device if spec else "cpu")
    factory, metric = _fitness(spec, factory, metric)
    out_dir, budget = Path(out_dir), evaluation_budget(cfg.search)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("%s search of space %s: %d evaluations, %d worker(s), output %s", strategy,
             cfg.space, budget, workers, out_dir)
    inputs, fitness = fitness_inputs(spec)
    facts = {"strategy": strategy, "ablation": ablation, "dataset": dataset, "detector": detector}
    supernet = {"supernet": spec.checkpoint} if spec else None
    with StageRecord.open(cfg, "search", out_dir, {**facts, "space": cfg.space}, inputs=inputs,
                          facts=facts | fitness, keep_fingerprint=False, sources=supernet,
                          about=facts | {"supernet": spec.checkpoint if spec else None,
                                         "evaluations": budget},
                          name=f"search-{strategy}-{ablation}-{dataset}-{detector}",
                          gpus=search_gpus(spec, workers)) as record:
        record.tracker.log_params({f"search.{k}": v for k, v in record.config["search"].items()}
                                  | {"budget": budget, "metric": metric})
        state = _run(cfg, strategy, factory, workers, latency, record)
        checked = latency_check(latency, state, cfg.search.topk)
        paths = write_outputs(state, out_dir, metric, record.final_provenance(), checked)
        metrics = record.write(search_metrics(state, checked))
        record.tracker.set_tags({"arch": metrics["best_arch"]})
        record.tracker.log_metrics({k: metrics[k] for k in ("best_fitness", "evaluations",
                                                            "candidates_per_min")})
        for path in (*paths.values(), out_dir / layout.METRICS):
            record.tracker.log_artifact(path)
    log.info("best %s %.4f: %s (%d evaluations)", metric, metrics["best_fitness"],
             metrics["best_arch"], metrics["evaluations"])
    return metrics
