"""The checks of a user's COCO-format detection data that `detnas init` makes before it writes a
study config (`detnas.plan.own_data`): every image file, every box, the categories of each file and
of each split the study will make of it.

Each problem is one line, ``SEVERITY: FILE: ITEM: what is wrong``, naming the annotation file and
the item in it (``images[i]``, ``annotations[i]``, ``categories[i]``, with its id), so that the
user can find and fix it; at most `MAX_LINES` lines per kind and file, then a count of the rest.
An error stops `detnas init` (exit 2, no config written); a warning is said and the config
written (``--strict``: warnings stop it too). Torch-free: PIL reads the images.

=============================================  ========  =========================================
problem                                        severity  why
=============================================  ========  =========================================
annotation file missing, not JSON, not COCO,   error     (`detnas.data.files.load_coco_json`: the
duplicate ids, an annotation of an unknown               first item at fault)
image or category id
image file missing                             error     the ground truth would count objects
                                                         nobody can see
image file not readable (decoded whole unless  error     the stage reading it would fail
``--quick``)
decoded size differs from width / height       error     the boxes would be wrong (an EXIF
                                                         rotation is named)
box entirely outside its image                 error     a wrong box (xyxy for xywh, normalised
                                                         coordinates, another image's size)
box of zero or negative width or height        warning   left out of training (real COCO has some)
box more than 1 px outside its image           warning   cut to the image in training
no categories in the training file             error     nothing to detect
category with no box in the training images    error     the detector cannot learn it
test file's categories differ from train's     error     a label would name another class
category ids not 1..K (or 0..K-1)              warning   detnas maps ids to labels 1..K in id order
                                                         (`detnas.data.coco`); other tools may not
class with no box in the test images           warning   its AP is not measured (COCOeval leaves
                                                         it out of the mean)
class with no box in the search split          warning   the search's fitness does not score it
=============================================  ========  =========================================

Images without boxes are no problem (negatives): they are counted and said.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from detnas.data.files import box_in_image, load_coco_json

log = logging.getLogger(__name__)

PROGRESS = 5000  # images between two lines of progress

MAX_LINES = 10
"""Lines per kind of problem and file; the rest are counted in one more line."""

EXIF_ORIENTATION = 0x0112
ROTATED = (5, 6, 7, 8)  # EXIF orientations a viewer shows turned by 90 degrees


@dataclass(frozen=True)
class Problem:
    """One problem of the data: ``kind`` (a short key per row of the module's table), the
    annotation ``file``, the ``item`` in it and what is wrong."""

    severity: str  # error | warning
    kind: str
    file: Path
    item: str
    message: str

    def __str__(self) -> str:
        item = f" {self.item}:" if self.item else ""
        return f"{self.severity}: {self.file}:{item} {self.message}"


@dataclass
class FileAudit:
    """An annotation file and its image folder as checked: the file's content, the trainable
    boxes of each image (category ids), and the problems found."""

    path: Path
    images_dir: Path
    data: dict = field(default_factory=dict)
    boxes: dict[int, list[int]] = field(default_factory=dict)  # image id -> category ids
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The file could be read as COCO (its items were checked)."""
        return bool(self.data)

    @property
    def image_ids(self) -> list[int]:
        return sorted(im["id"] for im in self.data.get("images", ()))

    @property
    def categories(self) -> dict[int, str]:
        """Category id -> name, in the file's order."""
        return {c["id"]: c["name"] for c in self.data.get("categories", ())}

    def sizes(self, image_ids: list[int] | None = None) -> list[tuple[int, int]]:
        """``(width, height)`` of the images (default: all)."""
        ids = None if image_ids is None else set(image_ids)
        return [(im["width"], im["height"]) for im in self.data.get("images", ())
                if ids is None or im["id"] in ids]

    def box_counts(self, image_ids: list[int] | None = None) -> Counter:
        """Trainable boxes per category id over the images (default: all)."""
        counts: Counter = Counter()
        for image_id in self.image_ids if image_ids is None else image_ids:
            counts.update(self.boxes.get(image_id, ()))
        return counts

    def without_boxes(self, image_ids: list[int] | None = None) -> int:
        """Images with no trainable box (negatives)."""
        ids = self.image_ids if image_ids is None else image_ids
        return sum(1 for i in ids if not self.boxes.get(i))

    def add(self, severity: str, kind: str, item: str, message: str) -> None:
        self.problems.append(Problem(severity, kind, self.path, item, message))


ROLES = {  # a split's role -> (its name in a line, what a class without a box there means)
    "train": ("training images", "the detector cannot learn it (annotate it, or remove the "
              "category)"),
    "test": ("test images", "its AP is not measured (COCOeval leaves it out of the mean)"),
    "search": ("search split", "the search's fitness does not score it"),
}


@dataclass(frozen=True)
class Part:
    """A split the study makes of a file: its ``role`` (`ROLES`), its images (ids), and how it
    is made (``how``: said in a problem's line, e.g. " (8 images held out of this file)")."""

    role: str
    audit: FileAudit
    image_ids: tuple[int, ...]
    how: str = ""

    @property
    def name(self) -> str:
        return ROLES[self.role][0]


def _image_item(index: int, im: dict) -> str:
    return f"images[{index}] (id {im['id']}, {im['file_name']})"


def _check_image(audit: FileAudit, index: int, im: dict, quick: bool) -> None:
    from PIL import Image, UnidentifiedImageError

    path = audit.images_dir / im["file_name"]
    item = _image_item(index, im)
    if not path.is_file():
        audit.add("error", "missing-image", item, f"image file does not exist: {path}")
        return
    try:
        with Image.open(path) as image:
            size = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            if not quick:
                image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        audit.add("error", "unreadable-image", item,
                  f"not a readable image: {path} ({type(e).__name__}: {e})")
        return
    if size != (im["width"], im["height"]):
        why = ""
        if orientation in ROTATED and size[::-1] == (im["width"], im["height"]):
            why = (f"; its EXIF orientation {orientation} shows it turned by 90 degrees, and "
                   "detnas reads the pixels as stored: store them turned (e.g. PIL's "
                   "ImageOps.exif_transpose, `exiftran -ai`) or annotate them as stored")
        audit.add("error", "image-size", item,
                  f"{path} is {size[0]}x{size[1]}, the file says {im['width']}x{im['height']}"
                  f"{why}")


def _check_boxes(audit: FileAudit) -> None:
    images = {im["id"]: im for im in audit.data["images"]}
    audit.boxes = {i: [] for i in images}
    for i, ann in enumerate(audit.data["annotations"]):
        if ann.get("iscrowd", 0):
            continue  # an ignored region, as in COCOeval
        im = images[ann["image_id"]]
        issue, box = box_in_image(ann["bbox"], im["width"], im["height"])
        item = f"annotations[{i}] (id {ann['id']}, image {im['id']} {im['file_name']})"
        where = f"box {ann['bbox']} of the {im['width']}x{im['height']} image"
        if issue == "outside":
            audit.add("error", "box-outside", item, f"{where} is entirely outside it (a box in "
                      "[x1, y1, x2, y2] or normalised coordinates? COCO's is [x, y, w, h] in "
                      "pixels)")
        elif issue == "empty":
            audit.add("warning", "box-empty", item, f"{where} has no area: left out of training")
        elif issue == "clipped":
            audit.add("warning", "box-clipped", item, f"{where} is more than 1 px outside it: "
                      "cut to the image in training")
        if box is not None:
            audit.boxes[im["id"]].append(ann["category_id"])


def _category_ids(audit: FileAudit) -> list[Problem]:
    """Category ids other than 1..K or 0..K-1: a warning (detnas maps any ids)."""
    ids = sorted(audit.categories)
    if not ids or ids in (list(range(1, len(ids) + 1)), list(range(len(ids)))):
        return []
    gaps = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
    said = [f"start at {ids[0]}"] if ids[0] > 1 else []
    said += [f"leave gaps ({some(gaps)})"] if gaps else []
    return [Problem("warning", "category-ids", audit.path, "categories",
                    f"the {len(ids)} category ids {' and '.join(said)}: detnas maps them to "
                    f"labels 1..{len(ids)} in id order (detnas/data/coco.py), and back in its "
                    "results; other tools may expect 1..K")]


def some(values: list, n: int = 5) -> str:
    """The first ``n`` of ``values``, and how many more."""
    head = ", ".join(map(str, values[:n]))
    return head + (f", ... {len(values) - n} more" if len(values) > n else "")


def check_file(annotation_file: str | Path, images_dir: str | Path,
               quick: bool = False) -> FileAudit:
    """Check one annotation file and its images: the file's structure (the first fault of
    `load_coco_json`: no further check of the file), then every image (missing, unreadable,
    decoded whole unless ``quick``; its size), every box, the category ids."""
    audit = FileAudit(Path(annotation_file), Path(images_dir))
    if not audit.images_dir.is_dir():
        audit.add("error", "no-image-folder", "", f"the image folder {audit.images_dir} does "
                  "not exist")
    try:
        data = load_coco_json(audit.path)
    except ValueError as e:
        path, _, message = str(e).partition(": ")
        audit.problems.append(Problem("error", "not-coco", Path(path), "", message))
        return audit
    audit.data = data
    if audit.images_dir.is_dir():
        for i, im in enumerate(data["images"]):
            _check_image(audit, i, im, quick)
            if (i + 1) % PROGRESS == 0:
                log.info("%s: %d of %d images checked", audit.path, i + 1, len(data["images"]))
    _check_boxes(audit)
    if not audit.categories:
        audit.add("error", "no-categories", "categories", "empty: no class to detect")
    return audit


def check_parts(train: Part, others: list[Part]) -> list[Problem]:
    """The classes of the study's splits: the training file's category ids (1..K or 0..K-1,
    else a warning); each category has a box in the training part (else an error) and in each
    other part (the test images, the search split: else a warning); a test file of its own has
    the training file's categories (else an error)."""
    problems = _category_ids(train.audit)
    categories = train.audit.categories
    items = {c: f"categories[{i}] (id {c}, {name!r})" for i, (c, name) in
             enumerate(categories.items())}
    trained = train.audit.box_counts(list(train.image_ids))
    for part in (train, *others):
        if part.audit is not train.audit and part.audit.categories != categories:
            theirs = part.audit.categories
            diff = next(c for c in [*categories, *theirs] if categories.get(c) != theirs.get(c))
            problems.append(Problem(
                "error", "other-categories", part.audit.path, "categories",
                f"differ from those of {train.audit.path} (id {diff}: {theirs.get(diff)!r} "
                f"here, {categories.get(diff)!r} there): the {part.name} need the training "
                "file's categories, else a label names another class"))
            continue
        counts = part.audit.box_counts(list(part.image_ids))
        for c in categories:
            if counts[c] or (part is not train and not trained[c]):  # said once, of train
                continue
            problems.append(Problem(
                "error" if part is train else "warning",
                "empty-category" if part is train else f"absent-from-{part.role}",
                part.audit.path, items[c],
                f"no box in the {part.name}{part.how}: {ROLES[part.role][1]}"))
    return problems


def problem_lines(problems: list[Problem], max_lines: int = MAX_LINES) -> list[str]:
    """One line per problem, at most ``max_lines`` per kind and file (then one line counting
    the rest), errors first."""
    groups: dict[tuple, list[Problem]] = defaultdict(list)
    for p in problems:
        groups[(p.severity != "error", p.kind, str(p.file))].append(p)
    lines = []
    for key in sorted(groups, key=lambda k: k[0]):  # stable: errors first, else found order
        group = groups[key]
        lines += [str(p) for p in group[:max_lines]]
        if len(group) > max_lines:
            p = group[0]
            lines.append(f"{p.severity}: {p.file}: ... and {len(group) - max_lines} more of "
                         f"this kind ({p.kind})")
    return lines
