"""The search fitness of a candidate path: BN recalibration on training images, then evaluation.

Detection fitness (DetNAS): mmAP (or AP50 for VOC) of the supernet detector on the held-out
search split. Classification fitness (the ClsNASNet ablation): top-1 of the classification
supernet on images held out of its training set. For a detector without BN outside the backbone
only the backbone (the supernet, on the candidate's path) is recalibrated, on images prepared by
the detector's own ``transform``; a detector with BN in its FPN and box head (the reference's
Faster R-CNN) is recalibrated whole, in training mode with targets, as the reference's
``bn_statistic`` does. A classifier is recalibrated whole (its last conv has a BN).

With ``search.recalib_padding: exclude`` the BN layers of the backbone and the FPN take their
recalibration statistics over each image's own pixels (`detnas.nets.bn.ImageRegions`), not over the
padding that batching images of other sizes adds: the reference recalibrates at one image per GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from detnas.io import load_checkpoint
from detnas.nets.bn import ImageRegions, recalibrated
from detnas.nets.models import backbone_of, load_state, model_from_meta
from detnas.nets.supernet import Classifier, Supernet
from detnas.plan.config import SearchConfig
from detnas.plan.space import Arch
from detnas.plan.typed import late

log = logging.getLogger(__name__)

FITNESS_KINDS = ("detection", "classification")


@dataclass(frozen=True)
class FitnessSpec:
    """What a process needs to build the fitness (picklable: each worker builds its own): the
    supernet and the data, and the search's settings (`detnas.plan.config.SearchConfig`: BN
    recalibration, batch sizes, threads, preparation, COCO backend)."""

    checkpoint: str  # the supernet model checkpoint
    kind: str  # detection | classification
    space: str  # the space the config searches; the checkpoint must be a supernet of it
    data: str  # detection: search-split annotation JSON; classification: ImageFolder val dir
    recalib_data: str  # detection: training-split annotation JSON; classification: train dir
    search: SearchConfig = field(default_factory=SearchConfig)  # the search's settings
    images: str = ""  # detection: image folder of the search split
    recalib_image_dir: str = ""  # detection: image folder of the training split
    detector: str | None = None  # expected detector (fpn | retinanet); None accepts any
    metric: str = "mmap"  # detection: mmap | ap50; classification: top1 | top5
    image_size: int = 64  # classification input size
    seed: int = 0  # order of the recalibration images (the same for every candidate)
    device: str = "cpu"
    cache: bool = True  # decode the images once into memory (small sets only)
    holdout: int = 0  # classification: images of ``data`` (the train dir) that score, the rest
    # of ``recalib_data`` (the same dir) recalibrates; 0 = ``data`` whole (a separate val dir)
    eval_padding: str = late(lambda: "include")  # detection: the dataset's eval_padding
    # (exclude: batches of images of one size)
    recalib_augment: tuple[float, float] | None = None  # classification with
    # search.recalib_augment: (crop_scale, color_jitter) of the training-augmented
    # recalibration images; None: evaluation preprocessing

    @property
    def recalib_momentum(self) -> float | None:
        """None: exact BN statistics; 0.1: the reference's running average (search.recalib)."""
        return 0.1 if self.search.recalib == "momentum" else None

    def recalib_regions(self, model: nn.Module) -> ImageRegions | None:
        """The images' own regions for the BN statistics of a detector's backbone and FPN
        (``search.recalib_padding: exclude``); None: the padded batches'."""
        if self.kind != "detection" or self.search.recalib_padding != "exclude":
            return None
        return ImageRegions(model.backbone)


def fitness_spec(cfg, kind: str, supernet: str, data: str, recalib_data: str, *,
                 dataset: str = "", images: str = "", recalib_image_dir: str = "",
                 detector: str | None = None) -> FitnessSpec:
    """The search's fitness of study ``cfg`` (its `search` section, the dataset's metric)."""
    from detnas.run.engine import resolve_device

    detection = kind == "detection"
    return FitnessSpec(
        checkpoint=str(supernet), kind=kind, space=cfg.space, data=str(data),
        recalib_data=str(recalib_data), search=cfg.search, images=str(images),
        recalib_image_dir=str(recalib_image_dir),
        detector=detector, metric=cfg.datasets[dataset].metric if detection else "top1",
        image_size=cfg.classification.image_size,
        seed=cfg.seed, device=str(resolve_device(cfg.device)),
        cache=cfg.datasets[dataset].cache if detection else cfg.classification.cache,
        holdout=0 if detection else cfg.classification.search_images,
        eval_padding=cfg.datasets[dataset].eval_padding if detection else "include",
        recalib_augment=(cfg.classification.crop_scale, cfg.classification.color_jitter)
        if cfg.search.recalib_augment and not detection else None,
    )


class SupernetFitness:
    """``fitness(arch)``: recalibrate the path's BN statistics, evaluate, restore.

    Args:
        model: the classifier or detector around the supernet.
        evaluate: ``evaluate(model) -> dict`` of metrics, run inside the recalibration.
        metric: the key of the fitness in that dict.
        recalib_batches: a callable returning a fresh iterable of image batches (the same images
            in the same order at every call).
        recalib_num_images: images per recalibration.
        recalib_module: the module recalibrated; default: a classifier whole, a detector's
            supernet only (its FPN and heads have no BN).
        recalib_forward: runs one batch through ``recalib_module``; default: call it (a
            classifier), `detector_recalib_forward` (a detector), `detector_train_forward` (a
            detector with BN outside its backbone: batches are lists of (image, target)).
        recalib_momentum: None for exact statistics, else the reference's running average.
        recalib_regions: a detector's: the BN layers of its backbone and FPN take the statistics
            of each image's own pixels (the default forwards set the regions of each batch; a
            ``recalib_forward`` given must set them itself); None: those of the padded batch.
    """

    def __init__(self, model: nn.Module, evaluate: Callable[[nn.Module], dict], metric: str,
                 recalib_batches: Callable[[], Iterable], recalib_num_images: int,
                 recalib_module: nn.Module | None = None,
                 recalib_forward: Callable | None = None,
                 recalib_momentum: float | None = None,
                 recalib_regions: ImageRegions | None = None):
        self.model = model
        self.supernet = backbone_of(model)
        if not isinstance(self.supernet, Supernet):
            raise ValueError(f"the fitness needs a supernet, got a {type(self.supernet).__name__}")
        self.evaluate = evaluate
        self.metric = metric
        self.recalib_batches = recalib_batches
        self.recalib_num_images = recalib_num_images
        if recalib_module is None and not isinstance(model, Classifier):
            device = next(model.parameters()).device
            if has_head_norm(model):
                recalib_module = model
                recalib_forward = recalib_forward or detector_train_forward(
                    model, device, recalib_regions)
            else:
                recalib_module = self.supernet
                recalib_forward = recalib_forward or detector_recalib_forward(
                    model, device, recalib_regions)
        self.recalib_module = recalib_module or model
        self.recalib_forward = recalib_forward
        self.recalib_momentum = recalib_momentum
        self.recalib_regions = recalib_regions

    def __call__(self, arch: Arch) -> float:
        self.model.eval()
        with self.supernet.use(arch), recalibrated(
            self.recalib_module, self.recalib_batches(), self.recalib_num_images,
            self.recalib_forward, self.recalib_momentum, self.recalib_regions,
        ):
            metrics = self.evaluate(self.model)
        if self.metric not in metrics:
            raise ValueError(f"fitness metric {self.metric!r} not in evaluation {sorted(metrics)}")
        return float(metrics[self.metric])


def detector_recalib_forward(model: nn.Module, device: torch.device | str,
                             regions: ImageRegions | None = None) -> Callable:
    """Run a list of images through the detector's backbone as the detector would see them
    (telling ``regions`` where they lie in the padded batch)."""
    supernet = backbone_of(model)

    def forward(images: list[torch.Tensor]) -> None:
        batch, _ = model.transform([img.to(device) for img in images])  # resize + normalise
        if regions is not None:
            regions.set(batch.image_sizes, batch.tensors.shape[-2:],
                        model.transform.size_divisible)
        supernet(batch.tensors)  # (N, 3, H, W) padded to a multiple of 32

    return forward


def has_head_norm(model: nn.Module) -> bool:
    """Whether a detector has BN layers outside its backbone (FPN, box head)."""
    inside = set(backbone_of(model).modules())
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in inside
               for m in model.modules())


def detector_train_forward(model: nn.Module, device: torch.device | str,
                           regions: ImageRegions | None = None) -> Callable:
    """Run (image, target) pairs through the whole detector in training mode, without gradients
    (the losses are discarded): every BN of backbone, FPN and heads sees what training feeds it.
    The RoI samplers draw from a fixed seed, so a candidate's statistics do not depend on the
    order of evaluation. ``regions`` is told where the images lie in the batch the detector's
    transform pads."""

    def transformed(_transform, _inputs, output) -> None:
        images = output[0]
        regions.set(images.image_sizes, images.tensors.shape[-2:], model.transform.size_divisible)

    def forward(pairs: list) -> None:
        images = [image.to(device) for image, _ in pairs]
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
                   for _, t in pairs]
        devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        hook = (model.transform.register_forward_hook(transformed) if regions is not None
                else None)
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                model(images, targets)
        finally:
            if hook is not None:
                hook.remove()

    return forward


def check_checkpoint(ckpt: dict, path: str | Path, spec: FitnessSpec) -> None:
    """The checkpoint must be a supernet of the config's space, for the fitness's task.

    Raises:
        ValueError: naming the checkpoint, the field and its value.
    """
    backbone = ckpt.get("backbone") or {}
    if backbone.get("kind") != "supernet":
        raise ValueError(f"{path}: backbone.kind is {backbone.get('kind')!r}, the search needs a "
                         "supernet checkpoint")
    if backbone.get("space") != spec.space:
        raise ValueError(f"{path}: backbone.space is {backbone.get('space')!r} but the config "
                         f"searches space {spec.space!r}")
    if ckpt.get("task") != spec.kind:
        raise ValueError(f"{path}: task is {ckpt.get('task')!r}, a {spec.kind} fitness needs a "
                         f"{spec.kind} supernet")
    if spec.kind == "detection" and spec.detector and ckpt.get("detector") != spec.detector:
        raise ValueError(f"{path}: detector is {ckpt.get('detector')!r}, expected "
                         f"{spec.detector!r}")


def load_supernet_model(spec: FitnessSpec) -> nn.Module:
    """The checked supernet model of ``spec.checkpoint``, in eval mode on ``spec.device``."""
    ckpt = load_checkpoint(spec.checkpoint)
    if "model" not in ckpt:
        raise ValueError(f"{spec.checkpoint}: not a detnas model checkpoint (no 'model' entry)")
    check_checkpoint(ckpt, spec.checkpoint, spec)
    model = model_from_meta(ckpt)
    load_state(model, ckpt["model"], spec.checkpoint, ckpt)
    return model.to(spec.device).eval()


def build_fitness(spec: FitnessSpec) -> SupernetFitness:
    """The fitness ``spec`` describes (loads the checkpoint and the data once)."""
    if spec.kind not in FITNESS_KINDS:
        raise ValueError(f"unknown fitness {spec.kind!r} ({', '.join(FITNESS_KINDS)})")
    torch.set_num_threads(spec.search.threads)
    from detnas import data, evaluation

    model = load_supernet_model(spec)
    device = torch.device(spec.device)
    if spec.kind == "detection":
        search = data.CocoDetection(spec.images, spec.data, cache=spec.cache)
        train = data.CocoDetection(spec.recalib_image_dir, spec.recalib_data, cache=spec.cache)
        with_targets = has_head_norm(model)
        if spec.search.prepare != "none":
            return _prepared_detection_fitness(spec, model, search, train, device, with_targets)

        def batches():
            loader = data.detection_loader(train, batch_size=spec.search.recalib_batch_size,
                                           shuffle=True, seed=spec.seed)
            return (list(zip(images, targets, strict=True)) if with_targets else images
                    for images, targets in loader)

        return SupernetFitness(
            model, lambda m: evaluation.evaluate_detector(
                m, search, spec.search.eval_batch_size, device, spec.search.coco_backend,
                spec.eval_padding == "exclude"),
            spec.metric, batches, spec.search.recalib_images,
            recalib_momentum=spec.recalib_momentum, recalib_regions=spec.recalib_regions(model),
        )
    # the held-out images of the training set score; the rest (what the supernet trained on)
    # recalibrates, with evaluation preprocessing (the statistics of what evaluation sees) or,
    # as SPOS, with the training augmentation
    held = dict(holdout=spec.holdout, seed=spec.seed)
    val = data.ImageFolderClassification(spec.data, spec.image_size, False, cache=spec.cache,
                                         held_out=True, classes_of=spec.recalib_data, **held)
    augment = spec.recalib_augment
    train = data.ImageFolderClassification(
        spec.recalib_data, spec.image_size, augment is not None, cache=spec.cache,
        **(dict(crop_scale=augment[0], color_jitter=augment[1]) if augment else {}), **held)
    val_loader = data.classification_loader(val, batch_size=spec.search.eval_batch_size,
                                             shuffle=False, seed=spec.seed)

    def batches():
        if augment is not None:
            torch.manual_seed(spec.seed)  # the same augmented images for every candidate
        loader = data.classification_loader(train, batch_size=spec.search.recalib_batch_size,
                                                shuffle=True, seed=spec.seed)
        return (images.to(device) for images, _labels in loader)

    return SupernetFitness(
        model, lambda m: evaluation.evaluate_classifier(m, val_loader, device), spec.metric,
        batches, spec.search.recalib_images, recalib_momentum=spec.recalib_momentum,
    )


def _prepared_detection_fitness(spec: FitnessSpec, model: nn.Module, search, train,
                                device: torch.device, with_targets: bool) -> SupernetFitness:
    """The detection fitness on images prepared once (`detnas.search.prepared`): same values.

    ``with_targets``: the detector has BN outside its backbone and is recalibrated whole, in
    training mode, on decoded (image, target) pairs; otherwise the backbone alone, on images
    prepared like the evaluated ones."""
    from detnas import data, evaluation
    from detnas.search import prepared

    if getattr(search, "flip_prob", 0.0):
        raise ValueError(f"{spec.data}: the search split must not be augmented (flip_prob)")
    s = spec.search
    resize = s.prepare == "resized"
    recalib = prepared.prepare_batches(
        model, data.detection_loader(train, batch_size=s.recalib_batch_size, shuffle=True,
                                     seed=spec.seed), device, s.recalib_images,
        resize and not with_targets, with_targets)
    evaluated = prepared.prepare_batches(
        model, data.detection_loader(search, batch_size=s.eval_batch_size, shuffle=False,
                                     seed=0, same_size=spec.eval_padding == "exclude"),
        device, resize=resize)

    def evaluate(m: nn.Module) -> dict:
        predictions = prepared.predict_prepared(m, evaluated, device)
        return evaluation.detection_metrics(search, predictions, s.coco_backend)

    regions = spec.recalib_regions(model)
    if with_targets:
        batches, module = (lambda: (b.pairs(device) for b in recalib)), model
        forward = detector_train_forward(model, device, regions)
    else:
        batches, module = (lambda: (b.inputs(device) for b in recalib)), backbone_of(model)
        forward = (prepared.prepared_recalib_forward(model, device, regions) if resize
                   else detector_recalib_forward(model, device, regions))
    fitness = SupernetFitness(
        model, evaluate, spec.metric, batches, s.recalib_images, recalib_module=module,
        recalib_forward=forward, recalib_momentum=spec.recalib_momentum, recalib_regions=regions,
    )
    fitness.search, fitness.prepared_search = search, evaluated  # for benchmarks
    return fitness
