"""VOC 2007+2012 conversion to COCO JSON, on a tiny devkit fixture in the real layout."""

import json
import shutil
from pathlib import Path

import pytest

from detnas.data import CocoDetection, convert_voc

DEVKIT = Path(__file__).parent / "fixtures" / "voc" / "VOCdevkit"


def test_convert_trainval_07_12(tmp_path):
    out = convert_voc(DEVKIT, ["2007", "2012"], ["trainval"], tmp_path / "voc_trainval.json")
    data = json.loads(out.read_text())
    assert [im["id"] for im in data["images"]] == [5, 7, 2008000002, 2008000003]
    assert data["images"][0] == {"id": 5, "file_name": "VOC2007/JPEGImages/000005.jpg",
                                 "width": 40, "height": 30}
    assert len(data["categories"]) == 20 and data["categories"][8]["name"] == "chair"
    chair, difficult = data["annotations"][:2]
    assert chair["bbox"] == [2, 3, 18, 22] and chair["category_id"] == 9  # (3,4)-(20,25), 1-based
    assert chair["iscrowd"] == 0 and difficult["iscrowd"] == 1
    ds = CocoDetection(DEVKIT, out)
    assert ds.num_classes == 20 and len(ds) == 4
    image, target = ds[0]
    assert image.shape == (3, 30, 40)
    assert target["labels"].tolist() == [9]  # the difficult chair is not a training target
    assert target["boxes"].tolist() == [[2, 3, 20, 25]]


def test_convert_test_2007(tmp_path):
    data = json.loads(convert_voc(DEVKIT, ["2007"], ["test"], tmp_path / "t.json").read_text())
    assert [im["id"] for im in data["images"]] == [1]
    assert [a["category_id"] for a in data["annotations"]] == [12, 15]  # dog, person


@pytest.fixture
def devkit(tmp_path):
    root = tmp_path / "VOCdevkit"
    shutil.copytree(DEVKIT, root)
    return root


def test_bad_voc_input_names_the_file(devkit, tmp_path):
    out = tmp_path / "o.json"
    xml = devkit / "VOC2007" / "Annotations" / "000007.xml"
    xml.write_text(xml.read_text().replace("<name>car</name>", "<name>spaceship</name>"))
    with pytest.raises(ValueError, match="000007.xml: unknown class 'spaceship'"):
        convert_voc(devkit, ["2007"], ["trainval"], out)
    xml.write_text("<annotation><size>")
    with pytest.raises(ValueError, match="000007.xml: not valid XML"):
        convert_voc(devkit, ["2007"], ["trainval"], out)
    (devkit / "VOC2007" / "JPEGImages" / "000005.jpg").unlink()
    with pytest.raises(ValueError, match="000005.jpg: image file does not exist"):
        convert_voc(devkit, ["2007"], ["trainval"], out)
    with pytest.raises(ValueError, match="val.txt: image-set list does not exist"):
        convert_voc(devkit, ["2012"], ["val"], out)
    with pytest.raises(ValueError, match="VOC2010: VOC year folder does not exist"):
        convert_voc(devkit, ["2010"], ["trainval"], out)
    (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_text("")
    with pytest.raises(ValueError, match="empty split"):
        convert_voc(devkit, ["2012"], ["trainval"], out)
    assert not out.exists()
