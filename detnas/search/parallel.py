"""Evaluate a generation's candidates in K worker processes, each with its own fitness (model copy).

Workers are started once (spawn: safe with torch and CUDA), each with its own index
0..K-1 (`worker_index`, e.g. worker i evaluates on ``cuda:i``), and each calls ``factory()`` once in
its initializer, e.g. ``functools.partial(detnas.search.stage.worker_fitness, spec)``, which loads
the supernet checkpoint. Results are yielded as they finish; the search gathers a whole generation
before drawing the next, so results do not depend on K.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from detnas.plan.space import Arch
from detnas.run import stop

log = logging.getLogger(__name__)

_fitness: Callable[[Arch], float] | None = None  # the worker process's fitness
_index = 0  # the worker process's index in its pool


def worker_index() -> int:
    """This process's index in its `WorkerPool` (0..K-1); 0 outside a pool."""
    return _index


def _init_worker(factory: Callable[[], Callable[[Arch], float]], indices) -> None:
    global _fitness, _index
    stop.shield()  # the search's process honours a stop signal and ends its workers
    _index = indices.get()
    _fitness = factory()


def _evaluate(arch: Arch) -> float:
    assert _fitness is not None, "worker not initialised"
    return _fitness(arch)


class WorkerPool:
    """An `detnas.search.evolution.Evaluator` backed by ``workers`` processes.

    Use as a context manager; ``pool(archs)`` yields ``(index, fitness)`` as workers finish.
    """

    def __init__(self, factory: Callable[[], Callable[[Arch], float]], workers: int):
        if workers < 1:
            raise ValueError(f"search.workers: must be >= 1, got {workers}")
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        indices = context.Queue()
        for i in range(workers):
            indices.put(i)
        self._executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(factory, indices),
        )

    def __call__(self, archs: Sequence[Arch]) -> Iterator[tuple[int, float]]:
        futures: dict[Future, int] = {self._executor.submit(_evaluate, a): i
                                      for i, a in enumerate(archs)}
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.get):
                    yield futures.pop(future), future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self, now: bool = False) -> None:
        """End the workers once their evaluations finish, or ``now`` (an error or a stop
        signal: the evaluations in flight are dropped; the search's state holds every finished
        one). The workers ignore the stop signals (`detnas.run.stop.shield`): they are killed."""
        if now:
            for process in list((getattr(self._executor, "_processes", None) or {}).values()):
                process.kill()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(now=exc_type is not None)
