"""The only module that knows torchvision detection: Faster R-CNN + FPN and RetinaNet.

Any backbone of the contract (``forward`` -> OrderedDict of C2..C5, ``stage_channels``) is wrapped
with an FPN: Faster R-CNN uses C2..C5 (+ a max-pooled P6), RetinaNet C3..C5 (+ P6/P7), as in the
DetNAS reference. Its Faster R-CNN (``configs/e2e_faster_rcnn_DETNAS_COCO_FPN_300M_search.yaml``)
has BN in the FPN convs and a 4-conv + 1-fc box head with BN (``FPNXconv1fcFeatureExtractor``,
SyncBN across GPUs: `detnas.engine` converts every BN); its RetinaNet has a plain FPN. The
anchors of the first level are ``anchor_size`` pixels (the reference's 32), doubling per level.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from detnas.config import DETECTORS, DetectorConfig  # noqa: F401 (DETECTORS: re-exported)
from detnas.roi_pool import RoIPooler


class BackboneWithFPN(nn.Module):
    """A backbone's stage outputs ``in_stages`` through a feature pyramid."""

    def __init__(self, body: nn.Module, in_stages: tuple[int, ...], out_channels: int, extra,
                 norm_layer=None):
        super().__init__()
        self.body = body
        self.in_stages = in_stages
        self.fpn = FeaturePyramidNetwork(
            [body.stage_channels[i] for i in in_stages], out_channels, extra_blocks=extra,
            norm_layer=norm_layer,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.body(x)  # C2..C5 under keys "0".."3"
        return self.fpn({str(i): stages[str(s)] for i, s in enumerate(self.in_stages)})


def _no_background(head: nn.Module, inputs: tuple[list[torch.Tensor]],
                   logits: torch.Tensor) -> torch.Tensor:
    """Forward hook on RetinaNet's classification head: never return the background class.

    torchvision counts the background in ``num_classes``: its head keeps a logit for label 0 that
    focal loss only ever trains as negative, and postprocessing would still rank it among the
    objects (early in training it can fill every detection slot). Outside training its logit is
    set to -inf (score 0) before the top-k, the threshold and NMS; the training loss is unchanged.
    A hook rather than a subclass keeps the detector scriptable (TorchScript has no ``super()``).
    """
    if head.training:
        return logits
    return logits.index_fill(-1, torch.zeros(1, dtype=torch.long, device=logits.device),
                             float("-inf"))  # (N, HWA, classes)


def _anchor_sizes(first: int, levels: int) -> list[int]:
    """Anchor sides per level: ``first`` pixels, doubling per level (the reference: 32..512)."""
    return [first * 2**i for i in range(levels)]


def _retinanet_head(channels: int, anchors: AnchorGenerator, num_classes: int,
                    cfg: DetectorConfig) -> RetinaNetHead:
    """torchvision's RetinaNet head, with GroupNorm in its convs when ``cfg.retinanet_head_norm``
    is ``gn`` (groups of 4 channels, at most 32 groups: torchvision's v2 at 256 channels)."""
    norm = (partial(nn.GroupNorm, min(32, channels // 4)) if cfg.retinanet_head_norm == "gn"
            else None)
    return RetinaNetHead(channels, anchors.num_anchors_per_location()[0], num_classes, norm)


def _box_head(cfg: DetectorConfig, resolution: int) -> nn.Module:
    """Faster R-CNN's box head: the reference's 4 convs + 1 fc (with BN when ``cfg.norm``), or
    torchvision's light two-MLP head."""
    if cfg.box_head == "twomlp":
        return TwoMLPHead(cfg.fpn_channels * resolution**2, cfg.box_head_channels)
    norm = nn.BatchNorm2d if cfg.norm == "bn" else None
    return FastRCNNConvFCHead((cfg.fpn_channels, resolution, resolution),
                              [cfg.box_conv_channels] * 4, [cfg.box_head_channels], norm)


def build_detector(backbone: nn.Module, detector: str, num_classes: int,
                   cfg: DetectorConfig | None = None) -> nn.Module:
    """A torchvision detector around ``backbone``.

    Args:
        backbone: a module of the backbone contract (`detnas.supernet.Backbone`, `Supernet`, ...).
        detector: ``fpn`` (Faster R-CNN + FPN) or ``retinanet``.
        num_classes: object classes, without the background.
        cfg: input sizes, FPN width and norm, box head.
    """
    cfg = cfg or DetectorConfig()
    sizes = dict(min_size=cfg.min_size, max_size=cfg.max_size)
    if detector == "fpn":
        norm = nn.BatchNorm2d if cfg.norm == "bn" else None
        body = BackboneWithFPN(backbone, (0, 1, 2, 3), cfg.fpn_channels, LastLevelMaxPool(), norm)
        anchors = AnchorGenerator(
            tuple((s,) for s in _anchor_sizes(cfg.anchor_size, 5)), ((0.5, 1.0, 2.0),) * 5
        )
        resolution = 7  # MultiScaleRoIAlign output of torchvision's Faster R-CNN
        return FasterRCNN(
            body, rpn_anchor_generator=anchors,
            box_roi_pool=RoIPooler(["0", "1", "2", "3"], resolution, 2),  # torchvision's default
            box_head=_box_head(cfg, resolution),
            box_predictor=FastRCNNPredictor(cfg.box_head_channels, num_classes + 1),
            box_batch_size_per_image=cfg.box_batch_size_per_image,
            rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
            rpn_pre_nms_top_n_train=cfg.rpn_post_nms_top_n,
            rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n,
            rpn_pre_nms_top_n_test=cfg.rpn_post_nms_top_n // 2,
            rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n // 2,
            box_score_thresh=cfg.score_thresh,
            **sizes,
        )
    if detector == "retinanet":
        levels = cfg.retinanet_levels  # P3..P5 from C3..C5, then P6 and P7 from P5
        extra = LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels) if levels == 5 else None
        body = BackboneWithFPN(backbone, (1, 2, 3), cfg.fpn_channels, extra)
        anchors = AnchorGenerator(
            tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3)))
                  for s in _anchor_sizes(cfg.anchor_size, levels)),
            ((0.5, 1.0, 2.0),) * levels,
        )
        model = RetinaNet(body, num_classes=num_classes + 1, anchor_generator=anchors,
                          head=_retinanet_head(cfg.fpn_channels, anchors, num_classes + 1, cfg),
                          score_thresh=cfg.score_thresh, nms_thresh=cfg.retinanet_nms,
                          detections_per_img=cfg.retinanet_detections, **sizes)
        model.head.classification_head.register_forward_hook(_no_background)
        return model
    raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")


def detector_backbone(model: nn.Module) -> nn.Module:
    """The search backbone inside a detector built by `build_detector`."""
    return model.backbone.body


def replace_detector_backbone(model: nn.Module, backbone: nn.Module) -> nn.Module:
    """``model`` (built by `build_detector`) around ``backbone`` instead, in place."""
    model.backbone.body = backbone
    return model


def detection_loss(model: nn.Module, batch) -> torch.Tensor:
    """The training loss of a torchvision detector: the sum of its losses on ``batch``
    (``(images, targets)``, as `detnas.data.coco.collate_detection` makes them)."""
    images, targets = batch
    return sum(model(list(images), list(targets)).values())
