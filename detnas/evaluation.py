"""Evaluation: COCO bbox AP through pycocotools (COCO and VOC alike), top-1 / top-5 accuracy.

Detection metrics are COCOeval's: ``mmap`` is AP@[.5:.95] (the DetNAS search fitness on COCO),
``ap50`` the AP at IoU 0.5 (the number reported on VOC; COCOeval's 101-point interpolation, not
VOC 2007's 11-point one), ``ap75``, and ``aps`` / ``apm`` / ``apl`` by object area; ``voc07`` is
the VOC 2007 devkit's mAP (11-point interpolated AP at IoU 0.5, mean over classes), which the
paper's VOC numbers use. All are floats in [0, 1]; COCOeval's -1 (no ground truth in that range)
and an empty prediction list give 0.0.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader

from detnas.data.coco import CocoDetection, detection_loader

log = logging.getLogger(__name__)

METRICS = ("mmap", "ap50", "ap75", "aps", "apm", "apl")  # COCOeval.stats[0:6]


def _array(values, columns: int | None = None) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(-1, columns) if columns else array.reshape(-1)


def to_coco_results(dataset: CocoDetection, predictions: list[dict]) -> list[dict]:
    """Detections in COCO's result format (``[x, y, w, h]`` boxes, category ids of the file).

    Raises:
        ValueError: a prediction names an image that is not in ``dataset`` or a label out of range.
    """
    known = set(dataset.ids)
    results = []
    for p in predictions:
        image_id = int(p["image_id"])
        if image_id not in known:
            raise ValueError(f"{dataset.annotation_file}: prediction for image id {image_id}, "
                             "which is not in the evaluated dataset")
        boxes, scores = _array(p["boxes"], 4), _array(p["scores"])
        labels = _array(p["labels"]).astype(np.int64)
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True):
            results.append({"image_id": image_id,
                            "category_id": dataset.label_to_category(int(label)),
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "score": float(score)})
    return results


COCO_BACKENDS = ("auto", "pycocotools", "faster")  # faster: faster-coco-eval (same 12 stats)


def coco_backend(name: str = "auto") -> str:
    """The COCO evaluator to run: ``auto`` picks faster-coco-eval when it is installed.

    Raises:
        ValueError: an unknown name, or ``faster`` without faster-coco-eval installed.
    """
    if name not in COCO_BACKENDS:
        raise ValueError(f"unknown COCO evaluation backend {name!r} ({', '.join(COCO_BACKENDS)})")
    if name == "pycocotools":
        return name
    available = importlib.util.find_spec("faster_coco_eval") is not None
    if name == "faster" and not available:
        raise ValueError("COCO evaluation backend 'faster' needs faster-coco-eval "
                         "(pip install faster-coco-eval)")
    return "faster" if available else "pycocotools"


def _cocoeval(dataset: CocoDetection, results: list[dict], backend: str):
    """A COCOeval of ``backend`` over ``results``, not yet run."""
    if backend == "faster":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        gt = getattr(dataset, "_faster_coco", None)
        if gt is None:  # built once per dataset: every candidate is evaluated on it
            gt = FasterCOCO(dataset.coco.dataset, use_deepcopy=True)
            dataset._faster_coco = gt
        return COCOeval_faster(gt, gt.loadRes(results), "bbox")
    return COCOeval(dataset.coco, dataset.coco.loadRes(results), "bbox")


def coco_evaluate(dataset: CocoDetection, predictions: list[dict],
                  backend: str = "auto") -> dict[str, float]:
    """COCO bbox metrics of ``predictions`` on the images of ``dataset``.

    Args:
        dataset: the ground truth (``dataset.coco``), restricted to ``dataset.ids``.
        predictions: one dict per image: ``image_id``, ``boxes`` (N, 4) xyxy, ``scores`` (N,),
            ``labels`` (N,) contiguous labels 1..num_classes (tensors or arrays).
        backend: ``pycocotools`` (the reference), ``faster`` (faster-coco-eval: the same
            numbers, faster) or ``auto`` (faster when installed); see `coco_backend`.

    Returns:
        ``{"mmap", "ap50", "ap75", "aps", "apm", "apl"}``, floats in [0, 1].
    """
    backend = coco_backend(backend)
    results = to_coco_results(dataset, predictions)
    if not results:
        log.warning("%s: no detections to evaluate; all metrics are 0", dataset.annotation_file)
        return dict.fromkeys(METRICS, 0.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluator = _cocoeval(dataset, results, backend)
        evaluator.params.imgIds = sorted(dataset.ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("COCOeval (%s) on %s:\n%s", backend, dataset.annotation_file, out.getvalue())
    return {name: max(float(v), 0.0) for name, v in zip(METRICS, evaluator.stats, strict=False)}


BOOTSTRAP_SAMPLES = 200  # resamples of the test images behind a retrained row's interval


def bootstrap_draws(num_images: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """``(samples, num_images)`` image indices drawn with replacement; a function of the number
    of images only, so every model evaluated on one test split gets the same resamples (paired
    differences between rows)."""
    return np.random.default_rng(seed).integers(0, num_images, size=(samples, num_images))


class CategoryMatches:
    """One category's detections over the test images, from COCOeval's per-image matches
    (``evalImgs`` of area ``all``; the first 100 of each image, as ``accumulate`` takes them), by
    falling score (stable: image order, then the image's own)."""

    def __init__(self, images: list[dict | None], max_det: int):
        self.positives = np.array([0 if e is None else np.count_nonzero(e["gtIgnore"] == 0)
                                   for e in images])
        found = [(i, e) for i, e in enumerate(images) if e is not None]
        if not found:
            self.image = np.zeros(0, dtype=int)
            self.tp = self.fp = np.zeros((0, 0), dtype=bool)
            return
        scores = np.concatenate([e["dtScores"][:max_det] for _, e in found])
        order = np.argsort(-scores, kind="mergesort")
        self.image = np.concatenate([np.full(len(e["dtScores"][:max_det]), i)
                                     for i, e in found])[order]
        matched = np.concatenate([e["dtMatches"][:, :max_det] for _, e in found], axis=1)[:, order]
        kept = np.logical_not(np.concatenate([e["dtIgnore"][:, :max_det] for _, e in found],
                                             axis=1)[:, order])
        self.tp = np.logical_and(matched, kept)
        self.fp = np.logical_and(np.logical_not(matched), kept)

    def ap(self, counts: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray | None:
        """AP per IoU threshold over the images drawn ``counts`` times each (a repeated image's
        detections count again, next to each other in the score order, as COCOeval would rank
        the copies); None where the draw holds no ground truth of the category."""
        positives = int(counts @ self.positives)
        if positives == 0:
            return None
        weight = counts[self.image]
        drawn = weight > 0
        weight = weight[drawn].astype(float)
        # a run of one detection's copies moves recall and precision one way: only its last
        # point can be where a recall threshold is first reached with the envelope's precision
        tp = np.cumsum(self.tp[:, drawn] * weight, axis=1)
        fp = np.cumsum(self.fp[:, drawn] * weight, axis=1)
        if not tp.shape[1]:
            return np.zeros(len(tp))
        recall = tp / positives
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # COCO's envelope
        at = np.stack([np.searchsorted(r, rec_thrs, side="left") for r in recall])
        q = np.take_along_axis(precision, np.minimum(at, tp.shape[1] - 1), axis=1)
        return np.where(at < tp.shape[1], q, 0.0).mean(axis=1)  # 0 beyond the highest recall


def resampled_ap(categories: list[CategoryMatches], draw, params) -> dict[str, float]:
    """AP@[.5:.95] and AP50 over the images ``draw`` indexes (repeats count again), as COCOeval's
    ``accumulate`` and ``summarize`` compute them from its per-image matches (`CategoryMatches`)."""
    counts = np.bincount(draw, minlength=len(categories[0].positives)) if categories else None
    ap = [a for c in categories if (a := c.ap(counts, params.recThrs)) is not None]
    if not ap:
        return {"mmap": 0.0, "ap50": 0.0}
    ap = np.asarray(ap)
    return {"mmap": float(ap.mean()), "ap50": float(ap[:, 0].mean())}


def bootstrap_coco(dataset: CocoDetection, predictions: list[dict],
                   samples: int = BOOTSTRAP_SAMPLES) -> dict[str, list[float]]:
    """AP@[.5:.95] and AP50 on ``samples`` resamples of the test images (`bootstrap_draws`):
    the spread that comes from which images the test split holds. COCOeval (pycocotools) matches
    each image once; each resample re-accumulates those matches."""
    results = to_coco_results(dataset, predictions)
    if not results:
        return {"mmap": [0.0] * samples, "ap50": [0.0] * samples}
    ids = sorted(dataset.ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(dataset.coco, dataset.coco.loadRes(results), "bbox")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
    p, n = evaluator.params, len(ids)
    area_all = p.areaRng.index([0**2, 1e5**2])
    categories = [CategoryMatches(evaluator.evalImgs[(k * len(p.areaRng) + area_all) * n:][:n],
                                  p.maxDets[-1]) for k in range(len(p.catIds))]
    out: dict[str, list[float]] = {"mmap": [], "ap50": []}
    for draw in bootstrap_draws(n, samples):
        for k, v in resampled_ap(categories, draw, p).items():
            out[k].append(v)
    return out


@torch.no_grad()
def predict_detector(model: nn.Module, dataset: CocoDetection, batch_size: int,
                     device: str | torch.device, same_size: bool = False) -> list[dict]:
    """Run a torchvision detector in eval mode over ``dataset``; its training mode is restored.
    ``same_size``: batches of images of one size (no image padded to another's, whose borders
    would reach into its features: the reference evaluates one image per GPU)."""
    if getattr(dataset, "flip_prob", 0.0):
        dataset = dataset.subset(dataset.ids)
        dataset.flip_prob = 0.0
    was_training = model.training
    model.eval()
    predictions = []
    try:
        for images, targets in detection_loader(dataset, batch_size, shuffle=False, seed=0,
                                                same_size=same_size):
            outputs = model([image.to(device) for image in images])
            for output, target in zip(outputs, targets, strict=True):
                predictions.append({"image_id": target["image_id"],
                                    **{k: output[k].cpu() for k in ("boxes", "scores", "labels")}})
    finally:
        model.train(was_training)
    return predictions


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2007's 11-point AP: the mean over recall thresholds 0, 0.1, ..., 1 of the highest
    precision at a recall at least that threshold (0 where none reaches it)."""
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with (N, 4) xyxy boxes (continuous coordinates, no +1)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter)


def voc07_map(dataset: CocoDetection, predictions: list[dict], iou: float = 0.5) -> float:
    """The VOC 2007 devkit's mAP (``voc_eval.py``): per class, detections by falling score match
    the unmatched ground truth of highest IoU >= ``iou`` in their image; a match on a crowd
    ("difficult") box counts neither way; 11-point AP, averaged over classes with ground truth.
    """
    gt: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (image, label) -> boxes
    for image_id in dataset.ids:
        for ann in dataset.coco.imgToAnns.get(image_id, []):
            x, y, w, h = ann["bbox"]
            key = (image_id, dataset.category_to_label(ann["category_id"]))
            boxes, crowd = gt.get(key, (np.zeros((0, 4)), np.zeros(0, bool)))
            gt[key] = (np.vstack([boxes, [x, y, x + w, y + h]]),
                       np.append(crowd, bool(ann.get("iscrowd", 0))))
    dets: dict[int, list] = {}  # label -> [(score, image, box)]
    for p in predictions:
        for box, score, label in zip(_array(p["boxes"], 4), _array(p["scores"]),
                                     _array(p["labels"]).astype(np.int64), strict=True):
            dets.setdefault(int(label), []).append((float(score), int(p["image_id"]), box))
    aps = []
    for label in range(1, dataset.num_classes + 1):
        positives = sum(int((~c).sum()) for (_, lab), (_, c) in gt.items() if lab == label)
        if positives == 0:
            continue
        used = {k: np.zeros(len(v[0]), bool) for k, v in gt.items() if k[1] == label}
        tp, fp = [], []
        for _score, image_id, box in sorted(dets.get(label, []), key=lambda d: -d[0]):
            boxes, crowd = gt.get((image_id, label), (np.zeros((0, 4)), np.zeros(0, bool)))
            overlaps = _iou(box, boxes) if len(boxes) else np.zeros(0)
            best = int(overlaps.argmax()) if len(overlaps) else -1
            if best >= 0 and overlaps[best] >= iou:
                if crowd[best]:
                    continue
                hit = not used[(image_id, label)][best]
                used[(image_id, label)][best] = True
            else:
                hit = False
            tp.append(hit)
            fp.append(not hit)
        tp_sum, fp_sum = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
        recall = tp_sum / positives
        precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(float).eps)
        aps.append(voc07_ap(recall, precision))
    return float(np.mean(aps)) if aps else 0.0


def evaluate_detector(model: nn.Module, dataset: CocoDetection, batch_size: int,
                      device: str | torch.device, backend: str = "auto",
                      same_size: bool = False) -> dict[str, float]:
    """COCO bbox metrics (see `coco_evaluate`) and VOC07 mAP of a torchvision detector."""
    return detection_metrics(
        dataset, predict_detector(model, dataset, batch_size, device, same_size), backend)


def detection_metrics(dataset: CocoDetection, predictions: list[dict],
                      backend: str = "auto") -> dict[str, float]:
    """Every detection metric of ``predictions``: COCO's 12 and VOC07's 11-point mAP."""
    return {**coco_evaluate(dataset, predictions, backend),
            "voc07": voc07_map(dataset, predictions)}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor,
                  ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """The fraction of rows whose target is among the ``k`` largest logits, per ``k``.

    Args:
        logits: (N, C) scores.
        targets: (N,) class indices.
        ks: the ``k`` values; a ``k`` above ``C`` counts as ``C`` (always right).

    Returns:
        ``{"top1": ..., "top5": ...}`` (0.0 for an empty batch).
    """
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices  # (N, maxk)
    correct = top.eq(targets.view(-1, 1))  # (N, maxk)
    n = max(len(targets), 1)
    return {f"top{k}": correct[:, :min(k, maxk)].any(dim=1).sum().item() / n for k in ks}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader,
                        device: str | torch.device) -> dict[str, float]:
    """Top-1, top-5 and mean cross-entropy of a classifier over ``loader``; mode is restored."""
    was_training = model.training
    model.eval()
    total, loss, hits = 0, 0.0, {"top1": 0.0, "top5": 0.0}
    try:
        for images, labels in loader:
            logits = model(images.to(device))
            labels = labels.to(device)
            loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            for k, v in topk_accuracy(logits, labels).items():
                hits[k] += v * len(labels)
            total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("empty split: the classification loader has no items")
    return {"top1": hits["top1"] / total, "top5": hits["top5"] / total, "loss": loss / total}
