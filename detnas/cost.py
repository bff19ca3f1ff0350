"""The cost ledger: what one stage cost in wall time, GPU-hours, CPU time and peak memory.

Every stage opens its tracker with `detnas.run.tracking.start`, which starts a `Meter`; when the
stage writes its ``metrics.json`` it adds ``"cost": tracker.cost()`` (the `Meter.read` record, also
logged as ``cost.*`` MLflow metrics). The report sums the records per row of the study
(`detnas.report.ledger`).

- ``wall_s``: from the start of the stage's tracked run (inputs loaded, model built) to the
  writing of its ``metrics.json``.
- ``gpus``: the GPUs the stage's process model holds (`detnas.run.launch`): the torchrun world size
  for training and NATS, the evaluation workers (at most the visible GPUs) for a search; 0 on the
  CPU. ``gpu_hours`` = ``gpus`` x wall time.
- ``cpu_s``: user + system CPU time of this process and of its children that ended (data-loader
  and search workers), since the meter started.
- ``peak_rss_mb``: the peak resident memory of this process or of its largest ended child (the
  kernel's ``ru_maxrss``: over the process's life, which is the stage's in the CLI).
- ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` of this process (rank 0; the search's
  in-process evaluation); ``None`` where the GPUs are used by other processes only (a search with
  several workers) or not at all.

Rank 0 measures for its stage; a stage resumed after a kill counts the last process only.
"""

from __future__ import annotations

import resource
import sys
import time

LEDGER_TAGS = ("stage", "ablation", "dataset", "detector", "arch")
"""The tags a cost record carries, so that the report can place it without knowing paths."""


def _cpu_seconds() -> float:
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _peak_rss_mb() -> float:
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def _cuda_peak_mb() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


class Meter:
    """Started with a stage; `read` gives its cost so far."""

    def __init__(self, gpus: int = 0, tags: dict | None = None):
        if gpus < 0:
            raise ValueError(f"gpus: {gpus} (>= 0)")
        self.gpus = gpus
        self.tags = {k: str(tags[k]) for k in LEDGER_TAGS if tags and tags.get(k) is not None}
        self._wall0, self._cpu0 = time.perf_counter(), _cpu_seconds()

    def read(self) -> dict:
        """``{"wall_s", "gpus", "gpu_hours", "cpu_s", "peak_rss_mb", "cuda_peak_mb", **tags}``."""
        wall = time.perf_counter() - self._wall0
        return {"wall_s": wall, "gpus": self.gpus, "gpu_hours": self.gpus * wall / 3600,
                "cpu_s": _cpu_seconds() - self._cpu0, "peak_rss_mb": _peak_rss_mb(),
                "cuda_peak_mb": _cuda_peak_mb(), **self.tags}


def numbers(record: dict) -> dict[str, float]:
    """The measured fields of a cost record (for MLflow metrics)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
