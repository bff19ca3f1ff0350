"""Build any backbone of the study from its spec, the dict that ``arch.json`` files carry.

``{"kind": "shufflenet", "space": "300M", "arch": "2120-2112-33130031-3132"}`` is a network of the
DetNAS search space; ``{"kind": "resnet", "depth": 50, "width": 64}`` a torchvision-style ResNet,
and ``{"kind": "resnet", ..., "dilations": {"layer2.0": "1,2,2,3", ...}}`` its NATS transformation
(see `detnas.nets.resnet`). Other keys (provenance) are ignored.

Every backbone built here can also be taken by torchvision's own wrappers: `StageBackbone` regroups
a ShuffleNet network as torchvision's ResNet is grouped (`RETURN_LAYERS`), and `ResNetBackbone`
already is.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from detnas.nets.blocks import NormLayer
from detnas.plan.space import Arch

RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
"""The stage outputs C2..C5 by child name, for torchvision's ``BackboneWithFPN`` /
``IntermediateLayerGetter`` (the names of torchvision's ResNet)."""


def shufflenet_spec(arch: Arch) -> dict:
    return {"kind": "shufflenet", "space": arch.space, "arch": str(arch)}


def read_spec(name_or_path: str | Path) -> dict:
    """A backbone spec from an ``arch.json`` file or a registered arch name (`detnas.plan.space`).

    Raises:
        ValueError: a missing or unreadable file, a file without ``kind``, an unknown name.
    """
    from detnas.io import load_json
    from detnas.plan.space import resolve

    if Path(name_or_path).suffix == ".json":
        spec = load_json(name_or_path)
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ValueError(f"{name_or_path}: no 'kind' field; not an arch spec")
        return spec
    return shufflenet_spec(resolve(str(name_or_path)))


def network_of(spec: dict) -> tuple:
    """The fields of ``spec`` that define the network (not its provenance or numbers)."""
    if spec.get("kind") == "shufflenet":
        return ("shufflenet", spec["space"], str(Arch.parse(spec["arch"], spec["space"])))
    return ("resnet", spec.get("depth", 50), spec.get("width", 64),
            sorted((spec.get("dilations") or {}).items()))


def build_backbone(spec: dict, norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Module:
    """The standalone backbone described by ``spec``.

    Raises:
        ValueError: unknown kind or bad fields.
    """
    kind = spec.get("kind")
    if kind == "shufflenet":
        from detnas.nets.supernet import Backbone

        return Backbone(Arch.parse(spec["arch"], spec["space"]), norm_layer)
    if kind == "resnet":
        from detnas.nets.resnet import ResNetBackbone

        dilations = spec.get("dilations") or {}
        if not isinstance(dilations, dict):
            raise ValueError(f"backbone spec field 'dilations': expected a mapping of block name "
                             f"to encoding like {{'layer2.0': '1,2,2,3'}}, got {dilations!r}")
        return ResNetBackbone(spec.get("depth", 50), spec.get("width", 64), norm_layer, dilations)
    raise ValueError(f"unknown backbone kind {kind!r} in spec {spec} (shufflenet, resnet)")


def describe(spec: dict) -> str:
    """One line naming the backbone, for logs and reports."""
    if spec.get("kind") == "shufflenet":
        return f"{spec['arch']} ({spec['space']})"
    from detnas.plan.dilations import parse_dilations

    dilations = spec.get("dilations") or {}
    dilated = sum(set(parse_dilations(e)) != {(1, 1)} for e in dilations.values())
    return (f"ResNet-{spec.get('depth', 50)}"
            + (f" width {spec['width']}" if spec.get("width", 64) != 64 else "")
            + (f" NATS ({dilated}/{len(dilations)} blocks dilated)" if dilations else ""))


class StageBackbone(nn.Module):
    """A ShuffleNet `detnas.nets.supernet.Backbone` grouped as torchvision's ResNet: children
    ``stem`` and ``layer1``..``layer4`` (the same modules), run in that order.

    torchvision's ``BackboneWithFPN(net, RETURN_LAYERS, net.stage_channels, ...)`` takes its stage
    outputs through ``IntermediateLayerGetter``; ``forward`` returns them too, as the detnas
    contract says (an OrderedDict of C2..C5 under ``"0"``..``"3"``).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.space, self.arch = net.space, net.arch
        self.stage_channels, self.out_channels = net.stage_channels, net.out_channels
        self.last_channels = net.last_channels
        self.stem = net.stem
        stages = [stage for stage, *_rest in net._layout]
        for s in range(len(self.stage_channels)):
            blocks = [b for b, stage in zip(net.blocks, stages, strict=True) if stage == s]
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c2 = self.layer1(self.stem(x))  # (N, stage_channels[0], H/4, W/4)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)  # (N, out_channels, H/32, W/32)
        return OrderedDict([("0", c2), ("1", c3), ("2", c4), ("3", c5)])


def torchvision_backbone(net: nn.Module) -> nn.Module:
    """``net`` with the children torchvision's wrappers take (`RETURN_LAYERS`)."""
    from detnas.nets.supernet import Backbone

    return StageBackbone(net) if isinstance(net, Backbone) else net
