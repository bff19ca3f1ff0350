"""Does the training loop wait for data? Loader images/s against the training step's consumption.

Generates the embedded synthetic sets in a temporary folder, then times, on the same batches:

- the loaders (``cache=True``: decoded once, in memory; ``cache=False``: decoded per item),
- the consumer: forward + backward of the tiny supernet on one path, inside Faster R-CNN + FPN
  (detection) and inside the classifier (classification).

A ratio loader / consumer well above 1 means the loop never waits for data.

Usage: ``python benchmarks/bench_loader.py [--threads 1] [--batches 10]``
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from detnas.data import (
    CocoDetection,
    ImageFolderClassification,
    classification_loader,
    detection_loader,
    make_synthetic_classification,
    make_synthetic_detection,
)
from detnas.nets.detection import build_detector
from detnas.nets.supernet import Classifier, Supernet
from detnas.plan import space
from detnas.plan.config import ClassificationConfig, DatasetConfig, DetectorConfig


def _loader_rate(loader, batches: int) -> float:
    """Images per second over ``batches`` batches (cycling the loader)."""
    seen, done, start = 0, 0, time.perf_counter()
    while done < batches:
        for images, _targets in loader:
            seen, done = seen + len(images), done + 1
            if done >= batches:
                break
    return seen / (time.perf_counter() - start)


def _step_rate(step, batch, n_images: int, steps: int) -> float:
    step(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    return n_images * steps / (time.perf_counter() - start)


def bench_detection(root: Path, args) -> None:
    d = DatasetConfig()
    start = time.perf_counter()
    make_synthetic_detection(root, seed=0, num_train=d.num_train, num_test=d.num_test,
                             image_size=d.image_size, num_classes=d.num_classes)
    print(f"detection: generated {d.num_train}+{d.num_test} images of {d.image_size}px in "
          f"{time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    ds = CocoDetection(root / d.train_images, root / d.train_annotations, flip_prob=0.5)
    print(f"detection: decoded into memory in {time.perf_counter() - start:.2f} s")
    lazy = CocoDetection(root / d.train_images, root / d.train_annotations, cache=False)
    rates = {name: _loader_rate(detection_loader(s, args.batch_size, True, 0), args.batches)
             for name, s in (("cached", ds), ("decode per item", lazy))}

    supernet = Supernet("tiny")
    supernet.set_path(space.sample("tiny", random.Random(0)))
    model = build_detector(supernet, "fpn", ds.num_classes, DetectorConfig()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, targets = next(iter(detection_loader(ds, args.batch_size, True, 0)))

    def step(batch):
        losses = model(*batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    consumer = _step_rate(step, (images, targets), len(images), args.steps)
    _report("detection", rates, consumer)


def bench_classification(root: Path, args) -> None:
    c = ClassificationConfig()
    start = time.perf_counter()
    make_synthetic_classification(root, seed=0, num_classes=c.num_classes, num_train=c.num_train,
                                  num_val=c.num_val, image_size=c.image_size)
    print(f"classification: generated {c.num_train}+{c.num_val} images of {c.image_size}px in "
          f"{time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    ds = ImageFolderClassification(root / "train", c.image_size, train=True)
    print(f"classification: decoded into memory in {time.perf_counter() - start:.2f} s")
    lazy = ImageFolderClassification(root / "train", c.image_size, train=True, cache=False)
    batch_size = args.batch_size * 4
    rates = {name: _loader_rate(classification_loader(s, batch_size, True, 0), args.batches)
             for name, s in (("cached", ds), ("decode per item", lazy))}

    supernet = Supernet("tiny")
    supernet.set_path(space.sample("tiny", random.Random(0)))
    model = Classifier(supernet, ds.num_classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = next(iter(classification_loader(ds, batch_size, True, 0)))

    def step(batch):
        loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    consumer = _step_rate(step, (images, labels), len(images), args.steps)
    _report("classification", rates, consumer)


def _report(task: str, rates: dict[str, float], consumer: float) -> None:
    print(f"{task}: training step consumes {consumer:8.1f} images/s")
    for name, rate in rates.items():
        print(f"{task}: loader ({name:15}) {rate:8.1f} images/s  ratio loader/step "
              f"{rate / consumer:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=8, help="detection batch (x4 for cls)")
    parser.add_argument("--batches", type=int, default=20, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        bench_detection(Path(tmp) / "det", args)
        bench_classification(Path(tmp) / "cls", args)


if __name__ == "__main__":
    main()
