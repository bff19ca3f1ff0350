"""ResNet backbones of the torchvision definition (Bottleneck blocks), at any base width.

At ``width=64`` the parameter names equal torchvision's ``resnet50``/``resnet101``, so an ImageNet
state dict loads unchanged (its ``fc`` aside). Smaller widths keep the structure for the CPU
default. Follows the backbone contract of `detnas.nets.supernet`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from detnas.nets.blocks import NormLayer
from detnas.plan.dilations import DEPTHS, Dilation, format_dilations, parse_dilations


def check_grouping(out_channels: int, conv_groups: int, groups: int, where: str) -> int:
    """Channels per group of ``groups`` equal groups of a conv's outputs.

    Raises:
        ValueError: the groups do not divide the channels, or (grouped conv, ResNeXt) do not
            consist of whole cardinality groups.
    """
    if groups < 1 or out_channels % groups:
        raise ValueError(f"{where}: {groups} channel groups do not divide {out_channels} channels")
    size, per_card = out_channels // groups, out_channels // conv_groups
    if conv_groups > 1 and size % per_card:
        raise ValueError(
            f"{where}: channel groups of {size} channels do not align with the conv's cardinality "
            f"{conv_groups} ({per_card} channels per cardinality group); use a number of groups "
            f"that divides {conv_groups}"
        )
    return size


def conv_padding(kernel_size: tuple[int, int], dilation: Dilation) -> tuple[int, int]:
    """Padding that keeps the spatial size of a stride-1 conv (= the dilation for 3x3)."""
    return dilation[0] * (kernel_size[0] // 2), dilation[1] * (kernel_size[1] // 2)


class DilatedConv2d(nn.Module):
    """A conv whose equal contiguous output-channel groups each use their own dilation.

    Holds exactly the ``weight`` (and ``bias``) of the `nn.Conv2d` it replaces; runs one conv per
    contiguous run of equal dilations on that run's output (and, grouped, input) channels, so its
    parameters and multiply-adds equal the plain conv's.
    """

    def __init__(self, conv: nn.Conv2d, dilations, where: str = "conv"):
        super().__init__()
        dilations = tuple(tuple(d) for d in dilations)
        size = check_grouping(conv.out_channels, conv.groups, len(dilations), where)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.groups = conv.kernel_size, conv.stride, conv.groups
        self.weight = conv.weight  # the same Parameter: (out, in / groups, kh, kw)
        self.bias = conv.bias
        self.dilations = dilations
        self._runs: list[tuple[int, int, Dilation]] = []  # (first channel, end channel, dilation)
        for i, d in enumerate(dilations):
            if self._runs and self._runs[-1][2] == d:
                self._runs[-1] = (self._runs[-1][0], (i + 1) * size, d)
            else:
                self._runs.append((i * size, (i + 1) * size, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_per, in_per = self.out_channels // self.groups, self.in_channels // self.groups
        outs = []
        for start, end, d in self._runs:
            first, last = start // out_per, max(1, end // out_per)  # its cardinality groups
            xs = x if self.groups == 1 else x[:, first * in_per : last * in_per]
            bias = None if self.bias is None else self.bias[start:end]
            outs.append(F.conv2d(xs, self.weight[start:end], bias, self.stride,
                                 conv_padding(self.kernel_size, d), d, last - first))
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)  # (N, out, H', W')

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, "
                f"dilations={format_dilations(self.dilations)}")


def bottlenecks(net: nn.Module, stages=(1, 2, 3, 4)) -> dict[str, Bottleneck]:
    """The bottlenecks of ``layer<s>`` for ``s`` in ``stages``, by name (``"layer2.0"``).

    Works on `ResNetBackbone` and torchvision's ``ResNet``/ResNeXt alike.
    """
    return {f"layer{s}.{i}": block for s in stages
            for i, block in enumerate(getattr(net, f"layer{s}"))}


class ResNetBackbone(nn.Module):
    """conv1/bn1/relu/maxpool + layer1..layer4; forward returns the four stage outputs."""

    last_channels = None  # the classifier pools C5 directly

    def __init__(self, depth: int = 50, width: int = 64, norm_layer: NormLayer = nn.BatchNorm2d,
                 dilations: dict[str, str] | None = None):
        """A ResNet of ``depth`` at base ``width``.

        Args:
            dilations: NATS transformation, ``{"layer2.0": "1,2,2,3", ...}``: the listed blocks'
                ``conv2`` become `DilatedConv2d` with these per-group dilations.

        Raises:
            ValueError: unknown depth, unknown block name or bad dilation encoding.
        """
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth {depth} not supported (known: {sorted(DEPTHS)})")
        self.depth, self.width = depth, width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = width
        self.stage_channels = ()
        for i, blocks in enumerate(DEPTHS[depth]):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            out = planes * Bottleneck.expansion
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride, bias=False), norm_layer(out)
            )
            layer = [Bottleneck(in_channels, planes, stride, downsample, norm_layer=norm_layer)]
            layer += [Bottleneck(out, planes, norm_layer=norm_layer) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            self.stage_channels += (out,)
            in_channels = out
        self.out_channels = in_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # torchvision's zero_init_residual
        self.dilations = dict(dilations or {})
        blocks = bottlenecks(self)
        for name, text in self.dilations.items():
            if name not in blocks:
                raise ValueError(f"dilations: unknown block {name!r} of ResNet-{depth} "
                                 f"(known: {', '.join(blocks)})")
            where = f"dilations[{name!r}] = {text!r}"
            try:
                choice = parse_dilations(text)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            blocks[name].conv2 = DilatedConv2d(blocks[name].conv2, choice, where)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, width, H/4, W/4)
        out = OrderedDict()
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out[str(i)] = x  # (N, stage_channels[i], H/2^(i+2), W/2^(i+2))
        return out
