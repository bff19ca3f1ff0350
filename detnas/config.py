"""Typed study configuration: a dataclass per stage, loaded from YAML, validated, written resolved.

The same YAML file is Snakemake's ``configfile`` and every ``detnas`` command's ``--config``.
Errors name the file, the dotted field and the bad value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detnas.dilations import DEPTHS, check_candidates

DETECTORS = ("fpn", "retinanet")  # the detectors `detnas.detection` builds


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///results/mlflow.db"  # MLflow 3 defaults to SQLite; file stores are gone
    experiment: str = "detnas"


@dataclass
class DatasetConfig:
    """A detection dataset in COCO layout (VOC is converted to it once)."""

    kind: str = "synthetic"  # synthetic | coco | voc
    root: str = ""  # dataset folder; for synthetic, where it is generated
    train_images: str = "train"  # image folder of the training set, relative to root
    train_annotations: str = "annotations/instances_train.json"
    test_images: str = "test"  # final evaluation only (COCO: val2017 / minival; VOC: test 2007)
    test_annotations: str = "annotations/instances_test.json"
    search_images: int = 50  # held out of train for the search fitness (paper: 5000)
    metric: str = "mmap"  # mmap (COCO AP@[.5:.95]) | ap50 (COCOeval) | voc07 (VOC 11-point AP50)
    flip_prob: float = 0.5  # horizontal flips of training images (maskrcnn-benchmark: 0.5)
    cache: bool = True  # decode every image once into memory: small sets only (not COCO)
    # synthetic only
    num_train: int = 240
    num_test: int = 60
    image_size: int = 128
    num_classes: int = 4
    max_objects: int = 6  # objects per image are 1..max_objects
    max_distractors: int = 2  # shapes of no class per image, 0..max_distractors


@dataclass
class ClassificationConfig:
    """The ImageNet-style classification set (ImageFolder: train/<class>/*, val/<class>/*)."""

    kind: str = "synthetic"  # synthetic | imagefolder
    root: str = ""
    num_classes: int = 10  # synthetic only
    num_train: int = 2000  # synthetic only
    num_val: int = 500  # synthetic only
    image_size: int = 64  # training crop size (paper: 224)
    cache: bool = True  # decode every image once into memory: small sets only (not ImageNet)
    crop_scale: float = 0.08  # smallest area fraction of RandomResizedCrop (reference: 0.08)
    color_jitter: float = 0.4  # brightness, contrast, saturation jitter (reference: 0.4)
    dropout: float = 0.2  # Dropout2d before the pooling of ShuffleNet classifiers (reference)
    init: str = "reference"  # ShuffleNet weights: reference (DetNAS's normal init) | torch
    search_images: int = 50  # train images held out for the ClsNASNet fitness (SPOS: 50000)
    loader: str = "cpu"  # cpu: PIL decode + augment in DataLoader workers | gpu: JPEG decode +
    # augmentation on the training device (data/device_loader.py), when the CPUs cannot keep up


@dataclass
class TrainConfig:
    """An SGD schedule (supernet pre-training / fine-tuning, retraining)."""

    steps: int = 200  # optimizer steps (paper: 300k ImageNet, 90k COCO)
    batch_size: int = 32  # global batch (paper: 1024 ImageNet, 16 COCO)
    lr: float = 0.1  # paper: 0.5 ImageNet (batch 1024), 0.02 FPN / 0.01 RetinaNet (batch 16)
    momentum: float = 0.9
    weight_decay: float = 4e-5  # not applied to BN and biases
    schedule: str = "linear"  # linear (decay to 0, ImageNet) | step (detection 1x)
    lr_steps: list[float] = field(default_factory=lambda: [2 / 3, 8 / 9])  # fractions of steps
    gamma: float = 0.1  # step schedule factor
    warmup_steps: int = 0  # paper: 500 for detection
    warmup_factor: float = 1 / 3  # lr factor at the first warm-up step (maskrcnn-benchmark)
    label_smoothing: float = 0.1  # classification only
    sampling: str = "uniform"  # supernet paths: uniform | flops_bins
    flops_bins: list[list[float]] = field(default_factory=list)  # [[low, high], ...] classifier
    # FLOPs at 224 (first conv + blocks + last conv + FC), as the reference's ImageNet supernet
    detector_lr: dict[str, float] = field(default_factory=dict)  # lr of one detector instead of
    # lr, e.g. {retinanet: 0.01} (reference: FPN 0.02, RetinaNet 0.01)
    detector_steps: dict[str, int] = field(default_factory=dict)  # steps of one detector instead
    # of steps (the embedded default: RetinaNet's steps are cheap, and it needs many of them)
    amp: str = "bf16"  # mixed precision on GPU: bf16 | fp16 (autocast + GradScaler; V100 /
    # RTX 20xx, where bf16 falls back to it) | off (the reference trains in fp32); CPU: off.
    # YAML reads a bare `off` / `false` as a boolean: both mean off (`true`: bf16)
    checkpoint_every: int = 50  # steps between checkpoints (a kill loses at most this many)
    log_every: int = 10

    def for_detector(self, detector: str) -> TrainConfig:
        """This schedule with the detector's own learning rate and steps, where it has them."""
        return dataclasses.replace(self, lr=self.detector_lr.get(detector, self.lr),
                                   steps=self.detector_steps.get(detector, self.steps))


@dataclass
class DetectorConfig:
    min_size: int = 128  # torchvision resize (paper: 800)
    max_size: int = 128  # paper: 1333
    fpn_channels: int = 64  # paper: 256
    box_head: str = "twomlp"  # Faster R-CNN box head: twomlp (light, trains best in minutes on
    # CPU) | 4conv1fc (the reference's; config/coco.yaml, config/voc.yaml)
    box_head_channels: int = 256  # width of the box head's fc layer(s) (paper: 1024)
    box_conv_channels: int = 256  # width of the 4conv1fc head's convs (reference: 256)
    norm: str = "none"  # BN in Faster R-CNN's FPN convs and conv box head: none | bn (the
    # reference's SyncBN; the search then recalibrates the whole detector, with targets)
    box_batch_size_per_image: int = 128  # sampled RoIs per image (paper: 512)
    rpn_batch_size_per_image: int = 128  # sampled anchors per image (paper: 256)
    rpn_post_nms_top_n: int = 300  # proposals per image in training (paper: 2000; test: half)
    score_thresh: float = 0.05  # detections kept for evaluation (paper); lower it for short runs


@dataclass
class SearchConfig:
    population: int = 50
    topk: int = 10
    generations: int = 20
    mutations: int = 20
    crossovers: int = 20
    mutation_prob: float = 0.1
    max_flops: float = 0.0  # backbone FLOPs limit at flops_input_size; 0 = no limit
    flops_input_size: int = 224  # the reference measures at 224x224
    max_params: float = 0.0  # backbone parameters limit; 0 = no limit
    max_latency: float = 0.0  # predicted backbone latency limit in ms, from the latency table
    # (section latency); 0 = no limit
    objective: str = "fitness"  # fitness: parents are the top k by fitness (the paper) | pareto:
    # the top k of the (cost, fitness) non-dominated fronts, cost = the predicted latency with a
    # latency table, else the FLOPs; the search also writes the front (front.json)
    recalib_images: int = 4000  # BN recalibration images per candidate (paper: 500 x 8)
    recalib_batch_size: int = 8
    recalib: str = "exact"  # BN statistics: exact (cumulative over all images) | momentum (the
    # reference's running average, momentum 0.1, dominated by the last batches)
    workers: int = 1  # evaluation processes; `detnas launch` sets one per GPU of the job; 0 = one
    # per visible GPU (worker i on cuda:i). The fitness does not depend on it.
    eval_batch_size: int = 8  # images per batch when evaluating a candidate's fitness
    threads: int = 1  # torch threads per evaluating process, fixed: float results then do not
    # depend on the number of workers (1 vs 2 threads changes low-order bits, hence rankings)
    prepare: str = "none"  # none | decoded | resized: the search and recalibration images decoded
    # (and resized) once per worker, kept on the GPU where they fit; the same fitness bit for bit.
    # Per image: decoded uint8 640x480 COCO 0.9 MB, resized float32 at 800 px 12 MB (GPU runs)
    coco_backend: str = "auto"  # auto: faster-coco-eval when installed (same 12 numbers as
    # pycocotools, the reference; 1.7x to 4x faster here) | pycocotools | faster


@dataclass
class LatencyConfig:
    """The per-block latency table (`detnas latency-table`) that `search.max_latency` reads."""

    table: str = ""  # the table's JSON file; "" = <results>/latency/table.json, which the
    # workflow measures when search.max_latency is set. A table given here also adds the
    # predicted latency of every candidate to the search's history.
    device: str = "auto"  # where to measure: auto (the study's device) | cpu | cuda
    batch_size: int = 1  # images per forward
    input_size: int = 224  # square input, pixels
    threads: int = 1  # torch CPU threads while measuring (recorded in the table)
    warmup: int = 10  # untimed forwards per module first
    repeats: int = 50  # timed runs of each (block, choice), inside whole forwards; the table
    # holds their median
    clock: str = "wall"  # wall | cpu: the measuring thread's CPU time (device cpu, threads 1),
    # which other jobs sharing the machine do not inflate by preempting it; wall is the latency


@dataclass
class NatsConfig:
    depth: int = 50  # ResNet depth (torchvision definition)
    width: int = 16  # base width of the ResNet (torchvision: 64); the tiny default shrinks it
    candidates: list[list[int]] = field(default_factory=lambda: [[1, 1], [2, 2], [3, 3]])
    groups: int = 4  # channel groups per searched conv; 1 = path-level ablation
    group_width: int = 0  # channels per group instead (the "channels per group" ablation); 0 = off
    searched_stages: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_warmup_steps: int = 0  # weight-only steps before alpha steps start (paper: unknown)
    search: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class RankConfig:
    """The ranking check: does the supernet rank architectures as standalone training does?"""

    enabled: bool = False  # a stage of the workflow per (dataset, detector) when true
    detectors: list[str] = field(default_factory=list)  # checked for these of `detectors`;
    # empty: every one
    archs: int = 6  # K architectures, spread over the FLOPs range the search may pick from
    pool: int = 2000  # random candidates under the search's limits the K are chosen among
    train: TrainConfig = field(default_factory=TrainConfig)  # each architecture's standalone
    # detection training, from scratch, on the supernet's training split (scored on the search
    # split, as the fitness)

    def checked_detectors(self, detectors: list[str]) -> list[str]:
        """The study's detectors the check runs for."""
        return [d for d in detectors if not self.detectors or d in self.detectors]


@dataclass
class StudyConfig:
    seed: int = 0
    space: str = "tiny"
    device: str = "auto"  # auto | cpu | cuda
    results: str = "results"
    workers: int = 0  # DataLoader worker processes per training process (cluster: 4-8)
    datasets: dict[str, DatasetConfig] = field(default_factory=lambda: {"synth": DatasetConfig()})
    detectors: list[str] = field(default_factory=lambda: ["fpn", "retinanet"])
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    supernet_pretrain: TrainConfig = field(default_factory=TrainConfig)
    supernet_finetune: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    scratch_schedule: float = 1.0  # DetNAS-scratch trains this many times supernet_finetune's
    # steps: from scratch needs a longer schedule (He et al. 2019: 3x and more)
    retrain_pretrain: TrainConfig = field(default_factory=TrainConfig)
    resnet_pretrain: TrainConfig = field(default_factory=TrainConfig)  # ResNet's own ImageNet
    # recipe (baseline and NATS start): lr 0.1 per 256 images, wd 1e-4, steps at 30/60 epochs
    retrain_finetune: TrainConfig = field(default_factory=TrainConfig)
    retrain_seeds: list[int] = field(default_factory=list)  # more seeds of every detection
    # retraining, beside `seed` (each from the same retrained classifier): mean and std per row
    rank: RankConfig = field(default_factory=RankConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` (recursing into dataclasses, lists and dicts)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(options[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        _key, item = typing.get_args(tp)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ValueError."""
    if cls is TrainConfig and isinstance(data.get("amp"), bool):  # YAML's `amp: off` is false
        data = {**data, "amp": "bf16" if data["amp"] else "off"}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})"
        )
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def check(cfg: StudyConfig, where: str) -> None:
    """Cross-field checks that types alone cannot express."""
    from detnas.space import SPACES

    if cfg.space not in SPACES:
        raise ValueError(f"{where}.space: unknown space {cfg.space!r} (known: {', '.join(SPACES)})")
    for d in cfg.detectors:
        if d not in DETECTORS:
            raise ValueError(f"{where}.detectors: unknown detector {d!r} "
                             f"({', '.join(DETECTORS)})")
    for name, t in vars(cfg).items():
        if isinstance(t, TrainConfig):
            _check_train(t, f"{where}.{name}")
    _check_train(cfg.rank.train, f"{where}.rank.train")
    for d in cfg.rank.detectors:
        if d not in cfg.detectors:
            raise ValueError(f"{where}.rank.detectors: {d!r} is not one of detectors "
                             f"({', '.join(cfg.detectors)})")
    if cfg.rank.archs < 2 or cfg.rank.pool < cfg.rank.archs:
        raise ValueError(f"{where}.rank: archs ({cfg.rank.archs}) must be >= 2 and pool "
                         f"({cfg.rank.pool}) >= archs")
    seeds = [cfg.seed, *cfg.retrain_seeds]
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"{where}.retrain_seeds: {cfg.retrain_seeds} must be distinct seeds "
                         f">= 0, other than seed ({cfg.seed})")
    _check_choice(cfg.detector.box_head, ("4conv1fc", "twomlp"), f"{where}.detector.box_head")
    _check_choice(cfg.detector.norm, ("bn", "none"), f"{where}.detector.norm")
    _check_choice(cfg.search.recalib, ("exact", "momentum"), f"{where}.search.recalib")
    _check_choice(cfg.latency.device, ("auto", "cpu", "cuda"), f"{where}.latency.device")
    _check_choice(cfg.latency.clock, ("wall", "cpu"), f"{where}.latency.clock")
    if cfg.latency.clock == "cpu" and (cfg.latency.device == "cuda" or cfg.latency.threads != 1):
        raise ValueError(f"{where}.latency.clock: cpu times one CPU thread: it needs "
                         f"latency.device cpu and latency.threads 1 (got {cfg.latency.device}, "
                         f"{cfg.latency.threads})")
    for key, low in (("batch_size", 1), ("input_size", 32), ("threads", 1), ("repeats", 1)):
        if getattr(cfg.latency, key) < low:
            raise ValueError(f"{where}.latency.{key}: {getattr(cfg.latency, key)} "
                             f"(must be >= {low})")
    if cfg.latency.warmup < 0:
        raise ValueError(f"{where}.latency.warmup: {cfg.latency.warmup} (must be >= 0)")
    c = cfg.classification
    _check_choice(c.init, ("reference", "torch"), f"{where}.classification.init")
    if not 0 < c.crop_scale <= 1:
        raise ValueError(f"{where}.classification.crop_scale: {c.crop_scale} (0 < scale <= 1)")
    if not 0 <= c.dropout < 1:
        raise ValueError(f"{where}.classification.dropout: {c.dropout} (0 <= p < 1)")
    if cfg.scratch_schedule <= 0:
        raise ValueError(f"{where}.scratch_schedule: {cfg.scratch_schedule} (must be > 0)")
    check_nats(cfg.nats, f"{where}.nats")
    for name, d in cfg.datasets.items():
        if d.kind not in ("synthetic", "coco", "voc"):
            raise ValueError(f"{where}.datasets.{name}.kind: {d.kind!r} (synthetic, coco, voc)")
        _check_choice(d.metric, ("mmap", "ap50", "voc07"), f"{where}.datasets.{name}.metric")
        if not 0 <= d.flip_prob <= 1:
            raise ValueError(f"{where}.datasets.{name}.flip_prob: {d.flip_prob} (0 <= p <= 1)")


def _check_train(t: TrainConfig, where: str) -> None:
    if t.steps < 0 or t.batch_size < 1:
        raise ValueError(f"{where}: steps must be >= 0 and batch_size >= 1")
    if t.schedule not in ("linear", "step"):
        raise ValueError(f"{where}.schedule: {t.schedule!r} (linear, step)")
    if t.sampling not in ("uniform", "flops_bins"):
        raise ValueError(f"{where}.sampling: {t.sampling!r} (uniform, flops_bins)")
    if t.sampling == "flops_bins" and not t.flops_bins:
        raise ValueError(f"{where}.flops_bins: sampling flops_bins needs bins")
    _check_choice(t.amp, ("bf16", "fp16", "off"), f"{where}.amp")
    if not 0 < t.warmup_factor <= 1:
        raise ValueError(f"{where}.warmup_factor: {t.warmup_factor} (0 < f <= 1)")
    for key in ("detector_lr", "detector_steps"):
        for d in getattr(t, key):
            if d not in DETECTORS:
                raise ValueError(f"{where}.{key}: unknown detector {d!r} "
                                 f"({', '.join(DETECTORS)})")


def check_nats(nats: NatsConfig, where: str = "config.nats") -> None:
    """Checks of the NATS settings that types alone cannot express.

    Raises:
        ValueError: naming the field and the bad value.
    """
    if nats.depth not in DEPTHS:
        raise ValueError(f"{where}.depth: {nats.depth} (known: {sorted(DEPTHS)})")
    check_candidates(nats.candidates, f"{where}.candidates")
    if nats.groups < 1 or nats.group_width < 0:
        raise ValueError(f"{where}: groups must be >= 1 and group_width >= 0, got "
                         f"{nats.groups} and {nats.group_width}")
    if not nats.searched_stages or not set(nats.searched_stages) <= {1, 2, 3, 4}:
        raise ValueError(f"{where}.searched_stages: {nats.searched_stages} (a subset of 1..4)")
    if len(nats.arch_betas) != 2:
        raise ValueError(f"{where}.arch_betas: {nats.arch_betas} (two numbers)")
    if nats.arch_warmup_steps < 0:
        raise ValueError(f"{where}.arch_warmup_steps: {nats.arch_warmup_steps} (>= 0)")


def _check_choice(value: str, known: tuple[str, ...], where: str) -> None:
    if value not in known:
        raise ValueError(f"{where}: {value!r} ({', '.join(known)})")


def _default_synthetic_roots(cfg: StudyConfig) -> None:
    """Synthetic sets without a root live under ``<results>/data``, as in the workflow."""
    for name, d in cfg.datasets.items():
        if d.kind == "synthetic" and not d.root:
            d.root = f"{cfg.results}/data/{name}"
    if cfg.classification.kind == "synthetic" and not cfg.classification.root:
        cfg.classification.root = f"{cfg.results}/data/classification"


def _set(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        data = data.setdefault(k, {})
    data[keys[-1]] = value


def load(path: str | Path | None = None, overrides: list[str] = ()) -> StudyConfig:
    """Load and validate a study config; ``overrides`` are ``dotted.key=yaml_value`` strings.

    Raises:
        ValueError: the file is missing or malformed, or a field has a bad name, type or value.
    """
    where = str(path) if path else "config"
    data: dict = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"{path}: config file does not exist") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        _set(data, key, yaml.safe_load(value))
    cfg = from_dict(StudyConfig, data, where)
    _default_synthetic_roots(cfg)
    check(cfg, where)
    return cfg


def latency_table_path(cfg: StudyConfig) -> str:
    """The latency table of the study: ``latency.table``, or the workflow's default path."""
    return cfg.latency.table or f"{cfg.results}/latency/table.json"


def search_uses_latency(cfg: StudyConfig) -> bool:
    """Whether the searches read the latency table: ``search.max_latency`` needs it, and one
    named by ``latency.table`` adds every candidate's predicted latency to the history."""
    return bool(cfg.search.max_latency or cfg.latency.table)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """A short stable hash of a (resolved) config or its dict, for tags and provenance."""
    text = json.dumps(cfg if isinstance(cfg, dict) else to_dict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
