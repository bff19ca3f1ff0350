"""The training loop of every stage: one path per step for supernets, an architecture step after
each weight step for NATS, resumable, DDP-aware, tracked.

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
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from detnas.io import load_checkpoint, save_checkpoint
from detnas.plan.config import TrainConfig
from detnas.plan.space import Arch
from detnas.provenance import set_aside
from detnas.run import stop
from detnas.run.precision import Precision

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
    permutation that depends only on ``(seed, epoch)``; each rank takes its share of the batch.

    With ``groups`` (a group per index: `aspect_groups`), a batch holds one group's images, as
    maskrcnn-benchmark's ``GroupedBatchSampler`` makes them (``DATALOADER.ASPECT_RATIO_GROUPING``):
    in each epoch's permutation, every group's images in turn make full batches, the groups'
    remainders together make mixed ones (with two groups, at most one an epoch), the fewer than
    ``batch_size`` images left sit the epoch out, and the batches follow the permutation by their
    first image. Every epoch has as many batches: a batch is still a function of the step.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1, groups: list[int] | None = None):
        if size == 0:
            raise ValueError("the training set is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._epoch, self._perm = -1, []
        self.groups = groups
        if groups is not None:
            if len(groups) != size:
                raise ValueError(f"{len(groups)} groups for {size} images")
            counts = [groups.count(g) for g in sorted(set(groups))]
            rest = sum(n % batch_size for n in counts)
            self._per_epoch = sum(n // batch_size for n in counts) + rest // batch_size
            if not self._per_epoch:
                raise ValueError(f"batches of {batch_size} grouped by aspect ratio: the training "
                                 f"set has only {size} images")
            self._grouped_epoch, self._grouped = -1, []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=g).tolist()
        return self._perm

    def _grouped_batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` with ``groups``."""
        if epoch != self._grouped_epoch:
            perm, b = self._permutation(epoch), self.batch_size
            batches, rest = [], []
            for group in sorted(set(self.groups)):
                members = [i for i in perm if self.groups[i] == group]
                full = len(members) - len(members) % b
                batches += [members[k:k + b] for k in range(0, full, b)]
                rest += members[full:]
            place = {index: p for p, index in enumerate(perm)}
            rest.sort(key=place.__getitem__)
            batches += [rest[k:k + b] for k in range(0, len(rest) - b + 1, b)]
            batches.sort(key=lambda batch: place[batch[0]])
            assert len(batches) == self._per_epoch
            self._grouped_epoch, self._grouped = epoch, batches
        return self._grouped

    def indices(self, step: int) -> list[int]:
        if self.groups is not None:
            epoch, i = divmod(step, self._per_epoch)
            return self._grouped_batches(epoch)[i][self.rank :: self.world]
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


def aspect_groups(dataset: Dataset) -> list[int]:
    """Each image's orientation, as maskrcnn-benchmark groups them (``_quantize`` of height /
    width at 1): 0 wider than high, 1 otherwise (`detnas.data.CocoDetection.aspect_groups`).

    Raises:
        ValueError: the dataset does not know its images' sizes (not a detection set).
    """
    if not hasattr(dataset, "aspect_groups"):
        raise ValueError(f"aspect_grouping: a {type(dataset).__name__} does not know its images' "
                         "sizes (a detection set does)")
    return dataset.aspect_groups()


def step_loader(dataset: Dataset, tcfg: TrainConfig, seed: int, start: int, ddp: Dist,
                collate: Callable, num_workers: int = 0, end: int | None = None) -> DataLoader:
    """The batches of steps ``start..end-1`` (default: to ``tcfg.steps``), this rank's share;
    with ``tcfg.aspect_grouping``, each of one orientation (`StepBatchSampler`)."""
    if tcfg.batch_size % ddp.world:
        raise ValueError(f"batch_size: {tcfg.batch_size} is not a multiple of the {ddp.world} "
                         "processes")
    groups = aspect_groups(dataset) if tcfg.aspect_grouping else None
    sampler = StepBatchSampler(len(dataset), tcfg.batch_size, seed, start,
                               tcfg.steps if end is None else end, ddp.rank, ddp.world, groups)
    if num_workers:
        stop.end_helpers_at_exit()  # the workers ignore SIGTERM (stop.shield)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, pin_memory=ddp.device.type == "cuda",
                      persistent_workers=False, worker_init_fn=stop.shield)


# --- optimisation ---------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, tcfg: TrainConfig, exclude=()) -> torch.optim.SGD:
    """SGD on the trainable parameters of ``model`` except those in ``exclude``, grouped by
    ``tcfg.param_groups``.

    ``spos``: weight decay on conv/linear weights only (ndim > 1), none on BN and biases, one lr.
    ``maskrcnn``: every parameter whose name contains ``bias`` at ``BIAS_LR_FACTOR`` 2 times the
    lr and without decay, every other one (BN weights included) decayed. Each group's
    ``lr_scale`` multiplies the scheduled lr (`train`).
    """
    skip = {id(p) for p in exclude}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in skip]
    if tcfg.param_groups == "maskrcnn":
        decay = [p for n, p in params if "bias" not in n]
        bias = [p for n, p in params if "bias" in n]
        groups = [{"params": decay, "weight_decay": tcfg.weight_decay, "lr_scale": 1.0},
                  {"params": bias, "weight_decay": 0.0, "lr_scale": 2.0}]
    else:
        groups = [{"params": [p for _, p in params if p.ndim > 1],
                   "weight_decay": tcfg.weight_decay, "lr_scale": 1.0},
                  {"params": [p for _, p in params if p.ndim <= 1], "weight_decay": 0.0,
                   "lr_scale": 1.0}]
    return torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum)


def set_bn(model: nn.Module, tcfg: TrainConfig) -> None:
    """Every BN of ``model`` with ``tcfg.bn_momentum``, and its affine parameters frozen under
    ``tcfg.freeze_bn_affine`` (they then stay out of the optimiser)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = tcfg.bn_momentum
            if tcfg.freeze_bn_affine:
                for p in (m.weight, m.bias):
                    if p is not None:
                        p.requires_grad_(False)


def lr_factor(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up from ``warmup_factor`` (maskrcnn-benchmark's ``WarmupMultiStepLR``), then
    linear decay to 0 or steps at fractions ``lr_steps`` of the run."""
    warm = 1.0
    if step < tcfg.warmup_steps:
        alpha = step / tcfg.warmup_steps
        warm = tcfg.warmup_factor * (1 - alpha) + alpha
    if tcfg.schedule == "linear":
        return warm * max(0.0, 1 - step / max(1, tcfg.steps))
    drops = sum(step >= _milestone(f, tcfg.steps) for f in tcfg.lr_steps)
    return warm * tcfg.gamma**drops


def set_lr(optimizer: torch.optim.Optimizer, step: int, tcfg: TrainConfig) -> None:
    """The lr of every group of ``optimizer`` at ``step``: scheduled, times the group's
    ``lr_scale`` (`make_optimizer`)."""
    for group in optimizer.param_groups:
        group["lr"] = tcfg.lr * lr_factor(step, tcfg) * group.get("lr_scale", 1.0)


def _milestone(fraction: float, steps: int) -> float:
    """The first step at the next lr: ``fraction * steps``, or the integer it rounds (0.6666667
    of 90k: step 60000, maskrcnn-benchmark's ``SOLVER.STEPS``, not 60001)."""
    at = fraction * steps
    return round(at) if math.isclose(at, round(at), rel_tol=1e-6) else at


# --- the loop -------------------------------------------------------------------------------------


class NonFiniteLoss(ValueError):
    pass


@dataclass
class ArchStep:
    """A second optimiser, stepped after each weight step from step ``first_step`` on, on
    parameters the weights' SGD leaves alone, with batches of its own dataset: NATS's
    architecture alphas (DARTS, first order). Its loss is the stage's loss.

    A search subclasses it with what it records (`on_step`) and what its resumable state adds
    (`state`, read back by `restore`): `detnas.nats.search.NatsSearch`. Its resumable state is
    also written after the last step: the searched architecture is the stage's output."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    dataset: Dataset
    first_step: int = 0  # weight-only steps before the first architecture step

    def on_step(self, step: int, metrics: dict) -> dict:
        """Called on every rank after every step with (step done, its metrics): more metrics to
        log."""
        return {}

    def state(self) -> dict:
        """What the search adds to the resumable checkpoint."""
        return {}

    def restore(self, state: dict) -> None:
        """Read back what `state` saved, on resume."""


@dataclass
class Stage:
    """What differs between the training stages; the loop is the same for all."""

    model: nn.Module  # the module whose state is saved (not the DDP wrapper)
    loss: Callable[[nn.Module, object], torch.Tensor]  # (model_to_call, batch) -> scalar loss
    dataset: Dataset
    collate: Callable
    meta: dict  # what the checkpoint carries to rebuild the model (`detnas.nets.models.model_meta`)
    sample_path: Callable[[random.Random], Arch] | None = None  # supernets: one path per step
    supernet: nn.Module | None = None  # the `Supernet` inside ``model``
    sync_bn: bool = False  # SyncBN across GPU processes (detection: few images per GPU)
    num_workers: int = 0
    arch: ArchStep | None = None  # a searched architecture (NATS): a step after each weight step

    @property
    def keep_last(self) -> bool:
        """Also write the resumable checkpoint after the last step (the search's output)."""
        return self.arch is not None


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
    """Run ``tcfg.steps`` optimizer steps of ``stage``, resuming from ``resume_path`` if present
    and made from this run's ``provenance["fingerprint"]`` (another one is set aside). The files
    of a previous run in the folder stay until the stage's own replace them: a run that fails
    costs no earlier result. A stop signal (`detnas.run.stop`) saves the step it arrives in and
    raises `detnas.run.stop.Stopped`.

    Under DDP the gradients and the logged loss are averaged over the ranks, and rank 0 alone
    writes checkpoints and logs metrics.

    Returns:
        The final checkpoint dict (model state, meta, provenance, step, summary metrics).

    Raises:
        NonFiniteLoss: the loss became NaN/inf; the last good checkpoint is kept.
    """
    model = _placed(stage, tcfg, ddp)
    optimizer = make_optimizer(model, tcfg, exclude=stage.arch.params if stage.arch else ())
    precision = Precision.for_device(tcfg.amp, ddp.device)
    loop = _Loop(stage, tcfg, seed, ddp, resume_path, provenance.get("fingerprint"), model,
                 optimizer, precision)
    start = loop.resume()
    loop.distribute()
    done = loop.run(start, tracker)
    check_replicas(model, ddp)
    if ddp.main and stage.keep_last and not resume_path.exists():  # a run of 0 steps
        loop.save(done)
    if stage.supernet is not None:
        stage.supernet.set_path(None)
    return {**stage.meta, "model": model.state_dict(), "step": done, "provenance": provenance}


def _placed(stage: Stage, tcfg: TrainConfig, ddp: Dist) -> nn.Module:
    """``stage.model`` on this process's device, ready to train: SyncBN where the stage asks for
    it on GPUs, channels_last, its BN set (`set_bn`)."""
    model = stage.model
    if stage.sync_bn and ddp.world > 1 and ddp.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps BN children in place
    # channels_last on every device: cuDNN's and oneDNN's convolutions are fastest in it (on
    # the default's CPU a training step takes 0.80 to 0.96 of the contiguous one's time,
    # benchmarks/bench_channels_last.py)
    model = model.to(ddp.device, memory_format=torch.channels_last)
    set_bn(model, tcfg)
    return model


@dataclass
class _Loop:
    """One run of `train`: what its steps share."""

    stage: Stage
    tcfg: TrainConfig
    seed: int
    ddp: Dist
    resume_path: Path
    fingerprint: str | None  # what the run is made from (its resumable checkpoint's)
    model: nn.Module  # the stage's model on its device
    optimizer: torch.optim.Optimizer
    precision: Precision
    run_model: nn.Module = field(init=False)  # what a step calls: ``model``, or its DDP wrapper
    arch_batches: Iterator | None = field(init=False, default=None)  # NATS's alphas' batches

    def __post_init__(self) -> None:
        self.run_model = self.model

    def resume(self) -> int:
        """Load the resumable checkpoint made from this run's fingerprint (`_resumable`), if
        there is one; the step to start at."""
        state = _resumable(self.resume_path, self.fingerprint, self.ddp)
        if state is None:
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state.get("scaler", {}))
        if self.stage.arch is not None:
            self.stage.arch.optimizer.load_state_dict(state["arch_optimizer"])
        if self.stage.arch is not None:
            self.stage.arch.restore(state)
        log.info("resuming from %s at step %d/%d", self.resume_path, state["step"],
                 self.tcfg.steps)
        return state["step"]

    def distribute(self) -> None:
        """Under DDP, steps call the model through its wrapper (made after `resume`: it starts
        every rank from rank 0's weights)."""
        if self.ddp.world > 1:
            self.run_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.ddp.device.index] if self.ddp.device.type == "cuda" else None,
                find_unused_parameters=self.stage.supernet is not None,
            )

    def run(self, start: int, tracker) -> int:
        """The steps from ``start`` on, each logged and checkpointed; the steps done."""
        stage, tcfg, ddp = self.stage, self.tcfg, self.ddp
        loader = step_loader(stage.dataset, tcfg, self.seed, start, ddp, stage.collate,
                             stage.num_workers)
        arch = stage.arch
        if arch is not None:  # arch step k (at step first_step + k): batch k of its own stream
            self.arch_batches = iter(step_loader(
                arch.dataset, tcfg, self.seed + 2, max(0, start - arch.first_step), ddp,
                stage.collate, stage.num_workers, end=max(0, tcfg.steps - arch.first_step)))
        progress = _Progress(start, tcfg.steps, tcfg.log_every, ddp.main)
        self.model.train()
        done = start
        with stop.honoured():
            for step, batch in enumerate(loader, start):
                metrics = self.step(step, batch)
                done = step + 1
                metrics["images_per_s"] = progress.update(done, metrics, len(batch[0]) * ddp.world)
                if stage.arch is not None:
                    metrics.update(stage.arch.on_step(done, metrics))
                if ddp.main and (done % tcfg.log_every == 0 or done == tcfg.steps):
                    tracker.log_metrics(metrics, step=done)
                self.checkpoint(done)
        progress.close()
        return done

    def step(self, step: int, batch) -> dict:
        """Step ``step`` on ``batch`` (and its architecture step, NATS): its metrics."""
        torch.manual_seed(step_seed(self.seed, step))  # augmentation, dropout: of the step
        set_lr(self.optimizer, step, self.tcfg)
        path = self._path(step)
        loss = backward(self.run_model, self.stage.loss, batch, self.ddp, self.precision,
                        f" at step {step}" + (f" on path {path}" if path else "")
                        + f"; the last good checkpoint is {self.resume_path}")
        if path is not None and self.ddp.world > 1:  # alone, off-path choices get no gradient
            _mask_off_path(self.stage.supernet, path)
        self.precision.step(self.optimizer)
        metrics = {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
        arch = self.stage.arch
        if arch is not None and step >= arch.first_step:
            metrics["arch_loss"] = backward(
                self.run_model, self.stage.loss, next(self.arch_batches), self.ddp,
                self.precision, f" in the architecture step of step {step}; the last good "
                f"checkpoint is {self.resume_path}")
            self.precision.step(arch.optimizer)
        return metrics

    def _path(self, step: int) -> Arch | None:
        """A supernet's path of ``step`` (the same on every rank), set; None for a network."""
        if self.stage.sample_path is None:
            return None
        rng = random.Random(step_seed(self.seed, step))
        path = _same_on_every_rank(self.stage.sample_path(rng), self.ddp)
        self.stage.supernet.set_path(path)
        return path

    def checkpoint(self, done: int) -> None:
        """After step ``done``: save the resumable checkpoint when it is due or a stop signal
        came (the last step's is saved, not halted), and end the run on the signal."""
        steps = self.tcfg.steps
        halt = stop.requested(self.ddp)
        if self.ddp.main and (done % self.tcfg.checkpoint_every == 0 and done < steps
                              or done == steps and self.stage.keep_last or halt):
            self.save(done)
        if halt and done < steps:
            if self.ddp.world > 1:
                dist.barrier()  # no rank ends (and torchrun stops the rest) before the save
            raise stop.Stopped(halt, f"at step {done} of {steps} ({self.resume_path} saved)")

    def save(self, done: int) -> None:
        """Write the resumable checkpoint after ``done`` steps."""
        save_checkpoint(self.resume_path, resumable_state(
            self.stage, self.optimizer, done, self.precision, self.fingerprint))


def _resumable(path: Path, fingerprint: str | None, ddp: Dist) -> dict | None:
    """The resumable checkpoint at ``path`` when there is one made from ``fingerprint`` (any,
    where the run has none); one made from anything else is set aside, on rank 0 once every rank
    has read it."""
    if not path.exists():
        return None
    state = load_checkpoint(path, ddp.device)
    if fingerprint is None or state.get("fingerprint") == fingerprint:
        return state
    if ddp.world > 1:
        dist.barrier()
    if ddp.main:
        set_aside(path, state.get("fingerprint"), fingerprint)
    return None


def resumable_state(stage: Stage, optimizer: torch.optim.Optimizer, step: int,
                    precision: Precision, fingerprint: str | None = None) -> dict:
    """What a checkpoint holds to continue ``stage`` after ``step`` steps, and the fingerprint of
    what the run is made from (`detnas.provenance.fingerprint`)."""
    state = {"model": stage.model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "scaler": precision.state_dict(), "fingerprint": fingerprint}
    if stage.arch is not None:
        state["arch_optimizer"] = stage.arch.optimizer.state_dict()
    if stage.arch is not None:
        state.update(stage.arch.state())
    return state


def backward(run_model: nn.Module, loss_fn: Callable, batch, ddp: Dist, precision: Precision,
             where: str = "") -> float:
    """The loss of ``batch`` and the gradients of every parameter (averaged over the ranks by
    DDP), ready for an optimiser's ``step()``; returns the loss averaged over the ranks.

    Raises:
        NonFiniteLoss: on every rank together, before any gradient is computed.
    """
    batch = _to_device(batch, ddp.device)
    with precision.autocast():
        loss = loss_fn(run_model, batch)
    mean = loss.detach().float().reshape(1)
    if ddp.world > 1:
        mean = mean.clone()
        dist.all_reduce(mean)
        mean /= ddp.world
    if not torch.isfinite(mean):
        raise NonFiniteLoss(f"non-finite loss {mean.item()}{where}")
    run_model.zero_grad(set_to_none=True)  # also the other optimiser's (NATS): no stale sums
    precision.backward(loss)
    return mean.item()


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
