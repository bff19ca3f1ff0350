"""ResNet backbones of the torchvision definition (Bottleneck blocks), at any base width.

At ``width=64`` the parameter names equal torchvision's ``resnet50``/``resnet101``, so an ImageNet
state dict loads unchanged (its ``fc`` aside). Smaller widths keep the structure for the CPU
default. Follows the backbone contract of `detnas.supernet`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from detnas.blocks import NormLayer

DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class ResNetBackbone(nn.Module):
    """conv1/bn1/relu/maxpool + layer1..layer4; forward returns the four stage outputs."""

    last_channels = None  # the classifier pools C5 directly

    def __init__(self, depth: int = 50, width: int = 64, norm_layer: NormLayer = nn.BatchNorm2d):
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

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, width, H/4, W/4)
        out = OrderedDict()
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out[str(i)] = x  # (N, stage_channels[i], H/2^(i+2), W/2^(i+2))
        return out
