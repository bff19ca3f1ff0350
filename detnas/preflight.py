"""What the workflow checks when it is parsed beyond the config's own checks
(`detnas.config.check`, which every command makes too): the study as a whole, each stage run,
and the input files there already. `snakemake -n` (workflow/rules/common.smk) and `detnas config
check` call `check_workflow`; docs/config-checks.md lists what is refused where.
"""

from __future__ import annotations

from pathlib import Path

from detnas import study
from detnas.config import StudyConfig, check_floor, check_holdouts, with_overrides
from detnas.data import files
from detnas.latency import load_table


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
    """What the workflow checks of study ``cfg`` (checked: `detnas.config.from_data`) when it
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
