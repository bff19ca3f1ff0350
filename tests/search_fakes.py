"""Fake fitness functions shared by the search tests (importable by workers and subprocesses)."""

import hashlib
import time

from detnas.plan.config import SearchConfig
from detnas.plan.space import Arch

TARGET = (3, 1, 2, 0, 3, 3, 1, 2, 0, 3)  # the optimum of `hamming_fitness` in the tiny space


def noisy_fitness(arch: Arch) -> float:
    """A deterministic fitness with a per-candidate hash term (many distinct values)."""
    noise = int(hashlib.sha256(str(arch).encode()).hexdigest()[:8], 16) / 16**8
    return sum(c * (i % 3 + 1) for i, c in enumerate(arch.choices)) + noise


def hamming_fitness(arch: Arch) -> float:
    """Blocks matching `TARGET` (a smooth landscape that evolution climbs faster than chance)."""
    return float(sum(a == b for a, b in zip(arch.choices, TARGET, strict=True)))


def make_noisy():
    """A fitness factory for `detnas.search.parallel.WorkerPool` (picklable: module-level)."""
    return noisy_fitness


class Slow:
    """``noisy_fitness`` that sleeps and logs every call to a file (one line per call)."""

    def __init__(self, log_path: str, delay: float):
        self.log_path, self.delay = log_path, delay

    def __call__(self, arch: Arch) -> float:
        with open(self.log_path, "a") as f:
            f.write(f"{arch}\n")
        time.sleep(self.delay)
        return noisy_fitness(arch)


def small_config(**changes) -> SearchConfig:
    values = dict(population=8, topk=3, generations=4, mutations=3, crossovers=3,
                  mutation_prob=0.2, max_flops=0.0, flops_input_size=224)
    return SearchConfig(**{**values, **changes})


def _worker_index_fitness(arch: Arch) -> float:
    from detnas.search.parallel import worker_index

    time.sleep(0.3)  # long enough for every worker to take a candidate
    return float(worker_index())


def make_worker_index():
    """A fitness factory whose fitness is the index of the worker that evaluates."""
    return _worker_index_fitness
