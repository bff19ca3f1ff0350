"""The cost of a detection training step per image at batch 8 against batch 4, side by side in one
run (interleaved rounds, median), on the embedded default's detectors (ShuffleNetV2 of the tiny
space, 96-px images of 1-3 objects, one thread). On CPU these steps are bound by per-operation
overhead, not arithmetic: a RetinaNet step of 8 images costs little more than one of 4, which is
why the default trains RetinaNet at 8 images a step (`config/config.yaml`, `detector_batch_size`).
Prints, per detector, the time of a step at each batch and the ratio of the time per image
(batch 8 / batch 4; below 1: the larger batch trains the same images in less time).

    python benchmarks/bench_detector_batch.py [--device cpu] [--rounds 5] [--iters 5]
"""

from __future__ import annotations

import statistics

import torch
from bench_roi_pool import _batch, default_detector  # benchmarks/ is the script's path
from bench_train_step import _time

from detnas.nets.models import build_model
from detnas.run.engine import make_optimizer

BATCHES = (4, 8)


def main() -> None:
    args, device, cfg, spec = default_detector(__doc__)
    print(f"device {device}, torch {torch.__version__}, 1 thread, "
          f"{cfg.detector.min_size}-px images")
    for detector in cfg.detectors:
        steps = {}
        for batch in BATCHES:
            images, targets = _batch(device, cfg.detector.min_size, batch)
            torch.manual_seed(0)
            model = build_model("detection", spec, 3, detector, cfg.detector).to(device).train()
            opt = make_optimizer(model, cfg.retrain_finetune.for_detector(detector))

            def step(model=model, opt=opt, images=images, targets=targets):
                loss = sum(model(images, targets).values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            step()  # warm-up
            steps[batch] = step
        times = {b: [] for b in BATCHES}
        for _ in range(args.rounds):
            for b, s in steps.items():
                times[b].append(_time(s, device, args.iters))
        med = {b: statistics.median(v) for b, v in times.items()}
        small, large = BATCHES
        ratio = (med[large] / large) / (med[small] / small)
        print(f"{detector:10} step at {small}: {med[small] * 1e3:7.1f} ms  at {large}: "
              f"{med[large] * 1e3:7.1f} ms  ratio per image {large}/{small} {ratio:.2f}")


if __name__ == "__main__":
    main()
