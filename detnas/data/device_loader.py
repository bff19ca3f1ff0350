"""The classification data path on the device: JPEG decode and augmentation where the model runs.

``classification.loader: gpu`` splits the ImageFolder pipeline in two. DataLoader workers only
read the files' bytes (`EncodedImages`, `collate_encoded`); the training step then decodes the
batch with ``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on CUDA, libjpeg on CPU) and
runs the dataset's own ``transform`` (the same v2 transform object as the CPU path: one definition
of the recipe) and normalisation on the device (`DeviceAugment`). PIL decoding is the CPU path's
bottleneck (about 250 images/s per core); nvJPEG decodes thousands per second.

The same code runs with ``device='cpu'``: the CPU tests exercise it. The engine draws the
augmentation's random numbers from the global generator it seeds per step, so a run is
reproducible as the CPU path's is. Files that are not JPEG are decoded on the CPU and moved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from detnas.data.imagefolder import ImageFolderClassification

JPEG_MAGIC = (0xFF, 0xD8)


class EncodedImages(Dataset):
    """Items ``(bytes (L,) uint8 of the file | decoded (3, H, W) uint8 when cached, label)``."""

    def __init__(self, dataset: ImageFolderClassification):
        self.dataset = dataset
        self.num_classes = dataset.num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.dataset.samples[index]
        cache = self.dataset._cache
        if cache is not None:
            return cache[index], label
        return read_file(str(path)), label


@dataclass
class EncodedBatch:
    """A batch left undecoded by the loader; the engine moves it to the device as it is."""

    data: list[torch.Tensor]  # per image: file bytes (L,) or decoded (3, H, W), on the CPU
    labels: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):  # batch[0] is the images, as for a tensor batch
        return (self.data, self.labels)[index]


def collate_encoded(items: list[tuple[torch.Tensor, int]]) -> EncodedBatch:
    return EncodedBatch([data for data, _ in items],
                        torch.tensor([label for _, label in items], dtype=torch.int64))


def decode_batch(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Each item as RGB uint8 (3, H, W) on ``device``: JPEGs decoded there in one call."""
    out: list[torch.Tensor | None] = [None] * len(data)
    jpegs = [i for i, d in enumerate(data)
             if d.dim() == 1 and len(d) > 1 and (int(d[0]), int(d[1])) == JPEG_MAGIC]
    if jpegs:
        decoded = decode_jpeg([data[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        for i, image in zip(jpegs, decoded, strict=True):
            out[i] = image
    for i, d in enumerate(data):
        if out[i] is None:
            image = d if d.dim() == 3 else decode_image(d, mode=ImageReadMode.RGB)
            out[i] = image.to(device, non_blocking=True)
    return out


class DeviceAugment:
    """``augment(batch, device) -> (images (N, 3, S, S) float32 normalised, labels (N,))``.

    Args:
        dataset: the CPU path's dataset: its ``transform`` (crop, flip, ...) and ``mean`` /
            ``std`` are the recipe, applied here per image on the device.
    """

    def __init__(self, dataset: ImageFolderClassification):
        self.transform = dataset.transform
        self.mean, self.std = dataset.mean, dataset.std

    def __call__(self, batch: EncodedBatch, device: torch.device):
        images = [self.transform(im) for im in decode_batch(batch.data, device)]
        x = torch.stack(images).float().div_(255)  # (N, 3, S, S) in [0, 1]
        x = (x - self.mean.to(device)) / self.std.to(device)
        return x, batch.labels.to(device, non_blocking=True)


def on_device(loss: Callable, augment: DeviceAugment) -> Callable:
    """A stage loss ``(model, batch)`` that decodes and augments ``batch`` on the model's device."""

    def device_loss(model: nn.Module, batch: EncodedBatch) -> torch.Tensor:
        return loss(model, augment(batch, next(model.parameters()).device))

    return device_loss
