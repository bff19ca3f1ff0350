"""Training-step time of the supernet on one path against the extracted standalone network.

Same architecture, same batch, same optimizer, measured side by side (interleaved rounds, median)
in one run; prints the ratio supernet / standalone for classification and detection.
Target: <= 1.05 for both.

    python benchmarks/bench_train_step.py [--space tiny] [--device cpu] [--rounds 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from detnas.nets.models import backbone_of, build_model
from detnas.plan.config import DetectorConfig, TrainConfig
from detnas.plan.space import sample
from detnas.run.engine import make_optimizer


def _step_fn(model, loss_fn, batch):
    """One step as `detnas.run.engine.train` takes it in one process."""
    opt = make_optimizer(model, TrainConfig(lr=1e-3))

    def step():
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step, device, iters) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def compare(task: str, space: str, device: torch.device, rounds: int, iters: int) -> float:
    torch.manual_seed(0)
    arch = sample(space, random.Random(0))
    if task == "classification":
        supernet = build_model("classification", {"kind": "supernet", "space": space}, 10)
        x = torch.randn(32, 3, 64, 64, device=device)
        y = torch.randint(0, 10, (32,), device=device)
        batch = (x, y)

        def loss_fn(m, b):
            return torch.nn.functional.cross_entropy(m(b[0]), b[1])

        standalone = supernet.extract(arch)
    else:
        cfg = DetectorConfig(min_size=128, max_size=128)
        supernet = build_model("detection", {"kind": "supernet", "space": space}, 4, "fpn", cfg)
        images = [torch.rand(3, 128, 128, device=device) for _ in range(4)]
        targets = [{"boxes": torch.tensor([[10.0, 10, 60, 70], [50, 40, 120, 100]],
                                          device=device),
                    "labels": torch.tensor([1, 3], device=device)} for _ in range(4)]
        batch = (images, targets)

        def loss_fn(m, b):
            return sum(m(b[0], b[1]).values())

        standalone = build_model("detection", {"kind": "shufflenet", "space": space,
                                               "arch": str(arch)}, 4, "fpn", cfg)
        standalone.load_state_dict(supernet.state_dict(), strict=False)
        backbone_of(standalone).load_state_dict(backbone_of(supernet).extract(arch).state_dict())
    supernet.to(device).train()
    standalone.to(device).train()
    backbone_of(supernet).set_path(arch)
    steps = {"supernet": _step_fn(supernet, loss_fn, batch),
             "standalone": _step_fn(standalone, loss_fn, batch)}
    for s in steps.values():  # warm-up
        s()
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, s in steps.items():
            times[k].append(_time(s, device, iters))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["supernet"] / med["standalone"]
    print(f"{task:14} supernet {med['supernet'] * 1e3:8.1f} ms  standalone "
          f"{med['standalone'] * 1e3:8.1f} ms  ratio {ratio:.3f}  (target <= 1.05)")
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"space {args.space}, device {device}, torch {torch.__version__}")
    for task in ("classification", "detection"):
        compare(task, args.space, device, args.rounds, args.iters)


if __name__ == "__main__":
    main()
