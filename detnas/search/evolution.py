"""Evolutionary and random search under cost limits, resumable after a kill (pure Python).

The evolution follows the DetNAS / SPOS reference: generation 0 is ``population`` random
candidates; each later generation has up to ``mutations`` mutants (a random top-k parent, each
block re-drawn with probability ``mutation_prob``, at most ``10 * mutations`` tries), up to
``crossovers`` children (two random top-k parents, each block from either), and random candidates
for the rest; the top k are the best of everything evaluated so far. A candidate over any limit
(backbone FLOPs, backbone params, predicted latency from a `detnas.latency` table: `Limits`) is
rejected before evaluation (never penalised), and no candidate is evaluated twice.
With ``objective: pareto`` the parents are the top k of the (cost, fitness) non-dominated fronts
instead (`pareto_top_k`; cost: the predicted latency with a latency table, else the FLOPs), and
the search returns the front of everything evaluated (`pareto_front`).
Random search draws every generation at random: the same number of evaluations
(`evaluation_budget`), the same filter, the same state and history.

A generation's candidates are all drawn before any is evaluated (they depend only on the RNG and
the top k), so they can be evaluated in parallel and the result does not depend on the number of
workers. The state (RNG included) is saved atomically after every evaluation: a killed search
restarted with the same settings loses at most the candidates in flight and ends exactly as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detnas.io import load_json, save_json
from detnas.plan import study
from detnas.plan.config import check_floor
from detnas.plan.flops import cost_table
from detnas.plan.space import Arch, crossover, mutate, sample_where
from detnas.provenance import set_aside
from detnas.run import stop

log = logging.getLogger(__name__)

STRATEGIES = study.STRATEGIES
STATE_VERSION = 1

Fitness = Callable[[Arch], float]
Evaluator = Callable[[Sequence[Arch]], Iterable[tuple[int, float]]]
"""Evaluates candidates, yielding ``(index, fitness)`` in any order (e.g. as workers finish)."""

_SETTINGS = ("population", "topk", "generations", "mutations", "crossovers", "mutation_prob",
             "max_flops", "flops_input_size")
_NEW_SETTINGS = ("max_params", "max_latency")  # in a state only when set: older states resume


def serial(fitness: Fitness) -> Evaluator:
    """An `Evaluator` that calls ``fitness`` on each candidate in turn."""

    def evaluate(archs: Sequence[Arch]) -> Iterable[tuple[int, float]]:
        for i, arch in enumerate(archs):
            yield i, fitness(arch)

    return evaluate


def evaluation_budget(cfg) -> int:
    """Fitness evaluations of a search with config ``cfg`` (a `detnas.plan.config.SearchConfig`).

    Every generation evaluates ``population`` new candidates, so evolution and random search with
    the same config get the same budget. (Only a space too small to hold that many distinct
    feasible candidates ends a search early, with a warning.)
    """
    return cfg.population * cfg.generations


@dataclass(frozen=True)
class Limits:
    """The predicted costs of a candidate, as history columns, and the search's limits on them.

    Every cost is a sum over a table (`detnas.plan.flops`, `detnas.latency`), so it is known before
    the candidate is evaluated.
    """

    costs: dict[str, Callable[[Arch], float]]  # column: backbone_flops, backbone_params, latency_ms
    limits: dict[str, float]  # the columns limited, by their limit (none: unlimited)

    def of(self, arch: Arch) -> dict[str, float]:
        return {column: cost(arch) for column, cost in self.costs.items()}

    def feasible(self, arch: Arch) -> bool:
        return all(self.costs[column](arch) <= limit for column, limit in self.limits.items())

    def describe(self) -> str:
        return ", ".join(f"{column} <= {limit:.6g}" for column, limit in self.limits.items()) \
            or "no limit"


def search_limits(cfg, space: str, latency=None) -> Limits:
    """The `Limits` of search settings ``cfg`` in ``space``; ``latency``: a
    `detnas.plan.latency.LatencyTable` (adds the predicted latency, and ``cfg.max_latency``)."""
    table = cost_table(space, cfg.flops_input_size)
    costs = {"backbone_flops": table.backbone_flops, "backbone_params": table.backbone_params}
    flops_of = getattr(cfg, "flops_of", "backbone")
    if flops_of == "classifier":  # SPOS's convention: + last conv + FC (1000 classes)
        costs["classifier_flops"] = table.classifier_flops
    limits = {f"{flops_of}_flops": cfg.max_flops, "backbone_params": cfg.max_params}
    if latency is not None:
        costs["latency_ms"] = latency.predict
        limits["latency_ms"] = cfg.max_latency
    return Limits(costs, {column: limit for column, limit in limits.items() if limit})


def check_settings(cfg, space: str, where: str = "search", latency=None) -> None:
    """The checks of search settings that need the latency table, which the workflow may
    measure after the config is loaded; the config checks every other setting when it is loaded
    (`detnas.plan.config.check_search`: top k and operators within the population, the FLOPs and
    params limits at or above the cheapest network), and the search relies on it.

    Args:
        latency: the `detnas.plan.latency.LatencyTable` the search uses (needed by max_latency).

    Raises:
        ValueError: naming the field and value, e.g. a latency limit below the fastest network.
    """
    if cfg.max_latency and latency is None:
        raise ValueError(f"{where}.max_latency: {cfg.max_latency:.6g} ms needs a latency table "
                         "(latency.table; measure one with `detnas latency-table`)")
    if latency is not None:
        check_floor(f"{where}.max_latency", cfg.max_latency, latency.floor(), space,
                    "ms predicted by the latency table")


@dataclass
class SearchState:
    """Everything a search needs to resume; saved as JSON after every evaluation."""

    strategy: str
    space: str
    settings: dict[str, Any]  # _SETTINGS, the set _NEW_SETTINGS, the latency table's digest
    rng_origin: str  # fingerprint of the RNG state the search started from (the seed)
    generation: int = 0  # the generation in flight (or the next one)
    pending: list[str] | None = None  # candidates of the generation in flight, in order
    rng: list = field(default_factory=list)  # random.Random.getstate() after drawing `pending`
    history: list[dict] = field(default_factory=list)  # one row per evaluated candidate
    generations: list[dict] = field(default_factory=list)  # per finished generation: best, mean
    elapsed_s: float = 0.0  # time spent evaluating, over all runs
    version: int = STATE_VERSION
    fingerprint: str = ""  # what the search is made from (`detnas.provenance.fingerprint`)

    @property
    def done(self) -> bool:
        return self.pending is None and self.generation >= self.settings["generations"]

    def memo(self) -> dict[str, float]:
        return {row["arch"]: row["fitness"] for row in self.history}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, path: str | Path) -> SearchState:
        """Rebuild a state read from ``path``; a damaged one is a ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a search state (expected a JSON object)")
        kinds = {"strategy": str, "space": str, "settings": dict, "rng_origin": str,
                 "generation": int, "pending": (list, type(None)), "rng": list, "history": list,
                 "generations": list, "elapsed_s": (int, float), "version": int}
        for key, kind in kinds.items():
            if key not in data:
                raise ValueError(f"{path}: corrupt search state: field {key!r} is missing")
            if not isinstance(data[key], kind):
                raise ValueError(f"{path}: corrupt search state: field {key!r} = {data[key]!r}")
        if data["version"] != STATE_VERSION:
            raise ValueError(f"{path}: search state version {data['version']}, "
                             f"this code reads version {STATE_VERSION}")
        if not isinstance(data.get("fingerprint", ""), str):
            raise ValueError(f"{path}: corrupt search state: field 'fingerprint' = "
                             f"{data['fingerprint']!r}")
        state = cls(**{k: data[k] for k in kinds}, fingerprint=data.get("fingerprint", ""))
        try:
            for i, row in enumerate(state.history):
                Arch.parse(row["arch"], state.space)
                if not isinstance(row["fitness"], int | float) or not isinstance(row["order"], int):
                    raise ValueError(f"history[{i}] = {row!r}")
            for arch in state.pending or ():
                Arch.parse(arch, state.space)
            _restore_rng(state.rng)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: corrupt search state: {e}") from None
        return state


def _restore_rng(data: list) -> random.Random:
    rng = random.Random()
    version, internal, gauss = data
    rng.setstate((version, tuple(internal), gauss))
    return rng


def _fingerprint(rng: random.Random) -> str:
    return hashlib.sha256(repr(rng.getstate()).encode()).hexdigest()[:16]


def _settings(cfg, latency=None) -> dict[str, float | str]:
    settings = {name: getattr(cfg, name) for name in _SETTINGS}
    settings.update({name: getattr(cfg, name) for name in _NEW_SETTINGS if getattr(cfg, name)})
    if latency is not None:  # another table predicts other latencies
        settings["latency_table"] = hashlib.sha256(
            repr((latency.stem_ms, latency.blocks_ms)).encode()).hexdigest()[:16]
    for name, default in (("flops_of", "backbone"), ("operator_tries", "all")):
        if getattr(cfg, name, default) != default:  # older states resume
            settings[name] = getattr(cfg, name)
    if cfg.objective != "fitness":
        settings["objective"] = cfg.objective
        settings["pareto_cost"] = "latency_ms" if latency is not None else "backbone_flops"
    return settings


def _rank(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def top_k(history: list[dict], k: int) -> list[dict]:
    """The ``k`` best rows of ``history`` (ties: the earlier candidate first; NaN last)."""
    return sorted(history, key=lambda r: (-_rank(r["fitness"]), r["order"]))[:k]


def pareto_front(rows: list[dict], column: str) -> list[dict]:
    """The rows no other row dominates (no higher ``column`` and a higher fitness), by ``column``
    ascending. NaN fitness is never on the front."""
    front, best = [], -math.inf
    for row in sorted(rows, key=lambda r: (r[column], -_rank(r["fitness"]), r["order"])):
        if _rank(row["fitness"]) > best:
            front.append(row)
            best = _rank(row["fitness"])
    return front


def pareto_top_k(rows: list[dict], k: int, column: str) -> list[dict]:
    """The ``k`` parents of a Pareto search: the non-dominated front, then the front of the rest,
    and so on (NSGA-II's ranks); of the last front taken in part, the fittest."""
    chosen, rest = [], list(rows)
    while rest and len(chosen) < k:
        front = pareto_front(rest, column) or rest  # only NaN fitness left
        chosen += top_k(front, k - len(chosen))
        taken = {r["order"] for r in front}
        rest = [r for r in rest if r["order"] not in taken]
    return chosen


def parents(state: SearchState, topk: int) -> list[dict]:
    """The rows the next generation's mutants and children come from (objective-wise)."""
    if state.settings.get("objective", "fitness") == "pareto":
        return pareto_top_k(state.history, topk, state.settings["pareto_cost"])
    return top_k(state.history, topk)


def _propose(state: SearchState, space: str, rng: random.Random, limits: Limits,
             prob: float, mutations: int, crossovers: int, population: int,
             topk: int, tries: str = "all") -> list[Arch]:
    """The candidates of generation ``state.generation``: feasible and never seen before.

    ``tries``: ``all`` gives mutation and crossover 10 tries per wanted candidate, of any kind
    (SPOS); ``legal`` counts only feasible new ones, until they are found (DetNAS)."""
    seen = set(state.memo())
    out: list[Arch] = []

    def fresh(arch: Arch) -> bool:
        key = str(arch)
        if key in seen or not limits.feasible(arch):
            return False
        seen.add(key)
        out.append(arch)
        return True

    if state.strategy == "evolution" and state.generation > 0:
        chosen = [Arch.parse(r["arch"], space) for r in parents(state, topk)]
        bound = 10 if tries == "all" else 1000  # legal: a bound only against an exhausted space
        found = 0
        for _ in range(bound * mutations):
            if found == mutations:
                break
            found += fresh(mutate(rng.choice(chosen), rng, prob))
        found = 0
        for _ in range(bound * crossovers):
            if found == crossovers:
                break
            found += fresh(crossover(rng.choice(chosen), rng.choice(chosen), rng))
    misses = 0
    while len(out) < population and misses < 100 * population:
        misses += not fresh(sample_where(space, rng, limits.feasible, limits.describe()))
    if len(out) < population:
        log.warning("generation %d: only %d new feasible candidates found (space exhausted?)",
                    state.generation, len(out))
    return out


def run_search(
    strategy: str,
    space: str,
    cfg,
    evaluate: Evaluator,
    rng: random.Random,
    state_path: str | Path | None = None,
    latency=None,
    on_generation: Callable[[dict], None] | None = None,
    on_evaluation: Callable[[dict], None] | None = None,
    fingerprint: str = "",
) -> SearchState:
    """Run (or resume) an evolutionary or random search; returns the final state.

    Args:
        strategy: ``evolution`` or ``random``.
        space: the search space's name.
        cfg: a `detnas.plan.config.SearchConfig` (population, topk, generations, mutations,
            crossovers, mutation_prob, max_flops, flops_input_size, max_params, max_latency),
            checked as the config loader checks it (`detnas.plan.config.check_search`).
        evaluate: an `Evaluator` (`serial` (fitness) or a worker pool); higher fitness is better.
        rng: a seeded ``random.Random``; a resumed search continues from the saved RNG state.
        state_path: JSON file of the resumable state; an existing one is resumed.
        latency: a `detnas.plan.latency.LatencyTable` of ``space``: every candidate's predicted
            latency goes into the history, and ``cfg.max_latency`` (needs it) limits it.
        on_generation: called with ``{"generation", "best", "mean", "evaluations"}`` after each
            generation (also for those finished before a resume).
        on_evaluation: called with each new history row.
        fingerprint: what the search is made from (`detnas.provenance.fingerprint`: config and
            inputs); a state file made from another (or with other settings, seed or strategy)
            is set aside and the search starts fresh (a previous search's outputs stay until
            the new search's replace them).

    Raises:
        ValueError: a latency limit without a table or below its fastest network
            (`check_settings`), or a corrupt state file.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r} ({', '.join(STRATEGIES)})")
    check_settings(cfg, space, latency=latency)
    limits = search_limits(cfg, space, latency)
    state = _load_or_start(SearchState(strategy, space, _settings(cfg, latency), _fingerprint(rng),
                                       fingerprint=fingerprint), state_path)
    if state.rng:
        rng.setstate(_restore_rng(state.rng).getstate())
    for stats in state.generations:
        if on_generation:
            on_generation(stats)
    with stop.honoured():
        while not state.done:
            if state.pending is None:
                _start_generation(state, cfg, rng, limits, state_path)
            _evaluate_pending(state, evaluate, limits, state_path, on_evaluation)
            stats = _end_generation(state, state_path)
            if on_generation:
                on_generation(stats)
    return state


def _save(state: SearchState, state_path: str | Path | None) -> None:
    if state_path:
        save_json(state_path, state.to_json())


def _start_generation(state: SearchState, cfg, rng: random.Random, limits: Limits,
                      state_path: str | Path | None) -> None:
    """Draw the next generation's candidates into ``state.pending``, with the RNG state after
    them, and save the state (a resume evaluates the same candidates)."""
    archs = _propose(state, state.space, rng, limits, cfg.mutation_prob, cfg.mutations,
                     cfg.crossovers, cfg.population, cfg.topk,
                     getattr(cfg, "operator_tries", "all"))
    state.pending = [str(a) for a in archs]
    state.rng = list(rng.getstate())
    _save(state, state_path)


def _evaluate_pending(state: SearchState, evaluate: Evaluator, limits: Limits,
                      state_path: str | Path | None,
                      on_evaluation: Callable[[dict], None] | None) -> None:
    """Evaluate the candidates of ``state.pending`` not in its history yet, each added to the
    history (in its order among the generation's candidates, where a resume leaves gaps) and
    saved as it comes.

    Raises:
        detnas.run.stop.Stopped: a stop signal, after the evaluation it came in is saved.
    """
    memo = state.memo()
    todo = [a for a in state.pending if a not in memo]
    first = len(state.history) - (len(state.pending) - len(todo))
    orders = {a: first + i for i, a in enumerate(state.pending)}
    if todo:
        log.info("%s generation %d: evaluating %d candidates", state.strategy, state.generation,
                 len(todo))
    start = time.perf_counter()
    for index, fitness in evaluate([Arch.parse(a, state.space) for a in todo]):
        arch = todo[index]
        row = {"generation": state.generation, "order": orders[arch], "arch": arch,
               "fitness": float(fitness), **limits.of(Arch.parse(arch, state.space))}
        state.history.append(row)
        state.elapsed_s += time.perf_counter() - start
        start = time.perf_counter()
        _save(state, state_path)
        if on_evaluation:
            on_evaluation(row)
        halt = stop.requested()  # the state holds this evaluation: end here
        if halt:
            raise stop.Stopped(halt, f"after {len(state.history)} evaluations "
                                     f"({state_path or 'no state file'} saved)")


def _end_generation(state: SearchState, state_path: str | Path | None) -> dict:
    """Close the generation whose candidates are all evaluated: its history in order, its
    statistics recorded (and returned), the state saved."""
    state.history.sort(key=lambda r: r["order"])
    stats = _generation_stats(state)
    state.generations.append(stats)
    state.generation += 1
    state.pending = None
    _save(state, state_path)
    log.info("%s generation %d: best %.4f mean %.4f", state.strategy, stats["generation"],
             stats["best"], stats["mean"])
    return stats


def _generation_stats(state: SearchState) -> dict:
    rows = [r for r in state.history if r["generation"] == state.generation]
    values = [r["fitness"] for r in rows]
    best = top_k(state.history, 1)
    return {"generation": state.generation,
            "best": best[0]["fitness"] if best else math.nan,
            "mean": sum(values) / len(values) if values else math.nan,
            "evaluations": len(state.history)}


def _load_or_start(fresh: SearchState, state_path: str | Path | None) -> SearchState:
    """The saved state at ``state_path`` when it is the same search as ``fresh`` (strategy,
    space, settings, seed and fingerprint); else ``fresh``, the other state set aside."""
    if not state_path or not Path(state_path).exists():
        return fresh
    state = SearchState.from_json(load_json(state_path), state_path)
    keys = ("strategy", "space", "settings", "rng_origin", "fingerprint")
    if any(getattr(fresh, key) != getattr(state, key) for key in keys):
        set_aside(state_path, state.fingerprint or _state_digest(state), fresh.fingerprint
                  or _state_digest(fresh))
        return fresh
    log.info("resuming %s search from %s: generation %d, %d evaluations", state.strategy,
             state_path, state.generation, len(state.history))
    return state


def _state_digest(state: SearchState) -> str:
    """A search's identity without a fingerprint (strategy, space, settings, seed)."""
    text = repr((state.strategy, state.space, sorted(state.settings.items()), state.rng_origin))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
