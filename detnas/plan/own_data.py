"""A study config for the user's own COCO-format detection data: what `detnas init` decides.

From an annotation file and its image folder (a test split given, or held out here), optionally
an ImageFolder classification set, and the GPUs a job has, it checks the data
(`detnas.data.audit`: one line per problem, naming the file and the item), counts the classes,
holds the test split out where none is given, foresees the search split the workflow holds out
of train (the `split` job: `detnas.data.split`, the same seeded draw), and writes a study config
built on one of the repository's configs, in the keys they use (`detnas.plan.config`):

- ``full`` (the default): ``config/coco.yaml``, the paper's recipe (the 300M space, both
  detectors, every ablation), with its dataset replaced and its schedules scaled to the dataset's
  size and the GPUs: `scaled_schedule`.
- ``toy``: ``config/test.yaml``, the CI study's toy scale (the test space, 64-px images, a few
  steps a stage, FPN only, one replicate): every stage of the study on the user's files in
  minutes on a CPU, a check of the data and the pipeline before the GPU-days, not a result.

Each decision is said twice, in the written config's comments and in what `detnas init` prints;
the config is checked as the workflow checks it (the JSON schema, `detnas.plan.config.from_data`,
`detnas.plan.preflight.check_workflow`) before it is written, atomically. Torch-free.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from detnas.data import audit as data_audit
from detnas.data.split import held_out_ids

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
BASES = {"full": "coco.yaml", "toy": "test.yaml"}
"""The config each scale is built on (in the repository's config/ folder)."""
STAND_IN = "config.yaml"
"""The embedded default: its synthetic classification stand-in and that stand-in's schedules,
where no classification set is given at full scale."""

REFERENCE_GPUS = 8
"""The paper's GPUs per job: the batch sizes of config/coco.yaml are theirs (16 detection images,
1024 ImageNet images), per GPU 2 and 128."""
COCO_TRAIN_IMAGES = 118_287
LARGE_SET = 50_000
"""From this many training images on, detection schedules are COCO 1x's 12 epochs (90k x 16 of
118k images); below, VOC's 24 (the paper's 22.5k x 16 of 16.5k images: 22 epochs)."""
CLASSIFICATION_EPOCHS = {"supernet_pretrain": 240, "retrain_pretrain": 240, "resnet_pretrain": 90}
"""ImageNet epochs of config/coco.yaml's classification schedules: 300k x 1024 and 450k x 256
images of 1.28M."""
HOLDOUT_FRACTION = 5
"""A fifth of the images held out for the test split (where none is given) and, of the rest,
for the search split: at most `MAX_HOLDOUT`."""
MAX_HOLDOUT = 5000  # the paper's search split of COCO, and COCO's val2017
TOY_SEARCH_IMAGES = 8  # config/test.yaml's
CLASSIFICATION_HOLDOUT = 25  # SPOS: 50,000 of ImageNet's 1.28M training images (1/25.6)
CACHE_LIMIT = 2**30
"""Datasets that decode to less than this (1 GiB) are decoded once and held in memory."""
PREPARE_LIMIT = 8 * 2**30
"""The search's images kept decoded on each search worker's GPU up to this (config/coco.yaml's
estimate for COCO: about 8 GB for 5,000 + 4,000 images)."""
SMALL_IMAGES = 400
"""Images whose median short side is under this are said to be upsampled by the 800-px detector."""
MIN_TRAIN_IMAGES = 4  # 2 held out for the search, 2 to train the supernet on
TEST_SPLIT_SEED = 0
"""The seed of the held-out test split: fixed, the study's seed does not change the test set."""
NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class Request:
    """What the user gives `detnas init` (paths as given: relative to the working folder, or
    absolute)."""

    train_annotations: Path
    train_images: Path
    out: Path
    name: str = ""
    test_annotations: Path | None = None
    test_images: Path | None = None
    classification: Path | None = None
    gpus: int = 1
    scale: str = "full"
    split_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    quick: bool = False
    strict: bool = False
    force: bool = False
    command: str = ""  # the command line, for the config's header


@dataclass
class Outcome:
    """What `init` found and did: the data's problems (lines), its summary, the decisions
    (``dotted key -> why``), the files it wrote."""

    problems: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    decisions: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


class DataError(ValueError):
    """The data has errors (or, ``--strict``, warnings): each said in ``outcome.problems``."""

    def __init__(self, message: str, outcome: Outcome):
        super().__init__(message)
        self.outcome = outcome


def _abs(path: Path | str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def default_name(images: Path) -> str:
    """A dataset name from the image folder's path: the folder above it when the folder itself
    is called images, train, ... (lower case, letters, digits and _)."""
    for part in reversed(Path(_abs(images)).parts[1:]):
        if part.lower() in ("images", "imgs", "img", "jpegimages", "train", "train2017", "data"):
            continue
        name = re.sub(r"[^a-z0-9_]+", "_", part.lower()).strip("_")
        if name and not name[0].isalpha():
            name = f"d_{name}"
        if NAME.fullmatch(name or ""):
            return name
    return "mydata"


def read_base(name: str) -> dict:
    path = CONFIG_DIR / name
    if not path.is_file():
        raise ValueError(f"{path}: the config detnas init builds on is missing: run it from a "
                         "checkout of the repository (pip install -e .)")
    return yaml.safe_load(path.read_text())


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def detection_epochs(images: int) -> int:
    """Epochs of a detection schedule for a training set of ``images``: `LARGE_SET`."""
    return 12 if images >= LARGE_SET else 24


def scaled_schedule(base: dict, images: int, gpus: int, epochs: float) -> dict:
    """A schedule of config/coco.yaml (``base``: the paper's, for `REFERENCE_GPUS` GPUs) for
    ``gpus`` GPUs and ``images`` training images: the same images per GPU (the global batch
    ``batch_size / 8 x gpus``), the learning rates scaled with the batch (the linear scaling
    rule, maskrcnn-benchmark's single-GPU recipe: batch 2, lr 0.0025), ``epochs`` passes over
    the images; warm-up, checkpoints within the steps; no batch over the images. The rest of
    ``base`` stays."""
    out = dict(base)
    batch = min(max(1, base["batch_size"] // REFERENCE_GPUS) * gpus, images)  # not over the set
    factor = batch / base["batch_size"]
    out["batch_size"] = batch
    out["lr"] = _sig(base["lr"] * factor)
    if base.get("detector_lr"):
        out["detector_lr"] = {d: _sig(lr * factor) for d, lr in base["detector_lr"].items()}
    out["steps"] = max(1, math.ceil(epochs * images / batch))
    if base.get("warmup_steps"):
        out["warmup_steps"] = min(base["warmup_steps"], out["steps"] // 10)
    out["checkpoint_every"] = max(1, min(base.get("checkpoint_every", 2000), out["steps"] // 10))
    return out


class Settings:
    """The config being written (``data``) and why each decided key has its value."""

    def __init__(self, data: dict):
        self.data = data
        self.why: dict[str, str] = {}

    def set(self, key: str, value: Any, why: str = "") -> None:
        node = self.data
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
        if why:
            self.why[key] = why

    def get(self, key: str) -> Any:
        node = self.data
        for k in key.split("."):
            node = node[k]
        return node

    def drop(self, key: str) -> None:
        *parents, last = key.split(".")
        node = self.data
        for k in parents:
            node = node[k]
        node.pop(last, None)


def _count_images(split_dir: Path) -> tuple[int, int]:
    """Images and classes of an ImageFolder split."""
    from detnas.data.files import class_folders, image_files

    classes = class_folders(split_dir)
    return sum(len(image_files(split_dir / c)) for c in classes), len(classes)


def check_classification(root: Path) -> tuple[int, int]:
    """An ImageFolder classification set (``root/train/<class>/*``, ``root/val/<class>/*``, the
    same classes): its training images and classes.

    Raises:
        ValueError: naming the folder at fault.
    """
    from detnas.data.files import check_same_classes, class_folders

    train, val = root / "train", root / "val"
    check_same_classes(val, class_folders(val), train)
    images, classes = _count_images(train)
    if images < 2:
        raise ValueError(f"{train}: {images} images: too few to train on and hold some out")
    return images, classes


def _audit(request: Request) -> tuple[data_audit.Part, data_audit.Part, int,
                                       list[data_audit.Problem]]:
    """Check the files: the training and test parts, the images held out for the test split
    (0: a test file given), the problems found."""
    train_audit = data_audit.check_file(request.train_annotations, request.train_images,
                                        request.quick)
    problems = list(train_audit.problems)
    if request.test_annotations is not None:
        test_audit = data_audit.check_file(request.test_annotations,
                                           request.test_images or request.train_images,
                                           request.quick)
        problems += test_audit.problems
        train = data_audit.Part("train", train_audit, tuple(train_audit.image_ids))
        test = data_audit.Part("test", test_audit, tuple(test_audit.image_ids))
        return train, test, 0, problems
    ids = train_audit.image_ids
    holdout = min(MAX_HOLDOUT, len(ids) // HOLDOUT_FRACTION)
    if train_audit.ok and (holdout < 1 or len(ids) - holdout < MIN_TRAIN_IMAGES):
        raise ValueError(f"{request.train_annotations}: {len(ids)} images: too few to hold a "
                         f"fifth out for the test split and train on at least "
                         f"{MIN_TRAIN_IMAGES} (give a test file: --test-annotations)")
    held = held_out_ids(ids, holdout, TEST_SPLIT_SEED) if train_audit.ok else set()
    train = data_audit.Part("train", train_audit, tuple(i for i in ids if i not in held),
                            f" ({len(ids) - holdout} images: the rest of this file)")
    test = data_audit.Part("test", train_audit, tuple(sorted(held)),
                           f" ({holdout} images held out of this file for the test split)")
    return train, test, holdout, problems


def _fail_on_problems(outcome: Outcome, problems: list[data_audit.Problem], strict: bool,
                      stop: bool = False) -> None:
    """Say the problems (`Outcome.problems`); raise DataError on an error (strict: a warning
    too), or on any (``stop``: the files could not be read as COCO)."""
    outcome.problems = data_audit.problem_lines(problems)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors if strict else 0
    if errors or warnings or stop:
        said = [f"{errors} error{'s' * (errors != 1)}"] if errors else []
        said += [f"{warnings} warning{'s' * (warnings != 1)} (--strict)"] if warnings else []
        raise DataError(f"{' and '.join(said)} in the data (each above, one line): no config "
                        "written", outcome)


def _summary(part: data_audit.Part) -> str:
    ids = list(part.image_ids)
    boxes = sum(part.audit.box_counts(ids).values())
    empty = part.audit.without_boxes(ids)
    sizes = part.audit.sizes(ids)
    short = sorted(min(s) for s in sizes)
    return (f"{part.role}: {len(ids)} images ({empty} without boxes), {boxes} boxes, short "
            f"side {short[0]}..{short[-1]} px (median {median(short):g}): {part.audit.path}"
            f"{part.how}")


def _decoded_bytes(sizes: list[tuple[int, int]]) -> int:
    return sum(w * h * 3 for w, h in sizes)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:,.1f} GiB"


def init(request: Request) -> Outcome:
    """Check the data of ``request``, decide the study's settings and write its config (and the
    held-out test split's files, where no test file is given).

    Raises:
        DataError: the data has errors (or, strict, warnings), each a line of its
            ``outcome.problems``.
        ValueError: a bad request (naming the option), or a config the checks refuse (naming
            the key, or the ``--set`` that gave it).
    """
    outcome = Outcome()
    _check_request(request)
    base = BASES[request.scale]
    settings = Settings(read_base(base))
    name = request.name or default_name(request.train_images)
    train, test, holdout, problems = _audit(request)
    if not train.audit.ok or not test.audit.ok:
        _fail_on_problems(outcome, problems, request.strict, stop=True)
    cls_images = _summarise(outcome, request, train, test)
    paths = _layout(request, holdout)
    _decide(settings, request, name, paths, train, test, holdout, cls_images)
    for item in request.overrides:
        settings.why[item.partition("=")[0]] = f"--set {item} (on detnas init's command line)"
    cfg = _check_config(settings, request)
    d = cfg.datasets[name]
    search = data_audit.Part(
        "search", train.audit, tuple(sorted(held_out_ids(list(train.image_ids),
                                                          d.search_images, cfg.seed))),
        f" ({d.search_images} of the training images the study holds out, seed {cfg.seed})")
    problems += data_audit.check_parts(train, [test, search])
    _fail_on_problems(outcome, problems, request.strict)
    outcome.settings, outcome.decisions = settings.data, settings.why

    if holdout:
        from detnas.data.split import split_annotations

        split_annotations(request.train_annotations, holdout, TEST_SPLIT_SEED, paths["train"],
                          paths["test"], ("training images", "test images held out by "
                                          "detnas init"))
        outcome.written += [paths["train"], paths["test"]]
    from detnas.io import save_text
    from detnas.plan import preflight

    preflight.check_workflow(cfg, str(request.out))  # the dataset's files all there now
    save_text(request.out, render(settings.data, settings.why,
                                  _header(request, name, base, outcome)))
    outcome.written.append(Path(request.out))
    outcome.next_steps = [f"detnas config check {request.out}",
                          f"snakemake -n --configfile {request.out}", *_run_commands(request)]
    return outcome


def _summarise(outcome: Outcome, request: Request, train: data_audit.Part,
               test: data_audit.Part) -> int:
    """The data in a few lines (``outcome.summary``): its classes, splits and classification
    set, checked; returns that set's training images (0: none given)."""
    categories = train.audit.categories
    ids = sorted(categories)
    outcome.summary = [
        f"classes: {len(ids)} (category ids {data_audit.some(ids, 12)} -> labels 1..{len(ids)}"
        f" in id order): {data_audit.some([categories[c] for c in ids], 12)}",
        _summary(train), _summary(test)]
    if request.classification is None:
        return 0
    cls_images, cls_classes = check_classification(Path(request.classification))
    outcome.summary.append(f"classification: {cls_images} training images of {cls_classes}"
                           f" classes in {request.classification}")
    return cls_images


def _check_request(request: Request) -> None:
    if request.name and not NAME.fullmatch(request.name):
        raise ValueError(f"--name {request.name!r}: a dataset's name is a folder name and a "
                         "wildcard: lower-case letters, digits and _, a letter first")
    if request.gpus < 0:
        raise ValueError(f"--gpus {request.gpus}: the GPUs of a job (0: none)")
    if request.scale == "full" and request.gpus == 0:
        raise ValueError("--gpus 0: a study at full scale needs GPUs (the paper's COCO supernet "
                         "alone took 12 hours on 8); --scale toy runs every stage on a CPU, as a "
                         "check of the data and the pipeline")
    if request.scale not in BASES:
        raise ValueError(f"--scale {request.scale!r} ({', '.join(BASES)})")
    if Path(request.out).exists() and not request.force:
        raise ValueError(f"{request.out}: exists; --force overwrites it, or --out names another "
                         "file")
    if request.test_images is not None and request.test_annotations is None:
        raise ValueError("--test-images: give its annotation file too (--test-annotations)")


def _layout(request: Request, holdout: int) -> dict[str, Path]:
    """The files the dataset's config keys name, absolute: the held-out split's files (in
    ``split_dir``, default beside the annotation file) or the user's."""
    train_images = Path(_abs(request.train_images))
    if holdout:
        source = Path(_abs(request.train_annotations))
        folder = Path(_abs(request.split_dir)) if request.split_dir else source.parent
        return {"train": folder / f"{source.stem}.detnas-train.json", "train_images":
                train_images, "test": folder / f"{source.stem}.detnas-test.json",
                "test_images": train_images}
    return {"train": Path(_abs(request.train_annotations)), "train_images": train_images,
            "test": Path(_abs(request.test_annotations)),
            "test_images": Path(_abs(request.test_images or request.train_images))}


def _decide(s: Settings, request: Request, name: str, paths: dict[str, Path],
            train: data_audit.Part, test: data_audit.Part, holdout: int,
            cls_images: int) -> None:
    """Every decision, into ``s``: the dataset's section, then the scale's."""
    root = os.path.commonpath([str(p) for p in paths.values()])
    rel = {k: os.path.relpath(p, root) for k, p in paths.items()}
    n_train = len(train.image_ids)
    toy = request.scale == "toy"
    search_images = min(TOY_SEARCH_IMAGES if toy else MAX_HOLDOUT,
                        max(2, n_train // HOLDOUT_FRACTION))
    sizes = train.audit.sizes(list(train.image_ids)) + test.audit.sizes(list(test.image_ids))
    decoded = _decoded_bytes(sizes)
    at = f"datasets.{name}"
    test_why = (f"{holdout} of the {n_train + holdout} images of "
                f"{request.train_annotations} held out by detnas init (a fifth, at most "
                f"{MAX_HOLDOUT}; seed {TEST_SPLIT_SEED}, whatever the study's): final "
                "evaluation only" if holdout else "the test file given: final evaluation only")
    s.data["datasets"] = {}
    s.set(f"{at}.kind", "coco", "your data, COCO format: category ids map to labels 1..K in id "
          "order (detnas/data/coco.py)")
    s.set(f"{at}.root", root, "the folder above every file of the dataset")
    s.set(f"{at}.train_images", rel["train_images"])
    s.set(f"{at}.train_annotations", rel["train"], f"{n_train} images" + (
        f": the rest of {request.train_annotations}" if holdout else ""))
    s.set(f"{at}.test_images", rel["test_images"])
    s.set(f"{at}.test_annotations", rel["test"], test_why)
    s.set(f"{at}.search_images", search_images,
          f"of the {n_train} training images, held out of the supernet's training for the "
          f"search's fitness (the workflow's split job): a fifth, at most "
          + (f"{TOY_SEARCH_IMAGES} at toy scale" if toy else
             f"the paper's {MAX_HOLDOUT} (of COCO's {COCO_TRAIN_IMAGES:,})"))
    s.set(f"{at}.cache", decoded < CACHE_LIMIT,
          f"the {len(sizes)} images decode to {_mib(decoded)}: " + (
              "decoded once, held in memory" if decoded < CACHE_LIMIT else
              f"over {_mib(CACHE_LIMIT)}: decoded when read"))
    s.set(f"{at}.flip_prob", 0.5, "horizontal flips of training images (maskrcnn-benchmark's)")
    s.set(f"{at}.metric", "mmap", "COCO's AP@[.5:.95], the fitness and the headline")
    given = [yaml.safe_load(v) for k, _, v in (o.partition("=") for o in request.overrides)
             if k == "results"]
    results = given[-1] if given else "results-toy" if toy else "results"
    if not given:
        s.set("results", results, "toy scale: its own results folder, apart from the real "
              "study's results/ (which DVC versions)" if toy else "")
    s.set("tracking.uri", f"sqlite:///{results}/mlflow.db", "one machine: SQLite in the "
          "results folder; on a cluster, the study's own server: server (docs/tracking.md)")
    s.set("tracking.experiment", f"detnas-{name}{'-toy' if toy else ''}", "the MLflow "
          "experiment" + (" of the toy check, apart from the real study's" if toy else ""))
    gpus = request.gpus
    if toy:
        _decide_toy(s, request, cls_images)
    else:
        _decide_full(s, request, train, gpus, search_images, cls_images)


def _decide_toy(s: Settings, request: Request, cls_images: int) -> None:
    s.set("device", "cuda" if request.gpus else "cpu", "toy scale: " + (
        "on the GPU" if request.gpus else "on the CPU"))
    s.set("space", s.get("space"), "toy scale: the test space's tiny networks "
          "(config/test.yaml), at 64 px (detector) and a few steps a stage")
    s.set("detectors", s.get("detectors"), "toy scale: FPN only")
    s.set("replicates", 1, "toy scale: one retraining per row (the CI study has 2)")
    s.set("search_seeds", 1, "toy scale: one search per row")
    s.set("rank.enabled", False, "toy scale: no ranking check")
    if cls_images:
        s.data["classification"] = {}
        s.set("classification.kind", "imagefolder", "your classification set")
        s.set("classification.root", _abs(request.classification))
        s.set("classification.image_size", 32, "toy scale: 32-px crops")
        s.set("classification.cache", False, "read from disk")
        s.set("classification.search_images", min(16, cls_images // HOLDOUT_FRACTION) or 1,
              "held out for ClsNASNet's fitness: a fifth, at most 16 at toy scale")


def _decide_full(s: Settings, request: Request, train: data_audit.Part, gpus: int,
                 search_images: int, cls_images: int) -> None:
    s.set("device", "cuda", f"{gpus} GPU{'s' * (gpus != 1)} a job (--gpus): batches below are "
          f"{gpus} x the per-GPU images of the paper's 8-GPU recipe")
    s.set("space", s.get("space"), "the paper's DetNAS space (ShuffleNetV2 blocks, 300M FLOPs): "
          "search.max_flops and supernet_pretrain.flops_bins are the paper's for it")
    s.set("detectors", s.get("detectors"), "the paper's two detectors")
    n_supernet = len(train.image_ids) - search_images
    _decide_detection_schedules(s, len(train.image_ids), n_supernet, gpus)
    _decide_search_images(s, train, search_images, n_supernet)
    if cls_images:
        _decide_classification(s, request, gpus, cls_images)
    else:
        _decide_stand_in(s)


def _decide_detection_schedules(s: Settings, n_train: int, n_supernet: int, gpus: int) -> None:
    """The detection stages' schedules: the paper's epochs of the images each trains on, its
    images per GPU on ``gpus`` GPUs (`scaled_schedule`)."""
    epochs = detection_epochs(n_train)
    per_gpu = s.get("supernet_finetune")["batch_size"] // REFERENCE_GPUS
    why_epochs = (f"{epochs} epochs of {{images}} images (" + (
        f"COCO 1x's 12, from {LARGE_SET:,} training images on" if epochs == 12 else
        f"VOC's 24: the paper's 22.5k x 16 of 16.5k images; under {LARGE_SET:,} training "
        "images") + f"), the paper's {per_gpu} images per GPU x {gpus} GPU{'s' * (gpus != 1)}, "
        "lr scaled with the batch (linear scaling; maskrcnn-benchmark's single-GPU recipe: "
        "batch 2, lr 0.0025)")
    for key, images in (("supernet_finetune", n_supernet), ("retrain_finetune", n_train)):
        s.set(key, scaled_schedule(s.get(key), images, gpus, epochs),
              why_epochs.format(images=images))
    s.set("nats.search", scaled_schedule(s.get("nats.search"), n_supernet, gpus, epochs),
          why_epochs.format(images=n_supernet) + "; NATS's weights train on the images outside "
          "the search split, its alphas on that split")
    s.set("nats.arch_images", 0, "no published split of your data for NATS's alphas (COCO's "
          "35k valminusminival): the alphas on the search split, as config/voc.yaml")
    finetune = s.get("supernet_finetune")
    rank = scaled_schedule(s.get("rank.train"), n_supernet, gpus, epochs)
    rank["steps"] = max(1, finetune["steps"] // 10)
    s.set("rank.train", rank, "a tenth of the fine-tuning steps (config/coco.yaml's 9k of 90k)")


def _decide_search_images(s: Settings, train: data_audit.Part, search_images: int,
                          n_supernet: int) -> None:
    """The search's recalibration images and how it holds its images, from their sizes (and a
    word on the detector's input size where they are small)."""
    recalib = min(s.get("search.recalib_images"), n_supernet)
    s.set("search.recalib_images", recalib, "BN recalibration images per candidate: the "
          "paper's 4,000, at most the supernet's training images")
    sizes = train.audit.sizes(list(train.image_ids))
    per_image = _decoded_bytes(sizes) / max(1, len(sizes))
    prepared = per_image * (search_images + recalib)
    s.set("search.prepare", "decoded" if prepared <= PREPARE_LIMIT else "none",
          f"the search's {search_images} + {recalib} recalibration images decode to "
          f"{_mib(prepared)} per search worker: " + (
              "kept decoded on its GPU" if prepared <= PREPARE_LIMIT else
              f"over {_mib(PREPARE_LIMIT)}, decoded per candidate"))
    short = median(min(w, h) for w, h in sizes)
    if short < SMALL_IMAGES:
        s.why["detector.min_size"] = (
            f"your images' median short side is {short:g} px: the detector upsamples them to "
            "800 px, as the paper does COCO's 480; smaller and cheaper: --set "
            "detector.min_size=... detector.max_size=... (and detector.anchor_size, 32 at 800 "
            "px)")


def _decide_classification(s: Settings, request: Request, gpus: int, cls_images: int) -> None:
    """Your classification set (--classification): the pre-training stages' schedules at the
    paper's ImageNet epochs, ClsNASNet's held-out images."""
    s.set("classification.root", _abs(request.classification), "your classification set "
          "(ImageFolder: train/<class>/*, val/<class>/*)")
    held = min(50_000, max(1, cls_images // CLASSIFICATION_HOLDOUT))
    s.set("classification.search_images", held, "held out for ClsNASNet's fitness: 1/25 "
          "of the training images, at most SPOS's 50,000 (of ImageNet's 1.28M)")
    for key, epochs_cls in CLASSIFICATION_EPOCHS.items():
        images = cls_images - held if key == "supernet_pretrain" else cls_images
        s.set(key, scaled_schedule(s.get(key), images, gpus, epochs_cls),
              f"{epochs_cls} epochs of {images} images (the paper's ImageNet epochs), "
              f"{s.get(key)['batch_size'] // REFERENCE_GPUS} images per GPU x {gpus}, lr "
              "scaled with the batch")
    s.set("clsnas_search.recalib_images",
          min(s.get("clsnas_search.recalib_images"), cls_images - held),
          "SPOS's 25,600, at most the training images")


def _decide_stand_in(s: Settings) -> None:
    """No classification set: the embedded default's synthetic stand-in and its schedules."""
    stand_in = read_base(STAND_IN)
    s.set("classification", stand_in["classification"],
          "no --classification: the embedded default's synthetic stand-in "
          "(config/config.yaml) pre-trains the supernet and the retrained classifiers. A "
          "check of the pipeline, not ImageNet pre-training: the rows that start from it "
          "(DetNAS and its random search, the baselines, ClsNASNet, NATS) start from "
          "shapes; DetNAS-scratch does not. "
          "Give an ImageFolder set (--classification) for the paper's recipe")
    for key in CLASSIFICATION_EPOCHS:
        s.set(key, stand_in[key], "the stand-in's schedule (config/config.yaml)")
    s.drop("clsnas_search")


def _check_config(s: Settings, request: Request):
    """The settings with the request's overrides, checked as the workflow checks a config."""
    import jsonschema

    from detnas.plan import config

    where = str(request.out)
    cfg = config.from_settings(s.data, where, request.overrides, generated=True)
    validator = jsonschema.Draft202012Validator(config.json_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(s.data))
    if error is not None:
        key = ".".join(map(str, error.absolute_path))
        raise ValueError(f"{where}: {key}: {error.message}")
    return cfg


def _run_commands(request: Request) -> list[str]:
    if request.scale == "toy" and not request.gpus:
        return [f"snakemake --cores all --configfile {request.out}"]
    cluster = ("" if request.gpus == REFERENCE_GPUS else
               f": its GPU rules have {REFERENCE_GPUS} GPUs, this config's batches are for "
               f"{request.gpus} (docs/own-data.md)")
    return [f"snakemake --profile profiles/local --cores 1 --configfile {request.out}   # one "
            "machine: one GPU job at a time",
            f"snakemake --profile profiles/slurm --configfile {request.out}   # a SLURM cluster"
            f"{cluster}"]


def _header(request: Request, name: str, base: str, outcome: Outcome) -> list[str]:
    scale = ("toy scale: every stage of the study on your files in minutes, a check of the "
             "data and the pipeline, not a result" if request.scale == "toy" else
             "full scale: the paper's recipe scaled to your data and GPUs")
    return [f"The study of dataset {name}, written by detnas init ({scale}):",
            *([f"  {request.command}"] if request.command else []),
            *(f"  {line}" for line in outcome.summary),
            f"Built on config/{base}: what is not decided here is its (its comments say why);",
            "each decided key says why above it. Every key and its default: detnas/plan/config.py.",
            f"Check: detnas config check {request.out}",
            f"Run:   {_run_commands(request)[0].split('   #')[0]}"]


class _Dumper(yaml.SafeDumper):
    """Block mappings (a comment above each key), flow lists (``lr_steps: [0.67, 0.89]``)."""


_Dumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=True))


def render(data: dict, comments: dict[str, str], header: list[str], width: int = 100) -> str:
    """``data`` as YAML, ``header`` as the file's opening comment, and each comment of
    ``comments`` (dotted key -> text) above its key."""
    lines = [f"# {w}" for h in header for w in textwrap.wrap(
        h, width - 2, subsequent_indent=" " * (len(h) - len(h.lstrip()) + 2),
        break_on_hyphens=False)]
    for key, value in data.items():
        text = yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, width=width - 4,
                         default_flow_style=False)
        stack: list[tuple[int, str]] = []
        if isinstance(value, dict) or key in comments:
            lines.append("")
        for line in text.splitlines():
            m = re.match(r"( *)([^\s:#'\"][^:]*):(?: |$)", line)
            if m:
                indent = len(m[1])
                while stack and stack[-1][0] >= indent:
                    stack.pop()
                stack.append((indent, m[2]))
                why = comments.get(".".join(k for _, k in stack))
                if why:
                    lines += [f"{' ' * indent}# {w}" for w in textwrap.wrap(
                        why, width - indent - 2, break_on_hyphens=False)]
            lines.append(line)
    return "\n".join(lines) + "\n"
