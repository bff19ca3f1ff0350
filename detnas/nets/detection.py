"""The only module that knows torchvision detection: Faster R-CNN + FPN and RetinaNet.

Any backbone of the contract (``forward`` -> OrderedDict of C2..C5, ``stage_channels``) is wrapped
with an FPN: Faster R-CNN uses C2..C5 (+ a max-pooled P6), RetinaNet C3..C5 (+ P6/P7), as in the
DetNAS reference. Its Faster R-CNN (``configs/e2e_faster_rcnn_DETNAS_COCO_FPN_300M_search.yaml``)
has BN in the FPN convs and a 4-conv + 1-fc box head with BN (``FPNXconv1fcFeatureExtractor``,
SyncBN across GPUs: `detnas.run.engine` converts every BN); its RetinaNet has a plain FPN. The
anchors of the first level are ``anchor_size`` pixels (the reference's 32), doubling per level.

Where the reference's training losses differ from torchvision's, a setting of `DetectorConfig`
gives a head its subclass here (off, torchvision's own class): ``box_loss_beta`` (Faster R-CNN's
box loss), ``rpn_straddle_thresh`` (RPN anchors across the image border), ``retinanet_loss`` (its
normalisation and box loss). They change training only: `inference_heads` gives the heads back
their torchvision classes (for TorchScript, which has no ``super()``).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from detnas.nets.roi_pool import RoIPooler
from detnas.plan.config import DETECTORS, DetectorConfig  # noqa: F401 (DETECTORS: re-exported)


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


# --- the reference's training losses ----------------------------------------------------------


def fastrcnn_loss(class_logits: torch.Tensor, box_regression: torch.Tensor,
                  labels: list[torch.Tensor], regression_targets: list[torch.Tensor],
                  beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Faster R-CNN's box head losses: cross-entropy over the sampled RoIs, and smooth L1 with
    ``beta`` on the positives' deltas of their class, summed and divided by the sampled RoIs.

    torchvision's ``fastrcnn_loss`` at ``beta`` 1/9; maskrcnn-benchmark's
    (``modeling/roi_heads/box_head/loss.py:159-165``) at 1.
    """
    labels, targets = torch.cat(labels), torch.cat(regression_targets)
    classification = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    deltas = box_regression.reshape(len(labels), -1, 4)[positive, labels[positive]]
    box = F.smooth_l1_loss(deltas, targets[positive], beta=beta, reduction="sum")
    return classification, box / labels.numel()


class BetaRoIHeads(RoIHeads):
    """torchvision's RoI heads with the smooth L1 beta of the box loss a setting
    (``box_loss_beta``; evaluation unchanged)."""

    box_loss_beta: float

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _matched, labels, regression_targets = self.select_training_samples(
            proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        classification, box = fastrcnn_loss(class_logits, box_regression, labels,
                                            regression_targets, self.box_loss_beta)
        return [], {"loss_classifier": classification, "loss_box_reg": box}


class StraddleRPN(RegionProposalNetwork):
    """torchvision's RPN without the anchors that cross the image border by more than
    ``straddle_thresh`` pixels in its training samples (maskrcnn-benchmark's
    ``RPN.STRADDLE_THRESH``, ``modeling/rpn/anchor_generator.py:97-110``, ``rpn/loss.py:72-74``:
    their labels become "ignore", after matching). The border is the resized image's, before
    padding; an anchor ``(x1, y1, x2, y2)`` in torchvision's continuous coordinates is inside
    when ``x1, y1 >= -t`` and ``x2 <= w + t``, ``y2 <= h + t`` (the reference's ``x2 < w + t`` in
    its inclusive pixel coordinates)."""

    straddle_thresh: float

    def forward(self, images: ImageList, features, targets=None):
        self._image_sizes = images.image_sizes
        return super().forward(images, features, targets)

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        t = self.straddle_thresh
        for labels_per_image, a, (h, w) in zip(labels, anchors, self._image_sizes, strict=True):
            outside = (a[:, 0] < -t) | (a[:, 1] < -t) | (a[:, 2] > w + t) | (a[:, 3] > h + t)
            labels_per_image[outside] = -1.0
        return labels, matched_gt_boxes


class ReferenceRetinaNetClassificationHead(RetinaNetClassificationHead):
    """maskrcnn-benchmark's RetinaNet classification loss (``modeling/rpn/retinanet/loss.py:
    73-78``): focal loss over the object classes only (the reference has no background logit;
    torchvision's head here keeps one at label 0, which this loss leaves out), summed over the
    batch and divided by its positive anchors plus its images (torchvision: per image, by its
    positives, then the mean over images)."""

    def compute_loss(self, targets, head_outputs, matched_idxs):
        logits = head_outputs["cls_logits"]  # (N, HWA, 1 + classes)
        total, positives = logits.new_zeros(()), logits.new_zeros(())
        for target, logits_per_image, matched in zip(targets, logits, matched_idxs, strict=True):
            foreground = matched >= 0
            positives = positives + foreground.sum()
            classes = torch.zeros_like(logits_per_image)
            classes[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            total = total + sigmoid_focal_loss(logits_per_image[valid, 1:], classes[valid, 1:],
                                               reduction="sum")
        return total / (positives + len(targets))


class ReferenceRetinaNetRegressionHead(RetinaNetRegressionHead):
    """maskrcnn-benchmark's RetinaNet box loss (``retinanet/loss.py:66-71``, ``retinanet.py``,
    ``defaults.py:322-325``): smooth L1 with beta 0.11 on deltas encoded with weights
    (10, 10, 5, 5), summed over the batch and divided by 4 x its positive anchors
    (``BBOX_REG_WEIGHT``; torchvision: L1 on deltas of weights 1, per image by its positives, then
    the mean over images). The detector decodes with the same weights."""

    WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    BETA = 0.11
    NORM = 4.0

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        regression = head_outputs["bbox_regression"]  # (N, HWA, 4)
        total, positives = regression.new_zeros(()), 0
        for target, deltas, anchors_per_image, matched in zip(targets, regression, anchors,
                                                              matched_idxs, strict=True):
            foreground = torch.where(matched >= 0)[0]
            positives += foreground.numel()  # a size: no synchronisation
            wanted = self.box_coder.encode_single(target["boxes"][matched[foreground]],
                                                  anchors_per_image[foreground])
            total = total + F.smooth_l1_loss(deltas[foreground], wanted, beta=self.BETA,
                                             reduction="sum")
        return total / max(1.0, self.NORM * positives)


def _specialise(module: nn.Module, cls: type, **settings) -> nn.Module:
    """``module`` as an instance of ``cls``, a subclass of its class that changes training only,
    with its ``settings``."""
    assert cls.__bases__[0] is type(module), (cls, type(module))
    module.__class__ = cls
    vars(module).update(settings)
    return module


_TRAINING_ONLY = (BetaRoIHeads, StraddleRPN, ReferenceRetinaNetClassificationHead,
                  ReferenceRetinaNetRegressionHead)


def inference_heads(model: nn.Module) -> nn.Module:
    """``model`` with its heads of torchvision's classes again, in place: the subclasses above
    change training only (TorchScript compiles the training branch too, and has no ``super()``).
    The box coder weights of the reference's RetinaNet stay: its detections decode with them."""
    for module in model.modules():
        if isinstance(module, _TRAINING_ONLY):
            module.__class__ = type(module).__bases__[0]
    return model


def _reference_losses(model: nn.Module, detector: str, cfg: DetectorConfig) -> nn.Module:
    """The training losses ``cfg`` asks for, where they are not torchvision's."""
    if detector == "fpn":
        if cfg.box_loss_beta != 1 / 9:
            _specialise(model.roi_heads, BetaRoIHeads, box_loss_beta=cfg.box_loss_beta)
        if cfg.rpn_straddle_thresh >= 0:
            _specialise(model.rpn, StraddleRPN, straddle_thresh=float(cfg.rpn_straddle_thresh))
    elif cfg.retinanet_loss == "reference":
        weights = ReferenceRetinaNetRegressionHead.WEIGHTS
        _specialise(model.head.classification_head, ReferenceRetinaNetClassificationHead)
        _specialise(model.head.regression_head, ReferenceRetinaNetRegressionHead,
                    box_coder=det_utils.BoxCoder(weights=weights))
        model.box_coder = det_utils.BoxCoder(weights=weights)
    return model


def reference_head_init(model: nn.Module) -> nn.Module:
    """maskrcnn-benchmark's initialisation of Faster R-CNN's box head and predictor
    (``roi_box_feature_extractors.py:131-141``, ``make_layers.py:81-92``,
    ``roi_box_predictors.py:45-48``): convs N(0, 0.01), fc layers kaiming-uniform with a = 1,
    class scores N(0, 0.01), box deltas N(0, 0.001), every bias 0. (The RPN, the FPN and
    RetinaNet's heads are initialised alike by torchvision and the reference.)"""
    heads = model.roi_heads
    for m in heads.box_head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=1)
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    nn.init.normal_(heads.box_predictor.cls_score.weight, std=0.01)
    nn.init.normal_(heads.box_predictor.bbox_pred.weight, std=0.001)
    for layer in (heads.box_predictor.cls_score, heads.box_predictor.bbox_pred):
        nn.init.zeros_(layer.bias)
    return model


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
        backbone: a module of the backbone contract (`detnas.nets.supernet.Backbone`, `Supernet`,
        ...).
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
        model = FasterRCNN(
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
        if cfg.head_init == "reference":
            reference_head_init(model)
        return _reference_losses(model, detector, cfg)
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
        return _reference_losses(model, detector, cfg)
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
