"""The search stage: check the inputs, run (or resume) the search, write outputs, track in MLflow.

Output folder: ``state.json`` (resumable state, saved after every evaluation), ``arch.json``,
``history.csv``, ``metrics.json``, ``fitness.png``, ``flops_fitness.png``. With a latency table,
metrics.json also compares the predicted latency of the top candidates with their standalone
backbones measured here (``latency_check``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

from detnas.io import load_checkpoint, load_json
from detnas.latency import check_winners
from detnas.plan import config as study_config
from detnas.plan.config import StudyConfig
from detnas.plan.latency import LatencyTable, load_table
from detnas.plan.space import Arch
from detnas.plan.typed import to_dict
from detnas.provenance import fingerprint, provenance, source
from detnas.run import tracking
from detnas.search.evolution import check_settings, evaluation_budget, run_search, serial, top_k
from detnas.search.fitness import FitnessSpec, build_fitness, check_checkpoint
from detnas.search.outputs import write_outputs
from detnas.search.parallel import WorkerPool, worker_index

log = logging.getLogger(__name__)

FitnessFactory = Callable[[], Callable[[Arch], float]]

def search_fingerprint(cfg: StudyConfig, strategy: str, spec: FitnessSpec | None,
                       **facts) -> str:
    """What a search is made from: the config, the supernet and the data its fitness reads (a
    state of another, e.g. of a supernet trained again, is set aside: `run_search`)."""
    paths = ("checkpoint", "data", "recalib_data", "images", "recalib_image_dir")
    fields = {} if spec is None else to_dict(spec)  # late settings at their default left out
    inputs = [fields.pop(name) or None for name in paths if name in fields]  # by content
    extra = {"fitness": fields} if fields else {}
    return fingerprint(to_dict(cfg), inputs, stage="search", strategy=strategy, **facts, **extra)


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


def search_stage(cfg: StudyConfig, strategy: str, out_dir: str | Path, *,
                 spec: FitnessSpec | None = None, factory: FitnessFactory | None = None,
                 metric: str | None = None, ablation: str = "detnas", dataset: str = "",
                 detector: str = "", workers: int | None = None) -> dict:
    """Run the ``strategy`` search of study ``cfg`` into ``out_dir``; returns ``metrics.json``.

    Args:
        cfg: the study config (``cfg.search`` holds the settings, ``cfg.space`` the space).
        strategy: ``evolution`` or ``random`` (same budget: `evaluation_budget`).
        out_dir: output folder; a ``state.json`` there made from the same config and inputs
            (`search_fingerprint`) is resumed, another is set aside.
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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("the search is one process that starts one evaluation worker per GPU; "
                         "run it with `detnas launch --gpus G -- search ...`, not under torchrun "
                         f"(WORLD_SIZE={os.environ['WORLD_SIZE']}: copies would write the same "
                         "outputs)")
    latency = search_latency_table(cfg)
    check_settings(cfg.search, cfg.space, latency=latency)
    workers = resolve_workers(cfg.search.workers if workers is None else workers,
                              spec.device if spec else "cpu")
    if spec is not None:
        check_checkpoint(load_checkpoint(spec.checkpoint), spec.checkpoint, spec)
        factory = factory or functools.partial(worker_fitness, spec)
        metric = metric or spec.metric
    if factory is None:
        raise ValueError("search_stage needs a fitness spec or a fitness factory")
    metric = metric or "fitness"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = evaluation_budget(cfg.search)
    log.info("%s search of space %s: %d evaluations, %d worker(s), output %s", strategy,
             cfg.space, budget, workers, out_dir)
    gpus = 0
    if spec is not None and spec.device.startswith("cuda"):
        import torch

        gpus = min(workers, torch.cuda.device_count())  # worker i on cuda:(i mod GPUs)
    tags = {"ablation": ablation, "detector": detector, "dataset": dataset, "space": cfg.space,
            "strategy": strategy}
    with tracking.start_stage(cfg, "search", tags, gpus=gpus, out=out_dir,
                              name=f"search-{strategy}-{ablation}-{dataset}-{detector}") as tracker:
        tracker.log_params({f"search.{k}": v for k, v in to_dict(cfg.search).items()}
                           | {"budget": budget, "metric": metric})

        def on_generation(stats: dict) -> None:
            tracker.log_metrics({"best_fitness": stats["best"], "mean_fitness": stats["mean"]},
                                step=stats["generation"])

        rng = random.Random(cfg.run_seed)  # the replicate's proposals; the fitness is the study's
        state_path = out_dir / "state.json"
        bound = {"fingerprint": search_fingerprint(cfg, strategy, spec, ablation=ablation,
                                                   dataset=dataset, detector=detector),
                 "on_generation": on_generation}
        if workers == 1:
            state = run_search(strategy, cfg.space, cfg.search, serial(factory()), rng,
                               state_path, latency, **bound)
        else:
            with WorkerPool(factory, workers) as pool:
                state = run_search(strategy, cfg.space, cfg.search, pool, rng, state_path,
                                   latency, **bound)
        if not state.history:
            raise ValueError(f"{state_path}: the search evaluated no candidate")
        prov = provenance(to_dict(cfg), cfg.run_seed, stage="search", strategy=strategy,
                          ablation=ablation, dataset=dataset, detector=detector,
                          supernet=spec.checkpoint if spec else None, evaluations=budget,
                          **({"sources": {"supernet": source(spec.checkpoint)}} if spec else {}))
        checked = None
        if latency is not None:  # the top candidates' standalone backbones, measured here
            checked = check_winners(latency, [Arch.parse(r["arch"], cfg.space)
                                              for r in top_k(state.history, cfg.search.topk)])
            if not checked:
                log.warning("latency table measured on %s, which this machine does not have: "
                            "the winners' latency is not measured", latency.measurement.device)
            for row in checked:
                log.info("latency of %s: predicted %.3f ms, measured %.3f ms (%+.1f%%)",
                         row["arch"], row["predicted_ms"], row["measured_ms"], 100 * row["error"])
        paths = write_outputs(state, out_dir, metric, prov, checked, tracker.cost())
        metrics = load_json(paths["metrics"])
        tracker.set_tags({"arch": metrics["best_arch"]})
        tracker.log_metrics({k: metrics[k] for k in ("best_fitness", "evaluations",
                                                     "candidates_per_min")})
        for path in paths.values():
            tracker.log_artifact(path)
    log.info("best %s %.4f: %s (%d evaluations)", metric, metrics["best_fitness"],
             metrics["best_arch"], metrics["evaluations"])
    return metrics
