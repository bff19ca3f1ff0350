"""A published classification supernet (config ``supernet_from.classification``,
docs/published-supernet.md): read without torch when the workflow is parsed, one of another space
or shape refused in one line naming the file and what differs, its origin in the provenance of
what is made from it, and no state made from another one resumed. The DVC round trip through
the workflow: tests/workflow/test_published_supernet.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from detnas.io import TensorShape, checkpoint_header, save_checkpoint
from detnas.nets.backbones import shufflenet_spec
from detnas.nets.models import build_model, load_model, model_meta
from detnas.plan import config, preflight, typed
from detnas.plan.space import Arch, get_space
from detnas.provenance import provenance, source
from detnas.run import train

REPO = Path(__file__).resolve().parents[1]
TEST = str(REPO / "config/test.yaml")
SUPERNET = {"kind": "supernet", "space": "test"}
BLOCKS = get_space("test").num_blocks


def study(path: Path | str, *overrides: str) -> config.StudyConfig:
    """config/test.yaml (as the workflow resolves it) starting from ``path``."""
    return config.load(TEST, [f"supernet_from.classification={path}", *overrides],
                       generated=True)


def publish(path: Path, space: str = "test", classes: int = 4, *overrides: str,
            **meta) -> dict:
    """A classification supernet checkpoint as `detnas train supernet` writes it, pre-trained
    (untrained here) by config/test.yaml with ``overrides``; ``meta`` replaces entries."""
    backbone = {"kind": "supernet", "space": space}
    torch.manual_seed(0)
    model = build_model("classification", backbone, classes)
    made = config.load(TEST, list(overrides), generated=True)
    prov = provenance(typed.to_dict(made), made.seed, stage="supernet-pretrain",
                      fingerprint="0123456789abcdef")
    ckpt = {**model_meta("classification", backbone, classes), "model": model.state_dict(),
            "step": 4, "provenance": prov, **meta}
    save_checkpoint(path, ckpt)
    return ckpt


def refusal(path: Path, *overrides: str) -> str:
    cfg = study(path, *overrides)
    with pytest.raises(ValueError) as e:
        preflight.check_workflow(cfg, "config/test.yaml")
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_header_is_the_checkpoint_without_its_tensors_and_without_torch(tmp_path):
    path = tmp_path / "cls.pt"
    ckpt = publish(path)
    header = checkpoint_header(path)
    assert {k: v for k, v in header.items() if k != "model"} == {
        k: v for k, v in ckpt.items() if k != "model"}
    assert header["model"] == {k: TensorShape(tuple(v.shape)) for k, v in ckpt["model"].items()}
    code = ("import sys; from detnas.io import checkpoint_header as h; "
            f"print(h({str(path)!r})['backbone']); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(SUPERNET)


def test_the_header_refuses_what_is_not_tensors_and_plain_data(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {}, "where": Path("x")}, path)
    with pytest.raises(ValueError, match=r"other.pt: not a readable checkpoint \(GLOBAL "
                                         r"pathlib.PosixPath: detnas loads only tensors"):
        checkpoint_header(path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt: not a readable checkpoint .not torch's zip"):
        checkpoint_header(tmp_path / "text.pt")


def test_a_supernet_this_study_could_have_pretrained_passes(tmp_path):
    publish(tmp_path / "cls.pt")
    preflight.check_workflow(study(tmp_path / "cls.pt"), "config/test.yaml")


# what the published checkpoint is (publish's arguments) -> what the one line says after the file
REFUSED = {
    "another space": (("tiny",), {}, "a supernet of space tiny, this study's space is test"),
    "a detection checkpoint": ((), {"task": "detection"},
                               "a detection checkpoint, not a classification supernet"),
    "a fixed network": ((), {"backbone": shufflenet_spec(Arch("test", (0,) * BLOCKS))},
                        "a checkpoint of a fixed shufflenet network, not a supernet"),
    "a classifier of other classes": (("test", 3), {}, "its classifier has 3 classes, this "
                                      "study's classification set has 4"),
    "other held-out images": (("test", 4, "classification.search_images=8"), {},
                              "pre-trained with classification.search_images 8, this study's is "
                              "16: the ClsNASNet search would score images the supernet trained "
                              "on (set it as the publisher's)"),
    "another seed": (("test", 4, "seed=1"), {}, "pre-trained with seed 1, this study's is 0"),
    "other synthetic images": (("test", 4, "classification.num_train=80"), {},
                               "pre-trained with classification.num_train 80, this study's is "
                               "64"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_supernet_of_another_space_or_shape_is_refused_in_one_line(case, tmp_path):
    args, meta, says = REFUSED[case]
    path = tmp_path / "cls.pt"
    publish(path, *args, **meta)
    assert refusal(path).startswith(
        f"config/test.yaml.supernet_from.classification: {path}: {says}")


def test_a_supernet_not_there_or_not_a_checkpoint_is_refused_in_one_line(tmp_path):
    assert refusal(tmp_path / "cls.pt") == (
        f"config/test.yaml.supernet_from.classification: {tmp_path}/cls.pt does not exist (a DVC "
        f"import: `dvc pull {tmp_path}/cls.pt.dvc`; docs/published-supernet.md)")
    (tmp_path / "cls.pt").write_text("{}")
    assert refusal(tmp_path / "cls.pt").endswith("cls.pt: not a readable checkpoint (not "
                                                 "torch's zip format)")


def test_an_imagefolder_sets_classes_are_its_class_folders(tmp_path):
    for split in ("train", "val"):
        for name in ("a", "b", "c"):
            (tmp_path / "cls" / split / name).mkdir(parents=True)
    publish(tmp_path / "cls.pt")  # 4 classes
    says = refusal(tmp_path / "cls.pt", "classification.kind=imagefolder",
                   f"classification.root={tmp_path}/cls")
    assert says.endswith("its classifier has 4 classes, this study's classification set has 3")


def test_a_tensor_of_another_shape_is_refused_where_it_is_loaded_in_one_line(tmp_path):
    """A supernet of the study's space as another version of detnas defined it: the header
    cannot tell, the load says which tensor differs (not torch's list of every one)."""
    ckpt = publish(tmp_path / "cls.pt")
    key = next(k for k in ckpt["model"] if k.endswith("weight") and ckpt["model"][k].ndim == 4)
    wrong = {**ckpt["model"], key: torch.zeros(1, 1, 1, 1)}
    save_checkpoint(tmp_path / "wrong.pt", {**ckpt, "model": wrong})
    with pytest.raises(ValueError) as e:
        load_model(tmp_path / "wrong.pt")
    assert str(e.value) == (
        f"{tmp_path}/wrong.pt: tensor {key} has shape [1, 1, 1, 1], the classification model of "
        f"space test built here {list(ckpt['model'][key].shape)}")
    del wrong[key]
    save_checkpoint(tmp_path / "lacks.pt", {**ckpt, "model": wrong})
    with pytest.raises(ValueError, match=f"lacks.pt: lacks tensor {key} of the classification "
                                         r"model of space test built here \(1 missing\)$"):
        load_model(tmp_path / "lacks.pt")


IMPORT = """md5: 0
frozen: true
deps:
- path: results/supernet/cls/checkpoint.pt
  repo:
    url: https://github.com/colleague/detnas-study
    rev_lock: 5eb63e45780b0e1a80b84765389f251255084229
outs:
- md5: 0
  path: cls.pt
"""


def test_the_provenance_records_its_sha256_where_it_came_from_and_what_made_it(tmp_path):
    path = tmp_path / "cls.pt"
    ckpt = publish(path)
    made_by = {k: ckpt["provenance"][k] for k in ("stage", "git_commit", "detnas_version", "seed",
                                                   "fingerprint")}
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert source(path) == {"path": str(path), "sha256": sha, "made_by": made_by}
    (tmp_path / "cls.pt.dvc").write_text(IMPORT)  # `dvc import`'s record
    assert source(path)["dvc"] == {"repo": "https://github.com/colleague/detnas-study",
                                   "rev": "5eb63e45780b0e1a80b84765389f251255084229",
                                   "path": "results/supernet/cls/checkpoint.pt"}
    url = yaml.safe_load(IMPORT)
    url["deps"] = [{"path": "s3://bucket/cls.pt", "checksum": "x"}]  # `dvc import-url`'s
    (tmp_path / "cls.pt.dvc").write_text(yaml.safe_dump(url))
    assert source(path)["dvc"] == {"url": "s3://bucket/cls.pt"}


def test_a_state_made_from_another_published_supernet_is_not_resumed(tmp_path):
    """`dvc update` replaces the file under the same path: the fine-tuning's fingerprint (which
    a resumable state must match, `detnas.run.engine.train`) binds its content."""
    cfg = study(tmp_path / "cls.pt")
    images, annotations = tmp_path / "images", tmp_path / "instances.json"
    images.mkdir()
    annotations.write_text("{}")
    run = train.Run(tmp_path / "out", "supernet-finetune", {"ablation": "detnas"},
                    inputs=(images, annotations, tmp_path / "cls.pt"))
    publish(tmp_path / "cls.pt")
    before = train.run_fingerprint(cfg, run)
    assert train.run_fingerprint(cfg, run) == before
    publish(tmp_path / "cls.pt", "test", 4, "supernet_pretrain.steps=6")  # a newer one
    assert train.run_fingerprint(cfg, run) != before
