"""The paper's splits of a detection training set: supernet training and search validation.

DetNAS fine-tunes the supernet on the training set less a held-out part (5k images of COCO
trainval35k) and ranks candidates by their mmAP on that held-out part; the test split
(COCO minival / val2017, VOC test 2007) is used only for the final evaluation of the retrained
winners. The held-out images are drawn with a seeded RNG over the sorted image ids, so the same
file and seed always give the same split; the images stay where they are.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from detnas.data.files import load_coco_json
from detnas.io import save_json

log = logging.getLogger(__name__)


def _part(data: dict, ids: set[int], description: str) -> dict:
    return {
        **{k: v for k, v in data.items() if k not in ("images", "annotations")},
        "info": {**(data.get("info") or {}), "split": description},
        "images": [im for im in data["images"] if im["id"] in ids],
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
    }


def holdout_indices(size: int, holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(rest, held_out)`` of a set of ``size`` items, ``holdout`` of them drawn with a
    seeded RNG: the ClsNASNet fitness scores candidates on images held out of the classification
    training set (SPOS: 50,000 ImageNet train images), never on the set that reports top-1.

    Raises:
        ValueError: ``holdout`` leaves either part empty.
    """
    if not 0 < holdout < size:
        raise ValueError(f"holdout {holdout} must be between 1 and {size - 1} (the set has "
                         f"{size} images)")
    held = set(random.Random(seed).sample(range(size), holdout))
    return [i for i in range(size) if i not in held], sorted(held)


def held_out_ids(ids: list[int], holdout: int, seed: int) -> set[int]:
    """The ``holdout`` image ids drawn from ``ids`` with a seeded RNG over their sorted order: the
    same ids, count and seed always give the same draw (`split_annotations`; `detnas init`
    foresees the search split with it, `detnas.data.audit`)."""
    return set(random.Random(seed).sample(sorted(ids), holdout))


def split_annotations(annotation_file: str | Path, holdout: int, seed: int,
                      rest_path: str | Path, held_path: str | Path,
                      names: tuple[str, str]) -> tuple[Path, Path]:
    """Split a COCO annotation file in two by images: ``holdout`` images drawn with
    `held_out_ids` to ``held_path``, the rest to ``rest_path`` (atomically), each file's
    ``info.split`` saying which part of which file it is (``names``: the rest's, the held-out
    part's).

    Raises:
        ValueError: the file is not valid COCO, or ``holdout`` leaves either part empty.
    """
    data = load_coco_json(annotation_file)
    ids = [im["id"] for im in data["images"]]
    if not 0 < holdout < len(ids):
        raise ValueError(f"{annotation_file}: holdout {holdout} must be between 1 and "
                         f"{len(ids) - 1} (the file has {len(ids)} images)")
    held = held_out_ids(ids, holdout, seed)
    rest = set(ids) - held
    source = f"{Path(annotation_file).name}, seed {seed}"
    rest_path = save_json(rest_path, _part(data, rest, f"{names[0]} of {source}"))
    held_path = save_json(held_path, _part(data, held, f"{names[1]} of {source}"))
    log.info("%s: %d images of the %s, %d of the %s", annotation_file, len(rest), names[0],
             len(held), names[1])
    return rest_path, held_path


def make_search_split(annotation_file: str | Path, holdout: int, seed: int,
                      out_dir: str | Path) -> tuple[Path, Path]:
    """Split a COCO annotation file into supernet-training and search-validation files.

    Args:
        annotation_file: the detection training set (COCO format).
        holdout: images held out for the search (paper: 5000 of COCO trainval35k).
        seed: the RNG seed of the draw.
        out_dir: where ``instances_supernet.json`` and ``instances_search.json`` are written.

    Returns:
        The paths of the supernet-training and the search-validation annotation files.

    Raises:
        ValueError: the file is not valid COCO, or ``holdout`` leaves either part empty.
    """
    out_dir = Path(out_dir)
    return split_annotations(annotation_file, holdout, seed, out_dir / "instances_supernet.json",
                             out_dir / "instances_search.json",
                             ("supernet training", "search validation"))
