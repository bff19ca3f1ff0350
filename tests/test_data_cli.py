"""``detnas data``: the commands end to end on tiny sets, and one-line errors with status 2."""

import json
from pathlib import Path

from detnas.cli import main

VOC = Path(__file__).parent / "fixtures" / "voc" / "VOCdevkit"


def _config(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "seed: 5\n"
        f"datasets:\n  synth: {{root: {tmp_path / 'det'}, num_train: 8, num_test: 2,"
        " image_size: 64, search_images: 3}\n"
        f"classification: {{root: {tmp_path / 'cls'}, num_classes: 3, num_train: 6,"
        " num_val: 3, image_size: 32, search_images: 2}\n"
    )
    return path


def test_synth_check_split(tmp_path, capsys):
    cfg = str(_config(tmp_path))
    assert main(["data", "synth-detection", "--config", cfg, "--dataset", "synth"]) == 0
    assert main(["data", "synth-classification", "--config", cfg]) == 0
    assert len(list((tmp_path / "cls" / "val").rglob("*.png"))) == 3
    capsys.readouterr()
    assert main(["data", "check", "--config", cfg, "--dataset", "synth"]) == 0
    out = capsys.readouterr().out
    assert "train: 8 images" in out and "test: 2 images" in out and "4 classes" in out
    assert main(["data", "check", "--config", cfg, "--classification"]) == 0
    assert "val: 3 images, 3 classes" in capsys.readouterr().out
    assert main(["data", "split", "--config", cfg, "--dataset", "synth",
                 "--out", str(tmp_path / "split")]) == 0
    search = json.loads((tmp_path / "split" / "instances_search.json").read_text())
    assert len(search["images"]) == 3 and "seed 5" in search["info"]["split"]


def test_convert_voc_command(tmp_path):
    out = tmp_path / "voc07_test.json"
    assert main(["data", "convert-voc", "--voc-root", str(VOC), "--years", "2007",
                 "--sets", "test", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["images"]) == 1


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    cfg = str(_config(tmp_path))
    assert main(["data", "check", "--config", cfg, "--dataset", "synth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "det: dataset folder does not exist" in err
    assert "Traceback" not in err
    assert main(["data", "check", "--config", cfg, "--dataset", "coco"]) == 2
    assert "--dataset 'coco': not in the config's datasets (synth)" in capsys.readouterr().err
    assert main(["data", "convert-voc", "--voc-root", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "missing: VOC devkit folder does not exist" in capsys.readouterr().err
