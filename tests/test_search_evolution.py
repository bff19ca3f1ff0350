import itertools
import json
import random

import pytest
from search_fakes import TARGET, hamming_fitness, noisy_fitness, small_config

from detnas.plan import config
from detnas.plan.flops import cost_table
from detnas.plan.space import Arch
from detnas.search.evolution import (
    evaluation_budget,
    pareto_front,
    pareto_top_k,
    run_search,
    serial,
    top_k,
)


class Counting:
    def __init__(self, fitness, limit=None, fail_after=None):
        self.fitness, self.limit, self.fail_after = fitness, limit, fail_after
        self.calls = []

    def __call__(self, arch):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt
        if self.limit is not None:
            assert cost_table(arch.space).backbone_flops(arch) <= self.limit, "infeasible evaluated"
        self.calls.append(str(arch))
        return self.fitness(arch)


def _run(strategy="evolution", cfg=None, seed=0, fitness=noisy_fitness, state=None, space="tiny"):
    return run_search(strategy, space, cfg or small_config(), serial(fitness), random.Random(seed),
                      state)


def test_budget_no_duplicates_and_flops_limit_before_evaluation():
    table = cost_table("tiny")
    limit = sorted(table.backbone_flops(Arch("tiny", c))
                   for c in itertools.islice(itertools.product(range(4), repeat=10), 0, None, 97)
                   )[5000]  # about the median of the space
    cfg = small_config(max_flops=float(limit))
    fitness = Counting(noisy_fitness, limit)
    for strategy in ("evolution", "random"):
        fitness.calls.clear()
        state = _run(strategy, cfg, fitness=fitness)
        assert len(fitness.calls) == len(set(fitness.calls)) == evaluation_budget(cfg) == 32
        assert [r["order"] for r in state.history] == list(range(32))
        assert [r["generation"] for r in state.history] == [g for g in range(4) for _ in range(8)]
        assert all(r["backbone_flops"] <= limit for r in state.history)
        assert [g["evaluations"] for g in state.generations] == [8, 16, 24, 32]
        best = [g["best"] for g in state.generations]
        assert best == sorted(best)
        assert best[-1] == max(noisy_fitness(_arch(a)) for a in fitness.calls)


def _arch(text):
    return Arch.parse(text, "tiny")


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = _run(seed=1), _run(seed=1), _run(seed=2)
    assert a.history == b.history
    assert [r["arch"] for r in a.history] != [r["arch"] for r in c.history]


def test_mutants_come_from_the_top_k():
    cfg = small_config(population=10, topk=1, generations=2, mutations=10, crossovers=0,
                       mutation_prob=0.1)
    state = _run(cfg=cfg)
    (parent,) = top_k([r for r in state.history if r["generation"] == 0], 1)
    children = [_arch(r["arch"]) for r in state.history if r["generation"] == 1]
    distances = [sum(x != y for x, y in zip(_arch(parent["arch"]).choices, ch.choices, strict=True))
                 for ch in children]
    assert sum(d <= 3 for d in distances) >= 8, distances  # mutants, not random (d ~ 7.5)


def test_evolution_beats_random_search_on_a_smooth_landscape():
    cfg = small_config(population=20, topk=5, generations=8, mutations=8, crossovers=8)
    best = {s: max(r["fitness"] for r in _run(s, cfg, seed=3, fitness=hamming_fitness).history)
            for s in ("evolution", "random")}
    assert best["evolution"] >= best["random"] + 2, best
    assert best["evolution"] <= len(TARGET)


def test_the_cost_floor_is_the_exact_minimum_and_a_limit_at_it_finds_it():
    """The floors the config checks the limits against (tests/test_config_checks.py: a limit
    below them is refused when the config is loaded) are the cheapest networks' costs."""
    table = cost_table("test")
    archs = [Arch("test", c) for c in itertools.product(range(4), repeat=6)]
    floor = table.floor()
    assert floor.flops == min(table.backbone_flops(a) for a in archs)
    assert floor.params == min(table.backbone_params(a) for a in archs)
    assert table.flops_range() == (floor.flops, max(table.backbone_flops(a) for a in archs))
    state = _run(cfg=small_config(max_flops=float(floor.flops), population=1, topk=1, mutations=0,
                                  crossovers=0, generations=1), space="test")
    assert table.backbone_flops(_arch_test(state.history[0]["arch"])) == floor.flops


def test_params_limit_filters_every_candidate():
    table = cost_table("test")
    sizes = sorted(table.backbone_params(Arch("test", c))
                   for c in itertools.product(range(4), repeat=6))
    assert all(table.backbone(Arch("test", (c,) * 6)).params == table.backbone_params(
        Arch("test", (c,) * 6)) for c in range(4))
    limit = float(sizes[len(sizes) // 4])  # a quarter of the space is feasible
    state = _run(cfg=small_config(max_params=limit), space="test")
    assert state.history and all(r["backbone_params"] <= limit for r in state.history)
    assert all(r["backbone_params"] == table.backbone_params(_arch_test(r["arch"]))
               for r in state.history)
    assert state.settings["max_params"] == limit


def test_a_latency_limit_needs_a_table():
    with pytest.raises(ValueError, match=r"search.max_latency: 5 ms needs a latency table"):
        _run(cfg=small_config(max_latency=5.0))


def test_pareto_front_and_parents():
    rows = [{"order": i, "c": c, "fitness": f} for i, (c, f) in enumerate(
        [(5, 0.5), (3, 0.4), (3, 0.2), (1, 0.1), (4, 0.6), (2, float("nan")), (6, 0.6)])]
    front = pareto_front(rows, "c")
    assert [r["order"] for r in front] == [3, 1, 4]  # (1, .1) (3, .4) (4, .6)
    # the first front, then the front of the rest: (3, .2) (5, .5) (6, .6); of it the fittest
    assert [r["order"] for r in pareto_top_k(rows, 5, "c")] == [4, 1, 3, 6, 0]
    assert [r["order"] for r in pareto_top_k(rows, 7, "c")][-1] == 5  # NaN last
    assert [r["order"] for r in pareto_top_k(rows, 2, "c")] == [4, 1]


def test_pareto_search_keeps_the_front():
    fitness = Counting(noisy_fitness)
    state = _run(cfg=small_config(objective="pareto"), fitness=fitness)
    assert state.settings["objective"] == "pareto"
    assert state.settings["pareto_cost"] == "backbone_flops"
    assert len(fitness.calls) == len(set(fitness.calls)) == evaluation_budget(small_config())
    front = pareto_front(state.history, "backbone_flops")
    def dominates(a, b):
        return a["backbone_flops"] <= b["backbone_flops"] and a["fitness"] > b["fitness"]

    assert not any(dominates(r, f) for r in state.history for f in front)
    assert all(any(dominates(f, r) or f["backbone_flops"] <= r["backbone_flops"] and
                   f["fitness"] == r["fitness"] for f in front)
               for r in state.history if r not in front)
    assert top_k(state.history, 1)[0] in front  # the fittest is on it
    assert front[0]["backbone_flops"] == min(r["backbone_flops"] for r in state.history)
    plain = _run(cfg=small_config())
    assert [r["arch"] for r in plain.history] != [r["arch"] for r in state.history]


def _arch_test(text):
    return Arch.parse(text, "test")


@pytest.mark.parametrize("field,value,match", [
    ("topk", 9, "topk: 9 exceeds population"), ("mutations", 6, "mutations: 6 \\+ crossovers 3"),
    ("mutation_prob", 1.5, "mutation_prob: 1.5"), ("population", 0, "population: 0"),
    ("max_flops", -1.0, "max_flops: -1.0"), ("max_params", -1.0, "max_params: -1.0"),
    ("max_latency", -1.0, "max_latency: -1.0"), ("objective", "best", "objective: 'best'"),
])
def test_bad_settings_are_the_configs_to_refuse(field, value, match):
    """The search runs the settings of a loaded config: `detnas.plan.config` refuses bad ones, by
    their
    types' choices and bounds and by `check_search`, before any stage runs."""
    small = {"population": 8, "topk": 3, "mutations": 3, "crossovers": 3}
    with pytest.raises(ValueError, match=f"^--set search.{field}={value}: search.{match}"):
        config.load(None, [f"search.{k}={v}" for k, v in {**small, field: value}.items()])


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path, strategy):
    reference = _run(strategy)
    path = tmp_path / "state.json"
    first = Counting(noisy_fitness, fail_after=13)  # dies inside generation 1
    with pytest.raises(KeyboardInterrupt):
        _run(strategy, fitness=first, state=path)
    second = Counting(noisy_fitness)
    resumed = _run(strategy, fitness=second, state=path)
    assert resumed.history == reference.history
    assert resumed.generations == reference.generations
    assert len(first.calls) + len(second.calls) == evaluation_budget(small_config())
    assert not set(first.calls) & set(second.calls)
    third = Counting(noisy_fitness)
    assert _run(strategy, fitness=third, state=path).history == reference.history
    assert third.calls == []  # a finished search is not run again


def test_a_state_of_other_settings_seed_strategy_or_fingerprint_is_set_aside(tmp_path, caplog):
    path = tmp_path / "state.json"
    (tmp_path / "arch.json").write_text("{}")  # an output of a previous search
    _run(state=path)
    (tmp_path / "arch.json").write_text("{}")
    _run(state=path)
    assert (tmp_path / "arch.json").exists()  # a resumed (finished) search keeps its outputs
    for other in ({"cfg": small_config(population=9)}, {"seed": 5}, {"strategy": "random"}):
        before = json.loads(path.read_text())
        with caplog.at_level("WARNING"):
            state = _run(**other, state=path)
        assert "set aside" in caplog.text and "starting fresh" in caplog.text
        assert [p for p in tmp_path.glob("state.json.stale-*")
                if json.loads(p.read_text()) == before]
        assert len(state.history) == len(json.loads(path.read_text())["history"])
        assert state.history != before["history"]
        assert (tmp_path / "arch.json").exists()  # kept until the new search's replaces it
        caplog.clear()
    made = run_search("evolution", "tiny", small_config(), serial(noisy_fitness),
                      random.Random(0), path, fingerprint="a")
    again = run_search("evolution", "tiny", small_config(), serial(noisy_fitness),
                       random.Random(0), path, fingerprint="b")  # e.g. another supernet
    assert (tmp_path / "state.json.stale-a").exists() and again.fingerprint == "b"
    assert again.history == made.history  # the same fake fitness: the same search, run again


@pytest.mark.parametrize("damage", [
    lambda s: s[: len(s) // 2],  # truncated JSON
    lambda s: "[1, 2]",
    lambda s: json.dumps({k: v for k, v in json.loads(s).items() if k != "rng"}),
    lambda s: json.dumps({**json.loads(s), "rng": [3, [1, 2], None]}),
    lambda s: json.dumps({**json.loads(s), "history": [{"arch": "99-99-9999-99"}]}),
])
def test_corrupt_state_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "state.json"
    _run(state=path)
    path.write_text(damage(path.read_text()))
    fitness = Counting(noisy_fitness)
    with pytest.raises(ValueError, match=r"state.json: (not valid JSON|.*search state)"):
        _run(fitness=fitness, state=path)
    assert fitness.calls == []
