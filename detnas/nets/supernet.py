"""The one-shot supernet, the standalone backbone of one architecture, and the classifier head.

Both backbones follow the torchvision detection contract: ``forward`` returns an ``OrderedDict``
of the four stage outputs (C2..C5, strides 4..32, keys ``"0"``..``"3"``), ``stage_channels`` gives
their widths, ``out_channels`` the width of the last one, and ``norm_layer`` is injectable
(BatchNorm2d, SyncBatchNorm via conversion, torchvision's FrozenBatchNorm2d).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from detnas.nets.blocks import ChoiceBlock, NormLayer, conv_bn
from detnas.plan.space import CHOICES, Arch, get_space


class _Backbone(nn.Module):
    """What both backbones share: the first conv and the stage bookkeeping."""

    def __init__(self, space: str, norm_layer: NormLayer):
        super().__init__()
        sp = get_space(space)
        self.space = space
        self.stage_channels = tuple(sp.stage_channels)
        self.out_channels = sp.stage_channels[-1]
        self.last_channels = sp.last_channels  # width of the classifier's 1x1 last conv
        self.stem = nn.Sequential(*conv_bn(3, sp.first_channels, 3, norm_layer, 2, relu=True))
        self._layout = sp.block_layout()
        self._stage_ends = {i for i, (stage, *_rest) in enumerate(self._layout)
                            if i + 1 == len(self._layout) or self._layout[i + 1][0] != stage}

    def _block(self, i: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(x)  # (N, first, H/2, W/2)
        out = OrderedDict()
        for i in range(len(self._layout)):
            x = self._block(i)(x)
            if i in self._stage_ends:
                out[str(len(out))] = x  # (N, stage_channels[s], H/2^(s+2), W/2^(s+2))
        return out


class Backbone(_Backbone):
    """The standalone network of one architecture."""

    def __init__(self, arch: Arch, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__(arch.space, norm_layer)
        self.arch = arch
        self.blocks = nn.ModuleList(
            ChoiceBlock(choice, cin, cout, stride, norm_layer)
            for choice, (_stage, cin, cout, stride) in zip(arch.choices, self._layout, strict=True)
        )

    def _block(self, i: int) -> nn.Module:
        return self.blocks[i]


class Supernet(_Backbone):
    """All four choices at every block; runs the one path chosen by `use` / `set_path`."""

    def __init__(self, space: str, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__(space, norm_layer)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                ChoiceBlock(choice, cin, cout, stride, norm_layer) for choice in range(len(CHOICES))
            )
            for _stage, cin, cout, stride in self._layout
        )
        self.path: Arch | None = None

    def set_path(self, arch: Arch | None) -> None:
        if arch is not None and arch.space != self.space:
            raise ValueError(f"arch of space {arch.space} on a supernet of space {self.space}")
        self.path = arch

    @contextmanager
    def use(self, arch: Arch) -> Iterator[Supernet]:
        """Run ``arch``'s path inside the block: ``with supernet.use(arch): supernet(x)``."""
        previous = self.path
        self.set_path(arch)
        try:
            yield self
        finally:
            self.path = previous

    def _block(self, i: int) -> nn.Module:
        if self.path is None:
            raise RuntimeError("the supernet has no path: call set_path(arch) or use(arch) first")
        return self.blocks[i][self.path.choices[i]]

    def path_parameters(self, arch: Arch) -> Iterator[nn.Parameter]:
        """The parameters on ``arch``'s path (first conv and the chosen blocks)."""
        yield from self.stem.parameters()
        for block, choice in zip(self.blocks, arch.choices, strict=True):
            yield from block[choice].parameters()

    def extract(self, arch: Arch, norm_layer: NormLayer = nn.BatchNorm2d) -> Backbone:
        """A standalone `Backbone` of ``arch`` holding copies of this supernet's weights."""
        net = Backbone(arch, norm_layer)
        source = self.state_dict()
        state = {}
        for key in net.state_dict():
            if key.startswith("blocks."):
                _, i, rest = key.split(".", 2)
                state[key] = source[f"blocks.{i}.{arch.choices[int(i)]}.{rest}"]
            else:
                state[key] = source[key]
        net.load_state_dict(state)
        return net.to(next(self.parameters()).device)


class Classifier(nn.Module):
    """Backbone + 1x1 last conv (+ Dropout2d) + global average pool + FC (the ImageNet-style
    network of the reference).

    Works around any backbone of the contract; one with ``last_channels = None`` (ResNet) gets
    no last conv and no dropout.
    """

    def __init__(self, backbone: nn.Module, num_classes: int,
                 norm_layer: NormLayer = nn.BatchNorm2d, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        last_channels = getattr(backbone, "last_channels", None)
        self.last = (
            nn.Sequential(*conv_bn(backbone.out_channels, last_channels, 1, norm_layer, relu=True))
            if last_channels
            else nn.Identity()
        )
        self.dropout = nn.Dropout2d(dropout) if last_channels and dropout else nn.Identity()
        self.fc = nn.Linear(last_channels or backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = next(reversed(self.backbone(x).values()))  # C5: (N, C, H/32, W/32)
        x = self.dropout(self.last(x)).mean((2, 3))  # (N, last_channels)
        return self.fc(x)  # (N, num_classes)

    def extract(self, arch: Arch, norm_layer: NormLayer = nn.BatchNorm2d) -> Classifier:
        """The standalone classifier of ``arch`` with copied weights (around a supernet only)."""
        if not isinstance(self.backbone, Supernet):
            raise TypeError("extract needs a classifier around a supernet")
        dropout = self.dropout.p if isinstance(self.dropout, nn.Dropout2d) else 0.0
        net = Classifier(self.backbone.extract(arch, norm_layer), self.fc.out_features,
                         norm_layer, dropout)
        net.last.load_state_dict(self.last.state_dict())
        net.fc.load_state_dict(self.fc.state_dict())
        return net.to(next(self.parameters()).device)


def reference_init(model: Classifier) -> None:
    """The reference's initialisation of a ShuffleNet classifier (DetNAS
    ``Supernet-ImageNet/detnasnet.py``): convs N(0, 1 / weight.shape[1]), the first conv
    N(0, 0.01), BN weight 1 and bias 1e-4, FC N(0, 0.01) with bias 0."""
    stem = set(model.backbone.stem.modules())
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 0.01 if m in stem else 1.0 / m.weight.shape[1])
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 1e-4)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
