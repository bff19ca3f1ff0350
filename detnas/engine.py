"""The training loop: one path per step for supernets, resumable, DDP-aware, tracked.

Everything random in a step (its batch, its path, augmentation) is a function of ``(seed, step)``,
so a run restarted from its last checkpoint follows exactly the steps of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from detnas.config import TrainConfig
from detnas.io import load_checkpoint, save_checkpoint
from detnas.space import Arch

log = logging.getLogger(__name__)


# --- devices and processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda``, checked."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: {name!r} (auto, cpu, cuda)")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group if there is one; pick this process's device."""
    cuda = resolve_device(device).type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Dist(rank, world, torch.device("cuda", local))
    return Dist(rank, world, torch.device("cpu"))


def check_replicas(model: nn.Module, ddp: Dist) -> None:
    """Check that every rank holds rank 0's parameters, bit for bit (what DDP promises).

    Raises:
        RuntimeError: on every rank, naming the first parameter that differs on some rank.
    """
    if ddp.world == 1:
        return
    names, params = zip(*((n, p.detach().reshape(-1).float())
                          for n, p in model.named_parameters()), strict=True)
    reference = torch.cat(params)
    dist.broadcast(reference, 0)
    same = [torch.equal(a, b) for a, b in
            zip(params, reference.split([p.numel() for p in params]), strict=True)]
    first = torch.tensor([same.index(False) if False in same else len(same)],
                         device=reference.device)
    dist.all_reduce(first, dist.ReduceOp.MIN)
    if first.item() < len(params):
        raise RuntimeError(f"the {ddp.world} processes ended with different weights: "
                           f"{names[first.item()]} differs from rank 0's")
    log.info("weights identical on the %d ranks", ddp.world)


# --- deterministic batches ------------------------------------------------------------------------


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % 2**31


class StepBatchSampler(Sampler[list[int]]):
    """Batches of steps ``start..stop-1``: step ``s`` takes the next ``batch_size`` indices of a
    permutation that depends only on ``(seed, epoch)``; each rank takes its share of the batch."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        if size == 0:
            raise ValueError("the training set is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._epoch, self._perm = -1, []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=g).tolist()
        return self._perm

    def indices(self, step: int) -> list[int]:
        out = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, i = divmod(pos, self.size)
            out.append(self._permutation(epoch)[i])
        return out[self.rank :: self.world]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            # Without workers the batch is read right after this: its augmentation is seeded by
            # the step. (Workers draw from their own generators: reproducible up to that.)
            torch.manual_seed(step_seed(self.seed + 1, step))
            yield self.indices(step)

    def __len__(self) -> int:
        return self.stop - self.start


def step_loader(dataset: Dataset, tcfg: TrainConfig, seed: int, start: int, ddp: Dist,
                collate: Callable, num_workers: int = 0) -> DataLoader:
    sampler = StepBatchSampler(len(dataset), tcfg.batch_size, seed, start, tcfg.steps,
                               ddp.rank, ddp.world)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, pin_memory=ddp.device.type == "cuda",
                      persistent_workers=False)


# --- optimisation ---------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.SGD:
    """SGD with weight decay on conv/linear weights only (none on BN and biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": tcfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg.lr, momentum=tcfg.momentum,
    )


def lr_factor(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up from ``warmup_factor`` (maskrcnn-benchmark's ``WarmupMultiStepLR``), then
    linear decay to 0 or steps at fractions ``lr_steps`` of the run."""
    warm = 1.0
    if step < tcfg.warmup_steps:
        alpha = step / tcfg.warmup_steps
        warm = tcfg.warmup_factor * (1 - alpha) + alpha
    if tcfg.schedule == "linear":
        return warm * max(0.0, 1 - step / max(1, tcfg.steps))
    drops = sum(step >= f * tcfg.steps for f in tcfg.lr_steps)
    return warm * tcfg.gamma**drops


# --- the loop -------------------------------------------------------------------------------------


class NonFiniteLoss(ValueError):
    pass


@dataclass
class Stage:
    """What differs between the training stages; the loop is the same for all."""

    model: nn.Module  # the module whose state is saved (not the DDP wrapper)
    loss: Callable[[nn.Module, object], torch.Tensor]  # (model_to_call, batch) -> scalar loss
    dataset: Dataset
    collate: Callable
    meta: dict  # what the checkpoint carries to rebuild the model (`detnas.models.model_meta`)
    sample_path: Callable[[random.Random], Arch] | None = None  # supernets: one path per step
    supernet: nn.Module | None = None  # the `Supernet` inside ``model``
    sync_bn: bool = False  # SyncBN across GPU processes (detection: few images per GPU)
    num_workers: int = 0


def _mask_off_path(supernet: nn.Module, arch: Arch) -> None:
    """Drop the gradients of choices off ``arch`` so momentum and weight decay leave them alone.

    DDP with unused parameters hands them zero gradients, which SGD would apply weight decay and
    momentum to; in one process they stay None and SGD skips them.
    """
    for block, choice in zip(supernet.blocks, arch.choices, strict=True):
        for c, module in enumerate(block):
            if c != choice:
                for p in module.parameters():
                    p.grad = None


def train(stage: Stage, tcfg: TrainConfig, seed: int, ddp: Dist, resume_path: Path,
          tracker, provenance: dict) -> dict:
    """Run ``tcfg.steps`` optimizer steps of ``stage``, resuming from ``resume_path`` if present.

    Returns:
        The final checkpoint dict (model state, meta, provenance, step, summary metrics).

    Raises:
        NonFiniteLoss: the loss became NaN/inf; the last good checkpoint is kept.
    """
    model = stage.model
    if stage.sync_bn and ddp.world > 1 and ddp.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps BN children in place
    model = model.to(ddp.device)
    if ddp.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, tcfg)
    start = 0
    if resume_path.exists():
        state = load_checkpoint(resume_path, ddp.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        log.info("resuming from %s at step %d/%d", resume_path, start, tcfg.steps)
    run_model: nn.Module = model
    if ddp.world > 1:
        run_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None,
            find_unused_parameters=stage.supernet is not None,
        )
    amp = tcfg.amp and ddp.device.type == "cuda"
    loader = step_loader(stage.dataset, tcfg, seed, start, ddp, stage.collate, stage.num_workers)
    progress = _Progress(start, tcfg.steps, tcfg.log_every, ddp.main)
    model.train()
    step = start
    for step, batch in enumerate(loader, start):
        torch.manual_seed(step_seed(seed, step))  # augmentation, dropout: a function of the step
        for group in optimizer.param_groups:
            group["lr"] = tcfg.lr * lr_factor(step, tcfg)
        arch = None
        if stage.sample_path is not None:
            arch = _same_on_every_rank(stage.sample_path(random.Random(step_seed(seed, step))),
                                       ddp)
            stage.supernet.set_path(arch)
        batch = _to_device(batch, ddp.device)
        with torch.autocast(ddp.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = stage.loss(run_model, batch)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"non-finite loss {loss.item()} at step {step}"
                + (f" on path {arch}" if arch else "")
                + f"; the last good checkpoint is {resume_path}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if arch is not None and ddp.world > 1:  # alone, off-path choices get no gradient
            _mask_off_path(stage.supernet, arch)
        optimizer.step()
        done = step + 1
        metrics = {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}
        images = len(batch[0]) * ddp.world
        metrics["images_per_s"] = progress.update(done, metrics, images)
        if ddp.main and (done % tcfg.log_every == 0 or done == tcfg.steps):
            tracker.log_metrics(metrics, step=done)
        if ddp.main and done % tcfg.checkpoint_every == 0 and done < tcfg.steps:
            save_checkpoint(resume_path, {"model": model.state_dict(),
                                          "optimizer": optimizer.state_dict(), "step": done})
    progress.close()
    check_replicas(model, ddp)
    if stage.supernet is not None:
        stage.supernet.set_path(None)
    return {**stage.meta, "model": model.state_dict(), "step": max(step + 1, start),
            "provenance": provenance}


def _same_on_every_rank(arch: Arch, ddp: Dist) -> Arch:
    """Rank 0's path, broadcast: every GPU trains the same path in a step (as the reference)."""
    if ddp.world == 1:
        return arch
    box = [arch]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


class _Progress:
    """A tqdm bar with ETA in a terminal; plain periodic log lines otherwise."""

    def __init__(self, start: int, total: int, every: int, enabled: bool):
        self.every, self.total, self.enabled = every, total, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self.t0, self.images = time.perf_counter(), 0
        self.rate = math.nan

    def update(self, done: int, metrics: dict, images: int) -> float:
        self.images += images
        elapsed = time.perf_counter() - self.t0
        self.rate = self.images / elapsed if elapsed > 0 else math.nan
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.3g}")
        elif self.enabled and (done % self.every == 0 or done == self.total):
            log.info("step %d/%d loss %.4f lr %.4g %.1f img/s", done, self.total,
                     metrics["loss"], metrics["lr"], self.rate)
        return self.rate

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
