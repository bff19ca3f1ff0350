"""The project's own fitness path (`build_fitness`, files on disk) against its forward passes alone.

Side by side in one run, on the synthetic detection set written to a temporary folder (PNG files,
an untrained supernet Faster R-CNN + FPN of the default config, ``score_thresh`` 0 so that every
image has 100 detections to score, as a trained detector's would):

- loader path: ``search.prepare: none``, images decoded per candidate (``cache: false``, as for
  COCO), resized per candidate, COCO scoring by pycocotools;
- prepared path: ``search.prepare: resized`` (decoded and resized once per worker), faster-coco-eval
  when installed (``search.coco_backend: auto``);
- forward only: the recalibration backbone passes and the detector passes on prepared images.

Also the COCO scoring alone (pycocotools, faster-coco-eval) against the forward passes. Both paths
must give the same fitness (checked). Target (issue 12): candidate / forward <= 1.2.
Run: ``python benchmarks/bench_fitness_path.py [--device cuda] [--recalib 32 --val 32]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from pathlib import Path

import torch

from detnas import evaluation
from detnas.data import make_synthetic_detection
from detnas.io import save_checkpoint
from detnas.nets.models import build_model, model_meta
from detnas.plan.config import SearchConfig, StudyConfig
from detnas.plan.space import sample
from detnas.search import prepared
from detnas.search.fitness import FitnessSpec, build_fitness

TARGET = 1.2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def write_study(root: Path, args) -> FitnessSpec:
    """The synthetic set and an untrained supernet detector checkpoint; the fitness spec."""
    cfg = StudyConfig()
    make_synthetic_detection(root, seed=0, num_train=args.recalib, num_test=args.val,
                             image_size=args.image_size, num_classes=3)
    det = dataclasses.replace(cfg.detector, min_size=args.image_size, max_size=args.image_size,
                              score_thresh=0.0)
    backbone = {"kind": "supernet", "space": cfg.space}
    torch.manual_seed(0)
    model = build_model("detection", backbone, 3, "fpn", det)
    path = save_checkpoint(root / "det.pt", {"model": model.state_dict(),
                                             **model_meta("detection", backbone, 3, "fpn", det)})
    ann = root / "annotations"
    return FitnessSpec(checkpoint=str(path), kind="detection", space=cfg.space,
                       data=str(ann / "instances_test.json"), images=str(root / "test"),
                       recalib_data=str(ann / "instances_train.json"),
                       recalib_image_dir=str(root / "train"), detector="fpn",
                       search=SearchConfig(recalib_images=args.recalib,
                                           recalib_batch_size=args.batch,
                                           eval_batch_size=args.batch, threads=args.threads,
                                           coco_backend="pycocotools"),
                       device=args.device, cache=False)


def forward_only(fitness, arch, device: str) -> tuple[float, list[dict]]:
    """Seconds of the candidate's forward passes on prepared images, and its predictions."""
    model, supernet = fitness.model, fitness.supernet
    recalib = list(fitness.recalib_batches())
    out = []

    def run():
        with supernet.use(arch), torch.no_grad():
            supernet.train()
            for images in recalib:
                fitness.recalib_forward(images)
            supernet.eval()
            out.append(prepared.predict_prepared(model, fitness.prepared_search, device))

    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    seconds = _timed(run, device)
    model.load_state_dict(saved, strict=False)
    return seconds, out[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--recalib", type=int, default=32, help="recalibration images per candidate")
    p.add_argument("--val", type=int, default=32, help="search images per candidate")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_study(Path(tmp), args)
        old = build_fitness(spec)
        new = build_fitness(dataclasses.replace(spec, search=dataclasses.replace(
            spec.search, prepare="resized", coco_backend="auto")))
        search = new.search
        archs = [sample(spec.space, random.Random(i)) for i in range(args.candidates)]
        old(archs[0]), new(archs[0])  # warm-up
        t_old = t_new = t_fwd = t_py = t_fast = 0.0
        same = True
        for arch in archs:  # interleaved, so machine load hits all alike
            values = []
            t_old += _timed(lambda a=arch, v=values: v.append(old(a)), args.device)
            t_new += _timed(lambda a=arch, v=values: v.append(new(a)), args.device)
            seconds, predictions = forward_only(new, arch, args.device)
            t_fwd += seconds
            t_py += _timed(lambda p=predictions: evaluation.coco_evaluate(search, p, "pycocotools"),
                           args.device)
            if evaluation.coco_backend("auto") == "faster":
                t_fast += _timed(
                    lambda p=predictions: evaluation.coco_evaluate(search, p, "faster"),
                    args.device)
            same &= values[0] == values[1]
    n = len(archs)
    print(f"device {args.device}: {args.recalib} recalib + {args.val} search images of "
          f"{args.image_size} px, {n} candidates, {args.threads} thread(s)")
    print(f"forward passes alone: {t_fwd / n:.3f} s/candidate")
    print(f"candidate / forward, loader path (decode + resize per candidate, pycocotools): "
          f"{t_old / t_fwd:.2f}")
    ratio = t_new / t_fwd
    print(f"candidate / forward, prepared path ({evaluation.coco_backend('auto')}): {ratio:.2f} "
          f"(target <= {TARGET}: {'ok' if ratio <= TARGET else 'MISSED'})")
    print(f"COCO scoring / forward: pycocotools {t_py / t_fwd:.2f}"
          + (f", faster-coco-eval {t_fast / t_fwd:.2f} ({t_py / t_fast:.1f}x faster)"
             if t_fast else ", faster-coco-eval not installed"))
    print(f"same fitness on both paths: {same}")


if __name__ == "__main__":
    main()
