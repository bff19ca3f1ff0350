"""The paper's side of the report: reference figures, claims, and the names of things.

The rows of the study, their printed names and colours, and the comparisons between them are
`detnas.plan.study`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

DETECTOR_NAMES = {"fpn": "FPN", "retinanet": "RetinaNet"}
METRIC_NAMES = {"mmap": "mmAP", "ap50": "AP50", "voc07": "VOC07 mAP"}
CHOICE_LABELS = ("3x3", "5x5", "7x7", "Xception")
CHOICE_COLOURS = ("#9ecae1", "#fdae6b", "#e6550d", "#74c476")


@dataclass(frozen=True)
class Ref:
    """One figure from the papers (percent), for the ``paper`` columns of the main table."""

    row: str  # a row of the study (detnas.plan.study)
    dataset: str  # coco | voc (the paper's dataset); "" for any
    detector: str  # fpn | retinanet; "" for any
    field: str  # top1 | map | flops
    value: float | str
    source: str


_DETNAS = ("DetNAS released 300M models: ImageNet top-1 error and COCO mmAP / VOC mAP "
           "(docs/reference/detnas.md); top-1 shown as 100 - error")
_DETNAS_PORT = "DetNAS authors' PyTorch port, COCO minival AP (docs/reference/detnas.md)"
_DETNAS_R50 = ("DetNAS released-models table, ResNet-50 (3.8G FLOPs) baseline, top-1 error 23.9 "
               "(docs/reference/detnas.md)")
_NATS = "NATS paper, Faster R-CNN + FPN, COCO minival mmAP (docs/reference/nats.md)"
_NATS_SAME = "NATS: dilation keeps the FLOPs and parameters of ResNet-50 (docs/reference/nats.md)"

PAPER: tuple[Ref, ...] = (
    Ref("detnas", "coco", "fpn", "top1", 73.8, _DETNAS),
    Ref("detnas", "coco", "fpn", "map", 36.4, _DETNAS),
    Ref("detnas", "coco", "fpn", "map", 36.6, _DETNAS_PORT),
    Ref("detnas", "coco", "fpn", "flops", "300M", _DETNAS),
    Ref("detnas", "coco", "retinanet", "top1", 74.0, _DETNAS),
    Ref("detnas", "coco", "retinanet", "map", 33.3, _DETNAS),
    Ref("detnas", "coco", "retinanet", "map", 34.1, _DETNAS_PORT),
    Ref("detnas", "coco", "retinanet", "flops", "300M", _DETNAS),
    Ref("detnas", "voc", "fpn", "top1", 74.1, _DETNAS),
    Ref("detnas", "voc", "fpn", "map", 81.5, _DETNAS),
    Ref("detnas", "voc", "fpn", "flops", "300M", _DETNAS),
    Ref("detnas", "voc", "retinanet", "top1", 74.6, _DETNAS),
    Ref("detnas", "voc", "retinanet", "map", 80.1, _DETNAS),
    Ref("detnas", "voc", "retinanet", "flops", "300M", _DETNAS),
    Ref("resnet50", "", "", "top1", 76.1, _DETNAS_R50),
    Ref("resnet50", "", "", "flops", "3.8G", _DETNAS_R50),
    Ref("resnet50", "coco", "fpn", "map", 37.3, _DETNAS_R50),
    Ref("resnet50", "coco", "fpn", "map", 36.4, _NATS),
    Ref("nats", "", "", "flops", "3.8G", _NATS_SAME),
    Ref("nats", "coco", "fpn", "map", 38.4, _NATS),
)
"""Reference figures (percent). Only numbers the references state; everything else stays blank
(ShuffleNetV2-20, ClsNASNet, DetNAS-scratch and random search have claims but no figures)."""

PAPER_CLAIMS = (
    "detection search beats classification search (ClsNASNet) by more than 1 mAP on COCO and "
    "more than 3 mAP on VOC",
    "random search lands within 1 mAP of the EA (the paper: best of 5 random models; this study's "
    "random row: one random search with the EA's evaluation budget)",
    "detection-searched nets put large kernels in the shallow stages, ClsNASNet in the deep ones",
    "NATS: ResNet-50 36.4 -> 38.4 mmAP on COCO with FPN, at the same FLOPs and parameters",
)


def paper_dataset(kind: str) -> str:
    """The paper's dataset to compare with: VOC for VOC, COCO for COCO and the synthetic set."""
    return "voc" if kind == "voc" else "coco"


def paper_refs(row: str, dataset: str, detector: str, field_: str) -> list[Ref]:
    """The reference figures of one cell ("" in a `Ref` matches any dataset or detector)."""
    return [r for r in PAPER if r.row == row and r.field == field_
            and r.dataset in ("", dataset) and r.detector in ("", detector)]
