"""`detnas init` on a user's COCO-format files (tests/user_dataset.py): each problem of the data
is one line naming the file and the item, an error (a warning with --strict) exits 2 and writes
nothing; the config it writes is the one the workflow accepts, its decisions scaled to the data
and the GPUs. In process, torch-free: seconds. The whole study on such files:
tests/workflow/test_own_data.py."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from user_dataset import NOT_IN_TEST, write_imagefolder, write_user_dataset

from detnas.cli import main
from detnas.data import audit
from detnas.data.split import held_out_ids
from detnas.plan import config, own_data, preflight


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    return write_user_dataset(tmp_path_factory.mktemp("user") / "mydata", train=30, test=10)


@pytest.fixture
def data(pristine, tmp_path) -> Path:
    """A writable copy of the user's dataset (images/, annotations/{train,test}.json)."""
    return Path(shutil.copytree(pristine, tmp_path / "mydata"))


def _edit(path: Path, change) -> dict:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return content


def _init(data: Path, tmp_path: Path, *extra: str, test: bool = True) -> tuple[int, Path]:
    out = tmp_path / "config" / "mydata.yaml"
    args = ["init", "--train-annotations", str(data / "annotations/train.json"),
            "--train-images", str(data / "images"), "--out", str(out), "--scale", "toy",
            "--gpus", "0"]
    if test:
        args += ["--test-annotations", str(data / "annotations/test.json")]
    return main([*args, *extra]), out


def _lines(capsys, severity: str) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines()
            if line.startswith(f"{severity}: ")]


def _image(data: Path, index: int) -> tuple[dict, Path]:
    content = json.loads((data / "annotations/train.json").read_text())
    im = content["images"][index]
    return im, data / "images" / im["file_name"]


def _missing(data):
    im, path = _image(data, 3)
    path.unlink()
    return f"images[3] (id {im['id']}, {im['file_name']}): image file does not exist: {path}"


def _corrupt(data):
    im, path = _image(data, 4)
    path.write_bytes(path.read_bytes()[:200])  # a truncated download
    return f"images[4] (id {im['id']}, {im['file_name']}): not a readable image: {path}"


def _rotated(data):
    """A portrait photo stored landscape with an EXIF rotation, annotated as shown."""
    from PIL import Image

    im, path = _image(data, 5)
    with Image.open(path) as image:
        stored = image.convert("RGB")
    exif = Image.Exif()
    exif[audit.EXIF_ORIENTATION] = 6
    jpeg = path.with_suffix(".jpeg")
    stored.save(jpeg, exif=exif)

    def change(content):
        entry = content["images"][5]
        entry["file_name"], entry["width"], entry["height"] = jpeg.name, im["height"], im["width"]
    _edit(data / "annotations/train.json", change)
    return (f"images[5] (id {im['id']}, {jpeg.name}): {jpeg} is {im['width']}x{im['height']}, "
            f"the file says {im['height']}x{im['width']}; its EXIF orientation 6")


def _outside(data):
    def change(content):
        content["annotations"][2]["bbox"] = [500.0, 10.0, 20.0, 20.0]
    content = _edit(data / "annotations/train.json", change)
    ann = content["annotations"][2]
    return f"annotations[2] (id {ann['id']}, image {ann['image_id']} "


def _unknown_category(data):
    def change(content):
        content["annotations"][6]["category_id"] = 99
    content = _edit(data / "annotations/train.json", change)
    return (f"annotations[6] (id {content['annotations'][6]['id']}): unknown category_id 99 "
            "(known: [1, 3, 7, 12])")


def _empty_category(data):
    for name in ("train", "test"):
        _edit(data / f"annotations/{name}.json",
              lambda c: c["categories"].append({"id": 20, "name": "ghost"}))
    return "categories[4] (id 20, 'ghost'): no box in the training images: the detector cannot"


def _other_categories(data):
    def change(content):
        content["categories"][1]["name"] = "cube"
    _edit(data / "annotations/test.json", change)
    return "categories: differ from those of"


def _not_json(data):
    (data / "annotations/train.json").write_text("<html>Moved</html>")
    return "not valid JSON"


ERRORS = {  # problem -> (what makes it, the file its line names, kind)
    "missing image": (_missing, "train.json", "image file does not exist"),
    "unreadable image": (_corrupt, "train.json", "not a readable image"),
    "rotated image": (_rotated, "train.json", "EXIF orientation 6"),
    "box outside the image": (_outside, "train.json", "is entirely outside it"),
    "unknown category": (_unknown_category, "train.json", "unknown category_id 99"),
    "empty category": (_empty_category, "train.json", "no box in the training images"),
    "other categories in the test file": (_other_categories, "test.json", "differ from those"),
    "not JSON": (_not_json, "train.json", "not valid JSON"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_each_error_of_the_data_is_one_line_naming_file_and_item(data, tmp_path, capsys, case):
    make, file, _ = ERRORS[case]
    said = make(data)
    code, out = _init(data, tmp_path)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and not out.exists(), err
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {data / 'annotations' / file}:"), errors[0]
    assert said in errors[0], errors[0]
    assert "no config written" in err.splitlines()[-1]


def _ids_from_5(data):
    for name in ("train", "test"):
        def change(content):
            for c in content["categories"]:
                c["id"] += 4
            for a in content["annotations"]:
                a["category_id"] += 4
        _edit(data / f"annotations/{name}.json", change)
    return "train.json: categories: the 4 category ids start at 5 and leave gaps (6, 8, 9, 10"


def _gaps(data):
    return "train.json: categories: the 4 category ids leave gaps (2, 4, 5, 6, 8, ... 3 more)"


def _absent_from_test(data):
    return f"test.json: categories[3] (id {NOT_IN_TEST}, 'bar'): no box in the test images"


def _empty_box(data):
    content = _edit(data / "annotations/train.json",
                    lambda c: c["annotations"][0].update(bbox=[3.0, 4.0, 0.0, 10.0]))
    ann = content["annotations"][0]
    im = next(i for i in content["images"] if i["id"] == ann["image_id"])
    return (f"train.json: annotations[0] (id {ann['id']}, image {im['id']} {im['file_name']}): "
            f"box [3.0, 4.0, 0.0, 10.0] of the {im['width']}x{im['height']} image has no area")


def _clipped(data):
    _edit(data / "annotations/train.json",
          lambda c: c["annotations"][0].update(bbox=[50.0, 4.0, 300.0, 10.0]))
    return "is more than 1 px outside it: cut to the image in training"


def _absent_from_search(data):
    """The images the workflow holds out for the search (its draw: seed 0, a fifth of 30) lose
    their squares (category 3) to discs."""
    path = data / "annotations/train.json"
    search = held_out_ids([im["id"] for im in json.loads(path.read_text())["images"]], 6, 0)
    _edit(path, lambda c: [a.update(category_id=1) for a in c["annotations"]
                           if a["image_id"] in search and a["category_id"] == 3])
    return ("train.json: categories[1] (id 3, 'square'): no box in the search split (6 of the "
            "training images the study holds out, seed 0): the search's fitness does not score")


WARNINGS = {"ids from 5": _ids_from_5, "ids with gaps": _gaps,
            "a class absent from the test split": _absent_from_test,
            "a class absent from the search split": _absent_from_search,
            "box of no area": _empty_box, "box partly outside": _clipped}


@pytest.mark.parametrize("case", WARNINGS)
def test_each_warning_is_one_line_and_stops_only_a_strict_init(data, tmp_path, capsys, case):
    said = WARNINGS[case](data)
    code, out = _init(data, tmp_path)
    assert code == 0 and out.exists()
    assert any(said in line for line in _lines(capsys, "warning")), said
    out.unlink()
    code, out = _init(data, tmp_path, "--strict")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "(--strict) in the data (each above, one line): no config written" in err
    assert any(said in line for line in err.splitlines() if line.startswith("warning: "))


def test_problems_of_a_kind_are_counted_after_ten_lines(data, tmp_path, capsys):
    for index in range(12):
        _image(data, index)[1].unlink()
    code, _ = _init(data, tmp_path)
    errors = _lines(capsys, "error")
    assert code == 2 and len(errors) == 11
    assert errors[-1].endswith("... and 2 more of this kind (missing-image)")


def test_the_toy_config_is_the_workflows_and_says_why(data, tmp_path, capsys):
    code, out = _init(data, tmp_path)
    assert code == 0
    printed = capsys.readouterr().out
    assert "classes: 4 (category ids 1, 3, 7, 12 -> labels 1..4 in id order)" in printed
    settings = yaml.safe_load(out.read_text())
    jsonschema.validate(settings, config.json_schema())
    cfg = config.load(out, generated=True)
    preflight.check_workflow(cfg, str(out))
    d = cfg.datasets["mydata"]
    assert (d.kind, d.root, d.train_images, d.train_annotations, d.test_annotations) == (
        "coco", str(data), "images", "annotations/train.json", "annotations/test.json")
    assert d.search_images == 6 and cfg.space == "test" and cfg.device == "cpu"
    assert cfg.results == "results-toy" and cfg.tracking.uri == "sqlite:///results-toy/mlflow.db"
    text = out.read_text()
    assert "# of the 30 training images, held out of the supernet's training" in text
    assert f"search_images: {d.search_images}\n" in text


def test_without_a_test_file_a_fifth_is_held_out_beside_it(data, tmp_path):
    code, out = _init(data, tmp_path, test=False)
    assert code == 0
    cfg = config.load(out, generated=True)
    d = cfg.datasets["mydata"]
    train = json.loads((Path(d.root) / d.train_annotations).read_text())
    test = json.loads((Path(d.root) / d.test_annotations).read_text())
    assert d.test_annotations == "annotations/train.detnas-test.json"
    assert (len(train["images"]), len(test["images"])) == (24, 6)
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in test["images"]}
    assert test["categories"] == train["categories"]  # the same labels
    first = (Path(d.root) / d.test_annotations).read_bytes()
    code, out = _init(data, tmp_path, "--force", test=False)
    assert code == 0 and (Path(d.root) / d.test_annotations).read_bytes() == first  # seeded


def test_an_existing_config_is_kept_and_a_bad_set_is_blamed(data, tmp_path, capsys):
    code, out = _init(data, tmp_path)
    before = out.read_text()
    assert _init(data, tmp_path)[0] == 2
    assert "exists; --force overwrites it" in capsys.readouterr().err
    code, _ = _init(data, tmp_path, "--force", "--set", "supernet_finetune.steps=0")
    assert code == 2 and out.read_text() == before
    assert "--set supernet_finetune.steps=0: supernet_finetune.steps: 0 (must be >= 1)" in \
        capsys.readouterr().err
    code, _ = _init(data, tmp_path, "--force", "--set", "supernet_finetune.steps=7")
    text = out.read_text()
    assert code == 0 and "  # --set supernet_finetune.steps=7 (on detnas init's command" in text
    assert yaml.safe_load(text)["supernet_finetune"]["steps"] == 7


def test_full_scale_refuses_no_gpu(data, tmp_path, capsys):
    out = tmp_path / "gpu.yaml"
    code = main(["init", "--train-annotations", str(data / "annotations/train.json"),
                 "--train-images", str(data / "images"), "--gpus", "0", "--out", str(out)])
    assert code == 2 and "--gpus 0: a study at full scale needs GPUs" in capsys.readouterr().err


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_full_scale_schedules_follow_the_data_and_the_gpus(data, tmp_path, gpus):
    cls = write_imagefolder(tmp_path / "imagenet", per_class=30)
    out = tmp_path / f"gpu{gpus}.yaml"
    code = main(["init", "--train-annotations", str(data / "annotations/train.json"),
                 "--train-images", str(data / "images"), "--test-annotations",
                 str(data / "annotations/test.json"), "--classification", str(cls), "--gpus",
                 str(gpus), "--out", str(out), "--set", "nats.search.batch_size=2"])
    assert code == 0
    cfg = config.load(out, generated=True)
    preflight.check_workflow(cfg, str(out))
    assert cfg.space == "300M" and cfg.device == "cuda" and cfg.detectors == ["fpn", "retinanet"]
    f = cfg.supernet_finetune
    batch = min(2 * gpus, 24)
    assert (f.batch_size, f.lr, f.detector_lr) == (batch, 0.02 * batch / 16,
                                                   {"retinanet": 0.01 * batch / 16})
    assert f.steps == -(-24 * 24 // batch)  # 24 epochs (under 50k images) of the 24 left
    assert cfg.retrain_finetune.steps == -(-24 * 30 // batch)  # of all 30
    assert cfg.supernet_pretrain.batch_size == min(128 * gpus, 60 - 2)
    assert cfg.classification.kind == "imagefolder" and cfg.classification.root == str(cls)
    assert cfg.nats.arch_images == 0 and cfg.search.recalib_images == 24


def test_paper_scale_data_get_the_papers_schedule():
    """COCO's train2017 on 8 GPUs: batch 16, lr 0.02 and about COCO 1x's 90k steps; on one GPU
    maskrcnn-benchmark's single-GPU recipe (batch 2, lr 0.0025, 8x the steps)."""
    base = yaml.safe_load((own_data.CONFIG_DIR / "coco.yaml").read_text())["supernet_finetune"]
    eight = own_data.scaled_schedule(copy.deepcopy(base), 118_287, 8, 12)
    assert (eight["batch_size"], eight["lr"], eight["warmup_steps"]) == (16, 0.02, 500)
    assert abs(eight["steps"] - 90_000) / 90_000 < 0.02
    one = own_data.scaled_schedule(copy.deepcopy(base), 118_287, 1, 12)
    assert (one["batch_size"], one["lr"], one["detector_lr"]) == (2, 0.0025, {"retinanet":
                                                                               0.00125})
    assert one["steps"] == 8 * eight["steps"] - 6  # ceil each
