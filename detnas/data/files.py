"""What can be read of a dataset's files without torch: a COCO annotation file's top level, an
ImageFolder split's class folders.

The readers (`detnas.data.coco`, `detnas.data.imagefolder`) check their inputs with these, and
so does the workflow when it is parsed (`detnas.preflight`), before any job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PARSE_LIMIT = 32 * 2**20
"""Annotation files up to this size (32 MiB: VOC's, COCO's val2017 at 25 MB) are parsed whole
when the workflow is parsed (a few tenths of a second); a larger one (COCO's train2017, 450 MB:
seconds and gigabytes, at every invocation and every cluster job) only has its first and last
bytes read (`peek_json`). Its full check is the split job's, the first to read it."""


def check_coco_top_level(path: str | Path, data: Any) -> None:
    """``data``, read from ``path``, is a COCO object: ``images``, ``annotations`` and
    ``categories`` lists (what is in them: `detnas.data.coco.load_coco_json`).

    Raises:
        ValueError: naming the file and what is missing.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not COCO: top level is {type(data).__name__}, expected an "
                         "object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: not COCO: '{key}' is missing or not a list")


def peek_json(path: str | Path, size: int = 4096) -> None:
    """A cheap look at a large JSON object's file: its first and last bytes (beside whitespace)
    are ``{`` and ``}``: not empty, not truncated (an interrupted download), not an HTML page or
    an archive.

    Raises:
        ValueError: naming the file and what its ends hold.
    """
    with open(path, "rb") as f:
        head = f.read(size).lstrip()
        f.seek(max(0, Path(path).stat().st_size - size))
        tail = f.read().rstrip()
    if not head.startswith(b"{") or not tail.endswith(b"}"):
        raise ValueError(f"{path}: not a JSON object (starts {head[:20]!r}, ends {tail[-20:]!r}): "
                         "not COCO annotations, or a truncated file")


def coco_image_count(path: str | Path, limit: int | None = None) -> int | None:
    """The number of images of COCO annotation file ``path``, its top level checked; for a file
    over ``limit`` bytes (default `PARSE_LIMIT`) only `peek_json` (None: not counted).

    Raises:
        ValueError: the file is not JSON, or not COCO at the top level, naming it.
    """
    from detnas.io import load_json

    if Path(path).stat().st_size > (PARSE_LIMIT if limit is None else limit):
        peek_json(path)
        return None
    data = load_json(path)
    check_coco_top_level(path, data)
    return len(data["images"])


def class_folders(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted (label ``i`` is the ``i``-th).

    Raises:
        ValueError: the folder does not exist or has no class folders.
    """
    if not split_dir.is_dir():
        raise ValueError(f"{split_dir}: dataset folder does not exist")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{split_dir}: empty split: no class folders")
    return classes


def check_same_classes(split_dir: Path, classes: list[str], reference_dir: Path) -> None:
    """Check that split ``split_dir`` has the classes of ``reference_dir`` (then the same name
    has the same label in both).

    Raises:
        ValueError: naming both folders and the first class one has and the other lacks.
    """
    reference = class_folders(reference_dir)
    if classes == reference:
        return
    missing = sorted(set(reference) - set(classes))
    if missing:
        raise ValueError(f"{split_dir}: lacks class folder {missing[0]!r} of {reference_dir} "
                         f"({len(missing)} missing): the two splits must have the same classes")
    extra = sorted(set(classes) - set(reference))[0]
    raise ValueError(f"{split_dir}: has class folder {extra!r}, which {reference_dir} lacks: the "
                     "two splits must have the same classes")
