"""What leaving the padding out of the BN recalibration costs per candidate, and how it moves the
fitness of a few candidates: `search.recalib_padding` include against exclude, side by side.

The reference recalibrates at one image per GPU (8 GPUs under SyncBN), so no image is padded to
another's size; a batch of 8 images of mixed orientation is a quarter to a third padding. Here the
images of a synthetic set are cut to 64 x 96 (landscape) or 96 x 64 (portrait), alternately, so
that a recalibration batch of 8 is 1/3 padding, as a COCO one (800 x 1067 and 1067 x 800 padded to
1088 x 1088) is 1/4 to 1/3. Per candidate, interleaved (machine load hits all alike):

- padded: batches of 8 padded to 96 x 96, statistics over everything (``include``);
- regions: the same batches, statistics over each image's own pixels (``exclude``);
- one by one: one image per forward (``recalib_batch_size: 1``; 64 and 96 are multiples of 32,
  so no image is padded): no padding and each image normalised by its own statistics;
- evaluation at 8 images a batch (padded, BN in eval mode) against 1 (the reference's TEST
  batch of one image per GPU) and against batches of one image size (``datasets.*.eval_padding:
  exclude``, which must give the fitness of one image at a time), after the ``exclude``
  recalibration.

It prints the time of each recalibration and evaluation per candidate, their ratios, every
candidate's fitness, and Kendall's tau between the variants' rankings. With ``--supernet`` (a
detection supernet checkpoint of the embedded default, e.g.
``results/supernet/synth/fpn/pretrained/checkpoint.pt``) and ``--data`` (its synthetic set, e.g.
``results/data/synth``) the fitness is meaningful; without, an untrained supernet on a fresh
synthetic set only times the paths (a smoke test).
Run: ``python benchmarks/bench_recalib_padding.py --supernet ... --data ... [--candidates 8]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from detnas.data import make_synthetic_detection
from detnas.io import load_checkpoint, load_json, save_checkpoint, save_json
from detnas.nets.models import build_model, model_meta
from detnas.plan.config import SearchConfig, StudyConfig
from detnas.plan.space import sample
from detnas.search.fitness import FitnessSpec, build_fitness
from detnas.search.rank import rank_correlation


def cut(src: Path, annotations: Path, dst: Path, split: str, limit: int) -> Path:
    """The first ``limit`` images of a square synthetic split cut to 64 x 96 and 96 x 64 in
    turn (the middle 64 rows or columns), with the boxes that keep half their area."""
    data = load_json(annotations)
    boxes: dict[int, list] = {}
    for a in data["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    images, kept = [], []
    (dst / split).mkdir(parents=True, exist_ok=True)
    for k, info in enumerate(data["images"][:limit]):
        pixels = np.asarray(Image.open(src / info["file_name"]).convert("RGB"))
        h, w = pixels.shape[:2]
        y0, x0 = ((h - 64) // 2, 0) if k % 2 == 0 else (0, (w - 64) // 2)
        y1, x1 = (y0 + 64, w) if k % 2 == 0 else (h, x0 + 64)
        Image.fromarray(pixels[y0:y1, x0:x1]).save(dst / split / info["file_name"])
        images.append({**info, "width": x1 - x0, "height": y1 - y0})
        for a in boxes.get(info["id"], []):
            bx, by, bw, bh = a["bbox"]
            cx0, cy0 = max(bx, x0) - x0, max(by, y0) - y0
            cx1, cy1 = min(bx + bw, x1) - x0, min(by + bh, y1) - y0
            if cx1 - cx0 >= 4 and cy1 - cy0 >= 4 and (cx1 - cx0) * (cy1 - cy0) >= bw * bh / 2:
                kept.append({**a, "bbox": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                             "area": (cx1 - cx0) * (cy1 - cy0)})
    path = dst / "annotations" / f"instances_{split}.json"
    save_json(path, {**data, "images": images, "annotations": kept})
    return path


def write_data(root: Path, args) -> str:
    """The cut sets under ``root``; the supernet checkpoint (given, or an untrained one)."""
    src = Path(args.data) if args.data else root / "square"
    if not args.data:
        make_synthetic_detection(src, seed=0, num_train=args.recalib, num_test=args.val,
                                 image_size=96, num_classes=3)
    ann = src / "annotations"
    cut(src / "train", ann / "instances_train.json", root, "train", args.recalib)
    cut(src / "test", ann / "instances_test.json", root, "test", args.val)
    if args.supernet:
        return args.supernet
    cfg = StudyConfig()
    det = dataclasses.replace(cfg.detector, min_size=96, max_size=96, fpn_channels=32)
    backbone = {"kind": "supernet", "space": cfg.space}
    torch.manual_seed(0)
    model = build_model("detection", backbone, 3, "fpn", det)
    path = save_checkpoint(root / "supernet.pt", {
        "model": model.state_dict(), **model_meta("detection", backbone, 3, "fpn", det)})
    return str(path)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--supernet", default="", help="a trained detection supernet checkpoint")
    p.add_argument("--data", default="", help="its synthetic set (train/, test/, annotations/)")
    p.add_argument("--recalib", type=int, default=64, help="recalibration images per candidate")
    p.add_argument("--val", type=int, default=120, help="images the fitness scores")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--recalib-mode", default="exact", choices=("exact", "momentum"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = write_data(root, args)
        search = SearchConfig(recalib_images=args.recalib, recalib_batch_size=8,
                              eval_batch_size=8, recalib=args.recalib_mode, threads=args.threads,
                              coco_backend="pycocotools")
        ann = root / "annotations"
        meta = load_checkpoint(checkpoint)
        space = meta["backbone"]["space"]
        spec = FitnessSpec(checkpoint=checkpoint, kind="detection", space=space,
                           data=str(ann / "instances_test.json"), images=str(root / "test"),
                           recalib_data=str(ann / "instances_train.json"),
                           recalib_image_dir=str(root / "train"), detector=meta["detector"],
                           metric="ap50", search=search, device=args.device)
        regions = dataclasses.replace(search, recalib_padding="exclude")
        variants = {  # (search settings, eval_padding)
            "padded": (search, "include"),
            "regions": (regions, "include"),
            "one by one": (dataclasses.replace(search, recalib_batch_size=1), "include"),
            "regions, eval 1": (dataclasses.replace(regions, eval_batch_size=1), "include"),
            "regions, same size": (regions, "exclude"),
        }
        fitness = {name: build_fitness(dataclasses.replace(spec, search=s, eval_padding=e))
                   for name, (s, e) in variants.items()}
        rng = random.Random(0)
        archs = [sample(space, rng) for _ in range(args.candidates)]
        recalib_s = dict.fromkeys(("padded", "regions", "one by one"), 0.0)
        total_s = {"regions": 0.0, "regions, eval 1": 0.0, "regions, same size": 0.0}
        values: dict[str, list[float]] = {name: [] for name in variants}
        fitness["padded"](archs[0])  # warm-up
        for arch in archs:
            for name in recalib_s:  # the recalibration alone: an evaluation that reads nothing
                f = fitness[name]
                evaluate, f.evaluate = f.evaluate, lambda m: {"ap50": 0.0}
                recalib_s[name] += timed(lambda f=f, a=arch: f(a))[0]
                f.evaluate = evaluate
            for name, f in fitness.items():
                seconds, value = timed(lambda f=f, a=arch: f(a))
                values[name].append(value)
                if name in total_s:
                    total_s[name] += seconds
    n = len(archs)
    print(f"device {args.device}, {args.threads} thread(s): {n} candidates, {args.recalib} "
          f"recalibration images ({args.recalib_mode}, 8 a batch), {args.val} scored images, "
          f"64 x 96 and 96 x 64 in turn ({'trained supernet' if args.supernet else 'untrained'})")
    r = {name: seconds / n for name, seconds in recalib_s.items()}
    print(f"recalibration s/candidate: padded {r['padded']:.3f}, regions {r['regions']:.3f} "
          f"(ratio {r['regions'] / r['padded']:.2f}), one by one {r['one by one']:.3f} "
          f"(ratio {r['one by one'] / r['padded']:.2f})")
    t = {name: seconds / n for name, seconds in total_s.items()}
    print(f"fitness s/candidate (regions): evaluation at 8 a batch {t['regions']:.3f}, at 1 "
          f"{t['regions, eval 1']:.3f} (ratio {t['regions, eval 1'] / t['regions']:.2f}), in "
          f"batches of one size {t['regions, same size']:.3f} "
          f"(ratio {t['regions, same size'] / t['regions']:.2f})")
    print("candidate            " + "  ".join(f"{name:>18}" for name in variants))
    for i, arch in enumerate(archs):
        print(f"{str(arch):20} " + "  ".join(f"{values[name][i]:18.4f}" for name in variants))
    for a, b in (("padded", "regions"), ("regions", "one by one"), ("padded", "one by one"),
                 ("regions", "regions, eval 1"), ("regions, eval 1", "regions, same size"),
                 ("padded", "regions, same size")):
        tau = rank_correlation(values[a], values[b])["kendall_tau"]
        diff = max(abs(x - y) for x, y in zip(values[a], values[b], strict=True))
        print(f"Kendall tau {a} vs {b}: {tau if tau is None else f'{tau:.2f}'}, "
              f"largest fitness difference {diff:.4f}")


if __name__ == "__main__":
    main()
