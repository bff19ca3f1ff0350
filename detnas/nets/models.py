"""Whole models of the study (classifier or detector around a backbone or supernet), saved and
rebuilt from checkpoints that describe themselves.

A model checkpoint is a dict: ``model`` (state dict), ``task`` (classification | detection),
``backbone`` (a spec of `detnas.nets.backbones`, or ``{"kind": "supernet", "space": ...}``),
``num_classes``, ``detector`` and ``detector_cfg`` for detection, plus whatever the stage adds
(``step``, ``optimizer``, ``provenance``...).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from detnas.io import load_checkpoint
from detnas.nets.backbones import (
    build_backbone,
    describe,
    network_of,
    read_spec,
    shufflenet_spec,
    torchvision_backbone,
)
from detnas.nets.blocks import NormLayer
from detnas.nets.detection import build_detector, detector_backbone, replace_detector_backbone
from detnas.nets.supernet import Classifier, Supernet, reference_init
from detnas.plan.config import DetectorConfig
from detnas.plan.space import Arch
from detnas.plan.typed import from_dict, to_dict


def build_model(task: str, backbone: dict, num_classes: int, detector: str | None = None,
                detector_cfg: DetectorConfig | None = None,
                norm_layer: NormLayer = nn.BatchNorm2d, *, dropout: float = 0.0,
                init: str = "torch") -> nn.Module:
    """A classifier or a detector around the backbone ``backbone`` describes.

    ``dropout`` and ``init`` (``reference`` | ``torch``) shape a ShuffleNet classifier (supernet
    or fixed network) only: a ResNet keeps torchvision's initialisation and has no dropout.
    """
    body = (Supernet(backbone["space"], norm_layer) if backbone["kind"] == "supernet"
            else build_backbone(backbone, norm_layer))
    if task == "classification":
        model = Classifier(body, num_classes, norm_layer, dropout)
        if init == "reference" and backbone["kind"] in ("supernet", "shufflenet"):
            reference_init(model)
        return model
    if task == "detection":
        return build_detector(body, detector, num_classes, detector_cfg)
    raise ValueError(f"unknown task {task!r} (classification, detection)")


def model_meta(task: str, backbone: dict, num_classes: int, detector: str | None = None,
               detector_cfg: DetectorConfig | None = None) -> dict:
    """What a checkpoint must carry to rebuild its model (the detector settings added late, at
    their default, left out: `detnas.plan.typed.to_dict`)."""
    return {"task": task, "backbone": backbone, "num_classes": num_classes, "detector": detector,
            "detector_cfg": to_dict(detector_cfg) if detector_cfg else None}


def model_from_meta(meta: dict, norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Module:
    cfg = from_dict(DetectorConfig, meta["detector_cfg"]) if meta.get("detector_cfg") else None
    return build_model(meta["task"], meta["backbone"], meta["num_classes"], meta.get("detector"),
                       cfg, norm_layer)


def is_model_checkpoint(ckpt: dict) -> bool:
    return "task" in ckpt and "model" in ckpt


def load_model(path: str | Path, map_location="cpu",
               norm_layer: NormLayer = nn.BatchNorm2d) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path``; returns ``(model, checkpoint)``."""
    ckpt = load_checkpoint(path, map_location)
    if not is_model_checkpoint(ckpt):
        raise ValueError(f"{path}: not a detnas model checkpoint (no 'task'/'model' entries)")
    model = model_from_meta(ckpt, norm_layer)
    load_state(model, ckpt["model"], path, ckpt)
    return model, ckpt


def load_state(model: nn.Module, state: dict, path: str | Path, meta: dict) -> None:
    """Load the state dict ``state`` of checkpoint ``path`` (which describes its model as
    ``meta`` says) into ``model``, built from that description.

    Raises:
        ValueError: one line naming the file and the first tensor that differs from the model
            built here (e.g. a supernet of a space that another version of detnas defined
            otherwise), instead of torch's list of every difference.
    """
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: {_difference(model, state, meta) or _first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), repr(e))


def _difference(model: nn.Module, state: dict, meta: dict) -> str | None:
    """The first tensor of ``state`` of another shape than ``model``'s, else the first one
    either lacks (None if none)."""
    expected = model.state_dict()
    backbone = meta.get("backbone") or {}
    built = (f"the {meta.get('task')} model of space {backbone.get('space')} built here"
             if backbone.get("kind") == "supernet" else
             f"the {meta.get('task')} model of {describe(backbone)} built here")
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            return (f"tensor {key} has shape {list(value.shape)}, {built} "
                    f"{list(expected[key].shape)}")
    missing = [k for k in expected if k not in state]
    if missing:
        return f"lacks tensor {missing[0]} of {built} ({len(missing)} missing)"
    extra = [k for k in state if k not in expected]
    if extra:
        return f"has tensor {extra[0]}, which {built} lacks ({len(extra)} extra)"
    return None


def load_fixed_model(path: str | Path, spec: dict | None = None, where: str = "arch",
                     norm_layer: NormLayer = nn.BatchNorm2d) -> tuple[nn.Module, dict, dict]:
    """The model saved at ``path`` as a network of one architecture, in eval mode.

    A supernet checkpoint gives the network of ``spec``'s path, its weights copied from the
    supernet (`Supernet.extract`); a checkpoint of a fixed network must be of ``spec`` if given.

    Args:
        spec: a backbone spec; required for a supernet checkpoint.
        where: where ``spec`` comes from (a file or a name), for error messages.

    Returns:
        ``(model, spec, checkpoint)``: the classifier or detector, the spec of its backbone.

    Raises:
        ValueError: naming the file and the value: not a checkpoint, a supernet without
            ``spec``, or ``spec`` of another network than the checkpoint's.
    """
    model, ckpt = load_model(path, norm_layer=norm_layer)
    saved = ckpt["backbone"]
    if saved["kind"] != "supernet":
        if spec is not None and network_of(spec) != network_of(saved):
            raise ValueError(f"{where}: {describe(spec)} is not the network of {path}, a "
                             f"checkpoint of {describe(saved)}")
        return model.eval(), saved, ckpt
    if spec is None:
        raise ValueError(f"{path}: a supernet checkpoint (space {saved['space']}); name the "
                         "architecture to take from it (an arch.json or a registered name)")
    if spec.get("kind") != "shufflenet" or spec.get("space") != saved["space"]:
        raise ValueError(f"{where}: {describe(spec)} is not a path of {path}, a supernet of "
                         f"space {saved['space']}")
    arch = Arch.parse(spec["arch"], spec["space"])
    if isinstance(model, Classifier):
        model = model.extract(arch, norm_layer)
    else:
        replace_detector_backbone(model, detector_backbone(model).extract(arch, norm_layer))
    return model.eval(), shufflenet_spec(arch), ckpt


def backbone(name_or_arch_json: str | Path, weights: str | Path | None = None,
             norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Module:
    """A found (or published, or baseline) backbone for your own torchvision detector.

    The module returns an OrderedDict of the stage outputs C2..C5 (keys ``"0"``..``"3"``), has
    ``out_channels`` (of C5) and ``stage_channels``, and children ``layer1``..``layer4``, so that
    torchvision's ``BackboneWithFPN(net, detnas.nets.backbones.RETURN_LAYERS, net.stage_channels,
    256)`` wraps it like a ResNet.

    Args:
        name_or_arch_json: a registered name (``detnas arch list``) or an ``arch.json`` file.
        weights: a detnas checkpoint (classifier or detector of this network, or a supernet to
            take its path from) or a state dict saved from a module this function returned;
            ``None`` leaves the initialisation.
        norm_layer: e.g. ``torchvision.ops.FrozenBatchNorm2d`` for detection fine-tuning.

    Raises:
        ValueError: naming the file and the value, when the weights are not of this network.
    """
    spec = read_spec(name_or_arch_json)
    if weights is None:
        return torchvision_backbone(build_backbone(spec, norm_layer))
    state = load_checkpoint(weights)
    if is_model_checkpoint(state):
        model, _, _ = load_fixed_model(weights, spec, str(name_or_arch_json), norm_layer)
        return torchvision_backbone(backbone_of(model))
    net = torchvision_backbone(build_backbone(spec, norm_layer))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"{weights}: not the weights of {describe(spec)} "
                         f"({name_or_arch_json}): {reason}") from None
    return net


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone (or supernet) inside a classifier or detector."""
    return model.backbone if isinstance(model, Classifier) else detector_backbone(model)
