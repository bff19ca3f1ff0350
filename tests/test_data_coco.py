"""COCO reader on a tiny fixture in the real layout, every bad-input case, and the loader."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from detnas.data import CocoDetection, detection_loader

FIXTURE = Path(__file__).parent / "fixtures" / "coco"
ANNOTATIONS = FIXTURE / "annotations" / "instances_val2017.json"


@pytest.fixture
def coco_copy(tmp_path):
    """A writable copy of the fixture and a function that writes a modified annotation file."""
    root = tmp_path / "coco"
    shutil.copytree(FIXTURE, root)
    original = json.loads(ANNOTATIONS.read_text())

    def write(change) -> Path:
        data = copy.deepcopy(original)
        change(data)
        path = root / "annotations" / "instances_bad.json"
        path.write_text(json.dumps(data))
        return path

    return root, write


def test_reads_real_layout_with_sparse_categories():
    ds = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)
    assert ds.ids == [139, 285, 632] and len(ds) == 3
    assert ds.num_classes == 4
    assert [ds.label_to_category(lb) for lb in (1, 2, 3, 4)] == [1, 3, 18, 90]
    assert ds.category_to_label(90) == 4 and ds.category_to_label(18) == 3
    with pytest.raises(ValueError):
        ds.label_to_category(5)
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 40, 48)
    assert image.min() >= 0 and image.max() <= 1
    assert target["image_id"] == 139
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 4]
    assert torch.equal(target["boxes"], torch.tensor([[2.5, 3, 22.5, 33], [30, 5, 40, 13]]))
    _, crowd_image = ds[1]  # the crowd box is ignored for training
    assert crowd_image["labels"].tolist() == [3]
    assert len(ds.coco.getAnnIds(imgIds=[285])) == 2  # but stays in the ground truth


def test_cache_and_no_cache_agree_and_subset_shares_cache():
    cached = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)
    lazy = CocoDetection(FIXTURE / "val2017", ANNOTATIONS, cache=False)
    for i in range(3):
        assert torch.equal(cached[i][0], lazy[i][0])
    sub = cached.subset([632, 139])
    assert sub.ids == [632, 139] and len(sub) == 2 and len(cached) == 3
    assert sub._cache[139] is cached._cache[139]
    assert sub[1][1]["image_id"] == 139
    with pytest.raises(ValueError, match="unknown image id 7"):
        cached.subset([139, 7])
    with pytest.raises(ValueError, match="empty split"):
        cached.subset([])


def test_flip_moves_boxes_with_the_image():
    ds = CocoDetection(FIXTURE / "val2017", ANNOTATIONS, flip_prob=1.0)
    plain = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)
    image, target = ds[0]
    assert torch.equal(image, plain[0][0].flip(-1))
    assert torch.equal(target["boxes"], torch.tensor([[25.5, 3, 45.5, 33], [8, 5, 18, 13]]))


def test_loader_is_reproducible_and_collates_lists():
    ds = CocoDetection(FIXTURE / "val2017", ANNOTATIONS)

    def order(seed):
        return [t["image_id"] for _, ts in detection_loader(ds, 2, True, seed) for t in ts]

    assert order(0) == order(0)
    assert sorted(order(0)) == [139, 285, 632]
    assert len({tuple(order(s)) for s in range(6)}) > 1
    images, targets = next(iter(detection_loader(ds, 2, False, 0)))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    assert [t["image_id"] for t in targets] == [139, 285]


def test_boxes_are_cleaned_and_counted(coco_copy, caplog):
    root, write = coco_copy

    def change(data):
        data["annotations"][0]["bbox"] = [2, 3, 0, 5]  # non-positive width
        data["annotations"][1]["bbox"] = [60, 50, 5, 5]  # outside the 48x40 image
        data["annotations"][4]["bbox"] = [-10, 10, 20, 50]  # partly outside the 32x48 image

    ds = CocoDetection(root / "val2017", write(change))
    assert ds.issues == {"box with non-positive size (skipped)": 1,
                         "box outside the image (skipped)": 1,
                         "box partly outside the image (clipped)": 1}
    assert "instances_bad.json" in caplog.text
    assert len(ds[0][1]["boxes"]) == 0
    assert ds[2][1]["boxes"][0].tolist() == [0, 10, 10, 48]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("images"), "not COCO: 'images' is missing"),
    (lambda d: d["images"][0].pop("file_name"), r"not COCO: images\[0\].file_name"),
    (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]), r"annotations\[2\].bbox"),
    (lambda d: d["annotations"][1].update(category_id=2), "unknown category_id 2"),
    (lambda d: d["annotations"][1].update(image_id=5), "unknown image_id 5"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 139"),
    (lambda d: d.update(images=[], annotations=[]), "empty split"),
])
def test_bad_annotations_fail_naming_the_file(coco_copy, change, message):
    root, write = coco_copy
    path = write(change)
    with pytest.raises(ValueError, match=message) as err:
        CocoDetection(root / "val2017", path)
    assert str(path) in str(err.value)


def test_not_json_and_missing_paths(coco_copy):
    root, _ = coco_copy
    bad = root / "annotations" / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        CocoDetection(root / "val2017", bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="broken.json: not COCO"):
        CocoDetection(root / "val2017", bad)
    with pytest.raises(ValueError, match="nowhere.json: file does not exist"):
        CocoDetection(root / "val2017", root / "nowhere.json")
    with pytest.raises(ValueError, match="val2014: image folder does not exist"):
        CocoDetection(root / "val2014", ANNOTATIONS)


def test_missing_corrupt_and_resized_images(coco_copy):
    root, _ = coco_copy
    images = root / "val2017"
    ann = root / "annotations" / "instances_val2017.json"
    (images / "000000000285.jpg").unlink()
    with pytest.raises(ValueError, match=r"000000000285.jpg: image file does not exist \(1 of 3"):
        CocoDetection(images, ann)
    (images / "000000000285.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ValueError, match="000000000285.jpg: not a readable image"):
        CocoDetection(images, ann)
    lazy = CocoDetection(images, ann, cache=False)  # fails only when the item is read
    lazy[0]
    with pytest.raises(ValueError, match="000000000285.jpg: not a readable image"):
        lazy[1]
    shutil.copy(images / "000000000139.jpg", images / "000000000285.jpg")
    with pytest.raises(ValueError, match="decoded size 48x40 differs from 40x32"):
        CocoDetection(images, ann)
