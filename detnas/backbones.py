"""Build any backbone of the study from its spec, the dict that ``arch.json`` files carry.

``{"kind": "shufflenet", "space": "300M", "arch": "2120-2112-33130031-3132"}`` is a network of the
DetNAS search space; ``{"kind": "resnet", "depth": 50, "width": 64}`` a torchvision-style ResNet,
and ``{"kind": "resnet", ..., "dilations": {"layer2.0": "1,2,2,3", ...}}`` its NATS transformation
(see `detnas.resnet`). Other keys (provenance) are ignored.
"""

from __future__ import annotations

from torch import nn

from detnas.blocks import NormLayer
from detnas.space import Arch


def shufflenet_spec(arch: Arch) -> dict:
    return {"kind": "shufflenet", "space": arch.space, "arch": str(arch)}


def build_backbone(spec: dict, norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Module:
    """The standalone backbone described by ``spec``.

    Raises:
        ValueError: unknown kind or bad fields.
    """
    kind = spec.get("kind")
    if kind == "shufflenet":
        from detnas.supernet import Backbone

        return Backbone(Arch.parse(spec["arch"], spec["space"]), norm_layer)
    if kind == "resnet":
        from detnas.resnet import ResNetBackbone

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
    from detnas.resnet import parse_dilations

    dilations = spec.get("dilations") or {}
    dilated = sum(set(parse_dilations(e)) != {(1, 1)} for e in dilations.values())
    return (f"ResNet-{spec.get('depth', 50)}"
            + (f" width {spec['width']}" if spec.get("width", 64) != 64 else "")
            + (f" NATS ({dilated}/{len(dilations)} blocks dilated)" if dilations else ""))
