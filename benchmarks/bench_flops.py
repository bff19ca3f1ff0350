"""FLOPs filter speed: candidates per second of the exact table cost on random architectures.

Target: >= 10,000 candidates/s (the search filters thousands of candidates per generation).
Run: ``python benchmarks/bench_flops.py``.
"""

import random
import time

from detnas.plan.flops import cost_table
from detnas.plan.space import sample

TARGET = 10_000


def rate(space: str, n: int = 20_000, seed: int = 0) -> float:
    rng = random.Random(seed)
    archs = [sample(space, rng) for _ in range(n)]
    cost = cost_table(space).backbone_flops
    cost(archs[0])  # build the table outside the timing
    start = time.perf_counter()
    for arch in archs:
        cost(arch)
    return n / (time.perf_counter() - start)


def main() -> None:
    for space in ("300M", "1.3G"):
        r = rate(space)
        print(f"{space:5} {r:12,.0f} candidates/s  (target >= {TARGET:,}: "
              f"{'ok' if r >= TARGET else 'MISSED'}, x{r / TARGET:.1f})")


if __name__ == "__main__":
    main()
