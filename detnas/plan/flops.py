"""Exact FLOPs and parameter counts of architectures, from a per-block table (pure Python).

Convention of the DetNAS reference: FLOPs are multiply-accumulates of convolutions (and of the FC
for the classifier), ``in * out * k * k * h_out * w_out / groups``; BN, ReLU, pooling and shuffles
are free. Parameters are every trainable tensor element (conv weights, BN affine, FC weight and
bias). The backbone is the first conv plus the choice blocks; the classifier adds the 1x1 last conv
and the FC. ``tests/test_flops.py`` checks them against torch's FLOP counter on the modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from detnas.plan.space import CHOICES, KERNEL_SIZES, Arch, get_space


def conv_out(size: int, kernel_size: int, stride: int) -> int:
    """Output size of a conv with padding ``kernel_size // 2``."""
    pad = kernel_size // 2
    return (size + 2 * pad - kernel_size) // stride + 1


@dataclass(frozen=True)
class Cost:
    flops: int
    params: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.params + other.params)


ZERO = Cost(0, 0)


def conv_bn(in_channels, out_channels, kernel_size, size_out, groups=1) -> Cost:
    """A bias-free conv followed by BN, at output resolution ``size_out`` x ``size_out``."""
    weights = in_channels * out_channels * kernel_size * kernel_size // groups
    return Cost(weights * size_out * size_out, weights + 2 * out_channels)


def block_cost(choice: int, in_channels: int, out_channels: int, stride: int, size_in: int) -> Cost:
    """Cost of one choice block (see `detnas.nets.blocks` for the structure)."""
    k = KERNEL_SIZES[choice]
    size_out = conv_out(size_in, 3, stride)  # every odd kernel gives the same size
    mid = out_channels // 2
    if stride == 1:
        main_in = main_out = in_channels // 2
        proj = ZERO
    else:
        main_in, main_out = in_channels, out_channels - in_channels
        proj = conv_bn(in_channels, in_channels, k, size_out, groups=in_channels) + conv_bn(
            in_channels, in_channels, 1, size_out
        )
    if CHOICES[choice] == "xception":
        main = (
            conv_bn(main_in, main_in, 3, size_out, groups=main_in)
            + conv_bn(main_in, mid, 1, size_out)
            + conv_bn(mid, mid, 3, size_out, groups=mid)
            + conv_bn(mid, mid, 1, size_out)
            + conv_bn(mid, mid, 3, size_out, groups=mid)
            + conv_bn(mid, main_out, 1, size_out)
        )
    else:
        main = (
            conv_bn(main_in, mid, 1, size_in)
            + conv_bn(mid, mid, k, size_out, groups=mid)
            + conv_bn(mid, main_out, 1, size_out)
        )
    return main + proj


@dataclass(frozen=True)
class CostTable:
    """Costs of the fixed parts and of every (block, choice) of a space at one input size."""

    stem: Cost
    blocks: tuple[tuple[Cost, ...], ...]  # [block][choice]
    head: Cost  # last conv + FC

    def backbone(self, arch: Arch) -> Cost:
        total = self.stem
        for costs, choice in zip(self.blocks, arch.choices, strict=True):
            total = total + costs[choice]
        return total

    def backbone_flops(self, arch: Arch) -> int:
        """Backbone FLOPs only: the hot path of the search's FLOPs filter."""
        return self.stem.flops + sum(c[i].flops for c, i in zip(self.blocks, arch.choices))  # noqa: B905

    def backbone_params(self, arch: Arch) -> int:
        """Backbone parameters only (the search's params filter)."""
        return self.stem.params + sum(c[i].params for c, i in zip(self.blocks, arch.choices))  # noqa: B905

    def classifier(self, arch: Arch) -> Cost:
        return self.backbone(arch) + self.head

    def classifier_flops(self, arch: Arch) -> int:
        """Classifier FLOPs: what the reference's supernet sampling bins (SPOS ``flops.py``)."""
        return self.backbone_flops(arch) + self.head.flops

    def floor(self) -> Cost:
        """The backbone FLOPs and the backbone params of the cheapest architectures (each its
        own: the cheapest choice per block, by FLOPs and by params)."""
        return Cost(self.stem.flops + sum(min(c.flops for c in costs) for costs in self.blocks),
                    self.stem.params + sum(min(c.params for c in costs) for costs in self.blocks))

    def flops_range(self, classifier: bool = False) -> tuple[int, int]:
        """The FLOPs of the cheapest and of the dearest architecture (backbone, or classifier)."""
        base = self.stem.flops + (self.head.flops if classifier else 0)
        return (base + sum(min(c.flops for c in costs) for costs in self.blocks),
                base + sum(max(c.flops for c in costs) for costs in self.blocks))

    def reaches(self, low: float, high: float, classifier: bool = False,
                budget: int = 50_000) -> bool:
        """Whether some architecture has FLOPs (backbone, or classifier) in ``[low, high]``.

        Exact: a depth-first search over the blocks, pruned where the cheapest and the dearest
        completion of a partial architecture both miss the range, done where both fall in it.
        Bins of a few million FLOPs in the paper's spaces take milliseconds; past ``budget``
        partial architectures (a tenth of a second) the answer is True: not known to be empty.
        """
        options = [sorted({c.flops for c in costs}) for costs in self.blocks]
        rest_min, rest_max = [0] * (len(options) + 1), [0] * (len(options) + 1)
        for i in reversed(range(len(options))):
            rest_min[i] = rest_min[i + 1] + options[i][0]
            rest_max[i] = rest_max[i + 1] + options[i][-1]
        dead: set[tuple[int, int]] = set()

        def search(i: int, total: int) -> bool:
            lo, hi = total + rest_min[i], total + rest_max[i]
            if hi < low or lo > high or (i, total) in dead:
                return False
            if low <= lo and hi <= high or len(dead) > budget:
                return True
            if any(search(i + 1, total + f) for f in options[i]):
                return True
            dead.add((i, total))
            return False

        return search(0, self.stem.flops + (self.head.flops if classifier else 0))


@lru_cache(maxsize=64)
def cost_table(space: str, input_size: int = 224, num_classes: int = 1000) -> CostTable:
    """The cost table of ``space``, computed once per (space, input size, classes)."""
    sp = get_space(space)
    size = conv_out(input_size, 3, 2)
    stem = conv_bn(3, sp.first_channels, 3, size)
    blocks = []
    for _stage, in_channels, out_channels, stride in sp.block_layout():
        blocks.append(
            tuple(
                block_cost(c, in_channels, out_channels, stride, size) for c in range(len(CHOICES))
            )
        )
        size = conv_out(size, 3, stride)
    last = conv_bn(sp.stage_channels[-1], sp.last_channels, 1, size)
    fc = Cost(sp.last_channels * num_classes, sp.last_channels * num_classes + num_classes)
    return CostTable(stem, tuple(blocks), last + fc)


def backbone_flops(arch: Arch, input_size: int = 224) -> int:
    return cost_table(arch.space, input_size).backbone_flops(arch)


def summary(arch: Arch, input_size: int = 224, num_classes: int = 1000) -> dict:
    """FLOPs and params of ``arch`` as a JSON-ready dict (the keys of `detnas arch show --json`)."""
    table = cost_table(arch.space, input_size, num_classes)
    backbone, classifier = table.backbone(arch), table.classifier(arch)
    return {
        "arch": str(arch),
        "space": arch.space,
        "input_size": input_size,
        "backbone_flops": backbone.flops,
        "backbone_params": backbone.params,
        "classifier_flops": classifier.flops,
        "classifier_params": classifier.params,
    }


def count(module, input_size: int) -> Cost:
    """FLOPs (the convention above) and params of a torch module, measured by running it on one
    ``input_size`` x ``input_size`` image under torch's FLOP counter, which sees every conv and
    matmul call (also the functional ones of NATS's dilated layers): the cross-check of the
    tables, and the count for backbones outside the search space (ResNet, NATS)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    device = next(module.parameters()).device
    try:
        module.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        module.train(was_training)
    macs = counter.get_total_flops() // 2  # torch counts a multiply-accumulate as 2 FLOPs
    return Cost(macs, sum(p.numel() for p in module.parameters()))
