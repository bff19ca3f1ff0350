import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_fakes import make_noisy, make_worker_index, noisy_fitness, small_config

from detnas.io import load_json
from detnas.plan.space import sample
from detnas.search.evolution import evaluation_budget, run_search, serial
from detnas.search.parallel import WorkerPool

TESTS = Path(__file__).parent

SCRIPT = """
import random, sys
from search_fakes import Slow, small_config
from detnas.search.evolution import run_search, serial
state, calls = sys.argv[1], sys.argv[2]
run_search("evolution", "tiny", small_config(), serial(Slow(calls, 0.05)), random.Random(7), state)
"""


def _spawn(tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "state.json"),
                             str(tmp_path / "calls.txt")], env=env)


@pytest.mark.slow
def test_sigkill_and_restart_loses_at_most_the_candidate_in_flight(tmp_path):
    reference = run_search("evolution", "tiny", small_config(), serial(noisy_fitness),
                           random.Random(7))
    proc = _spawn(tmp_path)
    state = tmp_path / "state.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill in the middle of generation 1
        if state.exists() and len(load_json(state)["history"]) >= 11:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = len(load_json(state)["history"])
    assert 11 <= killed_at < evaluation_budget(small_config())
    assert _spawn(tmp_path).wait(timeout=120) == 0
    final = load_json(state)
    assert final["history"] == reference.history
    assert final["generations"] == reference.generations
    calls = (tmp_path / "calls.txt").read_text().split()
    assert len(calls) - len(set(calls)) <= 1  # only the candidate in flight ran twice
    assert set(calls) == {r["arch"] for r in reference.history}


@pytest.mark.slow
def test_two_workers_give_the_same_search_as_one(tmp_path):
    cfg = small_config(generations=3)
    reference = run_search("evolution", "tiny", cfg, serial(noisy_fitness), random.Random(1))
    with WorkerPool(make_noisy, 2) as pool:
        state = run_search("evolution", "tiny", cfg, pool, random.Random(1), tmp_path / "s.json")
    assert state.history == reference.history
    assert state.generations == reference.generations
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(make_noisy, 0)


@pytest.mark.slow
def test_each_worker_has_its_own_index():
    """Worker i of a pool knows i (the search pins it to cuda:i)."""
    archs = [sample("tiny", random.Random(i)) for i in range(6)]
    with WorkerPool(make_worker_index, 3) as pool:
        seen = {fitness for _, fitness in pool(archs)}
    assert seen == {0.0, 1.0, 2.0}
