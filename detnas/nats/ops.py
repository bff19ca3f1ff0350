"""The searchable conv of NATS: one 3x3 weight, per channel group a softmax mix over dilations.

`make_searchable` swaps the ``conv2`` of ResNet/ResNeXt bottlenecks for a `DilationMixConv` that
keeps the very same ``weight`` Parameter (so state dicts of the plain network load by name) and adds
one architecture parameter ``alpha`` (groups x candidates). `arch_parameters` lists them: the
search's Adam steps them, its SGD (`detnas.run.engine.make_optimizer`) every other parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detnas.nets.resnet import DilatedConv2d, bottlenecks, check_grouping, conv_padding
from detnas.plan.dilations import check_candidates

ALPHA = "alpha"  # the state-dict name of the architecture parameter inside a searched conv


class DilationMixConv(nn.Module):
    """``conv``'s weight applied with every candidate dilation, mixed per output-channel group.

    Output channel ``c`` of group ``g`` is ``sum_k softmax(alpha[g])[k] * conv_k(x)[c]``, with
    ``conv_k`` the original conv (stride, groups, bias) at dilation ``candidates[k]`` and padding
    equal to the dilation. The forward costs one convolution per candidate.
    """

    def __init__(self, conv: nn.Conv2d, candidates, groups: int, where: str = "conv"):
        """Wrap ``conv`` (its ``weight``/``bias`` Parameters are shared, not copied).

        Raises:
            ValueError: no candidates, bad dilations, or groups that do not divide the output
                channels or (ResNeXt) do not align with the cardinality.
        """
        super().__init__()
        self.candidates = check_candidates(candidates, where)
        self.group_size = check_grouping(conv.out_channels, conv.groups, groups, where)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.groups = conv.kernel_size, conv.stride, conv.groups
        self.weight = conv.weight  # (out, in / groups, kh, kw), the pretrained Parameter itself
        self.bias = conv.bias
        # (G, K), on the conv's device: a model already on the GPU can be made searchable
        self.alpha = nn.Parameter(torch.zeros(groups, len(self.candidates),
                                              device=conv.weight.device))

    @property
    def num_groups(self) -> int:
        return self.alpha.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = F.softmax(self.alpha, dim=-1)  # (G, K)
        out = None
        for k, d in enumerate(self.candidates):
            y = F.conv2d(x, self.weight, None, self.stride, conv_padding(self.kernel_size, d), d,
                         self.groups)  # (N, out, H', W')
            n, _, h, w = y.shape
            y = y.view(n, self.num_groups, self.group_size, h, w) * mix[:, k].view(1, -1, 1, 1, 1)
            out = y if out is None else out + y
        out = out.view(n, self.out_channels, h, w)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def choice(self) -> tuple[tuple[int, int], ...]:
        """The derived dilation of every group: the argmax of its alpha."""
        return tuple(self.candidates[k] for k in self.alpha.argmax(dim=-1).tolist())

    def fixed(self, dilations=None) -> DilatedConv2d:
        """The deployable layer of ``dilations`` (default: `choice`), sharing this weight."""
        return DilatedConv2d(self, dilations or self.choice())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, channel_groups={self.num_groups}, "
                f"candidates={list(self.candidates)}")


def make_searchable(net: nn.Module, candidates, groups: int = 4, group_width: int = 0,
                    stages=(1, 2, 3, 4)) -> dict[str, DilationMixConv]:
    """Replace, in place, the ``conv2`` of every bottleneck of ``stages`` by a `DilationMixConv`.

    Args:
        net: a `detnas.nets.resnet.ResNetBackbone` or torchvision ResNet/ResNeXt (weights loaded
        first).
        candidates: dilations ``[[1, 1], [2, 2], ...]``.
        groups: equal channel groups per conv (1 = path-level search).
        group_width: channels per group instead of a group count (0 = use ``groups``).
        stages: which ``layer<s>`` to search.

    Returns:
        The searched convs by block name (``"layer2.0"``).

    Raises:
        ValueError: a grouping that does not fit a layer (the message names the layer).
    """
    layers = {}
    for name, block in bottlenecks(net, stages).items():
        conv = block.conv2
        where = f"nats: {name}.conv2 ({conv.out_channels} channels)"
        n = groups
        if group_width > 0:
            if conv.out_channels % group_width:
                raise ValueError(f"{where}: group_width {group_width} does not divide the channels")
            n = conv.out_channels // group_width
        block.conv2 = layers[name] = DilationMixConv(conv, candidates, n, where)
    return layers


def searched_layers(net: nn.Module) -> dict[str, DilationMixConv]:
    """The `DilationMixConv` layers of a backbone, by block name (``"layer2.0"``)."""
    return {name.removesuffix(".conv2"): m for name, m in net.named_modules()
            if isinstance(m, DilationMixConv)}


def arch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The architecture parameters (every ``alpha``) of a model, in module order."""
    return [m.alpha for m in model.modules() if isinstance(m, DilationMixConv)]


def is_arch_key(key: str) -> bool:
    """Whether a state-dict key names an architecture parameter."""
    return key.rsplit(".", 1)[-1] == ALPHA
