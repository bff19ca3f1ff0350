"""The study's configuration: a dataclass per stage, loaded from YAML, checked, written resolved.

The same YAML file is Snakemake's ``configfile`` and every ``detnas`` command's ``--config``.
Errors name the file, the dotted field and the bad value. These dataclasses are the one definition
of the keys: their types, choices, bounds and comments (read by the generic loader,
`detnas.plan.typed`) also make the JSON schema the workflow validates with (`json_schema`). The
checks that types cannot express (`check`, `check_search`, ...) are here too, so that a wrong
setting fails when the workflow is parsed, before its first job.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from detnas.plan import layout, study, typed
from detnas.plan.dilations import DEPTHS, check_candidates
from detnas.plan.typed import (
    DROP,
    FRACTION,
    MIN0,
    MIN1,
    MIN2,
    POSITIVE,
    PROB,
    blame_override,
    from_dict,
    late,
    set_dotted,
    set_overrides,
    to_dict,
    yaml_error,
)

Detector = Literal["fpn", "retinanet"]
DETECTORS = typing.get_args(Detector)
Strategy = Literal[study.STRATEGIES]
DetectionSupernet = Literal[study.DETECTION_SUPERNETS]


SERVER = "server"
"""The ``tracking.uri`` of a study that logs to its own server (`detnas.run.tracking_server`)."""


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///results/mlflow.db"  # one machine: SQLite (file stores are gone); a
    # cluster: server (the study's own, `detnas tracking serve`) or a site's http(s)://HOST:PORT
    experiment: str = "detnas"


@dataclass
class DatasetConfig:
    """A detection dataset in COCO layout (VOC is converted to it once)."""

    kind: Literal["synthetic", "coco", "voc"] = "synthetic"
    root: str = ""  # dataset folder; for synthetic, where it is generated
    train_images: str = "train"  # image folder of the training set, relative to root
    train_annotations: str = "annotations/instances_train.json"
    test_images: str = "test"  # final evaluation only (COCO: val2017 / minival; VOC: test 2007)
    test_annotations: str = "annotations/instances_test.json"
    search_images: Annotated[int, MIN1] = 50  # held out of train for the search fitness
    # (paper: 5000)
    metric: Literal["mmap", "ap50", "voc07"] = "mmap"  # mmap (COCO AP@[.5:.95]) | ap50 (COCOeval) |
    # voc07 (VOC 11-point AP50)
    flip_prob: Annotated[float, PROB] = 0.5  # horizontal flips of training images
    # (maskrcnn-benchmark: 0.5)
    eval_padding: Literal["include", "exclude"] = late(lambda: "include")  # evaluation batches
    # (the search fitness, the final test, the ranking check): include: the images in order,
    # padded to the batch's largest (its borders reach into their features) | exclude: images
    # of one size a batch, none padded to another's (the reference evaluates one image per GPU)
    cache: bool = True  # decode every image once into memory: small sets only (not COCO)
    num_train: Annotated[int, MIN1] = 240  # synthetic only: training images
    num_test: Annotated[int, MIN1] = 60  # synthetic only: test images
    image_size: Annotated[int, MIN1] = 128  # synthetic only: square images, pixels
    num_classes: Annotated[int, MIN1] = 4  # synthetic only
    max_objects: Annotated[int, MIN1] = 6  # synthetic only: objects per image are 1..max_objects
    max_distractors: Annotated[int, MIN0] = 2  # synthetic only: shapes of no class per image,
    # 0..max_distractors


@dataclass
class ClassificationConfig:
    """The ImageNet-style classification set (ImageFolder: train/<class>/*, val/<class>/*)."""

    kind: Literal["synthetic", "imagefolder"] = "synthetic"
    root: str = ""
    num_classes: Annotated[int, MIN1] = 10  # synthetic only
    num_train: Annotated[int, MIN1] = 2000  # synthetic only
    num_val: Annotated[int, MIN1] = 500  # synthetic only
    image_size: Annotated[int, MIN1] = 64  # training crop size (paper: 224)
    cache: bool = True  # decode every image once into memory: small sets only (not ImageNet)
    crop_scale: Annotated[float, FRACTION] = 0.08  # smallest area fraction of RandomResizedCrop
    # (reference: 0.08)
    color_jitter: Annotated[float, MIN0] = 0.4  # brightness, contrast, saturation jitter
    # (reference: 0.4)
    resnet_color_jitter: float | None = None  # the same for ResNet's own recipe
    # (torchvision references classification/presets.py: none, 0); null: color_jitter
    dropout: Annotated[float, DROP] = 0.2  # Dropout2d before the pooling of ShuffleNet classifiers
    # (reference)
    init: Literal["reference", "torch"] = "reference"  # ShuffleNet weights: reference (DetNAS's
    # normal init) | torch
    search_images: Annotated[int, MIN1] = 50  # train images held out for the ClsNASNet fitness
    # (SPOS: 50000)
    loader: Literal["cpu", "gpu"] = "cpu"  # cpu: PIL decode + augment in DataLoader workers | gpu:
    # JPEG decode + augmentation on the training device (data/device_loader.py), when the CPUs
    # cannot keep up


@dataclass
class TrainConfig:
    """An SGD schedule (supernet pre-training / fine-tuning, retraining)."""

    steps: Annotated[int, MIN1] = 200  # optimizer steps (paper: 300k ImageNet, 90k COCO)
    batch_size: Annotated[int, MIN1] = 32  # global batch (paper: 1024 ImageNet, 16 COCO)
    lr: Annotated[float, POSITIVE] = 0.1  # paper: 0.5 ImageNet (batch 1024), 0.02 FPN / 0.01
    # RetinaNet (batch 16)
    momentum: Annotated[float, DROP] = 0.9
    weight_decay: Annotated[float, MIN0] = 4e-5  # on what param_groups decays
    param_groups: Literal["spos", "maskrcnn"] = "spos"  # spos: decay on conv/fc weights only, one
    # lr (SinglePathOneShot / DetNAS Supernet-ImageNet utils.py get_parameters; the ImageNet
    # recipe) | maskrcnn: every parameter named *bias* at 2x lr without decay, all else decayed, BN
    # weights included (maskrcnn-benchmark solver/build.py: BIAS_LR_FACTOR 2, WEIGHT_DECAY_BIAS 0)
    bn_momentum: Annotated[float, FRACTION] = 0.1  # BN running-average momentum while training
    # (torch's 0.1; DetNAS's DistributedSyncBN: 0.01, 0.1 for search supernets)
    aspect_grouping: bool = late(bool)  # detection: every batch of one orientation (wider than
    # high, or not), as maskrcnn-benchmark's DATALOADER.ASPECT_RATIO_GROUPING (data/build.py):
    # less padding, which train-mode BN counts in its statistics; false: batches as drawn
    freeze_bn_affine: bool = False  # BN weights and biases not trained (DetNAS's supernet
    # fine-tuning: engine/trainer.py:112-113 freezes every parameter, tools/train_net.py:62-72
    # thaws Conv2d, Linear and nn.BatchNorm2d, which its DistributedSyncBN is not)
    schedule: Literal["linear", "step"] = "linear"  # linear (decay to 0, ImageNet) | step
    # (detection 1x)
    lr_steps: list[Annotated[float, FRACTION]] = field(default_factory=lambda: [2 / 3, 8 / 9])
    # fractions of steps
    gamma: Annotated[float, POSITIVE] = 0.1  # step schedule factor
    warmup_steps: Annotated[int, MIN0] = 0  # paper: 500 for detection
    warmup_factor: Annotated[float, FRACTION] = 1 / 3  # lr factor at the first warm-up step
    # (maskrcnn-benchmark)
    label_smoothing: Annotated[float, DROP] = 0.1  # classification only
    sampling: Literal["uniform", "flops_bins"] = "uniform"  # supernet paths: uniform | flops_bins
    flops_bins: list[list[float]] = field(default_factory=list)  # [[low, high], ...] classifier
    # FLOPs at 224 (first conv + blocks + last conv + FC), as the reference's ImageNet supernet
    detector_lr: dict[Detector, Annotated[float, POSITIVE]] = field(default_factory=dict)  # lr of
    # one detector instead
    # of lr, e.g. {retinanet: 0.01} (reference: FPN 0.02, RetinaNet 0.01)
    detector_steps: dict[Detector, Annotated[int, MIN1]] = field(default_factory=dict)  # steps of
    # one detector
    # instead of steps (the embedded default: RetinaNet's steps are cheap, it needs many of them)
    detector_batch_size: dict[Detector, Annotated[int, MIN1]] = late(dict)  # batch size of one
    # detector instead of batch_size (the embedded default: on CPU a RetinaNet step of 8 images
    # costs little more than one of 4)
    amp: Literal["bf16", "fp16", "off"] | bool = "bf16"  # mixed precision on GPU: bf16 | fp16
    # (autocast + GradScaler; V100 / RTX 20xx, where bf16 falls back to it) | off (the reference
    # trains in fp32); CPU: off. YAML reads a bare `off` / `false` as a boolean: both mean off
    # (`true`: bf16)
    checkpoint_every: Annotated[int, MIN1] = 50  # steps between checkpoints (a kill loses at most
    # this many)
    log_every: Annotated[int, MIN1] = 10

    def for_detector(self, detector: str) -> TrainConfig:
        """This schedule with the detector's own learning rate, steps and batch size, where it has
        them."""
        return dataclasses.replace(
            self, lr=self.detector_lr.get(detector, self.lr),
            steps=self.detector_steps.get(detector, self.steps),
            batch_size=self.detector_batch_size.get(detector, self.batch_size))

    def __post_init__(self):
        if isinstance(self.amp, bool):  # YAML's `amp: off` is false
            self.amp = "bf16" if self.amp else "off"


@dataclass
class DetectorConfig:
    min_size: Annotated[int, MIN1] = 128  # torchvision resize (paper: 800)
    max_size: Annotated[int, MIN1] = 128  # paper: 1333
    fpn_channels: Annotated[int, MIN1] = 64  # paper: 256
    box_head: Literal["twomlp", "4conv1fc"] = "twomlp"  # Faster R-CNN box head: twomlp (light,
    # trains best in minutes on CPU) | 4conv1fc (the reference's; config/coco.yaml, config/voc.yaml)
    box_head_channels: Annotated[int, MIN1] = 256  # width of the box head's fc layer(s)
    # (paper: 1024)
    box_conv_channels: Annotated[int, MIN1] = 256  # width of the 4conv1fc head's convs
    # (reference: 256)
    norm: Literal["none", "bn"] = "none"  # BN in Faster R-CNN's FPN convs and conv box head: none |
    # bn (the reference's SyncBN; the search then recalibrates the whole detector, with targets)
    box_batch_size_per_image: Annotated[int, MIN1] = 128  # sampled RoIs per image (paper: 512)
    rpn_batch_size_per_image: Annotated[int, MIN1] = 128  # sampled anchors per image (paper: 256)
    rpn_post_nms_top_n: Annotated[int, MIN1] = 300  # proposals per image in training (paper:
    # 2000; test: half)
    score_thresh: Annotated[float, PROB] = 0.05  # detections kept for evaluation (paper); lower it
    # for short runs
    retinanet_nms: Annotated[float, FRACTION] = 0.5  # RetinaNet's NMS IoU in evaluation
    # (torchvision 0.5; reference 0.4: maskrcnn-benchmark MODEL.RETINANET.NMS_TH)
    retinanet_detections: Annotated[int, MIN1] = 300  # RetinaNet's detections per image
    # (torchvision 300; reference 100: TEST.DETECTIONS_PER_IMG)
    anchor_size: Annotated[int, MIN1] = 32  # side in input pixels of the anchors of the first
    # level (stride 4 for Faster R-CNN, 8 for RetinaNet), doubling per level: the reference's
    # 32..512 (maskrcnn-benchmark RPN.ANCHOR_SIZES); smaller for small images of large objects
    retinanet_head_norm: Literal["none", "gn"] = "none"  # RetinaNet's head convs: none (the
    # reference) | gn (GroupNorm, torchvision's RetinaNet v2: trains in minutes on CPU)
    retinanet_levels: Literal[3, 5] = 5  # RetinaNet's pyramid:
    # P3..P7 (5: the reference) | P3..P5 (3: no P6/P7, whose anchors outgrow small images)
    head_init: Literal["torchvision", "reference"] = late(lambda: "torchvision")  # Faster
    # R-CNN's box head and predictor: torchvision (kaiming-normal convs, torch's Linear) |
    # reference (convs N(0, 0.01), fc kaiming-uniform a=1, class scores N(0, 0.01), boxes
    # N(0, 0.001), biases 0: roi_box_feature_extractors.py, roi_box_predictors.py)
    box_loss_beta: Annotated[float, POSITIVE] = late(lambda: 1 / 9)  # Faster R-CNN's box head:
    # smooth L1's beta (torchvision 1/9; the reference 1: roi_heads/box_head/loss.py)
    rpn_straddle_thresh: Annotated[int, {"minimum": -1}] = late(lambda: -1)  # RPN training
    # ignores anchors crossing the image border by more than this many pixels (the reference's
    # RPN.STRADDLE_THRESH 0); -1 samples every anchor (torchvision)
    retinanet_loss: Literal["torchvision", "reference"] = late(lambda: "torchvision")  #
    # torchvision (per image: focal loss over every logit / its positives, L1 / its positives) |
    # reference (maskrcnn-benchmark: focal loss without the background logit / (the batch's
    # positives + images), smooth L1 beta 0.11 on deltas weighted (10, 10, 5, 5) / 4 x positives)


@dataclass
class SearchConfig:
    population: Annotated[int, MIN1] = 50
    topk: Annotated[int, MIN1] = 10
    generations: Annotated[int, MIN1] = 20
    mutations: Annotated[int, MIN0] = 20
    crossovers: Annotated[int, MIN0] = 20
    mutation_prob: Annotated[float, PROB] = 0.1
    operator_tries: Literal["all", "legal"] = "all"  # all: at most 10 x mutations (crossovers)
    # tries of any kind (SPOS src/Search/search.py:152-166) | legal: only legal candidates count,
    # until mutations (crossovers) are found (DetNAS distributed_arch_search/search.py:182-198)
    max_flops: Annotated[float, MIN0] = 0.0  # FLOPs limit at flops_input_size (flops_of);
    # 0 = no limit
    flops_of: Literal["backbone", "classifier"] = "backbone"  # what max_flops limits: backbone
    # (first conv + blocks: DetNAS's search) | classifier (+ last conv + FC at 1000 classes:
    # SPOS's search, src/Search/flops.py get_cand_flops)
    flops_input_size: Annotated[int, {"minimum": 32}] = 224  # the reference measures at 224x224
    max_params: Annotated[float, MIN0] = 0.0  # backbone parameters limit; 0 = no limit
    max_latency: Annotated[float, MIN0] = 0.0  # predicted backbone latency limit in ms, from the
    # latency table
    # (section latency); 0 = no limit
    objective: Literal["fitness", "pareto"] = "fitness"  # fitness: parents are the top k by fitness
    # (the paper) | pareto: the top k of the (cost, fitness) non-dominated fronts, cost = the
    # predicted latency with a latency table, else the FLOPs; the search also writes the front
    # (front.json)
    recalib_images: Annotated[int, MIN0] = 4000  # BN recalibration images per candidate
    # (paper: 500 x 8)
    recalib_batch_size: Annotated[int, MIN1] = 8
    recalib_augment: bool = False  # classification fitness: BN recalibrated on training-augmented
    # images (classification.crop_scale, color_jitter, flips: SPOS src/Search/imagenet_dataset.py
    # 64-72), the same for every candidate; false: evaluation preprocessing (what it is scored on)
    recalib: Literal["exact", "momentum"] = "exact"  # BN statistics: exact (cumulative over all
    # images) | momentum (the reference's running average, momentum 0.1, dominated by the last
    # batches)
    recalib_padding: Literal["include", "exclude"] = late(lambda: "include")  # detection: the
    # BN statistics of the backbone and FPN over the padded batch (include: torchvision's batching)
    # | over each image's own pixels (exclude: the reference, one image per GPU under SyncBN;
    # a COCO batch of mixed orientations is 25-30 % padding). Classification: no padding
    workers: Annotated[int, MIN0] = 1  # evaluation processes; `detnas launch` sets one per GPU of
    # the job; 0 = one
    # per visible GPU (worker i on cuda:i). The fitness does not depend on it.
    eval_batch_size: Annotated[int, MIN1] = 8  # images per batch when evaluating a
    # candidate's fitness
    threads: Annotated[int, MIN1] = 1  # torch threads per evaluating process, fixed: float results
    # then do not
    # depend on the number of workers (1 vs 2 threads changes low-order bits, hence rankings)
    prepare: Literal["none", "decoded", "resized"] = "none"  # none | decoded | resized: the search
    # and recalibration images decoded (and resized) once per worker, kept on the GPU where they
    # fit; the same fitness bit for bit. Per image: decoded uint8 640x480 COCO 0.9 MB, resized
    # float32 at 800 px 12 MB (GPU runs)
    coco_backend: Literal["auto", "pycocotools", "faster"] = "auto"  # auto: faster-coco-eval when
    # installed (same 12 numbers as pycocotools, the reference; 1.7x to 4x faster here) |
    # pycocotools | faster


@dataclass
class LatencyConfig:
    """The per-block latency table (`detnas latency-table`) that `search.max_latency` reads."""

    table: str = ""  # the table's JSON file; "" = <results>/latency/table.json, which the workflow
    # measures when search.max_latency is set. A table given here also adds the predicted latency of
    # every candidate to the search's history.
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to measure: auto (the study's device) |
    # cpu | cuda
    batch_size: Annotated[int, MIN1] = 1  # images per forward
    input_size: Annotated[int, {"minimum": 32}] = 224  # square input, pixels
    threads: Annotated[int, MIN1] = 1  # torch CPU threads while measuring (recorded in the table)
    warmup: Annotated[int, MIN0] = 10  # untimed forwards per module first
    repeats: Annotated[int, MIN1] = 50  # timed runs of each (block, choice), inside whole forwards;
    # the table holds their median
    clock: Literal["wall", "cpu"] = "wall"  # wall | cpu: the measuring thread's CPU time (device
    # cpu, threads 1), which other jobs sharing the machine do not inflate by preempting it; wall is
    # the latency


@dataclass
class NatsConfig:
    depth: int = 50  # ResNet depth (torchvision definition)
    width: Annotated[int, MIN1] = 16  # base width of the ResNet (torchvision: 64); the tiny default
    # shrinks it
    candidates: list[list[int]] = field(default_factory=lambda: [[1, 1], [2, 2], [3, 3]])
    groups: Annotated[int, MIN1] = 4  # channel groups per searched conv; 1 = path-level ablation
    group_width: Annotated[int, MIN0] = 0  # channels per group instead (the "channels per group"
    # ablation); 0 = off
    searched_stages: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    arch_lr: Annotated[float, POSITIVE] = 3e-4
    arch_betas: list[Annotated[float, DROP]] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: Annotated[float, MIN0] = 1e-3
    arch_warmup_steps: Annotated[int, MIN0] = 0  # weight-only steps before alpha steps start
    # (paper: unknown)
    arch_images: Annotated[int, MIN0] = 0  # training images held out for the alphas, the rest
    # trains the weights (paper: COCO's 35k valminusminival against train2014's 83k); 0: the
    # alphas train on the search split, the weights on the supernet's
    search: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class RankConfig:
    """The ranking check: does the supernet rank architectures as standalone training does?"""

    enabled: bool = False  # a stage of the workflow per (dataset, detector) when true
    detectors: list[Detector] = field(default_factory=list)  # checked for these of `detectors`;
    # empty: every one
    archs: Annotated[int, MIN2] = 6  # K architectures, spread over the FLOPs range the search may
    # pick from
    pool: Annotated[int, MIN2] = 2000  # random candidates under the search's limits the K are
    # chosen among
    train: TrainConfig = field(default_factory=TrainConfig)  # each architecture's standalone
    # detection training, from scratch, on the supernet's training split (scored on the search
    # split, as the fitness)

    def checked_detectors(self, detectors: list[str]) -> list[str]:
        """The study's detectors the check runs for."""
        return [d for d in detectors if not self.detectors or d in self.detectors]


@dataclass
class AblationConfig:
    """A row of the study beyond the paper's (detnas/plan/study.py): a detection search of a DetNAS
    supernet with settings of its own, retrained and reported like the paper's rows."""

    title: str = ""  # its name in the report; "": its key
    strategy: Strategy = "evolution"  # evolution | random (the evolution's evaluation budget)
    supernet: DetectionSupernet = "pretrained"  # the detection supernet it searches: pretrained
    # (DetNAS's) | scratch (DetNAS-scratch's)
    overrides: dict[str, bool | int | float | str] = field(default_factory=dict)  # its search's
    # settings, dotted keys of the search section, e.g. {search.objective: pareto} (`detnas
    # search --ablation <name>` applies them)
    colour: str | None = None  # its colour in the figures, e.g. "#2ca02c"; null: matplotlib's next
    compared_with: list[str] = field(default_factory=list)  # rows the report's observations
    # compare it with, e.g. [detnas]


@dataclass
class SupernetFromConfig:
    """A published supernet the study starts from instead of training its own
    (docs/published-supernet.md)."""

    classification: str = ""  # a classification supernet checkpoint (`detnas train supernet
    # --task classification`'s checkpoint.pt, e.g. brought in by `dvc import`): the study has no
    # pre-training job; its space, classes and held-out images must be this study's
    # (`detnas.plan.preflight`). "": the study pre-trains its own


@dataclass
class StudyConfig:
    seed: Annotated[int, MIN0] = 0
    space: str = "tiny"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    results: str = "results"
    workers: Annotated[int, MIN0] = 0  # DataLoader worker processes per training process
    # (cluster: 4-8)
    cpu_isa: Literal["avx2", "native"] = "avx2"  # the instruction set CPU numerics are pinned
    # to (ATen, oneDNN, MKL: provenance.pin_cpu_isa): avx2 gave the same bits on an AVX-512 and
    # an AVX2-only AMD EPYC (the whole default study), not between an Intel Xeon and an AMD EPYC
    # (MKL's AVX2 branch is Intel's only); native: the CPU's best. Verdicts do not rest on it:
    # the report's noise covers another machine's last bits (docs/noise.md). No effect on GPUs
    datasets: dict[str, DatasetConfig] = field(default_factory=lambda: {"synth": DatasetConfig()})
    detectors: Annotated[list[Detector], {"minItems": 1}] = field(
        default_factory=lambda: ["fpn", "retinanet"])
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    supernet_pretrain: TrainConfig = field(default_factory=TrainConfig)
    supernet_from: SupernetFromConfig = late(SupernetFromConfig)  # a published supernet instead
    # of supernet_pretrain's (docs/published-supernet.md)
    supernet_finetune: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    clsnas_search: SearchConfig | None = None  # the ClsNASNet search's own settings, one ImageNet
    # search whatever the detection sets (paper configs: SPOS's, src/Search/search.py); null: the
    # search section's
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    scratch_schedule: Annotated[float, POSITIVE] = 1.0  # DetNAS-scratch trains this many times
    # supernet_finetune's steps: from scratch needs a longer schedule (He et al. 2019: 3x and more)
    retrain_pretrain: TrainConfig = field(default_factory=TrainConfig)
    resnet_pretrain: TrainConfig = field(default_factory=TrainConfig)  # ResNet's own ImageNet
    # recipe (baseline and NATS start): lr 0.1 per 256 images, wd 1e-4, steps at 30/60 epochs
    retrain_finetune: TrainConfig = field(default_factory=TrainConfig)
    replicates: Annotated[int, MIN1] = 1  # independent retrainings of every row (classifier and
    # detector; a searched row's search too, see search_seeds), replicate k seeded
    # `replicate_seed(seed, k)`: the report's training noise is their spread, pooled over the rows
    # (detnas/report/noise.py); 1 leaves it unknown and every comparison undetermined
    search_seeds: Annotated[int, MIN1] = 1  # runs of every search, run k seeded as replicate k:
    # 1 = every replicate retrains the one winner (verdicts about the architecture found); else
    # >= replicates, replicate k retrains search k's winner (verdicts about the method), and the
    # report shows how stable the winner is
    replicate: Annotated[int, MIN0] = late(int)  # which replicate a job runs (set per job by the
    # workflow: `--set replicate=K`); its seeds are `run_seed`, its data and splits the study's
    rank: RankConfig = field(default_factory=RankConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ablations: dict[str, AblationConfig] = late(dict)  # rows of the study beyond the paper's
    # (detnas/plan/study.py), by name, e.g. {pareto: {overrides: {search.objective: pareto},
    # compared_with: [detnas]}}

    @property
    def run_seed(self) -> int:
        """The seed of this job's replicate (`replicate_seed`): a training's initial weights and
        image order, a search's proposals. The study's ``seed`` alone makes the data, the splits
        and the supernets, which every replicate shares."""
        return replicate_seed(self.seed, self.replicate)

    def search_replicate(self, replicate: int) -> int:
        """The search whose winner replicate ``replicate`` of a searched row retrains."""
        return replicate if self.search_seeds > 1 else 0


REPLICATE_STRIDE = 1000
"""Replicate k of a study of seed s is seeded s + 1000 k: distinct from every replicate of the
studies of seeds 0 to 999, so that studies run at seeds 0, 1, 2 (two machines' stand-ins) share
no run."""


def replicate_seed(seed: int, replicate: int) -> int:
    """The seed of replicate ``replicate`` (0: the study's own seed)."""
    return seed + REPLICATE_STRIDE * replicate


def check(cfg: StudyConfig, where: str) -> None:
    """Cross-field checks that types, choices and bounds alone cannot express."""
    from detnas.plan.space import SPACES

    if cfg.space not in SPACES:
        raise ValueError(f"{where}.space: unknown space {cfg.space!r} (known: {', '.join(SPACES)})")
    check_search(cfg.search, cfg.space, f"{where}.search")
    if cfg.clsnas_search is not None:
        check_search(cfg.clsnas_search, cfg.space, f"{where}.clsnas_search")
    schedules = {name: t for name, t in vars(cfg).items() if isinstance(t, TrainConfig)}
    for name in ("supernet_pretrain", "retrain_pretrain", "resnet_pretrain"):
        if schedules[name].aspect_grouping:
            raise ValueError(f"{where}.{name}.aspect_grouping: true, but ImageNet batches are "
                             "crops of one size (a detection setting)")
    for name, t in {**schedules, "rank.train": cfg.rank.train}.items():
        if t.sampling == "flops_bins":
            check_bins(t.flops_bins, cfg.space, cfg.search.flops_input_size,
                       f"{where}.{name}.flops_bins")
    for d in cfg.rank.detectors:
        if d not in cfg.detectors:
            raise ValueError(f"{where}.rank.detectors: {d!r} is not one of detectors "
                             f"({', '.join(cfg.detectors)})")
    if cfg.rank.pool < cfg.rank.archs:
        raise ValueError(f"{where}.rank: pool ({cfg.rank.pool}) must be >= archs "
                         f"({cfg.rank.archs})")
    if 1 < cfg.search_seeds < cfg.replicates:
        raise ValueError(f"{where}.search_seeds: {cfg.search_seeds} must be 1 (every replicate "
                         f"retrains the one winner) or >= replicates ({cfg.replicates})")
    if cfg.replicate >= max(cfg.replicates, cfg.search_seeds):
        raise ValueError(f"{where}.replicate: {cfg.replicate} must be < replicates "
                         f"({cfg.replicates}) or search_seeds ({cfg.search_seeds})")
    if cfg.latency.clock == "cpu" and (cfg.latency.device == "cuda" or cfg.latency.threads != 1):
        raise ValueError(f"{where}.latency.clock: cpu times one CPU thread: it needs "
                         f"latency.device cpu and latency.threads 1 (got {cfg.latency.device}, "
                         f"{cfg.latency.threads})")
    uri = cfg.tracking.uri
    if uri != SERVER and not re.match(r"[a-z][a-z0-9+.-]*:", uri):
        raise ValueError(f"{where}.tracking.uri: {uri!r} (an MLflow store: sqlite:///FILE, "
                         f"http(s)://HOST:PORT, or {SERVER}: the study's own tracking server)")
    check_nats(cfg.nats, f"{where}.nats")
    check_data(cfg, where)
    check_ablations(cfg, where)


def check_ablations(cfg: StudyConfig, where: str) -> None:
    """The rows the config adds (``ablations``): named apart from the paper's
    (detnas/plan/study.py), compared with rows of the study, their overrides valid keys and values
    of ``search``.

    Raises:
        ValueError: naming the row, the field and the value.
    """
    for name, ablation in cfg.ablations.items():
        at = f"{where}.ablations.{name}"
        if any(r.name == name for r in study.ROWS):
            raise ValueError(f"{at}: {name!r} is a row of the paper's table "
                             "(detnas/plan/study.py); name the new row otherwise")
        for key in ablation.overrides:
            if not key.startswith("search."):
                raise ValueError(f"{at}.overrides.{key}: a row overrides its search's settings "
                                 "only (search.KEY)")
        with_overrides(cfg, ablation.overrides, f"{at}.overrides")
    study.check(study.rows(cfg), f"{where}.ablations")


def with_overrides(cfg: StudyConfig, overrides: dict[str, Any], where: str) -> StudyConfig:
    """``cfg`` with ``overrides`` (dotted key -> value) set, checked; e.g. a row's search
    settings (`detnas.plan.study.Row.overrides`).

    Raises:
        ValueError: an unknown key or a bad value, said of ``where``.
    """
    data = to_dict(cfg)
    rows = data.pop("ablations", {})  # checked once, by the caller
    for key, value in overrides.items():
        set_dotted(data, key, value)
    try:
        result = from_dict(StudyConfig, data, "config")
        check(result, "config")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    result.ablations = from_dict(StudyConfig, {"ablations": rows}).ablations
    return result


def check_nats(nats: NatsConfig, where: str = "config.nats") -> None:
    """Checks of the NATS settings that types alone cannot express.

    Raises:
        ValueError: naming the field and the bad value.
    """
    if nats.depth not in DEPTHS:
        raise ValueError(f"{where}.depth: {nats.depth} (known: {sorted(DEPTHS)})")
    check_candidates(nats.candidates, f"{where}.candidates")
    if not nats.searched_stages or not set(nats.searched_stages) <= {1, 2, 3, 4}:
        raise ValueError(f"{where}.searched_stages: {nats.searched_stages} (a subset of 1..4)")
    if len(nats.arch_betas) != 2:
        raise ValueError(f"{where}.arch_betas: {nats.arch_betas} (two numbers)")
    for stage in sorted(set(nats.searched_stages)):  # layer<stage>'s conv2: width x 2^(stage-1)
        channels = nats.width * 2 ** (stage - 1)
        key, size = ("group_width", nats.group_width) if nats.group_width else ("groups",
                                                                             nats.groups)
        if channels % size:
            raise ValueError(f"{where}.{key}: {size} does not divide the {channels} channels of "
                             f"the searched convs of stage {stage} (width {nats.width} x "
                             f"{2 ** (stage - 1)})")


def check_floor(where: str, limit: float, floor: float, space: str, unit: str) -> None:
    """A search's cost limit ``limit`` (0: none) is not below ``floor``, the cost of the
    cheapest network of ``space`` in ``unit``: under it no candidate is feasible.

    Raises:
        ValueError: naming the key ``where``, the limit and the floor.
    """
    if 0 < limit < floor:
        raise ValueError(f"{where}: {limit:.6g} is below the cheapest network of space {space} "
                         f"({floor:,.6g} {unit}): no candidate is feasible")


def check_search(s: SearchConfig, space: str, where: str) -> None:
    """Search settings that the search itself would refuse, or run for nothing, after the
    supernets it searches are trained: the top k and the candidates a generation breeds within
    the population, each cost limit at or above the cheapest network of the space (the
    latency's: `detnas.plan.preflight`, or the search, which has the table).

    Raises:
        ValueError: naming the key and the value.
    """
    from detnas.plan.flops import cost_table

    if s.topk > s.population:
        raise ValueError(f"{where}.topk: {s.topk} exceeds population ({s.population}): the "
                         "parents are the top k of a population")
    if s.mutations + s.crossovers > s.population:
        raise ValueError(f"{where}.mutations: {s.mutations} + crossovers {s.crossovers} exceed "
                         f"population ({s.population}), the candidates of a generation")
    table = cost_table(space, s.flops_input_size)
    check_floor(f"{where}.max_flops", s.max_flops, table.flops_range(s.flops_of == "classifier")[0],
                space, f"{s.flops_of} FLOPs at {s.flops_input_size}px")
    check_floor(f"{where}.max_params", s.max_params, table.floor().params, space,
                "backbone params")


def check_bins(bins: list[list[float]], space: str, input_size: int, where: str) -> None:
    """Supernet path sampling's FLOPs bins (`detnas.run.train.path_sampler`: classifier FLOPs at
    ``input_size``): each a range ``[low, high]`` that some network of ``space`` falls into
    (else training draws 10,000 paths for it, then fails).

    Raises:
        ValueError: naming the bin and the space's FLOPs range.
    """
    from detnas.plan.flops import cost_table

    if not bins:
        raise ValueError(f"{where}: sampling flops_bins needs bins")
    table = cost_table(space, input_size)
    for i, b in enumerate(bins):
        if len(b) != 2 or b[0] > b[1]:
            raise ValueError(f"{where}[{i}]: {b} (expected [low, high], low <= high)")
        if not table.reaches(b[0], b[1], classifier=True):
            low, high = table.flops_range(classifier=True)
            raise ValueError(f"{where}[{i}]: [{b[0]:.6g}, {b[1]:.6g}]: no network of space "
                             f"{space} has its classifier FLOPs at {input_size}px in it (they "
                             f"span {low:,} to {high:,}, search.flops_input_size)")


def check_holdout(where: str, holdout: int, size: int, of: str) -> None:
    """``holdout`` images held out of a set of ``size`` (``of``: what says the size) leave
    both parts non-empty (`detnas.data.split`)."""
    if not 0 < holdout < size:
        raise ValueError(f"{where}: {holdout} (held out of the {size} training images of {of}: "
                         f"must be 1..{size - 1})")


def check_data(cfg: StudyConfig, where: str) -> None:
    """What the config says of the data, checked before the data exist: the synthetic sets'
    settings (`detnas.data.synthetic`), the images held out of their training sets (the
    search split, NATS's architecture split). Real datasets' files: `detnas.plan.preflight`.

    Raises:
        ValueError: naming the key and the value.
    """
    from detnas.data import synthetic

    for name, d in cfg.datasets.items():
        if d.kind != "synthetic":
            continue
        at = f"{where}.datasets.{name}"
        synthetic.check_detection_settings(d.num_train, d.num_test, d.image_size, d.num_classes,
                                           f"{at}.")
        check_holdouts(cfg, where, name, d.num_train, f"datasets.{name} (num_train)")
    c = cfg.classification
    if c.kind == "synthetic":
        synthetic.check_classification_settings(c.num_train, c.num_val, c.image_size,
                                                c.num_classes, f"{where}.classification.")
        check_holdout(f"{where}.classification.search_images", c.search_images, c.num_train,
                      "classification (num_train)")


def check_holdouts(cfg: StudyConfig, where: str, name: str, size: int, of: str) -> None:
    """The images held out of the training set of dataset ``name`` (``size`` images, ``of``:
    whence): the search split, NATS's architecture split."""
    check_holdout(f"{where}.datasets.{name}.search_images", cfg.datasets[name].search_images, size,
                  of)
    if cfg.nats.arch_images:
        check_holdout(f"{where}.nats.arch_images", cfg.nats.arch_images, size, of)


def resolve_data_roots(cfg: StudyConfig, where: str, generated: bool = False) -> None:
    """Fill in the roots of the synthetic sets: ``<results>/data/<name>`` and
    ``<results>/data/classification`` (detnas.plan.layout), where the workflow generates them.

    ``generated`` (the workflow, which writes the synthetic sets itself): a synthetic set's root,
    when given, and its file layout must be those; every other kind needs a root.
    """
    layout_keys = {k: getattr(DatasetConfig, k) for k in
                   ("train_images", "train_annotations", "test_images", "test_annotations")}
    sets = [(f"datasets.{name}", d, layout.data_dir(name)) for name, d in cfg.datasets.items()]
    sets.append(("classification", cfg.classification, layout.CLASSIFICATION_DATA))
    for key, d, rel in sets:
        root = f"{cfg.results}/{rel}"
        if d.kind != "synthetic":
            if generated and not d.root:
                raise ValueError(f"{where}.{key}.root: set the folder of the {d.kind} data")
            continue
        if generated and d.root not in ("", root):
            raise ValueError(f"{where}.{key}.root: {d.root!r}: a synthetic set is generated by "
                             f"the workflow under {root}; leave root empty")
        d.root = d.root or root
        if not generated or d is cfg.classification:
            continue
        for k, default in layout_keys.items():
            if getattr(d, k) != default:
                raise ValueError(f"{where}.{key}.{k}: {getattr(d, k)!r}: a synthetic set has "
                                 f"the fixed layout {default!r}")


def read_file(path: str | Path) -> dict:
    """The settings of a config file: a YAML mapping (an empty file, or one that is not a
    mapping, is an error: it would silently run the built-in defaults).

    Raises:
        ValueError: naming the file.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: config file does not exist") from None
    except yaml.YAMLError as e:
        raise ValueError(yaml_error(path, e)) from None
    if data is None:
        raise ValueError(f"{path}: the config file is empty (expected a mapping of settings, "
                         "e.g. config/config.yaml)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level, got "
                         f"{type(data).__name__} {data!r:.60}")
    return data


def load(path: str | Path | None = None, overrides: list[str] = (),
         generated: bool = False) -> StudyConfig:
    """Load and validate a study config; ``overrides`` are ``dotted.key=yaml_value`` strings;
    ``generated``: as the workflow does (`from_data`).

    Raises:
        ValueError: the file is missing or malformed, or a field has a bad name, type or value.
    """
    where = str(path) if path else "config"
    return from_settings(read_file(path) if path else {}, where, overrides, generated)


def from_settings(data: dict, where: str, overrides: list[str] = (),
                  generated: bool = False) -> StudyConfig:
    """The checked study config of the settings ``data`` (of ``where``) with ``overrides``
    (``dotted.key=yaml_value``) set in them (``data`` is changed): `load` of a file, `detnas
    init` of the settings it writes. An error of an overridden field is said of its ``--set``.

    Raises:
        ValueError: an override that is not key=YAML, or as `from_data`.
    """
    set_overrides(data, overrides)
    try:
        return from_data(data, where, generated)
    except ValueError as e:
        raise ValueError(blame_override(str(e), where, overrides)) from None


def from_data(data: dict, where: str, generated: bool = False) -> StudyConfig:
    """The checked study config of the settings ``data`` (read from ``where``): types, choices
    and bounds, the data roots filled in (`resolve_data_roots`), the cross-field checks. `load`
    reads a file with it, the workflow its config (workflow/rules/common.smk, ``generated``).

    Raises:
        ValueError: naming ``where``, the field and the value.
    """
    cfg = from_dict(StudyConfig, data, where)
    resolve_data_roots(cfg, where, generated)
    check(cfg, where)
    return cfg


def write_resolved(cfg: StudyConfig, path: str | Path, header: str = "") -> bool:
    """Write the resolved config (every key, data roots filled in) to ``path`` as YAML, after the
    comment ``header``, atomically; a file with that very content is left untouched. Returns
    whether it was written."""
    from detnas.io import save_text

    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += yaml.safe_dump(to_dict(cfg), sort_keys=False)
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    save_text(path, text)
    return True


def dataset_of(cfg: StudyConfig, name: str) -> DatasetConfig:
    """The detection dataset ``name`` of the config (a command's ``--dataset``).

    Raises:
        ValueError: the config has no dataset of that name (naming those it has).
    """
    if name not in cfg.datasets:
        raise ValueError(f"--dataset {name!r}: not in the config's datasets "
                         f"({', '.join(cfg.datasets)})")
    return cfg.datasets[name]


def clsnas_search(cfg: StudyConfig) -> SearchConfig:
    """The settings of the ClsNASNet search: ``clsnas_search``, else the ``search`` section."""
    return cfg.clsnas_search or cfg.search


def latency_table_path(cfg: StudyConfig) -> str:
    """The latency table of the study: ``latency.table``, or the workflow's default path."""
    return cfg.latency.table or f"{cfg.results}/{layout.LATENCY_TABLE}"


def search_uses_latency(cfg: StudyConfig) -> bool:
    """Whether the searches read the latency table: ``search.max_latency`` needs it, and one
    named by ``latency.table`` adds every candidate's predicted latency to the history."""
    return bool(cfg.search.max_latency or cfg.latency.table)


def json_schema() -> dict:
    """The JSON schema (draft 2020-12) of a study config, generated from these dataclasses: the
    keys, their types, choices (Literal) and bounds (Annotated), and their comments.

    The workflow validates its config with it (workflow/rules/common.smk). Every field has a
    default, so no key is required.
    """
    from detnas.plan.space import SPACES

    schema = typed.json_schema(StudyConfig)
    schema["description"] = ("The detnas study config: Snakemake's configfile and every `detnas` "
                             "command's --config (detnas/plan/config.py).")
    schema["properties"]["space"]["enum"] = list(SPACES)  # registered in detnas/plan/space.py
    return schema
