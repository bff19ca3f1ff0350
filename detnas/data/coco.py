"""Detection datasets in COCO format (COCO 2014/2017, VOC converted, the synthetic set).

Category ids (sparse in COCO: 1..90 with gaps) map to contiguous labels ``1..num_classes`` in
sorted id order; `CocoDetection.label_to_category` maps back for evaluation. The ground truth for
evaluation is the annotation file as it is (``dataset.coco``); only the training targets are
cleaned.

What happens to bad input (skip = left out of the training targets, counted per reason in
``dataset.issues`` and logged once as a warning; fail = ``ValueError`` naming the file and the
problem, which the CLI prints as one line and exits with status 2):

============================================  ======  ============================================
input                                         action  why
============================================  ======  ============================================
dataset folder or annotation file missing     fail    nothing sensible to train on
file not JSON, or JSON that is not COCO       fail    (missing / mistyped images, annotations,
                                                      categories, ids, file names, sizes, bboxes)
duplicate image or category id                fail    ids must name one thing
annotation of an unknown image id             fail    the file is inconsistent
annotation of an unknown category id          fail    the file is inconsistent; labels would lie
box with non-positive width or height         skip    real COCO has a few; they cannot be trained
box entirely outside the image                skip    nothing of it can be seen
box partly outside the image (> 1 px)         clip    the visible part is still a valid target
crowd box (``iscrowd: 1``, VOC difficult)     skip    ignored regions, as in COCOeval (not counted)
image listed but its file missing             fail    an incomplete download; the ground truth
                                                      would count objects nobody can detect
unreadable or corrupt image file              fail    at construction with ``cache=True``, else
                                                      when the item is read
decoded size differs from width / height      fail    the boxes would be wrong
empty split (no images, or an empty subset)   fail    training or evaluation on nothing
image id of a subset not in the file          fail    a split made for another file
============================================  ======  ============================================
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from detnas.data.files import box_in_image, load_coco_json
from detnas.data.images import read_image

log = logging.getLogger(__name__)


def _fail(path: Path, message: str) -> None:
    raise ValueError(f"{path}: {message}")


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over already loaded annotations, without its prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


_ISSUES = {"empty": "box with non-positive size (skipped)",
           "outside": "box outside the image (skipped)",
           "clipped": "box partly outside the image (clipped)"}


def _targets(path: Path, data: dict, label_of: dict[int, int],
             issues: Counter) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Training targets per image id: clean xyxy boxes and contiguous labels."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    per_image: dict[int, list] = {i: [] for i in sizes}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        issue, box = box_in_image(ann["bbox"], *sizes[ann["image_id"]])
        if issue:
            issues[_ISSUES[issue]] += 1
        if box is not None:
            per_image[ann["image_id"]].append((*box, label_of[ann["category_id"]]))
    out = {}
    for image_id, rows in per_image.items():
        array = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        out[image_id] = (torch.as_tensor(array[:, :4], dtype=torch.float32),  # (N, 4) xyxy
                         torch.as_tensor(array[:, 4], dtype=torch.int64))  # (N,)
    if issues:
        log.warning("%s: %s", path, ", ".join(f"{n} {k}" for k, n in sorted(issues.items())))
    return out


class CocoDetection(Dataset):
    """A COCO-format detection set: ``(image, target)`` items for torchvision detectors.

    Items are ``image``: float32 (3, H, W) in [0, 1], and ``target``: ``{"boxes": float32 (N, 4)
    xyxy in pixels, "labels": int64 (N,) in 1..num_classes, "image_id": int}``.

    Args:
        images_dir: the folder that ``file_name`` of each image is relative to.
        annotation_file: the COCO JSON.
        image_ids: the images to use (default: all, in id order).
        cache: decode every image once at construction and keep it in memory (small sets);
            without it, each item is decoded when read (real sets, with DataLoader workers).
        flip_prob: probability of a horizontal flip per item (training augmentation).

    Raises:
        ValueError: see the module table.
    """

    def __init__(self, images_dir: str | Path, annotation_file: str | Path,
                 image_ids: Iterable[int] | None = None, cache: bool = True, *,
                 flip_prob: float = 0.0):
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        if not self.images_dir.is_dir():
            _fail(self.images_dir, "image folder does not exist")
        data = load_coco_json(self.annotation_file)
        self.coco = coco_from_dict(data)
        self.categories = sorted(c["id"] for c in data["categories"])
        self.category_names = {c["id"]: c["name"] for c in data["categories"]}
        self._label_of = {c: i + 1 for i, c in enumerate(self.categories)}
        self.num_classes = len(self.categories)
        self.issues: Counter = Counter()
        self._targets = _targets(self.annotation_file, data, self._label_of, self.issues)
        self._images = {im["id"]: im for im in data["images"]}
        self.flip_prob = flip_prob
        self.ids = self._check_ids(sorted(self._images) if image_ids is None else image_ids)
        missing = [i for i in self.ids if not (self.images_dir / self._images[i]["file_name"])
                   .is_file()]
        if missing:
            first = self.images_dir / self._images[missing[0]]["file_name"]
            _fail(first, f"image file does not exist ({len(missing)} of {len(self.ids)} images "
                         f"of {self.annotation_file} are missing)")
        self._cache: dict[int, torch.Tensor] = {}
        if cache:
            for image_id in self.ids:
                self._cache[image_id] = self._decode(image_id)
            log.info("%s: %d images decoded into memory (%.1f MB)", self.annotation_file,
                     len(self._cache), sum(t.numel() for t in self._cache.values()) / 2**20)

    def _check_ids(self, image_ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in image_ids]
        if not ids:
            _fail(self.annotation_file, "empty split: no images")
        unknown = [i for i in ids if i not in self._images]
        if unknown:
            _fail(self.annotation_file, f"unknown image id {unknown[0]} ({len(unknown)} of "
                                        "the requested ids are not in the file)")
        return ids

    def _decode(self, image_id: int) -> torch.Tensor:
        info = self._images[image_id]
        path = self.images_dir / info["file_name"]
        image = read_image(path)
        if tuple(image.shape[1:]) != (info["height"], info["width"]):
            _fail(path, f"decoded size {image.shape[2]}x{image.shape[1]} differs from "
                        f"{info['width']}x{info['height']} in {self.annotation_file}")
        return image

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.ids[index]
        image = self._cache.get(image_id)
        if image is None:
            image = self._decode(image_id)
        boxes, labels = self._targets[image_id]
        image = image.float().div_(255)  # (3, H, W) in [0, 1]
        if self.flip_prob and torch.rand(()) < self.flip_prob:
            image = image.flip(-1)
            boxes = torch.stack([image.shape[-1] - boxes[:, 2], boxes[:, 1],
                                 image.shape[-1] - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes.clone(), "labels": labels.clone(), "image_id": image_id}

    def label_to_category(self, label: int) -> int:
        """The annotation file's category id of contiguous ``label`` (1..num_classes)."""
        if not 1 <= label <= self.num_classes:
            raise ValueError(f"label {label} out of range 1..{self.num_classes}")
        return self.categories[label - 1]

    def category_to_label(self, category_id: int) -> int:
        """The contiguous label (1..num_classes) of a category id of the annotation file."""
        if category_id not in self._label_of:
            raise ValueError(f"{self.annotation_file}: unknown category id {category_id}")
        return self._label_of[category_id]

    def subset(self, image_ids: Iterable[int]) -> CocoDetection:
        """A view on some of the images, sharing the ground truth and the decoded cache."""
        view = copy.copy(self)
        view.ids = self._check_ids(image_ids)
        return view

    def same_size_batches(self, batch_size: int) -> list[list[int]]:
        """The indices in batches of up to ``batch_size`` images of one size (from the
        annotation file): no image is padded to another's. Each size's images in order, the
        batches in the order of their first image; one size throughout: ``range`` in batches."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image_id in enumerate(self.ids):
            info = self._images[image_id]
            by_size.setdefault((info["height"], info["width"]), []).append(index)
        batches = [indices[k:k + batch_size] for indices in by_size.values()
                   for k in range(0, len(indices), batch_size)]
        return sorted(batches, key=lambda batch: batch[0])

    def aspect_groups(self) -> list[int]:
        """Each image's orientation from the annotation file's sizes: 0 wider than high, 1
        otherwise (maskrcnn-benchmark's aspect-ratio groups, height / width quantised at 1)."""
        return [int(self._images[i]["height"] >= self._images[i]["width"]) for i in self.ids]

    def label_counts(self) -> Counter:
        """Training boxes per contiguous label over this dataset's images."""
        counts: Counter = Counter()
        for image_id in self.ids:
            counts.update(self._targets[image_id][1].tolist())
        return counts


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    """Batches as torchvision detectors take them: a list of images, a list of targets."""
    return [item[0] for item in batch], [item[1] for item in batch]


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                drop_last: bool, collate_fn=None) -> DataLoader:
    """A DataLoader whose order (and worker seeds) depend only on ``seed``."""
    if len(dataset) == 0:
        raise ValueError("empty split: the dataset has no items")
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} (must be >= 1)")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last,
                      worker_init_fn=seed_worker, persistent_workers=num_workers > 0)


def detection_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                     num_workers: int = 0, drop_last: bool = False,
                     same_size: bool = False) -> DataLoader:
    """A loader of ``(list[image], list[target])`` batches, reproducible from ``seed``;
    ``same_size`` (evaluation, in order): batches of images of one size
    (`CocoDetection.same_size_batches`), none padded to another's."""
    if not same_size:
        return make_loader(dataset, batch_size, shuffle, seed, num_workers, drop_last,
                           collate_detection)
    assert not shuffle and not drop_last, "same-size batches are for evaluation, in order"
    return DataLoader(dataset, batch_sampler=dataset.same_size_batches(batch_size),
                      num_workers=num_workers, collate_fn=collate_detection)
