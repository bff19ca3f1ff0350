"""The seeded supernet-training / search-validation split of a detection training set."""

import json
from pathlib import Path

import pytest

from detnas.data import CocoDetection, make_search_split

FIXTURE = Path(__file__).parent / "fixtures" / "coco"
ANNOTATIONS = FIXTURE / "annotations" / "instances_val2017.json"


def _ids(path):
    data = json.loads(Path(path).read_text())
    return {im["id"] for im in data["images"]}, {a["image_id"] for a in data["annotations"]}, data


def test_split_partitions_the_images(tmp_path):
    supernet, search = make_search_split(ANNOTATIONS, 1, seed=0, out_dir=tmp_path)
    assert (supernet.name, search.name) == ("instances_supernet.json", "instances_search.json")
    sup_ids, sup_ann_ids, sup = _ids(supernet)
    search_ids, search_ann_ids, sea = _ids(search)
    assert len(search_ids) == 1 and sup_ids | search_ids == {139, 285, 632}
    assert not sup_ids & search_ids
    assert sup_ann_ids <= sup_ids and search_ann_ids <= search_ids
    assert len(sup["annotations"]) + len(sea["annotations"]) == 6
    assert sup["categories"] == sea["categories"] == json.loads(ANNOTATIONS.read_text())[
        "categories"]
    ds = CocoDetection(FIXTURE / "val2017", search)  # the images stay where they are
    assert ds.ids == sorted(search_ids) and ds.num_classes == 4


def test_split_is_seeded(tmp_path):
    draws = {}
    for seed in range(8):
        _, search = make_search_split(ANNOTATIONS, 1, seed, tmp_path / str(seed))
        draws[seed] = _ids(search)[0]
    _, again = make_search_split(ANNOTATIONS, 1, 3, tmp_path / "again")
    assert _ids(again)[0] == draws[3]
    assert len({frozenset(d) for d in draws.values()}) > 1


@pytest.mark.parametrize("holdout", [0, 3, -1])
def test_split_needs_both_parts(tmp_path, holdout):
    with pytest.raises(ValueError, match=f"holdout {holdout} must be between 1 and 2"):
        make_search_split(ANNOTATIONS, holdout, 0, tmp_path)
    assert not list(tmp_path.iterdir())
