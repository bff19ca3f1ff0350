"""Whole models of the study (classifier or detector around a backbone or supernet), saved and
rebuilt from checkpoints that describe themselves.

A model checkpoint is a dict: ``model`` (state dict), ``task`` (classification | detection),
``backbone`` (a spec of `detnas.backbones`, or ``{"kind": "supernet", "space": ...}``),
``num_classes``, ``detector`` and ``detector_cfg`` for detection, plus whatever the stage adds
(``step``, ``optimizer``, ``provenance``...).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from detnas.backbones import build_backbone
from detnas.blocks import NormLayer
from detnas.checkpoint import load_checkpoint
from detnas.config import DetectorConfig, from_dict
from detnas.detection import build_detector, detector_backbone
from detnas.supernet import Classifier, Supernet, reference_init


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
    """What a checkpoint must carry to rebuild its model."""
    from dataclasses import asdict

    return {"task": task, "backbone": backbone, "num_classes": num_classes, "detector": detector,
            "detector_cfg": asdict(detector_cfg) if detector_cfg else None}


def model_from_meta(meta: dict, norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Module:
    cfg = from_dict(DetectorConfig, meta["detector_cfg"]) if meta.get("detector_cfg") else None
    return build_model(meta["task"], meta["backbone"], meta["num_classes"], meta.get("detector"),
                       cfg, norm_layer)


def load_model(path: str | Path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path``; returns ``(model, checkpoint)``."""
    ckpt = load_checkpoint(path, map_location)
    if "task" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a detnas model checkpoint (no 'task'/'model' entries)")
    model = model_from_meta(ckpt)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone (or supernet) inside a classifier or detector."""
    return model.backbone if isinstance(model, Classifier) else detector_backbone(model)
