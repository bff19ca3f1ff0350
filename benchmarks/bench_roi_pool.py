"""Faster R-CNN + FPN's training step with `detnas.nets.roi_pool.RoIPooler` against torchvision's
`MultiScaleRoIAlign`, side by side in one run (interleaved rounds, median), on the embedded
default's detector (ShuffleNetV2 of the tiny space, 96-px images, batch 4, 64 sampled RoIs per
image); also the pooler's forward + backward alone on the RoIs of one step. Prints the ratios
RoIPooler / torchvision (target: < 1 on CPU; on a GPU both run torchvision's kernels).

    python benchmarks/bench_roi_pool.py [--device cpu] [--rounds 5] [--iters 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_train_step import _time  # the same timer (benchmarks/ is the script's path)
from torchvision.ops import MultiScaleRoIAlign

from detnas.nets.models import build_model
from detnas.nets.roi_pool import RoIPooler
from detnas.plan import config
from detnas.run.engine import make_optimizer


def _batch(device, size: int, images: int = 4):
    g = torch.Generator().manual_seed(0)
    pixels = [torch.rand(3, size, size, generator=g).to(device) for _ in range(images)]
    targets = []
    for _ in range(images):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = torch.rand(3, 2, generator=g) * size * 0.4 + size / 6
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 4, (3,), generator=g).to(device)})
    return pixels, targets


def default_detector(doc: str):
    """A benchmark of the default's detector: its arguments (``--device``, ``--rounds``,
    ``--iters``), device, config (`config/config.yaml`, one thread) and ShuffleNetV2's spec."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()
    cfg = config.load("config/config.yaml")
    torch.set_num_threads(1)
    return args, torch.device(args.device), cfg, {"kind": "shufflenet", "space": cfg.space,
                                                  "arch": "00-00-0000-00"}


def main() -> None:
    args, device, cfg, spec = default_detector(__doc__)
    images, targets = _batch(device, cfg.detector.min_size)
    steps, poolers = {}, {}
    for name in ("RoIPooler", "torchvision"):
        torch.manual_seed(0)
        model = build_model("detection", spec, 3, "fpn", cfg.detector).to(device).train()
        if name == "torchvision":
            model.roi_heads.box_roi_pool = model.roi_heads.box_roi_pool.as_torchvision()
        poolers[name] = model.roi_heads.box_roi_pool
        opt = make_optimizer(model, cfg.retrain_finetune)

        def step(model=model, opt=opt):
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
        step()  # warm-up; sets the pooler's scales
    # the pooler alone, on one step's RoIs (4 x 64 sampled boxes over the P2..P5 maps)
    g = torch.Generator().manual_seed(1)
    size = cfg.detector.min_size
    feats = {k: torch.randn(4, cfg.detector.fpn_channels, size // s, size // s, generator=g)
             .to(device).requires_grad_() for k, s in zip("0123", (4, 8, 16, 32), strict=True)}
    boxes = []
    for _ in range(4):
        xy = torch.rand(64, 2, generator=g) * size * 0.8
        boxes.append((torch.cat([xy, xy + torch.rand(64, 2, generator=g) * size / 2 + 2], 1))
                     .to(device))
    shapes = [(size, size)] * 4
    pool = {}
    for name, pooler in poolers.items():
        def pool_step(pooler=pooler):
            pooler(feats, boxes, shapes).sum().backward()
        pool[name] = pool_step
    assert isinstance(poolers["RoIPooler"], RoIPooler)  # what build_model gives
    out = poolers["RoIPooler"](feats, boxes, shapes)
    same = torch.equal(out, MultiScaleRoIAlign(list("0123"), 7, 2)(feats, boxes, shapes))
    for label, fns in (("training step", steps), ("pooler forward + backward", pool)):
        times = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, fn in fns.items():
                times[k].append(_time(fn, device, args.iters))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["RoIPooler"] / med["torchvision"]
        print(f"{label:26} RoIPooler {med['RoIPooler'] * 1e3:7.1f} ms  torchvision "
              f"{med['torchvision'] * 1e3:7.1f} ms  ratio {ratio:.2f}  (device {device}, 1 thread)")
    print(f"forward bit-identical to torchvision's: {same}")


if __name__ == "__main__":
    main()
