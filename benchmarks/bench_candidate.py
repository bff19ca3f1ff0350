"""Cost of evaluating one candidate against the cost of its forward passes alone, and workers.

Side by side in one run, on the default config's model (tiny space, Faster R-CNN + FPN, 128 px,
an untrained supernet detector, random images):

- candidate: ``SupernetFitness`` = BN recalibration (backbone, train mode, hooks, save/restore)
  + validation (detector forward in eval mode);
- forward only: the same backbone passes in train mode without grad + the same detector passes.

Target ratio <= 1.2. Also prints candidates per minute (measured, and extrapolated to the
default config's ``search.recalib_images`` / ``search_images``) and the speedup of 2 worker
processes over 1 on a few candidates (checking that both give the same fitness values).
COCO scoring (pycocotools) is not included: ``detnas.evaluation`` adds the same cost to both.
Run: ``python benchmarks/bench_candidate.py [--recalib 64 --val 32 --candidates 4]``.
"""

import argparse
import functools
import random
import time

import torch

from detnas.nets.models import build_model
from detnas.plan.config import StudyConfig
from detnas.plan.space import sample
from detnas.search.fitness import SupernetFitness
from detnas.search.parallel import WorkerPool

TARGET = 1.2


def _images(n: int, size: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def make_fitness(recalib: int, val: int, batch: int, threads: int) -> SupernetFitness:
    """The benchmark's candidate fitness (module-level: each worker process builds its own)."""
    torch.set_num_threads(threads)
    cfg = StudyConfig()
    torch.manual_seed(cfg.seed)
    model = build_model("detection", {"kind": "supernet", "space": cfg.space},
                        cfg.datasets["synth"].num_classes, "fpn", cfg.detector).eval()
    size = cfg.datasets["synth"].image_size
    train, held_out = _images(recalib, size, 1), _images(val, size, 2)
    batches = [train[i : i + batch] for i in range(0, recalib, batch)]

    def evaluate(m):
        fitness.bench_stats = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
        with torch.no_grad():
            scores = [d["scores"].sum() for i in range(0, val, batch)
                      for d in m(held_out[i : i + batch])]
        return {"mmap": float(sum(scores))}

    fitness = SupernetFitness(model, evaluate, "mmap", lambda: batches, recalib)
    fitness.bench_batches = (batches, [held_out[i : i + batch] for i in range(0, val, batch)])
    return fitness


def forward_only(fitness: SupernetFitness, arch) -> float:
    """Seconds of the candidate's forward passes alone: plain train-mode backbone passes, then
    the detector passes with the candidate's recalibrated statistics (set outside the timing)."""
    model, supernet = fitness.model, fitness.supernet
    recalib_batches, val_batches = fitness.bench_batches
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with supernet.use(arch), torch.no_grad():
        supernet.train()
        seconds = _timed(lambda: [supernet(model.transform(b)[0].tensors)
                                  for b in recalib_batches])
        supernet.eval()
        model.load_state_dict(fitness.bench_stats, strict=False)
        seconds += _timed(lambda: [model(b) for b in val_batches])
    model.load_state_dict(saved, strict=False)
    return seconds


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recalib", type=int, default=64, help="recalibration images per candidate")
    p.add_argument("--val", type=int, default=32, help="validation images per candidate")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    threads = StudyConfig().search.threads
    fitness = make_fitness(args.recalib, args.val, args.batch, threads)
    rng = random.Random(0)
    archs = [sample("tiny", rng) for _ in range(args.candidates)]
    fitness(archs[0])  # warm-up
    cand, fwd = [], []
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        for arch in archs:
            cand.append(_timed(lambda a=arch: fitness(a)))
            fwd.append(forward_only(fitness, arch))
    c, f = sum(cand) / len(cand), sum(fwd) / len(fwd)
    print(f"candidate {c:.3f} s   forward only {f:.3f} s   ratio {c / f:.3f} "
          f"(target <= {TARGET}: {'ok' if c / f <= TARGET else 'MISSED'})  "
          f"[{args.recalib} recalib + {args.val} val images, {threads} threads]")
    print(f"candidates/min (this run): {60 / c:.1f}")
    recalib_images = StudyConfig().search.recalib_images
    search_images = StudyConfig().datasets["synth"].search_images
    r, v = _per_image(fitness, archs, args)
    per_candidate = (r * recalib_images + v * search_images) * c / f
    print(f"candidates/min (default config: {recalib_images} recalib + {search_images} search "
          f"images, extrapolated): {60 / per_candidate:.2f}  "
          f"[{r * 1e3:.1f} ms/recalib image, {v * 1e3:.1f} ms/val image]")

    serial_values = [fitness(a) for a in archs]
    times = {}
    for workers in (1, 2):
        factory = functools.partial(make_fitness, args.recalib, args.val, args.batch, threads)
        with WorkerPool(factory, workers) as pool:
            list(pool(archs[:workers]))  # start and warm every worker
            start = time.perf_counter()
            values = dict(pool(archs))
            times[workers] = time.perf_counter() - start
        same = [values[i] for i in range(len(archs))] == serial_values
        print(f"{workers} worker(s) x {threads} thread(s): "
              f"{len(archs) / times[workers] * 60:.1f} candidates/min, "
              f"same fitness as in-process: {same}")
    print(f"speedup 2 workers vs 1: {times[1] / times[2]:.2f}x")


def _per_image(fitness: SupernetFitness, archs, args) -> tuple[float, float]:
    """Seconds per recalibration image and per validation image (forward passes only)."""
    model, supernet = fitness.model, fitness.supernet
    recalib_batches, val_batches = fitness.bench_batches
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    r = v = 0.0
    for arch in archs:
        with supernet.use(arch), torch.no_grad():
            supernet.train()
            r += _timed(lambda: [supernet(model.transform(b)[0].tensors) for b in recalib_batches])
            supernet.eval()
            v += _timed(lambda: [model(b) for b in val_batches])
    model.load_state_dict(saved, strict=False)
    return r / args.recalib / len(archs), v / args.val / len(archs)


if __name__ == "__main__":
    main()
