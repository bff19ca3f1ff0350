"""The embedded synthetic sets: real layouts, determinism, and what makes them non-trivial."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from detnas.data import (
    CocoDetection,
    ImageFolderClassification,
    make_synthetic_classification,
    make_synthetic_detection,
)
from detnas.data.synthetic import SHAPES, TEXTURES, class_names, class_pairs

DET = dict(num_train=6, num_test=2, image_size=64, num_classes=4)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_detection_layout_and_determinism(tmp_path):
    make_synthetic_detection(tmp_path / "a", seed=3, **DET)
    make_synthetic_detection(tmp_path / "b", seed=3, **DET)
    make_synthetic_detection(tmp_path / "c", seed=4, **DET)
    a = _digest(tmp_path / "a")
    assert set(a) == {"annotations/instances_train.json", "annotations/instances_test.json",
                      *(f"train/{i:06d}.png" for i in range(1, 7)),
                      *(f"test/{i:06d}.png" for i in range(1, 3))}
    assert a == _digest(tmp_path / "b")
    c = _digest(tmp_path / "c")
    assert all(a[k] != c[k] for k in a if k.endswith(".png"))


def test_image_does_not_depend_on_count(tmp_path):
    make_synthetic_detection(tmp_path / "a", seed=0, **DET)
    make_synthetic_detection(tmp_path / "b", seed=0, **{**DET, "num_train": 3})
    for i in range(1, 4):
        name = f"train/{i:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_detection_is_valid_coco_with_varied_objects(tmp_path):
    make_synthetic_detection(tmp_path, seed=0, num_train=30, num_test=2, image_size=96,
                             num_classes=4)
    ds = CocoDetection(tmp_path / "train", tmp_path / "annotations/instances_train.json")
    assert ds.num_classes == 4 and len(ds) == 30 and not ds.issues
    data = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    per_image = Counter(a["image_id"] for a in data["annotations"])
    assert max(per_image.values()) >= 3  # several objects per image
    sides = [max(a["bbox"][2:]) for a in data["annotations"]]
    assert min(sides) < 96 / 6 and max(sides) > 96 / 2  # small and large objects
    assert all(0 < a["area"] <= a["bbox"][2] * a["bbox"][3] for a in data["annotations"])
    assert any(a["area"] < 0.5 * a["bbox"][2] * a["bbox"][3] for a in data["annotations"])
    assert set(ds.label_counts()) == {1, 2, 3, 4}
    image, target = ds[0]
    assert image.shape == (3, 96, 96) and image.min() >= 0 and image.max() <= 1
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    assert (target["boxes"] >= 0).all() and (target["boxes"] <= 96).all()


def test_each_class_has_its_own_shape_and_texture():
    """Class k is shape k with texture k (the first four): either cue tells an object, as
    shape and surface tell an ImageNet class; the distractors mix a class's shape with another's
    texture."""
    pairs = class_pairs()
    assert len(set(pairs)) == len(SHAPES) * len(TEXTURES)
    classes = pairs[:len(SHAPES)]
    assert len({s for s, _ in classes}) == len(SHAPES)
    assert len({t for _, t in classes[:len(TEXTURES)]}) == len(TEXTURES)
    assert all(s != t for s, t in pairs[len(SHAPES):] if t == s % len(TEXTURES))
    assert class_names(2) == ["ellipse_stripes", "rectangle_checker"]
    with pytest.raises(ValueError, match="num_classes"):
        class_names(len(pairs) + 1)


def test_classification_layout_and_determinism(tmp_path):
    kw = dict(seed=1, num_classes=3, num_train=6, num_val=3, image_size=32)
    make_synthetic_classification(tmp_path / "a", **kw)
    make_synthetic_classification(tmp_path / "b", **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    ds = ImageFolderClassification(tmp_path / "a" / "train", 32, train=False)
    assert ds.classes == ["00_ellipse_stripes", "01_rectangle_checker", "02_triangle_dots"]
    assert Counter(label for _, label in ds.samples) == {0: 2, 1: 2, 2: 2}
    assert len(list((tmp_path / "a" / "val").rglob("*.png"))) == 3


@pytest.mark.parametrize("kwargs", [dict(num_train=0), dict(image_size=8), dict(num_classes=0)])
def test_bad_synthetic_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_detection(tmp_path, seed=0, **{**DET, **kwargs})
