"""GPU-hours of the study at the reference schedules, from step rates measured on this device.

Measures, in one run on the current device, images/s of: the classification supernet's training
step (one random path per step), the detector supernet's training step (FPN, RetinaNet), and a
candidate evaluation's parts (recalibration passes, detector passes, COCO scoring by
`detnas.evaluation.coco_evaluate`'s default backend). Then multiplies by the images of each stage
in ``--config`` (default config/coco.yaml): pre-training, fine-tuning, search (``population x
(generations + 1)`` candidates x (recalibration + search images)), retraining (the standalone
network's step costs the supernet's: bench_train_step.py), NATS (a plain detector step times
``--nats-factor``, bench_nats.py's measured ratio). Data loading is assumed to keep up
(bench_loader.py checks it). The paper's 44 GPU-days are printed beside the DetNAS row.

``--quick`` measures at small sizes (tiny space, 64 px classification, 128 px detection): it shows
the arithmetic on a CPU, not paper-scale figures. Full sizes need a GPU.
Run: ``python benchmarks/bench_study_cost.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

import torch

from detnas import evaluation
from detnas.data import CocoDetection, make_synthetic_detection
from detnas.nets.models import backbone_of, build_model
from detnas.plan import config as config_mod
from detnas.plan.space import sample
from detnas.run.engine import make_optimizer

PAPER_GPU_DAYS = 44  # DetNAS (NeurIPS 2019): supernet pre-training + fine-tuning + search, COCO
ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(step, images: int, device: torch.device, iters: int) -> float:
    """Images per second of ``step`` (one warm-up call, then ``iters`` timed)."""
    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return images * iters / (time.perf_counter() - start)


def _train_step(model, loss_fn, space: str):
    opt = make_optimizer(model, config_mod.TrainConfig(lr=1e-3))
    supernet, rng = backbone_of(model), random.Random(0)

    def step():
        supernet.set_path(sample(space, rng))
        loss = loss_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _det_batch(n: int, h: int, w: int, device):
    images = [torch.rand(3, h, w, device=device) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[10.0, 10, w / 3, h / 2], [w / 2, h / 3, w - 5, h - 5]],
                                      device=device),
                "labels": torch.tensor([1, 3], device=device)} for _ in range(n)]
    return images, targets


def measure(cfg, space: str, sizes: dict, device: torch.device, iters: int) -> dict[str, float]:
    """Images/s of each stage's unit of work on ``device``."""
    rates = {}
    torch.manual_seed(0)
    cls = build_model("classification", {"kind": "supernet", "space": space}, 1000).to(device)
    b, s = sizes["cls_batch"], sizes["cls_size"]
    x, y = torch.randn(b, 3, s, s, device=device), torch.randint(0, 1000, (b,), device=device)
    rates["pretrain"] = _rate(_train_step(
        cls.train(), lambda m: torch.nn.functional.cross_entropy(m(x), y), space), b, device, iters)
    del cls
    det_cfg = dataclasses.replace(cfg.detector, min_size=sizes["det_h"],
                                  max_size=sizes["det_w"])
    for detector in ("fpn", "retinanet"):
        model = build_model("detection", {"kind": "supernet", "space": space}, 80, detector,
                            det_cfg).to(device).train()
        images, targets = _det_batch(sizes["det_batch"], sizes["det_h"], sizes["det_w"], device)
        rates[f"finetune_{detector}"] = _rate(_train_step(
            model, lambda m, i=images, t=targets: sum(m(i, t).values()), space),
            len(images), device, iters)
        supernet = backbone_of(model)
        supernet.set_path(sample(space, random.Random(1)))

        def recalib(m=model, i=images, sn=supernet):
            with torch.no_grad():
                sn(m.transform(i)[0].tensors)

        def detect(m=model, i=images):
            with torch.no_grad():
                m(i)

        rates[f"recalib_{detector}"] = _rate(recalib, len(images), device, iters)
        model.eval()
        rates[f"eval_{detector}"] = _rate(detect, len(images), device, iters)
        del model
    rates["coco_eval"] = _coco_rate(sizes["coco_images"])
    return rates


def _coco_rate(n: int) -> float:
    """Images/s of COCO scoring, 100 detections per image (the default backend)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_detection(tmp, seed=0, num_train=1, num_test=n, image_size=64,
                                 num_classes=3)
        ds = CocoDetection(Path(tmp) / "test", Path(tmp) / "annotations" / "instances_test.json",
                           cache=False)
        g = torch.Generator().manual_seed(0)
        preds = []
        for image_id in ds.ids:
            xy = torch.rand(100, 2, generator=g) * 48
            preds.append({"image_id": image_id, "boxes": torch.cat([xy, xy + 16], 1),
                          "scores": torch.rand(100, generator=g),
                          "labels": torch.randint(1, 4, (100,), generator=g)})
        start = time.perf_counter()
        evaluation.coco_evaluate(ds, preds)
        return n / (time.perf_counter() - start)


def project(cfg, rates: dict[str, float]) -> dict[str, float]:
    """GPU-hours per stage on one device of the measured kind."""
    def hours(images: float, rate: float) -> float:
        return images / rate / 3600

    pre, fine = cfg.supernet_pretrain, cfg.supernet_finetune
    s = cfg.search
    candidates = s.population * (s.generations + 1)
    search_images = next(iter(cfg.datasets.values())).search_images
    out = {"pretrain": hours(pre.steps * pre.batch_size, rates["pretrain"]),
           "retrain_pretrain": hours(cfg.retrain_pretrain.steps * cfg.retrain_pretrain.batch_size,
                                     rates["pretrain"])}
    for d in ("fpn", "retinanet"):
        out[f"finetune_{d}"] = hours(fine.steps * fine.batch_size, rates[f"finetune_{d}"])
        out[f"retrain_finetune_{d}"] = hours(
            cfg.retrain_finetune.steps * cfg.retrain_finetune.batch_size, rates[f"finetune_{d}"])
        per_candidate = (s.recalib_images / rates[f"recalib_{d}"]
                         + search_images / rates[f"eval_{d}"]
                         + search_images / rates["coco_eval"])
        out[f"search_{d}"] = candidates * per_candidate / 3600
        out[f"search_{d}_coco_share"] = search_images / rates["coco_eval"] / per_candidate
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "coco.yaml"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (CPU / CI)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--nats-factor", type=float, default=2.2,
                   help="NATS search step / plain detector step (bench_nats.py measures it)")
    args = p.parse_args()
    cfg = config_mod.load(args.config)
    device = torch.device(args.device)
    if args.quick:
        space, sizes = "tiny", dict(cls_batch=8, cls_size=64, det_batch=2, det_h=128, det_w=128,
                                    coco_images=50)
    else:
        space, sizes = cfg.space, dict(cls_batch=256, cls_size=cfg.classification.image_size,
                                       det_batch=2, det_h=cfg.detector.min_size,
                                       det_w=cfg.detector.max_size, coco_images=1000)
    rates = measure(cfg, space, sizes, device, args.iters)
    gpu_hours = project(cfg, rates)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name} ({device}), space {space}, sizes {sizes}"
          + ("  [--quick: NOT paper-scale figures]" if args.quick else ""))
    print("measured images/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    print(f"reference schedules of {Path(args.config).name}; GPU-hours on one such device:")
    for k, v in gpu_hours.items():
        if not k.endswith("share"):
            print(f"  {k:24} {v:12.1f} h")
    for d in ("fpn", "retinanet"):
        row = (gpu_hours["pretrain"] + gpu_hours[f"finetune_{d}"] + gpu_hours[f"search_{d}"]
               + gpu_hours["retrain_pretrain"] + gpu_hours[f"retrain_finetune_{d}"])
        print(f"row DetNAS {d}: {row:.1f} GPU-hours = {row / 24:.2f} GPU-days "
              f"(paper: {PAPER_GPU_DAYS} GPU-days; target <= 3 on one H100); search "
              f"{gpu_hours[f'search_{d}'] / row:.0%} of it, COCO scoring "
              f"{gpu_hours[f'search_{d}_coco_share']:.0%} of a candidate")
    nats = cfg.nats.search
    nats_hours = nats.steps * nats.batch_size / rates["finetune_fpn"] * args.nats_factor / 3600
    print(f"row NATS fpn: search {nats_hours:.1f} h + retrain fine-tuning "
          f"{gpu_hours['retrain_finetune_fpn']:.1f} h (ImageNet-pretrained ResNet)")


if __name__ == "__main__":
    main()
