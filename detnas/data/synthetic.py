"""The embedded default datasets: seeded, deterministic, written in the real layouts.

Detection goes to COCO's layout (``train/*.png``, ``test/*.png``,
``annotations/instances_{train,test}.json``), classification to ImageNet's ImageFolder layout
(``train/<class>/*.png``, ``val/<class>/*.png``), so the same readers serve real and embedded data.

The images are built to be learned in minutes on a CPU while the backbone still matters
(`docs/embedded_default.md` has the measurements that chose each point):

- a class is an object with its own shape and its own texture (an ellipse with stripes, a
  rectangle with a checker, ...): either cue tells it, as shape and surface tell an ImageNet
  class; the classification set's classes are the detection set's objects, so pre-training
  teaches what detection needs;
- a texture is a dark-on-light luminance pattern, upright within 15 degrees, three to five
  periods across its object; hues are drawn at random per object, so colour never tells a class;
- objects are rotated, with sizes log-uniform from 1/6 to 0.7 of the image (COCO's small and
  medium, so several FPN levels and receptive fields have work to do);
- several objects per image, later ones occluding earlier ones (at most half of an object is
  hidden; the annotated ``area`` is the visible pixel count, the box is the full object);
- mid-tone gradient backgrounds crossed by thin lines, and optionally *distractors*: a class's
  shape with another class's texture, which the detector must learn to ignore.

Every image is drawn from its own generator seeded with ``(seed, split, index)``, so image ``i``
is the same whatever the number of images, and the written files are byte-identical across runs.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from detnas.io import atomic_write, save_json

log = logging.getLogger(__name__)

SHAPES = ("ellipse", "rectangle", "triangle", "cross", "ring", "diamond")
TEXTURES = ("stripes", "checker", "dots", "waves")
_SPLIT_CODES = {"train": 0, "test": 1, "val": 2}


def class_pairs() -> list[tuple[int, int]]:
    """All (shape, texture) index pairs, in the order classes take them.

    Class ``k`` is first shape ``k`` with texture ``k`` (textures repeat after the fourth), so
    every class has its own shape and, among the first four, its own texture: an object is told
    by either cue, as an ImageNet class is by its shape and its surface. The other pairs follow,
    a shape of one class with the texture of another: the distractors.
    """
    own = [(s, s % len(TEXTURES)) for s in range(len(SHAPES))]
    return own + [(s, t) for s in range(len(SHAPES)) for t in range(len(TEXTURES))
                  if (s, t) not in own]


def class_names(num_classes: int) -> list[str]:
    """The names of the first ``num_classes`` synthetic classes, like ``ellipse_stripes``."""
    _check_classes(num_classes, "")
    return [f"{SHAPES[s]}_{TEXTURES[t]}" for s, t in class_pairs()[:num_classes]]


def _check_classes(num_classes: int, where: str) -> None:
    if not 1 <= num_classes <= len(class_pairs()):
        raise ValueError(f"{where}num_classes: {num_classes} (the synthetic sets have "
                         f"1..{len(class_pairs())})")


def check_detection_settings(num_train: int, num_test: int, image_size: int, num_classes: int,
                             where: str = "") -> None:
    """The settings of a synthetic detection set (``where``: the config section, e.g.
    ``config.datasets.synth.``), checked by `make_synthetic_detection` and by the config's
    check (`detnas.plan.config.check_data`), when the workflow is parsed.

    Raises:
        ValueError: a count, the image size or the number of classes out of range.
    """
    _check_classes(num_classes, where)
    for key, count in (("num_train", num_train), ("num_test", num_test)):
        if count < 1:
            raise ValueError(f"{where}{key}: {count} (must be >= 1)")
    if image_size < 32:
        raise ValueError(f"{where}image_size: {image_size} (must be >= 32)")


def check_classification_settings(num_train: int, num_val: int, image_size: int,
                                  num_classes: int, where: str = "") -> None:
    """The settings of the synthetic classification set (see `check_detection_settings`).

    Raises:
        ValueError: a count, the image size or the number of classes out of range.
    """
    _check_classes(num_classes, where)
    for key, count in (("num_train", num_train), ("num_val", num_val)):
        if count < num_classes:
            raise ValueError(f"{where}{key}: {count} (must be >= num_classes = {num_classes}: "
                             "every class in both splits)")
    if image_size < 16:
        raise ValueError(f"{where}image_size: {image_size} (must be >= 16)")


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _SPLIT_CODES[split],
                                                                       index])))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask of a shape in rotated unit coordinates ``u, v`` in [-1, 1]."""
    name = SHAPES[shape]
    if name == "ellipse":
        aspect = rng.uniform(0.6, 1.0)
        return u**2 + (v / aspect) ** 2 <= 1
    if name == "rectangle":
        aspect = rng.uniform(0.5, 1.0)
        return (np.abs(u) <= 1) & (np.abs(v) <= aspect)
    if name == "triangle":
        return (v <= 0.8) & (v >= 2 * np.abs(u) - 1.2)
    if name == "cross":
        arm = rng.uniform(0.28, 0.4)
        return ((np.abs(u) <= 1) & (np.abs(v) <= arm)) | ((np.abs(v) <= 1) & (np.abs(u) <= arm))
    if name == "ring":
        r = np.hypot(u, v)
        return (r <= 1) & (r >= rng.uniform(0.45, 0.6))
    return np.abs(u) + np.abs(v) <= 1  # diamond


def _texture(texture: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             size: float = 64.0) -> np.ndarray:
    """A binary texture over pixel coordinates, with a random period, phase and angle.

    The period follows the object's size (``size`` pixels): three to five periods across it,
    never below 4 pixels, so that a texture survives resizing and stays the object's own.
    """
    period = max(4.0, size * rng.uniform(0.2, 0.3))
    angle = rng.uniform(-np.pi / 12, np.pi / 12)  # upright, as textures mostly are
    a = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, period)
    b = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, period)
    name = TEXTURES[texture]
    if name == "stripes":
        return np.sin(2 * np.pi * a / period) > 0
    if name == "checker":
        return (np.floor(a / period) + np.floor(b / period)) % 2 == 0
    if name == "dots":
        da = (a / period) % 1 - 0.5
        db = (b / period) % 1 - 0.5
        return da**2 + db**2 <= 0.09
    return np.sin(2 * np.pi * (a + 1.5 * np.sin(2 * np.pi * b / (2.5 * period))) / period) > 0


def _object(shape: int, texture: int, size: float, cx: float, cy: float, h: int, w: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The full-image mask and colour layer of one rotated, textured object."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = (x - cx) / (size / 2), (y - cy) / (size / 2)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    mask = _shape_mask(shape, u, v, rng)
    pattern = _texture(texture, x, y, rng, size)
    c1, c2 = _colour(rng) * 0.4, 153 + _colour(rng) * 0.4  # a dark and a light colour: the
    # texture is a luminance pattern whatever the hues, as edges are in photographs
    layer = np.where(pattern[..., None], c1, c2)
    return mask, layer


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth mid-tone colour gradient crossed by a few thin lines."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c1, c2 = 64 + _colour(rng) * 0.5, 64 + _colour(rng) * 0.5  # mid tones: between the dark
    # and the light of an object's texture
    t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / max(h, w)
    img = c1 + (c2 - c1) * ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
    for _ in range(int(rng.integers(0, 3))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, np.pi)
        dist = np.abs((x - x0) * np.sin(angle) - (y - y0) * np.cos(angle))
        img = np.where((dist <= rng.uniform(0.5, 2.5))[..., None], _colour(rng), img)
    return img


def render_image(rng: np.random.Generator, image_size: int, num_classes: int,
                 max_objects: int, max_distractors: int = 2) -> tuple[np.ndarray, list[dict]]:
    """One image and its objects.

    Args:
        rng: the image's own generator.
        image_size: side of the square image in pixels.
        num_classes: objects are drawn from the first ``num_classes`` class pairs.
        max_objects: the most objects an image has (distractors not counted).
        max_distractors: the most distractors (shapes of no class) an image has.

    Returns:
        The uint8 image (H, W, 3) and a list of ``{"label": 0-based class, "bbox": [x, y, w, h],
        "area": visible pixels}``.
    """
    h = w = image_size
    pairs = class_pairs()
    img = _background(h, w, rng)
    owner = np.full((h, w), -1, dtype=np.int32)  # which object is visible at each pixel
    objects: list[dict] = []
    min_size, max_size = max(8.0, image_size / 6), image_size * 0.7
    n_objects = int(rng.integers(1, max_objects + 1))
    n_distractors = (int(rng.integers(0, max_distractors + 1))
                     if len(pairs) > num_classes and max_distractors else 0)
    kinds = [True] * n_objects + [False] * n_distractors
    rng.shuffle(kinds)
    for is_object in kinds:
        for _attempt in range(10):
            size = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
            cx, cy = rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2)
            label = int(rng.integers(num_classes)) if is_object else int(
                rng.integers(num_classes, len(pairs)))
            mask, layer = _object(*pairs[label], size, cx, cy, h, w, rng)
            if mask.sum() < 16:
                continue
            covered = [int(((owner == i) & mask).sum()) for i in range(len(objects))]
            if all(o["area"] - c >= o["area"] / 2 for o, c in zip(objects, covered, strict=True)):
                break
        else:
            continue
        img = np.where(mask[..., None], layer, img)
        for i, c in enumerate(covered):
            objects[i]["area"] -= c
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        owner[mask] = len(objects)
        objects.append({"label": label, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "area": int(mask.sum()), "is_object": is_object})
    img = np.clip(img, 0, 255).astype(np.uint8)
    annotated = [{k: o[k] for k in ("label", "bbox", "area")} for o in objects if o["is_object"]]
    return img, annotated


def _write_png(path: Path, img: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))


def make_synthetic_detection(root: str | Path, *, seed: int, num_train: int, num_test: int,
                             image_size: int, num_classes: int, max_objects: int = 6,
                             max_distractors: int = 2) -> None:
    """Write the synthetic detection set in COCO layout under ``root``.

    Writes ``root/{train,test}/<id>.png`` and ``root/annotations/instances_{train,test}.json``
    (category ids 1..num_classes, image ids 1..n per split).

    Raises:
        ValueError: a count, the image size or the number of classes is out of range.
    """
    check_detection_settings(num_train, num_test, image_size, num_classes)
    names = class_names(num_classes)
    root = Path(root)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(names)]
    for split, count in (("train", num_train), ("test", num_test)):
        images, annotations = [], []
        for i in range(count):
            img, objects = render_image(_rng(seed, split, i), image_size, num_classes, max_objects,
                                        max_distractors)
            image_id = i + 1
            file_name = f"{image_id:06d}.png"
            _write_png(root / split / file_name, img)
            images.append({"id": image_id, "file_name": file_name, "width": image_size,
                           "height": image_size})
            for o in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": o["label"] + 1, "bbox": o["bbox"],
                                    "area": o["area"], "iscrowd": 0})
        save_json(root / "annotations" / f"instances_{split}.json", {
            "info": {"description": "detnas synthetic detection", "seed": seed},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": categories,
        })
        log.info("synthetic detection %s: %d images, %d objects", split, count, len(annotations))


def render_classification(rng: np.random.Generator, image_size: int, label: int,
                          num_classes: int) -> np.ndarray:
    """One classification image: a large object of class ``label`` among clutter."""
    h = w = image_size
    pairs = class_pairs()
    img = _background(h, w, rng)
    n_clutter = int(rng.integers(0, 2)) if len(pairs) > num_classes else 0
    for _ in range(n_clutter):  # a small distractor (not a class pair), behind the object
        size = rng.uniform(0.15, 0.3) * image_size
        pair = pairs[int(rng.integers(num_classes, len(pairs)))]
        mask, layer = _object(*pair, size, rng.uniform(0, w), rng.uniform(0, h), h, w, rng)
        img = np.where(mask[..., None], layer, img)
    size = rng.uniform(0.5, 0.9) * image_size
    margin = size / 3
    cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
    mask, layer = _object(*pairs[label], size, cx, cy, h, w, rng)
    img = np.where(mask[..., None], layer, img)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_synthetic_classification(root: str | Path, *, seed: int, num_classes: int, num_train: int,
                                  num_val: int, image_size: int) -> None:
    """Write the synthetic classification set in ImageFolder layout under ``root``.

    Writes ``root/{train,val}/<class>/<index>.png``, the classes balanced (image ``i`` has class
    ``i % num_classes``), class folders named ``<NN>_<shape>_<texture>`` so that sorted order is
    label order.

    Raises:
        ValueError: a count, the image size or the number of classes is out of range.
    """
    check_classification_settings(num_train, num_val, image_size, num_classes)
    names = class_names(num_classes)
    root = Path(root)
    folders = [f"{i:02d}_{n}" for i, n in enumerate(names)]
    for split, count in (("train", num_train), ("val", num_val)):
        for i in range(count):
            label = i % num_classes
            img = render_classification(_rng(seed, split, i), image_size, label, num_classes)
            _write_png(root / split / folders[label] / f"{i:06d}.png", img)
        log.info("synthetic classification %s: %d images, %d classes", split, count, num_classes)


def synthesize_detection(d, seed: int) -> None:
    """Write the synthetic detection set a dataset section of the config (`DatasetConfig`)
    describes, under its ``root``."""
    make_synthetic_detection(d.root, seed=seed, num_train=d.num_train, num_test=d.num_test,
                             image_size=d.image_size, num_classes=d.num_classes,
                             max_objects=d.max_objects, max_distractors=d.max_distractors)


def synthesize_classification(c, seed: int) -> None:
    """Write the synthetic classification set the ``classification`` section of the config
    (`ClassificationConfig`) describes, under its ``root``."""
    make_synthetic_classification(c.root, seed=seed, num_classes=c.num_classes,
                                  num_train=c.num_train, num_val=c.num_val,
                                  image_size=c.image_size)
