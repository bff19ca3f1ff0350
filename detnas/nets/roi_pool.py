"""Faster R-CNN's RoI pooler with a fast CPU backward.

torchvision's `MultiScaleRoIAlign` (the reference's pooler: 7x7 bins, 2x2 samples per bin,
``aligned=False``) has a CPU backward that walks every sample of every output element one by
one: on the embedded default it costs four times the forward and a quarter of a Faster R-CNN
training step. RoIAlign is linear in the feature map: the output is a sparse matrix S (one row
per output bin, a few bilinear weights per row, the same for every channel) times the feature map
(one row per pixel, one column per channel), so its gradient is Sᵀ times the output's gradient:
one sparse product. `RoIPooler` keeps torchvision's forward (same kernel, same bits) and level
mapping, and computes that product in the backward (the same gradient, summed in another order).
`benchmarks/bench_roi_pool.py` measures it; on a GPU, and for adaptive sampling
(``sampling_ratio <= 0``, a grid that varies per RoI), torchvision's own backward runs.

The pooler does what `MultiScaleRoIAlign.forward` does with two private functions of torchvision
(`PRIVATE`) and the pooler's attributes (`POOLER_STATE`); on a torchvision without them this
module does not import, and says what is missing (tests/test_roi_pool.py pins their behaviour).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align

PRIVATE = {
    "torchvision.ops._utils.convert_boxes_to_roi_format": ("boxes",),
    "torchvision.ops.poolers._setup_scales": ("features", "image_shapes", "canonical_scale",
                                              "canonical_level"),
}
"""torchvision's private functions the pooler calls, with their parameters (passed by position):
written against torchvision 0.29."""
POOLER_STATE = ("featmap_names", "output_size", "sampling_ratio", "scales", "map_levels",
                "canonical_scale", "canonical_level")
"""The attributes of a `MultiScaleRoIAlign` that the pooler reads (and sets: the scales and the
level mapper, computed at the first forward)."""


def _changed(what: str) -> str:
    return (f"detnas.nets.roi_pool: torchvision {torchvision.__version__} changed what the RoI "
            f"pooler relies on: {what} (written against torchvision 0.29: install that, or adapt "
            "detnas/nets/roi_pool.py)")


def _private(path: str) -> Callable:
    """torchvision's private function ``path``, checked against `PRIVATE`.

    Raises:
        ImportError: it is gone or takes other parameters (naming torchvision's version).
    """
    module, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ImportError(_changed(f"{path} is gone")) from None
    params = tuple(inspect.signature(function).parameters)
    if params != PRIVATE[path]:
        raise ImportError(_changed(f"{path} takes ({', '.join(params)}), not "
                                   f"({', '.join(PRIVATE[path])})"))
    return function


def check_pooler_state() -> None:
    """Raises ImportError (naming torchvision's version) where a `MultiScaleRoIAlign` lacks an
    attribute of `POOLER_STATE`."""
    pooler = MultiScaleRoIAlign(["0"], 7, 2)
    missing = [a for a in POOLER_STATE if not hasattr(pooler, a)]
    if missing:
        raise ImportError(_changed(f"a MultiScaleRoIAlign has no {', '.join(missing)}"))


convert_boxes_to_roi_format = _private("torchvision.ops._utils.convert_boxes_to_roi_format")
_setup_scales = _private("torchvision.ops.poolers._setup_scales")
check_pooler_state()


def _axis_samples(start: Tensor, length: Tensor, bins: int, grid: int, size: int
                  ) -> tuple[Tensor, Tensor]:
    """Along one axis, for each RoI and bin, the pixels its samples read and their weights:
    ``(N, bins, 2 * grid)`` indices and weights (each sample's lower and upper neighbour), as
    torchvision's bilinear interpolation reads them (a sample more than one pixel outside the map
    reads nothing; one inside the last pixel reads only it)."""
    offsets = torch.arange(bins, dtype=start.dtype, device=start.device)[:, None] + (
        torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5) / grid
    pos = start[:, None, None] + offsets * (length / bins)[:, None, None]
    inside = ((pos >= -1.0) & (pos <= size)).to(pos.dtype)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    last = low >= size - 1
    low = torch.where(last, torch.full_like(low, size - 1), low)
    pos = torch.where(last, low.to(pos.dtype), pos)
    high = torch.where(last, low, low + 1)
    frac = pos - low
    index = torch.stack([low, high], -1).flatten(2)
    weight = torch.stack([(1 - frac) * inside, frac * inside], -1).flatten(2)
    return index, weight


class _RoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign forward (``aligned=False``), the sparse product's backward."""

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, bins: int, scale: float, grid: int) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.shape, ctx.dtype = features.shape, features.dtype
        ctx.bins, ctx.scale, ctx.grid = bins, scale, grid
        return roi_align(features, rois, bins, scale, grid, False)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        (batch, channels, height, width), bins, grid = ctx.shape, ctx.bins, ctx.grid
        boxes = rois[:, 1:] * ctx.scale
        x0, y0 = boxes[:, 0], boxes[:, 1]
        rows, row_w = _axis_samples(y0, (boxes[:, 3] - y0).clamp(min=1.0), bins, grid, height)
        cols, col_w = _axis_samples(x0, (boxes[:, 2] - x0).clamp(min=1.0), bins, grid, width)
        image = rois[:, 0].long()
        # S's entries, indexed (roi, bin row, bin column, sample row, sample column)
        pixel = ((image[:, None, None, None, None] * height + rows[:, :, None, :, None]) * width
                 + cols[:, None, :, None, :])
        weight = row_w[:, :, None, :, None] * col_w[:, None, :, None, :] / (grid * grid)
        out_bin = torch.arange(rois.shape[0] * bins * bins, device=rois.device)
        out_bin = out_bin.repeat_interleave(pixel.shape[3] * pixel.shape[4])
        s_t = torch.sparse_coo_tensor(torch.stack([pixel.flatten(), out_bin]),
                                      weight.flatten().to(grad.dtype),
                                      (batch * height * width, rois.shape[0] * bins * bins),
                                      check_invariants=False)
        g = torch.sparse.mm(s_t, grad.permute(0, 2, 3, 1).reshape(-1, channels))
        g = g.view(batch, height, width, channels).permute(0, 3, 1, 2).to(ctx.dtype)
        return g, None, None, None, None


class RoIPooler(MultiScaleRoIAlign):
    """`MultiScaleRoIAlign` (same levels, bins, samples and forward bits) with the sparse-product
    backward on CPU."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        features = [x[name] for name in self.featmap_names]
        square = self.output_size[0] == self.output_size[1]
        if features[0].is_cuda or self.sampling_ratio <= 0 or not square:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level)
        bins = self.output_size[0]
        rois = convert_boxes_to_roi_format(boxes)
        levels = self.map_levels(boxes)
        out = features[0].new_zeros((rois.shape[0], features[0].shape[1], bins, bins))
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            idx = torch.where(levels == level)[0]
            out[idx] = _RoIAlign.apply(feature, rois[idx], bins, scale, self.sampling_ratio)
        return out

    def as_torchvision(self) -> MultiScaleRoIAlign:
        """torchvision's pooler with the same settings and state (TorchScript, which cannot
        compile an autograd Function, exports it: the forward is the same)."""
        plain = MultiScaleRoIAlign(self.featmap_names, self.output_size, self.sampling_ratio,
                                   canonical_scale=self.canonical_scale,
                                   canonical_level=self.canonical_level)
        plain.scales, plain.map_levels = self.scales, self.map_levels
        return plain
