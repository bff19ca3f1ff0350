"""The ranking check: does the supernet's fitness rank architectures as standalone training does?

The premise of one-shot search. `spread_archs` picks K architectures spread over the FLOPs range
the search may pick from (under its FLOPs and params limits; seeded); each is trained alone
(`detnas.run.train.train_detector`, from scratch, the ``rank.train`` schedule) on the supernet's
training split, with the same detector, and scored on the search split with the search's metric.
Beside each, its fitness on the pre-trained and on the scratch supernet: the search's own
function (`detnas.search.fitness`) on the same split. Kendall's tau (tau-b) and Spearman's rho
per supernet (`rank_correlation`).

The architectures must differ by more than training noise for any ranking to mean something:
the middle architecture is trained a second time with the next seed, and ``rank.json`` holds
the standalone scores' span (max - min over the K) beside that seed spread (|score seed 0 -
score seed 1|).

Output folder: ``rank.json`` (the K pairs per supernet, tau, rho, the span and the seed spread,
provenance) and ``standalone/{arch}/``, ``standalone/{arch}-seed{N}/`` (each standalone
training; a rerun keeps those that finished).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import warnings
from collections.abc import Callable
from pathlib import Path

from detnas.io import load_json
from detnas.plan import flops, layout
from detnas.plan.config import StudyConfig, dataset_of
from detnas.plan.space import Arch, sample
from detnas.run.record import StageRecord

log = logging.getLogger(__name__)


def spread_archs(space: str, k: int, seed: int, feasible: Callable[[Arch], bool] | None = None,
                 input_size: int = 224, pool: int = 2000) -> list[Arch]:
    """``k`` distinct architectures whose backbone FLOPs are spread evenly over the range of
    ``pool`` random ones that ``feasible`` accepts (default: every one), cheapest first.

    The i-th is the pool's architecture nearest to ``low + i (high - low) / (k - 1)`` FLOPs (ties
    by encoding): the same ``seed`` gives the same list.

    Raises:
        ValueError: fewer than ``k`` distinct feasible architectures were found.
    """
    cost = flops.cost_table(space, input_size).backbone_flops
    rng = random.Random(seed)
    found: dict[Arch, int] = {}
    for _ in range(50 * pool):
        if len(found) == pool:
            break
        arch = sample(space, rng)
        if arch not in found and (feasible is None or feasible(arch)):
            found[arch] = cost(arch)
    if len(found) < k:
        raise ValueError(f"rank.archs: {k} feasible architectures of space {space} needed, "
                         f"{len(found)} found (the search's limits are too tight)")
    low, high = min(found.values()), max(found.values())
    chosen: list[Arch] = []
    for i in range(k):
        target = low + (high - low) * i / (k - 1)
        chosen.append(min((a for a in found if a not in chosen),
                          key=lambda a: (abs(found[a] - target), str(a))))
    return sorted(chosen, key=lambda a: (found[a], str(a)))


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def rank_correlation(x: list[float], y: list[float]) -> dict:
    """Kendall's tau-b and Spearman's rho of two paired lists, with their p-values (scipy);
    None where undefined (a list with a single distinct value)."""
    from scipy import stats

    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"rank correlation needs two paired lists of >= 2 values, got "
                         f"{len(x)} and {len(y)}")
    with warnings.catch_warnings():  # a constant list: NaN, reported as None
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        tau, rho = stats.kendalltau(x, y), stats.spearmanr(x, y)
    return {"kendall_tau": _finite(tau.statistic), "kendall_p": _finite(tau.pvalue),
            "spearman_rho": _finite(rho.statistic), "spearman_p": _finite(rho.pvalue)}


def _finished(folder: Path, expected: str) -> dict | None:
    """The metrics of a standalone run that finished made from ``expected`` (its fingerprint:
    this very config and these very inputs, `detnas.run.train.run_fingerprint`), else None: a run
    of another config or data is trained again."""
    try:
        metrics = load_json(folder / layout.METRICS)
    except ValueError:
        return None
    found = metrics.get("provenance", {}).get("fingerprint")
    if found != expected:
        log.info("%s: made from %s, not %s: trained again", folder, found, expected)
        return None
    return metrics


def _standalone(cfg: StudyConfig, arch: Arch, dataset: str, detector: str, folder: Path,
                split: dict) -> dict:
    """The metrics of ``arch`` trained alone into ``folder`` (``split``: `train_detector`'s
    training and test splits and stage name): a finished run made from the same is kept."""
    from detnas.nets.backbones import shufflenet_spec
    from detnas.run.train import detector_run, run_fingerprint, train_detector

    spec = shufflenet_spec(arch)
    run = detector_run(cfg, spec, "rank", dataset, detector, None, folder, **split)
    metrics = _finished(folder, run_fingerprint(cfg, run))
    if metrics is None:
        metrics = train_detector(cfg, spec, "rank", dataset, detector, None, folder,
                                 tcfg=cfg.rank.train, **split)
    return metrics


def _standalone_scores(cfg: StudyConfig, archs: list[Arch], dataset: str, detector: str,
                       metric: str, out: Path, split: dict) -> dict:
    """``archs``' standalone scores, their span, and the seed spread of the middle one (trained
    a second time with the next seed), as ``rank.json`` holds them."""
    standalone = [float(_standalone(cfg, a, dataset, detector, out / "standalone" / str(a),
                                    split)[metric]) for a in archs]
    middle, other_seed = len(archs) // 2, cfg.seed + 1
    again = float(_standalone(dataclasses.replace(cfg, seed=other_seed), archs[middle], dataset,
                              detector, out / "standalone" / f"{archs[middle]}-seed{other_seed}",
                              split)[metric])
    span, spread = max(standalone) - min(standalone), abs(standalone[middle] - again)
    log.info("standalone %s: span %.4f over the %d architectures, seed spread %.4f (%s)",
             metric, span, len(archs), spread, archs[middle])
    return {"standalone": standalone, "standalone_span": span,
            "seed_spread": {"arch": str(archs[middle]), "seeds": [cfg.seed, other_seed],
                            "scores": [standalone[middle], again], "spread": spread}}


def rank_stage(cfg: StudyConfig, dataset: str, detector: str, supernets: dict[str, Path],
               images: Path, train_annotations: Path, search_annotations: Path,
               out: Path) -> dict:
    """Train ``cfg.rank.archs`` architectures alone, score them on each supernet, correlate.

    Args:
        supernets: ``{"pretrained": checkpoint, "scratch": checkpoint}`` (either may be left
            out): the fine-tuned detection supernets of ``dataset`` and ``detector``.
        images: the image folder of both splits (the dataset's training images).
        train_annotations: the supernet's training split (standalone training, recalibration).
        search_annotations: the search split (standalone scores and fitness).
        out: the output folder.

    Returns:
        The content of ``rank.json`` (its ``cost``: the whole stage's, the standalone trainings
        and the fitness scoring, `detnas.run.record.StageRecord`).
    """
    from detnas.search.evolution import search_limits
    from detnas.search.fitness import build_fitness, fitness_spec

    metric, out = dataset_of(cfg, dataset).metric, Path(out)
    limits = search_limits(cfg.search, cfg.space)  # FLOPs and params (latency: its own device)
    archs = spread_archs(cfg.space, cfg.rank.archs, cfg.seed, limits.feasible,
                         cfg.search.flops_input_size, cfg.rank.pool)
    log.info("ranking check on %s / %s: %d architectures (and one with a second seed), "
             "supernets %s", dataset, detector, len(archs), ", ".join(supernets))
    split = {"train_split": (images, train_annotations),
             "test_split": (images, search_annotations), "stage_name": "rank-standalone"}
    tags = {"ablation": "rank", "dataset": dataset, "detector": detector, "space": cfg.space}
    with StageRecord.open(cfg, "rank", out, tags, about={"dataset": dataset, "detector": detector},
                          seed=cfg.seed, name=f"rank-{dataset}-{detector}") as record:
        record.tracker.log_params({"rank.archs": cfg.rank.archs, "rank.steps":
                                   cfg.rank.train.for_detector(detector).steps, "metric": metric})
        flops_of = flops.cost_table(cfg.space, cfg.search.flops_input_size).backbone_flops
        result: dict = {"dataset": dataset, "detector": detector, "metric": metric,
                        "archs": [str(a) for a in archs],
                        "backbone_flops": [flops_of(a) for a in archs],
                        **_standalone_scores(cfg, archs, dataset, detector, metric, out, split),
                        "supernets": {}}
        for init, checkpoint in supernets.items():
            fitness = build_fitness(fitness_spec(
                cfg, "detection", checkpoint, search_annotations, train_annotations,
                dataset=dataset, images=images, recalib_image_dir=images, detector=detector))
            scores = [fitness(a) for a in archs]
            row = result["supernets"][init] = {"checkpoint": str(checkpoint), "fitness": scores,
                                               **rank_correlation(scores, result["standalone"])}
            log.info("%s supernet: Kendall tau %s, Spearman rho %s", init, row["kendall_tau"],
                     row["spearman_rho"])
        record.tracker.log_metrics({f"{init}_{k}": v for init, s in result["supernets"].items()
                                    for k in ("kendall_tau", "spearman_rho")
                                    if (v := s[k]) is not None})
        written = record.write(result, after={"provenance": record.final_provenance()},
                               name=layout.RANK)
        record.tracker.log_artifact(out / layout.RANK)
    return written
