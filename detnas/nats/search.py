"""The NATS search stage: first-order alternating updates of weights and dilation alphas.

A pretrained ResNet is made searchable (`detnas.nats.ops.make_searchable`) inside a torchvision
detector; each step takes an SGD step on the weights with a batch of the weights split and an Adam
step on the alphas with a batch of the architecture split (DARTS, first order). The state is saved
atomically to ``search.pt`` every ``checkpoint_every`` steps (model, both optimisers and data
position; the RNG is seeded per step), so a killed search continues where it was and ends where an
uninterrupted one would.

Under torchrun (`detnas.launch`: one process per GPU) each rank takes its share of every batch,
the weight and alpha gradients are averaged over the ranks before each step (what DDP does), BN is
synchronised on GPU, and rank 0 alone writes; the ranks' weights and alphas stay identical.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset

from detnas import tracking
from detnas.config import NatsConfig, StudyConfig, TrainConfig, check_nats, config_hash, to_dict
from detnas.detection import DETECTORS, build_detector, detector_backbone
from detnas.dilations import check_candidates
from detnas.engine import Dist, check_replicas, lr_factor, setup_distributed, step_seed
from detnas.io import load_checkpoint, save_checkpoint, save_json
from detnas.nats.derive import alphas_of, arch_spec, arch_tag, derive
from detnas.nats.ops import (
    arch_parameters,
    make_searchable,
    searched_layers,
    weight_parameters,
)
from detnas.provenance import provenance
from detnas.resnet import ResNetBackbone

log = logging.getLogger(__name__)

Loader = Callable[..., object]  # (dataset, batch_size, shuffle, seed) -> iterable of batches


def load_pretrained(path: str | Path, depth: int, width: int) -> dict[str, torch.Tensor]:
    """The ResNet backbone state dict of a pretrained checkpoint, in `ResNetBackbone` names.

    Accepts a classification checkpoint of the pipeline (`detnas.models`) or a torchvision ResNet
    state dict (``resnet50-*.pth``; its ``fc`` is dropped).

    Raises:
        ValueError: the file is unreadable, of another network, or of another depth or width.
    """
    ckpt = load_checkpoint(path)
    if "task" in ckpt and "model" in ckpt:
        from detnas.models import backbone_of, load_model

        backbone = backbone_of(load_model(path)[0])
        if not isinstance(backbone, ResNetBackbone):
            raise ValueError(f"{path}: field 'backbone' is {ckpt.get('backbone')}, not a ResNet")
        if (backbone.depth, backbone.width) != (depth, width):
            raise ValueError(f"{path}: ResNet-{backbone.depth} width {backbone.width}, but the "
                             f"config asks for nats.depth={depth}, nats.width={width}")
        return backbone.state_dict()
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    reference = ResNetBackbone(depth, width).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise ValueError(f"{path}: not a ResNet-{depth} width {width} state dict (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in reference.items():
        if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape:
            raise ValueError(f"{path}: {k} has shape {tuple(getattr(state[k], 'shape', ()))}, "
                             f"expected {tuple(v.shape)} for ResNet-{depth} width {width}")
    return state


def build_search_model(nats: NatsConfig, detector: str, num_classes: int, detector_cfg=None,
                       backbone_state: dict | None = None) -> nn.Module:
    """The detector around a searchable ResNet initialised from ``backbone_state``."""
    backbone = ResNetBackbone(nats.depth, nats.width)
    if backbone_state is not None:
        backbone.load_state_dict(backbone_state)
    make_searchable(backbone, nats.candidates, nats.groups, nats.group_width,
                    nats.searched_stages)
    return build_detector(backbone, detector, num_classes, detector_cfg)


class BatchStream:
    """Endless batches of a dataset with a resumable position (epoch, batch).

    Each epoch is one seeded permutation cut into batches of ``batch_size`` (an incomplete last
    batch is dropped). Rank ``rank`` of ``world`` processes loads only its share of each batch
    (every ``world``-th image), so the ranks together see the batches one process would.
    """

    def __init__(self, dataset, batch_size: int, seed: int, loader: Loader,
                 position: tuple[int, int] = (0, 0), rank: int = 0, world: int = 1):
        if batch_size % world or len(dataset) < batch_size:
            raise ValueError(f"nats.search.batch_size: {batch_size} must be a multiple of the "
                             f"{world} processes and at most the {len(dataset)} images")
        self.dataset, self.batch_size, self.seed, self.loader = dataset, batch_size, seed, loader
        self.rank, self.world = rank, world
        self.epoch, self.index = position
        self._it: Iterator | None = None

    @property
    def position(self) -> list[int]:
        return [self.epoch, self.index]

    def _open(self) -> Iterator:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        usable = len(self.dataset) // self.batch_size * self.batch_size
        order = torch.randperm(len(self.dataset), generator=g)[:usable].tolist()
        mine = order[self.rank :: self.world]  # batch b of this rank: its share of global batch b
        per_rank = self.batch_size // self.world
        mine = mine[self.index * per_rank :]  # resuming mid-epoch: the batches not yet used
        return iter(self.loader(Subset(self.dataset, mine), per_rank, False, self.seed))

    def next(self):
        if self._it is None:
            self._it = self._open()
        batch = next(self._it, None)
        if batch is None:  # the epoch is over
            self.epoch, self.index = self.epoch + 1, 0
            self._it = self._open()
            batch = next(self._it)
        self.index += 1
        return batch


def _to(batch, device: torch.device):
    images, targets = batch
    return ([im.to(device) for im in images],
            [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
             for t in targets])


def _loss(model: nn.Module, batch, device: torch.device, amp: bool) -> torch.Tensor:
    images, targets = _to(batch, device)
    with torch.autocast(device.type, torch.bfloat16, enabled=amp and device.type == "cuda"):
        losses = model(images, targets)
    return sum(losses.values())


def _average(tensors: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    """The mean of ``tensors`` over the ranks, in one all-reduce (DDP's gradient averaging)."""
    if world == 1:
        return tensors
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    return [f.view_as(t).to(t.dtype) for f, t in
            zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]


def _step(model, optimizer, params, batch, ddp: Dist, amp) -> float:
    """One optimiser step on ``params`` only (the other parameters get no gradient), with the
    gradients and the loss averaged over the ranks."""
    loss = _loss(model, batch, ddp.device, amp)
    grads = list(torch.autograd.grad(loss, params, allow_unused=True))
    used = [i for i, g in enumerate(grads) if g is not None]  # the same on every rank
    *averaged, loss = _average([grads[i] for i in used] + [loss.detach().reshape(1)], ddp.world)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite search loss {loss.item()}")
    for i, g in zip(used, averaged, strict=True):
        grads[i] = g
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _weight_step(model, optimizer, params, batch, ddp, amp) -> float:
    return _step(model, optimizer, params, batch, ddp, amp)


def _arch_step(model, optimizer, params, batch, ddp, amp) -> float:
    return _step(model, optimizer, params, batch, ddp, amp)


def _optimizers(model: nn.Module, cfg: StudyConfig, t: TrainConfig):
    """SGD on the weights (no decay on BN and biases), Adam on the alphas."""
    weights = [p for p in weight_parameters(model) if p.requires_grad]
    sgd = torch.optim.SGD(
        [{"params": [p for p in weights if p.dim() > 1], "weight_decay": t.weight_decay},
         {"params": [p for p in weights if p.dim() <= 1], "weight_decay": 0.0}],
        lr=t.lr, momentum=t.momentum)
    alphas = arch_parameters(model)
    adam = torch.optim.Adam(alphas, lr=cfg.nats.arch_lr, betas=tuple(cfg.nats.arch_betas),
                            weight_decay=cfg.nats.arch_weight_decay)
    return sgd, weights, adam, alphas


def entropy(alpha: torch.Tensor) -> float:
    """Mean entropy (nats) of the per-group softmax of ``alpha``; log(K) at the start."""
    p = alpha.detach().softmax(-1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


def alphas_json(alphas: dict[str, torch.Tensor], candidates) -> dict:
    """What ``alphas.json`` holds: per layer the raw alphas and their softmax."""
    return {"candidates": [list(c) for c in candidates],
            "layers": {name: {"alpha": a.tolist(), "softmax": a.softmax(-1).tolist()}
                       for name, a in alphas.items()}}


def search(cfg: StudyConfig, weights_data, arch_data, detector: str, out_dir: str | Path,
           pretrained: str | Path | None = None, dataset: str = "", loader: Loader | None = None,
           ) -> dict:
    """Run (or resume) the NATS search and write its outputs to ``out_dir``.

    Writes ``search.pt`` (resumable state), ``alphas.json``, ``metrics.json`` and ``arch.json``
    (the derived backbone spec with provenance); tracks the run with `detnas.tracking`.

    Args:
        cfg: the study config; ``cfg.nats`` holds the search settings, ``cfg.nats.search`` the
            weights' SGD schedule and the batch size of both splits.
        weights_data: detection dataset of the weight steps (``.num_classes``, items as
            `detnas.data.CocoDetection`).
        arch_data: detection dataset of the alpha steps (the other split).
        detector: ``fpn`` or ``retinanet``.
        out_dir: output folder; a ``search.pt`` there is resumed.
        pretrained: classification checkpoint or torchvision state dict of the ResNet.
        dataset: dataset name, for tags.
        loader: ``loader(dataset, batch_size, shuffle, seed)``; default
            `detnas.data.detection_loader`.

    Returns:
        The metrics written to ``metrics.json`` (``{}`` on the ranks other than 0).

    Raises:
        ValueError: bad config, detector, data or checkpoint, named in the message.
    """
    check_nats(cfg.nats)
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r} (known: {', '.join(DETECTORS)})")
    if weights_data.num_classes != arch_data.num_classes:
        raise ValueError(f"the weights split has {weights_data.num_classes} classes, the "
                         f"architecture split {arch_data.num_classes}")
    if loader is None:
        from detnas.data import detection_loader as loader
    out_dir, t, seed = Path(out_dir), cfg.nats.search.for_detector(detector), cfg.seed
    ddp, chash = setup_distributed(cfg.device), config_hash(cfg)
    path = out_dir / "search.pt"

    torch.manual_seed(seed)
    state = load_pretrained(pretrained, cfg.nats.depth, cfg.nats.width) if pretrained else None
    model = build_search_model(cfg.nats, detector, weights_data.num_classes, cfg.detector, state)
    if ddp.world > 1 and ddp.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(ddp.device).train()
    sgd, weights, adam, alphas = _optimizers(model, cfg, t)
    step, history, positions, seconds = 0, [], ([0, 0], [0, 0]), 0.0
    if path.exists():
        ckpt = load_checkpoint(path)
        if ckpt.get("config_hash") != chash or ckpt.get("detector") != detector:
            raise ValueError(f"{path}: written by config {ckpt.get('config_hash')} / detector "
                             f"{ckpt.get('detector')}, not {chash} / {detector}; delete it or "
                             f"choose another --out")
        model.load_state_dict(ckpt["model"])
        sgd.load_state_dict(ckpt["optimizer"])
        adam.load_state_dict(ckpt["arch_optimizer"])
        step, history, positions = ckpt["step"], ckpt["history"], ckpt["positions"]
        seconds = ckpt["seconds"]
        log.info("resuming %s at step %d/%d", path, step, t.steps)
    wstream = BatchStream(weights_data, t.batch_size, 2 * seed, loader, tuple(positions[0]),
                          ddp.rank, ddp.world)
    astream = BatchStream(arch_data, t.batch_size, 2 * seed + 1, loader, tuple(positions[1]),
                          ddp.rank, ddp.world)
    backbone = detector_backbone(model)
    candidates = [list(c) for c in check_candidates(cfg.nats.candidates, "config.nats")]

    def save() -> None:
        if not ddp.main:
            return
        save_checkpoint(path, {
            "step": step, "model": model.state_dict(), "optimizer": sgd.state_dict(),
            "arch_optimizer": adam.state_dict(),
            "positions": [wstream.position, astream.position], "history": history,
            "seconds": seconds, "alphas": alphas_of(backbone), "candidates": candidates,
            "depth": cfg.nats.depth, "width": cfg.nats.width, "detector": detector,
            "num_classes": weights_data.num_classes, "config_hash": chash,
            "provenance": provenance(to_dict(cfg), seed, stage="nats-search", dataset=dataset,
                                     pretrained=str(pretrained or "")),
        })

    tags = {"stage": "nats-search", "ablation": "nats", "detector": detector, "dataset": dataset,
            "space": f"resnet{cfg.nats.depth}", "arch": "pending", "seed": seed,
            "config_hash": chash, "git_commit": provenance({}, seed)["git_commit"]}
    tracker = (tracking.start(cfg, f"nats-search-{detector}-{dataset}", tags) if ddp.main
               else tracking.NullTracker())
    with tracker:
        tracker.log_params({f"nats.{k}": v for k, v in dataclasses.asdict(cfg.nats).items()}
                           | {"processes": ddp.world})
        while step < t.steps:
            start = time.perf_counter()
            torch.manual_seed(step_seed(seed, step))  # RoI sampling: a function of the step
            lr = t.lr * lr_factor(step, t)
            for group in sgd.param_groups:
                group["lr"] = lr
            row = {"step": step + 1, "lr": lr}
            row["weight_loss"] = _weight_step(model, sgd, weights, wstream.next(), ddp, t.amp)
            if step >= cfg.nats.arch_warmup_steps:
                row["arch_loss"] = _arch_step(model, adam, alphas, astream.next(), ddp, t.amp)
            row["alpha_entropy"] = sum(entropy(a) for a in alphas) / max(1, len(alphas))
            history.append(row)
            step += 1
            seconds += time.perf_counter() - start
            if step % t.log_every == 0 or step == t.steps:
                log.info("nats search step %d/%d %s", step, t.steps,
                         " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step"))
                tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step)
            if step % t.checkpoint_every == 0 or step == t.steps:
                save()
        check_replicas(model, ddp)
        if not ddp.main:
            return {}
        if not path.exists():
            save()
        current = alphas_of(backbone)
        dilations = derive(current, candidates)
        spec = arch_spec(cfg.nats.depth, cfg.nats.width, dilations, candidates=candidates,
                         groups=cfg.nats.groups, group_width=cfg.nats.group_width,
                         searched_stages=list(cfg.nats.searched_stages), detector=detector,
                         provenance=provenance(to_dict(cfg), seed, stage="nats-search",
                                               dataset=dataset, pretrained=str(pretrained or ""),
                                               search_steps=step))
        last = history[-1] if history else {}
        metrics = {"steps": step, "search_seconds": seconds,
                   "weight_loss": last.get("weight_loss", math.nan),
                   "arch_loss": last.get("arch_loss", math.nan),
                   "alpha_entropy": sum(map(entropy, current.values())) / max(1, len(current)),
                   "dilated_groups": sum(e != "1" for enc in dilations.values()
                                         for e in enc.split(",")),
                   "groups": sum(m.num_groups for m in searched_layers(backbone).values()),
                   "arch": arch_tag(dilations)}
        save_json(out_dir / "alphas.json", alphas_json(current, candidates))
        save_json(out_dir / "metrics.json", {**metrics, "history": history})
        save_json(out_dir / "arch.json", spec)
        tracker.set_tags({"arch": metrics["arch"]})
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)}, step)
        for name in ("arch.json", "alphas.json", "metrics.json"):
            tracker.log_artifact(out_dir / name)
    log.info("nats search done: %s", metrics["arch"])
    return metrics
