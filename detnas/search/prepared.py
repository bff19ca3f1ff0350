"""Search images prepared once per process: decoded, normalised and resized as the detector would.

A candidate evaluation runs the same search and recalibration images through every candidate.
Without this, each candidate decodes them (when the set is not cached), moves them to the device
and resizes them again: on a GPU that costs more than the forward passes. `prepare_batches` runs
the detector's ``transform.normalize`` and ``transform.resize`` once, on the device, and keeps the
results in the same batches, in the same order; `prepared_inputs` then lets the detector's own
``forward`` skip those two steps. The same operations run on the same values, so the fitness is
the one of the unprepared path, bit for bit (tested on CPU).

Two modes (``search.prepare``): ``resized`` keeps float32 images at the detector's size (800 px
COCO images: about 12 MB each; the fastest), ``decoded`` keeps the decoded uint8 pixels (a 640x480
COCO image: 0.9 MB) and converts them exactly as the dataset does (``float() / 255``) at each pass,
the detector resizing them. A detector with BN in its FPN and heads (``detector.norm: bn``, the
paper configs) is recalibrated whole, in training mode, on (image, target) pairs: those are kept
decoded with their targets, whatever the mode (the training transform resizes the boxes too).
Prepared images stay on the device when they fit in half of its free memory, else in pinned host
memory (CUDA), else in host memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from detnas.nets.models import backbone_of

log = logging.getLogger(__name__)


@dataclass
class PreparedBatch:
    """One loader batch, transformed: what ``model.transform`` makes of it before batching."""

    images: list[torch.Tensor]  # each (3, h, w): float32 normalised and resized, or uint8 decoded
    original_sizes: list[tuple[int, int]]  # (H, W) before resizing: boxes are mapped back to it
    image_ids: list[int] = field(default_factory=list)
    resized: bool = True  # False: the decoded pixels; the detector normalises and resizes them
    targets: list[dict] | None = None  # kept for a whole-detector (training mode) recalibration

    def inputs(self, device: torch.device | str) -> list[torch.Tensor]:
        """The images on ``device`` as the detector takes them (decoded ones: exactly as the
        dataset converts its uint8 pixels, ``float() / 255``)."""
        moved = [im.to(device, non_blocking=True) for im in self.images]
        return moved if self.resized else [im.float().div_(255) for im in moved]

    def pairs(self, device: torch.device | str) -> list[tuple[torch.Tensor, dict]]:
        """(image, target) pairs on ``device``, for `fitness.detector_train_forward`."""
        assert self.targets is not None, "prepared without targets"
        return list(zip(self.inputs(device), self.targets, strict=True))


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """The uint8 pixels of a dataset image (``uint8.float() / 255``): recovered exactly."""
    pixels = image.mul(255).round_()
    assert pixels.min() >= 0 and pixels.max() <= 255, "not a [0, 1] image"
    return pixels.to(torch.uint8)


def device_budget(device: torch.device) -> int:
    """Bytes of prepared images that may stay on ``device``: half of its free memory (CUDA)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    return 0


def _to_host(batches: list[PreparedBatch], pin: bool) -> None:
    for b in batches:
        b.images = [im.cpu().pin_memory() if pin else im.cpu() for im in b.images]
        if b.targets is not None:
            b.targets = [_tensors_to(t, "cpu") for t in b.targets]


def _tensors_to(target: dict, device: torch.device | str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


@torch.no_grad()
def prepare_batches(model: nn.Module, loader, device: str | torch.device,
                    limit: int | None = None, resize: bool = True,
                    with_targets: bool = False) -> list[PreparedBatch]:
    """Every batch of ``loader`` (the first ``limit`` images), transformed as ``model`` would.

    Args:
        model: a torchvision detector (its ``transform`` in eval mode: a fixed size).
        loader: ``(list[image], list[target])`` batches, e.g. `detnas.data.detection_loader`.
        device: where the transform runs (the model's device, as in its own forward).
        limit: images to keep (recalibration uses the first ``num_images`` only).
        resize: keep the transformed images (fastest); False keeps the decoded pixels, which
            the detector normalises and resizes at each pass (a quarter of the decoded float32).
        with_targets: keep the targets too (decoded images only: a training-mode forward
            resizes images and boxes together).
    """
    assert not (resize and with_targets), "targets go with decoded images"
    device = torch.device(device)
    transform = model.transform
    assert not transform.training, "a training transform resizes at random"
    batches, seen, num_bytes = [], 0, 0
    budget, on_host = device_budget(device), device.type != "cuda"
    for images, targets in loader:
        if limit is not None:
            images, targets = images[: limit - seen], targets[: limit - seen]
        batches.append(PreparedBatch(
            [transform.resize(transform.normalize(im.to(device)), None)[0] if resize
             else _pixels(im).to(device) for im in images],
            [tuple(im.shape[-2:]) for im in images],
            [int(t["image_id"]) for t in targets if "image_id" in t], resize,
            [_tensors_to(t, device) for t in targets] if with_targets else None))
        seen += len(images)
        num_bytes += sum(im.numel() * im.element_size() for im in batches[-1].images)
        if not on_host and num_bytes > budget:  # does not fit: all of it to pinned host memory
            _to_host(batches, pin=True)
            on_host = True
        elif on_host:
            _to_host(batches[-1:], pin=device.type == "cuda")
        if limit is not None and seen >= limit:
            break
    log.info("prepared %d images (%.1f MB) %s", seen, num_bytes / 2**20,
             "in host memory" if on_host else f"on {device}")
    return batches


@contextmanager
def prepared_inputs(model: nn.Module, original_sizes: list[tuple[int, int]]) -> Iterator[None]:
    """Inside the block, ``model(images)`` takes prepared images (normalised and resized).

    Its transform skips normalize and resize, and maps boxes back to ``original_sizes``.
    """
    transform = model.transform
    postprocess = transform.postprocess
    transform.normalize = lambda image: image
    transform.resize = lambda image, target=None: (image, target)
    transform.postprocess = lambda result, sizes, _originals: postprocess(result, sizes,
                                                                          original_sizes)
    try:
        yield
    finally:
        for name in ("normalize", "resize", "postprocess"):
            del transform.__dict__[name]  # the class's methods again


def prepared_recalib_forward(model: nn.Module, device: torch.device | str, regions=None):
    """`detector_recalib_forward` for prepared images: batch (pad) them, run the backbone
    (telling ``regions``, a `detnas.nets.bn.ImageRegions`, where they lie in the padded batch)."""
    supernet = backbone_of(model)

    def forward(images: list[torch.Tensor]) -> None:
        batch = model.transform.batch_images([im.to(device, non_blocking=True) for im in images],
                                             model.transform.size_divisible)
        if regions is not None:
            regions.set([im.shape[-2:] for im in images], batch.shape[-2:],
                        model.transform.size_divisible)
        supernet(batch)  # (N, 3, H, W) padded to a multiple of 32

    return forward


@torch.no_grad()
def predict_prepared(model: nn.Module, batches: list[PreparedBatch],
                     device: str | torch.device) -> list[dict]:
    """`detnas.evaluation.predict_detector` over prepared batches; training mode is restored."""
    was_training = model.training
    model.eval()
    predictions = []
    try:
        for b in batches:
            images = b.inputs(device)
            if b.resized:
                with prepared_inputs(model, b.original_sizes):
                    outputs = model(images)
            else:
                outputs = model(images)
            for output, image_id in zip(outputs, b.image_ids, strict=True):
                predictions.append({"image_id": image_id,
                                    **{k: output[k].cpu() for k in ("boxes", "scores", "labels")}})
    finally:
        model.train(was_training)
    return predictions
