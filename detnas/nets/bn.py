"""BN recalibration: exact batch-norm statistics of one supernet path, restored afterwards.

The supernet's running statistics mix all paths, so before a candidate is evaluated its BN layers
get the mean and variance of their inputs over a fixed set of training images, run through the
candidate's path in train mode without gradients (the DetNAS reference). The statistics are exact
over all images (the mean and unbiased variance a single batch of all of them would record), not
an exponential or per-batch average; ``momentum=0.1`` gives the reference's running average
instead (DetNAS ``distributed_arch_search/test_server.py``: reset, then 500 batches at torch's
default momentum, dominated by the last few). Every BN buffer and training flag is restored on
exit, so candidates never leak into each other.

A batch of detection images is padded to its largest image: with `ImageRegions`, the BN layers
whose inputs are maps of the padded batch (the backbone's and the FPN's) take their statistics
over each image's own pixels only, and normalise with them, as the reference's SyncBN at one
image per GPU does (each GPU's tensor is padded only to a multiple of 32; its statistics are the
mean of the GPUs' means and mean squares, each image weighing the same). Without it, the zeros
of the padding (25 to 30 % of a COCO batch of mixed orientations) enter every statistic; with it,
only the padding of each image alone to a multiple of 32, which the reference's statistics hold
too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)


def _batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class ImageRegions:
    """Where the images of the batch being run lie in its padded tensor.

    The forward of a recalibration sets them before each batch (`set`); the BN layers of
    ``module`` (e.g. a detector's backbone and FPN, whose inputs are maps of the padded batch)
    then read, in a map of stride ``s``, the top-left ``ceil(h / s) x ceil(w / s)`` of image
    ``(h, w)``: every conv and pool of the backbones here (kernel k, stride 2, padding k // 2)
    halves a size rounding up, and the padded size is a multiple of the largest stride.
    """

    def __init__(self, module: nn.Module):
        self.norms = set(_batch_norms(module))
        self.padded: tuple[int, int] = (0, 0)
        self.sizes: list[tuple[int, int]] = []

    def set(self, sizes: Iterable[tuple[int, int]], padded: tuple[int, int],
            divisible: int = 1) -> None:
        """The batch about to run: each image's (h, w), and the (H, W) it is padded to.

        ``divisible``: an image's region is its size rounded up to a multiple of it, as it would
        be padded alone (torchvision's and maskrcnn-benchmark's transforms: 32 for an FPN)."""
        up = max(int(divisible), 1)
        self.sizes = [(-(-int(h) // up) * up, -(-int(w) // up) * up) for h, w in sizes]
        self.padded = (int(padded[0]), int(padded[1]))

    def valid(self, x: torch.Tensor) -> list[tuple[int, int]] | None:
        """Each image's (h, w) in ``x``, a map (N, C, H, W) of the batch; None when ``x`` is not
        one (another batch size, or a size that is not the padded size over a stride)."""
        if x.dim() != 4 or x.shape[0] != len(self.sizes):
            return None
        (ph, pw), (h, w) = self.padded, x.shape[-2:]
        if not h or not w or ph % h or pw % w or ph // h != pw // w:
            return None
        s = ph // h
        return [(-(-ih // s), -(-iw // s)) for ih, iw in self.sizes]


def masked_moments(x: torch.Tensor, valid: list[tuple[int, int]],
                   image_weighted: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per channel, the mean and biased variance of ``x`` (N, C, H, W) over the top-left
    ``valid[i]`` of each image ``i``, and the number of positions they cover.

    ``image_weighted``: the mean of the images' means and the mean of their mean squared
    deviations (from the batch mean), each image weighing the same, as the reference's SyncBN
    combines its GPUs' statistics; otherwise every position weighs the same (one BN over the
    images' pixels laid side by side)."""
    n, _c, h, w = x.shape
    hs = torch.tensor([v[0] for v in valid], device=x.device)
    ws = torch.tensor([v[1] for v in valid], device=x.device)
    mask = ((torch.arange(h, device=x.device)[None, :, None] < hs[:, None, None])
            & (torch.arange(w, device=x.device)[None, None, :] < ws[:, None, None]))
    mask = mask[:, None].to(x.dtype)  # (N, 1, H, W)
    counts = (hs * ws).to(x.dtype)  # (N,)
    weights = (torch.full_like(counts, 1 / n) if image_weighted else counts / counts.sum())
    means = (x * mask).sum((2, 3)) / counts[:, None]  # (N, C)
    mean = (weights[:, None] * means).sum(0)  # (C,)
    squares = ((x - mean[None, :, None, None]).square() * mask).sum((2, 3)) / counts[:, None]
    return mean, (weights[:, None] * squares).sum(0), int(counts.sum())


def _masked_forward(m: _BatchNorm, regions: ImageRegions, counts: dict, image_weighted: bool,
                    x: torch.Tensor) -> torch.Tensor:
    """A BN layer's training-mode forward with the statistics of the images' own pixels."""
    valid = regions.valid(x)
    if valid is None:
        counts.pop(m, None)
        return type(m).forward(m, x)
    mean, var, n = masked_moments(x, valid, image_weighted)
    m.running_mean.lerp_(mean.to(m.running_mean.dtype), m.momentum)
    m.running_var.lerp_((var * n / max(n - 1, 1)).to(m.running_var.dtype), m.momentum)
    m.num_batches_tracked.add_(1)
    counts[m] = n
    return F.batch_norm(x, mean, var, m.weight, m.bias, False, 0.0, m.eps)


@contextmanager
def recalibrated(
    module: nn.Module,
    batches: Iterable[torch.Tensor | list[torch.Tensor]],
    num_images: int,
    forward: Callable[[Any], Any] | None = None,
    momentum: float | None = None,
    regions: ImageRegions | None = None,
) -> Iterator[nn.Module]:
    """Inside the block, ``module``'s BN layers hold statistics recomputed on ``batches``.

    Every BN layer that the forward passes reach gets ``running_mean`` / ``running_var`` equal to
    the exact mean and unbiased variance of its inputs over the first ``num_images`` images
    (per channel, over images and positions); layers not reached keep their statistics. On exit
    all BN buffers, momenta and training flags are restored; weights are never touched.

    Args:
        module: the network (e.g. a supernet switched to one path with ``use``).
        batches: batches of images, each a tensor (N, C, H, W) or a list of (C, H, W) tensors;
            iteration stops after ``num_images`` images.
        num_images: images to recalibrate on (> 0).
        forward: runs one batch through ``module``; default ``module(batch)``.
        momentum: None for the exact statistics; a number for a running average with that
            momentum from reset buffers (mean 0, variance 1), as the reference.
        regions: the unpadded part of each image of a batch, which ``forward`` sets: the BN
            layers of ``regions`` take the statistics of those pixels only (with ``momentum``,
            each batch's statistics weigh its images alike, as the reference's SyncBN; exact
            statistics weigh every pixel alike). None: the statistics of the padded batch.

    Raises:
        ValueError: ``num_images`` < 1 or ``batches`` holds no image.
    """
    if num_images < 1:
        raise ValueError(f"BN recalibration needs num_images >= 1, got {num_images}")
    norms = _batch_norms(module)
    saved = _Saved(module, norms)
    exact = _ExactStatistics()
    hooks = [m.register_forward_hook(exact.merge) for m in norms] if momentum is None else []
    masked = [m for m in norms if regions is not None and m in regions.norms]
    try:
        for m in masked:  # an instance attribute: nn.Module.__call__ runs it, hooks included
            m.forward = partial(_masked_forward, m, regions, exact.counts, momentum is not None)
        module.train()
        for m in norms:
            m.reset_running_stats()
            m.momentum = 1.0 if momentum is None else momentum
        _run(forward or module, batches, num_images)
        for hook in hooks:
            hook.remove()
        exact.write()
        saved.restore(buffers=False)
        yield module
    finally:
        for m in masked:
            del m.forward
        for hook in hooks:
            hook.remove()
        saved.restore()


class _Saved:
    """The BN buffers and momenta of ``norms``, and the training flags of ``module``'s modules,
    to restore."""

    def __init__(self, module: nn.Module, norms: list[_BatchNorm]):
        self.norms = norms
        self.buffers = [(m.momentum, m.running_mean.clone(), m.running_var.clone(),
                         m.num_batches_tracked.clone()) for m in norms]
        self.flags = [(m, m.training) for m in module.modules()]

    def restore(self, buffers: bool = True) -> None:
        """Momenta and training flags back; with ``buffers``, the statistics too."""
        for m, (momentum, mean, var, tracked) in zip(self.norms, self.buffers, strict=True):
            m.momentum = momentum
            if buffers:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        for m, training in self.flags:
            m.training = training


class _ExactStatistics:
    """The exact mean and unbiased variance of each BN layer's inputs over all the batches run:
    `merge` is a forward hook of the layers, which run at momentum 1 (the buffers then hold each
    batch's mean and unbiased variance: no extra pass)."""

    def __init__(self):
        self.stats: dict[_BatchNorm, list] = {}  # layer -> [count, mean, m2] in float64
        self.counts: dict[_BatchNorm, int] = {}  # masked layer -> positions of its last batch

    def merge(self, m: _BatchNorm, inputs: tuple, _output) -> None:
        n = self.counts.get(m) or inputs[0].numel() // inputs[0].shape[1]
        mean, m2 = m.running_mean.double(), m.running_var.double() * (n - 1)
        if m not in self.stats:
            self.stats[m] = [n, mean, m2]
            return
        count, total_mean, total_m2 = self.stats[m]  # Chan et al.'s parallel variance update
        delta = mean - total_mean
        self.stats[m] = [count + n, total_mean + delta * n / (count + n),
                         total_m2 + m2 + delta**2 * count * n / (count + n)]

    def write(self) -> None:
        """Each layer's buffers: the statistics over every batch."""
        for m, (count, mean, m2) in self.stats.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(m2 / max(count - 1, 1))


def _run(forward: Callable[[Any], Any], batches: Iterable, num_images: int) -> None:
    """``forward`` on the first ``num_images`` images of ``batches``, without gradients.

    Raises:
        ValueError: ``batches`` holds no image.
    """
    seen = 0
    with torch.no_grad():
        for batch in batches:
            batch = batch[: num_images - seen]
            forward(batch)
            seen += len(batch)
            if seen >= num_images:
                break
    if seen == 0:
        raise ValueError("BN recalibration got no images")
    if seen < num_images:
        log.warning("BN recalibration: only %d of %d images available", seen, num_images)
