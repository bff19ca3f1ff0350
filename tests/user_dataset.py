"""A COCO-format detection dataset on disk as a user would have it (tests of `detnas init`).

JPEG and PNG files of several sizes, landscape, portrait and square; category ids 1-based with
gaps, as COCO's 1..90; one category with no box in the test images; one training image without
annotations. Each object is a filled shape of its category's own form and colour on a noisy
background, so that a detector has something to learn.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CATEGORIES = [{"id": 1, "name": "disc"}, {"id": 3, "name": "square"},
              {"id": 7, "name": "triangle"}, {"id": 12, "name": "bar"}]
NOT_IN_TEST = 12  # the category with no box in the test images
SIZES = [(96, 64), (64, 96), (80, 80), (112, 72), (72, 112), (100, 75)]  # w x h
COLOURS = {1: (220, 40, 40), 3: (40, 200, 40), 7: (40, 60, 220), 12: (230, 200, 30)}


def _draw(draw, category: int, box: list[float]) -> None:
    x, y, w, h = box
    fill = COLOURS[category]
    if category == 1:
        draw.ellipse([x, y, x + w, y + h], fill=fill)
    elif category == 3:
        draw.rectangle([x, y, x + w, y + h], fill=fill)
    elif category == 7:
        draw.polygon([(x + w / 2, y), (x, y + h), (x + w, y + h)], fill=fill)
    else:
        draw.rectangle([x, y + h / 3, x + w, y + 2 * h / 3], fill=fill)


def write_split(root: Path, split: str, count: int, first_id: int, rng: random.Random,
                categories: list[int], empty_image: bool) -> dict:
    """``count`` images of the split in ``root/images`` and their COCO dict."""
    from PIL import Image, ImageDraw

    images, annotations = [], []
    for k in range(count):
        image_id = first_id + k
        w, h = SIZES[image_id % len(SIZES)]
        pixels = bytes(rng.randrange(90, 140) for _ in range(w * h * 3))
        image = Image.frombytes("RGB", (w, h), pixels)
        draw = ImageDraw.Draw(image)
        n = 0 if empty_image and k == 0 else rng.randint(1, 3)
        for _ in range(n):
            category = categories[(image_id + len(annotations)) % len(categories)]
            bw, bh = rng.randint(16, min(w, h) // 2), rng.randint(16, min(w, h) // 2)
            bx, by = rng.randint(0, w - bw), rng.randint(0, h - bh)
            _draw(draw, category, [bx, by, bw, bh])
            annotations.append({"id": 1000 * first_id + len(annotations) + 1,
                                "image_id": image_id, "category_id": category,
                                "bbox": [float(bx), float(by), float(bw), float(bh)],
                                "area": float(bw * bh), "iscrowd": 0})
        name = f"{split}_{image_id:04d}.{'png' if image_id % 3 == 0 else 'jpg'}"
        image.save(root / "images" / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    return {"info": {"description": f"a user's {split} set"}, "images": images,
            "annotations": annotations, "categories": CATEGORIES}


def write_user_dataset(root: Path, train: int = 30, test: int = 10, seed: int = 0) -> Path:
    """The dataset under ``root``: ``images/`` (train and test images side by side) and
    ``annotations/train.json``, ``annotations/test.json``. Returns ``root``."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    ids = [c["id"] for c in CATEGORIES]
    data = {"train": write_split(root, "train", train, 1, rng, ids, empty_image=True),
            "test": write_split(root, "test", test, 1 + train, rng,
                                [c for c in ids if c != NOT_IN_TEST], empty_image=False)}
    for split, content in data.items():
        (root / "annotations" / f"{split}.json").write_text(json.dumps(content, indent=1))
    return root


def write_imagefolder(root: Path, classes: int = 2, per_class: int = 4, seed: int = 0) -> Path:
    """A small ImageFolder classification set: ``root/{train,val}/<class>/*.JPEG``."""
    from PIL import Image

    rng = random.Random(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                colour = tuple(rng.randrange(256) for _ in range(3))
                Image.new("RGB", (40 + 8 * i, 32), colour).save(folder / f"{split}_{i}.JPEG")
    return root
