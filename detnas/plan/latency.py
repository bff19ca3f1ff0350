"""The latency table: the latency of the first conv and of every (block, choice) of a space,
measured on the user's device (`detnas.latency.measure_table`), and the latency it predicts for
an architecture: the sum of its entries. The twin of `detnas.plan.flops`, pure Python: reading a
table and predicting import no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from detnas.io import load_json, save_json
from detnas.plan.space import CHOICES, Arch, get_space

TABLE_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """How a table (or one network's latency) is measured."""

    device: str = "cpu"  # cpu | cuda | cuda:N
    batch_size: int = 1
    input_size: int = 224
    threads: int = 1  # torch CPU threads
    warmup: int = 10  # untimed forwards first
    repeats: int = 50  # timed runs of each module; the table holds their median
    clock: str = "wall"  # wall | cpu: this thread's CPU time (CPU, 1 thread), which other jobs
    # sharing the machine do not inflate by preempting the measurement


@dataclass(frozen=True)
class LatencyTable:
    """Median latencies in milliseconds of the first conv and of every (block, choice)."""

    space: str
    stem_ms: float
    blocks_ms: tuple[tuple[float, ...], ...]  # [block][choice]
    measurement: Measurement
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3", or the CPU's model name
    torch: str  # torch version
    threads: int  # torch.get_num_threads() while measuring

    def predict(self, arch: Arch) -> float:
        """Predicted backbone latency of ``arch`` in ms (first conv + its blocks)."""
        return self.stem_ms + sum(row[c] for row, c in zip(self.blocks_ms, arch.choices))  # noqa: B905

    def floor(self) -> float:
        """Predicted latency of the fastest arch of the space (the fastest choice per block)."""
        return self.stem_ms + sum(min(row) for row in self.blocks_ms)

    def to_json(self) -> dict:
        return {"version": TABLE_VERSION, "space": self.space, "unit": "ms",
                "statistic": "median", "stem_ms": self.stem_ms,
                "blocks_ms": [list(row) for row in self.blocks_ms],
                "choices": list(CHOICES),
                "layout": [list(b) for b in get_space(self.space).block_layout()],
                "measurement": asdict(self.measurement), "device_name": self.device_name,
                "torch": self.torch, "threads": self.threads}


def load_table(path: str | Path, space: str) -> LatencyTable:
    """Read the latency table at ``path`` and check that it is one of ``space``.

    Raises:
        ValueError: naming the file and the field: missing or corrupt file, a table of another
            space (or of another block layout), a bad entry.
    """
    data = load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a latency table (expected a JSON object)")
    for key in ("version", "space", "stem_ms", "blocks_ms", "layout", "measurement",
                "device_name", "torch", "threads"):
        if key not in data:
            raise ValueError(f"{path}: not a latency table: field {key!r} is missing")
    if data["version"] != TABLE_VERSION:
        raise ValueError(f"{path}: version: {data['version']!r}, this code reads "
                         f"version {TABLE_VERSION}")
    if data["space"] != space:
        raise ValueError(f"{path}: space: the table is of space {data['space']!r}, the search "
                         f"is in space {space!r}; measure one with `detnas latency-table`")
    layout = [list(b) for b in get_space(space).block_layout()]
    if data["layout"] != layout:
        raise ValueError(f"{path}: layout: {data['layout']!r} is not the block layout of space "
                         f"{space} ({layout!r})")
    rows = data["blocks_ms"]
    if not isinstance(rows, list) or len(rows) != len(layout):
        raise ValueError(f"{path}: blocks_ms: expected {len(layout)} rows of {len(CHOICES)} "
                         f"latencies, got {rows!r}")
    for i, row in enumerate([[data["stem_ms"]], *rows]):
        where = "stem_ms" if i == 0 else f"blocks_ms[{i - 1}]"
        if i and (not isinstance(row, list) or len(row) != len(CHOICES)):
            raise ValueError(f"{path}: {where}: expected {len(CHOICES)} latencies, got {row!r}")
        for value in row:
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not (math.isfinite(value) and value > 0):
                raise ValueError(f"{path}: {where}: {value!r} is not a latency in ms (> 0)")
    try:
        measurement = Measurement(**data["measurement"])
    except TypeError as e:
        raise ValueError(f"{path}: measurement: {data['measurement']!r} ({e})") from None
    return LatencyTable(space, float(data["stem_ms"]),
                        tuple(tuple(float(v) for v in row) for row in rows), measurement,
                        str(data["device_name"]), str(data["torch"]), int(data["threads"]))


def save_table(path: str | Path, table: LatencyTable, **provenance: Any) -> Path:
    """Write ``table`` atomically as JSON, with ``provenance`` (commit, config, ...) beside it."""
    return save_json(path, {**table.to_json(), "provenance": provenance})
