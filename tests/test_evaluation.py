"""COCO metrics equal pycocotools' own run on the same files; top-k accuracy; evaluation loops."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from detnas.data import CocoDetection, make_synthetic_detection
from detnas.evaluation import (
    METRICS,
    coco_backend,
    coco_evaluate,
    evaluate_classifier,
    evaluate_detector,
    topk_accuracy,
    voc07_ap,
    voc07_map,
)

FIXTURE = Path(__file__).parent / "fixtures" / "coco"
ANNOTATIONS = FIXTURE / "annotations" / "instances_val2017.json"


def _perfect(ds, ids=None):
    preds = []
    for i in ids or ds.ids:
        target = ds[ds.ids.index(i)][1]
        preds.append({"image_id": i, "boxes": target["boxes"], "labels": target["labels"],
                      "scores": torch.linspace(1, 0.5, len(target["labels"]))})
    return preds


def _noisy(ds, seed):
    g = torch.Generator().manual_seed(seed)
    preds = []
    for image, target in (ds[i] for i in range(len(ds))):
        h, w = image.shape[1:]
        boxes = target["boxes"] + torch.randn(target["boxes"].shape, generator=g) * 3
        labels = target["labels"].clone()
        n_fp = 3
        corner = torch.rand(n_fp, 2, generator=g) * torch.tensor([w, h]) * 0.7
        fp = torch.cat([corner, corner + 4 + torch.rand(n_fp, 2, generator=g) * 20], dim=1)
        fp_labels = torch.randint(1, ds.num_classes + 1, (n_fp,), generator=g)
        boxes, labels = torch.cat([boxes, fp]), torch.cat([labels, fp_labels])
        scores = torch.rand(len(labels), generator=g)
        preds.append({"image_id": target["image_id"], "boxes": boxes, "labels": labels,
                      "scores": scores})
    return preds


def _pycocotools_directly(annotation_file, predictions, categories, tmp_path):
    """The reference: COCO results written by hand, evaluated by pycocotools alone."""
    results = [{"image_id": p["image_id"], "category_id": categories[int(lb) - 1],
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                "score": float(s)}
               for p in predictions
               for b, s, lb in zip(p["boxes"], p["scores"], p["labels"], strict=True)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(str(path)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


BACKENDS = ["pycocotools", pytest.param("faster", marks=pytest.mark.skipif(
    importlib.util.find_spec("faster_coco_eval") is None, reason="faster-coco-eval not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_cocoeval_on_the_fixture(tmp_path, backend):
    ds = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)
    preds = _noisy(ds, 0)
    ours = coco_evaluate(ds, preds, backend)
    stats = _pycocotools_directly(ANNOTATIONS, preds, [1, 3, 18, 90], tmp_path)
    assert set(ours) == set(METRICS)
    for name, value in zip(METRICS, stats[:6], strict=True):
        assert ours[name] == pytest.approx(max(value, 0.0), abs=1e-12), name
    assert 0 < ours["mmap"] < 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_cocoeval_on_synthetic(tmp_path, backend):
    make_synthetic_detection(tmp_path, seed=0, num_train=1, num_test=12, image_size=128,
                             num_classes=3)
    ann = tmp_path / "annotations" / "instances_test.json"
    ds = CocoDetection(tmp_path / "test", ann)
    preds = _noisy(ds, 1)
    ours = coco_evaluate(ds, preds, backend)
    assert coco_evaluate(ds.subset(ds.ids[:5]), preds[:5], backend) == coco_evaluate(
        ds.subset(ds.ids[:5]), preds[:5], "pycocotools")
    stats = _pycocotools_directly(ann, preds, [1, 2, 3], tmp_path)
    assert [ours[m] for m in METRICS] == pytest.approx([max(v, 0.0) for v in stats[:6]],
                                                        abs=1e-12)
    assert 0 < ours["aps"] < 1 and 0 < ours["apm"] < 1


def test_coco_backend_choice(monkeypatch):
    assert coco_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="unknown COCO evaluation backend 'fast'"):
        coco_backend("fast")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert coco_backend("auto") == "pycocotools"
    with pytest.raises(ValueError, match="needs faster-coco-eval"):
        coco_backend("faster")


def test_perfect_empty_and_subset():
    ds = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)
    perfect = coco_evaluate(ds, _perfect(ds))
    assert perfect["mmap"] == pytest.approx(1.0) and perfect["ap50"] == pytest.approx(1.0)
    assert perfect["apl"] == 0.0  # no large object in the fixture: COCOeval's -1 becomes 0
    assert coco_evaluate(ds, []) == dict.fromkeys(METRICS, 0.0)
    empty = [{"image_id": 139, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
              "labels": torch.zeros(0, dtype=torch.int64)}]
    assert coco_evaluate(ds, empty) == dict.fromkeys(METRICS, 0.0)
    partial = _perfect(ds, [139, 632])
    assert coco_evaluate(ds, partial)["mmap"] < 0.9
    assert coco_evaluate(ds.subset([139, 632]), partial)["mmap"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image id 285, which is not in the evaluated dataset"):
        coco_evaluate(ds.subset([139]), _perfect(ds, [285]))


class _Oracle(nn.Module):
    """A fake detector that answers the ground truth of each image (known by its size)."""

    def __init__(self, ds):
        super().__init__()
        self.answers = {tuple(image.shape): t for image, t in (ds[i] for i in range(len(ds)))}
        self.grad_seen = []

    def forward(self, images):
        self.grad_seen.append(torch.is_grad_enabled())
        return [{"boxes": self.answers[tuple(im.shape)]["boxes"],
                 "labels": self.answers[tuple(im.shape)]["labels"],
                 "scores": torch.ones(len(self.answers[tuple(im.shape)]["labels"]))}
                for im in images]


def test_evaluate_detector_runs_in_eval_mode_without_grad():
    ds = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)
    model = _Oracle(ds).train()
    flipped = ds.subset(ds.ids)
    flipped.flip_prob = 1.0  # evaluation must not augment
    assert evaluate_detector(model, flipped, 2, "cpu")["mmap"] == pytest.approx(1.0)
    assert model.training and model.grad_seen == [False, False]


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    targets = torch.tensor([1, 2, 2, 1])
    acc = topk_accuracy(logits, targets, ks=(1, 2, 5))
    assert acc == {"top1": 0.5, "top2": 0.75, "top5": 1.0}
    assert topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)) == {
        "top1": 0.0, "top5": 0.0}


def test_evaluate_classifier():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 10, generator=g)
    labels = torch.randint(0, 10, (37,), generator=g)
    model = nn.Sequential(nn.Identity()).train()
    result = evaluate_classifier(model, DataLoader(TensorDataset(logits, labels), batch_size=8),
                                 "cpu")
    expected = topk_accuracy(logits, labels)
    assert result["top1"] == pytest.approx(expected["top1"])
    assert result["top5"] == pytest.approx(expected["top5"])
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert model.training


def test_voc07_map_on_a_hand_computed_case(tmp_path):
    """One class, two images; image 2 also has a crowd ("difficult") box. Detections by score:
    TP, duplicate (FP), on the crowd box (ignored), background (FP), TP. Recall .5 .5 .5 1,
    precision 1 .5 .33 .5: the 11-point AP is (6 * 1 + 5 * 0.5) / 11, COCOeval's 101-point AP50
    (51 * 1 + 50 * 0.5) / 101 differs."""
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).touch()
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64},
                      {"id": 2, "file_name": "b.png", "width": 64, "height": 64}],
           "categories": [{"id": 7, "name": "thing"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10],
                            "area": 100, "iscrowd": 0},
                           {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10],
                            "area": 100, "iscrowd": 0},
                           {"id": 3, "image_id": 2, "category_id": 7, "bbox": [20, 20, 10, 10],
                            "area": 100, "iscrowd": 1}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ds = CocoDetection(tmp_path / "img", tmp_path / "ann.json", cache=False)

    def det(image_id, boxes, scores):
        return {"image_id": image_id, "boxes": torch.tensor(boxes, dtype=torch.float32),
                "scores": torch.tensor(scores), "labels": torch.ones(len(scores), dtype=torch.long)}

    preds = [det(1, [[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8]),
             det(2, [[20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 9]], [0.7, 0.6, 0.5])]
    assert voc07_map(ds, preds) == pytest.approx(8.5 / 11)
    assert coco_evaluate(ds, preds)["ap50"] == pytest.approx(76 / 101, abs=1e-3)
    assert voc07_map(ds, []) == 0.0
    assert voc07_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(8.5 / 11)


def _eval_images(ds, preds):
    from detnas.evaluation import CategoryMatches, to_coco_results

    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(ds.coco, ds.coco.loadRes(to_coco_results(ds, preds)), "bbox")
        e.params.imgIds = sorted(ds.ids)
        e.evaluate()
    n, areas = len(ds.ids), len(e.params.areaRng)
    return [CategoryMatches(e.evalImgs[k * areas * n:][:n], e.params.maxDets[-1])
            for k in range(len(e.params.catIds))], e.params


def _copies(ann, preds, draw, tmp_path):
    """pycocotools on a file holding the images ``draw`` indexes (sorted ids), each copy its own
    image, in the draw's order: what a resample means."""
    data = json.loads(ann.read_text())
    ids = sorted(i["id"] for i in data["images"])
    images = {i["id"]: i for i in data["images"]}
    copy = {**data, "images": [], "annotations": []}
    dup_preds = []
    for n, i in enumerate(draw):
        new = 10**6 + n
        copy["images"].append({**images[ids[i]], "id": new})
        copy["annotations"] += [{**a, "id": 10**6 * (n + 2) + a["id"], "image_id": new}
                                for a in data["annotations"] if a["image_id"] == ids[i]]
        dup_preds += [{**p, "image_id": new} for p in preds if p["image_id"] == ids[i]]
    (tmp_path / "copies.json").write_text(json.dumps(copy))
    categories = [c["id"] for c in data["categories"]]
    stats = _pycocotools_directly(tmp_path / "copies.json", dup_preds, categories, tmp_path)
    return {"mmap": max(stats[0], 0), "ap50": max(stats[1], 0)}


def test_resampled_ap_of_every_image_once_is_cocoeval(tmp_path):
    """The bootstrap's accumulation equals COCOeval's on the identity draw, and on draws that
    repeat images it equals COCOeval on a dataset holding those copies."""
    from detnas.evaluation import bootstrap_coco, bootstrap_draws, resampled_ap

    make_synthetic_detection(tmp_path, seed=0, num_train=1, num_test=12, image_size=128,
                             num_classes=3)
    ann = tmp_path / "annotations" / "instances_test.json"
    ds = CocoDetection(tmp_path / "test", ann)
    preds = _noisy(ds, 1)
    categories, params = _eval_images(ds, preds)
    ours = resampled_ap(categories, np.arange(len(ds.ids)), params)
    ref = coco_evaluate(ds, preds, "pycocotools")
    assert ours == pytest.approx({"mmap": ref["mmap"], "ap50": ref["ap50"]}, abs=1e-12)
    for draw in [np.array([0, 0, 1]), *bootstrap_draws(len(ds.ids), 4, seed=3)]:
        assert resampled_ap(categories, draw, params) == pytest.approx(
            _copies(ann, preds, draw, tmp_path), abs=1e-12), draw
    # the draws depend on the number of images only: the same for every row
    assert (bootstrap_draws(12, 5) == bootstrap_draws(12, 5)).all()
    boot = bootstrap_coco(ds, preds, samples=50)
    assert len(boot["ap50"]) == 50 and len(set(boot["ap50"])) > 10
    assert min(boot["ap50"]) < ref["ap50"] < max(boot["ap50"])
