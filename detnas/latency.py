"""Latency of architectures on the user's device, from a measured per-block table.

The twin of `detnas.plan.flops`: the table holds the latency of the fixed part of the backbone (the
first conv) and of every (block, choice) of a space; the predicted latency of an arch is the sum
of its entries. Each entry is timed in context, between the neighbouring modules of whole
forwards of the supernet's paths (`measure_table`), in inference mode: the median of ``repeats``
runs after ``warmup`` untimed forwards, CUDA events on a GPU (no synchronisation between
modules), the wall clock (or the thread's CPU time) on a CPU. Timing each module alone, over and
over on the same input, predicted whole backbones 26% too fast on the CPU here: a block in a
network finds caches its neighbours left. The table records where and how it was measured
(device name, torch version, threads, batch size, input size, clock).

Reading a table and predicting is pure Python (`detnas.plan.latency`); measuring imports torch.
"""

from __future__ import annotations

import random
import statistics
import time

from detnas.plan.latency import LatencyTable, Measurement
from detnas.plan.space import CHOICES, Arch, get_space
from detnas.provenance import cpu_model


def measurement(cfg) -> Measurement:
    """The measurement of study config ``cfg`` (its ``latency`` section; device auto: the
    study's device)."""
    c = cfg.latency
    device = c.device
    if device == "auto":
        from detnas.run.engine import resolve_device

        device = resolve_device(cfg.device).type
    return Measurement(device, c.batch_size, c.input_size, c.threads, c.warmup, c.repeats,
                       c.clock)


# Measuring (torch)


def device_name(device) -> str:
    """The GPU's name, or the CPU's model name."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def _clock(device, clock: str):
    """``(mark, spans)``: ``mark()`` stamps a point of a forward, ``spans(marks)`` gives the ms
    between consecutive stamps: CUDA events on a GPU (timed on the stream, no synchronisation
    between modules), else the wall clock, or with ``clock="cpu"`` this thread's CPU time."""
    import torch

    if device.type == "cuda":
        def mark():
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event

        def spans(marks: list) -> list[float]:
            marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]  # noqa: B905
        return mark, spans
    mark = time.thread_time if clock == "cpu" else time.perf_counter
    return mark, lambda marks: [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]  # noqa: B905


class _Threads:
    """Set torch's CPU threads for a measurement, restore them after."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self) -> int:
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return torch.get_num_threads()

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_num_threads(self.previous)


def measure_table(space: str, how: Measurement, seed: int = 0) -> LatencyTable:
    """Measure the latency table of ``space`` on ``how.device``.

    Every entry is timed in context, inside whole forwards of the supernet's paths (so a block
    sees the caches its neighbours leave, as in a real network): ``4 * repeats`` forwards in
    which each block runs each choice ``repeats`` times, in a seeded random order; a block's
    entry is the median of its ``repeats`` times, the first conv's the median of all.
    """
    import torch

    from detnas.nets.supernet import Supernet

    sp, device = get_space(space), torch.device(how.device)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    schedule = []  # [block][forward]: the choice each block runs in each timed forward
    for _ in range(sp.num_blocks):
        order = list(range(len(CHOICES))) * how.repeats
        rng.shuffle(order)
        schedule.append(order)
    mark, spans = _clock(device, how.clock)
    stem: list[float] = []
    times: list[list[list[float]]] = [[[] for _ in CHOICES] for _ in range(sp.num_blocks)]
    with _Threads(how.threads) as threads, torch.inference_mode():
        net = Supernet(space).to(device).eval()
        x = torch.randn(how.batch_size, 3, how.input_size, how.input_size, device=device)
        for r in range(-how.warmup, len(CHOICES) * how.repeats):
            choices = [(r + i) % len(CHOICES) if r < 0 else order[r]
                       for i, order in enumerate(schedule)]
            marks = [mark()]
            h = net.stem(x)
            marks.append(mark())
            for i, c in enumerate(choices):
                h = net.blocks[i][c](h)
                marks.append(mark())
            if r >= 0:
                first, *blocks = spans(marks)
                stem.append(first)
                for i, (c, ms) in enumerate(zip(choices, blocks, strict=True)):
                    times[i][c].append(ms)
    rows = tuple(tuple(statistics.median(t) for t in row) for row in times)
    return LatencyTable(space, statistics.median(stem), rows, how, device_name(device),
                        torch.__version__, threads)


def measure_backbone(arch: Arch, how: Measurement) -> float:
    """Measured latency in ms of the whole standalone backbone of ``arch``: the median of
    ``how.repeats`` forwards after ``how.warmup``, with the table's clock."""
    import torch

    from detnas.nets.supernet import Backbone

    device = torch.device(how.device)
    torch.manual_seed(0)
    mark, spans = _clock(device, how.clock)
    times = []
    with _Threads(how.threads), torch.inference_mode():
        net = Backbone(arch).to(device).eval()
        x = torch.randn(how.batch_size, 3, how.input_size, how.input_size, device=device)
        for r in range(-how.warmup, how.repeats):
            start = mark()
            net(x)
            if r >= 0:
                times.extend(spans([start, mark()]))
    return statistics.median(times)


def check_winners(table: LatencyTable, archs: list[Arch]) -> list[dict]:
    """Predicted vs measured latency of ``archs`` with the table's own measurement settings.

    Returns one ``{"arch", "predicted_ms", "measured_ms", "error"}`` per arch (error: relative,
    (predicted - measured) / measured); empty when the table's device type is not here.
    """
    import torch

    how = table.measurement
    if torch.device(how.device).type == "cuda" and not torch.cuda.is_available():
        return []
    rows = []
    for arch in archs:
        predicted, measured = table.predict(arch), measure_backbone(arch, how)
        rows.append({"arch": str(arch), "predicted_ms": predicted, "measured_ms": measured,
                     "error": (predicted - measured) / measured})
    return rows
