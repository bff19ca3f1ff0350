"""What can be read of a dataset's files without torch: a COCO annotation file (its top level,
its structure and references), a box against its image, an ImageFolder split's class folders.

The readers (`detnas.data.coco`, `detnas.data.imagefolder`) check their inputs with these, and
so do the workflow when it is parsed (`detnas.plan.preflight`), before any job runs, and `detnas
init` (`detnas.data.audit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detnas.io import load_json

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
"""The image files of an ImageFolder split (by suffix, in any case)."""

PARSE_LIMIT = 32 * 2**20
"""Annotation files up to this size (32 MiB: VOC's, COCO's val2017 at 25 MB) are parsed whole
when the workflow is parsed (a few tenths of a second); a larger one (COCO's train2017, 450 MB:
seconds and gigabytes, at every invocation and every cluster job) only has its first and last
bytes read (`peek_json`). Its full check is the split job's, the first to read it."""


def check_coco_top_level(path: str | Path, data: Any) -> None:
    """``data``, read from ``path``, is a COCO object: ``images``, ``annotations`` and
    ``categories`` lists (what is in them: `load_coco_json`).

    Raises:
        ValueError: naming the file and what is missing.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not COCO: top level is {type(data).__name__}, expected an "
                         "object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: not COCO: '{key}' is missing or not a list")


def _fail(path: Path, message: str) -> None:
    raise ValueError(f"{path}: {message}")


def _check_fields(path: Path, kind: str, index: int, item: Any, fields: dict[str, tuple]) -> None:
    if not isinstance(item, dict):
        _fail(path, f"not COCO: {kind}[{index}] is {type(item).__name__}, expected an object")
    for name, types in fields.items():
        value = item.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            _fail(path, f"not COCO: {kind}[{index}].{name} = {value!r}")


def load_coco_json(path: str | Path) -> dict:
    """Read a COCO annotation file and check its structure and references (`detnas.data.coco`'s
    table: what fails).

    Raises:
        ValueError: the file is missing, not JSON, not COCO, or inconsistent, naming the file and
            the first item at fault.
    """
    path = Path(path)
    data = load_json(path)
    check_coco_top_level(path, data)
    image_ids, category_ids = set(), set()
    for i, im in enumerate(data["images"]):
        _check_fields(path, "images", i, im, {"id": (int,), "file_name": (str,),
                                              "width": (int,), "height": (int,)})
        if im["width"] < 1 or im["height"] < 1:
            _fail(path, f"images[{i}] (id {im['id']}): size {im['width']}x{im['height']}")
        if im["id"] in image_ids:
            _fail(path, f"duplicate image id {im['id']} (images[{i}])")
        image_ids.add(im["id"])
    for i, cat in enumerate(data["categories"]):
        _check_fields(path, "categories", i, cat, {"id": (int,), "name": (str,)})
        if cat["id"] in category_ids:
            _fail(path, f"duplicate category id {cat['id']} (categories[{i}])")
        category_ids.add(cat["id"])
    for i, ann in enumerate(data["annotations"]):
        _check_fields(path, "annotations", i, ann, {"id": (int,), "image_id": (int,),
                                                    "category_id": (int,), "bbox": (list,)})
        bbox = ann["bbox"]
        if len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
            _fail(path, f"not COCO: annotations[{i}].bbox = {bbox!r} (expected [x, y, w, h])")
        if ann["image_id"] not in image_ids:
            _fail(path, f"annotations[{i}] (id {ann['id']}): unknown image_id {ann['image_id']}")
        if ann["category_id"] not in category_ids:
            _fail(path, f"annotations[{i}] (id {ann['id']}): unknown category_id "
                        f"{ann['category_id']} (known: {sorted(category_ids)})")
    return data


BOX_ISSUES = ("empty", "outside", "clipped")
"""What `box_in_image` finds wrong with a box: ``empty`` (width or height <= 0) and ``outside``
(nothing of it in the image) are left out of training, ``clipped`` (more than 1 px outside) is
cut to the image."""


def box_in_image(bbox: list[float], width: int, height: int
                 ) -> tuple[str | None, tuple[float, float, float, float] | None]:
    """A COCO box ``[x, y, w, h]`` against its ``width`` x ``height`` image: ``(issue, xyxy)``,
    the issue one of `BOX_ISSUES` or None, xyxy the part inside the image (None: nothing to
    train on)."""
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return "empty", None
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return "outside", None
    clipped = max(abs(x1 - x), abs(y1 - y), abs(x2 - x - w), abs(y2 - y - h)) > 1
    return ("clipped" if clipped else None), (x1, y1, x2, y2)


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


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder (`IMAGE_EXTENSIONS`), sorted: an ImageFolder class's."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in
                  IMAGE_EXTENSIONS)


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
