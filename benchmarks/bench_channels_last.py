"""A training step with the model in channels_last against contiguous (NCHW), side by side in one
run (interleaved rounds, median), on the embedded default's networks (ShuffleNetV2 of the tiny
space, one thread): the classifier at its retraining batch and image size, each detector at its
batch. The engine trains in channels_last on every device (`detnas.run.engine.train`). Prints, per
workload, the time of a step in each layout and the ratio channels_last / contiguous (below 1:
channels_last is faster).

    python benchmarks/bench_channels_last.py [--device cpu] [--rounds 5] [--iters 5]
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from bench_roi_pool import _batch, default_detector  # benchmarks/ is the script's path
from bench_train_step import _time

from detnas.nets.models import build_model
from detnas.run.engine import make_optimizer

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _step(model, tcfg, loss_of):
    opt = make_optimizer(model, tcfg)

    def step():
        loss = loss_of(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    return step


def main() -> None:
    args, device, cfg, spec = default_detector(__doc__)
    cls = cfg.classification
    tcfg = cfg.retrain_pretrain
    print(f"device {device}, torch {torch.__version__}, 1 thread")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(tcfg.batch_size, 3, cls.image_size, cls.image_size, generator=g).to(device)
    y = torch.randint(0, cls.num_classes, (tcfg.batch_size,), generator=g).to(device)
    workloads = {f"classifier {tcfg.batch_size} x {cls.image_size} px": {}}
    for name, fmt in LAYOUTS.items():
        torch.manual_seed(0)
        model = build_model("classification", spec, cls.num_classes).to(device, memory_format=fmt)
        xf = x.contiguous(memory_format=fmt)
        workloads[next(iter(workloads))][name] = _step(
            model.train(), tcfg, lambda m, xf=xf: F.cross_entropy(m(xf), y))
    for detector in cfg.detectors:
        dcfg = cfg.retrain_finetune.for_detector(detector)
        images, targets = _batch(device, cfg.detector.min_size, dcfg.batch_size)
        key = f"{detector} {dcfg.batch_size} x {cfg.detector.min_size} px"
        workloads[key] = {}
        for name, fmt in LAYOUTS.items():
            torch.manual_seed(0)
            model = build_model("detection", spec, 3, detector, cfg.detector)
            workloads[key][name] = _step(model.to(device, memory_format=fmt).train(), dcfg,
                                         lambda m, images=images, targets=targets:
                                         sum(m(images, targets).values()))
    for key, steps in workloads.items():
        times = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                times[name].append(_time(step, device, args.iters))
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"{key:26} contiguous {med['contiguous'] * 1e3:7.1f} ms  channels_last "
              f"{med['channels_last'] * 1e3:7.1f} ms  ratio "
              f"{med['channels_last'] / med['contiguous']:.2f}")


if __name__ == "__main__":
    main()
