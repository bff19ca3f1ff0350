"""Classification sets in ImageNet's ImageFolder layout: ``<split>/<class>/<image>``.

Classes are the sub-folders in sorted order (label ``i`` is the ``i``-th folder), as in
torchvision's ``ImageFolder``. Files whose extension is not an image's are ignored. Training
items get a random resized crop (area 8-100 %), colour jitter (0.4) and a horizontal flip as in
the reference's ImageNet training (DetNAS ``Supernet-ImageNet/train.py``), evaluation items a
resize to 8/7 of the crop and a centre crop (the ImageNet recipe); both are normalised with
ImageNet's statistics.

Bad input fails with a ``ValueError`` naming the path: a split folder that does not exist, no
class folders (an empty split), a class folder without images, an unreadable or corrupt image
(at construction with ``cache=True``, else when the item is read), an evaluation split whose
class folders are not the training split's (labels are class names: a missing class would shift
every label after it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from detnas.data.coco import make_loader
from detnas.data.files import check_same_classes, class_folders, image_files
from detnas.data.images import read_image
from detnas.data.split import holdout_indices

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderClassification(Dataset):
    """Items ``(image, label)``: float32 (3, S, S) normalised, int label in 0..num_classes-1.

    Args:
        root_split_dir: the split folder (``.../train`` or ``.../val``) holding class folders.
        image_size: the side ``S`` of the crop.
        train: random crop, jitter and flip (training) or resize and centre crop (evaluation).
        cache: decode every image once at construction and keep it in memory (small sets).
        crop_scale: the smallest area fraction of the random crop.
        color_jitter: brightness, contrast and saturation jitter (0 = none).
        holdout: images held out of the split (`detnas.data.split.holdout_indices`, drawn with
            ``seed``); 0 keeps every image.
        held_out: with ``holdout``, this set is the held-out images instead of the rest.
        classes_of: the split whose classes (and labels) this one must have, e.g. the training
            split of a validation split.

    Raises:
        ValueError: see the module docstring.
    """

    def __init__(self, root_split_dir: str | Path, image_size: int, train: bool,
                 cache: bool = True, *, crop_scale: float = 0.08, color_jitter: float = 0.4,
                 holdout: int = 0, held_out: bool = False, seed: int = 0,
                 classes_of: str | Path | None = None):
        self.root = Path(root_split_dir)
        self.classes = class_folders(self.root)
        if classes_of is not None:
            check_same_classes(self.root, self.classes, Path(classes_of))
        self.num_classes = len(self.classes)
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = image_files(self.root / name)
            if not files:
                raise ValueError(f"{self.root / name}: class folder has no images")
            self.samples.extend((p, label) for p in files)
        if holdout:
            rest, held = holdout_indices(len(self.samples), holdout, seed)
            self.samples = [self.samples[i] for i in (held if held_out else rest)]
        if train:
            jitter = [v2.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter \
                else []
            self.transform = v2.Compose([
                v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True),
                *jitter,
                v2.RandomHorizontalFlip(),
            ])
        else:
            self.transform = v2.Compose([
                v2.Resize(round(image_size * 8 / 7), antialias=True),
                v2.CenterCrop(image_size),
            ])
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self._cache = [read_image(p) for p, _ in self.samples] if cache else None
        log.info("%s: %d images of %d classes", self.root, len(self.samples), self.num_classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self._cache[index] if self._cache is not None else read_image(path)
        image = self.transform(image).float().div_(255)  # (3, S, S) in [0, 1]
        return (image - self.mean) / self.std, label


def classification_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                          num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A loader of ``(images (N, 3, S, S), labels (N,))`` batches, reproducible from ``seed``."""
    return make_loader(dataset, batch_size, shuffle, seed, num_workers, drop_last)
