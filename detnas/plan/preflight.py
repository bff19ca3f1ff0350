"""What the workflow checks when it is parsed beyond the config's own checks
(`detnas.plan.config.check`, which every command makes too): the study as a whole, each stage run,
and the input files there already. `snakemake -n` (workflow/rules/common.smk) and `detnas config
check` call `check_workflow`; docs/config-checks.md lists what is refused where.
"""

from __future__ import annotations

from pathlib import Path

from detnas.data import files
from detnas.io import checkpoint_header
from detnas.plan import study
from detnas.plan.config import StudyConfig, check_floor, check_holdouts, with_overrides
from detnas.plan.latency import load_table
from detnas.plan.typed import to_dict

# The settings that decide which images a classification supernet's pre-training held out (the
# ClsNASNet search's fitness images): the seed, the held-out count, the data (a synthetic set's
# is generated from its settings; a real set is compared by its classes).
HOLDOUT_KEYS = ("seed", "classification.kind", "classification.search_images")
SYNTHETIC_KEYS = tuple(f"classification.{k}" for k in ("num_classes", "num_train", "num_val",
                                                         "image_size"))


def _check_nats_batches(cfg: StudyConfig, where: str, name: str, size: int) -> None:
    """NATS's batches within its splits of dataset ``name`` (``size`` training images): the
    architecture split (``nats.arch_images``, else the search split), the weights split (the
    rest)."""
    nats = cfg.nats
    held = nats.arch_images or cfg.datasets[name].search_images
    for detector in cfg.detectors:
        batch = nats.search.for_detector(detector).batch_size
        if batch > min(held, size - held):
            key = (f"detector_batch_size.{detector}"
                   if detector in nats.search.detector_batch_size else "batch_size")
            raise ValueError(f"{where}.nats.search.{key}: {batch} ({detector}) is more than the "
                             f"{min(held, size - held)} images of a NATS split of dataset "
                             f"{name} ({size - held} weights, {held} architecture)")


def check_workflow(cfg: StudyConfig, where: str) -> None:
    """What the workflow checks of study ``cfg`` (checked: `detnas.plan.config.from_data`) when it
    is parsed: the study as a whole (each stage runs: NATS's batches within its splits) and the
    input files there already: each real dataset's annotation files (JSON, COCO at the top
    level; those over `detnas.data.files.PARSE_LIMIT` only their ends) and the images held out
    of its training set, an ImageFolder set's class folders (the same in train and val), a
    latency table given by ``latency.table`` (of the space, the searches' max_latency at or
    above its floor). A file not there yet is Snakemake's to report (a missing input); those the
    workflow makes are checked when they are made.

    Raises:
        ValueError: naming the key (the file) and what is wrong.
    """
    for name, d in cfg.datasets.items():
        if d.kind == "synthetic":
            _check_nats_batches(cfg, where, name, d.num_train)
            continue
        at = f"{where}.datasets.{name}"
        for key in ("train_annotations", "test_annotations"):
            path = Path(d.root) / getattr(d, key)
            if not path.is_file():
                continue
            try:
                count = files.coco_image_count(path)
            except ValueError as e:
                raise ValueError(f"{at}.{key}: {e}") from None
            if key == "train_annotations" and count is not None:
                check_holdouts(cfg, where, name, count, str(path))
                _check_nats_batches(cfg, where, name, count)
    c = cfg.classification
    train, val = Path(c.root) / "train", Path(c.root) / "val"
    if c.kind == "imagefolder" and train.is_dir() and val.is_dir():
        try:
            files.check_same_classes(val, files.class_folders(val), train)
        except ValueError as e:
            raise ValueError(f"{where}.classification.root: {e}") from None
    check_supernet_from(cfg, where)
    if cfg.latency.table and Path(cfg.latency.table).is_file():
        try:
            table = load_table(cfg.latency.table, cfg.space)
        except ValueError as e:
            raise ValueError(f"{where}.latency.table: {e}") from None
        searches = {"search": cfg.search, "clsnas_search": cfg.clsnas_search}
        searches |= {f"ablations.{r.name}.overrides": with_overrides(
            cfg, dict(r.overrides), "").search for r in study.rows(cfg) if r.overrides}
        for key, s in searches.items():
            if s is not None:
                check_floor(f"{where}.{key}.max_latency", s.max_latency, table.floor(),
                            cfg.space, "ms predicted by the latency table")


def check_supernet_from(cfg: StudyConfig, where: str) -> None:
    """A published classification supernet (``supernet_from.classification``) is one this study
    could have pre-trained: there (a DVC import pulled), a classification supernet of the study's
    space, its classifier of the study's classes, and pre-trained holding out the images this
    study's ClsNASNet search scores on (`HOLDOUT_KEYS`, as its provenance records them). Read
    without torch (`detnas.io.checkpoint_header`); the tensors' shapes against the space's
    definition are checked where the stages load it (`detnas.nets.models.load_model`).

    Raises:
        ValueError: one line naming the key, the file and what differs.
    """
    path = cfg.supernet_from.classification
    if not path:
        return
    at = f"{where}.supernet_from.classification"
    if not Path(path).is_file():
        raise ValueError(f"{at}: {path} does not exist (a DVC import: `dvc pull {path}.dvc`; "
                         "docs/published-supernet.md)")
    try:
        header = checkpoint_header(path)
    except ValueError as e:
        raise ValueError(f"{at}: {e}") from None
    backbone = header.get("backbone") if isinstance(header, dict) else None
    if not isinstance(backbone, dict) or "model" not in header:
        raise ValueError(f"{at}: {path}: not a detnas model checkpoint (no model and backbone "
                         "entries)")
    if header.get("task") != "classification":
        differs = (f"a {header.get('task')} checkpoint, not a classification supernet (`detnas "
                   "train supernet --task classification`'s checkpoint.pt)")
    elif backbone.get("kind") != "supernet":
        differs = f"a checkpoint of a fixed {backbone.get('kind')} network, not a supernet"
    elif backbone.get("space") != cfg.space:
        differs = f"a supernet of space {backbone.get('space')}, this study's space is {cfg.space}"
    elif header.get("num_classes") != (classes := _classification_classes(cfg)) and classes:
        differs = (f"its classifier has {header.get('num_classes')} classes, this study's "
                   f"classification set has {classes}")
    else:
        differs = _holdout_differs(header, cfg)
    if differs:
        raise ValueError(f"{at}: {path}: {differs}")


def _classification_classes(cfg: StudyConfig) -> int | None:
    """The classes of the study's classification set: a synthetic set's setting, an ImageFolder
    set's class folders (None before they are there)."""
    c = cfg.classification
    if c.kind == "synthetic":
        return c.num_classes
    train = Path(c.root) / "train"
    return len(files.class_folders(train)) if train.is_dir() else None


def _holdout_differs(header: dict, cfg: StudyConfig) -> str | None:
    """What differs between the pre-training recorded in checkpoint ``header`` (its provenance's
    config) and this study in the images the pre-training held out for the ClsNASNet search
    (`HOLDOUT_KEYS`); None when nothing does, or the checkpoint records no config."""
    made = header.get("provenance")
    theirs = made.get("config") if isinstance(made, dict) else None
    if not isinstance(theirs, dict):
        return None
    ours = to_dict(cfg)
    synthetic = SYNTHETIC_KEYS if cfg.classification.kind == "synthetic" else ()
    for key in (*HOLDOUT_KEYS, *synthetic):
        if _dotted(theirs, key) != _dotted(ours, key):
            return (f"pre-trained with {key} {_dotted(theirs, key)}, this study's is "
                    f"{_dotted(ours, key)}: the ClsNASNet search would score images the supernet "
                    "trained on (set it as the publisher's)")
    return None


def _dotted(data: dict, key: str):
    for k in key.split("."):
        data = data.get(k) if isinstance(data, dict) else None
    return data
