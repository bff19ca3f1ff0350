"""ImageNet-style loader images/s, CPU path per core and device path, against the training step.

Writes ``--images`` JPEGs of 500x375 (ImageNet's typical size) in ImageFolder layout to a
temporary folder, then measures side by side in one run on ``--device``:

- CPU path (``classification.loader: cpu``): PIL decode + train transforms, one process, one
  thread: images/s per core; times ``--cores`` (a GPU's share of a node) for the node's rate;
- device path (``classification.loader: gpu``): file bytes read in the process, batched
  ``decode_jpeg`` + the same transforms on the device (`detnas.data.device_loader`);
- the consumer: the classification supernet's training step on one path (``--space``, batch
  ``--batch`` at ``--image-size``), as `detnas.run.engine.train` runs it (channels_last, bf16 on
  CUDA).

Target (issue 12): loader >= 1.2x the step on a GPU with 8 cores.
Run: ``python benchmarks/bench_imagenet_loader.py --device cuda --space 300M --batch 256``;
on a CPU: ``--space tiny --image-size 64 --batch 32`` (the default).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from detnas.data import ImageFolderClassification, classification_loader
from detnas.data.coco import make_loader
from detnas.data.device_loader import DeviceAugment, EncodedImages, collate_encoded
from detnas.nets.models import backbone_of, build_model
from detnas.plan.space import sample

TARGET = 1.2


def write_jpegs(root: Path, n: int, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # smooth, like a photo
        Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(folder / f"{i}.jpg",
                                                                         quality=90)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(batches, device: torch.device, count: int) -> float:
    """Images/s over ``count`` images drawn from the iterable of batches (first one excluded)."""
    it = iter(batches)
    next(it)  # warm-up
    _sync(device)
    seen, start = 0, time.perf_counter()
    for images, _labels in it:
        seen += len(images)
        if seen >= count:
            break
    _sync(device)
    return seen / (time.perf_counter() - start)


def step_rate(space: str, batch: int, size: int, device: torch.device, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model("classification", {"kind": "supernet", "space": space}, 1000)
    model = model.to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    backbone_of(model).set_path(sample(space, random.Random(0)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def steps_():
        for _ in range(steps):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield x, y

    return rate(steps_(), device, batch * (steps - 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=96, help="JPEG files written")
    p.add_argument("--space", default="tiny")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cores", type=int, default=8, help="CPU cores per GPU for the node rate")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        ds = ImageFolderClassification(tmp, args.image_size, train=True, cache=False)
        count = args.images - args.batch
        cpu = rate(classification_loader(ds, args.batch, True, 0), torch.device("cpu"), count)
        augment = DeviceAugment(ds)
        encoded = make_loader(EncodedImages(ds), args.batch, True, 0, 0, False, collate_encoded)
        dev = rate((augment(b, device) for b in encoded), device, count)
    consumer = step_rate(args.space, args.batch, args.image_size, device, args.steps)
    print(f"device {device}: {args.images} JPEGs 500x375 -> {args.image_size} px, batch "
          f"{args.batch}, space {args.space}")
    print(f"training step consumes {consumer:9.1f} images/s")
    print(f"CPU path  {cpu:9.1f} images/s per core   ratio loader/step {cpu / consumer:6.2f} "
          f"(x {args.cores} cores: {cpu * args.cores / consumer:6.2f})")
    verdict = "ok" if dev / consumer >= TARGET else "MISSED"
    print(f"device path {dev:7.1f} images/s            ratio loader/step {dev / consumer:6.2f} "
          f"(target >= {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
