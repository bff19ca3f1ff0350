"""The four choice blocks of the DetNAS / SPOS ShuffleNetV2 search space."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from detnas.plan.space import CHOICES, KERNEL_SIZES

NormLayer = Callable[[int], nn.Module]


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    norm_layer: NormLayer,
    stride: int = 1,
    depthwise: bool = False,
    relu: bool = False,
) -> list[nn.Module]:
    layers = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=in_channels if depthwise else 1,
            bias=False,
        ),
        norm_layer(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def shuffle_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel shuffle with 2 groups, then split in halves: (even channels, odd channels)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 2, 2, h, w)  # (N, C/2, 2, H, W)
    return x[:, :, 0], x[:, :, 1]


class ChoiceBlock(nn.Module):
    """A ShuffleNetV2 block with a k x k depthwise conv (k = 3, 5, 7) or the Xception-style block.

    Stride 1: the input is shuffled and split; one half passes through, the other goes through
    the main branch. Stride 2: a projection branch (k x k depthwise /2, 1x1) takes all input
    channels and the main branch outputs ``out - in`` channels.
    """

    def __init__(
        self,
        choice: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 block keeps its channels")
        self.choice, self.stride = choice, stride
        k = KERNEL_SIZES[choice]
        mid = out_channels // 2
        main_in = in_channels // 2 if stride == 1 else in_channels
        main_out = out_channels - main_in if stride == 1 else out_channels - in_channels
        if CHOICES[choice] == "xception":
            main = [
                *conv_bn(main_in, main_in, 3, norm_layer, stride, depthwise=True),
                *conv_bn(main_in, mid, 1, norm_layer, relu=True),
                *conv_bn(mid, mid, 3, norm_layer, depthwise=True),
                *conv_bn(mid, mid, 1, norm_layer, relu=True),
                *conv_bn(mid, mid, 3, norm_layer, depthwise=True),
                *conv_bn(mid, main_out, 1, norm_layer, relu=True),
            ]
        else:
            main = [
                *conv_bn(main_in, mid, 1, norm_layer, relu=True),
                *conv_bn(mid, mid, k, norm_layer, stride, depthwise=True),
                *conv_bn(mid, main_out, 1, norm_layer, relu=True),
            ]
        self.main = nn.Sequential(*main)
        self.proj = (
            nn.Sequential(
                *conv_bn(in_channels, in_channels, k, norm_layer, stride, depthwise=True),
                *conv_bn(in_channels, in_channels, 1, norm_layer, relu=True),
            )
            if stride == 2
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            passthrough, x = shuffle_split(x)
            return torch.cat((passthrough, self.main(x)), 1)
        return torch.cat((self.proj(x), self.main(x)), 1)
