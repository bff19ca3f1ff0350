"""Two speed settings of the embedded default, each against its alternative side by side in one run
(interleaved rounds, median; one thread, the default's config and data sizes):

- ``detector.retinanet_levels``: a RetinaNet training step (8 images of 96 px) on P3..P5 against
  P3..P7, whose anchors (128 and 256 px) are larger than the image;
- ``classification.loader``: a classification training step (32 images of 48 px) with the crops
  and flips of the whole batch in the step (``gpu``: `detnas.data.device_loader`, here on the
  CPU) against per-image PIL transforms in the loader (``cpu``), the loader's time included.

Prints each ratio (below 1: the default's setting is faster).

    python benchmarks/bench_default_speed.py [--device cpu] [--rounds 5] [--iters 5]
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch
from bench_roi_pool import _batch, default_detector  # benchmarks/ is the script's path
from bench_train_step import _time

from detnas.data import make_synthetic_classification
from detnas.nets.models import build_model
from detnas.run import engine, train
from detnas.run.engine import make_optimizer


def _median_ratio(steps: dict, device, rounds: int, iters: int) -> tuple[dict, float]:
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, step in steps.items():
            times[k].append(_time(step, device, iters))
    med = {k: statistics.median(v) for k, v in times.items()}
    new, old = med.values()
    return med, new / old


def _training_step(model, opt, loss_of):
    """One optimizer step as the engine takes it in one process (run once here: warm-up)."""
    def step():
        loss = loss_of(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    return step


def retinanet_steps(cfg, spec, device) -> dict:
    images, targets = _batch(device, cfg.detector.min_size, 8)
    steps = {}
    for levels in (3, 5):
        torch.manual_seed(0)
        dcfg = dataclasses.replace(cfg.detector, retinanet_levels=levels)
        model = build_model("detection", spec, 3, "retinanet", dcfg)
        model = model.to(device, memory_format=torch.channels_last).train()
        opt = make_optimizer(model, cfg.retrain_finetune.for_detector("retinanet"))
        steps[levels] = _training_step(model, opt, lambda m: sum(m(images, targets).values()))
    return steps


def classification_steps(cfg, spec, device, root: Path) -> dict:
    c = cfg.classification
    make_synthetic_classification(root, seed=0, num_classes=c.num_classes, num_train=256,
                                  num_val=4, image_size=c.image_size)
    steps = {}
    for loader in ("gpu", "cpu"):
        lcfg = dataclasses.replace(cfg, device=device.type, classification=dataclasses.replace(
            c, root=str(root), loader=loader, search_images=0))
        data = train._classification_data(lcfg, "train", True)
        tcfg = dataclasses.replace(lcfg.retrain_pretrain, steps=10**6)
        loss_fn, dataset, collate = train._classification_inputs(
            lcfg, data, train.classification_loss(tcfg.label_smoothing))
        batches = iter(engine.step_loader(dataset, tcfg, 0, 0, engine.Dist(device=device),
                                          collate, 0))
        torch.manual_seed(0)
        model = build_model("classification", spec, data.num_classes, **train.classifier_options(
            lcfg)).to(device, memory_format=torch.channels_last).train()
        steps[loader] = _training_step(
            model, make_optimizer(model, tcfg),
            lambda m, b=batches, f=loss_fn: f(m, engine._to_device(next(b), device)))
    return steps


def main() -> None:
    args, device, cfg, spec = default_detector(__doc__)
    print(f"device {device}, torch {torch.__version__}, 1 thread")
    med, ratio = _median_ratio(retinanet_steps(cfg, spec, device), device, args.rounds,
                               args.iters)
    print(f"RetinaNet step  P3..P5 {med[3] * 1e3:7.1f} ms  P3..P7 {med[5] * 1e3:7.1f} ms  "
          f"ratio {ratio:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        med, ratio = _median_ratio(classification_steps(cfg, spec, device, Path(tmp)), device,
                                   args.rounds, args.iters)
    print(f"classification step  batch crops in the step {med['gpu'] * 1e3:7.1f} ms  PIL "
          f"loader + step {med['cpu'] * 1e3:7.1f} ms  ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
