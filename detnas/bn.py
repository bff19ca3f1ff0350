"""BN recalibration: exact batch-norm statistics of one supernet path, restored afterwards.

The supernet's running statistics mix all paths, so before a candidate is evaluated its BN layers
get the mean and variance of their inputs over a fixed set of training images, run through the
candidate's path in train mode without gradients (the DetNAS reference). The statistics are exact
over all images (the mean and unbiased variance a single batch of all of them would record), not
an exponential or per-batch average; ``momentum=0.1`` gives the reference's running average
instead (DetNAS ``distributed_arch_search/test_server.py``: reset, then 500 batches at torch's
default momentum, dominated by the last few). Every BN buffer and training flag is restored on
exit, so candidates never leak into each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)


def _batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
def recalibrated(
    module: nn.Module,
    batches: Iterable[torch.Tensor | list[torch.Tensor]],
    num_images: int,
    forward: Callable[[Any], Any] | None = None,
    momentum: float | None = None,
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

    Raises:
        ValueError: ``num_images`` < 1 or ``batches`` holds no image.
    """
    if num_images < 1:
        raise ValueError(f"BN recalibration needs num_images >= 1, got {num_images}")
    forward = forward or module
    norms = _batch_norms(module)
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(),
              m.num_batches_tracked.clone()) for m in norms]
    flags = [(m, m.training) for m in module.modules()]
    stats: dict[_BatchNorm, list] = {}  # layer -> [count, mean, m2] in float64

    def merge(m: _BatchNorm, inputs: tuple, _output) -> None:
        # momentum 1 makes the buffers this batch's mean and unbiased variance (no extra pass).
        n = inputs[0].numel() // inputs[0].shape[1]
        mean, m2 = m.running_mean.double(), m.running_var.double() * (n - 1)
        if m not in stats:
            stats[m] = [n, mean, m2]
            return
        count, total_mean, total_m2 = stats[m]  # Chan et al.'s parallel variance update
        delta = mean - total_mean
        stats[m] = [count + n, total_mean + delta * n / (count + n),
                    total_m2 + m2 + delta**2 * count * n / (count + n)]

    hooks = [m.register_forward_hook(merge) for m in norms] if momentum is None else []
    try:
        module.train()
        for m in norms:
            m.reset_running_stats()
            m.momentum = 1.0 if momentum is None else momentum
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
        for hook in hooks:
            hook.remove()
        for m, (count, mean, m2) in stats.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(m2 / max(count - 1, 1))
        for m, (momentum, *_buffers) in zip(norms, saved, strict=True):
            m.momentum = momentum
        for m, training in flags:
            m.training = training
        yield module
    finally:
        for hook in hooks:
            hook.remove()
        for m, (momentum, mean, var, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
        for m, training in flags:
            m.training = training
