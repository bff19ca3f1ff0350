"""Pascal VOC 2007 / 2012 converted once to COCO JSON, so one reader and one evaluator serve both.

The input is the devkit layout: ``VOCdevkit/VOC<year>/{Annotations/<id>.xml,
ImageSets/Main/<set>.txt, JPEGImages/<id>.jpg}``. In the output, ``file_name`` is relative to the
devkit folder (``VOC2007/JPEGImages/000005.jpg``), so the images folder of the dataset is the
devkit folder; category ids are 1..20 in the usual class order; boxes go from VOC's 1-based
inclusive corners to COCO's ``[x, y, w, h]`` (``x = xmin - 1``, ``w = xmax - xmin + 1``).
Difficult objects become ``iscrowd: 1``: left out of training and ignored by COCOeval (a detection
matched to one counts neither way), which is how VOC's own evaluation treats them.
Image ids: VOC 2007 ids (``000005``) keep their number, later ids (``2008_000123``) become
``2008000123``.

Bad input fails with a ``ValueError`` naming the file: a missing devkit, year folder, image-set
list, annotation XML or JPEG, XML that does not parse or lacks a size or box field, a class name
that is not one of VOC's 20, a duplicate image id.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from detnas.io import save_json

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def _image_id(name: str, path: Path) -> int:
    year, sep, number = name.partition("_")
    try:
        return int(year) * 10**6 + int(number) if sep else int(name)
    except ValueError:
        raise ValueError(f"{path}: image id {name!r} is not a VOC id") from None


def _number(node: ET.Element, field: str, path: Path) -> float:
    text = node.findtext(field)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: field {field!r} = {text!r} is not a number") from None


def _read_xml(path: Path) -> tuple[int, int, list[tuple[int, list[float], int]]]:
    """Width, height and ``(category_id, [x, y, w, h], difficult)`` objects of one XML file."""
    if not path.is_file():
        raise ValueError(f"{path}: annotation file does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not valid XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: no <size> element")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ValueError(f"{path}: unknown class {name!r} (VOC has {', '.join(VOC_CLASSES)})")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(box, f, path) for f in ("xmin", "ymin", "xmax", "ymax"))
        difficult = int(obj.findtext("difficult") or 0)
        objects.append((VOC_CLASSES.index(name) + 1, [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                        difficult))
    return width, height, objects


def convert_voc(voc_root: str | Path, years: list[str], sets: list[str],
                out: str | Path) -> Path:
    """Convert the image sets ``sets`` of VOC ``years`` into one COCO annotation file.

    Args:
        voc_root: the ``VOCdevkit`` folder.
        years: e.g. ``["2007", "2012"]``.
        sets: image-set names, e.g. ``["trainval"]`` or ``["test"]``.
        out: the JSON file to write.

    Returns:
        The written path.

    Raises:
        ValueError: see the module docstring.
    """
    voc_root = Path(voc_root)
    if not voc_root.is_dir():
        raise ValueError(f"{voc_root}: VOC devkit folder does not exist")
    images, annotations, seen = [], [], {}
    for year in years:
        base = voc_root / f"VOC{year}"
        if not base.is_dir():
            raise ValueError(f"{base}: VOC year folder does not exist")
        for image_set in sets:
            listing = base / "ImageSets" / "Main" / f"{image_set}.txt"
            if not listing.is_file():
                raise ValueError(f"{listing}: image-set list does not exist")
            for name in listing.read_text().split():
                image_id = _image_id(name, listing)
                if image_id in seen:
                    raise ValueError(f"{listing}: duplicate image id {image_id} ({name}, "
                                     f"already in {seen[image_id]})")
                seen[image_id] = listing
                jpeg = base / "JPEGImages" / f"{name}.jpg"
                if not jpeg.is_file():
                    raise ValueError(f"{jpeg}: image file does not exist")
                width, height, objects = _read_xml(base / "Annotations" / f"{name}.xml")
                images.append({"id": image_id, "file_name": jpeg.relative_to(voc_root).as_posix(),
                               "width": width, "height": height})
                for category_id, bbox, difficult in objects:
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id,
                        "category_id": category_id, "bbox": bbox, "area": bbox[2] * bbox[3],
                        "iscrowd": difficult,
                    })
    if not images:
        raise ValueError(f"{voc_root}: empty split: no images in VOC {years} {sets}")
    data = {
        "info": {"description": f"Pascal VOC {'+'.join(years)} {'+'.join(sets)}"},
        "licenses": [], "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "voc"}
                       for i, n in enumerate(VOC_CLASSES)],
    }
    log.info("VOC %s %s: %d images, %d objects", years, sets, len(images), len(annotations))
    return save_json(out, data)
